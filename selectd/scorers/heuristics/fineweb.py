"""FineWeb quality signals, as datatrove 0.10.1's ``FineWebQualityFilter`` computes them."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from selectd.scorers.base import Signals, register
from selectd.scorers.heuristics.common import RuleOptions, RuleScorer, duplicates, ratio, rule
from selectd.signal_kinds import SignalKind
from selectd.text import spacy_tables


class FineWebQualityOptions(RuleOptions):
    """datatrove ``FineWebQualityFilter`` arguments (``line_punct_exclude_zero=False`` only)."""

    line_punct_thr: float = 0.12
    #: characters that end a line "with punctuation"; default: datatrove's TERMINAL_PUNCTUATION
    stop_chars: tuple[str, ...] | None = None
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3


@register
class FineWebQuality(RuleScorer):
    """Over the non-blank lines: share ending in terminal punctuation, share of short lines, share
    of characters in duplicated lines; and newlines per word (a list-like page)."""

    kind = "fineweb_quality"
    Options = FineWebQualityOptions
    reference = "FineWebQualityFilter"

    def __init__(self, name: str, options: FineWebQualityOptions):
        super().__init__(name, options)
        self._stop_chars = (options.stop_chars if options.stop_chars is not None
                           else tuple(spacy_tables.TERMINAL_PUNCTUATION))
        # str.endswith(tuple) tries every entry; with single characters a set lookup is the same test
        self._stop_char_set = frozenset(self._stop_chars) if all(len(c) == 1 for c in self._stop_chars) else None

    def score(self, texts: Sequence[str]) -> Signals:
        o: FineWebQualityOptions = self.options
        n_docs = len(texts)
        lines = np.zeros(n_docs)
        punct_lines = np.zeros(n_docs)
        short_lines = np.zeros(n_docs)
        duplicate_chars = np.zeros(n_docs)
        for i, text in enumerate(texts):
            non_blank = [line for line in text.split("\n") if line.strip()]
            lines[i] = len(non_blank)
            # map over C-level predicates: no Python frame per line
            if self._stop_char_set is not None:
                punct_lines[i] = sum(map(self._stop_char_set.__contains__, [line[-1] for line in non_blank]))
            else:
                punct_lines[i] = sum(1 for line in non_blank if line.endswith(self._stop_chars))
            short_lines[i] = sum(map(o.short_line_length.__ge__, map(len, non_blank)))
            duplicate_chars[i] = duplicates(non_blank)[1]
        words = self.tokenizer.token_counts(texts)
        return {
            "lines": lines,
            "line_punct_ratio": ratio(punct_lines, lines),
            "short_line_ratio": ratio(short_lines, lines),
            "char_dup_ratio": ratio(duplicate_chars, [len(text) - text.count("\n") for text in texts]),
            "list_ratio": ratio([text.count("\n") for text in texts], words),
        }

    def signal_kinds(self) -> dict[str, SignalKind]:
        return {"lines": SignalKind.COUNT, **dict.fromkeys(
            ("line_punct_ratio", "short_line_ratio", "char_dup_ratio", "list_ratio"), SignalKind.PROBABILITY)}

    def default_rules(self) -> list[dict[str, Any]]:
        o: FineWebQualityOptions = self.options
        return [
            rule("lines", "empty", min=1),
            rule("line_punct_ratio", "line_punct_ratio", min=o.line_punct_thr),
            rule("short_line_ratio", "short_line_ratio", max=o.short_line_thr),
            rule("char_dup_ratio", "char_dup_ratio", max=o.char_duplicates_ratio),
            rule("list_ratio", "list_ratio", max=o.new_line_ratio),
        ]
