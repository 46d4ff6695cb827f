"""The scorer interface every stage of the cascade implements.

A scorer takes a batch of texts and returns a struct of arrays: one numpy array per signal, each
with one entry per document (float arrays for scores, object arrays of ``str`` for categorical
signals such as a language code). Decisions are not made here: a stage turns signals into
keep/reject with :class:`selectd.thresholds.Rule` thresholds, so a filter's defaults (datatrove's
thresholds for the rule scorers) and a user's overrides go through the same code.

The cascade hands a stage a batch of documents (:meth:`Scorer.run_documents`). A text scorer
sees only their texts: each scorer declares the preprocessing its model was trained with
(``preprocess``), and :meth:`Scorer.run` applies it, so a model is never fed text prepared
differently from its training data. A scorer that needs more of a document (the dedup stages:
its id and fields) overrides ``run_documents``.

What a stage may use besides its own options (the ``[dedup]`` store, the daemon's metrics) comes
in a :class:`StageContext` through :meth:`Scorer.attach`, once, before warm-up.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from selectd.dedup.stage import StoreConfig
from selectd.metrics import Metrics
from selectd.records import Document
from selectd.signal_kinds import SignalKind

Signals = dict[str, np.ndarray]

#: the text a scorer is run on to list the signals it emits (the cascade checks rules against them)
SIGNALS_PROBE_TEXT = "A short English sentence, used to warm up each scorer and list the signals it emits."


@dataclass(frozen=True)
class StageContext:
    """What the process shares with its stages: the ``[dedup]`` store's config and the metrics
    (None offline in tests and benchmarks)."""

    dedup: StoreConfig = field(default_factory=StoreConfig)
    metrics: Metrics | None = None


class ScorerOptions(BaseModel):
    """Base for each scorer's own options table (``[stages.options]``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Scorer(ABC):
    #: the ``type`` a stage names in the config
    kind: ClassVar[str]
    #: pydantic model of this scorer's ``options`` table
    Options: ClassVar[type[ScorerOptions]] = ScorerOptions
    #: why this kind cannot run as a ``shadow = true`` stage (None: it can)
    shadow_refused: ClassVar[str | None] = None

    def __init__(self, name: str, options: ScorerOptions):
        self.name = name
        self.options = options

    # --- what a scorer declares -------------------------------------------------------------
    def preprocess(self, text: str) -> str:
        """The exact text transformation the model was trained with (identity by default)."""
        return text

    @abstractmethod
    def score(self, texts: Sequence[str]) -> Signals:
        """Score already-preprocessed texts; every returned array has ``len(texts)`` entries."""

    def default_rules(self) -> list[dict[str, Any]]:
        """Keep/reject thresholds used when the stage's config gives no ``rules``.

        Each entry has the fields of :class:`selectd.thresholds.Rule` (``signal``, ``min``, ``max``,
        ``in``, ``reason``), with ``signal`` named without the stage prefix.
        """
        return []

    def signal_kinds(self) -> dict[str, SignalKind]:
        """The kind of each signal :meth:`score` emits (probability, count, perplexity...): it picks
        the buckets of the signal's score histogram and drift bins. A signal left out is a category
        when its values are strings, else a generic :attr:`SignalKind.SCORE`."""
        return {}

    def versions(self) -> dict[str, str]:
        """Identifiers of the model files this scorer runs (e.g. sha256), for the output record."""
        return {}

    def missing_signals_hint(self, missing: set[str]) -> str | None:
        """What to change when a stage's rules name ``missing`` signals this scorer does not emit but
        could (another profile, another option); None when there is nothing to suggest."""
        return None

    @classmethod
    def signals_help(cls) -> str:
        """The signals a stage of this kind emits, for ``check-config --list-scorers``: those a scorer
        built with default options probes. Scorers whose signals depend on their model override it."""
        scorer = cls("list", cls.Options())
        try:
            return ", ".join(sorted(scorer.probe_signals()))
        finally:
            scorer.close()

    def attach(self, context: StageContext) -> None:
        """Take what this scorer needs of the process's shared resources; called once, before
        :meth:`warmup` (most scorers need none)."""

    def warmup(self) -> None:
        """Run once after load so the first real batch does not pay for lazy initialisation."""
        self.run(["warm up the scorer with a short sentence of text."])

    def probe_signals(self) -> Signals:
        """Signals of one probe text, from which the cascade learns what this scorer emits (names
        for its rules, value types for undeclared kinds): by default a run on the text."""
        return self.run([SIGNALS_PROBE_TEXT])

    def close(self) -> None:
        """Release resources (sessions, threads)."""

    # --- what the cascade calls -------------------------------------------------------------
    def run_documents(self, documents: Sequence[Document]) -> Signals:
        """Signals of a batch of documents, one entry per document: a text scorer's of their texts."""
        return self.run([doc.text for doc in documents])

    def run(self, texts: Sequence[str]) -> Signals:
        """Signals of a batch of texts, each prepared by :meth:`preprocess` first."""
        prepared = [self.preprocess(t) for t in texts]
        signals = self.score(prepared)
        for key, values in signals.items():
            if len(values) != len(texts):
                raise ValueError(
                    f"scorer {self.name!r} returned {len(values)} values for signal {key!r} "
                    f"on a batch of {len(texts)} documents"
                )
        return signals


_REGISTRY: dict[str, type[Scorer]] = {}


def register(cls: type[Scorer]) -> type[Scorer]:
    """Class decorator: make a scorer available to the config under ``cls.kind``."""
    if cls.kind in _REGISTRY and _REGISTRY[cls.kind] is not cls:
        raise ValueError(f"scorer kind {cls.kind!r} registered twice")
    _REGISTRY[cls.kind] = cls
    return cls


def scorer_class(kind: str) -> type[Scorer]:
    from selectd import scorers  # noqa: F401  (importing the package registers every scorer)

    try:
        return _REGISTRY[kind]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown scorer type {kind!r}; known types: {known}") from None


def scorer_kinds() -> list[str]:
    from selectd import scorers  # noqa: F401

    return sorted(_REGISTRY)
