"""Scorers, registered by import. Each module defines one or more :class:`Scorer` subclasses."""
from selectd.scorers.base import Scorer, ScorerOptions, Signals, register, scorer_class, scorer_kinds

__all__ = ["Scorer", "ScorerOptions", "Signals", "register", "scorer_class", "scorer_kinds"]
