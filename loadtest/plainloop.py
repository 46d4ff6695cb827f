"""The raw anchor of the Kafka rows: the plain loop a user would write instead of running selectd.

    python -m loadtest.plainloop --client kafka-python|confluent-kafka --bootstrap 127.0.0.1:9092 \\
        --input in --output out --group g

Per batch of up to ``--batch`` records: ``orjson`` loads + dumps each value, produce it with its key and
no headers, flush, commit the batch. The producer batches for throughput (``PRODUCER_BATCH_BYTES``);
everything else is the client's default, as a user would leave it: kafka-python 3.0 produces with
acks=all and idempotence, confluent-kafka with acks=all and no idempotence. No parsing checks, no
routing, no dead letters, no metrics, no read-ahead: what selectd adds is measured against this.

It runs as its own process, as the daemon does, logs assignment changes as JSON lines on stderr
in the daemon's format ("partitions assigned" / "partitions revoked") so loadtest.bench holds and
measures it like the daemon, and runs until SIGTERM / SIGINT.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Iterable

import orjson

#: producer batch bytes: up to a 1 MB request, so a batch of ~4 KB documents is a few requests (the
#: clients' defaults differ: kafka-python 16 KiB, confluent-kafka 1,000,000)
PRODUCER_BATCH_BYTES = 1_000_000
CLIENTS = ("kafka-python", "confluent-kafka")


def log_assignment(event: str, partitions: Iterable[tuple[str, int]]) -> None:
    sys.stderr.write(json.dumps({"event": event, "partitions": sorted(f"{t}:{p}" for t, p in partitions)}) + "\n")
    sys.stderr.flush()


def kafka_python_loop(bootstrap: str, source: str, sink: str, group: str, stop: threading.Event, batch: int,
                      session_timeout_ms: int) -> None:
    from kafka import KafkaConsumer, KafkaProducer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.structs import OffsetAndMetadata

    class Logged(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            log_assignment("partitions revoked", revoked)

        def on_partitions_assigned(self, assigned):
            log_assignment("partitions assigned", assigned)

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                             auto_offset_reset="earliest", session_timeout_ms=session_timeout_ms,
                             max_poll_interval_ms=session_timeout_ms, heartbeat_interval_ms=1000,
                             max_poll_records=batch)
    consumer.subscribe([source], listener=Logged())
    producer = KafkaProducer(bootstrap_servers=bootstrap, batch_size=PRODUCER_BATCH_BYTES, linger_ms=5)
    try:
        while not stop.is_set():
            fetched = consumer.poll(timeout_ms=500, max_records=batch)
            if not fetched:
                continue
            for messages in fetched.values():
                for m in messages:
                    producer.send(sink, key=m.key, value=orjson.dumps(orjson.loads(m.value)))
            producer.flush()
            consumer.commit({tp: OffsetAndMetadata(messages[-1].offset + 1, "", -1)
                             for tp, messages in fetched.items()})
    finally:
        producer.close()
        consumer.close(autocommit=False)


def confluent_loop(bootstrap: str, source: str, sink: str, group: str, stop: threading.Event, batch: int,
                   session_timeout_ms: int) -> None:
    from confluent_kafka import Consumer, Producer

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "session.timeout.ms": session_timeout_ms,
                         "max.poll.interval.ms": session_timeout_ms, "heartbeat.interval.ms": 1000})
    consumer.subscribe([source],
                       on_assign=lambda _, ps: log_assignment("partitions assigned", ((p.topic, p.partition) for p in ps)),
                       on_revoke=lambda _, ps: log_assignment("partitions revoked", ((p.topic, p.partition) for p in ps)))
    producer = Producer({"bootstrap.servers": bootstrap, "batch.size": PRODUCER_BATCH_BYTES, "linger.ms": 5})
    try:
        while not stop.is_set():
            messages = consumer.consume(batch, 0.5)
            if not messages:
                continue
            for m in messages:
                if m.error() is None:
                    producer.produce(sink, orjson.dumps(orjson.loads(m.value())), m.key())
            producer.flush()
            consumer.commit(asynchronous=False)  # the positions consume() stored: the batch's next offsets
    finally:
        producer.flush()
        consumer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.plainloop", description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=CLIENTS, default="kafka-python")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--session-timeout-ms", type=int, default=6000)
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    loop = kafka_python_loop if args.client == "kafka-python" else confluent_loop
    loop(args.bootstrap, args.input, args.output, args.group, stop, args.batch, args.session_timeout_ms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
