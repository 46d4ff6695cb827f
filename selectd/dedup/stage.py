"""What a dedup cascade stage calls: keys of a batch, one store claim, a verdict per document.

``exact_dedup`` and ``minhash_dedup`` differ only in their keys (keys.py); the decision is the
store's (store.py): a document is a duplicate when one of its keys was claimed by a document with
another id, earlier in the stream or earlier in the batch. :func:`open_store` builds the store of
a ``[dedup]`` section (:class:`StoreConfig`); :data:`shared_stores` keeps one open store per
config in the process, shared by every stage that uses it.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selectd.dedup.bloom import BloomStore
from selectd.dedup.keys import ExactKeys, MinhashKeys
from selectd.dedup.redis_store import RedisStore
from selectd.dedup.local import LocalStore
from selectd.dedup.store import DedupStore, StoreOpenError


@dataclass(frozen=True)
class Duplicate:
    """Why a document was found a duplicate."""

    of: str | None  # the id of the document it matched; None when the store kept no id (Bloom)
    key: str        # what matched: "text", a field name, or "minhash"


class Deduplicator:
    """A stage's keys and its store."""

    def __init__(self, keys: ExactKeys | MinhashKeys, store: DedupStore):
        self.keys = keys
        self.store = store
        #: wall seconds of the last store claim (the stage reports it as the store's latency)
        self.claim_seconds = 0.0

    def find(self, ids: Sequence[str], texts: Sequence[str],
             fields: Sequence[Mapping[str, Any]] | None = None) -> list[Duplicate | None]:
        """Per document, the earlier document it duplicates or None. One store round trip; the
        keys of every document are claimed before this returns (raises ``StoreError`` when not,
        with nothing decided)."""
        batch = self.keys.derive(texts, fields if fields is not None else [{}] * len(texts))
        began = time.perf_counter()
        try:
            matches = self.store.claim(batch, ids)
        finally:
            self.claim_seconds = time.perf_counter() - began
        return [None if match is None else
                Duplicate(match.owner, batch.labels[batch.slots[batch.offsets[d] + match.key]])
                for d, match in enumerate(matches)]


class StoreConfig(BaseModel):
    """Where the dedup keys live (the ``[dedup]`` section)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: Literal["local", "redis", "bloom"] = Field(
        default="local", description="local: exact, on local disk; redis: a server shared by replicas; "
        "bloom: local, bounded memory")
    path: Path = Field(default=Path("dedup"), description="local, bloom: the store's directory (a volume in containers)")
    url: str | None = Field(default=None, description="redis: redis://[user:password@]host:port/db, rediss://, unix://")
    prefix: str = Field(default="selectd:dedup:", description="redis: prefix of every key this store writes")
    bucket_bits: int = Field(default=20, ge=1, le=24, description="redis: keys are grouped in 2^bits hashes; "
                             "about log2(expected keys / 100), never changed once written")
    timeout_s: float = Field(default=5.0, gt=0, description="redis: socket timeout per round trip")
    capacity: int | None = Field(default=None, ge=1, description="bloom: keys it is sized for")
    false_positive_rate: float = Field(default=1e-4, gt=0, lt=1, description="bloom: per key lookup")
    journal_docs: int = Field(default=100_000, ge=1, description="bloom: documents whose owners are kept "
                              "(replays must stay within them)")

    @model_validator(mode="after")
    def _store_needs(self) -> "StoreConfig":
        if self.store == "redis" and not self.url:
            raise ValueError("store = \"redis\" needs url")
        if self.store == "bloom" and not self.capacity:
            raise ValueError("store = \"bloom\" needs capacity")
        return self


def open_store(config: StoreConfig) -> DedupStore:
    """Open the configured store; ``StoreOpenError`` naming the ``[dedup]`` key and what failed
    when it cannot be used."""
    try:
        if config.store == "redis":
            return RedisStore(config.url, config.prefix, config.bucket_bits, config.timeout_s)
        if config.store == "bloom":
            return BloomStore(config.path, config.capacity, config.false_positive_rate, config.journal_docs)
        return LocalStore(config.path)
    except StoreOpenError as exc:
        key = "dedup.url" if config.store == "redis" else "dedup.path"
        raise StoreOpenError(f"{key}: {exc}") from exc


class SharedStores:
    """The stores open in this process, one per config, each shared by the stages that use it:
    an ``exact_dedup`` and a ``minhash_dedup`` stage of one cascade, and the running cascade and
    the one a reload builds beside it (a local store's directory admits one opener). A store
    closes when its last stage releases it."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[StoreConfig, tuple[DedupStore, int]] = {}

    def acquire(self, config: StoreConfig) -> DedupStore:
        with self._lock:
            store, users = self._open.get(config) or (open_store(config), 0)
            self._open[config] = (store, users + 1)
            return store

    def release(self, config: StoreConfig) -> None:
        with self._lock:
            store, users = self._open.pop(config)
            if users > 1:
                self._open[config] = (store, users - 1)
            else:
                store.close()


shared_stores = SharedStores()
