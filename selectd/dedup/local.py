"""The embedded store: every claimed key, exact, in this process's memory and on local disk.

A batch's new keys are appended to the log (keylog.py) and synced before ``claim`` returns, so
once the daemon commits the batch's offsets the keys survive ``kill -9`` (and a power cut); at
start the log is read back into the in-memory index. One process per directory (a lock file).

Size per document with 14 MinHash keys and 16-character ids (measured by the benchmark):
about 190 bytes of log on disk and about 180 bytes of memory (12 per key, 12 per id location),
so a replica holding 100 million documents needs ~18 GB of memory: past that, use the Bloom
store (bounded, about 35 MB per million documents at a 0.1 % false-duplicate rate) or Redis.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from selectd.dedup.keylog import KeyLog, Record, SortedKeys
from selectd.dedup.keys import KeyBatch
from selectd.dedup.store import DedupStore, Match, StoreStats, resolve_claims


def owners_by_key(index: SortedKeys, log: KeyLog, keys: np.ndarray) -> dict[int, str]:
    """Owner id of each of ``keys`` found in ``index`` (ids read from ``log``, once per owner)."""
    unique = np.unique(keys)
    docs = index.lookup(unique)
    found = docs >= 0
    ids = {doc: log.document_id(doc) for doc in set(docs[found].tolist())}
    return {key: ids[doc] for key, doc in zip(unique[found].tolist(), docs[found].tolist())}


def new_record(claimed: dict[int, int], ids: Sequence[str], first_doc: int) -> Record:
    """The log record of a batch's claims (key -> index of the claiming document in ``ids``);
    claiming documents are numbered from ``first_doc`` in batch order."""
    claimers = sorted(set(claimed.values()))
    number = {d: first_doc + rank for rank, d in enumerate(claimers)}
    return Record(first_doc, np.fromiter(claimed.keys(), dtype=np.uint64, count=len(claimed)),
                  np.fromiter((number[d] for d in claimed.values()), dtype=np.uint32, count=len(claimed)),
                  [ids[d] for d in claimers])


class LocalStore(DedupStore):
    """``directory`` holds ``dedup-NNNNNNNN.log`` and ``dedup.lock``."""

    def __init__(self, directory: str | Path):
        self.log = KeyLog(directory, "dedup", "dedup store")
        self.index = SortedKeys()
        self.log.replay(lambda record: self.index.add(record.keys, record.key_docs))
        self.round_trips = 0

    def claim(self, batch: KeyBatch, ids: Sequence[str]) -> list[Match | None]:
        matches, claimed = resolve_claims(batch, ids, owners_by_key(self.index, self.log, batch.keys))
        record = new_record(claimed, ids, self.log.next_doc)
        self.log.append(record)  # synced, or StoreError with nothing kept
        self.index.add(record.keys, record.key_docs)
        self.round_trips += 1
        return matches

    def stats(self) -> StoreStats:
        memory = sum(k.nbytes + d.nbytes for k, d in self.index.runs) + 16 * self.log.next_doc
        return StoreStats(self.log.next_doc, len(self.index), self.log.disk_bytes(), memory)

    def close(self) -> None:
        self.log.close()
