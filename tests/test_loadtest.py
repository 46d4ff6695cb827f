"""The load-test harness: reporter figures and plot, the benchmark's document sizing, config, Kafka rows
(consumers held until assigned, per-process CPU) and ratios."""
from __future__ import annotations

import tomllib

import orjson
import pytest

from conftest import Topics, create_topics, documents, produce, write_config

from loadtest.bench import (CASCADE, CASCADE_MODELS, EXAMPLE, KAFKA_ROWS, REPO, KafkaRun, assigned_partitions, daemon_config,
                            daemon_cpu, kafka_rows, kafka_summary, sized_documents)
from loadtest.harness import DOC_TEXT
from loadtest.reporter import Report, measure
from selectd.demo.configs import to_toml
from selectd.tools.fasttext.demo_models import TASKS


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
                                  for i in range(400)))
    values = sized_documents(corpus, 200, target_bytes=3800)
    sizes = [len(orjson.loads(v)["text"]) for v in values]
    assert len(values) == 200 and 3000 <= sum(sizes) / len(sizes) <= 3800 and max(sizes) <= 3800


def test_sized_documents_never_repeat_the_corpus(tmp_path):
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"\n".join(orjson.dumps({"text": f"text {i} " * 400}) for i in range(30)))
    values = sized_documents(corpus, 10, target_bytes=3800)
    assert len({orjson.loads(v)["text"] for v in values}) == 10
    with pytest.raises(ValueError, match="make only .* without repeating, 40 wanted"):
        sized_documents(corpus, 40, target_bytes=3800)


def test_bench_config_keeps_stages_and_rewrites_topics(tmp_path):
    path, outputs = daemon_config(tmp_path / "c.toml", "127.0.0.1:1", "tag", EXAMPLE)
    config = tomllib.loads(path.read_text())
    example = tomllib.loads(EXAMPLE.read_text())
    assert [s["type"] for s in config["stages"]] == [s["type"] for s in example["stages"]]
    assert config["kafka"]["input_topics"] == ["tag-in"] and config["topics"]["accepted"] == outputs[0]
    assert tomllib.loads(to_toml(config)) == config
    from selectd.config import load_config
    load_config(path)


def test_one_config_writer_serves_the_harness_with_its_toml_snippets(tmp_path):
    """harness.write_config builds on selectd.demo.configs: the quick-join timeouts, the snippets
    merged into their tables (a [delivery] in ``extra`` as well as the ``delivery`` keys)."""
    from loadtest.harness import TopicNames, write_config as harness_config
    from selectd.config import load_config
    from selectd.demo.configs import QUICK_JOIN

    names = TopicNames(partitions=1, tag="w")
    path = harness_config(tmp_path / "c.toml", "127.0.0.1:1", names, extra='[delivery]\nretry_backoff_s = 0.01\n',
                          top='plugins = ["json"]', kafka="max_request_size = 2048\nproducer_batch_size = 2048",
                          metrics="lag_interval_s = 1.0")
    config = load_config(path)
    assert config.plugins == ["json"] and config.kafka.bootstrap_servers == ["127.0.0.1:1"]
    assert all(getattr(config.kafka, key) == value for key, value in QUICK_JOIN.items())
    assert config.kafka.max_request_size == 2048 and config.metrics.lag_interval_s == 1.0 and config.metrics.port == 0
    assert config.delivery.retry_backoff_s == 0.01 and config.delivery.broker_backoff_max_s == 2.0
    assert [s.type for s in config.stages] == ["gopher_quality", "gopher_repetition"]
    assert (config.topics.accepted, config.kafka.group_id, config.batch.max_docs) == ("w-accepted", "w-group", 200)


def test_bench_cascade_is_the_targets_cascade_and_names_only_models_it_can_build(tmp_path):
    """The cascade rows measure what the 5,000 docs/s target names: rules, language ID, fastText
    quality and fastText toxicity; every model directory they use has a build script."""
    from selectd.config import load_config

    path, _ = daemon_config(tmp_path / "c.toml", "127.0.0.1:1", "tag", CASCADE)
    stages = load_config(path).stages
    assert [s.type for s in stages] == ["fasttext", "gopher_quality", "gopher_repetition", "c4_quality",
                                        "fineweb_quality", "fasttext", "fasttext"]
    model_dirs = [REPO / s.options["model_dir"] for s in stages if s.type == "fasttext"]
    assert [d.name for d in model_dirs] == ["lid176", "quality_fasttext", "toxicity_fasttext"]
    assert set(model_dirs) <= {REPO / directory for directory, _ in CASCADE_MODELS}
    for _, command in CASCADE_MODELS:
        assert command[0] in TASKS or command[0] == "lid", "a model selectd.tools.fasttext.demo_models builds"


@pytest.mark.kafka
def test_bench_rows_release_assigned_consumers_together_and_account_their_cpu(broker, tmp_path, capsys):
    # enough documents that even the quickest row spends a few clock ticks (10 ms) of CPU on them
    values = [orjson.dumps({"id": f"b{i}", "text": DOC_TEXT * 3}) for i in range(2000)]
    rows = [row for row in KAFKA_ROWS if row.key in ("raw", "nostage2", "raw-confluent", "nostage2-confluent")]
    assert {row.client for row in rows} == {"kafka-python", "confluent-kafka"}
    runs = kafka_rows(broker.bootstrap, broker.process.pid, values, tmp_path, rows, EXAMPLE, repeats=1)
    for row in rows:
        run = runs[row.key][0]
        assert run.report.unique == 2000 and run.report.duplicates == 0, row.key
        consumers = sorted(k for k in run.cpu_s if k.startswith("consumer"))
        assert consumers == [f"consumer{i}" for i in range(row.processes)], "one CPU figure per consumer process"
        assert all(run.cpu_s[k] > 0 for k in consumers) and run.window_s > 0
        assert {"broker", "bench", "other"} <= set(run.cpu_s)
    # Two daemons: both were assigned partitions (the release waited for that; leaving revoked them).
    for prefix in ("nostage2-", "nostage2-confluent-"):
        logs = [log for log in tmp_path.glob(f"{prefix}*.log") if log.name.count("-") == prefix.count("-") + 1]
        assert len(logs) == 2 and all(b'"partitions assigned"' in log.read_bytes() for log in logs), prefix
    configs = {path.name: path.read_text() for path in tmp_path.glob("nostage2-*.toml")}
    assert sorted('client = "confluent-kafka"' in text for text in configs.values()) == [False, True]
    printed = capsys.readouterr().out
    assert "cores busy" in printed and "ms/1k docs" in printed


