"""Runtime pieces shared by every Hugging Face model family (sequence classifiers, causal LMs).

No torch needed; the daemon imports these (the export side is ``selectd.tools.hf_export``):

- :func:`load_tokenizer` reads a ``tokenizer.json`` with the ``tokenizers`` library and turns its
  own truncation / padding off: the scorer decides how long documents are cut or windowed.
- :func:`special_tokens` finds the ids a tokenizer wraps a single sequence in ([CLS] … [SEP],
  <s> … </s>, BOS …), so windows of a long document can each be wrapped like a whole one.
- :func:`check_vocabulary` / :func:`probe_embedding_rows` detect at load a tokenizer that does not
  belong to the model (ids beyond the embedding table, or a table much larger than the
  vocabulary), instead of silently scoring garbage.
- :func:`token_capped_batches` groups documents by token length so a run pads little (at most a
  given share, when asked) and never exceeds a token budget; :func:`pad_batch` builds the
  ``input_ids`` / ``attention_mask`` arrays.
- :func:`window_spans` cuts a token sequence into (overlapping) windows for long documents.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Mapping, Sequence

import numpy as np

from selectd.models.manifest import ModelLoadError

if TYPE_CHECKING:  # pragma: no cover
    import onnxruntime as ort
    from tokenizers import Tokenizer

TOKENIZER_FILE = "tokenizer.json"

#: how many embedding rows beyond the tokenizer's vocabulary are still plausible padding
#: (DeBERTa-v3: 128,100 rows for 128,001 tokens; Pythia: 50,304 for 50,277; Qwen2: +0.3 %)
VOCAB_PADDING_SLACK_ROWS = 128
VOCAB_PADDING_SLACK_FRACTION = 0.01


# --- tokenizer ------------------------------------------------------------------------------

def load_tokenizer(path: Path | str) -> "Tokenizer":
    """Load ``tokenizer.json`` (a file, or a directory holding one) with truncation and padding off.

    Raises :class:`ModelLoadError` naming the file when it is missing or not a tokenizer.
    """
    from tokenizers import Tokenizer

    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path}: tokenizer file not found")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for malformed files
        raise ModelLoadError(f"{path}: not a Hugging Face tokenizers file: {exc}") from exc
    if tokenizer.get_vocab_size(with_added_tokens=True) == 0:
        raise ModelLoadError(f"{path}: tokenizer has an empty vocabulary")
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


@dataclass(frozen=True)
class SpecialTokens:
    """Ids the tokenizer puts around one sequence, and the id used for padding."""

    prefix: tuple[int, ...]
    suffix: tuple[int, ...]
    pad_id: int

    @property
    def count(self) -> int:
        return len(self.prefix) + len(self.suffix)

    def wrap(self, content: Sequence[int]) -> list[int]:
        return [*self.prefix, *content, *self.suffix]


def special_tokens(tokenizer: "Tokenizer", pad_token: str | None = None, source: str = TOKENIZER_FILE) -> SpecialTokens:
    """Derive the wrapping of a single sequence from the tokenizer's own post-processor.

    A probe word is encoded with and without special tokens; what comes before its ids is the
    prefix, what comes after is the suffix. ``pad_token`` (e.g. "[PAD]") overrides the pad id the
    tokenizer.json declares; without either, the pad id is 0 (masked out by attention anyway).
    """
    probe = "hello"
    bare = tokenizer.encode(probe, add_special_tokens=False).ids
    full = tokenizer.encode(probe, add_special_tokens=True).ids
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i:i + len(bare)] == bare), None)
    if not bare or start is None:
        raise ModelLoadError(f"{source}: cannot locate the text inside the tokenizer's special-token template")
    if pad_token is not None:
        pad_id = tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ModelLoadError(f"{source}: pad token {pad_token!r} is not in the vocabulary")
    else:
        pad_id = (tokenizer.padding or {}).get("pad_id", 0)
    return SpecialTokens(tuple(full[:start]), tuple(full[start + len(bare):]), int(pad_id))


def tokenizer_id_count(tokenizer: "Tokenizer") -> int:
    """Highest id the tokenizer can produce, plus one (added tokens may leave gaps in the ids)."""
    return max(tokenizer.get_vocab(with_added_tokens=True).values()) + 1


def check_vocabulary(tokenizer_size: int, model_rows: int, source: str) -> None:
    """Fail when a tokenizer of ``tokenizer_size`` ids (:func:`tokenizer_id_count`) cannot belong to a model with ``model_rows``.

    Ids beyond the embedding table are an out-of-range lookup; a table much larger than the
    vocabulary means the tokenizer is another model's (e.g. a BERT tokenizer, 30,522 ids, next to
    a RoBERTa model, 50,265 rows), which would run but score garbage.
    """
    if tokenizer_size > model_rows:
        raise ModelLoadError(
            f"{source}: tokenizer/model vocabulary mismatch: the tokenizer has {tokenizer_size} ids "
            f"but the model's embedding table has only {model_rows} rows"
        )
    slack = max(VOCAB_PADDING_SLACK_ROWS, int(VOCAB_PADDING_SLACK_FRACTION * model_rows))
    if model_rows - tokenizer_size > slack:
        raise ModelLoadError(
            f"{source}: tokenizer/model vocabulary mismatch: the model's embedding table has "
            f"{model_rows} rows but the tokenizer only {tokenizer_size} ids (is it another model's tokenizer?)"
        )


def probe_embedding_rows(session: "ort.InferenceSession", model_path: Path,
                         make_feeds: Callable[[np.ndarray], Mapping[str, np.ndarray]], rows: int) -> None:
    """Check that the ONNX graph's embedding table really has ``rows`` rows.

    ONNX Runtime's CPU Gather rejects out-of-range indices, so id ``rows - 1`` must run and id
    ``rows`` must fail. The CUDA Gather reads out of range without an error (seen on an H200), so a
    session on another provider is probed through a CPU session of ``model_path``. ``make_feeds``
    builds the session inputs from an int64 ``[1, n]`` id array.
    """
    import onnxruntime as ort

    from selectd.models.runtime import make_session

    if session.get_providers()[0] != "CPUExecutionProvider":
        session = make_session(model_path, "cpu")
    source = str(model_path)
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the failing probe is expected: keep its error out of the log

    def runs(token_id: int) -> bool:
        try:
            session.run(None, dict(make_feeds(np.array([[token_id]], dtype=np.int64))), quiet)
        except Exception:  # onnxruntime raises its own RuntimeException types
            return False
        return True

    if not runs(rows - 1):
        raise ModelLoadError(f"{source}: the ONNX graph has fewer embedding rows than the {rows} its manifest records")
    if runs(rows):
        raise ModelLoadError(f"{source}: the ONNX graph has more embedding rows than the {rows} its manifest records")


# --- batching -------------------------------------------------------------------------------

def token_capped_batches(lengths: Sequence[int], max_tokens_per_run: int,
                         max_padding: float = 1.0) -> Iterator[list[int]]:
    """Indices of sequences grouped for padded runs, longest first.

    Sequences are sorted by length, so neighbours in a run have similar lengths; a run is closed
    before ``len(run) * longest_in_run`` would exceed ``max_tokens_per_run``, or before a sequence
    shorter than ``(1 - max_padding) * longest_in_run`` would join it, so at most that share of
    each row is padding (1.0, the default, never closes a run for its padding alone). A single
    sequence longer than the cap still forms a run of its own.
    """
    if max_tokens_per_run < 1:
        raise ValueError(f"max_tokens_per_run must be positive, got {max_tokens_per_run}")
    if not 0.0 <= max_padding <= 1.0:
        raise ValueError(f"max_padding must be a share in [0, 1], got {max_padding}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    run: list[int] = []
    longest = 0
    for index in order:
        if run and ((len(run) + 1) * longest > max_tokens_per_run or lengths[index] < (1.0 - max_padding) * longest):
            yield run
            run = []
        if not run:
            longest = lengths[index]
        run.append(index)
    if run:
        yield run


def pad_batch(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ``input_ids`` and ``attention_mask`` (int64, ``[len(sequences), longest]``)."""
    longest = max(len(s) for s in sequences)
    input_ids = np.full((len(sequences), longest), pad_id, dtype=np.int64)
    attention_mask = np.zeros((len(sequences), longest), dtype=np.int64)
    for row, sequence in enumerate(sequences):
        input_ids[row, :len(sequence)] = sequence
        attention_mask[row, :len(sequence)] = 1
    return input_ids, attention_mask


def window_spans(n_tokens: int, window: int, overlap: int = 0, max_windows: int | None = None) -> list[tuple[int, int]]:
    """``[start, end)`` spans of at most ``window`` tokens covering ``n_tokens``.

    Consecutive windows share ``overlap`` tokens, so a phrase cut by one boundary is whole in the
    next window. With ``max_windows`` the spans stop early: the caller can tell the document was
    not fully covered because the last span ends before ``n_tokens``. An empty sequence gets one
    empty span, so every document is scored.
    """
    if window < 1 or not 0 <= overlap < window:
        raise ValueError(f"need window >= 1 and 0 <= overlap < window, got window={window}, overlap={overlap}")
    if n_tokens <= window:
        return [(0, n_tokens)]
    step = window - overlap
    spans: list[tuple[int, int]] = []
    start = 0
    while True:
        end = min(start + window, n_tokens)
        spans.append((start, end))
        if end == n_tokens or (max_windows is not None and len(spans) >= max_windows):
            return spans
        start += step
