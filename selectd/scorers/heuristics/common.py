"""What the four rule scorers share: options base, rule building, line duplicate counting."""
from __future__ import annotations

from typing import Any, ClassVar, Iterable, Sequence

import numpy as np
from pydantic import field_validator

from selectd.scorers.base import Scorer, ScorerOptions
from selectd.text import spacy_tables
from selectd.text.vocabulary import WordTokenizer, shared_tokenizer, tokenizer_language


class RuleOptions(ScorerOptions):
    #: datatrove's ``language`` argument (selects its word tokenizer)
    language: str = "eng"

    @field_validator("language")
    @classmethod
    def _tokenizer_exists(cls, value: str) -> str:
        tokenizer_language(value)
        return value


class RuleScorer(Scorer):
    """A datatrove filter's signals; its thresholds become :class:`selectd.thresholds.Rule` entries."""

    Options: ClassVar[type[RuleOptions]] = RuleOptions
    #: the datatrove class whose ``filter`` this scorer reproduces
    reference: ClassVar[str]

    def __init__(self, name: str, options: RuleOptions):
        super().__init__(name, options)
        self.tokenizer: WordTokenizer = shared_tokenizer()

    def versions(self) -> dict[str, str]:
        return {
            "reference": f"datatrove=={spacy_tables.DATATROVE_VERSION} {self.reference}",
            "word_split": f"spaCy {spacy_tables.SPACY_VERSION} en tokenizer (ported)",
        }


def rule(signal: str, reason: str, *, min: float | None = None, max: float | None = None) -> dict[str, Any]:
    return {"signal": signal, "reason": reason, "min": min, "max": max}


def enabled(threshold: float | None) -> bool:
    """datatrove tests its thresholds for truth: ``None`` and ``0`` both switch a check off."""
    return bool(threshold)


def duplicates(elements: Iterable[str]) -> tuple[int, int]:
    """datatrove's ``find_duplicates``: how many elements repeat an earlier one, and their characters."""
    seen: set[str] = set()
    count = chars = 0
    for element in elements:
        if element in seen:
            count += 1
            chars += len(element)
        else:
            seen.add(element)
    return count, chars


def ratio(numerator: Sequence[float] | np.ndarray, denominator: Sequence[float] | np.ndarray) -> np.ndarray:
    """Element-wise division where x/0 is NaN (a rule on it then fails rather than crashing)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = numerator / denominator
    out[denominator == 0] = np.nan
    return out
