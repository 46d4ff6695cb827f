"""Causal LMs (GPT-2, GPT-NeoX, Llama) for perplexity, Min-K% Prob and CoLoR-Filter on ONNX Runtime.

``selectd export causal-lm CHECKPOINT OUT``,
``selectd verify OUT --against CHECKPOINT --texts FILE.jsonl [--conditional OUT2 --conditional-against CHECKPOINT2]``
and ``selectd bench causal-lm OUT --against CHECKPOINT --texts FILE.jsonl``. torch and
transformers (the ``export`` extra) are imported only when one of these runs, never by the daemon.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selectd.models.causal_lm.model import (DEFAULT_MAX_TOKENS_PER_RUN, DEFAULT_MIN_K_RATIO, DEFAULT_WINDOW,
                                            MANIFEST_KIND, CausalLM, mean_cross_entropy, min_k_prob)
from selectd.models.manifest import ModelLoadError
from selectd.models.runtime import ExecutionProvider
from selectd.tools.benchmark import (add_pass_arguments, add_provider_argument, add_reference_arguments,
                                     alternating_passes, best_pass, clock_function, clock_name, comparison, emit,
                                     finish_verify, pass_ratios, read_texts)

__all__ = ["MANIFEST_KIND", "add_export_arguments", "export", "add_verify_arguments", "verify",
           "add_bench_arguments", "bench"]

#: per-token log-probabilities must match PyTorch's to this absolute difference
DEFAULT_TOLERANCE = 1e-4


# --- export ----------------------------------------------------------------------------------

def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", type=Path, help="Hugging Face causal LM checkpoint directory (config.json, weights, tokenizer)")
    parser.add_argument("out_dir", type=Path, help="directory to write model.onnx, tokenizer.json, manifest.json")


def export(args: argparse.Namespace) -> int:
    from selectd.tools.causal_lm import export as exporter

    try:
        manifest = exporter.export(args.checkpoint, args.out_dir)
    except (ModelLoadError, ValueError) as exc:
        print(f"selectd export causal-lm: {exc}", file=sys.stderr)
        return 2
    meta = manifest.metadata
    print(f"exported {args.checkpoint} -> {args.out_dir} ({meta['architecture']}, {meta['parameters']:,} parameters, "
          f"context {meta['context_length']}, vocabulary {meta['vocab_size']}; "
          f"max |Δ log-prob| vs PyTorch {meta['export_check_max_abs_diff']:.2g})")
    return 0


# --- verify ----------------------------------------------------------------------------------

def _reference_args(parser: argparse.ArgumentParser) -> None:
    add_reference_arguments(parser, "Hugging Face checkpoint", batch_size=32)
    parser.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="tokens per window, both sides")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    _reference_args(parser)
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="max |Δ log-prob| per token")
    parser.add_argument("--min-k-ratio", type=float, default=DEFAULT_MIN_K_RATIO, help="Min-K%% Prob ratio compared")
    parser.add_argument("--conditional", type=Path,
                        help="CoLoR-Filter: the exported conditional model; MODEL_DIR is then the prior and the "
                             "CoLoR scores' order is compared too")
    parser.add_argument("--conditional-against", type=Path, help="the conditional model's checkpoint")
    add_provider_argument(parser, "the PyTorch reference always runs on the CPU in float32")


def _in_batches(run, texts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    return [lp for start in range(0, len(texts), batch_size) for lp in run(texts[start:start + batch_size])]


def compare_model(model_dir: Path, checkpoint: Path, texts: Sequence[str], window: int, min_k_ratio: float,
                  batch_size: int = 32, provider: ExecutionProvider = "cpu") -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Per-token and per-document differences of one exported model against PyTorch.

    Returns the report and both sides' mean cross-entropy per document (for the CoLoR order).
    """
    import torch

    from selectd.tools.causal_lm.export import TorchReference

    torch.set_num_threads(1)
    model = CausalLM(model_dir, window=window, provider=provider)
    reference = TorchReference(checkpoint, window)
    ours = _in_batches(lambda batch: model.text_logprobs(batch).logprobs, texts, batch_size)
    theirs = _in_batches(reference.text_logprobs, texts, batch_size)
    length_mismatch = {i for i, (a, b) in enumerate(zip(ours, theirs)) if len(a) != len(b)}
    same = [i for i in range(len(texts)) if i not in length_mismatch and len(ours[i])]
    token_diff = max((float(np.abs(ours[i] - theirs[i]).max()) for i in same), default=0.0)
    ce_ours = np.array([mean_cross_entropy(lp) for lp in ours])
    ce_theirs = np.array([mean_cross_entropy(lp) for lp in theirs])
    min_k_diff = max((abs(min_k_prob(ours[i], min_k_ratio) - min_k_prob(theirs[i], min_k_ratio)) for i in same),
                     default=0.0)
    report = {
        "texts": len(texts), "tokens": int(sum(len(lp) for lp in ours)), "window": window, "provider": provider,
        "max_abs_token_logprob_diff": token_diff,
        "max_abs_mean_ce_diff": float(np.nanmax(np.abs(ce_ours[same] - ce_theirs[same]))) if same else 0.0,
        "max_abs_min_k_diff": min_k_diff,
        "tokenization_mismatches": len(length_mismatch),
    }
    return report, ce_ours, ce_theirs


