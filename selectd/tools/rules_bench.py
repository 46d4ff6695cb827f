"""``selectd bench rules``: docs/s of our rule scorers vs datatrove's filters, same texts, same run.

Times are this process's CPU seconds by default (``--clock wall`` for wall time): every side is
single-threaded, and on a machine shared with other work CPU time is the steadier figure.

The texts are split in two: the first ``--warm-texts`` only warm our per-chunk word cache, the
rest are timed. Per filter, on one CPU core, on the timed texts:

- ours *steady*: the cache has seen the warm-up texts but never the timed ones, as in a daemon
  that has been running a while (the headline ratio);
- ours *cold*: a fresh cache, every chunk is new the first time it is seen;
- ours *hot*: a second pass over the timed texts, every chunk already known (an upper bound);
- datatrove's ``filter`` on a fresh ``Document`` per text.

Each is one pass; only *hot* re-reads texts the cache has seen. Ours
includes the decision (``first_failures`` over the default rules), so both sides produce a keep /
reject per document; the report also gives how often the two decisions agree.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Sequence

from selectd.thresholds import Rule, first_failures
from selectd.scorers.base import scorer_class
from selectd.text.vocabulary import reset_shared_tokenizer
from selectd.tools.benchmark import (add_clock_argument, clock_function, clock_name, comparison, emit, one_core,
                                     read_texts, time_batches)

#: our scorer kind -> datatrove filter class name (in datatrove.pipeline.filters)
REFERENCES = {
    "gopher_quality": "GopherQualityFilter",
    "gopher_repetition": "GopherRepetitionFilter",
    "c4_quality": "C4QualityFilter",
    "fineweb_quality": "FineWebQualityFilter",
}


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--texts", required=True, help="JSONL file with a 'text' field per line")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many texts")
    parser.add_argument("--filters", nargs="+", choices=sorted(REFERENCES), default=sorted(REFERENCES),
                        help="filters to compare (default: all four)")
    parser.add_argument("--batch-size", type=int, default=256, help="documents per scorer call")
    parser.add_argument("--warm-texts", type=int, default=None,
                        help="texts used only to warm our word cache (default: the first half)")
    add_clock_argument(parser)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


class _Recorder:
    """Wraps a batch function and keeps the decisions of the most recent full pass."""

    def __init__(self, run: Callable[[Sequence[str]], list[str | None]], n_texts: int):
        self._run = run
        self._n_texts = n_texts
        self.decisions: list[str | None] = []

    def __call__(self, batch: Sequence[str]) -> None:
        self.decisions.extend(self._run(batch))
        del self.decisions[:-self._n_texts]


def _ours(kind: str) -> Callable[[Sequence[str]], list[str | None]]:
    cls = scorer_class(kind)
    scorer = cls(kind, cls.Options())
    rules = [Rule(**r) for r in scorer.default_rules()]

    def run(batch: Sequence[str]) -> list[str | None]:
        return first_failures(rules, scorer.run(batch), len(batch))

    return run


def _datatrove(kind: str) -> Callable[[Sequence[str]], list[str | None]]:
    from datatrove.data import Document
    from datatrove.pipeline import filters

    reference = getattr(filters, REFERENCES[kind])()

    def run(batch: Sequence[str]) -> list[str | None]:
        decisions = []
        for index, text in enumerate(batch):
            verdict = reference.filter(Document(text=text, id=str(index)))
            decisions.append(None if verdict is True else verdict[1])
        return decisions

    return run


def compare_filter(kind: str, warm_texts: Sequence[str], texts: Sequence[str], batch_size: int,
                   clock: Callable[[], float] = time.process_time) -> dict[str, Any]:
    """Timings and decision agreement of one filter on ``texts``."""
    reset_shared_tokenizer()
    cold = time_batches(f"selectd {kind} (cold cache)", _Recorder(_ours(kind), len(texts)), texts,
                        batch_size, repeat=1, warmup=0, clock=clock)
    reset_shared_tokenizer()
    ours = _Recorder(_ours(kind), len(texts))
    for start in range(0, len(warm_texts), batch_size):
        ours(warm_texts[start:start + batch_size])
    steady = time_batches(f"selectd {kind}", ours, texts, batch_size, repeat=1, warmup=0, clock=clock)
    hot = time_batches(f"selectd {kind} (hot cache)", ours, texts, batch_size, repeat=1, warmup=0, clock=clock)
    reference = _Recorder(_datatrove(kind), len(texts))
    # warmup: the first batch loads spaCy, which is not what we compare
    datatrove = time_batches(f"datatrove {REFERENCES[kind]}", reference, texts, batch_size, repeat=1, warmup=1,
                             clock=clock)
    agree = sum((a is None) == (b is None) for a, b in zip(ours.decisions, reference.decisions))
    return comparison(
        steady, datatrove,
        ours_cold={"docs_per_s": cold.docs_per_s, "seconds": cold.seconds},
        ratio_cold=cold.docs_per_s / datatrove.docs_per_s,
        ours_hot={"docs_per_s": hot.docs_per_s, "seconds": hot.seconds},
        ratio_hot=hot.docs_per_s / datatrove.docs_per_s,
        decision_agreement=agree / len(texts),
        rejected={"ours": sum(d is not None for d in ours.decisions),
                  "reference": sum(d is not None for d in reference.decisions)},
    )


def bench(args: argparse.Namespace) -> int:
    try:
        texts = read_texts(args.texts, args.limit)
    except (ValueError, OSError) as exc:
        print(f"selectd bench rules: {exc}")
        return 2
    n_warm = len(texts) // 2 if args.warm_texts is None else args.warm_texts
    if not 0 <= n_warm < len(texts):
        print(f"selectd bench rules: --warm-texts must leave texts to time ({n_warm} of {len(texts)})")
        return 2
    warm_texts, timed_texts = texts[:n_warm], texts[n_warm:]
    args.clock = clock_name(args)
    clock = clock_function(args.clock)
    with one_core() as core:
        results = {kind: compare_filter(kind, warm_texts, timed_texts, args.batch_size, clock)
                   for kind in args.filters}
    report = {"texts": len(timed_texts), "warm_texts": n_warm, "batch_size": args.batch_size, "core": core,
              "clock": args.clock, "filters": results}
    lines = [f"{len(timed_texts)} timed texts from {args.texts} (after {n_warm} warm-up texts), "
             f"batches of {args.batch_size}, one core ({core}), {args.clock} time"]
    for kind, r in results.items():
        lines.append(
            f"{kind:18s} ours {r['ours']['docs_per_s']:6.0f} docs/s steady, {r['ours_cold']['docs_per_s']:6.0f} cold, "
            f"{r['ours_hot']['docs_per_s']:6.0f} hot | datatrove {r['reference']['docs_per_s']:6.1f} docs/s | "
            f"ratio {r['ratio']:5.1f}x steady, {r['ratio_cold']:5.1f}x cold, {r['ratio_hot']:5.1f}x hot | "
            f"decisions agree {100 * r['decision_agreement']:.2f}%"
        )
    emit(report, args.json, lines)
    return 0

