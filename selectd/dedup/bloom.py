"""The Bloom store: bounded memory for a local store, at a chosen false-positive rate.

A Bloom filter (``capacity`` keys at ``false_positive_rate`` per key lookup) answers "seen
before?" in a fixed number of bits per key, but keeps no owner ids, which is what replay safety
needs: a document re-read after a crash finds its own keys in the filter. So the store also keeps
a journal (keylog.py) and an index of the keys of the last ``journal_docs`` documents with their
owners. A key is looked up in that index first (owner known: itself or another document), then
in the filter (seen, owner unknown: ``duplicate_of`` is unset). A replay reaches back at most the
batches whose offsets were not committed yet, a few batches, far fewer than ``journal_docs``
(default 100,000); a document re-read from further back would be taken for its own duplicate.

Durability: a batch's new keys are appended to the journal and synced before ``claim`` returns.
The filter lives in memory and is written whole to ``bloom.bits`` (a new file, synced, renamed
over the old) every ``checkpoint_keys`` new keys, a sequential write, where a memory-mapped file
would have the kernel write back a random page per key. The journal keeps every segment since the
last snapshot; at start the snapshot is loaded and the journal's keys are set again.

Memory: the filter (about 2.5 bytes per key at 7e-5 per key, i.e. 35 MB per million MinHash
documents at 0.1 % per document) plus about 12 bytes per key of the last ``journal_docs``
documents. Disk: the snapshot plus at most ``checkpoint_keys`` keys of journal (12 bytes each)
and ``journal_docs`` documents' worth.

Per key the false-positive rate is p; a document with k keys (14 MinHash bands) is wrongly a
duplicate with probability about 1 - (1 - p)^k. :func:`key_rate_for_documents` converts.
"""
from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np

from selectd.dedup.keylog import KeyLog, SortedKeys
from selectd.dedup.keys import KeyBatch
from selectd.dedup.local import new_record, owners_by_key
from selectd.dedup.store import DedupStore, Match, StoreError, StoreOpenError, StoreStats, resolve_claims

_MAGIC = b"selectd-bloom-v2"
_HEADER = struct.Struct("<16sQQQQ")  # magic, bits, hash functions, first document not in it, keys in it
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def key_rate_for_documents(document_rate: float, keys_per_document: int) -> float:
    """Per-key false-positive rate that makes a document of ``keys_per_document`` keys a false
    duplicate with probability ``document_rate``."""
    return 1 - (1 - document_rate) ** (1 / keys_per_document)


def bloom_size(capacity: int, rate: float) -> tuple[int, int]:
    """(bits, hash functions) of a Bloom filter for ``capacity`` keys at ``rate``; bits rounded up
    to whole 64-bit words."""
    bits = math.ceil(-capacity * math.log(rate) / math.log(2) ** 2)
    bits = (bits + 63) // 64 * 64
    return bits, max(1, round(bits / capacity * math.log(2)))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (uint64 -> uint64, a bijection spreading every input bit)."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class BloomFilter:
    """A Bloom filter in memory: ``bits`` bits, ``hashes`` positions per key by double hashing."""

    def __init__(self, bits: int, hashes: int):
        self.bits, self.hashes = bits, hashes
        self.words = np.zeros(bits // 64, dtype=np.uint64)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        """Bit positions, (len(keys), hashes): h1 + i * h2 over two mixes of the key."""
        keys = keys.astype(np.uint64)
        h1, h2 = _mix(keys), _mix(keys ^ _GOLDEN) | np.uint64(1)
        steps = np.arange(self.hashes, dtype=np.uint64)
        with np.errstate(over="ignore"):
            return (h1[:, None] + steps * h2[:, None]) % np.uint64(self.bits)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        positions = self._positions(keys)
        words = self.words[positions >> np.uint64(6)]
        return ((words >> (positions & np.uint64(63))) & np.uint64(1)).all(axis=1)

    def add(self, keys: np.ndarray) -> None:
        positions = self._positions(keys).ravel()
        np.bitwise_or.at(self.words, positions >> np.uint64(6), np.uint64(1) << (positions & np.uint64(63)))

    def fill_ratio(self) -> float:
        """Fraction of bits set (the expected false-positive rate is this to the power ``hashes``)."""
        data = self.words.view(np.uint8)
        step = 1 << 20
        return sum(int(np.unpackbits(data[i:i + step]).sum()) for i in range(0, len(data), step)) / self.bits

    def save(self, path: Path, first_unsaved: int, keys: int) -> None:
        """Write the filter to ``path`` atomically (new file, synced, renamed over the old)."""
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, self.bits, self.hashes, first_unsaved, keys))
            f.write(self.words.tobytes())
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)

    def load(self, path: Path) -> tuple[int, int]:
        """Read a saved filter; returns the first document not in it and the number of keys in it."""
        with open(path, "rb") as f:
            magic, bits, hashes, first_unsaved, keys = _HEADER.unpack(f.read(_HEADER.size))
            if magic != _MAGIC:
                raise StoreOpenError(f"{str(path)!r} is not a selectd Bloom filter")
            if (bits, hashes) != (self.bits, self.hashes):
                raise StoreOpenError(f"{str(path)!r} was sized for other capacity / false_positive_rate "
                                     f"({bits} bits, {hashes} hashes; now {self.bits}, {self.hashes})")
            if f.readinto(memoryview(self.words).cast("B")) != self.words.nbytes:
                raise StoreOpenError(f"{str(path)!r} is truncated")
        return first_unsaved, keys


