"""The dedup measurements (``selectd bench dedup``'s body) run and report what they claim (shape
and consistency, on a small sample; the signature speed-up over datatrove must reach 10x even there;
the published figures come from the benchmark itself)."""
import pytest

from selectd.tools import dedup_bench as bench


def test_measure_reports_signatures_stage_and_every_store(dedup_corpus):
    texts = [doc["text"] for doc in dedup_corpus[:90]]
    report = bench.measure(texts, warm_texts=30, batch_size=20, store_docs=3000)
    signatures = report["signatures"]
    assert signatures["texts"] == 60 and report["warm_texts"] == 30 and report["clock"] == "cpu"
    for implementation in ("compiled", "python"):
        result = signatures[implementation]
        assert result["equal_signatures"] == 60
        assert result["ratio"] == pytest.approx(signatures["datatrove"]["seconds"] / result["seconds"])
    # the speed point, on this small sample too (the full `selectd bench dedup` run: deploy/README.md)
    assert signatures["compiled"]["ratio"] >= 10
    assert report["stage"]["round_trips_per_batch"] == 1 and report["stage"]["cpu_us_per_doc"] > 0
    stores = report["stores"]
    for kind in ("local", "redis", "bloom"):
        assert stores[kind]["round_trips_per_batch"] == 1 and stores[kind]["batches"] == 150
        assert stores[kind]["memory_mb_per_million_docs"] > 0
    for kind in ("local", "bloom"):
        assert stores[kind]["disk_mb_per_million_docs"] > 0 and stores[kind]["written_bytes_per_doc"] > 0
    assert stores["redis"]["server_calls_per_batch"] == 1
    bloom = stores["bloom"]
    assert bloom["document_rate_measured"] < 4 * bloom["document_rate_asked"]
    text = bench.format_report(report)
    assert "x datatrove" in text and "MB per million documents" in text and "round trip / batch" in text


def test_measure_refuses_a_warm_up_without_texts_left():
    with pytest.raises(ValueError, match="warm_texts"):
        bench.measure(["a text"], warm_texts=1)
