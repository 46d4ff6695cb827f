"""Crawler simulator: replay a JSONL corpus into a Kafka topic at a steady rate.

    python -m loadtest.producer --bootstrap kafka:19092 --topic raw-documents --corpus corpus.jsonl --rate 200

Each line of the corpus is sent unchanged as one message value, keyed by its ``id`` when the
line is a JSON object with one (so a document always lands on the same partition), unkeyed
otherwise — malformed lines are sent too, as crawlers do, and the daemon dead-letters them.
``--rate 0`` sends as fast as the broker takes it; ``--loop`` replays the corpus until stopped.
The compose stack (deploy/compose.yaml) runs this as its ``crawler`` service.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

import orjson
from kafka import KafkaProducer

REPORT_EVERY_S = 10.0


def message_key(line: bytes) -> bytes | None:
    try:
        body = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    doc_id = body.get("id") if isinstance(body, dict) else None
    return doc_id.encode() if isinstance(doc_id, str) else None


def corpus_lines(path: Path) -> list[bytes]:
    if not path.is_file():
        raise SystemExit(f"loadtest.producer: {path}: no such file")
    lines = [line for line in path.read_bytes().splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"loadtest.producer: {path}: no documents (empty file)")
    return lines


def produce(producer: KafkaProducer, topic: str, lines: list[bytes], rate: float, loop: bool,
            limit: int | None, stop: list[bool]) -> int:
    """Send lines paced to ``rate`` messages/s; returns how many were acknowledged."""
    sent = 0
    began = last_report = time.monotonic()
    failures: list[Exception] = []
    while not stop[0]:
        for line in lines:
            if stop[0] or (limit is not None and sent >= limit):
                stop[0] = True
                break
            if rate > 0:
                # Pace against the start time, not the previous send, so the average rate holds.
                delay = began + sent / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            producer.send(topic, key=message_key(line), value=line).add_errback(failures.append)
            sent += 1
            now = time.monotonic()
            if now - last_report >= REPORT_EVERY_S:
                print(f"sent {sent} ({sent / (now - began):,.0f} msg/s)", file=sys.stderr, flush=True)
                last_report = now
        if not loop:
            break
    producer.flush()
    if failures:
        raise SystemExit(f"loadtest.producer: {len(failures)} sends failed, first: {failures[0]!r}")
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.producer", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True, help="host:port[,host:port...] of the brokers")
    parser.add_argument("--topic", required=True, help="topic to write to")
    parser.add_argument("--corpus", required=True, type=Path, help="JSONL file, one document per line")
    parser.add_argument("--rate", type=float, default=100.0, help="messages per second; 0 = unpaced (default 100)")
    parser.add_argument("--loop", action="store_true", help="replay the corpus until SIGTERM/SIGINT")
    parser.add_argument("--count", type=int, help="stop after this many messages")
    args = parser.parse_args(argv)
    if args.rate < 0:
        parser.error("--rate must be >= 0")
    lines = corpus_lines(args.corpus)
    stop = [False]

    def request_stop(_signum, _frame):
        stop[0] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    producer = KafkaProducer(bootstrap_servers=args.bootstrap.split(","), linger_ms=20, client_id="loadtest-producer")
    began = time.monotonic()
    try:
        sent = produce(producer, args.topic, lines, args.rate, args.loop, args.count, stop)
    finally:
        producer.close()
    seconds = time.monotonic() - began
    print(f"sent {sent} messages to {args.topic} in {seconds:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
