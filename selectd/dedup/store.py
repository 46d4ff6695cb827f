"""The store interface: where dedup keys are remembered.

One call per batch, :meth:`DedupStore.claim`: for every document in batch order, for every key
in its order, "insert if absent, else report the owner". A key is owned by the first document
that claimed it; every document claims its keys whether or not it is itself a duplicate, so a
chain A~B~C (C shares a band with B only) resolves as datatrove's clustering does. A key owned
by the claiming document's own id is not a match: a document re-read after a crash (same id,
same keys) is recognised as itself. Within a batch, earlier documents count as seen for later
ones. The keys are stored (durably, for the local stores) before ``claim`` returns.

A store that cannot answer raises :class:`StoreError`, and the caller leaves the batch
uncommitted and retries it. A retry decides the same whether or not the failed call stored
anything, since documents are recognised as themselves: ``claim`` is idempotent per id.

Stores: local.py (embedded, exact), bloom.py (embedded, bounded), redis_store.py (shared).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from selectd.dedup.keys import KeyBatch
from selectd.records import RetriableBatchError

#: the owner of a key seen before that the store has no id for (Bloom, outside its journal)
UNKNOWN_OWNER = None


class StoreError(RetriableBatchError):
    """The store did not answer (unreachable, disk full, locked, ...). The batch's documents were
    not decided; retry the batch later."""


class StoreOpenError(StoreError):
    """The store cannot be used at all (bad path, held by another process, wrong server)."""


@dataclass(frozen=True)
class Match:
    """A document's first key that another document holds."""

    key: int           # index of that key among the document's keys
    owner: str | None  # the holder's id; None where the store keeps no ids for it (Bloom)


@dataclass(frozen=True)
class StoreStats:
    documents: int     # documents that claimed at least one key
    keys: int          # keys claimed
    disk_bytes: int    # this process's files (local stores; 0 for Redis)
    memory_bytes: int  # this process's index and filter (local stores) or the server's used_memory (Redis)


class DedupStore(ABC):
    """Remembered keys; :meth:`claim` is one round trip / one transaction per batch."""

    #: counted by :meth:`claim`, read by the benchmarks and the store-latency metric
    round_trips: int = 0

    @abstractmethod
    def claim(self, batch: KeyBatch, ids: Sequence[str]) -> list[Match | None]:
        """Claim every key of every document (see the module docstring); per document, its first
        key held by a document with another id, or None."""

    @abstractmethod
    def stats(self) -> StoreStats:
        ...

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resolve_claims(batch: KeyBatch, ids: Sequence[str], known: dict[int, str],
                   seen: np.ndarray | None = None) -> tuple[list[Match | None], dict[int, int]]:
    """The claim decision for the local stores, which look keys up first and write after.

    ``known``: owner id of each batch key stored with its owner; ``seen`` (Bloom): per key of the
    batch, True when the filter says it was seen (owner unknown unless in ``known``). Returns the
    matches and the keys this batch claims (key -> index of the claiming document in ``ids``),
    the first claim of a key in the batch winning.
    """
    if len(ids) != len(batch):
        raise ValueError(f"{len(ids)} ids for {len(batch)} documents")
    claimed: dict[int, int] = {}
    matches: list[Match | None] = []
    keys = batch.keys.tolist()
    offsets = batch.offsets.tolist()
    for d, doc_id in enumerate(ids):
        match = None
        for i in range(offsets[d], offsets[d + 1]):
            key = keys[i]
            if key in known:
                owner = known[key]
            elif key in claimed:
                owner = ids[claimed[key]]
            elif seen is not None and seen[i]:
                owner = UNKNOWN_OWNER
            else:
                claimed[key] = d
                continue
            if match is None and (owner is UNKNOWN_OWNER or owner != doc_id):
                match = Match(i - offsets[d], owner)
        matches.append(match)
    return matches, claimed