def test_assignment_from_logs_and_ratio_spread(tmp_path):
    log = tmp_path / "c.log"
    log.write_text('not json\n{"event": "partitions assigned", "partitions": ["in:0", "in:1"]}\n'
                   '{"event": "partitions revoked", "partitions": ["in:0", "in:1"]}\n'
                   '{"event": "partitions assigned", "partitions": ["in:1"]}\n')
    assert assigned_partitions(log) == {"in:1"}
    (tmp_path / "new.log").write_text("")
    assert assigned_partitions(tmp_path / "new.log") is None, "not joined yet"

    def run(rate: float) -> KafkaRun:
        return KafkaRun(Report(received=int(rate), unique=int(rate), output_ts_ms=[0, 1000]), {"consumer0": 1.0, "broker": 0.1,
                                                                            "bench": 0.0, "other": 0.0}, 1.0)

    rows = [row for row in KAFKA_ROWS if row.key in ("raw", "nostage")]
    summary = kafka_summary(rows, {"raw": [run(1000), run(2000), run(1500)], "nostage": [run(900), run(1000), run(1200)]})
    assert summary["rows"]["kafka-python: daemon, no stages"]["median_docs_per_s"] == 1000
    assert summary["rows"]["kafka-python: daemon, no stages"]["median_cpu_ms_per_1k_docs"] == pytest.approx(1e6 / 1000)
    ratio = summary["ratios"]["kafka-python: daemon no stages / raw plain loop"]
    assert ratio["of_medians"] == pytest.approx(1000 / 1500)
    assert ratio["per_cpu"] == pytest.approx((1e6 / 1500) / (1e6 / 1000)), "docs per consumer CPU second, daemon / raw"
    assert ratio["min"] == pytest.approx(0.5) and ratio["max"] == pytest.approx(0.9), "same-repeat ratios"
    assert daemon_cpu({"raw": [run(1000)], "nostage": [run(900), run(1000), run(1200)]}) == {
        "kafka-python": {"no stages": pytest.approx(1e6 / 1000)}}, "the daemon's own CPU per document, not the raw loop's"


def test_budget_sets_the_kafka_paths_cpu_and_the_stage_table_against_the_target():
    from loadtest.bench import throughput_budget

    def run(cpu_s: float, docs: int = 10_000) -> KafkaRun:
        # every CPU second of the run counts: consumers, broker, the bench, other load
        return KafkaRun(Report(received=docs, unique=docs, output_ts_ms=[0, 1000]),
                        {"consumer0": cpu_s / 2, "consumer1": cpu_s / 4, "broker": cpu_s / 8, "bench": 0.0,
                         "other": cpu_s / 8}, 1.0)

    stages = [{"stage": "lid", "us_per_input_doc": 140.0}, {"stage": "gopher", "us_per_input_doc": 210.0}]
    budget = throughput_budget([run(2.0), run(2.5), run(3.0)], stages, target_docs_per_s=5000, cores=2)
    assert budget["allowed_us_per_doc"] == pytest.approx(400.0)
    assert budget["kafka_path_us_per_doc"] == pytest.approx(250.0), "median run: 2.5 CPU s over 10,000 documents"
    assert budget["stage_budget_us_per_doc"] == pytest.approx(150.0)
    assert budget["cascade_us_per_doc"] == pytest.approx(350.0)
    assert budget["ceiling_docs_per_s"] == pytest.approx(2e6 / 600)
    with pytest.raises(ValueError, match="no-stage row"):
        throughput_budget([], stages, 5000, 2)


def test_stage_costs_follow_the_cascade(tmp_path):
    """The bench's per-stage table: every stage in order, the first sees every document, later ones
    only the survivors, and each that scored something cost CPU time."""
    from loadtest.bench import stage_costs

    config = tmp_path / "stages.toml"
    config.write_text('[[stages]]\nname = "gopher"\ntype = "gopher_quality"\n\n'
                      '[[stages]]\nname = "fineweb"\ntype = "fineweb_quality"\n')
    corpus = tmp_path / "c.jsonl"
    corpus.write_bytes(b"\n".join(orjson.dumps({"text": ("the cat sat on the mat and then it slept. " * (i % 40 + 1))
                                                        if i % 3 else "x" * 1200}) for i in range(900)))
    rows = stage_costs(config, sized_documents(corpus, 60, target_bytes=1000), tmp_path, warmup=10, docs=50)
    assert [row["stage"] for row in rows] == ["gopher", "fineweb"]
    assert rows[0]["reach"] == 1.0 and 0 < rows[1]["reach"] < 1.0
    assert all(row["us_per_scored_doc"] > 0 and row["us_per_input_doc"] > 0 for row in rows)
    with pytest.raises(ValueError, match="none to measure"):
        stage_costs(config, sized_documents(corpus, 5, target_bytes=1000), tmp_path, warmup=10, docs=50)
