"""Hugging Face causal LMs → ONNX graphs of per-token log-probabilities, and the PyTorch reference.

Needs the ``export`` extra (torch, transformers, onnx); the daemon never imports this module.
Tested architectures: GPT-2, GPT-NeoX (Pythia, the CoLoR-Filter tokenizer) and Llama; any other
``AutoModelForCausalLM`` whose logits are ``lm_head(last_hidden_state)`` exports too, and one
that is not (e.g. logit soft-capping) is refused by the parity check every export runs.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn
from transformers import AttentionInterface

from selectd.models.causal_lm.model import (
    DEFAULT_MAX_TOKENS_PER_RUN, INPUT_NAME, MANIFEST_KIND, MODEL_FILE, OUTPUT_NAME, PAD_ID, WindowPolicy,
    windowed_logprobs,
)
from selectd.models.hf_common import check_vocabulary, load_tokenizer, pad_batch, tokenizer_id_count
from selectd.models.manifest import Manifest, ModelLoadError, write_manifest
from selectd.tools.hf_export import copy_tokenizer, export_onnx, reference_device

#: the graph must reproduce PyTorch's log-probabilities to this absolute difference at export
EXPORT_TOLERANCE = 1e-4


#: row chunks of the vocabulary head. The [tokens × vocabulary] logits of a whole run (33.5 MB at
#: 2,048 tokens and a vocabulary of 4,096) do not fit in cache, so MatMul writes them to memory
#: and LogSoftmax reads them back and writes as much again; chunk by chunk each piece is reduced
#: while still in cache. Measured alone, 2,047 rows × 128 × 4,096, ONNX Runtime, one thread:
#: 1 chunk 36.6 ms, 8 34.2, 16 30.3, 32 28.0, 64 about the same (the MatMul alone takes 26.6 ms);
#: in the whole demo prior, 32 chunks and the shared attention masks together take 4 % off a pass.
HEAD_CHUNKS = 32


class TokenLogProbs(nn.Module):
    """``input_ids [b, n] -> log p(x_t | x_<t) [b, n-1]``, the vocabulary reduced inside the graph.

    The head runs on positions 0 … n−2 only (the last position predicts nothing we score), in
    :data:`HEAD_CHUNKS` row chunks of the flattened ``[b·(n−1), hidden]`` states (bounds from the
    traced size, so the graph stays dynamic; a chunk may be empty); log-softmax + gather leave one
    float per token.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone = model.base_model
        self.head = model.get_output_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1]
        targets = input_ids[:, 1:]
        rows = hidden.reshape(-1, hidden.shape[-1])
        row_targets = targets.reshape(-1, 1)
        count = rows.shape[0]
        pieces = []
        for chunk in range(HEAD_CHUNKS):
            start, end = count * chunk // HEAD_CHUNKS, count * (chunk + 1) // HEAD_CHUNKS
            logits = self.head(rows[start:end]).float()
            pieces.append(torch.gather(torch.log_softmax(logits, dim=-1), 1, row_targets[start:end]))
        # [batch, -1], not targets.shape: ONNX Reshape reads a 0 in the shape (a one-token window)
        # as 'keep this dimension'
        return torch.cat(pieces).reshape(input_ids.shape[0], -1)


