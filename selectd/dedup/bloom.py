"""The Bloom store: bounded memory for a local store, at a chosen false-positive rate.

A Bloom filter (``capacity`` keys at ``false_positive_rate`` per key lookup) answers "seen
before?" in a fixed number of bits per key, but keeps no owner ids, which is what replay safety
needs: a document re-read after a crash finds its own keys in the filter. So the store keeps a
journal next to it: the (key, owner id) pairs of the last ``journal_docs`` documents, in SQLite.
A key is looked up in the journal first (owner known: itself or another document), then in the
filter (seen, owner unknown: ``duplicate_of`` is unset). A replay reaches back at most the
batches whose offsets were not committed yet, a few batches, far fewer than ``journal_docs``
(default 100,000); a document re-read from further back would be taken for its own duplicate.

Durability: a batch's new keys are committed to the journal (fsynced) before their bits are set,
so every bit in memory belongs to a journaled key. The bit array is a file mapped in memory; every
``checkpoint_keys`` new keys it is synced to disk and the header records the first document whose
bits may not be on disk; the journal keeps everything from that document on, and opening the
store sets those bits again. A ``kill -9`` loses nothing (the mapped pages belong to the kernel);
a power cut loses at most the bits since the last checkpoint, which the journal restores.

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

from selectd.dedup.keys import KeyBatch
from selectd.dedup.store import (DedupStore, Match, SqliteTables, StoreError, StoreOpenError, StoreStats,
                                 resolve_claims)

_MAGIC = b"selectd-bloom-v1"
_HEADER = struct.Struct("<16sQQQ")  # magic, bits, hash functions, first document not checkpointed
_HEADER_BYTES = 4096                # the bit array starts on its own page
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
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class BloomFilter:
    """A Bloom filter over a memory-mapped file (header page + bit array)."""

    def __init__(self, path: Path, capacity: int, rate: float):
        bits, hashes = bloom_size(capacity, rate)
        self.path = path
        if not path.exists():
            with open(path, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, bits, hashes, 1).ljust(_HEADER_BYTES, b"\0"))
                f.truncate(_HEADER_BYTES + bits // 8)
                os.fsync(f.fileno())
        with open(path, "rb") as f:
            magic, stored_bits, stored_hashes, self.checkpoint = _HEADER.unpack(f.read(_HEADER.size))
        if magic != _MAGIC:
            raise StoreOpenError(f"{str(path)!r} is not a selectd Bloom filter")
        if (stored_bits, stored_hashes) != (bits, hashes):
            raise StoreOpenError(f"{str(path)!r} was sized for other capacity / false_positive_rate "
                                 f"({stored_bits} bits, {stored_hashes} hashes; now {bits}, {hashes})")
        self.bits, self.hashes = bits, hashes
        self.header = np.memmap(path, dtype=np.uint64, mode="r+", offset=0, shape=_HEADER.size // 8)
        self.words = np.memmap(path, dtype=np.uint64, mode="r+", offset=_HEADER_BYTES, shape=bits // 64)

    def _positions(self, keys: np.ndarray) -> np.ndarray:
        """Bit positions, (len(keys), hashes): double hashing h1 + i * h2 over two mixes of the key."""
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

    def checkpoint_through(self, first_unsynced: int) -> None:
        """Sync the bits, then record that documents before ``first_unsynced`` are in them."""
        self.words.flush()
        self.header[4] = first_unsynced  # after magic (2 words), bits, hashes
        self.header.flush()
        self.checkpoint = first_unsynced

    def close(self) -> None:
        if self.words is not None:
            self.words.flush()
            self.header.flush()
            self.words = self.header = None  # unmaps once nothing else refers to them


class BloomStore(DedupStore):
    """A local store of bounded size: Bloom filter + journal (see the module docstring).
    ``directory`` holds ``bloom.bits`` and ``journal.sqlite``."""

    def __init__(self, directory: str | Path, capacity: int, false_positive_rate: float,
                 journal_docs: int = 100_000, checkpoint_keys: int = 1_000_000):
        if capacity < 1 or not 0 < false_positive_rate < 1:
            raise StoreOpenError("a Bloom store needs capacity >= 1 and 0 < false_positive_rate < 1")
        directory = Path(directory)
        self.journal = SqliteTables(directory / "journal.sqlite", "dedup journal", prunable=True)
        try:
            self.filter = BloomFilter(directory / "bloom.bits", capacity, false_positive_rate)
        except OSError as exc:
            self.journal.close()
            raise StoreOpenError(f"cannot open the Bloom filter in {str(directory)!r}: {exc}") from exc
        except StoreOpenError:
            self.journal.close()
            raise
        self.journal_docs = journal_docs
        self.checkpoint_keys = checkpoint_keys
        self._unsynced_keys = 0
        self.round_trips = 0
        # bits of documents journaled after the last checkpoint may not have reached the disk
        self.filter.add(self.journal.keys_since(self.filter.checkpoint))

    def claim(self, batch: KeyBatch, ids: Sequence[str]) -> list[Match | None]:
        journal = self.journal
        seen = self.filter.contains(batch.keys)

        def work():
            matches, claimed = resolve_claims(batch, ids, journal.owners(batch.keys), seen)
            next_doc = journal.insert(claimed, ids)
            journal.prune(min(self.filter.checkpoint, next_doc - self.journal_docs))
            return matches, claimed, next_doc

        matches, claimed, journal.next_doc = journal.transaction(work)
        journal.key_count += len(claimed)
        try:
            self.filter.add(batch.keys)  # all of them: bits are idempotent, and a replay re-sets its own
            self._unsynced_keys += len(claimed)
            if self._unsynced_keys >= self.checkpoint_keys:
                self.filter.checkpoint_through(journal.next_doc)
                self._unsynced_keys = 0
        except OSError as exc:  # journal committed: the next open restores these bits from it
            raise StoreError(f"Bloom filter {str(self.filter.path)!r}: {exc}") from exc
        self.round_trips += 1
        return matches

    def stats(self) -> StoreStats:
        size = self.journal.disk_bytes() + self.filter.path.stat().st_size
        return StoreStats(self.journal.next_doc - 1, self.journal.key_count, size)

    def close(self) -> None:
        self.filter.close()
        self.journal.close()
