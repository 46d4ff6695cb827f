"""fastText .bin/.ftz classifiers: ``selectd export|verify|bench fasttext``."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selectd import preprocess
from selectd.models.fasttext.model import MANIFEST_KIND, FastTextOnnx
from selectd.models.manifest import ModelLoadError
from selectd.tools.benchmark import add_reference_arguments, comparison, emit, peak_rss_bytes, read_texts, time_batches
from selectd.tools.fasttext.export import export_model

__all__ = ["MANIFEST_KIND", "add_export_arguments", "export", "add_verify_arguments", "verify",
           "add_bench_arguments", "bench", "compare_with_native"]

#: max |Δp| allowed on any label of any text
DEFAULT_TOLERANCE = 1e-5
#: fastText adds this to every probability; hs leaves out labels whose probability is below it
PROBABILITY_FLOOR = 1e-5


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="fastText supervised model (.bin or quantized .ftz)")
    parser.add_argument("out_dir", type=Path, help="directory to write model.onnx, table.bin, vocab.txt, manifest.json")
    parser.add_argument("--profile", choices=sorted(preprocess.PROFILES),
                        help="preprocessing the model was trained with (recorded in the manifest; preselect, dclm, "
                             "dolma_jigsaw, lid, ...); default: lid when every label is a language code, else identity")


def export(args: argparse.Namespace) -> int:
    try:
        manifest = export_model(args.model, args.out_dir, args.profile)
    except (ModelLoadError, FileExistsError) as exc:
        print(f"selectd export fasttext: {exc}", file=sys.stderr)
        return 2
    meta = manifest.metadata
    print(f"{args.out_dir}: {meta['args']['loss']} classifier, {len(meta['labels'])} labels, {meta['nwords']} words, "
          f"dim {meta['args']['dim']}{', W·Oᵀ folded' if meta['folded'] else ''}, profile {meta['profile']}"
          f"{'' if args.profile else ' (from its labels; --profile to choose another)'}")
    return 0


def _reference_arguments(parser: argparse.ArgumentParser) -> None:
    add_reference_arguments(parser, "fastText .bin/.ftz", batch_size=256)
    parser.add_argument("--featurizer", choices=["auto", "compiled", "numpy"], default="auto",
                        help="host tokenization: the C extension (auto when built) or numpy")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    _reference_arguments(parser)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="max |Δp| allowed on any label")


def _load_native(path: Path):
    try:
        import fasttext
    except ImportError:
        raise ModelLoadError("the native fastText library is not installed (pip install fasttext-numpy2); "
                             "it is needed only to verify or benchmark against it") from None
    if not Path(path).is_file():
        raise ModelLoadError(f"{path}: no such file")
    try:
        return fasttext.load_model(str(path))
    except ValueError as exc:
        raise ModelLoadError(f"{path}: native fastText cannot load it: {exc}") from exc


def _native_text(text: str) -> str:
    # fastText's Python predict refuses "\n"; ours treats it as a separator, exactly like a space
    return text.replace("\n", " ")


def _native_predict(native, texts: Sequence[str], k: int = -1):
    return native.predict([_native_text(t) for t in texts], k=k)


def compare_with_native(model_dir: Path, model_path: Path, texts: Sequence[str], batch_size: int = 256,
                        featurizer: str = "auto") -> dict[str, Any]:
    """Score ``texts`` (after the manifest's profile) with ours and native fastText; summarize the differences."""
    ours = FastTextOnnx(model_dir, featurizer=featurizer)
    native = _load_native(model_path)
    prepared = [preprocess.profile(ours.profile)(t) for t in texts]
    column = {label: i for i, label in enumerate(ours.labels)}
    top_mismatches: list[int] = []
    top_ties: list[int] = []
    prediction_mismatches: list[int] = []
    max_diff = 0.0
    worst: dict[str, Any] | None = None
    for begin in range(0, len(prepared), batch_size):
        batch = prepared[begin:begin + batch_size]
        probs = ours.predict(batch)
        native_labels, native_probs = _native_predict(native, batch)
        for offset, (labels, values) in enumerate(zip(native_labels, native_probs)):
            index = begin + offset
            row = probs[offset]
            if not labels or np.isnan(row).any():
                if bool(labels) != (not np.isnan(row).any()):
                    prediction_mismatches.append(index)
                continue
            reference = np.full(len(ours.labels), np.nan)
            reference[[column[label] for label in labels]] = values
            present = ~np.isnan(reference)
            # labels native leaves out (hs prunes those below 1e-5) must be below that floor for us too
            diffs = np.where(present, np.abs(row - np.nan_to_num(reference)), np.maximum(row - PROBABILITY_FLOOR, 0.0))
            diff = float(diffs.max())
            if diff > max_diff:
                max_diff = diff
                label = int(diffs.argmax())
                worst = {"text": index, "label": ours.labels[label], "ours": float(row[label]),
                         "native": None if not present[label] else float(reference[label])}
            if column[labels[0]] != int(np.argmax(row)):
                # native's top two within our measured difference on this text: a tie either may win
                margin = float(values[0] - values[1]) if len(values) > 1 else np.inf
                (top_ties if margin <= 2 * diff else top_mismatches).append(index)
    return {
        "model_dir": str(model_dir), "against": str(model_path), "profile": ours.profile, "texts": len(prepared),
        "featurizer": type(ours.featurizer).__name__,
        "top1_agreement": 1.0 - len(top_mismatches) / len(prepared),
        "top1_mismatches": top_mismatches[:20], "top1_ties": len(top_ties),
        "prediction_mismatches": prediction_mismatches[:20],
        "max_abs_diff": max_diff, "worst": worst,
    }


def verify(args: argparse.Namespace) -> int:
    try:
        texts = read_texts(args.texts, args.limit)
        report = compare_with_native(args.model_dir, args.against, texts, args.batch_size, args.featurizer)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"selectd verify: {exc}", file=sys.stderr)
        return 2
    report["tolerance"] = args.tolerance
    report["ok"] = (not report["top1_mismatches"] and not report["prediction_mismatches"]
                    and report["max_abs_diff"] <= args.tolerance)
    emit(report, args.json, [
        f"{report['texts']} texts, profile {report['profile']}",
        f"top-1 agreement: {report['top1_agreement']:.6f} (mismatches at {report['top1_mismatches'] or 'none'}; "
        f"{report['top1_ties']} ties, where native's top two differ by less than ours differs from native)",
        f"prediction presence mismatches: {report['prediction_mismatches'] or 'none'}",
        f"max |Δp| over all labels: {report['max_abs_diff']:.3g} (tolerance {args.tolerance:g}) worst: {report['worst']}",
        "OK" if report["ok"] else "FAILED: beyond tolerance",
    ])
    return 0 if report["ok"] else 1


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    _reference_arguments(parser)
    parser.add_argument("--repeat", type=int, default=3, help="timed passes of each, alternating; the best is reported")


