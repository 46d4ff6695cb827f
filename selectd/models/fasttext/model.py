"""Export a fastText model to a model directory, and run an exported one.

A fastText model directory holds ``model.onnx`` with its external ``table.bin`` (the gathered input
rows, or ``W · Oᵀ`` when folded), ``vocab.txt`` (the vocabulary as raw bytes, one word a line:
words never contain a newline), ``pruneidx.txt`` for pruned .ftz models (``bucket row`` a line),
and ``manifest.json`` (args, labels, preprocessing profile, sha256 of each file).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from selectd import preprocess
from selectd.models.fasttext.binary import FastTextModel, read_model
from selectd.models.fasttext.features import make_featurizer
from selectd.models.manifest import Manifest, ModelLoadError, load_manifest, sha256_file, write_manifest
from selectd.models.runtime import ExecutionProvider, make_session

MANIFEST_KIND = "fasttext"
ONNX_NAME = "model.onnx"
TABLE_NAME = "table.bin"
VOCAB_NAME = "vocab.txt"
PRUNEIDX_NAME = "pruneidx.txt"
#: how fastText files spell labels in the manifest (bytes that are not UTF-8 survive the round trip)
LABEL_ENCODING = ("utf-8", "surrogateescape")


def should_fold(model: FastTextModel) -> bool:
    """Fold W·Oᵀ when the output layer uses fewer rows than the model has dimensions."""
    used_rows = len(model.labels) - 1 if model.args.loss == "hs" else len(model.labels)
    return used_rows < model.args.dim


def export_model(source: Path | str, out_dir: Path | str, profile: str = "identity") -> Manifest:
    """Parse a fastText .bin/.ftz and write an exported model directory."""
    preprocess.profile(profile)  # unknown profile names fail before any work
    source = Path(source)
    out_dir = Path(out_dir)
    model = read_model(source)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "manifest.json").exists() or (out_dir / ONNX_NAME).exists():
        raise FileExistsError(f"{out_dir}: already holds an exported model; choose an empty directory")
    from selectd.models.fasttext.graph import build_graph  # onnx is an export-time dependency

    fold = should_fold(model)
    graph = build_graph(model, out_dir, fold, TABLE_NAME)
    (out_dir / ONNX_NAME).write_bytes(graph.SerializeToString())
    (out_dir / VOCAB_NAME).write_bytes(b"\n".join(model.words))
    if model.pruneidx_size >= 0:
        (out_dir / PRUNEIDX_NAME).write_text("".join(f"{b} {r}\n" for b, r in sorted(model.pruneidx.items())))
    table_rows = model.input_matrix.shape[0] + 1
    metadata: dict[str, Any] = {
        "args": dataclasses.asdict(model.args),
        "labels": [label.decode(*LABEL_ENCODING) for label in model.labels],
        "nwords": model.nwords,
        "pruneidx_size": model.pruneidx_size,
        "profile": profile,
        "folded": fold,
        "table_rows": table_rows,
        "source": {"name": source.name, "sha256": sha256_file(source), "version": model.version,
                   "quantized": model.quantized},
    }
    return write_manifest(out_dir, MANIFEST_KIND, metadata)


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


class FastTextOnnx:
    """An exported fastText model: texts in, the probability of every label out."""

    def __init__(self, model_dir: Path | str, provider: ExecutionProvider = "cpu", threads: int = 1,
                 batch_size: int = 64, max_padded_ids: int = 1 << 20, featurizer: str = "auto"):
        self.manifest = load_manifest(model_dir, expected_kind=MANIFEST_KIND)
        meta = self.manifest.metadata
        manifest_file = self.manifest.directory / "manifest.json"
        try:
            args = meta["args"]
            self.labels: list[str] = list(meta["labels"])
            self.profile: str = meta["profile"]
            nwords, pruneidx_size, table_rows = int(meta["nwords"]), int(meta["pruneidx_size"]), int(meta["table_rows"])
            featurizer_args = dict(bucket=int(args["bucket"]), minn=int(args["minn"]), maxn=int(args["maxn"]),
                                   word_ngrams=int(args["word_ngrams"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{manifest_file}: incomplete fastText metadata ({exc!r})") from exc
        expected_rows = nwords + (featurizer_args["bucket"] if pruneidx_size < 0 else pruneidx_size) + 1
        if table_rows != expected_rows:
            raise ModelLoadError(f"{manifest_file}: table_rows {table_rows} does not match nwords + buckets + 1 "
                                 f"= {expected_rows}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size
        self.max_padded_ids = max_padded_ids
        self.featurizer = make_featurizer(
            _read_vocabulary(self.manifest, nwords),
            [label.encode(*LABEL_ENCODING) for label in self.labels], featurizer,
            pruneidx_size=pruneidx_size, pruneidx=_read_pruneidx(self.manifest, pruneidx_size),
            **featurizer_args)
        self.session = make_session(self.manifest.path(ONNX_NAME), provider, threads)
        self.padding_id = table_rows - 1  # the table's last row is zeros
        outputs = self.session.get_outputs()
        if len(outputs) != 1 or outputs[0].shape[-1] != len(self.labels):
            raise ModelLoadError(f"{self.manifest.path(ONNX_NAME)}: output does not have one column per label "
                                 f"({len(self.labels)} labels in the manifest)")

    @property
    def version(self) -> str:
        return self.manifest.version

    def _runs(self, counts: np.ndarray) -> list[np.ndarray]:
        """Documents with features, shortest first, grouped so that one run pads little.

        A run holds at most ``batch_size`` documents and at most ``max_padded_ids`` padded ids
        (one very long document runs alone instead of padding its neighbours to its length).
        """
        scored = np.flatnonzero(counts)
        scored = scored[np.argsort(counts[scored], kind="stable")]
        runs: list[np.ndarray] = []
        begin = 0
        while begin < len(scored):
            end = min(begin + self.batch_size, len(scored))
            # lengths ascend, so the last document sets the width: shrink until it fits
            while end - begin > 1 and (end - begin) * int(counts[scored[end - 1]]) > self.max_padded_ids:
                end = begin + max(1, min(end - begin - 1, self.max_padded_ids // int(counts[scored[end - 1]])))
            runs.append(scored[begin:end])
            begin = end
        return runs

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), nlabels]; a row of NaN where fastText makes no prediction (no features)."""
        ids, counts = self.featurizer.featurize(texts)
        offsets = np.cumsum(counts) - counts
        probs = np.full((len(texts), len(self.labels)), np.nan, dtype=np.float32)
        for docs in self._runs(counts):
            lengths = counts[docs]
            width = int(lengths[-1])
            total = int(lengths.sum())
            first = np.cumsum(lengths) - lengths
            within = np.arange(total) - np.repeat(first, lengths)
            padded = np.full((len(docs), width), self.padding_id, dtype=np.int64)
            padded[np.repeat(np.arange(len(docs)), lengths), within] = ids[np.repeat(offsets[docs], lengths) + within]
            (probs[docs],) = self.session.run(None, {"ids": padded, "scale": (1.0 / lengths).astype(np.float32)})
        return probs
