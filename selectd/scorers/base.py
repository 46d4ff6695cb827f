"""The scorer interface every stage of the cascade implements.

A scorer takes a batch of texts and returns a struct of arrays: one numpy array per signal, each
with one entry per document (float arrays for scores, object arrays of ``str`` for categorical
signals such as a language code). Decisions are not made here: a stage turns signals into
keep/reject with :class:`selectd.thresholds.Rule` thresholds, so a filter's defaults (datatrove's
thresholds for the rule scorers) and a user's overrides go through the same code.

Each scorer declares the preprocessing its model was trained with (``preprocess``), and the
cascade always calls :meth:`Scorer.run`, which applies it: a model is never fed text prepared
differently from its training data.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from selectd.signal_kinds import SignalKind

Signals = dict[str, np.ndarray]


class ScorerOptions(BaseModel):
    """Base for each scorer's own options table (``[stages.options]``); unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Scorer(ABC):
    #: the ``type`` a stage names in the config
    kind: ClassVar[str]
    #: pydantic model of this scorer's ``options`` table
    Options: ClassVar[type[ScorerOptions]] = ScorerOptions

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

    def warmup(self) -> None:
        """Run once after load so the first real batch does not pay for lazy initialisation."""
        self.run(["warm up the scorer with a short sentence of text."])

    def close(self) -> None:
        """Release resources (sessions, threads)."""

    # --- what the cascade calls -------------------------------------------------------------
    def run(self, texts: Sequence[str]) -> Signals:
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
