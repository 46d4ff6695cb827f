"""Hugging Face sequence classifiers (BERT / RoBERTa / DeBERTa / MiniLM) on ONNX Runtime.

``selectd export hf CHECKPOINT OUT --kind multilabel|multiclass|multihead [--quantize int8]``,
``selectd verify OUT --against CHECKPOINT --texts FILE.jsonl`` and
``selectd bench hf OUT --against CHECKPOINT --texts FILE.jsonl``. torch and transformers (the
``export`` extra) are imported only when one of these runs, never by the daemon.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from selectd.models.hf_common import token_capped_batches
from selectd.models.manifest import ModelLoadError
from selectd.models.runtime import ExecutionProvider
from selectd.models.transformer.model import MANIFEST_KIND, TASKS, HFClassifier, decisions
from selectd.tools.benchmark import (add_pass_arguments, add_provider_argument, add_reference_arguments,
                                     alternating_passes, best_pass, clock_function, clock_name, comparison, emit,
                                     finish_verify, pass_ratios, read_texts)
from selectd.tools.transformer.quantize import DEFAULT_CALIBRATION_AGREEMENT, MAX_CALIBRATION_TEXTS

__all__ = ["MANIFEST_KIND", "add_export_arguments", "export", "add_verify_arguments", "verify",
           "add_bench_arguments", "bench"]

#: fp32 graphs must reproduce PyTorch's logits to this absolute difference
DEFAULT_TOLERANCE = 1e-4
#: share of documents whose decisions must equal PyTorch's (the bar for int8)
DEFAULT_MIN_AGREEMENT = 0.99


# --- export ----------------------------------------------------------------------------------

def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="Hugging Face checkpoint directory (config.json, weights, tokenizer)")
    parser.add_argument("out_dir", type=Path, help="directory to write model.onnx, tokenizer.json, manifest.json")
    parser.add_argument("--kind", choices=TASKS, required=True,
                        help="multilabel: sigmoid per label (Detoxify); multiclass: softmax (quality classes); "
                             "multihead: heads.* linear heads on [CLS] (Celadon)")
    parser.add_argument("--quantize", choices=["int8"], help="also write a dynamically quantized int8 graph and run it by default")
    parser.add_argument("--max-length", type=int, help="tokens per sequence (default: the tokenizer's / model's limit)")
    parser.add_argument("--heads", help="comma-separated head names for --kind multihead (default: from config.json, "
                                        "Celadon's five names for a 5x4 model)")
    parser.add_argument("--calibration-texts", type=Path, metavar="FILE.jsonl",
                        help="with --quantize int8: documents like those the model will score (not the ones you "
                             "verify it on); MatMuls whose inputs have the most outlying values stay fp32 until "
                             "the int8 graph is expected to keep --calibration-agreement of the fp32 graph's decisions "
                             f"(first {MAX_CALIBRATION_TEXTS} texts)")
    parser.add_argument("--calibration-agreement", type=float, default=DEFAULT_CALIBRATION_AGREEMENT,
                        help="share of documents expected to keep their fp32 decisions in int8, estimated on the calibration texts "
                             f"(default {DEFAULT_CALIBRATION_AGREEMENT})")


def export(args: argparse.Namespace) -> int:
    from selectd.tools.transformer import export as exporter

    try:
        calibration = (read_texts(args.calibration_texts, MAX_CALIBRATION_TEXTS)
                       if args.calibration_texts is not None else None)
        manifest = exporter.export(args.checkpoint, args.out_dir, args.kind, quantize=args.quantize,
                                   max_length=args.max_length, head_names=args.heads.split(",") if args.heads else None,
                                   calibration_texts=calibration, calibration_agreement=args.calibration_agreement)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"selectd export hf: {exc}", file=sys.stderr)
        return 2
    outputs = manifest.metadata.get("labels") or manifest.metadata.get("heads")
    print(f"exported {args.checkpoint} -> {args.out_dir} ({args.kind}: {', '.join(outputs)}; "
          f"{', '.join(manifest.metadata['onnx'].values())})")
    int8 = manifest.metadata.get("int8_quantization", {})
    if "calibration" in int8:
        calibrated = int8["calibration"]
        print(f"int8: {int8['fp32_nodes']} MatMuls kept in fp32 ({len(calibrated['fp32_for_outliers'])} for outlying "
              f"inputs); on {calibrated['texts']} calibration texts {calibrated['decision_agreement']:.2%} of the "
              f"fp32 graph's decisions kept, {calibrated['expected_agreement_by_step'][-1]:.2%} expected "
              f"(target {calibrated['target_agreement']:.2%})")
    return 0


# --- verify ----------------------------------------------------------------------------------

def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    add_reference_arguments(parser, "Hugging Face checkpoint", batch_size=32)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="max |Δlogit| allowed for fp32")
    parser.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT,
                        help="share of documents whose decisions must match PyTorch (every precision)")
    add_provider_argument(parser, "the PyTorch reference always runs on the CPU in float32")


def _batched(run, texts: list[str], batch_size: int) -> np.ndarray:
    return np.concatenate([run(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)])


def compare_with_reference(model_dir: Path, checkpoint: Path, texts: list[str], batch_size: int = 32,
                           provider: ExecutionProvider = "cpu") -> dict[str, Any]:
    """max |Δlogit| and decision agreement of every exported precision against PyTorch."""
    import torch

    from selectd.tools.transformer.export import TorchReference

    torch.set_num_threads(1)
    fp32 = HFClassifier(model_dir, precision="fp32", provider=provider)
    reference = TorchReference(checkpoint, fp32.task, fp32.max_length)
    expected = _batched(reference.logits, texts, batch_size)
    expected_decisions = decisions(fp32.task, expected)
    report: dict[str, Any] = {"texts": len(texts), "task": fp32.task, "max_length": fp32.max_length,
                              "provider": provider, "precisions": {}}
    for precision in fp32.manifest.metadata["onnx"]:
        model = fp32 if precision == "fp32" else HFClassifier(model_dir, precision=precision, provider=provider)
        got = _batched(model.logits, texts, batch_size)
        agree = np.all(decisions(model.task, got) == expected_decisions, axis=1)
        report["precisions"][precision] = {
            "max_abs_logit_diff": float(np.abs(got - expected).max()),
            "decision_agreement": float(agree.mean()),
            "disagreeing_docs": int((~agree).sum()),
        }
    return report


def verify(args: argparse.Namespace) -> int:
    try:
        texts = read_texts(args.texts, args.limit)
        report = compare_with_reference(args.model_dir, args.against, texts, args.batch_size, args.provider)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"selectd verify: {exc}", file=sys.stderr)
        return 2
    failures = []
    for precision, figures in report["precisions"].items():
        if precision == "fp32" and figures["max_abs_logit_diff"] > args.tolerance:
            failures.append(f"fp32 max |Δlogit| {figures['max_abs_logit_diff']:.3g} > {args.tolerance:g}")
        if figures["decision_agreement"] < args.min_agreement:
            failures.append(f"{precision} decision agreement {figures['decision_agreement']:.4f} < {args.min_agreement:g}")
    lines = [f"{report['texts']} texts, task {report['task']}, max_length {report['max_length']}, {report['provider']}"]
    lines += [f"  {p}: max |Δlogit| {f['max_abs_logit_diff']:.3g}, decision agreement {f['decision_agreement']:.4f} "
              f"({f['disagreeing_docs']} docs differ)" for p, f in report["precisions"].items()]
    return finish_verify(report, failures, lines, args.json)


# --- bench -----------------------------------------------------------------------------------

def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    add_reference_arguments(parser, "Hugging Face checkpoint", batch_size=32)
    add_pass_arguments(parser)


def padded_tokens(model: HFClassifier, texts: list[str], batch_size: int) -> dict[str, int]:
    """Tokens each batching computes: real ones, one padded run per call, the classifier's runs."""
    real = one_run = runs = 0
    for start in range(0, len(texts), batch_size):
        lengths = [len(s) for s in model.windows(texts[start:start + batch_size]).sequences]
        real += sum(lengths)
        one_run += len(lengths) * max(lengths)
        runs += sum(len(run) * lengths[run[0]]  # runs are longest first
                    for run in token_capped_batches(lengths, model.max_tokens_per_run, model.max_padding))
    return {"real": real, "one_run_per_call": one_run, "length_bucketed": runs}


