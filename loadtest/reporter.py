"""Measure a running selectd from the outside: throughput, end-to-end latency and consumer lag.

Reads every output topic from the beginning (no group, nothing committed). Latency of a document
is its output record's timestamp minus the source record's timestamp, which the daemon copies
into the ``selectd.source.timestamp_ms`` header (both stamped by producers on this machine).
Lag is sampled once a second from the daemon group's committed offsets and the input end offsets.

    python -m loadtest.reporter --bootstrap 127.0.0.1:9092 --group selectd --input raw-documents \\
        --outputs train-documents,rejected-documents,selectd-dlq --expected 100000 --plot report.png
"""
from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer, TopicPartition


@dataclass
class Report:
    received: int = 0
    unique: int = 0
    output_ts_ms: list[int] = field(default_factory=list)
    latency_ms: list[int] = field(default_factory=list)
    lag_samples: list[tuple[float, int]] = field(default_factory=list)  # (unix s, lag)
    by_topic: Counter = field(default_factory=Counter)

    @property
    def duplicates(self) -> int:
        return self.received - self.unique

    @property
    def seconds(self) -> float:
        if len(self.output_ts_ms) < 2:
            return 0.0
        return (max(self.output_ts_ms) - min(self.output_ts_ms)) / 1000

    @property
    def docs_per_s(self) -> float:
        return self.received / self.seconds if self.seconds else 0.0

    def percentiles(self) -> dict[str, float]:
        if not self.latency_ms:
            return {}
        values = np.asarray(self.latency_ms)
        return {f"p{q}": float(np.percentile(values, q)) for q in (50, 95, 99)} | {"max": float(values.max())}

    def table(self) -> list[str]:
        lat = self.percentiles()
        rows = [("documents received", f"{self.received}"), ("unique ids", f"{self.unique}"),
                ("duplicates", f"{self.duplicates}"), ("throughput", f"{self.docs_per_s:,.0f} docs/s over {self.seconds:.1f} s")]
        rows += [(f"latency {k}", f"{v:,.0f} ms") for k, v in lat.items()]
        if self.lag_samples:
            rows.append(("max consumer lag", f"{max(l for _, l in self.lag_samples)} messages"))
        rows += [(f"  {topic}", str(count)) for topic, count in sorted(self.by_topic.items())]
        width = max(len(k) for k, _ in rows)
        return [f"{k:<{width}}  {v}" for k, v in rows]

    def as_dict(self) -> dict:
        return {"received": self.received, "unique": self.unique, "duplicates": self.duplicates,
                "docs_per_s": self.docs_per_s, "seconds": self.seconds, "latency_ms": self.percentiles(),
                "max_lag": max((l for _, l in self.lag_samples), default=0), "by_topic": dict(self.by_topic)}

    def plot(self, path: Path) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        ts = np.asarray(self.output_ts_ms) / 1000
        start = ts.min() if len(ts) else time.time()
        fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
        seconds = np.floor(ts - start).astype(int)
        if len(seconds):
            per_second = np.bincount(seconds)
            axes[0].plot(np.arange(len(per_second)), per_second)
            lat = np.asarray(self.latency_ms)
            if len(lat) == len(seconds):
                for q in (50, 95, 99):
                    series = [np.percentile(lat[seconds == s], q) if (seconds == s).any() else np.nan
                              for s in range(len(per_second))]
                    axes[1].plot(np.arange(len(per_second)), series, label=f"p{q}")
                axes[1].legend()
        if self.lag_samples:
            axes[2].plot([t - start for t, _ in self.lag_samples], [l for _, l in self.lag_samples])
        axes[0].set_ylabel("docs/s out")
        axes[1].set_ylabel("latency (ms)")
        axes[2].set_ylabel("consumer lag")
        axes[2].set_xlabel("seconds since first output")
        fig.suptitle(f"selectd load test: {self.received} docs, {self.docs_per_s:,.0f} docs/s")
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)


class LagSampler(threading.Thread):
    def __init__(self, bootstrap: str, group: str, input_topic: str, report: Report, stop: threading.Event):
        super().__init__(daemon=True)
        self.consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        self.input_topic, self.report, self.stop = input_topic, report, stop

    def run(self) -> None:
        partitions = [TopicPartition(self.input_topic, p) for p in sorted(self.consumer.partitions_for_topic(self.input_topic) or [])]
        while not self.stop.is_set():
            try:
                ends = self.consumer.end_offsets(partitions)
                committed = sum(self.consumer.committed(tp) or 0 for tp in partitions)
                self.report.lag_samples.append((time.time(), int(sum(ends.values()) - committed)))
            except Exception:  # the broker may be busy; a missing sample is fine  # noqa: BLE001
                pass
            self.stop.wait(1.0)
        self.consumer.close(autocommit=False)


def measure(bootstrap: str, outputs: list[str], expected: int, timeout_s: float = 600, group: str | None = None,
            input_topic: str | None = None, progress: bool = True, idle_s: float = 15) -> Report:
    """Consume ``outputs`` until ``expected`` unique ids arrived, nothing arrived for ``idle_s``, or timeout."""
    report = Report()
    stop = threading.Event()
    sampler = LagSampler(bootstrap, group, input_topic, report, stop) if group and input_topic else None
    if sampler:
        sampler.start()
    consumer = KafkaConsumer(*outputs, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None,
                             enable_auto_commit=False, fetch_max_bytes=64 << 20, max_poll_records=5000)
    seen: set[bytes] = set()
    began = last_arrival = time.monotonic()
    last_print = 0.0
    try:
        while report.unique < expected and time.monotonic() - began < timeout_s:
            batches = consumer.poll(timeout_ms=500)
            now = time.monotonic()
            for messages in batches.values():
                for message in messages:
                    report.received += 1
                    report.by_topic[message.topic] += 1
                    identity = (message.key or b"") + b"|" + dict(message.headers).get("selectd.source.offset", b"") \
                        + b"|" + dict(message.headers).get("selectd.source.partition", b"")
                    seen.add(identity)
                    report.output_ts_ms.append(message.timestamp)
                    source_ts = dict(message.headers).get("selectd.source.timestamp_ms")
                    if source_ts is not None:
                        report.latency_ms.append(message.timestamp - int(source_ts))
                last_arrival = now
            report.unique = len(seen)
            if not batches and now - last_arrival > idle_s:
                break
            if progress and now - last_print > 0.5:
                lag = report.lag_samples[-1][1] if report.lag_samples else "?"
                sys.stderr.write(f"\r{report.unique:>8}/{expected} out | {report.docs_per_s:,.0f} docs/s | lag {lag}   ")
                last_print = now
    finally:
        stop.set()
        consumer.close()
        if sampler:
            sampler.join(timeout=5)
        if progress:
            sys.stderr.write("\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.reporter", description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--outputs", required=True, help="comma-separated output topics (accepted, routes, rejected, dlq)")
    parser.add_argument("--expected", type=int, required=True, help="documents expected (stop when all arrived)")
    parser.add_argument("--group", help="the daemon's consumer group, for lag")
    parser.add_argument("--input", help="the input topic, for lag")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--plot", type=Path, help="write a PNG of throughput, latency percentiles and lag")
    args = parser.parse_args(argv)
    report = measure(args.bootstrap, args.outputs.split(","), args.expected, args.timeout, args.group, args.input)
    print("\n".join(report.table()))
    if args.plot:
        report.plot(args.plot)
        print(f"plot: {args.plot}")
    return 0 if report.unique >= args.expected else 1


if __name__ == "__main__":
    sys.exit(main())
