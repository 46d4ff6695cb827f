"""Scorers, registered by import. Each module defines one or more :class:`Scorer` subclasses."""
from selectd.scorers.base import Scorer, ScorerOptions, Signals, register, scorer_class, scorer_kinds
from selectd.scorers import fasttext  # noqa: F401  (kind "fasttext": exported fastText classifiers on ONNX Runtime)
from selectd.scorers import transformer  # noqa: F401  (kind "transformer": Hugging Face classifiers on ONNX Runtime)

__all__ = ["Scorer", "ScorerOptions", "Signals", "register", "scorer_class", "scorer_kinds"]
