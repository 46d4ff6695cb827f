"""The local stores' building blocks: an append-only log of claimed keys on disk, and the
in-memory index of them.

Why not a B-tree (SQLite): dedup keys are random, so every key of a batch lands on a different
leaf page; SQLite in WAL mode measured ~46 KB written per document (14 MinHash keys) at 100,000
documents, and 170 ms per batch of 1,000 at 200,000. Here a batch is one sequential append
(about 190 bytes per document) and one ``fdatasync``, and lookups run against sorted numpy runs
in memory (12 bytes per key: the key and a document number).

:class:`KeyLog`: records of (keys, the number of the document that claimed each, the ids of
those documents) in segment files ``<name>-NNNNNNNN.log``, each record checksummed (CRC-32) so a
record torn by a power cut is cut off when the log is opened. The directory is locked
(``flock``) by one process at a time; the lock goes away with the process, ``kill -9`` included.

:class:`SortedKeys`: key -> document number, as a few sorted runs merged geometrically (like
the levels of an LSM tree, in memory); a batch lookup is one ``searchsorted`` per run.
"""
from __future__ import annotations

import fcntl
import mmap
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from selectd.arrays import GrowingArray
from selectd.dedup.store import StoreError, StoreOpenError

_HEADER = struct.Struct("<4sIIQII")  # magic, documents, keys, first document, payload bytes, payload CRC-32
_MAGIC = b"SDK1"
#: document numbers are stored as uint32
MAX_DOCUMENTS = 2**32 - 1


@dataclass
class Record:
    """One claim's new keys: ``key_docs[i]`` is the number of the document that claimed ``keys[i]``;
    documents ``first_doc .. first_doc + len(ids) - 1`` are the claiming documents, in order."""

    first_doc: int
    keys: np.ndarray      # uint64
    key_docs: np.ndarray  # uint32, global document numbers
    ids: list[str]

    def encode(self) -> bytes:
        encoded = [doc_id.encode("utf-8", "surrogatepass") for doc_id in self.ids]
        payload = b"".join([self.keys.astype("<u8").tobytes(), (self.key_docs - self.first_doc).astype("<u4").tobytes(),
                            np.array([len(e) for e in encoded], dtype="<u4").tobytes(), *encoded])
        header = _HEADER.pack(_MAGIC, len(self.ids), len(self.keys), self.first_doc, len(payload), zlib.crc32(payload))
        return header + payload


def _decode(header: bytes, payload: bytes) -> Record:
    _, n_docs, n_keys, first_doc, _, _ = _HEADER.unpack(header)
    keys = np.frombuffer(payload, dtype="<u8", count=n_keys).astype(np.uint64)
    key_docs = np.frombuffer(payload, dtype="<u4", count=n_keys, offset=8 * n_keys).astype(np.uint32) + np.uint32(first_doc)
    lengths = np.frombuffer(payload, dtype="<u4", count=n_docs, offset=12 * n_keys).tolist()
    ids, position = [], 12 * n_keys + 4 * n_docs
    for length in lengths:
        ids.append(payload[position:position + length].decode("utf-8", "surrogatepass"))
        position += length
    return Record(first_doc, keys, key_docs, ids)


