"""Run an exported fastText model directory (``selectd.tools.fasttext.export`` writes one).

A fastText model directory holds ``table.bin`` (the input rows, or ``W · Oᵀ`` when folded, as raw
float32: the host sums each document's rows, see ``selectd/tools/fasttext/graph.py``), ``model.onnx``
(the output layer from the mean row), ``vocab.txt`` (the vocabulary as raw bytes, one word a line:
words never contain a newline), ``pruneidx.txt`` for pruned .ftz models (``bucket row`` a line),
and ``manifest.json`` (args, labels, preprocessing profile, sha256 of each file). A folded model
also keeps ``input.bin`` (W) and ``output.bin`` (the output rows its loss uses), both raw float32,
for long documents.

Why long documents take W: fastText adds a document's rows of W in float32, one after the other
(``Vector::addRow``), and that sum drifts from the exact one as it grows (relative error about
2^-24 · sqrt(ids)): on a 520 KB, 110,000-id document of a dim-100 word-bigram model native
fastText's probabilities move 2e-5–4e-5 from the exact ones. The folded table's sum (in float64,
rounded once) is the exact one, so for documents of more than :data:`FOLDED_MAX_IDS` ids the host
repeats fastText's own arithmetic instead: W's rows in float32 in fastText's order, times
float32(1 / ids), then each output row's float32 dot product, one term after the other. Below that
length the two differ by under 2e-6; above it they are equal to float32 rounding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from selectd.models.fasttext.features import make_featurizer
from selectd.models.manifest import Manifest, ModelLoadError, load_manifest
from selectd.models.runtime import ExecutionProvider, make_session

MANIFEST_KIND = "fasttext"
ONNX_NAME = "model.onnx"
TABLE_NAME = "table.bin"
VOCAB_NAME = "vocab.txt"
PRUNEIDX_NAME = "pruneidx.txt"
INPUT_NAME = "input.bin"
OUTPUT_NAME = "output.bin"
#: documents with more ids than this are summed as fastText sums them (module docstring), not
#: through the folded table; measured on real text with a dim-100 bigram model: the folded sum stays
#: within 1.6e-6 of native below 8,192 ids and drifts to 4e-5 above 32,000
FOLDED_MAX_IDS = 8192
#: how fastText files spell labels in the manifest (bytes that are not UTF-8 survive the round trip)
LABEL_ENCODING = ("utf-8", "surrogateescape")
#: the graph's one input: float32 [batch, width], each document's mean table row
HIDDEN_INPUT = "hidden"


def _read_vocabulary(manifest: Manifest, nwords: int) -> list[bytes]:
    path = manifest.path(VOCAB_NAME)
    data = path.read_bytes()
    words = data.split(b"\n") if nwords else []
    if len(words) != nwords:
        raise ModelLoadError(f"{path}: {len(words)} words, the manifest says {nwords}")
    return words


def _read_pruneidx(manifest: Manifest, size: int) -> dict[int, int]:
    if size < 0:
        return {}
    path = manifest.path(PRUNEIDX_NAME)
    try:
        pairs = np.loadtxt(path, dtype=np.int64, ndmin=2) if size else np.empty((0, 2), dtype=np.int64)
    except ValueError as exc:
        raise ModelLoadError(f"{path}: unreadable pruned bucket index: {exc}") from exc
    if pairs.shape != (size, 2):
        raise ModelLoadError(f"{path}: {pairs.shape[0]} entries, the manifest says {size}")
    return dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist()))


def _read_table(manifest: Manifest, rows: int, width: int, name: str = TABLE_NAME) -> np.ndarray:
    """A row table, memory-mapped: replicas on one host share its pages, and a multi-GB table
    costs no load time."""
    path = manifest.path(name)
    if not isinstance(width, int) or path.stat().st_size != rows * width * 4:
        raise ModelLoadError(f"{path}: {path.stat().st_size} bytes, not the {rows} rows of {width} float32 "
                             f"that the manifest and {ONNX_NAME} describe")
    return np.memmap(path, dtype="<f4", mode="r", shape=(rows, width))


class FastTextOnnx:
    """An exported fastText model: texts in, the probability of every label out."""

    def __init__(self, model_dir: Path | str, provider: ExecutionProvider = "cpu", threads: int = 1,
                 batch_size: int = 64, featurizer: str = "auto"):
        self.manifest = load_manifest(model_dir, expected_kind=MANIFEST_KIND)
        meta = self.manifest.metadata
        manifest_file = self.manifest.directory / "manifest.json"
        try:
            args = meta["args"]
            self.labels: list[str] = list(meta["labels"])
            self.profile: str = meta["profile"]
            nwords, pruneidx_size, table_rows = int(meta["nwords"]), int(meta["pruneidx_size"]), int(meta["table_rows"])
            self.folded = bool(meta["folded"])
            featurizer_args = dict(bucket=int(args["bucket"]), minn=int(args["minn"]), maxn=int(args["maxn"]),
                                   word_ngrams=int(args["word_ngrams"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{manifest_file}: incomplete fastText metadata ({exc!r})") from exc
        graph_file = self.manifest.path(ONNX_NAME)
        self.session = make_session(graph_file, provider, threads)
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [HIDDEN_INPUT]:
            raise ModelLoadError(f"{graph_file}: the graph takes {[i.name for i in inputs]}, not [{HIDDEN_INPUT!r}]; "
                                 f"it was exported by an older selectd: export the .bin/.ftz again")
        expected_rows = nwords + (featurizer_args["bucket"] if pruneidx_size < 0 else pruneidx_size)
        if table_rows != expected_rows:
            raise ModelLoadError(f"{manifest_file}: table_rows {table_rows} does not match nwords + buckets "
                                 f"= {expected_rows}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.featurizer = make_featurizer(
            _read_vocabulary(self.manifest, nwords),
            [label.encode(*LABEL_ENCODING) for label in self.labels], featurizer,
            pruneidx_size=pruneidx_size, pruneidx=_read_pruneidx(self.manifest, pruneidx_size),
            **featurizer_args)
        width = inputs[0].shape[-1]
        if len(outputs) != 1 or outputs[0].shape[-1] != len(self.labels):
            raise ModelLoadError(f"{graph_file}: output does not have one column per label "
                                 f"({len(self.labels)} labels in the manifest)")
        self.table = _read_table(self.manifest, table_rows, width)
        if self.folded:
            if INPUT_NAME not in self.manifest.files:
                raise ModelLoadError(f"{manifest_file}: no {INPUT_NAME}: exported by an older selectd, whose folded "
                                     f"models drift from fastText on long documents; export the .bin/.ftz again")
            self.input_rows = _read_table(self.manifest, table_rows, int(args["dim"]), INPUT_NAME)
            self.output_rows = np.array(_read_table(self.manifest, width, int(args["dim"]), OUTPUT_NAME))

    @property
    def version(self) -> str:
        return self.manifest.version

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), nlabels]; a row of NaN where fastText makes no prediction (no features)."""
        ids, counts = self.featurizer.featurize(texts)
        # fastText's hidden vector: the sum of the document's rows times float32(1 / count)
        sums = self.featurizer.sum_rows(self.table, ids, counts, in_float64=self.folded)
        hidden = sums * (1.0 / np.maximum(counts, 1)).astype(np.float32)[:, None]
        if self.folded and (long := np.flatnonzero(counts > FOLDED_MAX_IDS)).size:
            hidden[long] = self._native_logits(ids, counts, long)
        scored = np.flatnonzero(counts)
        hidden = hidden[scored]
        probs = np.full((len(texts), len(self.labels)), np.nan, dtype=np.float32)
        for start in range(0, len(scored), self.batch_size):
            (probs[scored[start:start + self.batch_size]],) = self.session.run(
                None, {HIDDEN_INPUT: hidden[start:start + self.batch_size]})
        return probs

    def _native_logits(self, ids: np.ndarray, counts: np.ndarray, docs: np.ndarray) -> np.ndarray:
        """The folded graph's input (its logits) for ``docs``, computed as fastText computes them
        (module docstring): float32 [len(docs), width]."""
        ends = np.cumsum(counts)
        own_ids = np.concatenate([ids[ends[d] - counts[d]:ends[d]] for d in docs])
        sums = self.featurizer.sum_rows(self.input_rows, own_ids, counts[docs], in_float64=False)
        hidden = sums * (1.0 / counts[docs]).astype(np.float32)[:, None]
        # DenseMatrix::dotRow: d += O[i, j] * hidden[j], each product rounded, then added, in order
        products = hidden[:, None, :] * self.output_rows[None, :, :]
        return np.cumsum(products, axis=2, dtype=np.float32)[:, :, -1]
