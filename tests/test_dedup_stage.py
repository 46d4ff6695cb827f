"""The dedup stages in the pipeline, without a broker: outputs and metrics, replay, the shared
store, store failures (nothing decided, the error counted), open errors at start (exit 2 naming
the key), and ``selectd score`` with the embedded store."""
from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from selectd.cli import main
from selectd.config import ConfigError, config_from_dict
from selectd.dedup.keys import ExactDedupOptions
from selectd.dedup.local import LocalStore
from selectd.dedup.store import StoreError
from selectd.metrics import Metrics
from selectd.pipeline import Pipeline
from selectd.records import Record
from selectd.scorers import dedup as dedup_scorers
from selectd.tools.redis_server import RedisServer, free_port

TEXT = ("The river barges carried coal and grain to the mills for a century before the railway came, and the "
        "towpath is now a walking trail that passes the old lock keeper's cottage and the restored warehouse.")
OTHER = ("Database engines keep their indexes in sorted pages, so a range scan reads neighbouring keys from one "
         "page while a point lookup walks the tree from the root to a single leaf.")
NEAR = TEXT.replace("a century", "a hundred years")

#: (id, text, url): b copies a after normalization, c shares a's url, d is a near-duplicate of a, e is new
STREAM = [("a", TEXT, "u/a"), ("b", TEXT.upper() + "!!", "u/b"), ("c", OTHER, "u/a"), ("d", NEAR, "u/d"),
          ("e", OTHER + " Then the next sentence changes everything about it.", "u/e")]
EXPECTED = {"a": None, "b": ("exact", "duplicate_text", "a"), "c": ("exact", "duplicate_url", "a"),
            "d": ("near", "near_duplicate", "a"), "e": None}


def dedup_config(dedup: dict, stages: list[dict] | None = None):
    return config_from_dict({
        "kafka": {"bootstrap_servers": ["127.0.0.1:9"], "group_id": "g", "input_topics": ["in"]},
        "topics": {"accepted": "acc", "rejected": "rej", "dlq": "dlq"},
        "dedup": dedup,
        "stages": stages if stages is not None else [
            {"name": "exact", "type": "exact_dedup", "options": {"fields": ["url"]}},
            {"name": "near", "type": "minhash_dedup"}],
    })


def records(stream=STREAM, offset: int = 0) -> list[Record]:
    return [Record("in", 0, offset + i, doc_id.encode(), orjson.dumps({"id": doc_id, "text": text, "url": url}))
            for i, (doc_id, text, url) in enumerate(stream)]


def decisions(outputs) -> dict[str, tuple[str, str, str] | None]:
    out = {}
    for output in outputs:
        selectd = orjson.loads(output.value)["selectd"]
        if selectd["decision"] == "accepted":
            out[output.doc_id] = None
        else:
            out[output.doc_id] = (selectd["stage"], selectd["reason"], selectd["scores"][selectd["stage"]]["duplicate_of"])
    return out


def test_duplicates_are_rejected_with_stage_reason_and_duplicate_of_and_counted(tmp_path, monkeypatch):
    monkeypatch.setattr(dedup_scorers, "STORE_STATS_INTERVAL_S", 0)  # the size gauges after every batch
    metrics = Metrics()
    pipeline = Pipeline.from_config(dedup_config({"path": str(tmp_path / "store")}), metrics)
    try:
        outputs = pipeline.process(records())
        assert decisions(outputs) == EXPECTED
        kept = orjson.loads(outputs[0].value)["selectd"]["scores"]
        assert kept == {"exact": {"duplicate_text": 0.0, "duplicate_url": 0.0, "duplicate_of": None},
                        "near": {"near_duplicate": 0.0, "duplicate_of": None}}
        # a replay after a crash (same ids, same texts) decides the same: nobody is its own duplicate
        assert [o.value for o in pipeline.process(records())] == [o.value for o in outputs]
        # the same content under new ids, in a later batch: duplicates of the first ones
        later = [(f"{doc_id}2", text, f"{url}2") for doc_id, text, url in STREAM]
        assert decisions(pipeline.process(records(later, offset=5))) == {
            "a2": ("exact", "duplicate_text", "a"), "b2": ("exact", "duplicate_text", "a"),
            "c2": ("exact", "duplicate_text", "c"), "d2": ("exact", "duplicate_text", "d"),
            "e2": ("exact", "duplicate_text", "e")}
    finally:
        pipeline.close()
    value = lambda name, *labels: metrics.registry.get_sample_value(name, dict(zip(("stage", "key"), labels)) or None)
    # the replayed batch is decided (and counted) again, like any retried batch
    assert value("selectd_duplicates_total", "exact", "text") == 1 + 1 + 5
    assert value("selectd_duplicates_total", "exact", "url") == 1 + 1
    assert value("selectd_duplicates_total", "near", "minhash") == 1 + 1
    assert value("selectd_dedup_store_duration_seconds_count", "exact") == 3
    assert value("selectd_dedup_store_duration_seconds_count", "near") == 2  # no document of the 3rd batch reached it
    assert value("selectd_dedup_store_errors_total", "exact") == 0
    stats = LocalStore(tmp_path / "store").stats()
    assert metrics.registry.get_sample_value("selectd_dedup_store_documents") == stats.documents > 0
    assert metrics.registry.get_sample_value("selectd_dedup_store_keys") == stats.keys > stats.documents
    assert metrics.registry.get_sample_value("selectd_dedup_store_bytes", {"medium": "disk"}) == stats.disk_bytes > 0


