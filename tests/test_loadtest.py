"""The load-test harness: reporter figures and plot, the benchmark's document sizing and config."""
from __future__ import annotations

import tomllib

import orjson
import pytest

from conftest import Topics, create_topics, documents, produce, write_config

from loadtest.bench import EXAMPLE, _to_toml, daemon_config, sized_documents
from loadtest.reporter import measure


@pytest.mark.kafka
def test_reporter_measures_a_daemon_run(broker, daemons, tmp_path):
    topics = Topics(partitions=2)
    create_topics(broker, topics)
    config = write_config(tmp_path / "c.toml", broker, topics)
    produce(broker, topics.input, documents(500, "r"))
    daemon = daemons(config, tmp_path / "d.log")
    report = measure(broker.bootstrap, [topics.accepted, topics.rejected, topics.dlq], 500, timeout_s=60,
                     group=topics.group, input_topic=topics.input, progress=False)
    assert daemon.terminate() == 0
    assert report.unique == 500 and report.duplicates == 0
    assert report.docs_per_s > 0 and len(report.latency_ms) == 500 and min(report.latency_ms) >= 0
    assert report.lag_samples, "lag sampled while running"
    table = "\n".join(report.table())
    assert "latency p99" in table and "throughput" in table
    report.plot(tmp_path / "report.png")
    assert (tmp_path / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sized_documents_hit_the_target(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"\n".join(orjson.dumps({"id": str(i), "text": ("word " * (50 + 300 * (i % 7))).strip()})
                                  for i in range(50)))
    values = sized_documents(corpus, 200, target_bytes=3800)
    sizes = [len(orjson.loads(v)["text"]) for v in values]
    assert len(values) == 200 and 3000 <= sum(sizes) / len(sizes) <= 3800 and max(sizes) <= 3800


def test_bench_config_keeps_stages_and_rewrites_topics(tmp_path):
    path, outputs = daemon_config(tmp_path / "c.toml", "127.0.0.1:1", "tag", EXAMPLE)
    config = tomllib.loads(path.read_text())
    example = tomllib.loads(EXAMPLE.read_text())
    assert [s["type"] for s in config["stages"]] == [s["type"] for s in example["stages"]]
    assert config["kafka"]["input_topics"] == ["tag-in"] and config["topics"]["accepted"] == outputs[0]
    assert tomllib.loads(_to_toml(config)) == config
    from selectd.config import load_config
    load_config(path)