def reference_token_logprobs(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The reference computation (detect-pretrain-code's Min-K%, a perplexity script): full logits,
    log-softmax, gather the next token."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
    return torch.gather(torch.log_softmax(logits[:, :-1].float(), dim=-1), 2, input_ids[:, 1:, None]).squeeze(-1)


#: name under which :func:`blocked_causal_attention` is registered with transformers' AttentionInterface
BLOCKED_ATTENTION = "selectd_blocked_causal"
#: query blocks per attention layer. Measured on the 1.8M-parameter GPT-NeoX demo prior, windows of
#: 512, ONNX Runtime on one CPU thread: 1 block (plain SDPA trace) 14.8-16.2k tokens/s, 2 blocks
#: 16.2k, 3 18.0k, 4 17.6-18.3k, 6 17.5k, 8 18.1k; the skipped share of the score matrix grows
#: as (B-1)/2B while every block adds a few small ops.
ATTENTION_BLOCKS = 4


class UnsupportedAttention(ValueError):
    """The model asked the blocked causal attention for something it does not compute."""


def blocked_causal_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                             **kwargs) -> tuple[torch.Tensor, None]:
    """Causal self-attention that skips most of the scores above the diagonal, block by block.

    The traced SDPA graph computes the full ``n × n`` score matrix, adds a causal mask and then
    discards the upper half. Here the queries are cut into :data:`ATTENTION_BLOCKS` row blocks
    (bounds computed from the traced length, so the graph stays dynamic); block ``[a, b)`` only
    multiplies against keys ``[0, b)`` and masks its diagonal part, so with 4 blocks 3/8 of the
    score and probability-times-value work disappears. Grouped-query models repeat their
    key/value heads first, as transformers' eager attention does. Windows are right-padded and
    attention is causal, so no padding mask is needed (transformers passes none for an
    implementation without a registered mask function).

    ``query``: ``[batch, heads, n, head_dim]``; returns ``[batch, n, heads, head_dim]`` like
    transformers' own implementations.
    """
    asked = sorted(name for name in ("sliding_window", "softcap", "s_aux", "position_bias")
                   if kwargs.get(name) is not None)
    if attention_mask is not None or asked:
        raise UnsupportedAttention(f"the model's attention uses {asked or ['a padding mask']}, which the blocked "
                                   f"causal attention does not compute")
    from transformers.integrations.sdpa_attention import repeat_kv

    groups = query.shape[1] // key.shape[1]
    key, value = repeat_kv(key, groups), repeat_kv(value, groups)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    # the length from the model's position_ids (one tensor shared by every layer) when it passes
    # them: every layer's block bounds and masks are then the same expressions of the same input,
    # and ONNX Runtime's common-subexpression elimination computes them once for all layers
    position_ids = kwargs.get("position_ids")
    length = query.shape[2] if position_ids is None else position_ids.shape[-1]
    positions = torch.arange(length, device=query.device)
    blocks = []
    for block in range(ATTENTION_BLOCKS):
        start, end = length * block // ATTENTION_BLOCKS, length * (block + 1) // ATTENTION_BLOCKS
        hidden = positions[start:end, None] < positions[None, :end]
        # an additive mask broadcast over batch and heads: cheaper in ONNX Runtime than Where on the scores
        mask = torch.zeros(hidden.shape, dtype=query.dtype, device=query.device).masked_fill(
            hidden, torch.finfo(query.dtype).min)
        scores = torch.matmul(query[:, :, start:end], key[:, :, :end].transpose(-1, -2)) * scale + mask
        blocks.append(torch.matmul(torch.softmax(scores, dim=-1), value[:, :, :end]))
    return torch.cat(blocks, dim=2).transpose(1, 2).contiguous(), None


# transformers looks attention implementations up by name; only the exporter imports this module
AttentionInterface.register(BLOCKED_ATTENTION, blocked_causal_attention)


def fallback_attention(config) -> str:
    """transformers' attention used when the blocked one does not fit the model.

    SDPA traces to one causal-masked attention per layer (no padding-mask ops); the TorchScript
    exporter cannot convert SDPA with grouped-query attention (fewer key/value heads), so those
    use eager.
    """
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    return "sdpa" if kv_heads == heads else "eager"


def load_checkpoint(checkpoint: Path | str) -> nn.Module:
    """The checkpoint as a float32 ``AutoModelForCausalLM`` in eval mode, with transformers' default
    attention (what a user's script gets)."""
    from transformers import AutoModelForCausalLM

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise ModelLoadError(f"{checkpoint}: no config.json (not a Hugging Face checkpoint directory)")
    try:
        model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"{checkpoint}: not a loadable causal LM checkpoint: {exc}") from exc
    return model.eval()


def context_length(model: nn.Module) -> int:
    """Positions the model was built for (GPT-2's ``n_positions`` is aliased to this name)."""
    value = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(value, int) or value < 2:
        raise ModelLoadError(f"{model.config.model_type}: config has no usable max_position_embeddings ({value!r})")
    return value


@contextlib.contextmanager
def _windows_are_never_packed() -> Iterator[None]:
    """Trace without transformers' packed-sequence detection.

    Without an attention mask, transformers ≥ 5 looks for several sequences packed into one row
    (position ids restarting) using ``torch.diff``, which the TorchScript exporter cannot export.
    Our windows are never packed, so the detection is switched off for the trace; the parity
    check after export proves the graph still computes the model.
    """
    from transformers import masking_utils

    original = getattr(masking_utils, "find_packed_sequence_indices", None)
    if original is None:
        yield
        return
    masking_utils.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = original


def _check_graph(path: Path, model: nn.Module, vocab_rows: int, length: int) -> float:
    """max |Δ| between the ONNX graph and the full PyTorch model on random right-padded windows."""
    from selectd.models.runtime import make_session

    session = make_session(path)
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for lengths in ([min(length, 64), 9, 2], [min(length, 300)]):
        windows = [torch.randint(0, vocab_rows, (n,), generator=generator).tolist() for n in lengths]
        input_ids, attention_mask = pad_batch(windows, PAD_ID)
        got = session.run([OUTPUT_NAME], {INPUT_NAME: input_ids})[0]
        with torch.inference_mode():
            expected = reference_token_logprobs(model, torch.from_numpy(input_ids),
                                                torch.from_numpy(attention_mask)).numpy()
        for row, n in enumerate(lengths):
            worst = max(worst, float(np.abs(got[row, :n - 1] - expected[row, :n - 1]).max()))
    return worst