def bench(args: argparse.Namespace) -> int:
    import torch

    from selectd.tools.transformer.export import TorchReference

    try:
        args.clock = clock_name(args)
        texts = read_texts(args.texts, args.limit)
        torch.set_num_threads(args.threads)
        models = {p: HFClassifier(args.model_dir, precision=p, provider=args.provider, threads=args.threads)
                  for p in ("fp32", "int8") if p in _onnx_files(args.model_dir)}
        first = next(iter(models.values()))
        reference = TorchReference(args.against, first.task, first.max_length, device=args.provider)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"selectd bench hf: {exc}", file=sys.stderr)
        return 2
    clock = clock_function(args.clock)

    def torch_same_runs(batch: list[str]) -> np.ndarray:
        return reference.run_sequences(first.windows(batch).sequences, first.specials.pad_id,
                                       first.max_tokens_per_run, first.max_padding)

    # Two PyTorch references: "pytorch-eager" as a user's script runs it (tokenizer(padding=True),
    # one padded run per call), and "pytorch-eager-same-runs" fed the classifier's own tokens and
    # length-bucketed runs, so its ratio is the runtime's alone, not the batching's.
    sides = {"pytorch-eager": reference.logits, "pytorch-eager-same-runs": torch_same_runs,
             **{f"onnxruntime-{p}": m.logits for p, m in models.items()}}
    passes = alternating_passes(sides, texts, args.batch_size, args.repeat, clock)
    best = {name: best_pass(timings) for name, timings in passes.items()}
    user, same_runs = best["pytorch-eager"], best["pytorch-eager-same-runs"]
    tokens = padded_tokens(first, texts, args.batch_size)
    report: dict[str, Any] = {"provider": args.provider, "threads": args.threads, "batch_size": args.batch_size,
                              "clock": args.clock,
                              "tokens": tokens, "precisions": {}}
    lines = [f"{len(texts)} texts, batch {args.batch_size}, {args.threads} thread(s), {args.clock} clock, "
             f"provider {args.provider}; "
             f"{tokens['real']} tokens, padded to {tokens['one_run_per_call']} in one run per call, "
             f"{tokens['length_bucketed']} in length-bucketed runs",
             f"  PyTorch eager: {user.docs_per_s:.1f} docs/s; fed the same runs as ONNX Runtime: "
             f"{same_runs.docs_per_s:.1f} docs/s"]
    for precision in models:
        name = f"onnxruntime-{precision}"
        ours = best[name]
        ratios = pass_ratios(passes["pytorch-eager"], passes[name])
        report["precisions"][precision] = comparison(
            ours, user, pass_ratios=ratios, ratio_same_runs=ours.docs_per_s / same_runs.docs_per_s,
            same_runs_reference={**asdict(same_runs), "docs_per_s": same_runs.docs_per_s})
        lines.append(f"  ONNX Runtime {precision}: {ours.docs_per_s:.1f} docs/s, "
                     f"{report['precisions'][precision]['ratio']:.2f}x PyTorch eager "
                     f"(pass-by-pass {', '.join(f'{r:.2f}' for r in ratios)}), "
                     f"{ours.docs_per_s / same_runs.docs_per_s:.2f}x PyTorch fed the same runs")
    emit(report, args.json, lines)
    return 0


def _onnx_files(model_dir: Path) -> dict[str, str]:
    from selectd.models.manifest import load_manifest

    return load_manifest(model_dir, expected_kind=MANIFEST_KIND, verify=False).metadata.get("onnx", {})
