"""C4 quality signals, as datatrove 0.10.1's ``C4QualityFilter`` computes them (Raffel et al. 2020).

datatrove's filter also *rewrites* the document: it keeps only the lines that pass the line
filters. selectd only decides; the text goes out unchanged, and the share of lines and characters
C4 would keep is emitted as signals instead.
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np

from selectd.scorers.base import Signals, register
from selectd.scorers.heuristics.common import RuleOptions, RuleScorer, rule
from selectd.signal_kinds import SignalKind
from selectd.text.vocabulary import WordTokenizer

CITATION_REGEX = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
POLICY_SUBSTRINGS = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)


class C4QualityOptions(RuleOptions):
    """datatrove ``C4QualityFilter`` arguments (``split_paragraph=True``, its default, only)."""

    remove_citations: bool = True
    filter_no_terminal_punct: bool = True
    #: -1 switches the check off
    min_num_sentences: int = 5
    min_words_per_line: int = 3
    #: -1 switches the check off
    max_word_length: int = 1000
    filter_lorem_ipsum: bool = True
    filter_javascript: bool = True
    filter_curly_bracket: bool = True
    filter_policy: bool = True


@register
class C4Quality(RuleScorer):
    """Sentences left after C4's line filters, and whether the document hits a drop-the-page rule.

    Lines are scanned in order like datatrove does; the scan stops at the first kept-so-far line
    with "lorem ipsum" (``lorem_ipsum`` = 1) or a curly bracket (``curly_bracket`` = 1), so the
    reason is the one datatrove gives. Sentences are counted on each kept line with spaCy's
    sentencizer rule (a sentence starts at a word token after a sentence-ending character) over
    datatrove's word split. A run of several spaces inside a line, which spaCy keeps as a
    whitespace token, is not counted as a possible sentence start.
    """

    kind = "c4_quality"
    Options = C4QualityOptions
    reference = "C4QualityFilter"

    def score(self, texts: Sequence[str]) -> Signals:
        n_docs = len(texts)
        lines = np.zeros(n_docs)
        kept_lines = np.zeros(n_docs)
        kept_chars = np.zeros(n_docs)
        lorem = np.zeros(n_docs)
        curly = np.zeros(n_docs)
        kept: list[str] = []  # every kept line, batch-wide
        doc_of_line: list[int] = []
        for i, text in enumerate(texts):
            scan = _scan_lines(text, self.options)
            lines[i] = scan.lines
            kept_lines[i] = len(scan.kept)
            kept_chars[i] = sum(map(len, scan.kept))
            lorem[i] = scan.stop == "lorem_ipsum"
            curly[i] = scan.stop == "curly_bracket"
            kept.extend(scan.kept)
            doc_of_line.extend([i] * len(scan.kept))
        sentences = np.bincount(
            np.asarray(doc_of_line, dtype=np.int64),
            weights=_sentences_per_line(self.tokenizer, kept),
            minlength=n_docs,
        )
        total_chars = np.asarray([max(len(text), 1) for text in texts], dtype=np.float64)
        return {
            "lines": lines,
            "kept_lines": kept_lines,
            "kept_chars_ratio": kept_chars / total_chars,
            "lorem_ipsum": lorem,
            "curly_bracket": curly,
            "sentences": sentences,
        }

    def signal_kinds(self) -> dict[str, SignalKind]:
        # lorem_ipsum and curly_bracket are 0/1 flags
        return {"lines": SignalKind.COUNT, "kept_lines": SignalKind.COUNT, "sentences": SignalKind.COUNT,
                **dict.fromkeys(("kept_chars_ratio", "lorem_ipsum", "curly_bracket"), SignalKind.PROBABILITY)}

    def default_rules(self) -> list[dict[str, Any]]:
        o: C4QualityOptions = self.options
        rules = []
        if o.filter_lorem_ipsum:
            rules.append(rule("lorem_ipsum", "lorem_ipsum", max=0))
        if o.filter_curly_bracket:
            rules.append(rule("curly_bracket", "curly_bracket", max=0))
        if o.min_num_sentences != -1:
            rules.append(rule("sentences", "too_few_sentences", min=o.min_num_sentences))
        return rules


class _Scan:
    __slots__ = ("lines", "kept", "stop")

    def __init__(self) -> None:
        self.lines = 0
        self.kept: list[str] = []
        self.stop: str | None = None


def _scan_lines(text: str, o: C4QualityOptions) -> _Scan:
    """datatrove's line loop: which lines C4 keeps, and the page-level rule that stopped it."""
    scan = _Scan()
    lines = text.splitlines()
    scan.lines = len(lines)  # lines looked at: all of them unless a page-level rule stops the loop
    for number, line in enumerate(lines, 1):
        # The checks up to the page-level ones only drop the line, so their order is free: the
        # cheap terminal-punctuation test runs first and most lines never get split into words.
        # The words are still those of the line before citation removal, as in datatrove.
        line = words_of = line.strip()
        if o.remove_citations and "[" in line:
            line = CITATION_REGEX.sub("", line)
        if o.filter_no_terminal_punct and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
            continue
        words = words_of.split()
        # a word longer than the limit needs a line longer than it: skip the word scan otherwise
        if o.max_word_length != -1 and len(words_of) > o.max_word_length and any(
            len(word) > o.max_word_length for word in words
        ):
            continue
        if len(words) < o.min_words_per_line:
            continue
        lowered = line.lower()
        if o.filter_lorem_ipsum and "lorem ipsum" in lowered:
            scan.stop, scan.lines = "lorem_ipsum", number
            break
        if o.filter_javascript and "javascript" in lowered:
            continue
        if o.filter_curly_bracket and "{" in line:
            scan.stop, scan.lines = "curly_bracket", number
            break
        if o.filter_policy and any(phrase in lowered for phrase in POLICY_SUBSTRINGS):
            continue
        scan.kept.append(line)
    return scan


def _sentences_per_line(tokenizer: WordTokenizer, lines: list[str]) -> np.ndarray:
    """spaCy sentencizer sentence count of each line, vectorised.

    Within a line, tokens that are punctuation but not sentence enders leave the state alone, so
    only enders and openers matter: a new sentence starts at each opener whose previous
    ender-or-opener in the same line is an ender. A line always has at least one sentence.
    """
    if not lines:
        return np.zeros(0)
    batch = tokenizer.tokenize(lines)
    line_of_token = np.repeat(np.arange(len(lines)), batch.counts)
    ends = tokenizer.vocab.ends_sentence[batch.ids]
    opens = tokenizer.vocab.opens_sentence[batch.ids]
    relevant = ends | opens
    line_r, ends_r, opens_r = line_of_token[relevant], ends[relevant], opens[relevant]
    starts = opens_r[1:] & ends_r[:-1] & (line_r[1:] == line_r[:-1])
    return 1 + np.bincount(line_r[1:][starts], minlength=len(lines)).astype(np.float64)
