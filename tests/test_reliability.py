"""Reliability, shorter than the loadtest runs but through the same code (loadtest/faults.py, poison.py,
soak.py): kill -9 cycles, a broker restart, a group losing a member, produce failures, poison input,
and a short soak. The full runs and their figures: ``python -m loadtest.faults`` / ``loadtest.soak``.
Also, without a broker: the commit loop's read-ahead protocol (order, rewind, revocation, stop) and
the sink's partitioner (same partition for every key as kafka-python's default).
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import random
import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer
from kafka import errors as kafka_errors
from kafka.partitioner.default import DefaultPartitioner
from kafka.partitioner.default import murmur2 as reference_murmur2

from conftest import Topics, collect, create_topics, documents, produce, write_config
from loadtest import faults
from loadtest.harness import RULE_STAGES
from loadtest.soak import soak
from selectd.config import load_config
from selectd.dedup.store import StoreError
from selectd.kafka import admin
from selectd.kafka.base import ProducerSink
from selectd.kafka.commit import CommitLoop
from selectd.kafka.confluent_sink import ConfluentSink
from selectd.kafka.sink import KafkaSink, KeyHashPartitioner, murmur2, wakeups_at_flush
from selectd.metrics import Metrics
from selectd.records import Output, Record
from selectd.sinks.base import DeliveryError, Sink

pytestmark = pytest.mark.kafka

MB = 1024 * 1024


def test_kill_9_cycles_lose_nothing_and_duplicate_at_most_one_batch_per_crash(broker, tmp_path, kafka_client):
    report = faults.kill_cycles(broker.bootstrap, tmp_path, docs=5000, kills=3, rate=1500, client=kafka_client)
    assert report.kills == 3
    assert report.missing == 0, report.lines()
    assert max(report.duplicates_per_crash) <= report.batch_max_docs, report.lines()


def test_broker_restart_daemon_reports_not_ready_stays_up_and_resumes(tmp_path, kafka_client):
    # The test broker keeps data in memory only: after the restart topics and committed offsets are
    # gone, so this checks the daemon's side, not the survival of data on the broker.
    report = faults.broker_restart(tmp_path, down_s=8, client=kafka_client)
    assert report.not_ready_after_s < 15, "/readyz turned 503 while the broker was down"
    assert report.broker_up_while_down == 0
    assert report.alive_while_down, "the daemon did not exit"
    assert report.resumed_after_s < 90, "new messages were processed once the broker was back"
    assert report.ready_again and report.new_missing == 0


def test_three_member_group_loses_one_member_mid_stream(broker, tmp_path, kafka_client):
    report = faults.group_member_loss(broker.bootstrap, tmp_path, docs=3000, rate=600, client=kafka_client)
    assert report.missing == 0, report.lines()


def test_outputs_too_large_for_the_producer_are_dead_lettered_counted_and_committed(broker, tmp_path, kafka_client):
    report = faults.produce_failures(broker.bootstrap, tmp_path, documents_n=200, every=10, client=kafka_client)
    assert report.too_large == 20
    assert report.dead_lettered_produce_failed == 20, report.lines()
    assert report.truncated == 20, "dead letters over the limit themselves were cut to fit"
    assert report.failures_counted >= 20
    assert report.routed_ok == 180 and report.missing == 0
    assert report.committed_all, "the partition was not blocked by an undeliverable dead letter"


def _sink_config(broker, topics: Topics, tmp_path, delivery: str = "", client: str = "kafka-python"):
    path = write_config(tmp_path / "c.toml", broker, topics, extra="[delivery]\nretry_backoff_s = 0.01\n" + delivery,
                        client=client)
    return load_config(path)


def _output(topic: str, offset: int) -> Output:
    record = Record("in", 0, offset, b"k%d" % offset, b'{"id": "x", "text": "y"}')
    return Output(topic, record.key, record.value, [], "accepted", None, record, "x")


#: what each client reports, and the failure kind that is (selectd.kafka.base.FAILURE_KINDS): a topic
#: missing with auto-creation off (kafka-python: send() raises KafkaTimeoutError once its metadata
#: wait is over; librdkafka: the delivery report says _UNKNOWN_TOPIC), a partition the broker does
#: not know, a partition without a leader
INJECTED = {"missing topic": {"kafka-python": (kafka_errors.KafkaTimeoutError, "timed_out"),
                              "confluent-kafka": (KafkaError._UNKNOWN_TOPIC, "unknown_topic")},
            "unknown partition": {"kafka-python": (kafka_errors.UnknownTopicOrPartitionError, "unknown_topic"),
                                  "confluent-kafka": (KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown_topic")},
            "no leader": {"kafka-python": (kafka_errors.NotLeaderForPartitionError, "unavailable"),
                          "confluent-kafka": (KafkaError.NOT_LEADER_FOR_PARTITION, "unavailable")}}


def _failing_sink(client: str, config, metrics: Metrics, topics: set[str], case: str) -> ProducerSink:
    """A sink of ``client`` whose sends to ``topics`` fail as that client reports ``case`` (INJECTED)."""
    error, _ = INJECTED[case][client]
    if client == "kafka-python":
        sink = KafkaSink(config, metrics)
        send = sink.producer.send

        def failing(topic, **kwargs):
            if topic in topics:
                raise error(f"injected for {topic}")
            return send(topic, **kwargs)

        sink.producer.send = failing
        return sink

    class FailingProducer(Producer):  # a C type: its methods are replaced in a subclass, not on an instance
        def __init__(self, settings):
            super().__init__(settings)
            self.report = settings["on_delivery"]

        def produce(self, topic, value=None, key=None, **kwargs):
            if topic in topics:  # reported as librdkafka does, with the record
                return self.report(KafkaError(error), Message(topic=topic, value=value, key=key))
            return super().produce(topic, value, key, **kwargs)

    return ConfluentSink(config, metrics, new_producer=FailingProducer)


@pytest.mark.parametrize("case", ["missing topic", "unknown partition"])
def test_a_timeout_or_missing_topic_is_retried_and_dead_letters_no_good_document(broker, tmp_path, kafka_client, case):
    # A topic the broker does not know: with auto-create off a real broker never returns metadata for
    # it (kafka-python: send() raises KafkaTimeoutError after max_block_ms; librdkafka: the delivery
    # report says _UNKNOWN_TOPIC), and a partition it does not know (yet). (Tansu creates a missing
    # topic on first use and cannot be told not to, so the error is injected at the producer.) Retrying
    # fixes both (the topic is created, the partition recovers): the batch stays uncommitted. A send
    # not acknowledged within the delivery timeout fails the batch too (test below).
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    config = _sink_config(broker, topics, tmp_path, "produce_retries = 1\n", client=kafka_client)
    metrics = Metrics()
    sink = _failing_sink(kafka_client, config, metrics, {"slow-or-missing"}, case)
    with pytest.raises(DeliveryError, match="undelivered after retries"):
        sink.deliver([_output("slow-or-missing", 0), _output(topics.accepted, 1)])
    sink.close()
    assert collect(broker, [topics.dlq], 1, timeout_s=3) == [], "no good document is dead-lettered"
    kind = INJECTED[case][kafka_client][1]
    assert metrics.produce_failures.labels("slow-or-missing", kind)._value.get() == 2, "sent, then retried"
    assert metrics.dead_letters.labels("produce_failed")._value.get() == 0


#: errors each client reports that no retry fixes (dead-lettered), and some that one does
CLASSIFIED = {
    "kafka-python": ([kafka_errors.MessageSizeTooLargeError(), kafka_errors.RecordListTooLargeError(),
                      kafka_errors.InvalidTopicError(), kafka_errors.TopicAuthorizationFailedError(),
                      kafka_errors.CorruptRecordError(), kafka_errors.InvalidRecordError()],
                     [kafka_errors.KafkaTimeoutError(), kafka_errors.UnknownTopicOrPartitionError(),
                      kafka_errors.NotLeaderForPartitionError(), kafka_errors.RequestTimedOutError(),
                      kafka_errors.KafkaConnectionError(), kafka_errors.NotEnoughReplicasError()]),
    "confluent-kafka": ([KafkaException(KafkaError(code)) for code in (
                            KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.TOPIC_EXCEPTION,
                            KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.INVALID_MSG, KafkaError.INVALID_RECORD)],
                        [KafkaException(KafkaError(code)) for code in (
                            KafkaError._UNKNOWN_TOPIC, KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.NOT_LEADER_FOR_PARTITION,
                            KafkaError.REQUEST_TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN,
                            KafkaError.NOT_ENOUGH_REPLICAS)]),
}


def test_only_errors_no_retry_fixes_are_permanent_and_both_clients_name_them_alike(kafka_client):
    sink_type = KafkaSink if kafka_client == "kafka-python" else ConfluentSink
    sink = sink_type.__new__(sink_type)  # the classification needs no producer
    permanent, retried = CLASSIFIED[kafka_client]
    assert all(sink._is_permanent(e) for e in permanent)
    assert not any(sink._is_permanent(e) for e in retried)
    kinds = [sink._failure_kind(e) for e in permanent]
    assert kinds == ["too_large", "too_large", "invalid_topic", "not_authorized", "invalid_record", "invalid_record"]
    assert set(sink._failure_kind(e) for e in retried) <= {"timed_out", "unknown_topic", "unavailable"}


def test_the_daemon_waits_for_its_broker_with_models_loaded_once(tmp_path, daemons, kafka_client):
    """No broker at start: a log line per try with a capped backoff, /readyz 503 and /healthz 200
    meanwhile, no traceback; once the broker listens the daemon connects and works, its models loaded
    only at start; SIGTERM exits 0."""
    import signal
    import time
    import urllib.error
    import urllib.request

    from selectd.demo.broker import TansuBroker, free_port

    late = TansuBroker(port=free_port(), log_path=tmp_path / "tansu.log")
    topics = Topics(partitions=1)
    config = write_config(tmp_path / "c.toml", late, topics, extra="[delivery]\nbroker_backoff_max_s = 1.0\n",
                          stages=RULE_STAGES, client=kafka_client)
    daemon = daemons(config, tmp_path / "daemon.log", "kafka.request_timeout_ms=2000")
    base = daemon.metrics_url().rsplit("/", 1)[0]
    deadline = time.monotonic() + 60
    while sum(e["event"] == "brokers not reachable; retrying" for e in daemon.events()) < 3:
        assert time.monotonic() < deadline and daemon.alive(), daemon.events()[-5:]
        time.sleep(0.2)
    tries = [e for e in daemon.events() if e["event"] == "brokers not reachable; retrying"]
    assert [e["attempt"] for e in tries[:3]] == [1, 2, 3]
    assert [e["retry_in_s"] for e in tries[:3]] == [0.5, 1.0, 1.0], "doubling, capped at broker_backoff_max_s"
    with pytest.raises(urllib.error.HTTPError) as not_ready:
        urllib.request.urlopen(base + "/readyz", timeout=5)
    assert not_ready.value.code == 503
    assert urllib.request.urlopen(base + "/healthz", timeout=5).status == 200, "waiting for a broker is not stuck"
    with late:
        create_topics(late, topics)
        daemon.wait_for_event("connected to the brokers", timeout_s=60)
        produce(late, topics.input, documents(20, "late"))
        assert len(collect(late, [topics.accepted, topics.rejected], 20, timeout_s=60)) == 20
        assert urllib.request.urlopen(base + "/readyz", timeout=5).status == 200
        daemon.process.send_signal(signal.SIGTERM)
        assert daemon.process.wait(60) == 0
    events = [e["event"] for e in daemon.events()]
    assert events.count("models loaded") == 1 and events.index("models loaded") < events.index("brokers not reachable; retrying")
    raw = daemon.log_path.read_bytes().splitlines()
    assert all(line.startswith(b"{") for line in raw), "every log line is JSON: no raw traceback"


def test_transient_produce_failure_raises_and_the_batch_is_not_committed(broker, tmp_path, kafka_client):
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    config = _sink_config(broker, topics, tmp_path, "produce_retries = 2\n", client=kafka_client)
    metrics = Metrics()
    # The DLQ fails too, so nothing can take the output: the batch must stay uncommitted.
    sink = _failing_sink(kafka_client, config, metrics, {topics.accepted, topics.dlq}, "no leader")

    class Source:
        """Records what the commit loop does with the source."""
        joined = True

        def __init__(self):
            self.commits, self.rewound = [], []

        def owned(self): return {("in", 0)}
        def commit(self, offsets): self.commits.append(offsets)
        def keep_alive(self): pass
        def resume(self): pass
        def rewind(self, records): self.rewound.extend(records)

    class Pipeline:
        def process(self, records):
            return [_output(topics.accepted, r.offset) for r in records]

    source = Source()
    loop = CommitLoop(config, Pipeline(), source, sink, metrics)
    records = [Record("in", 0, offset, b"k", b"{}") for offset in range(3)]
    with pytest.raises(DeliveryError):
        loop.complete(loop.submit(records))
    assert source.commits == [], "an undelivered batch is never committed"
    loop.stop.set()  # the backoff after the error returns at once
    loop._on_batch_failed(records, DeliveryError("x"))
    assert source.rewound == records, "the batch is read again"
    assert metrics.broker_up._value.get() == 0 and metrics.ready._value.get() == 0
    assert metrics.produce_failures.labels(topics.accepted, "unavailable")._value.get() == 3 * 3
    assert metrics.produce_retries._value.get() == 2 * 3
    assert metrics.documents_out.labels(topics.accepted, "accepted")._value.get() == 0
    sink.close()


def test_a_send_not_acknowledged_in_time_fails_the_batch_and_its_retry_gets_a_fresh_producer(broker, tmp_path,
                                                                                             kafka_client):
    # kafka-python: the flush outlives kafka.delivery_timeout_ms; librdkafka: the delivery report says
    # _MSG_TIMED_OUT. Either way nothing is dead-lettered: the batch is not committed, and read again.
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    config = _sink_config(broker, topics, tmp_path, client=kafka_client)
    metrics = Metrics()
    if kafka_client == "kafka-python":
        sink = KafkaSink(config, metrics)
        flush = sink.producer.flush

        def flush_timing_out(timeout=None):
            sink.producer.flush = flush  # once: the failed producer's close() flushes too
            raise kafka_errors.KafkaTimeoutError(f"Failed to flush buffered records within {timeout} secs")

        sink.producer.flush = flush_timing_out
    else:
        class TimingOutProducer(Producer):
            def __init__(self, settings):
                super().__init__(settings)
                self.report = settings["on_delivery"]

            def produce(self, topic, value=None, key=None, **kwargs):
                self.report(KafkaError(KafkaError._MSG_TIMED_OUT), Message(topic=topic, value=value, key=key))

        sink = ConfluentSink(config, metrics, new_producer=TimingOutProducer)
        sink._new_producer = Producer  # the retry's fresh producer is a working one
    with pytest.raises(DeliveryError, match="producer failed"):
        sink.deliver([_output(topics.accepted, 0)])
    assert sink.producer is None, "the producer is dropped with the failed batch"
    assert metrics.dead_letters.labels("produce_failed")._value.get() == 0
    sink.deliver([_output(topics.accepted, 0)])
    sink.close()
    # (the failed producer may have sent it after all: at least once)
    assert len(collect(broker, [topics.accepted], 1, timeout_s=20)) >= 1 and not collect(broker, [topics.dlq], 0, 1)


def test_poison_corpus_every_bad_message_dead_lettered_every_good_one_routed(broker, tmp_path, kafka_client):
    # 3,000 malformed messages here (the full run: 10,000, `python -m loadtest.faults --only poison`),
    # one 10 MB text and one value over max_message_bytes among them.
    run = faults.poison(broker.bootstrap, tmp_path, n_bad=3000, rss_bound_bytes=600 * MB, huge_texts=1,
                        client=kafka_client)
    assert run.alive, "the daemon never exits on bad input"
    assert run.report.ok, run.lines()
    assert run.report.bad >= 3000 and run.report.good > 2000
    reasons = set(run.report.dlq_by_reason)
    assert {"invalid_json", "invalid_utf8", "invalid_unicode", "not_an_object", "missing_id", "id_not_string",
            "missing_text", "text_not_string", "empty_text", "text_too_large", "message_too_large", "tombstone",
            "produce_failed"} <= reasons
    assert run.peak_rss_bytes < run.rss_bound_bytes, run.lines()


def test_short_soak_keeps_rss_flat(broker, tmp_path):
    lines: list[str] = []
    report = soak(broker.bootstrap, tmp_path, seconds=60, rate=300, sample_s=5, warmup_samples=2, on_sample=lines.append)
    assert report.alive and len(report.samples) >= 10
    assert report.samples[-1].routed > 10_000, lines
    assert report.growth_bytes() < 20 * MB, lines


@pytest.mark.parametrize("key, value", [("topics.accepted", "bad topic!"), ("topics.dlq", ".."),
                                        ("kafka.input_topics", ["t" * 250])])
def test_an_illegal_topic_name_is_a_config_error_not_a_crash_at_the_first_send(broker, tmp_path, key, value):
    # kafka-python raises a plain ValueError (not a KafkaError) when sending to such a topic, which
    # the delivery policy does not handle: the daemon would stop at its first batch.
    from selectd.config import ConfigError, apply_override, config_from_dict
    import tomllib

    path = write_config(tmp_path / "c.toml", broker, Topics(1))
    data = tomllib.loads(path.read_text())
    apply_override(data, key.split("."), value)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_from_dict(data)


class _ScriptedSource:
    """A consumer stand-in: ``poll_batch`` returns the scripted batches in turn (then nothing), and
    each poll waits for the worker to be busy, so the read-ahead overlap is deterministic."""

    joined = True

    def __init__(self, batches: list[list[Record]], owned: set[tuple[str, int]]):
        self.batches, self.owned_set = list(batches), owned
        self.polls, self.commits, self.rewound, self.events = 0, [], [], []
        self.worker_busy = threading.Event()
        self.on_poll = None  # optional callback(poll number) before the batch is returned

    def owned(self):
        return set(self.owned_set)

    def commit(self, offsets):
        self.commits.append({partition: offset for (_, partition), offset in offsets.items()})
        self.events.append(("commit", dict(self.commits[-1])))

    def poll_batch(self, stop):
        self.polls += 1
        if self.polls > 1 and self.batches:
            assert self.worker_busy.wait(5), "the previous batch was handed to the worker before this poll"
        if self.on_poll:
            self.on_poll(self.polls)
        if not self.batches:
            stop.wait(0.01)
            return []
        self.events.append(("poll", self.polls))
        return self.batches.pop(0)

    def keep_alive(self): pass
    def resume(self): pass
    def update_lag(self, committed): pass
    def rewind(self, records): self.rewound.extend(records)


class _GatedSink:
    """Delivers a batch only when the test opens its gate; may fail a given batch."""

    def __init__(self, source: _ScriptedSource, fail_batches: set[int] = frozenset()):
        self.source, self.fail_batches = source, fail_batches
        self.delivered: list[list[int]] = []
        self.gates: dict[int, threading.Event] = collections.defaultdict(threading.Event)

    def deliver(self, outputs):
        number = len(self.delivered) + 1
        self.delivered.append([out.record.offset for out in outputs])
        self.source.events.append(("deliver started", number))
        self.source.worker_busy.set()
        assert self.gates[number].wait(5), f"gate of batch {number} never opened"
        self.source.worker_busy.clear()
        if number in self.fail_batches:
            raise DeliveryError(f"injected failure of batch {number}")
        self.source.events.append(("delivered", number))


class _EchoPipeline:
    def process(self, records):
        return [_output("out", r.offset) for r in records]


def _records(partition: int, offsets) -> list[Record]:
    return [Record("in", partition, offset, b"k", b"{}") for offset in offsets]


def _loop(tmp_path, source, sink, metrics: Metrics | None = None, progress_interval_s: float = 3600) -> CommitLoop:
    path = tmp_path / "c.toml"
    path.write_text('[kafka]\nbootstrap_servers = ["127.0.0.1:1"]\ngroup_id = "g"\ninput_topics = ["in"]\n'
                    '[topics]\naccepted = "a"\nrejected = "r"\ndlq = "d"\n[delivery]\nbroker_backoff_max_s = 0.5\n'
                    f'[metrics]\nlag_interval_s = 3600\n[logging]\nprogress_interval_s = {progress_interval_s}\n')
    return CommitLoop(load_config(path), _EchoPipeline(), source, sink, metrics or Metrics())


def _run_in_thread(loop: CommitLoop) -> tuple[threading.Thread, list[int]]:
    code: list[int] = []
    thread = threading.Thread(target=lambda: code.append(loop.run()), daemon=True)
    thread.start()
    return thread, code


def test_read_ahead_overlaps_delivery_and_commits_strictly_in_order_after_delivery(tmp_path):
    batches = [_records(0, range(0, 3)), _records(0, range(3, 6)), _records(0, range(6, 9))]
    source = _ScriptedSource(batches, {("in", 0)})
    sink = _GatedSink(source)
    loop = _loop(tmp_path, source, sink)

    def open_gates(poll_number):
        # Batch N's delivery may finish only once batch N+1 was read: reading overlaps delivering.
        if poll_number >= 2:
            sink.gates[poll_number - 1].set()
        if poll_number == 4:
            sink.gates[3].set()
            loop.request_stop()

    source.on_poll = open_gates
    thread, code = _run_in_thread(loop)
    thread.join(10)
    assert code == [0]
    assert sink.delivered == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert source.commits == [{0: 3}, {0: 6}, {0: 9}], "every batch committed, in order"
    events = source.events
    for number, offset in ((1, 3), (2, 6), (3, 9)):
        assert events.index(("delivered", number)) < events.index(("commit", {0: offset})), "commit after delivery"
    assert events.index(("poll", 2)) < events.index(("delivered", 1)), "batch 2 was read while batch 1 was in flight"
    assert events.index(("commit", {0: 3})) < events.index(("deliver started", 2)), "one batch in flight at a time"


def test_keep_alive_polls_only_batches_that_outlast_its_threshold(tmp_path):
    # Pausing makes both clients drop and re-fetch what they prefetched: a batch shorter than the
    # threshold (a quarter of max_poll_interval_ms, at most 2 s; here the default 300 s: 2 s) must not
    # pause; a longer one keeps the member polling every quarter second from then on.
    class CountingSource(_ScriptedSource):
        keep_alives = 0

        def keep_alive(self):
            self.keep_alives += 1

    loop = _loop(tmp_path, CountingSource([], set()), None)
    assert loop._keep_alive_after_s() == 2.0
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    for duration_s, expected in ((1.2, range(0, 1)), (3.0, range(2, 6))):
        loop.source = CountingSource([], set())
        loop._wait_keeping_alive(pool.submit(time.sleep, duration_s))
        assert loop.source.keep_alives in expected, (duration_s, loop.source.keep_alives)
    pool.shutdown()


def test_failed_delivery_rewinds_the_read_ahead_batch_too_and_commits_neither(tmp_path):
    first, read_ahead = _records(0, range(0, 3)), _records(1, range(0, 2))
    source = _ScriptedSource([first, read_ahead], {("in", 0), ("in", 1)})
    sink = _GatedSink(source, fail_batches={1})
    loop = _loop(tmp_path, source, sink)

    def on_poll(poll_number):
        if poll_number == 2:
            sink.gates[1].set()
        if poll_number == 3:
            loop.request_stop()

    source.on_poll = on_poll
    thread, code = _run_in_thread(loop)
    thread.join(10)
    assert code == [0]
    assert source.commits == [], "neither the failed batch nor the batch read behind it is committed"
    assert source.rewound == first + read_ahead, "both are read again after the backoff"
    assert sink.delivered == [[0, 1, 2]], "the read-ahead batch is not processed after the failure"


def test_a_dedup_store_failure_rewinds_the_batch_reports_not_ready_and_commits_once_the_store_answers(tmp_path):
    batch = _records(0, range(0, 3))
    source = _ScriptedSource([batch, [], batch], {("in", 0)})  # the rewound batch is read again at poll 3
    source.worker_busy.set()  # no gate: the pipeline answers at once

    class Delivered(Sink):
        def send(self, outputs):
            return list(outputs)

    class StoreDownOnce:
        """The first batch fails as a dedup stage does when its store cannot answer."""
        def __init__(self):
            self.calls = 0

        def process(self, records):
            self.calls += 1
            if self.calls == 1:
                raise StoreError("redis ('127.0.0.1', 6379): Connection refused")
            return [_output("out", r.offset) for r in records]

    metrics = Metrics()
    loop = _loop(tmp_path, source, Delivered(metrics), metrics)
    loop.pipeline = StoreDownOnce()
    ready: dict[int, float] = {}

    def on_poll(poll_number):
        ready[poll_number] = metrics.ready._value.get()
        if poll_number == 5:
            loop.request_stop()

    source.on_poll = on_poll
    thread, code = _run_in_thread(loop)
    thread.join(10)
    assert code == [0]
    assert source.rewound == batch, "the failed batch is read again"
    assert source.commits == [{0: 3}], "committed once, after the retry succeeded"
    assert ready[3] == 0, "not ready while the store fails"
    assert ready[5] == 1, "ready again once a batch committed"
    assert metrics.broker_up._value.get() == 1, "a store failure is not a broker failure"
    assert metrics.documents_out.labels("out", "accepted")._value.get() == 3, "nothing delivered before the retry"


def test_read_ahead_drops_revoked_partitions_and_stop_leaves_it_uncommitted(tmp_path):
    first = _records(0, range(0, 3))
    read_ahead = _records(0, range(3, 5)) + _records(1, range(0, 2))
    third = _records(1, range(2, 4))
    source = _ScriptedSource([first, read_ahead, third], {("in", 0), ("in", 1)})
    sink = _GatedSink(source)
    loop = _loop(tmp_path, source, sink)

    def on_poll(poll_number):
        if poll_number == 2:
            source.owned_set.discard(("in", 0))  # a rebalance while batch 1 is in flight
            sink.gates[1].set()
        if poll_number == 3:
            loop.request_stop()  # SIGTERM while the third batch is being read
            sink.gates[2].set()

    source.on_poll = on_poll
    thread, code = _run_in_thread(loop)
    thread.join(10)
    assert code == [0]
    assert sink.delivered == [[0, 1, 2], [0, 1]], "the revoked partition's read-ahead records were dropped"
    assert source.commits == [{1: 2}], "batch 1 is not committed (revoked), batch 2 is, the third never"


def test_the_loop_logs_progress_every_progress_interval(tmp_path, caplog):
    class CountingSink(Sink):
        def send(self, outputs):
            return list(outputs)

    def run(progress_interval_s: float) -> list[logging.LogRecord]:
        source = _ScriptedSource([_records(0, range(0, 3)), _records(0, range(3, 6))], {("in", 0)})
        source.worker_busy.set()  # no gate: every batch is delivered at once
        metrics = Metrics()
        loop = _loop(tmp_path, source, CountingSink(metrics), metrics, progress_interval_s)
        source.on_poll = lambda poll_number: loop.request_stop() if poll_number == 40 else None
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="selectd.commit"):
            thread, code = _run_in_thread(loop)
            thread.join(10)
        assert code == [0]
        return [r for r in caplog.records if r.getMessage() == "progress"]

    lines = run(progress_interval_s=0.05)  # 40 polls, the idle ones 10 ms apart: several lines
    assert len(lines) >= 2
    assert lines[-1].documents_in == 6 and lines[-1].outputs == {"accepted": 6}
    assert all(line.docs_per_s >= 0 for line in lines) and any(line.docs_per_s > 0 for line in lines)
    assert run(progress_interval_s=3600) == [], "no line before the interval has passed"


def test_key_hash_partitioner_maps_every_key_as_kafka_pythons_default():
    for length in range(0, 70):
        for _ in range(20):
            data = os.urandom(length)
            assert murmur2(data) == reference_murmur2(data), data

    class Cluster:
        def __init__(self, counts):
            self.counts = counts
        def topics(self): return set(self.counts)
        def partitions_for_topic(self, topic): return set(range(self.counts[topic])) if topic in self.counts else None
        def available_partitions_for_topic(self, topic): return self.partitions_for_topic(topic)

    cluster = Cluster({"one": 1, "three": 3, "twelve": 12})
    ours, default = KeyHashPartitioner(), DefaultPartitioner()
    rng = random.Random(0)
    for topic in ("one", "three", "twelve"):
        for i in range(500):
            key = f"doc-{rng.getrandbits(40)}-{i}".encode()
            assert ours.partition(topic, key, key, b"v", b"v", cluster) == default.partition(topic, key, key, b"v", b"v", cluster)
        assert ours.partition(topic, None, None, b"v", b"v", cluster) in range(cluster.counts[topic]), "unkeyed: any"
    with pytest.raises(ValueError):
        ours.partition("missing", b"k", b"k", b"v", b"v", cluster)


def test_kafka_python_sender_is_woken_at_flush_not_per_record(broker):
    """The private attribute wakeups_at_flush shadows, and the per-record wakeups it saves, on the
    pinned kafka-python: an upgrade that changes either fails here."""
    import kafka
    from kafka import KafkaProducer

    assert kafka.__version__ == "3.0.12", "wakeups_at_flush is written against kafka-python 3.0.12's sender"
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    # small batches and a long linger: the partition holds many batches, so every send() reports "full"
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap, batch_size=16_384, linger_ms=5_000)
    wakeups = []
    wake_client = producer._sender._client.wakeup  # what Sender.wakeup calls
    producer._sender._client.wakeup = lambda: (wakeups.append(1), wake_client())[1]
    try:
        producer.partitions_for(topics.input)
        value = b"x" * 4000
        wakeups.clear()
        for _ in range(40):
            producer.send(topics.input, value=value)
        assert len(wakeups) >= 30, "kafka-python wakes the sender per send once a partition holds two batches"
        producer.flush()
        wakeups.clear()
        with wakeups_at_flush(producer):
            futures = [producer.send(topics.input, value=value) for _ in range(40)]
        assert wakeups == [] and "wakeup" not in vars(producer._sender), "no wakeup inside the block; restored after"
        producer.flush(timeout=30)
        assert wakeups and all(future.succeeded() for future in futures), "the flush woke the sender and sent all"
    finally:
        producer.close()


def test_both_clients_put_a_key_on_the_same_partition(broker, tmp_path):
    """kafka-python's partitioner (KeyHashPartitioner) and librdkafka's murmur2_random agree, as the Java
    client's: switching clients keeps a key's outputs on one partition."""
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    config = _sink_config(broker, topics, tmp_path)
    targets = {"kafka-python": f"{topics.tag}-kp", "confluent-kafka": f"{topics.tag}-ck"}
    admin.ensure_topics(broker.bootstrap, {topic: 12 for topic in targets.values()})
    partition_of = {}
    for client, topic in targets.items():
        sink = (KafkaSink if client == "kafka-python" else ConfluentSink)(config, Metrics())
        outputs = [Output(topic, f"doc-{i}".encode(), b"{}", [], "accepted", None, Record("in", 0, i, None, b"{}"))
                   for i in range(300)]
        sink.deliver(outputs)
        sink.close()
        partition_of[client] = {m.key: m.partition for m in collect(broker, [topic], 300, timeout_s=30)}
    assert len(partition_of["kafka-python"]) == 300 and len(set(partition_of["kafka-python"].values())) == 12
    assert partition_of["confluent-kafka"] == partition_of["kafka-python"]


def test_healthz_fails_when_work_waits_with_nothing_committed_and_recovers(tmp_path):
    import time
    import urllib.error
    import urllib.request

    from selectd.server import start_http_server

    source = _ScriptedSource([_records(0, range(3))], {("in", 0)})
    sink = _GatedSink(source)
    metrics = Metrics()
    server = start_http_server(metrics, "127.0.0.1", 0, stall_timeout_s=0.5)
    url = "http://127.0.0.1:%d/healthz" % server.server_address[1]

    said: list[bytes] = []

    def status() -> int:
        try:
            return urllib.request.urlopen(url, timeout=5).status
        except urllib.error.HTTPError as error:
            said.append(error.read())
            return error.code

    try:
        assert status() == 200
        loop = _loop(tmp_path, source, sink, metrics)
        thread, code = _run_in_thread(loop)
        assert source.worker_busy.wait(5), "the batch reached the sink, which holds it"
        time.sleep(0.8)
        assert status() == 503, "a batch fetched and stuck for longer than stall_timeout_s"
        assert said[-1].startswith(b"stalled: work has waited") and b"(limit 0.5 s)" in said[-1]
        metrics.broker_up.set(0)
        assert status() == 200, "a broker that is down is for /readyz; a restart would not help"
        metrics.broker_up.set(1)
        sink.gates[1].set()
        deadline = time.monotonic() + 5
        while status() != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert source.commits == [{0: 3}] and status() == 200, "committed: nothing waits any more"
        time.sleep(0.8)
        assert status() == 200, "idle is not stuck"
        loop.request_stop()
        thread.join(10)
        assert code == [0]
    finally:
        server.shutdown()


def test_metrics_carry_the_standard_process_and_platform_collectors():
    from prometheus_client import generate_latest

    text = generate_latest(Metrics().registry).decode()
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds", "python_info",
                 "python_gc_collections_total"):
        assert f"\n{name}" in text, name
