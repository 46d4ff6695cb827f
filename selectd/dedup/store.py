"""Where dedup keys are remembered: the store interface and the embedded SQLite store.

One call per batch, :meth:`DedupStore.claim`: for every document in batch order, for every key
in its order, "insert if absent, else report the owner". A key is owned by the first document
that claimed it; every document claims its keys whether or not it is itself a duplicate, so a
chain A~B~C (C shares a band with B only) resolves as datatrove's clustering does. A key owned
by the claiming document's own id is not a match: a document re-read after a crash (same id,
same keys) is recognised as itself. Within a batch, earlier documents count as seen for later
ones. A store that cannot answer raises :class:`StoreError` and has changed nothing the next
call would see differently, so the caller can leave the batch uncommitted and retry.

The embedded store is one SQLite file in WAL mode: a batch is one transaction, committed with
``synchronous=FULL`` (fsynced) before ``claim`` returns, so once the daemon commits the batch's
offsets the keys are on disk and survive ``kill -9``. The file is locked exclusively (one daemon
per file). Tables: ``docs(n, id)`` (one row per document that claimed a key) and ``keys(key,
doc)``, the key being the table's integer primary key (8 bytes, no separate index).
"""
from __future__ import annotations

import sqlite3
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from selectd.dedup.keys import KeyBatch

#: a key seen before whose owner the store does not know (Bloom mode outside its journal)
UNKNOWN_OWNER = None


class StoreError(Exception):
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
    keys: int
    bytes: int         # on disk (SQLite, Bloom) or in server memory (Redis)


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


def resolve_claims(batch: KeyBatch, ids: Sequence[str], known: dict[int, str | None],
                   seen: np.ndarray | None = None) -> tuple[list[Match | None], dict[int, int]]:
    """The claim decision for stores that look keys up first and write after.

    ``known``: owner id of each batch key already stored (``UNKNOWN_OWNER`` for a key seen
    without an owner); ``seen`` (Bloom): per key of the batch, True when the store believes it
    was seen. Returns the matches and the keys this batch claims (key -> index of the claiming
    document), first claims winning, in batch order.
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


def signed64(keys: np.ndarray) -> list[int]:
    """uint64 keys as SQLite's signed 64-bit integers (same bits)."""
    return keys.astype(np.uint64).view(np.int64).tolist()


_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (n INTEGER PRIMARY KEY, id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (key INTEGER PRIMARY KEY, doc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('keys', 0);
"""
#: SQLite's default limit on bound parameters is 32766; stay below it per lookup statement
_LOOKUP_CHUNK = 30_000


class SqliteTables:
    """The ``docs`` / ``keys`` tables on one connection: lookup and insert inside the caller's
    transaction. :class:`SqliteStore` keeps all keys in them; the Bloom store's journal keeps
    recent ones and prunes."""

    def __init__(self, path: str | Path, what: str, prunable: bool = False):
        """``prunable``: index keys by document, for :meth:`prune`."""
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0)
            self.db.execute("PRAGMA locking_mode=EXCLUSIVE")
            if self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0] != "wal":
                raise sqlite3.OperationalError("WAL journal mode not available")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now: a second daemon fails here
            self.db.executescript(_SCHEMA + ("CREATE INDEX IF NOT EXISTS keys_doc ON keys(doc);" if prunable else ""))
            self.next_doc = self.db.execute("SELECT coalesce(max(n), 0) + 1 FROM docs").fetchone()[0]
            self.key_count = self.db.execute("SELECT value FROM meta WHERE name = 'keys'").fetchone()[0]
        except (sqlite3.Error, OSError) as exc:
            hint = " (another process holds it)" if "locked" in str(exc) else ""
            raise StoreOpenError(f"cannot open the {what} {str(self.path)!r}: {exc}{hint}") from exc

    def owners(self, keys: np.ndarray) -> dict[int, str]:
        """Stored owner id of each of ``keys`` that is stored (unsigned key -> id)."""
        found: dict[int, str] = {}
        signed = signed64(np.unique(keys))
        for start in range(0, len(signed), _LOOKUP_CHUNK):
            chunk = signed[start:start + _LOOKUP_CHUNK]
            rows = self.db.execute(
                f"SELECT k.key, d.id FROM keys k JOIN docs d ON d.n = k.doc WHERE k.key IN ({','.join('?' * len(chunk))})",
                chunk)
            found.update((key & 0xFFFFFFFFFFFFFFFF, owner) for key, owner in rows)
        return found

    def insert(self, claimed: dict[int, int], ids: Sequence[str]) -> int:
        """Store the claimed keys (key -> index into ``ids``); returns the next document number."""
        claimers = sorted(set(claimed.values()))
        numbers = {d: self.next_doc + rank for rank, d in enumerate(claimers)}
        self.db.executemany("INSERT INTO docs VALUES (?, ?)", ((numbers[d], ids[d]) for d in claimers))
        keys = signed64(np.fromiter(claimed.keys(), dtype=np.uint64, count=len(claimed)))
        self.db.executemany("INSERT INTO keys VALUES (?, ?)", zip(keys, (numbers[d] for d in claimed.values())))
        self.db.execute("UPDATE meta SET value = value + ? WHERE name = 'keys'", (len(claimed),))
        return self.next_doc + len(claimers)

    def prune(self, below: int) -> None:
        """Forget the documents numbered below ``below`` and their keys (in the caller's transaction)."""
        self.db.execute("DELETE FROM keys WHERE doc < ?", (below,))
        self.db.execute("DELETE FROM docs WHERE n < ?", (below,))

    def keys_since(self, first: int) -> np.ndarray:
        """The keys of documents numbered ``first`` and above (unsigned)."""
        rows = self.db.execute("SELECT key FROM keys WHERE doc >= ?", (first,)).fetchall()
        return np.fromiter((key for key, in rows), dtype=np.int64, count=len(rows)).view(np.uint64)

    def transaction(self, work):
        """Run ``work()`` in one write transaction, committed (and fsynced) before returning; on
        any SQLite or OS error roll back and raise :class:`StoreError`."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"dedup store {str(self.path)!r}: {exc}") from exc
        return result

    def disk_bytes(self) -> int:
        return sum(p.stat().st_size for p in (self.path, Path(f"{self.path}-wal")) if p.exists())

    def close(self) -> None:
        self.db.close()


class SqliteStore(DedupStore):
    """The embedded store: every key ever claimed, in one local SQLite file."""

    def __init__(self, path: str | Path):
        self.tables = SqliteTables(path, "dedup store")
        self.round_trips = 0

    def claim(self, batch: KeyBatch, ids: Sequence[str]) -> list[Match | None]:
        tables = self.tables

        def work():
            matches, claimed = resolve_claims(batch, ids, tables.owners(batch.keys))
            return matches, claimed, tables.insert(claimed, ids)

        matches, claimed, next_doc = tables.transaction(work)
        tables.next_doc = next_doc  # only once committed: a failed batch leaves the counters as they were
        tables.key_count += len(claimed)
        self.round_trips += 1
        return matches

    def stats(self) -> StoreStats:
        return StoreStats(self.tables.next_doc - 1, self.tables.key_count, self.tables.disk_bytes())

    def close(self) -> None:
        self.tables.close()