class BloomStore(DedupStore):
    """A local store of bounded size (see the module docstring). ``directory`` holds
    ``bloom.bits``, ``journal-NNNNNNNN.log`` and ``journal.lock``."""

    def __init__(self, directory: str | Path, capacity: int, false_positive_rate: float,
                 journal_docs: int = 100_000, checkpoint_keys: int | None = None):
        """``checkpoint_keys``: new keys between snapshots of the filter (default: a tenth of
        ``capacity``, at least a million)."""
        if capacity < 1 or not 0 < false_positive_rate < 1 or journal_docs < 1:
            raise StoreOpenError("a Bloom store needs capacity >= 1, 0 < false_positive_rate < 1, journal_docs >= 1")
        self.filter = BloomFilter(*bloom_size(capacity, false_positive_rate))
        self.journal = KeyLog(directory, "journal", "Bloom store journal")
        self.snapshot_path = Path(directory) / "bloom.bits"
        try:
            if not self.snapshot_path.exists():  # records the sizing, which a later open must match
                self.filter.save(self.snapshot_path, 0, 0)
            self.snapshot_doc, self.keys = self.filter.load(self.snapshot_path)
        except OSError as exc:
            self.journal.close()
            raise StoreOpenError(f"cannot open the Bloom filter {str(self.snapshot_path)!r}: {exc}") from exc
        except StoreOpenError:
            self.journal.close()
            raise
        self.journal_docs = journal_docs
        self.checkpoint_keys = checkpoint_keys or max(1_000_000, capacity // 10)
        self.index = SortedKeys()  # keys of the last journal_docs documents, with their owners

        def restore(record):  # keys journaled after the snapshot are not in its bits
            if record.first_doc >= self.snapshot_doc:
                self.filter.add(record.keys)
                self.keys += len(record.keys)
            self.index.add(record.keys, record.key_docs)

        self.journal.replay(restore)
        self._keys_since_snapshot = 0
        self._forget_old()
        self.round_trips = 0

    def _forget_old(self) -> None:
        """Keep owners (and the journal) for the last ``journal_docs`` documents only, and the
        journal since the snapshot."""
        window_start = self.journal.next_doc - self.journal_docs
        self.index.drop_before(window_start)
        self.journal.forget_ids_before(window_start)
        self.journal.delete_segments_before(min(window_start, self.snapshot_doc))

    def claim(self, batch: KeyBatch, ids: Sequence[str]) -> list[Match | None]:
        seen = self.filter.contains(batch.keys)
        known = owners_by_key(self.index, self.journal, batch.keys)
        matches, claimed = resolve_claims(batch, ids, known, seen)
        record = new_record(claimed, ids, self.journal.next_doc)
        self.journal.append(record)  # synced, or StoreError with nothing kept
        self.filter.add(record.keys)
        self.index.add(record.keys, record.key_docs)
        self.keys += len(record.keys)
        self._keys_since_snapshot += len(record.keys)
        if self._keys_since_snapshot >= self.checkpoint_keys:
            self._snapshot()
        elif self.journal.next_doc - self.journal.first_located > 2 * self.journal_docs:
            self._forget_old()  # now and then: dropping is a pass over the index
        self.round_trips += 1
        return matches

    def _snapshot(self) -> None:
        try:
            self.filter.save(self.snapshot_path, self.journal.next_doc, self.keys)
            self.journal.rotate()
        except OSError as exc:  # the journal still has every key: the next snapshot or start recovers
            raise StoreError(f"cannot save the Bloom filter {str(self.snapshot_path)!r}: {exc}") from exc
        self.snapshot_doc = self.journal.next_doc
        self._keys_since_snapshot = 0
        self._forget_old()

    def stats(self) -> StoreStats:
        disk = self.journal.disk_bytes() + (self.snapshot_path.stat().st_size if self.snapshot_path.exists() else 0)
        memory = self.filter.words.nbytes + sum(k.nbytes + d.nbytes for k, d in self.index.runs)
        return StoreStats(self.journal.next_doc, self.keys, disk, memory)

    def close(self) -> None:
        self.journal.close()