def _export_graph(model: nn.Module, attention: str, path: Path, vocab_rows: int, length: int) -> tuple[str, float]:
    """Trace ``model`` with one attention implementation to ``path``.

    Returns the implementation really traced (a model that cannot switch keeps its own, which is
    refused only for the blocked attention) and the graph's max |Δ| vs PyTorch (the model with its
    own attention again).
    """
    reference_attention = model.config._attn_implementation
    model.set_attn_implementation(attention)
    traced = model.config._attn_implementation
    try:
        if attention == BLOCKED_ATTENTION and traced != attention:
            raise UnsupportedAttention(f"{model.config.model_type} does not dispatch attention through "
                                       f"transformers' AttentionInterface, so it cannot use {attention}")
        example = torch.randint(0, vocab_rows, (2, min(length, 16)), generator=torch.Generator().manual_seed(0))
        with _windows_are_never_packed():
            export_onnx(TokenLogProbs(model), {INPUT_NAME: example}, [OUTPUT_NAME], path,
                        output_axes={OUTPUT_NAME: {1: "sequence_minus_1"}})
    finally:
        model.set_attn_implementation(reference_attention)
    return traced, _check_graph(path, model, vocab_rows, length)


def export(checkpoint: Path | str, out_dir: Path | str) -> Manifest:
    """Export a checkpoint to ``out_dir``: model.onnx, tokenizer.json, manifest.json.

    The graph is traced with :func:`blocked_causal_attention`; a model it does not fit (an
    attention feature it does not compute, or a parity failure) is traced again with
    :func:`fallback_attention`, and the manifest records which one and why.
    """
    import transformers

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    model = load_checkpoint(checkpoint)
    vocab_rows = int(model.get_input_embeddings().num_embeddings)
    length = context_length(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(copy_tokenizer(checkpoint, out_dir))
    check_vocabulary(tokenizer_id_count(tokenizer), vocab_rows, str(checkpoint))

    path = out_dir / MODEL_FILE
    fallback_reason = None
    for attention in (BLOCKED_ATTENTION, fallback_attention(model.config)):
        try:
            attention, max_diff = _export_graph(model, attention, path, vocab_rows, length)
        except UnsupportedAttention as exc:
            fallback_reason = str(exc)
            continue
        if max_diff <= EXPORT_TOLERANCE:
            break
        fallback_reason = f"{attention} attention: the graph differs from PyTorch by {max_diff:.3g}"
    else:
        path.unlink(missing_ok=True)
        raise ModelLoadError(f"{checkpoint}: the exported graph's log-probabilities differ from PyTorch's by "
                             f"{max_diff:.3g} (> {EXPORT_TOLERANCE:g}); this {model.config.model_type} model's logits "
                             f"are not lm_head(last_hidden_state) and it cannot be exported this way")
    metadata = {
        "architecture": model.config.model_type,
        "context_length": length,
        "vocab_size": vocab_rows,
        "parameters": sum(p.numel() for p in model.parameters()),
        "inputs": [INPUT_NAME],
        "outputs": [OUTPUT_NAME],
        "export_check_max_abs_diff": max_diff,
        "attention": attention if attention != BLOCKED_ATTENTION else f"blocked-causal ({ATTENTION_BLOCKS} query blocks)",
        "attention_fallback_reason": fallback_reason if attention != BLOCKED_ATTENTION else None,
        "preprocessing": "identity",
        "source": str(checkpoint.resolve()),
        "exported_with": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    return write_manifest(out_dir, MANIFEST_KIND, metadata)


class TorchReference:
    """The checkpoint in PyTorch eager, tokenized by transformers, under the same window policy and
    the same length-sorted batches as the ONNX model (so a benchmark compares runtimes, not batching),
    on ``device`` ("cpu" or "cuda")."""

    def __init__(self, checkpoint: Path | str, window: int, max_tokens_per_run: int = DEFAULT_MAX_TOKENS_PER_RUN,
                 device: str = "cpu"):
        from transformers import AutoTokenizer

        self.device = reference_device(device)
        self.model = load_checkpoint(checkpoint).to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.policy = WindowPolicy(window)
        self.max_tokens_per_run = max_tokens_per_run

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]]

    def document_logprobs(self, token_ids: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return windowed_logprobs(self._forward, token_ids, self.policy, self.max_tokens_per_run).logprobs

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return reference_token_logprobs(self.model, torch.from_numpy(input_ids).to(self.device),
                                            torch.from_numpy(attention_mask).to(self.device)).cpu().numpy()

    def text_logprobs(self, texts: Sequence[str]) -> list[np.ndarray]:
        return self.document_logprobs(self.encode(texts))