class SortedKeys:
    """key -> document number for unique uint64 keys (see the module docstring)."""

    def __init__(self) -> None:
        self.runs: list[tuple[np.ndarray, np.ndarray]] = []

    def __len__(self) -> int:
        return sum(len(keys) for keys, _ in self.runs)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Document number of each key, -1 where absent."""
        found = np.full(len(keys), -1, dtype=np.int64)
        for run_keys, run_docs in self.runs:
            at = np.minimum(np.searchsorted(run_keys, keys), len(run_keys) - 1)
            hit = run_keys[at] == keys
            found[hit] = run_docs[at[hit]]
        return found

    def add(self, keys: np.ndarray, docs: np.ndarray) -> None:
        """Add keys that are absent (and unique among themselves)."""
        if not len(keys):
            return
        order = np.argsort(keys)
        self.runs.append((keys[order], docs[order].astype(np.uint32)))
        # merge while the newest run is at least half its predecessor: O(log n) runs
        while len(self.runs) >= 2 and 2 * len(self.runs[-1][0]) >= len(self.runs[-2][0]):
            (k1, d1), (k2, d2) = self.runs.pop(-2), self.runs.pop()
            merged = np.concatenate([k1, k2])
            order = np.argsort(merged, kind="stable")  # two sorted runs: a merge
            self.runs.append((merged[order], np.concatenate([d1, d2])[order]))

    def drop_before(self, doc: int) -> None:
        """Forget the keys of documents numbered below ``doc``."""
        kept = [(keys[docs >= doc], docs[docs >= doc]) for keys, docs in self.runs]
        self.runs = [run for run in kept if len(run[0])]


class KeyLog:
    """The append-only log of one local store (see the module docstring).

    :meth:`replay` reads back what is on disk; :meth:`append` writes one record and syncs it
    before returning; :meth:`document_id` reads a claiming document's id
    back from the log. Ids are located for documents numbered ``first_located`` and above.
    """

    def __init__(self, directory: str | Path, name: str, what: str):
        self.directory = Path(directory)
        self.name = name
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = open(self.directory / f"{name}.lock", "a+b")
        except OSError as exc:
            raise StoreOpenError(f"cannot open the {what} in {str(self.directory)!r}: {exc}") from exc
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            self._lock.close()
            raise StoreOpenError(f"cannot open the {what} in {str(self.directory)!r}: another process holds it") from exc
        self.segments = sorted(int(p.stem.rsplit("-", 1)[1]) for p in self.directory.glob(f"{name}-*.log"))
        self.next_doc = 0
        self.first_located = 0
        self._id_offsets = GrowingArray(np.int64)   # (segment << 40) | offset of each located id
        self._id_lengths = GrowingArray(np.int64)
        self._fd: int | None = None
        self._readers: dict[int, int] = {}
        self._segment_start: dict[int, int] = {}  # segment -> number of its first document
        self.broken: str | None = None

    def _path(self, segment: int) -> Path:
        return self.directory / f"{self.name}-{segment:08d}.log"

    def replay(self, apply: Callable[[Record], None]) -> None:
        """Call ``apply`` on every record on disk, oldest first (cutting off a torn tail), then
        open the log for appending. Call once, before :meth:`append`."""
        started = False  # numbering starts at the first record kept (older segments may be deleted)
        for segment in self.segments:
            path = self._path(segment)
            with open(path, "rb") as f:  # mapped, not read: a segment can be gigabytes
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if os.fstat(f.fileno()).st_size else b""
            position = 0
            while position + _HEADER.size <= len(data):
                magic, n_docs, n_keys, first_doc, size, crc = _HEADER.unpack_from(data, position)
                payload = data[position + _HEADER.size:position + _HEADER.size + size]
                if magic != _MAGIC or len(payload) != size or zlib.crc32(payload) != crc:
                    break
                if not started:
                    self.next_doc = self.first_located = first_doc
                    started = True
                if first_doc != self.next_doc:
                    break
                self._segment_start.setdefault(segment, first_doc)
                record = _decode(data[position:position + _HEADER.size], payload)
                self._locate(segment, position + _HEADER.size + 12 * n_keys + 4 * n_docs, record.ids)
                apply(record)
                position += _HEADER.size + size
            size = len(data)
            if isinstance(data, mmap.mmap):
                data.close()
            if position != size:  # a torn or corrupt tail: keep what is whole
                os.truncate(path, position)
        if not self.segments:
            self.segments = [1]
        for segment in self.segments:  # empty segments start where the next record would
            self._segment_start.setdefault(segment, self.next_doc)
        self._fd = os.open(self._path(self.segments[-1]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._sync_directory()

    def _locate(self, segment: int, ids_start: int, ids: Sequence[str]) -> None:
        lengths = np.fromiter((len(i.encode("utf-8", "surrogatepass")) for i in ids), dtype=np.int64, count=len(ids))
        starts = ids_start + np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(ids) else lengths
        self._id_offsets.extend((segment << 40) | starts)
        self._id_lengths.extend(lengths)
        self.next_doc += len(ids)

    def append(self, record: Record) -> None:
        """Write and sync one record; on failure nothing of it remains and :class:`StoreError` is raised."""
        if self.broken:
            raise StoreError(self.broken)
        if not record.ids:
            return  # nothing claimed: nothing to keep
        if record.first_doc + len(record.ids) > MAX_DOCUMENTS:
            raise StoreError(f"the store in {str(self.directory)!r} is full ({MAX_DOCUMENTS} documents)")
        data = record.encode()
        start = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(f"short write ({written} of {len(data)} bytes)")
            os.fdatasync(self._fd)
        except OSError as exc:
            try:
                os.ftruncate(self._fd, start)
            except OSError as truncate_error:  # the next open cuts the torn record off by its checksum
                self.broken = f"log {self._path(self.segments[-1])} needs reopening: {truncate_error}"
            raise StoreError(f"cannot write the dedup log in {str(self.directory)!r}: {exc}") from exc
        self._locate(self.segments[-1], start + _HEADER.size + 12 * len(record.keys) + 4 * len(record.ids), record.ids)

    def document_id(self, doc: int) -> str:
        """The id of claiming document ``doc`` (located: ``doc >= first_located``)."""
        index = doc - self.first_located
        location, length = int(self._id_offsets.values[index]), int(self._id_lengths.values[index])
        segment, offset = location >> 40, location & ((1 << 40) - 1)
        reader = self._readers.get(segment)
        if reader is None:
            reader = self._readers[segment] = os.open(self._path(segment), os.O_RDONLY)
        try:
            return os.pread(reader, length, offset).decode("utf-8", "surrogatepass")
        except OSError as exc:
            raise StoreError(f"cannot read the dedup log in {str(self.directory)!r}: {exc}") from exc

    def rotate(self) -> None:
        """Continue in a new segment (the Bloom store, after a snapshot)."""
        os.close(self._fd)
        self.segments.append(self.segments[-1] + 1)
        self._segment_start[self.segments[-1]] = self.next_doc
        self._fd = os.open(self._path(self.segments[-1]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._sync_directory()

    def forget_ids_before(self, doc: int) -> None:
        """Stop locating the ids of documents numbered below ``doc``."""
        cut = min(doc, self.next_doc) - self.first_located
        if cut > 0:
            self._id_offsets = _tail(self._id_offsets, cut)
            self._id_lengths = _tail(self._id_lengths, cut)
            self.first_located += cut

    def delete_segments_before(self, doc: int) -> None:
        """Delete the segments holding only documents numbered below ``doc`` (never the current one)."""
        while len(self.segments) > 1 and self._segment_start[self.segments[1]] <= doc:
            old = self.segments.pop(0)
            if old in self._readers:
                os.close(self._readers.pop(old))
            self._path(old).unlink(missing_ok=True)

    def disk_bytes(self) -> int:
        return sum(self._path(s).stat().st_size for s in self.segments if self._path(s).exists())

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        for fd in [self._fd, *self._readers.values()]:
            if fd is not None:
                os.close(fd)
        self._fd, self._readers = None, {}
        if not self._lock.closed:
            self._lock.close()  # releases the flock


def _tail(array: GrowingArray, cut: int) -> GrowingArray:
    rest = GrowingArray(array.values.dtype)
    rest.extend(array.values[cut:])
    return rest
