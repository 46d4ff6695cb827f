"""Soak: the daemon at a steady input rate for a long time, its resident memory printed every minute.

    nice python -m loadtest.soak --minutes 30 --rate 300

Prints one line per sample (elapsed, RSS, documents routed, routing rate) and, at the end, the RSS
growth from the first sample after warm-up to the end. Flat RSS means the growth stays within
``--max-growth-mb``; the exit code says whether it did.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median
from typing import Callable

from loadtest.harness import DaemonProcess, Streamer, TopicNames, document, metric, write_config

MB = 1024 * 1024


@dataclass
class Sample:
    seconds: float
    rss_bytes: int
    routed: float

    def line(self, previous: "Sample | None") -> str:
        rate = (self.routed - previous.routed) / (self.seconds - previous.seconds) if previous else 0.0
        return f"t={self.seconds / 60:5.1f} min  RSS {self.rss_bytes / MB:7.1f} MiB  routed {self.routed:10.0f}  ({rate:,.0f} docs/s)"


@dataclass
class SoakReport:
    samples: list[Sample] = field(default_factory=list)
    warmup_samples: int = 1
    alive: bool = True

    def growth_bytes(self) -> float:
        """Median RSS of the last third of the samples minus that of the first third after warm-up."""
        steady = self.samples[self.warmup_samples:]
        third = max(1, len(steady) // 3)
        return median(s.rss_bytes for s in steady[-third:]) - median(s.rss_bytes for s in steady[:third])

    def peak_rss_bytes(self) -> int:
        return max(s.rss_bytes for s in self.samples)


def soak(bootstrap: str, workdir: Path, seconds: float, rate: float, sample_s: float = 60.0, warmup_samples: int = 1,
         nice: int = 0, on_sample: Callable[[str], None] | None = None) -> SoakReport:
    names = TopicNames(2)
    names.create(bootstrap)
    config = write_config(workdir / f"{names.tag}.toml", bootstrap, names)
    daemon = DaemonProcess(config, workdir / f"{names.tag}-daemon.log", nice=nice)
    report = SoakReport(warmup_samples=warmup_samples)
    streamer = Streamer(bootstrap, names.input, (document("soak", i) for i in itertools.count()), rate)
    try:
        url = daemon.metrics_url()
        daemon.wait_for_event("partitions assigned", 90)
        streamer.start()
        began = time.monotonic()
        previous = None
        while time.monotonic() - began < seconds:
            time.sleep(max(0.0, began + (len(report.samples) + 1) * sample_s - time.monotonic()))
            if not daemon.alive():
                report.alive = False
                break
            sample = Sample(time.monotonic() - began, daemon.rss_bytes(), metric(url, "selectd_documents_out_total"))
            report.samples.append(sample)
            if on_sample:
                on_sample(sample.line(previous))
            previous = sample
    finally:
        streamer.stop()
        if daemon.alive():
            daemon.terminate()
        daemon.close()
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=300.0, help="documents/s produced")
    parser.add_argument("--sample-s", type=float, default=60.0, help="seconds between RSS samples")
    parser.add_argument("--max-growth-mb", type=float, default=20.0, help="RSS growth after warm-up still called flat")
    parser.add_argument("--nice", type=int, default=10)
    parser.add_argument("--bootstrap", help="an existing broker (default: start a local Tansu broker)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="selectd-soak-"))
    print(f"work folder: {workdir}", file=sys.stderr, flush=True)

    def run(bootstrap: str) -> SoakReport:
        return soak(bootstrap, workdir, args.minutes * 60, args.rate, args.sample_s, nice=args.nice,
                    on_sample=lambda line: print(line, flush=True))

    if args.bootstrap:
        report = run(args.bootstrap)
    else:
        from selectd.demo.broker import TansuBroker

        with TansuBroker(log_path=workdir / "tansu.log") as broker:
            report = run(broker.bootstrap)
    growth = report.growth_bytes()
    flat = report.alive and growth <= args.max_growth_mb * MB
    print(f"RSS growth after warm-up: {growth / MB:+.1f} MiB (flat if <= {args.max_growth_mb:.0f}), "
          f"peak {report.peak_rss_bytes() / MB:.1f} MiB, daemon alive: {report.alive}: {'FLAT' if flat else 'NOT FLAT'}",
          flush=True)
    return 0 if flat else 1


if __name__ == "__main__":
    sys.exit(main())
