"""Score histograms and drift: ours (bucketed per batch with numpy) vs prometheus_client per value.

``selectd bench signals --texts FILE`` scores the texts once with the rule stages (Gopher quality,
Gopher repetition, FineWeb: signals of every numeric kind but perplexity), then times, batch size
by batch size, what the daemon's metrics do with those signals: :meth:`SignalDistributions.observe`
per stage and batch with drift on, and a scrape's bucketing of what still waits; against it,
``Histogram.observe`` of prometheus_client per document and signal (label children looked up
once), the same buckets. The figure is microseconds per document per signal.
"""
from __future__ import annotations

import argparse
from typing import Callable

import numpy as np
from prometheus_client import CollectorRegistry, Histogram

from selectd.distributions import DriftSettings, SignalDistributions
from selectd.scorers.heuristics import FineWebQuality, GopherQuality, GopherRepetition
from selectd.signal_kinds import BUCKETS, SignalKind
from selectd.tools.benchmark import add_clock_argument, clock_function, clock_name, emit, read_texts

Signals = dict[str, np.ndarray]


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--texts", required=True, help="JSONL file with a 'text' field per line")
    parser.add_argument("--limit", type=int, default=2000, help="use at most this many texts (default 2000)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 10, 100, 1000],
                        help="documents per batch reaching a stage")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per side, alternating; the best counts")
    add_clock_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _stage_signals(texts: list[str]) -> tuple[dict[str, Signals], dict[str, dict[str, SignalKind]]]:
    """Every numeric signal of the rule stages over ``texts``, and their kinds."""
    signals, kinds = {}, {}
    for scorer_type in (GopherQuality, GopherRepetition, FineWebQuality):
        scorer = scorer_type(scorer_type.kind, scorer_type.Options())
        parts = [scorer.run(texts[start:start + 256]) for start in range(0, len(texts), 256)]
        signals[scorer.name] = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
        kinds[scorer.name] = scorer.signal_kinds()
    return signals, kinds


def _ours(kinds: dict[str, dict[str, SignalKind]], batches: list[dict[str, Signals]], docs: int) -> Callable[[], None]:
    def run() -> None:
        distributions = SignalDistributions()
        distributions.enable_drift(DriftSettings(reference_docs=docs // 2, window_docs=docs // 4, bound=0.25))
        for stage, stage_kinds in kinds.items():
            distributions.declare(stage, stage_kinds)
        for batch in batches:
            for stage, stage_signals in batch.items():
                distributions.observe(stage, stage_signals)
        distributions.drift()  # a scrape: buckets what still waits and computes every distance
    return run


def _reference(kinds: dict[str, dict[str, SignalKind]], batches: list[dict[str, Signals]]) -> Callable[[], None]:
    def run() -> None:
        registry = CollectorRegistry()
        families = {kind: Histogram(f"signal_{kind.value}", "signal values", ["stage", "signal"],
                                    buckets=tuple(BUCKETS[kind].tolist()), registry=registry)
                    for kind in {k for stage_kinds in kinds.values() for k in stage_kinds.values()}}
        children = {(stage, name): families[kind].labels(stage, name)
                    for stage, stage_kinds in kinds.items() for name, kind in stage_kinds.items()}
        for batch in batches:
            for stage, stage_signals in batch.items():
                for name, values in stage_signals.items():
                    observe = children[(stage, name)].observe
                    for value in values.tolist():
                        observe(value)
    return run


def bench(args: argparse.Namespace) -> int:
    texts = read_texts(args.texts, args.limit)
    signals, kinds = _stage_signals(texts)
    n_signals = sum(len(stage_signals) for stage_signals in signals.values())
    clock = clock_function(clock_name(args))
    rows = []
    for batch_size in args.batch_sizes:
        batches = [{stage: {name: values[start:start + batch_size] for name, values in stage_signals.items()}
                    for stage, stage_signals in signals.items()} for start in range(0, len(texts), batch_size)]
        sides = {"ours": _ours(kinds, batches, len(texts)), "prometheus_client": _reference(kinds, batches)}
        best = dict.fromkeys(sides, float("inf"))
        for _ in range(args.repeat):
            for name, run in sides.items():
                began = clock()
                run()
                best[name] = min(best[name], clock() - began)
        per_value = {name: seconds / (len(texts) * n_signals) * 1e6 for name, seconds in best.items()}
        rows.append({"batch_size": batch_size, "ours_us_per_doc_signal": per_value["ours"],
                     "prometheus_client_us_per_doc_signal": per_value["prometheus_client"],
                     "ratio": per_value["prometheus_client"] / per_value["ours"]})
    report = {"texts": len(texts), "stages": sorted(signals), "signals": n_signals, "clock": clock_name(args),
              "repeat": args.repeat, "batches": rows}
    lines = [f"score histograms and drift: {len(texts)} documents, {len(signals)} stages, {n_signals} signals, "
             f"{report['clock']} clock, best of {args.repeat}",
             f"{'batch':>6}  {'ours µs/doc/signal':>19}  {'prometheus_client':>18}  {'ratio':>7}"]
    lines += [f"{r['batch_size']:>6}  {r['ours_us_per_doc_signal']:>19.3f}  "
              f"{r['prometheus_client_us_per_doc_signal']:>18.3f}  {r['ratio']:>6.1f}x" for r in rows]
    emit(report, args.json, lines)
    return 0