def test_both_stages_and_a_reloaded_pipeline_share_one_store_which_closes_with_the_last(tmp_path):
    config = dedup_config({"path": str(tmp_path / "store")})
    running = Pipeline.from_config(config)
    reloaded = Pipeline.from_config(config)  # SIGHUP: built beside the running one, same directory
    stores = {id(stage.scorer.deduplicator.store) for p in (running, reloaded) for stage in p.cascade.stages}
    assert len(stores) == 1
    running.process(records())
    running.close()
    assert decisions(reloaded.process(records([("z", TEXT, "u/z")], offset=9))) == {"z": ("exact", "duplicate_text", "a")}
    reloaded.close()
    LocalStore(tmp_path / "store").close()  # the last user closed it: the directory's lock was released


def test_a_store_failure_raises_with_nothing_decided_and_is_counted(tmp_path):
    metrics = Metrics()
    with RedisServer(tmp_path / "redis", extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        pipeline = Pipeline.from_config(dedup_config({"store": "redis", "url": server.url, "timeout_s": 1}), metrics)
        try:
            assert decisions(pipeline.process(records(STREAM[:2]))) == {"a": None, "b": ("exact", "duplicate_text", "a")}
            server.stop()
            with pytest.raises(StoreError):
                pipeline.process(records(STREAM[2:], offset=2))
            assert metrics.registry.get_sample_value("selectd_dedup_store_errors_total", {"stage": "exact"}) == 1
            server.start()  # same port and data: the batch, retried, is decided as if it had never failed
            assert decisions(pipeline.process(records(STREAM[2:], offset=2))) == {d: EXPECTED[d] for d in "cde"}
        finally:
            pipeline.close()


@pytest.mark.parametrize("dedup, key", [
    ({"path": "FILE"}, "dedup.path"),
    ({"store": "redis", "url": "redis://127.0.0.1:PORT/0", "timeout_s": 1}, "dedup.url"),
])
def test_a_store_that_cannot_be_opened_exits_2_naming_the_key(tmp_path, capsys, dedup, key):
    (tmp_path / "file").write_text("not a directory")
    dedup = {k: v.replace("FILE", str(tmp_path / "file")).replace("PORT", str(free_port())) if isinstance(v, str) else v
             for k, v in dedup.items()}
    config = tmp_path / "c.toml"
    config.write_text(_toml(dedup))
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(r.value for r in records()) + b"\n")
    assert main(["score", "-c", str(config), str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")]) == 2
    assert capsys.readouterr().err.startswith(f"selectd: {key}: cannot open the dedup store")


def _toml(dedup: dict) -> str:
    lines = ['[kafka]', 'bootstrap_servers = ["127.0.0.1:9"]', 'group_id = "g"', 'input_topics = ["in"]',
             '[topics]', 'accepted = "acc"', 'rejected = "rej"', 'dlq = "dlq"', '[dedup]']
    lines += [f"{k} = {orjson.dumps(v).decode()}" for k, v in dedup.items()]
    lines += ['[[stages]]', 'name = "exact"', 'type = "exact_dedup"', 'options = { fields = ["url"] }',
              '[[stages]]', 'name = "near"', 'type = "minhash_dedup"']
    return "\n".join(lines) + "\n"


def test_selectd_score_runs_the_stages_offline_and_remembers_across_runs(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(_toml({"path": str(tmp_path / "store")}))
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"\n".join(r.value for r in records()) + b"\n")
    second.write_bytes(b"\n".join(r.value for r in records([("f", TEXT + " And more.", "u/f"), ("g", OTHER, "u/g")]))
                       + b"\n")

    def score(path: Path) -> dict:
        out = tmp_path / f"{path.stem}.out.jsonl"
        assert main(["score", "-c", str(config), str(path), "-o", str(out)]) == 0
        outputs = [orjson.loads(line) for line in out.read_bytes().splitlines()]
        return {o["id"]: None if (s := o["selectd"])["decision"] == "accepted" else
                (s["stage"], s["reason"], s["scores"][s["stage"]]["duplicate_of"]) for o in outputs}

    assert score(first) == EXPECTED
    assert score(first) == EXPECTED, "scoring the same file again: every document is itself, not a duplicate"
    assert score(second) == {"f": ("near", "near_duplicate", "a"), "g": ("exact", "duplicate_text", "c")}


def test_key_names_must_make_distinct_signals():
    with pytest.raises(ValueError, match="not 'of'"):
        ExactDedupOptions(fields=["of"])
    with pytest.raises(ValueError, match=r"\['text'\]"):
        ExactDedupOptions(fields=["text"])
    with pytest.raises(ConfigError, match=r"stages\[0\]\.options"):
        dedup_config({}, [{"name": "x", "type": "exact_dedup", "options": {"fields": ["url", "url"]}}])
