"""Scorers, registered by import. Each module defines one or more :class:`Scorer` subclasses."""
from selectd.scorers.base import Scorer, ScorerOptions, Signals, register, scorer_class, scorer_kinds
from selectd.scorers import fasttext  # noqa: F401  (kind "fasttext": exported fastText classifiers on ONNX Runtime)
from selectd.scorers import transformer  # noqa: F401  (kind "transformer": Hugging Face classifiers on ONNX Runtime)
from selectd.scorers import causal_lm  # noqa: F401  (kinds "causal_lm", "color_filter": causal LMs on ONNX Runtime)
from selectd.scorers import heuristics  # noqa: F401  (kinds gopher_quality, gopher_repetition, c4_quality, fineweb_quality: datatrove's filters)
from selectd.scorers import dedup  # noqa: F401  (kinds exact_dedup, minhash_dedup: duplicates against the [dedup] store)

__all__ = ["Scorer", "ScorerOptions", "Signals", "register", "scorer_class", "scorer_kinds"]
