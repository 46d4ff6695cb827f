"""JSONL source for ``selectd score``: one record per line, same parse and validation as Kafka.

The input is a file or standard input (``-``), plain, gzip or zstandard-compressed, told apart by
their first bytes (so ``.jsonl.gz``, ``.json.zst`` and a compressed stream on stdin all work, as
datatrove's and dolma's readers take them). zstandard needs the ``zstandard`` package
(``pip install 'selectd[codecs]'``).
"""
from __future__ import annotations

import gzip
import io
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from selectd.records import Record

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
STDIN = "-"


class InputError(Exception):
    """The input cannot be read (missing, or compressed with a codec that is not installed)."""


def _decompressed(raw: io.BufferedReader, name: str) -> BinaryIO:
    head = raw.peek(4)[:4]
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=raw, mode="rb")
    if head == ZSTD_MAGIC:
        try:
            import zstandard
        except ImportError:
            raise InputError(f"{name}: zstandard-compressed, and the zstandard package is not installed "
                             f"(pip install 'selectd[codecs]')") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True))
    return raw


@contextmanager
def open_input(source: str | Path) -> Iterator[tuple[BinaryIO, str]]:
    """``(lines, name)``: the input's decompressed bytes and the name its records carry as topic
    (the file name, or ``stdin``)."""
    if str(source) == STDIN:
        yield _decompressed(sys.stdin.buffer, "stdin"), "stdin"
        return
    path = Path(source)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror}") from None
    with raw:
        yield _decompressed(raw, str(path)), path.name


def read_batches(lines: BinaryIO, name: str, batch_size: int) -> Iterator[list[Record]]:
    """Every line (blank ones included, so each input line yields one output) as a Record whose
    topic is ``name`` and offset the 0-based line index."""
    batch: list[Record] = []
    for index, line in enumerate(lines):
        batch.append(Record(name, 0, index, None, line.rstrip(b"\r\n")))
        if len(batch) >= batch_size:
            yield batch
            batch = []
    if batch:
        yield batch
