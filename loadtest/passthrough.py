"""The raw kafka-python pass-through, the ceiling of the Kafka rows of ``loadtest.bench``.

    python -m loadtest.passthrough --bootstrap 127.0.0.1:9092 --input in --output out --group g

Consume + produce + commit per batch with the daemon's delivery guarantees (acks=all, idempotence,
commit only after every output of the batch is acknowledged), its producer settings and the same
source headers, minus parsing, scoring and routing. It runs as its own process, like the daemon,
so the benchmark can measure its CPU and hold it (SIGSTOP) until its group is assigned. Assignment
changes are logged as JSON lines on stderr in the daemon's format ("partitions assigned" /
"partitions revoked"), so the benchmark reads both kinds of process the same way. Runs until
SIGTERM / SIGINT, then finishes the batch in hand and leaves the group.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from selectd.config import KafkaSection
from selectd.records import Record, source_headers


class LoggedAssignment(ConsumerRebalanceListener):
    @staticmethod
    def _log(event: str, partitions) -> None:
        sys.stderr.write(json.dumps({"event": event, "partitions": sorted(f"{tp.topic}:{tp.partition}"
                                                                        for tp in partitions)}) + "\n")
        sys.stderr.flush()

    def on_partitions_revoked(self, revoked):
        self._log("partitions revoked", revoked)

    def on_partitions_assigned(self, assigned):
        self._log("partitions assigned", assigned)


def passthrough(bootstrap: str, source: str, sink: str, group: str, stop: threading.Event, batch: int = 1000,
                session_timeout_ms: int = 6000) -> None:
    """Copy messages from ``source`` to ``sink`` in batches of up to ``batch`` until ``stop`` is set."""
    defaults = KafkaSection(bootstrap_servers=[bootstrap], group_id=group, input_topics=[source])
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", max_poll_interval_ms=5000,
                             session_timeout_ms=session_timeout_ms, heartbeat_interval_ms=1000, max_poll_records=batch)
    consumer.subscribe([source], listener=LoggedAssignment())
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                             linger_ms=defaults.linger_ms, batch_size=defaults.producer_batch_size,
                             max_request_size=defaults.max_request_size)
    try:
        while not stop.is_set():
            fetched = consumer.poll(timeout_ms=500, max_records=batch)
            offsets = {}
            for tp, messages in fetched.items():
                for m in messages:
                    record = Record(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp)
                    producer.send(sink, key=m.key, value=m.value, headers=source_headers(record))
                offsets[TopicPartition(tp.topic, tp.partition)] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
            producer.flush()
            if offsets:
                consumer.commit(offsets)
    finally:
        producer.close()
        consumer.close(autocommit=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.passthrough", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    passthrough(args.bootstrap, args.input, args.output, args.group, stop, session_timeout_ms=args.session_timeout_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
