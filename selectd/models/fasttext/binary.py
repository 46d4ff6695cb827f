"""Reader for fastText's supervised model files (.bin, and .ftz with product quantization).

Layout (little-endian), as written by fastText's ``FastText::saveModel``: magic and version, the
args block, the dictionary (words then labels, and the pruned-bucket index of .ftz files), then the
input and output matrices, each dense or product-quantized. Everything is parsed here without the
fastText library. Dense matrices are memory-mapped rather than read, so a multi-GB PreSelect model
is not copied into memory before the exporter folds or streams it out.

Every problem (truncation, wrong magic, unsupported version or model type) raises
:class:`FastTextFormatError` naming the file, at load.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from selectd.models.manifest import ModelLoadError

MAGIC = 793712314
SUPPORTED_VERSIONS = (11, 12)
LOSS_NAMES = {1: "hs", 2: "ns", 3: "softmax", 4: "ova"}
MODEL_NAMES = {1: "cbow", 2: "skipgram", 3: "supervised"}
ARG_FIELDS = ("dim", "ws", "epoch", "min_count", "neg", "word_ngrams", "loss", "model",
              "bucket", "minn", "maxn", "lr_update_rate")
ENTRY_WORD, ENTRY_LABEL = 0, 1
#: product quantizer: every sub-quantizer has 2**8 centroids
KSUB = 256


class FastTextFormatError(ModelLoadError):
    """The file is not a supported fastText supervised model; the message names file and reason."""


@dataclass
class FastTextArgs:
    dim: int
    ws: int
    epoch: int
    min_count: int
    neg: int
    word_ngrams: int
    loss: str
    model: str
    bucket: int
    minn: int
    maxn: int
    lr_update_rate: int
    t: float


@dataclass
class FastTextModel:
    path: Path
    version: int
    args: FastTextArgs
    words: list[bytes]          # vocabulary, index = word id (includes "</s>")
    labels: list[bytes]         # label strings with their prefix, index = output row
    label_counts: np.ndarray    # int64, training counts of each label (hs builds its tree from them)
    pruneidx_size: int          # -1: not pruned; >= 0: only buckets in ``pruneidx`` exist
    pruneidx: dict[int, int]    # bucket -> row offset after nwords (pruned .ftz only)
    input_matrix: np.ndarray    # float32 [nwords + rows for buckets, dim]
    output_matrix: np.ndarray   # float32 [nlabels, dim]
    quantized: bool

    @property
    def nwords(self) -> int:
        return len(self.words)


class _Reader:
    """Sequential little-endian reads over a memory map, with truncation reported by offset."""

    def __init__(self, path: Path):
        self.path = path
        try:
            with open(path, "rb") as handle:
                self.data = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:  # ValueError: empty file
            raise FastTextFormatError(f"{path}: cannot read: {exc}") from exc
        self.size = len(self.data)
        self.offset = 0

    def fail(self, reason: str) -> FastTextFormatError:
        return FastTextFormatError(f"{self.path}: {reason}")

    def skip(self, nbytes: int, what: str) -> int:
        """Advance past ``nbytes``; return where they start."""
        start, end = self.offset, self.offset + nbytes
        if nbytes < 0 or end > self.size:
            raise self.fail(f"truncated: {what} needs {nbytes} bytes at offset {start}, "
                            f"file has {self.size}")
        self.offset = end
        return start

    def unpack(self, fmt: str, what: str) -> tuple:
        size = struct.calcsize("<" + fmt)
        start = self.skip(size, what)
        return struct.unpack_from("<" + fmt, self.data, start)

    def token(self, what: str) -> bytes:
        nul = self.data.find(b"\0", self.offset)
        if nul < 0:
            raise self.fail(f"truncated: {what} has no terminating NUL")
        token = self.data[self.offset:nul]
        self.offset = nul + 1
        return token

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        if count < 0:
            raise self.fail(f"negative size {count} for {what}")
        start = self.skip(count * np.dtype(dtype).itemsize, what)
        return np.frombuffer(self.data, dtype=dtype, count=count, offset=start)


def _read_args(reader: _Reader, version: int) -> FastTextArgs:
    values = reader.unpack("12i", "args")
    raw = dict(zip(ARG_FIELDS, values))
    (t,) = reader.unpack("d", "args.t")
    if raw["model"] not in MODEL_NAMES:
        raise reader.fail(f"unknown model type {raw['model']}")
    if MODEL_NAMES[raw["model"]] != "supervised":
        raise reader.fail(f"{MODEL_NAMES[raw['model']]} model: only supervised (classifier) models "
                          "can be exported")
    if raw["loss"] not in LOSS_NAMES:
        raise reader.fail(f"unknown loss {raw['loss']}")
    if raw["dim"] <= 0 or raw["bucket"] < 0 or raw["word_ngrams"] < 1:
        raise reader.fail(f"implausible args dim={raw['dim']} bucket={raw['bucket']} "
                          f"wordNgrams={raw['word_ngrams']}")
    if version == 11:  # fastText 0.1 files: supervised models had no char n-grams
        raw["maxn"] = 0
    raw["loss"] = LOSS_NAMES[raw["loss"]]
    raw["model"] = MODEL_NAMES[raw["model"]]
    return FastTextArgs(**raw, t=t)


def _read_dictionary(reader: _Reader) -> tuple[list[bytes], list[bytes], np.ndarray, int, dict[int, int]]:
    size, nwords, nlabels = reader.unpack("3i", "dictionary header")
    _ntokens, pruneidx_size = reader.unpack("2q", "dictionary header")
    if size < 0 or nwords < 0 or nlabels <= 0 or nwords + nlabels != size:
        raise reader.fail(f"inconsistent dictionary sizes (size {size}, nwords {nwords}, nlabels {nlabels})")
    words: list[bytes] = []
    labels: list[bytes] = []
    label_counts = np.empty(nlabels, dtype=np.int64)
    for index in range(size):
        token = reader.token(f"dictionary entry {index} of {size}")
        count, entry_type = reader.unpack("qb", f"dictionary entry {index}")
        if entry_type == ENTRY_WORD and index < nwords:
            words.append(token)
        elif entry_type == ENTRY_LABEL and index >= nwords:
            label_counts[index - nwords] = count
            labels.append(token)
        else:
            raise reader.fail(f"dictionary entry {index} ({token[:40]!r}) has type {entry_type}, "
                              "expected words first, then labels")
    pruneidx: dict[int, int] = {}
    if pruneidx_size > 0:
        pairs = reader.array("<i4", 2 * pruneidx_size, "pruned bucket index").reshape(-1, 2)
        pruneidx = dict(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist()))
    return words, labels, label_counts, pruneidx_size, pruneidx


def _read_dense(reader: _Reader, what: str) -> np.ndarray:
    rows, cols = reader.unpack("2q", f"{what} shape")
    if rows < 0 or cols <= 0:
        raise reader.fail(f"{what}: bad shape {rows} x {cols}")
    return reader.array("<f4", rows * cols, what).reshape(rows, cols)


def _read_pq(reader: _Reader, what: str) -> tuple[int, int, int, int, np.ndarray]:
    dim, nsubq, dsub, lastdsub = reader.unpack("4i", f"{what} product quantizer")
    if dim <= 0 or nsubq <= 0 or dsub <= 0 or lastdsub <= 0 or (nsubq - 1) * dsub + lastdsub != dim:
        raise reader.fail(f"{what}: inconsistent product quantizer (dim {dim}, nsubq {nsubq}, "
                          f"dsub {dsub}, lastdsub {lastdsub})")
    centroids = reader.array("<f4", dim * KSUB, f"{what} centroids")
    return dim, nsubq, dsub, lastdsub, centroids


def _dequantize(codes: np.ndarray, dim: int, nsubq: int, dsub: int, lastdsub: int,
                centroids: np.ndarray) -> np.ndarray:
    """W[r, s*dsub + j] = centroids[s*256*dsub + code[r, s]*d_s + j] (d_s = lastdsub for the last s)."""
    rows = codes.shape[0]
    matrix = np.empty((rows, dim), dtype=np.float32)
    for s in range(nsubq):
        width = lastdsub if s == nsubq - 1 else dsub
        table = centroids[s * KSUB * dsub: s * KSUB * dsub + KSUB * width].reshape(KSUB, width)
        matrix[:, s * dsub: s * dsub + width] = table[codes[:, s]]
    return matrix


def _read_quantized(reader: _Reader, what: str) -> np.ndarray:
    (qnorm,) = reader.unpack("?", f"{what} qnorm flag")
    rows, cols = reader.unpack("2q", f"{what} shape")
    (codesize,) = reader.unpack("i", f"{what} code size")
    if rows < 0 or cols <= 0 or codesize < 0 or (rows and codesize % rows):
        raise reader.fail(f"{what}: bad quantized shape {rows} x {cols} with {codesize} codes")
    codes = reader.array("u1", codesize, f"{what} codes")
    dim, nsubq, dsub, lastdsub, centroids = _read_pq(reader, what)
    if dim != cols or codesize != rows * nsubq:
        raise reader.fail(f"{what}: quantizer dim {dim} / {nsubq} sub-quantizers do not match "
                          f"{rows} x {cols} with {codesize} codes")
    matrix = _dequantize(codes.reshape(rows, nsubq), dim, nsubq, dsub, lastdsub, centroids)
    if qnorm:
        norm_codes = reader.array("u1", rows, f"{what} norm codes")
        ndim, nnsubq, ndsub, nlastdsub, norm_centroids = _read_pq(reader, f"{what} norms")
        if ndim != 1:
            raise reader.fail(f"{what}: norm quantizer has dim {ndim}, expected 1")
        norms = _dequantize(norm_codes.reshape(rows, 1), 1, nnsubq, ndsub, nlastdsub, norm_centroids)
        matrix *= norms
    return matrix


def read_model(path: Path | str) -> FastTextModel:
    """Parse a fastText supervised model file; raise FastTextFormatError on any problem."""
    path = Path(path)
    reader = _Reader(path)
    magic, version = reader.unpack("2i", "header")
    if magic != MAGIC:
        raise reader.fail(f"not a fastText model (magic {magic}, expected {MAGIC})")
    if version not in SUPPORTED_VERSIONS:
        raise reader.fail(f"unsupported fastText file version {version} (supported: "
                          f"{', '.join(map(str, SUPPORTED_VERSIONS))})")
    args = _read_args(reader, version)
    words, labels, label_counts, pruneidx_size, pruneidx = _read_dictionary(reader)

    (quant_input,) = reader.unpack("?", "input quantization flag")
    input_matrix = _read_quantized(reader, "input matrix") if quant_input else _read_dense(reader, "input matrix")
    (quant_output,) = reader.unpack("?", "output quantization flag")
    if quant_output and quant_input:
        output_matrix = _read_quantized(reader, "output matrix")
    else:
        output_matrix = _read_dense(reader, "output matrix")
    if reader.offset != reader.size:
        raise reader.fail(f"{reader.size - reader.offset} unexpected trailing bytes after the output matrix")

    expected_rows = len(words) + (args.bucket if pruneidx_size < 0 else pruneidx_size)
    if input_matrix.shape != (expected_rows, args.dim):
        raise reader.fail(f"input matrix is {input_matrix.shape[0]} x {input_matrix.shape[1]}, expected "
                          f"{expected_rows} x {args.dim} (nwords + buckets)")
    if output_matrix.shape != (len(labels), args.dim):
        raise reader.fail(f"output matrix is {output_matrix.shape[0]} x {output_matrix.shape[1]}, expected "
                          f"{len(labels)} x {args.dim} (labels x dim)")
    if pruneidx and (min(pruneidx.values()) < 0 or max(pruneidx.values()) >= pruneidx_size):
        raise reader.fail("pruned bucket index points outside the input matrix")
    return FastTextModel(path=path, version=version, args=args, words=words, labels=labels,
                         label_counts=label_counts, pruneidx_size=pruneidx_size, pruneidx=pruneidx,
                         input_matrix=input_matrix, output_matrix=output_matrix, quantized=quant_input)