def verify(args: argparse.Namespace) -> int:
    if (args.conditional is None) != (args.conditional_against is None):
        print("selectd verify: --conditional and --conditional-against go together", file=sys.stderr)
        return 2
    try:
        texts = read_texts(args.texts, args.limit)
        report, prior_ours, prior_theirs = compare_model(args.model_dir, args.against, texts, args.window,
                                                         args.min_k_ratio, args.batch_size, args.provider)
        models = {"model": report}
        if args.conditional is not None:
            conditional, cond_ours, cond_theirs = compare_model(args.conditional, args.conditional_against, texts,
                                                                args.window, args.min_k_ratio, args.batch_size,
                                                                args.provider)
            models = {"prior": report, "conditional": conditional}
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"selectd verify: {exc}", file=sys.stderr)
        return 2
    failures = []
    for name, figures in models.items():
        if figures["max_abs_token_logprob_diff"] > args.tolerance:
            failures.append(f"{name}: max |Δ log-prob| {figures['max_abs_token_logprob_diff']:.3g} > {args.tolerance:g}")
        if figures["tokenization_mismatches"]:
            failures.append(f"{name}: {figures['tokenization_mismatches']} documents tokenized differently from transformers")
    full: dict[str, Any] = {"models": models}
    lines = [f"{name}: {f['texts']} texts, {f['tokens']} tokens, window {f['window']}, {f['provider']}: max |Δ log-prob| "
             f"{f['max_abs_token_logprob_diff']:.3g}, max |Δ mean CE| {f['max_abs_mean_ce_diff']:.3g}, "
             f"max |Δ Min-K%| {f['max_abs_min_k_diff']:.3g}, {f['tokenization_mismatches']} tokenization mismatches"
             for name, f in models.items()]
    if args.conditional is not None:
        color_ours, color_theirs = prior_ours - cond_ours, prior_theirs - cond_theirs
        scored = ~np.isnan(color_theirs)
        same_order = bool(np.array_equal(np.argsort(color_ours[scored], kind="stable"),
                                         np.argsort(color_theirs[scored], kind="stable")))
        full["color"] = {"documents": int(scored.sum()), "same_order": same_order,
                         "max_abs_diff": float(np.abs(color_ours[scored] - color_theirs[scored]).max())}
        lines.append(f"CoLoR: {full['color']['documents']} documents, same order as PyTorch: {same_order}, "
                     f"max |Δ| {full['color']['max_abs_diff']:.3g}")
        if not same_order:
            failures.append("CoLoR scores rank differently from PyTorch's")
    return finish_verify(full, failures, lines, args.json)


# --- bench -----------------------------------------------------------------------------------

def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    _reference_args(parser)
    add_pass_arguments(parser)
    parser.add_argument("--max-tokens-per-run", type=int, default=DEFAULT_MAX_TOKENS_PER_RUN,
                        help="cap on padded tokens per forward pass, both sides")


def bench(args: argparse.Namespace) -> int:
    import torch

    from selectd.tools.causal_lm.export import TorchReference

    try:
        args.clock = clock_name(args)
        texts = read_texts(args.texts, args.limit)
        torch.set_num_threads(args.threads)
        model = CausalLM(args.model_dir, window=args.window, provider=args.provider, threads=args.threads,
                         max_tokens_per_run=args.max_tokens_per_run)
        reference = TorchReference(args.against, args.window, max_tokens_per_run=args.max_tokens_per_run,
                                   device=args.provider)
    except (ModelLoadError, ValueError, OSError) as exc:
        print(f"selectd bench causal-lm: {exc}", file=sys.stderr)
        return 2
    clock = clock_function(args.clock)
    tokens = sum(len(lp) for lp in model.text_logprobs(texts).logprobs)
    # Both sides cut the same windows and run them in the same length-sorted, token-capped batches
    # (TorchReference mirrors CausalLM), under torch.inference_mode with the same thread count;
    # tokenization is part of both paths (each side tokenizes its own way, as it would in use).
    # On a GPU both sides' timed calls end with their results on the host, so wall time covers the GPU work.
    passes = alternating_passes({"pytorch-eager": reference.text_logprobs, "onnxruntime": model.text_logprobs},
                                texts, args.batch_size, args.repeat, clock)
    torch_timing, ours = best_pass(passes["pytorch-eager"]), best_pass(passes["onnxruntime"])
    ratios = pass_ratios(passes["pytorch-eager"], passes["onnxruntime"])
    report = comparison(ours, torch_timing, provider=args.provider, onnxruntime_providers=model.session.get_providers(),
                        threads=args.threads, batch_size=args.batch_size, window=args.window,
                        max_tokens_per_run=args.max_tokens_per_run, clock=args.clock, tokens=tokens,
                        architecture=model.architecture, attention=model.manifest.metadata.get("attention"),
                        pass_ratios=ratios,
                        tokens_per_s={"ours": tokens / ours.seconds, "reference": tokens / torch_timing.seconds})
    lines = [f"{len(texts)} texts, {tokens} predicted tokens, window {args.window}, batch {args.batch_size}, "
             f"{args.threads} thread(s), {args.clock} clock, {model.architecture}, provider {args.provider} "
             f"(ONNX Runtime session: {', '.join(model.session.get_providers())})",
             f"  PyTorch eager: {torch_timing.docs_per_s:.1f} docs/s, {tokens / torch_timing.seconds:.0f} tokens/s",
             f"  ONNX Runtime:  {ours.docs_per_s:.1f} docs/s, {tokens / ours.seconds:.0f} tokens/s, "
             f"{report['ratio']:.2f}x PyTorch eager (best passes; pass-by-pass ratios "
             f"{', '.join(f'{r:.2f}' for r in ratios)})"]
    emit(report, args.json, lines)
    return 0
