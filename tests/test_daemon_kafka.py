"""The daemon against a real Kafka-protocol broker (Tansu): delivery, crashes, drain, groups."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

import orjson
import pytest

from conftest import Topics, collect, create_topics, documents, produce, write_config
from loadtest.harness import RULE_STAGES

pytestmark = pytest.mark.kafka


SMALL_TEXT_LIMIT = "[input]\nmax_text_bytes = 4000\n"  # so BAD_MESSAGES' 5,000-byte text is dead-lettered

LOW_QUALITY = "buy now " * 5  # too few words: rejected by the gopher stage

BAD_MESSAGES: list[tuple[bytes, bytes | None, str]] = [
    (b"bad-json", b"{not json", "invalid_json"),
    (b"bad-array", b"[1, 2, 3]", "not_an_object"),
    (b"bad-noid", orjson.dumps({"text": "some text"}), "missing_id"),
    (b"bad-intid", orjson.dumps({"id": 7, "text": "some text"}), "id_not_string"),
    (b"bad-notext", orjson.dumps({"id": "x"}), "missing_text"),
    (b"bad-texttype", orjson.dumps({"id": "x", "text": ["a"]}), "text_not_string"),
    (b"bad-empty", orjson.dumps({"id": "x", "text": "   "}), "empty_text"),
    (b"bad-utf8", b'{"id": "x", "text": "\xff\xfe"}', "invalid_utf8"),
    (b"bad-tombstone", None, "tombstone"),
    (b"bad-huge", orjson.dumps({"id": "x", "text": "a" * 5000}), "text_too_large"),
]


def _mixed_input(n_good: int, n_low: int) -> list[tuple[bytes, bytes | None]]:
    return documents(n_good, "good") + documents(n_low, "low", LOW_QUALITY) + [(k, v) for k, v, _ in BAD_MESSAGES]


def test_round_trip_every_id_exactly_once(broker, daemons, tmp_path, kafka_client):
    topics = Topics(partitions=3)
    create_topics(broker, topics)
    config = write_config(tmp_path / "c.toml", broker, topics, RULE_STAGES, SMALL_TEXT_LIMIT, client=kafka_client)
    messages = _mixed_input(300, 50)
    produce(broker, topics.input, messages)
    daemon = daemons(config, tmp_path / "d.log")
    out = collect(broker, [topics.accepted, topics.rejected, topics.dlq], len(messages))
    assert daemon.terminate() == 0

    keys = Counter(m.key for m in out)
    assert set(keys) == {k for k, _ in messages} and max(keys.values()) == 1, "every id exactly once"
    by_topic = Counter(m.topic for m in out)
    assert by_topic == {topics.accepted: 300, topics.rejected: 50, topics.dlq: len(BAD_MESSAGES)}

    accepted = next(m for m in out if m.topic == topics.accepted)
    body = orjson.loads(accepted.value)
    assert body["meta"] == {"src": "test"} and isinstance(body["n"], int), "input fields preserved"
    assert body["selectd"]["decision"] == "accepted"
    assert body["selectd"]["scores"]["gopher"]["non_symbol_words"] > 50
    assert body["selectd"]["versions"]["config"]

    rejected = orjson.loads(next(m for m in out if m.topic == topics.rejected).value)["selectd"]
    assert rejected["stage"] == "gopher" and rejected["reason"] == "gopher_short_doc"
    assert "repetition" not in rejected["scores"], "a rejected document is not scored by later stages"

    originals = dict((k, v) for k, v in messages)
    for message in (m for m in out if m.topic == topics.dlq):
        headers = dict(message.headers)
        expected_reason = next(r for k, _, r in BAD_MESSAGES if k == message.key)
        assert headers["selectd.reason"].decode() == expected_reason
        assert message.value == originals[message.key], "DLQ keeps the original bytes"
        assert headers["selectd.source.topic"].decode() == topics.input
        assert int(headers["selectd.source.offset"]) >= 0


def _stream(broker, topic, messages, seconds):
    """Produce ``messages`` spread over about ``seconds`` in a background thread."""
    chunks = 20
    size = max(1, len(messages) // chunks)

    def run():
        for start in range(0, len(messages), size):
            produce(broker, topic, messages[start:start + size])
            time.sleep(seconds / chunks)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_kill_9_mid_stream_loses_nothing(broker, daemons, tmp_path, kafka_client):
    topics = Topics(partitions=2)
    create_topics(broker, topics)
    # Small batches, each taking 50 ms at least: the daemon is always in the middle of one when it gets
    # killed, and still has most of the stream ahead of it (confluent-kafka would be through it at once).
    slow = '[[stages]]\nname = "slow"\ntype = "test_slow"\noptions = { sleep_s = 0.05 }\n'
    config = write_config(tmp_path / "c.toml", broker, topics, RULE_STAGES + slow, client=kafka_client,
                          top='plugins = ["tests.plugins.slow_scorer"]')
    messages = documents(3000, "k")
    produce(broker, topics.input, messages)
    first = daemons(config, tmp_path / "first.log", "batch.max_docs=50")
    collect(broker, [topics.accepted, topics.rejected, topics.dlq], 200, timeout_s=60)  # it is working
    first.kill()  # SIGKILL: no drain, no commit of the in-flight batch
    routed_before_restart = len(collect(broker, [topics.accepted, topics.rejected, topics.dlq], len(messages), timeout_s=1))
    assert 0 < routed_before_restart < len(messages), "the kill happened mid-stream"
    second = daemons(config, tmp_path / "second.log", "batch.max_docs=50")
    out = collect(broker, [topics.accepted, topics.rejected, topics.dlq], len(messages), timeout_s=120)
    assert second.terminate() == 0
    keys = Counter(m.key for m in out)
    missing = {k for k, _ in messages} - set(keys)
    assert not missing, f"{len(missing)} ids lost"
    duplicates = sum(c - 1 for c in keys.values())
    # At-least-once: duplicates come only from what was in flight at the kill: at most one
    # uncommitted batch per partition (a batch never spans more than max_docs records).
    assert duplicates <= 50 * topics.partitions


def _committed(broker, topics: Topics) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=topics.group, enable_auto_commit=False)
    try:
        return {p: consumer.committed(TopicPartition(topics.input, p)) or 0 for p in range(topics.partitions)}
    finally:
        consumer.close(autocommit=False)


def test_sigterm_drains_delivers_and_commits(broker, daemons, tmp_path, kafka_client):
    topics = Topics(partitions=2)
    create_topics(broker, topics)
    config = write_config(tmp_path / "c.toml", broker, topics, RULE_STAGES, client=kafka_client)
    messages = documents(4000, "s")
    producer = _stream(broker, topics.input, messages, seconds=6)
    daemon = daemons(config, tmp_path / "d.log")
    daemon.wait_for_event("partitions assigned")
    time.sleep(2)
    assert daemon.terminate() == 0, "drain exits 0"
    producer.join()
    assert any(line.get("event") == "draining" for line in daemon.events())
    committed = _committed(broker, topics)
    out = collect(broker, [topics.accepted, topics.rejected, topics.dlq], sum(committed.values()), timeout_s=30)
    delivered = Counter((int(dict(m.headers)["selectd.source.partition"]), int(dict(m.headers)["selectd.source.offset"]))
                        for m in out)
    expected = {(p, o) for p, end in committed.items() for o in range(end)}
    assert sum(committed.values()) > 0, "something was consumed before the signal"
    assert set(delivered) == expected, "exactly the committed input was delivered, nothing consumed was left behind"
    assert max(delivered.values()) == 1


def test_two_daemons_split_partitions(broker, daemons, tmp_path, kafka_client):
    topics = Topics(partitions=4)
    create_topics(broker, topics)
    config = write_config(tmp_path / "c.toml", broker, topics, RULE_STAGES, client=kafka_client)
    first = daemons(config, tmp_path / "a.log")
    second = daemons(config, tmp_path / "b.log")
    messages = documents(2000, "g")
    deadline = time.monotonic() + 60

    def owned(daemon) -> set[str]:
        # the latest assignment logged by the member (each rebalance logs the new set)
        lines = [line for line in daemon.events() if line.get("event") == "partitions assigned"]
        return set(lines[-1]["partitions"]) if lines else set()

    while time.monotonic() < deadline and not (owned(first) and owned(second)
                                               and len(owned(first) | owned(second)) == 4):
        time.sleep(0.2)
    assert owned(first) and owned(second) and not owned(first) & owned(second)
    produce(broker, topics.input, messages)
    out = collect(broker, [topics.accepted, topics.rejected, topics.dlq], len(messages))
    assert first.terminate() == 0 and second.terminate() == 0
    keys = Counter(m.key for m in out)
    assert set(keys) == {k for k, _ in messages}
    source_partitions = Counter(int(dict(m.headers)["selectd.source.partition"]) for m in out)
    assert set(source_partitions) == {0, 1, 2, 3}


def test_metrics_scrape_passes_promtool(broker, daemons, tmp_path):
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    config = write_config(tmp_path / "c.toml", broker, topics, RULE_STAGES, SMALL_TEXT_LIMIT)
    produce(broker, topics.input, _mixed_input(20, 5))
    daemon = daemons(config, tmp_path / "d.log")
    url = daemon.metrics_url()
    collect(broker, [topics.accepted, topics.rejected, topics.dlq], 20 + 5 + len(BAD_MESSAGES))
    # Counters move right after the broker acknowledged the batch, a moment after consumers see it.
    deadline = time.monotonic() + 10
    while _metric(url, "selectd_documents_out_total") < 20 + 5 + len(BAD_MESSAGES) and time.monotonic() < deadline:
        time.sleep(0.1)
    body = urllib.request.urlopen(url, timeout=5).read()
    lint = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
    assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()
    text = body.decode()
    for name in ("selectd_documents_in_total", "selectd_documents_out_total", "selectd_rejections_total",
                 "selectd_dead_letters_total", "selectd_batch_duration_seconds_bucket", "selectd_stage_duration_seconds_bucket",
                 "selectd_consumer_lag_messages", "selectd_assigned_partitions", "selectd_rebalances_total",
                 "selectd_commit_failures_total", "selectd_last_processed_timestamp_seconds", "selectd_build_info"):
        assert name in text, name
    assert 'selectd_rejections_total{reason="gopher_short_doc",stage="gopher"} 5.0' in text
    assert 'selectd_dead_letters_total{reason="text_too_large"} 1.0' in text
    base = url.rsplit("/", 1)[0]
    assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200
    assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
    assert daemon.terminate() == 0


def test_score_file_equals_kafka_path(broker, daemons, tmp_path):
    from selectd.app import score_file
    from selectd.config import load_config

    topics = Topics(partitions=1)
    create_topics(broker, topics)
    config_path = write_config(tmp_path / "c.toml", broker, topics, RULE_STAGES, SMALL_TEXT_LIMIT)
    messages = [(k, v) for k, v in _mixed_input(100, 20) if v is not None]  # a file has no tombstones
    input_path = tmp_path / "in.jsonl"
    input_path.write_bytes(b"\n".join(v for _, v in messages) + b"\n")
    score_file(load_config(config_path), input_path, tmp_path / "out.jsonl")
    file_lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert len(file_lines) == len(messages), "one output line per input line"

    produce(broker, topics.input, messages)
    daemon = daemons(config_path, tmp_path / "d.log")
    out = collect(broker, [topics.accepted, topics.rejected, topics.dlq], len(messages))
    assert daemon.terminate() == 0
    kafka_by_key = {m.key: m for m in out}
    for (key, value), line in zip(messages, file_lines):
        from_file = orjson.loads(line)["selectd"]
        message = kafka_by_key[key]
        if from_file["decision"] == "dlq":
            assert message.topic == topics.dlq and dict(message.headers)["selectd.reason"].decode() == from_file["reason"]
        else:
            assert orjson.loads(message.value)["selectd"] == from_file


def _metric(url: str, name: str, **labels: str) -> float:
    from selectd.status import scrape, total

    return total(scrape(url), name, **labels)


def test_sighup_reloads_without_leaving_the_group(broker, daemons, tmp_path, kafka_client):
    import signal

    topics = Topics(partitions=1)
    create_topics(broker, topics)
    config = write_config(tmp_path / "c.toml", broker, topics, client=kafka_client)  # no stages yet
    daemon = daemons(config, tmp_path / "d.log")
    daemon.wait_for_event("partitions assigned")
    url = daemon.metrics_url()
    produce(broker, topics.input, documents(10, "before"))
    collect(broker, [topics.accepted], 10)

    write_config(config, broker, topics, RULE_STAGES, client=kafka_client)
    daemon.process.send_signal(signal.SIGHUP)
    daemon.wait_for_event("reloaded")
    produce(broker, topics.input, documents(10, "after"))
    out = collect(broker, [topics.accepted], 20)
    scored = {m.key.decode(): orjson.loads(m.value)["selectd"]["scores"] for m in out}
    assert all(scored[f"after-{i}"].keys() == {"gopher", "repetition"} for i in range(10))
    assert all(scored[f"before-{i}"] == {} for i in range(10))

    config.write_text(config.read_text().replace('type = "gopher_quality"', 'type = "no_such_scorer"'))
    daemon.process.send_signal(signal.SIGHUP)
    failure = daemon.wait_for_event("reload failed; keeping the running config and models")
    assert "no_such_scorer" in failure["error"]
    assert _metric(url, "selectd_model_reloads_total", result="failure") == 1
    assert _metric(url, "selectd_model_reloads_total", result="success") == 1
    produce(broker, topics.input, documents(5, "still"))
    out = collect(broker, [topics.accepted], 25)
    assert {orjson.loads(m.value)["selectd"]["scores"].keys() == {"gopher", "repetition"}
            for m in out if m.key.startswith(b"still")} == {True}, "the old pipeline keeps running"
    revocations = [line for line in daemon.events() if line.get("event") == "partitions revoked" and line["partitions"]]
    assert not revocations, "reloads never left the group"
    assert daemon.terminate() == 0


def test_status_summarises_a_running_daemon(broker, daemons, tmp_path):
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    config = write_config(tmp_path / "c.toml", broker, topics, RULE_STAGES, SMALL_TEXT_LIMIT)
    daemon = daemons(config, tmp_path / "d.log")
    url = daemon.metrics_url()
    produce(broker, topics.input, _mixed_input(30, 7))
    collect(broker, [topics.accepted, topics.rejected, topics.dlq], 37 + len(BAD_MESSAGES))
    deadline = time.monotonic() + 30
    while (_metric(url, "selectd_ready") != 1 or _metric(url, "selectd_documents_out_total") < 37 + len(BAD_MESSAGES)) \
            and time.monotonic() < deadline:
        time.sleep(0.2)
    result = subprocess.run([sys.executable, "-m", "selectd.cli", "status", "--metrics-url", url, "--interval", "0.5"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "READY" in result.stdout and "NOT READY" not in result.stdout
    assert "accepted 30" in result.stdout and "rejected 7" in result.stdout and f"dlq {len(BAD_MESSAGES)}" in result.stdout
    assert "gopher/gopher_short_doc: 7" in result.stdout
    assert daemon.terminate() == 0
    missing = subprocess.run([sys.executable, "-m", "selectd.cli", "status", "--metrics-url", "http://127.0.0.1:1/metrics"],
                             capture_output=True, text=True)
    assert missing.returncode == 1 and "cannot scrape" in missing.stderr


def test_slow_batch_does_not_evict_the_member(broker, daemons, tmp_path, kafka_client):
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    # Each batch sleeps 7 s while max_poll_interval_ms is 5 s: without the paused keep-alive polling
    # the member would be evicted and its partitions revoked mid-batch.
    stages = '[[stages]]\nname = "slow"\ntype = "test_slow"\noptions = { sleep_s = 7.0 }\n'
    config = write_config(tmp_path / "c.toml", broker, topics, stages, top='plugins = ["tests.plugins.slow_scorer"]',
                          client=kafka_client)
    daemon = daemons(config, tmp_path / "d.log")
    daemon.wait_for_event("partitions assigned")
    produce(broker, topics.input, documents(50, "slow"))
    out = collect(broker, [topics.accepted], 50, timeout_s=40)
    assert len({m.key for m in out}) == 50
    time.sleep(1)
    assert daemon.terminate(timeout_s=30) == 0
    revocations = [line for line in daemon.events() if line.get("event") == "partitions revoked" and line["partitions"]][:-1]
    assert not revocations, "no rebalance while the slow batch ran (the last revocation is the shutdown)"
    assert _committed(broker, topics) == {0: 50}


def test_lag_gauge_counts_what_is_not_committed(broker, daemons, tmp_path, kafka_client):
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    # 60 documents in one produce batch, read 10 at a time, each batch taking 0.5 s: the lag is sampled
    # while it shrinks. (The test broker answers a ListOffsets(latest) with the last batch's BASE
    # offset + 1, here 1: the lag must come from the fetched high watermark.)
    stages = '[[stages]]\nname = "slow"\ntype = "test_slow"\noptions = { sleep_s = 0.5 }\n'
    config = write_config(tmp_path / "c.toml", broker, topics, stages, top='plugins = ["tests.plugins.slow_scorer"]',
                          extra="[metrics]\nlag_interval_s = 0.1\n[batch]\nmax_docs = 10\n", client=kafka_client)
    produce(broker, topics.input, documents(60, "lag"))
    daemon = daemons(config, tmp_path / "d.log")
    url = daemon.metrics_url()
    samples = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _committed(broker, topics) != {0: 60}:
        samples.append(_metric(url, "selectd_consumer_lag_messages", topic=topics.input, partition="0"))
        time.sleep(0.2)
    time.sleep(0.5)
    final = _metric(url, "selectd_consumer_lag_messages", topic=topics.input, partition="0")
    assert daemon.terminate() == 0
    assert 30 <= max(samples) <= 60, samples
    assert final == 0, samples
