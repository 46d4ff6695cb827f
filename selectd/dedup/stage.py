"""What a dedup cascade stage calls: keys of a batch, one store claim, a verdict per document.

``exact_dedup`` and ``minhash_dedup`` differ only in their keys (keys.py); the decision is the
store's (store.py): a document is a duplicate when one of its keys was claimed by a document with
another id, earlier in the stream or earlier in the batch. :func:`open_store` builds the store of
a ``[dedup]`` section (:class:`StoreConfig`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selectd.dedup.bloom import BloomStore
from selectd.dedup.keys import ExactDedupOptions, ExactKeys, MinhashKeys
from selectd.dedup.minhash import MinhashOptions
from selectd.dedup.redis_store import RedisStore
from selectd.dedup.local import LocalStore
from selectd.dedup.store import DedupStore

#: stage type -> (its options model, its key derivation)
STAGE_TYPES = {"exact_dedup": (ExactDedupOptions, ExactKeys), "minhash_dedup": (MinhashOptions, MinhashKeys)}


def key_deriver(stage_type: str, options: Mapping[str, Any]) -> ExactKeys | MinhashKeys:
    """The key derivation of a dedup stage type from its options table (validated here)."""
    options_model, keys = STAGE_TYPES[stage_type]
    return keys(options_model.model_validate(options))


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

    def find(self, ids: Sequence[str], texts: Sequence[str],
             fields: Sequence[Mapping[str, Any]] | None = None) -> list[Duplicate | None]:
        """Per document, the earlier document it duplicates or None. One store round trip; the
        keys of every document are claimed before this returns (raises ``StoreError`` when not,
        with nothing decided)."""
        batch = self.keys.derive(texts, fields if fields is not None else [{}] * len(texts))
        matches = self.store.claim(batch, ids)
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
    """Open the configured store; ``StoreOpenError`` (naming what failed) when it cannot be used."""
    if config.store == "redis":
        return RedisStore(config.url, config.prefix, config.bucket_bits, config.timeout_s)
    if config.store == "bloom":
        return BloomStore(config.path, config.capacity, config.false_positive_rate, config.journal_docs)
    return LocalStore(config.path)
