"""Dedup stages, kinds ``exact_dedup`` and ``minhash_dedup``: cascade stages like any other.

A dedup stage claims the keys of every document reaching it in the ``[dedup]`` store
(:mod:`selectd.dedup`), one store round trip per batch, written before the batch's offsets are
committed. ``exact_dedup`` keys a document on its normalized text and/or fields such as ``url``
(options ``text``, ``fields``, ``normalization``); ``minhash_dedup`` on the LSH bands of its
datatrove MinHash signature (options: datatrove's ``MinhashConfig``). A document one of whose
keys another document (another id) claimed first, earlier in the stream or in the batch, is a
duplicate. Its signals:

- ``duplicate_<key>`` (``exact_dedup``: ``duplicate_text``, ``duplicate_url``, ... one per key)
  or ``near_duplicate`` (``minhash_dedup``): 1 for the first key that matched, else 0;
- ``duplicate_of``: the id of the document it matched; null when it is no duplicate, and with
  the Bloom store for a match older than its journal.

The default rules reject on them with the reasons ``duplicate_<key>`` / ``near_duplicate``, so
the output's ``selectd`` object has the stage, the reason and ``scores.<stage>.duplicate_of``.
``rules = []`` keeps duplicates and only marks them (a route can send them elsewhere).

A document read again after a crash (same id) is recognised as itself, never as its own
duplicate. When the store cannot answer (Redis unreachable, disk full) the stage raises
:class:`~selectd.dedup.store.StoreError`: nothing of the batch is decided, and the commit loop
retries the batch.
"""
from __future__ import annotations

import collections
import time
from abc import abstractmethod
from typing import Any, Sequence

import numpy as np

from selectd.dedup.keys import ExactDedupOptions, ExactKeys, MinhashKeys
from selectd.dedup.minhash import MinhashOptions
from selectd.dedup.stage import Deduplicator, StoreConfig, shared_stores
from selectd.dedup.store import StoreError
from selectd.metrics import Metrics
from selectd.records import Document
from selectd.scorers.base import SIGNALS_PROBE_TEXT, Scorer, Signals, StageContext, register
from selectd.signal_kinds import SignalKind

#: how often a stage refreshes the store-size gauges (a Redis store spends a round trip on it)
STORE_STATS_INTERVAL_S = 15.0


class DedupStage(Scorer):
    """The shared half of the two kinds: claim, signals, metrics. A kind gives its key derivation."""

    shadow_refused = ("scoring claims the documents' keys in the [dedup] store, so a trial would change "
                      "what live dedup stages decide")

    def __init__(self, name: str, options: Any):
        super().__init__(name, options)
        self.keys = self.derive_keys(options)
        self.deduplicator: Deduplicator | None = None
        self.store_config: StoreConfig | None = None
        self.metrics: Metrics | None = None
        self._next_stats = 0.0

    @abstractmethod
    def derive_keys(self, options: Any) -> ExactKeys | MinhashKeys:
        """The kind's key derivation for its options."""

    def signal(self, label: str) -> str:
        """The signal of a key label (``text``, a field name, ``minhash``)."""
        return f"duplicate_{label}"

    # --- set-up ---------------------------------------------------------------------------
    def attach(self, context: StageContext) -> None:
        """Open (or share) the ``[dedup]`` store: ``StoreOpenError`` naming the key at start."""
        self.deduplicator = Deduplicator(self.keys, shared_stores.acquire(context.dedup))
        self.store_config = context.dedup
        self.metrics = context.metrics
        if self.metrics is not None:
            self.metrics.declare_dedup_stage(self.name, self.keys.labels)
            self._refresh_store_size()

    def warmup(self) -> None:
        self.keys.derive([SIGNALS_PROBE_TEXT], [{}])  # the word cache and MinHash tables; nothing claimed

    def probe_signals(self) -> Signals:
        # the shape of a batch's signals without a run: a probe run would claim its keys in the store
        return {**{self.signal(label): np.zeros(1) for label in self.keys.labels},
                "duplicate_of": np.array([None], dtype=object)}

    def signal_kinds(self) -> dict[str, SignalKind]:
        return {**{self.signal(label): SignalKind.PROBABILITY for label in self.keys.labels},  # 0/1 flags
                "duplicate_of": SignalKind.CATEGORY}

    def default_rules(self) -> list[dict[str, Any]]:
        return [{"signal": self.signal(label), "max": 0, "reason": self.signal(label)} for label in self.keys.labels]

    def close(self) -> None:
        if self.store_config is not None:
            shared_stores.release(self.store_config)
            self.store_config = self.deduplicator = None

    # --- a batch --------------------------------------------------------------------------
    def score(self, texts: Sequence[str]) -> Signals:
        raise TypeError(f"stage {self.name!r} ({self.kind}) needs documents with ids: call run_documents")

    def run_documents(self, documents: Sequence[Document]) -> Signals:
        if self.deduplicator is None:
            raise RuntimeError(f"stage {self.name!r} has no store: attach() it first")
        try:
            found = self.deduplicator.find([doc.id for doc in documents], [doc.text for doc in documents],
                                           [doc.fields for doc in documents])
        except StoreError:
            if self.metrics is not None:
                self.metrics.dedup_store_errors.labels(self.name).inc()
            raise
        signals: Signals = {self.signal(label): np.zeros(len(documents)) for label in self.keys.labels}
        for position, duplicate in enumerate(found):
            if duplicate is not None:
                signals[self.signal(duplicate.key)][position] = 1.0
        signals["duplicate_of"] = np.array([d.of if d is not None else None for d in found], dtype=object)
        if self.metrics is not None:
            by_key = collections.Counter(d.key for d in found if d is not None)
            self.metrics.observe_dedup(self.name, self.deduplicator.claim_seconds, by_key)
            if time.monotonic() >= self._next_stats:
                self._refresh_store_size()
        return signals

    def _refresh_store_size(self) -> None:
        self._next_stats = time.monotonic() + STORE_STATS_INTERVAL_S
        try:
            stats = self.deduplicator.store.stats()
        except StoreError:  # a gauge is not worth failing a batch for; the error is counted
            self.metrics.dedup_store_errors.labels(self.name).inc()
            return
        self.metrics.set_dedup_store_size(stats.documents, stats.keys, stats.memory_bytes, stats.disk_bytes)


@register
class ExactDedup(DedupStage):
    kind = "exact_dedup"
    Options = ExactDedupOptions

    def derive_keys(self, options: ExactDedupOptions) -> ExactKeys:
        return ExactKeys(options)


@register
class MinhashDedup(DedupStage):
    kind = "minhash_dedup"
    Options = MinhashOptions

    def derive_keys(self, options: MinhashOptions) -> MinhashKeys:
        return MinhashKeys(options)

    def signal(self, label: str) -> str:
        return "near_duplicate"