def _current_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _best_interleaved(runs: dict[str, Any], texts: Sequence[str], batch_size: int, repeat: int) -> dict[str, Any]:
    """Best pass of each contender, passes alternating so that load changes on a shared machine hit all alike."""
    best: dict[str, Any] = {}
    for _ in range(max(repeat, 1)):
        for name, run in runs.items():
            timing = time_batches(name, run, texts, batch_size, repeat=1)
            if name not in best or timing.seconds < best[name].seconds:
                best[name] = timing
    return best


def bench(args: argparse.Namespace) -> int:
    """docs/s of ours and of native fastText on the same prepared texts, one thread each, same run."""
    try:
        texts = read_texts(args.texts, args.limit)
        rss_before = _current_rss_bytes()
        ours = FastTextOnnx(args.model_dir, threads=1, featurizer=args.featurizer)
        rss_loaded = _current_rss_bytes()
        prepared = [preprocess.profile(ours.profile)(t) for t in texts]
        # first pass: nothing warmed up (ONNX Runtime's first runs, the numpy featurizer's token cache)
        first = time_batches("ours (first pass)", ours.predict, prepared, args.batch_size, repeat=1, warmup=0)
        peak_ours = peak_rss_bytes()
        native = _load_native(args.against)
        best = _best_interleaved({
            "ours": ours.predict,
            "native fastText predict(k=-1)": lambda batch: _native_predict(native, batch, -1),
            "native fastText predict(k=1)": lambda batch: _native_predict(native, batch, 1),
        }, prepared, args.batch_size, args.repeat)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"selectd bench: {exc}", file=sys.stderr)
        return 2
    ours_best, native_all, native_top1 = best.values()
    report = comparison(ours_best, native_all, threads=1, profile=ours.profile,
                        featurizer=type(ours.featurizer).__name__,
                        ratio_first_pass=first.docs_per_s / native_all.docs_per_s,
                        ratio_vs_native_top1=ours_best.docs_per_s / native_top1.docs_per_s,
                        ours_first_pass={"docs_per_s": first.docs_per_s, "seconds": first.seconds},
                        native_top1={"docs_per_s": native_top1.docs_per_s, "seconds": native_top1.seconds},
                        rss_model_loaded_bytes=rss_loaded - rss_before, peak_rss_ours_bytes=peak_ours,
                        peak_rss_with_native_bytes=peak_rss_bytes())
    mib = 1 << 20
    emit(report, args.json, [
        f"{len(prepared)} texts, profile {ours.profile}, batches of {args.batch_size}, one thread each, "
        f"best of {args.repeat} alternating passes ({report['featurizer']})",
        f"ours:   {ours_best.docs_per_s:10.0f} docs/s, first pass {first.docs_per_s:10.0f} docs/s",
        f"native: {native_all.docs_per_s:10.0f} docs/s predict(k=-1), {native_top1.docs_per_s:10.0f} docs/s predict(k=1)",
        f"ratio:  {report['ratio']:.2f}x (first pass {report['ratio_first_pass']:.2f}x) vs k=-1; "
        f"{report['ratio_vs_native_top1']:.2f}x vs k=1",
        f"RSS: model loaded +{(rss_loaded - rss_before) / mib:.0f} MiB; peak {peak_ours / mib:.0f} MiB with ours, "
        f"{report['peak_rss_with_native_bytes'] / mib:.0f} MiB after loading native too",
    ])
    return 0
