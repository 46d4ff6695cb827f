"""An exported causal language model on ONNX Runtime: per-token log-probabilities, windowed (no torch).

The model directory (written by :mod:`selectd.tools.causal_lm.export`) holds ``model.onnx``,
``tokenizer.json`` and ``manifest.json``. The graph takes ``input_ids`` (int64, ``[batch, n]``)
and returns ``token_logprobs`` (float32, ``[batch, n - 1]``): ``log p(x_t | x_<t)`` for
t = 1 … n−1, reduced inside the graph, so the ``[batch, n, vocabulary]`` logits never reach the
host. Batches are right-padded: a causal model's real tokens never attend to the padding after
them, so no attention mask is needed and the padded positions' outputs are simply dropped.

Window policy (:class:`WindowPolicy`): a document of n tokens (tokenized with the tokenizer's own
special-token template, e.g. Llama's BOS) is cut into windows of at most ``window`` tokens with a
stride of ``window − 1``: each window starts with the previous window's last token as context, so
every token after the document's first is predicted exactly once. Document scores are then
token-weighted means over all its predicted tokens (a window of 2 tokens weighs 1, a full one
``window − 1``): :func:`mean_cross_entropy` and :func:`min_k_prob`, shared by the scorers and
``selectd verify causal-lm``.
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from selectd.models.hf_common import (
    TOKENIZER_FILE, check_vocabulary, load_tokenizer, pad_batch, probe_embedding_rows, token_capped_batches,
    tokenizer_id_count, window_spans,
)
from selectd.models.manifest import MANIFEST_NAME, ModelLoadError, load_manifest
from selectd.models.runtime import ExecutionProvider, make_session

MANIFEST_KIND = "causal-lm"
MODEL_FILE = "model.onnx"
INPUT_NAME = "input_ids"
OUTPUT_NAME = "token_logprobs"
#: CoLoR-Filter's sequence length
DEFAULT_WINDOW = 512
#: cap on padded tokens per ONNX Runtime call. Measured on the demo GPT-NeoX prior (vocabulary
#: 4,096, windows of 512, one thread): 1,024 → 16.6-17.2k tokens/s, 2,048 → 15.8-18.0k, 4,096 →
#: 14.5-16.6k, 8,192 → 13.1-13.6k: a run's activations stop fitting in cache (the same order with
#: the head reduced in chunks: 17.1k, 17.3k, 15.1k, 14.9k, best of 4). A window longer than the cap
#: still runs, alone.
DEFAULT_MAX_TOKENS_PER_RUN = 2048
#: any valid id: padded positions come after the real tokens and their outputs are dropped
PAD_ID = 0
#: log-probabilities are <= 0; allow float rounding above it
_LOGPROB_SLACK = 1e-4
#: Min-K% Prob: share of a document's lowest-probability tokens averaged (the scorer's default)
DEFAULT_MIN_K_RATIO = 0.2


@dataclass(frozen=True)
class WindowPolicy:
    """How a long document is cut for a model of limited context (see the module docstring)."""

    window: int

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError(f"window must be at least 2 tokens (one of context, one predicted), got {self.window}")

    def spans(self, n_tokens: int) -> list[tuple[int, int]]:
        return window_spans(n_tokens, self.window, overlap=1)

    def describe(self) -> str:
        return (f"window={self.window} stride={self.window - 1} (each window re-reads the previous one's last "
                f"token as context; every token after a document's first is predicted once); "
                f"aggregate=token-weighted mean over the document's windows")


@dataclass
class DocumentLogProbs:
    """Per-token log-probabilities of each document, its windows concatenated in order."""

    logprobs: list[np.ndarray]  # float64, one entry per predicted token (n_tokens - 1, or 0)
    windows: np.ndarray  # windows run per document


def mean_cross_entropy(logprobs: np.ndarray) -> float:
    """Mean next-token cross-entropy in nats (NaN when nothing was predicted)."""
    return float(-logprobs.mean()) if len(logprobs) else math.nan


def min_k_prob(logprobs: np.ndarray, ratio: float) -> float:
    """Min-K% Prob: −mean of the floor(n · ratio) (at least one) lowest token log-probabilities."""
    if not len(logprobs):
        return math.nan
    k = max(1, int(len(logprobs) * ratio))
    return float(-np.sort(logprobs)[:k].mean())


def tokenizer_fingerprint(tokenizer) -> str:
    """sha256 of the tokenizer's canonical JSON: equal when two tokenizers split text identically."""
    canonical = json.dumps(json.loads(tokenizer.to_str()), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


class CausalLM:
    """Load-time checked causal LM: manifest, tokenizer vs vocabulary, graph signature, window vs context."""

    def __init__(self, model_dir: Path | str, window: int = DEFAULT_WINDOW, provider: ExecutionProvider = "cpu",
                 threads: int = 1, max_tokens_per_run: int = DEFAULT_MAX_TOKENS_PER_RUN):
        self.manifest = load_manifest(model_dir, expected_kind=MANIFEST_KIND)
        source = str(self.manifest.directory / MANIFEST_NAME)
        meta = self.manifest.metadata
        try:
            self.context_length = int(meta["context_length"])
            self.vocab_size = int(meta["vocab_size"])
            self.architecture = str(meta["architecture"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: metadata incomplete or malformed ({exc!r})") from exc
        if window > self.context_length:
            raise ModelLoadError(f"{source}: window of {window} tokens is longer than the model's context of "
                                 f"{self.context_length} tokens")
        try:
            self.policy = WindowPolicy(window)
        except ValueError as exc:
            raise ModelLoadError(f"{source}: {exc}") from None
        self.tokenizer = load_tokenizer(self.manifest.path(TOKENIZER_FILE))
        check_vocabulary(tokenizer_id_count(self.tokenizer), self.vocab_size, source)
        self.tokenizer_fingerprint = tokenizer_fingerprint(self.tokenizer)
        self.model_path = self.manifest.path(MODEL_FILE)
        self.session = make_session(self.model_path, provider, threads)
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise ModelLoadError(f"{self.model_path}: graph takes {inputs} and returns {outputs}; expected "
                                 f"[{INPUT_NAME!r}] -> {OUTPUT_NAME!r} (export it with `selectd export causal-lm`)")
        if max_tokens_per_run < 1:
            raise ModelLoadError(f"{source}: max_tokens_per_run must be positive, got {max_tokens_per_run}")
        # a window longer than the cap (a long-context model's default cap) runs alone, not refused
        self.max_tokens_per_run = max_tokens_per_run
        probe_embedding_rows(self.session, self.model_path, lambda ids: {INPUT_NAME: ids}, self.vocab_size)
        self._check_outputs_are_logprobs()

    def _check_outputs_are_logprobs(self) -> None:
        probe = np.arange(min(self.window, 8), dtype=np.int64)[None, :] % self.vocab_size
        got = self.session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
        if got.shape != (1, probe.shape[1] - 1):
            raise ModelLoadError(f"{self.model_path}: {OUTPUT_NAME} has shape {list(got.shape)} for "
                                 f"{probe.shape[1]} input tokens; expected [1, {probe.shape[1] - 1}]")
        if not np.all(np.isfinite(got)) or got.max() > _LOGPROB_SLACK:
            raise ModelLoadError(f"{self.model_path}: {OUTPUT_NAME} are not log-probabilities "
                                 f"(non-finite or positive values on a probe sequence)")

    @property
    def window(self) -> int:
        return self.policy.window

    # --- tokens -----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, wrapped in the tokenizer's own special tokens (e.g. Llama's BOS).

        ``encode_batch_fast``: the same ids without the character offsets nobody here reads (about
        15 % less tokenizing time on the bench texts)."""
        return [e.ids for e in self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=True)]

    # --- inference --------------------------------------------------------------------------
    def run_windows(self, windows: Sequence[Sequence[int]]) -> list[np.ndarray]:
        """Log-probabilities of tokens 1 … n−1 of each window, in length-sorted token-capped runs."""
        return run_windows(self._forward, windows, self.max_tokens_per_run)

    def document_logprobs(self, token_ids: Sequence[Sequence[int]]) -> DocumentLogProbs:
        """Per-token log-probabilities of whole documents (already tokenized) under the window policy."""
        return windowed_logprobs(self._forward, token_ids, self.policy, self.max_tokens_per_run)

    def _forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        # the graph takes no mask: padding follows the real tokens, and causal attention never reads ahead
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: input_ids})[0]

    def text_logprobs(self, texts: Sequence[str]) -> DocumentLogProbs:
        return self.document_logprobs(self.encode(texts))


#: ``forward(input_ids, attention_mask) -> log-probs [run, width - 1]`` of one padded run of windows
LogProbForward = Callable[[np.ndarray, np.ndarray], np.ndarray]


def run_windows(forward: LogProbForward, windows: Sequence[Sequence[int]], max_tokens_per_run: int) -> list[np.ndarray]:
    """Log-probabilities of tokens 1 … n−1 of each window by ``forward`` (the ONNX graph, or the
    PyTorch reference), in length-sorted token-capped runs; a window of under 2 tokens predicts none."""
    out: list[np.ndarray] = [np.empty(0, dtype=np.float32)] * len(windows)
    lengths = [len(w) for w in windows]
    runnable = [i for i, n in enumerate(lengths) if n >= 2]
    for run in token_capped_batches([lengths[i] for i in runnable], max_tokens_per_run):
        indices = [runnable[i] for i in run]
        input_ids, attention_mask = pad_batch([windows[i] for i in indices], PAD_ID)
        logprobs = forward(input_ids, attention_mask)
        for row, index in enumerate(indices):
            out[index] = logprobs[row, :lengths[index] - 1]
    return out


def windowed_logprobs(forward: LogProbForward, token_ids: Sequence[Sequence[int]], policy: WindowPolicy,
                      max_tokens_per_run: int) -> DocumentLogProbs:
    """Per-token log-probabilities of whole documents by ``forward``, cut into ``policy``'s windows
    and put back together in order."""
    windows: list[Sequence[int]] = []
    owner: list[int] = []
    for doc, ids in enumerate(token_ids):
        for start, end in policy.spans(len(ids)):
            windows.append(ids[start:end])
            owner.append(doc)
    pieces: list[list[np.ndarray]] = [[] for _ in token_ids]
    for doc, logprobs in zip(owner, run_windows(forward, windows, max_tokens_per_run)):
        pieces[doc].append(logprobs)
    logprobs = [np.concatenate(p).astype(np.float64) for p in pieces]
    return DocumentLogProbs(logprobs, np.bincount(np.asarray(owner, dtype=np.int64), minlength=len(token_ids)))
