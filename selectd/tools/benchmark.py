"""Shared pieces of ``selectd verify`` and ``selectd bench``: reading texts, timing, reporting.

Benchmarks always measure ours and the reference on the same texts in the same process run, one
after the other, and report the ratio: absolute docs/s on a shared 2-core machine mean little.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import orjson


def add_reference_arguments(parser: argparse.ArgumentParser, reference: str, batch_size: int) -> None:
    """What every ``selectd verify`` / ``selectd bench`` family takes: the exported model directory,
    the ``reference`` file it came from, the texts, and how to batch and print."""
    parser.add_argument("model_dir", type=Path, help="exported model directory")
    parser.add_argument("--against", type=Path, required=True, help=f"the {reference} it was exported from")
    parser.add_argument("--texts", type=Path, required=True, help="JSONL file with a 'text' field per line")
    parser.add_argument("--limit", type=int, help="use only the first N texts")
    parser.add_argument("--batch-size", type=int, default=batch_size, help="documents per call, both sides")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def add_pass_arguments(parser: argparse.ArgumentParser) -> None:
    """``--threads``, ``--repeat``, ``--provider`` and ``--clock`` of the benches that run ONNX Runtime
    against torch."""
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, both ONNX Runtime and torch")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timed passes per side, alternating; the best is reported, with the spread of the "
                             "pass-by-pass ratios")
    add_provider_argument(parser, "cuda also runs the PyTorch side on the GPU, and both are timed by wall clock")
    add_clock_argument(parser)


def add_provider_argument(parser: argparse.ArgumentParser, cuda_note: str) -> None:
    """``--provider cpu|cuda``: the ONNX Runtime execution provider a verify or bench runs ours on."""
    parser.add_argument("--provider", choices=("cpu", "cuda"), default="cpu",
                        help=f"ONNX Runtime execution provider (cuda needs onnxruntime-gpu); {cuda_note}")


def add_clock_argument(parser: argparse.ArgumentParser) -> None:
    """``--clock cpu|wall``, shared by every ``selectd bench`` family."""
    parser.add_argument("--clock", choices=("cpu", "wall"),
                        help="cpu: this process's CPU seconds (the default on CPU; steady on a shared machine, and "
                             "with one thread per side equal to wall time on an idle one); wall: elapsed time (the "
                             "default, and the only choice, with --provider cuda)")


def clock_name(args: argparse.Namespace) -> str:
    """The clock a bench times with: ``--clock``, else CPU time on CPU and wall time on a GPU.

    CPU seconds leave out the work a GPU does while the host waits, so ``--clock cpu`` with
    ``--provider cuda`` is refused (ValueError) rather than reporting an impossible speed.
    """
    on_gpu = getattr(args, "provider", "cpu") == "cuda"
    if on_gpu and args.clock == "cpu":
        raise ValueError("--clock cpu does not count the GPU's work; use --clock wall with --provider cuda")
    return args.clock or ("wall" if on_gpu else "cpu")


def clock_function(name: str) -> Callable[[], float]:
    """The timer behind a ``--clock`` value."""
    return time.process_time if name == "cpu" else time.perf_counter


def read_texts(path: Path | str, limit: int | None = None, field: str = "text") -> list[str]:
    """The ``text`` field of each line of a JSONL file (lines without a string text are skipped)."""
    texts: list[str] = []
    with open(path, "rb") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}:{line_number}: not JSON: {exc}") from None
            text = record.get(field) if isinstance(record, dict) else None
            if isinstance(text, str) and text:
                texts.append(text)
                if limit is not None and len(texts) >= limit:
                    break
    if not texts:
        raise ValueError(f"{path}: no lines with a non-empty string {field!r}")
    return texts


@contextmanager
def one_core() -> Iterator[int | None]:
    """Run on a single core, so the comparison is per core whatever the machine; restore after."""
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    cores = os.sched_getaffinity(0)
    core = min(cores)
    os.sched_setaffinity(0, {core})
    try:
        yield core
    finally:
        os.sched_setaffinity(0, cores)


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


@dataclass
class Timing:
    name: str
    docs: int
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else float("inf")


def time_batches(name: str, run: Callable[[Sequence[str]], Any], texts: Sequence[str],
                 batch_size: int, repeat: int = 1, warmup: int = 1,
                 clock: Callable[[], float] = time.perf_counter) -> Timing:
    """Best of ``repeat`` passes over ``texts`` in batches (after ``warmup`` untimed batches).

    ``clock=time.process_time`` measures this process's CPU time instead of wall time: for
    single-threaded code on a machine shared with other work, the steadier figure.
    """
    for start in range(0, min(len(texts), warmup * batch_size), batch_size):
        run(texts[start:start + batch_size])
    best = float("inf")
    for _ in range(repeat):
        began = clock()
        for start in range(0, len(texts), batch_size):
            run(texts[start:start + batch_size])
        best = min(best, clock() - began)
    return Timing(name, len(texts), best)


def alternating_passes(sides: dict[str, Callable[[Sequence[str]], Any]], texts: Sequence[str], batch_size: int,
                       repeat: int, clock: Callable[[], float]) -> dict[str, list[Timing]]:
    """``repeat`` timed passes of every side, one side after the other within each round (one
    warm-up batch each in the first), so a load change on a shared machine hits all of them."""
    passes: dict[str, list[Timing]] = {name: [] for name in sides}
    for attempt in range(repeat):
        for name, run in sides.items():
            passes[name].append(time_batches(name, run, texts, batch_size, warmup=1 if attempt == 0 else 0,
                                             clock=clock))
    return passes


def best_pass(timings: Sequence[Timing]) -> Timing:
    return min(timings, key=lambda t: t.seconds)


def pass_ratios(reference: Sequence[Timing], ours: Sequence[Timing]) -> list[float]:
    """Speed-up of each round (reference seconds / ours), sorted: the spread behind the best-pass ratio."""
    return sorted(r.seconds / o.seconds for r, o in zip(reference, ours))


def comparison(ours: Timing, reference: Timing, **extra: Any) -> dict[str, Any]:
    return {
        "ours": {**asdict(ours), "docs_per_s": ours.docs_per_s},
        "reference": {**asdict(reference), "docs_per_s": reference.docs_per_s},
        "ratio": ours.docs_per_s / reference.docs_per_s,
        **extra,
    }


def finish_verify(report: dict[str, Any], failures: list[str], lines: list[str], as_json: bool) -> int:
    """Record the verdict in ``report``, print it, and return verify's exit status (1: failures)."""
    report["ok"] = not failures
    report["failures"] = failures
    lines.append("OK" if not failures else "FAILED: " + "; ".join(failures))
    emit(report, as_json, lines)
    return 0 if not failures else 1


def emit(report: dict[str, Any], as_json: bool, lines: Sequence[str]) -> None:
    """Print a report as one JSON document (``--json``) or as human-readable lines."""
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2, sort_keys=True) + "\n")
    else:
        for line in lines:
            print(line)
