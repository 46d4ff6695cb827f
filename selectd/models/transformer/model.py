"""An exported Hugging Face sequence classifier, run on ONNX Runtime (no torch).

The model directory (written by :mod:`selectd.tools.transformer.export`) holds ``model.onnx``
(and ``model.int8.onnx`` when quantized), ``tokenizer.json`` and ``manifest.json``. The graph
takes ``input_ids`` and ``attention_mask`` (int64, ``[batch, sequence]``) and returns ``logits``:
``[batch, labels]`` for the multilabel and multiclass tasks, ``[batch, heads, classes]`` for
multihead (Celadon's shape).

Long documents are handled by one of three policies: ``truncate`` scores the first
``max_length`` tokens (what the Hugging Face pipelines and Celadon / Detoxify do),
``window_max`` / ``window_mean`` score overlapping windows covering the document and aggregate
them (:func:`aggregate`). Every result says how much of each document was scored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Literal, Sequence

import numpy as np

from selectd.models.hf_common import (
    SpecialTokens, check_vocabulary, load_tokenizer, pad_batch, probe_embedding_rows, token_capped_batches,
    tokenizer_id_count, window_spans,
)
from selectd.models.manifest import MANIFEST_NAME, ModelLoadError, load_manifest
from selectd.models.runtime import ExecutionProvider, make_session

if TYPE_CHECKING:
    import onnxruntime as ort

MANIFEST_KIND = "hf-classifier"
Task = Literal["multilabel", "multiclass", "multihead"]
TASKS: tuple[str, ...] = ("multilabel", "multiclass", "multihead")
Precision = Literal["fp32", "int8"]
LongDocumentPolicy = Literal["truncate", "window_max", "window_mean"]
INPUT_NAMES = ("input_ids", "attention_mask")

#: Celadon's five heads (Toxicity of the Commons), in the order of its checkpoint
CELADON_HEADS = ("Race/Origin", "Gender/Sex", "Religion", "Ability", "Violence")
CELADON_CLASSES = 4
#: Share of a run's padded tokens that may be padding. Runs cut at 20 % ran all-MiniLM-L6-v2 on
#: 520 mixed-language 160-character snippets, 32 per call, 2.8x faster (CPU seconds) than one run
#: per call, where 58 % of the tokens computed were padding; cutting finer (10 %, 0 %) gained
#: nothing more on one CPU core, and fewer, fuller runs suit a GPU better.
DEFAULT_MAX_PADDING = 0.2


@dataclass
class Windows:
    """The token sequences run for a batch of documents and which document each belongs to."""

    sequences: list[list[int]]  # wrapped in the special tokens, at most max_length long
    owner: np.ndarray  # document index of each sequence
    tokens: np.ndarray  # content tokens of each document (before any cut)
    scored: np.ndarray  # content tokens of each document that some sequence covers


class HFClassifier:
    """Load-time checked classifier: tokenizer, ONNX session, labels / heads from the manifest."""

    def __init__(self, model_dir: Path | str, precision: Precision | None = None, provider: ExecutionProvider = "cpu",
                 threads: int = 1, max_tokens_per_run: int = 8192, max_padding: float = DEFAULT_MAX_PADDING):
        self.manifest = load_manifest(model_dir, expected_kind=MANIFEST_KIND)
        source = str(self.manifest.directory / MANIFEST_NAME)
        meta = self.manifest.metadata
        try:
            self.task: Task = meta["task"]
            self.max_length = int(meta["max_length"])
            self.vocab_size = int(meta["vocab_size"])
            self.preprocessing = str(meta.get("preprocessing", "identity"))
            onnx_files = dict(meta["onnx"])
            special = meta["special_tokens"]
            self.specials = SpecialTokens(tuple(special["prefix"]), tuple(special["suffix"]), int(special["pad_id"]))
            if self.task == "multihead":
                self.heads: list[str] = list(meta["heads"])
                self.classes = int(meta["classes"])
                self.labels: list[str] = []
            else:
                self.labels = list(meta["labels"])
                self.heads, self.classes = [], 0
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{source}: metadata incomplete or malformed ({exc!r})") from exc
        if self.task not in TASKS:
            raise ModelLoadError(f"{source}: unknown task {self.task!r}; expected one of {', '.join(TASKS)}")
        if self.max_length <= self.specials.count:
            raise ModelLoadError(f"{source}: max_length {self.max_length} leaves no room for text")
        self.precision: Precision = precision or meta.get("default_precision", "fp32")
        if self.precision not in onnx_files:
            raise ModelLoadError(f"{source}: no {self.precision} model in this directory "
                                 f"(it has {', '.join(sorted(onnx_files))}); export with --quantize int8")
        self.model_path = self.manifest.path(onnx_files[self.precision])
        self.tokenizer = load_tokenizer(self.manifest.path("tokenizer.json"))
        check_vocabulary(tokenizer_id_count(self.tokenizer), self.vocab_size, source)
        self.session = make_session(self.model_path, provider, threads)
        inputs = sorted(i.name for i in self.session.get_inputs())
        if inputs != sorted(INPUT_NAMES):
            raise ModelLoadError(f"{self.model_path}: graph inputs are {inputs}, expected {list(INPUT_NAMES)}")
        self.max_tokens_per_run = max_tokens_per_run
        self.max_padding = max_padding
        probe_embedding_rows(self.session, self.model_path, _feeds, self.vocab_size)
        self._check_output_shape()

    def _check_output_shape(self) -> None:
        wanted = (1, len(self.heads), self.classes) if self.task == "multihead" else (1, len(self.labels))
        got = self.run_sequences([self.specials.wrap([])]).shape
        if got != wanted:
            raise ModelLoadError(f"{self.model_path}: logits have shape {list(got)} per document but the manifest "
                                 f"describes {list(wanted)} ({self.task})")

    # --- tokens -----------------------------------------------------------------------------
    @property
    def window_tokens(self) -> int:
        """Content tokens that fit in one sequence next to the special tokens."""
        return self.max_length - self.specials.count

    def windows(self, texts: Sequence[str], policy: LongDocumentPolicy = "truncate", overlap: int = 64,
                max_windows: int = 64) -> Windows:
        # no character offsets are read: encode_batch_fast skips computing them
        encoded = self.tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)
        sequences: list[list[int]] = []
        owner: list[int] = []
        tokens = np.zeros(len(texts), dtype=np.int64)
        scored = np.zeros(len(texts), dtype=np.int64)
        for doc, encoding in enumerate(encoded):
            ids = encoding.ids
            tokens[doc] = len(ids)
            if policy == "truncate":
                spans = [(0, min(len(ids), self.window_tokens))]
            else:
                spans = window_spans(len(ids), self.window_tokens, min(overlap, self.window_tokens - 1), max_windows)
            scored[doc] = spans[-1][1]
            for start, end in spans:
                sequences.append(self.specials.wrap(ids[start:end]))
                owner.append(doc)
        return Windows(sequences, np.asarray(owner, dtype=np.int64), tokens, scored)

    # --- inference --------------------------------------------------------------------------
    def run_sequences(self, sequences: Sequence[Sequence[int]]) -> np.ndarray:
        """Logits for wrapped token sequences, in their order, run in length-sorted, token-capped runs
        of at most ``max_padding`` padding each."""
        return padded_logits(session_forward(self.session), sequences, self.specials.pad_id, self.max_tokens_per_run,
                             self.max_padding)

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Logits of each text truncated to ``max_length`` tokens (what verify compares)."""
        return self.run_sequences(self.windows(texts, "truncate").sequences)


def padded_logits(forward: Callable[[np.ndarray, np.ndarray], np.ndarray], sequences: Sequence[Sequence[int]],
                  pad_id: int, max_tokens_per_run: int, max_padding: float) -> np.ndarray:
    """Logits of wrapped token sequences, in their order: ``forward(input_ids, attention_mask)`` (an
    ONNX session, the PyTorch reference, a recording pass) on each length-sorted, token-capped run."""
    out: np.ndarray | None = None
    for run in token_capped_batches([len(s) for s in sequences], max_tokens_per_run, max_padding):
        input_ids, attention_mask = pad_batch([sequences[i] for i in run], pad_id)
        logits = forward(input_ids, attention_mask)
        if out is None:
            out = np.empty((len(sequences), *logits.shape[1:]), dtype=np.float32)
        out[run] = logits
    assert out is not None, "padded_logits needs at least one sequence"
    return out


def session_forward(session: "ort.InferenceSession") -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``forward(input_ids, attention_mask) -> logits`` of a classifier graph, for :func:`padded_logits`."""
    return lambda input_ids, attention_mask: session.run(["logits"], _feeds(input_ids, attention_mask))[0]


def _feeds(input_ids: np.ndarray, attention_mask: np.ndarray | None = None) -> dict[str, np.ndarray]:
    if attention_mask is None:
        attention_mask = np.ones_like(input_ids)
    return {"input_ids": input_ids, "attention_mask": attention_mask}


# --- from logits to scores and decisions ---------------------------------------------------

def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    shifted = np.exp(x - x.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def probabilities(task: Task, logits: np.ndarray) -> np.ndarray:
    """Sigmoid per label (multilabel), softmax over labels (multiclass) or over each head's classes."""
    return sigmoid(logits) if task == "multilabel" else softmax(logits)


def aggregate(task: Task, window_logits: np.ndarray, owner: np.ndarray, n_docs: int,
              policy: LongDocumentPolicy) -> np.ndarray:
    """Per-document outputs from per-window logits.

    Multilabel / multiclass: probabilities ``[n_docs, labels]``; multihead: per-head class scores
    ``[n_docs, heads]`` (argmax). ``window_mean`` averages window probabilities (then argmax for
    heads); ``window_max`` takes each label's highest probability (multiclass: renormalised to
    sum to one) and, for heads, the highest window score, i.e. the most toxic window decides.
    """
    probs = probabilities(task, window_logits)
    if policy == "truncate" or len(owner) == n_docs and np.array_equal(owner, np.arange(n_docs)):
        return probs.argmax(axis=-1).astype(np.float64) if task == "multihead" else probs
    if policy == "window_mean":
        sums = np.zeros((n_docs, *probs.shape[1:]))
        np.add.at(sums, owner, probs)
        counts = np.bincount(owner, minlength=n_docs).reshape(-1, *([1] * (probs.ndim - 1)))
        mean = sums / counts
        return mean.argmax(axis=-1).astype(np.float64) if task == "multihead" else mean
    if policy == "window_max":
        values = probs.argmax(axis=-1).astype(np.float64) if task == "multihead" else probs
        best = np.full((n_docs, *values.shape[1:]), -np.inf)
        np.maximum.at(best, owner, values)
        if task == "multiclass":
            best = best / best.sum(axis=-1, keepdims=True)
        return best
    raise ValueError(f"unknown long-document policy {policy!r}")


def celadon_decision(head_scores: np.ndarray) -> np.ndarray:
    """Celadon's none / mild / toxic from five per-head scores in 0..3 (object array of str).

    With S the sum: none if S <= 3 and every score <= 2; mild if 4 <= S <= 6, or S == 3 from a
    single 3; toxic if S >= 7.
    """
    total = head_scores.sum(axis=1)
    decision = np.full(len(head_scores), "mild", dtype=object)
    decision[(total <= 3) & (head_scores.max(axis=1) <= 2)] = "none"
    decision[total >= 7] = "toxic"
    return decision


def decisions(task: Task, logits: np.ndarray) -> np.ndarray:
    """One comparable decision per document from truncated logits, for agreement checks.

    Multilabel: which labels pass 0.5; multiclass: the label index; multihead: every head's
    class (which also fixes Celadon's none / mild / toxic). Returned as a ``[n, k]`` int array:
    two documents' decisions agree when their rows are equal.
    """
    if task == "multilabel":
        return (logits >= 0.0).astype(np.int64)  # sigmoid(x) >= 0.5  <=>  x >= 0
    if task == "multiclass":
        return logits.argmax(axis=-1)[:, None]
    return logits.argmax(axis=-1)
