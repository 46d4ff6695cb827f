"""Gopher quality and repetition signals, as datatrove 0.10.1's ``GopherQualityFilter`` and
``GopherRepetitionFilter`` compute them (Rae et al. 2021, table A1), with its default thresholds.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from pydantic import Field, field_validator

from selectd.scorers.base import Signals, register
from selectd.signal_kinds import SignalKind
from selectd.scorers.heuristics.common import RuleOptions, RuleScorer, duplicates, enabled, ratio, rule
from selectd.text.vocabulary import TokenizedBatch

try:
    from selectd.scorers.heuristics import _gopher as _compiled
except ImportError:  # built without a C compiler: the numpy / Python code below gives the same results, slower
    _compiled = None

STOP_WORDS = ["the", "be", "to", "of", "and", "that", "have", "with"]


class GopherQualityOptions(RuleOptions):
    """datatrove ``GopherQualityFilter`` arguments; ``None`` (or 0) switches a check off."""

    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    #: datatrove's (misleading) name: the minimum share of words that contain a letter
    max_non_alpha_words_ratio: float | None = 0.8
    min_stop_words: int | None = 2
    stop_words: list[str] = Field(default_factory=lambda: list(STOP_WORDS))


@register
class GopherQuality(RuleScorer):
    """Word count, mean word length, symbol ratios, bullet / ellipsis lines, alphabetic words, stop words.

    Words are datatrove's (spaCy ``en`` tokens); "non-symbol words" have a character outside
    datatrove's punctuation set and are what the length checks count.
    """

    kind = "gopher_quality"
    Options = GopherQualityOptions
    reference = "GopherQualityFilter"

    def __init__(self, name: str, options: GopherQualityOptions):
        super().__init__(name, options)
        self._stop_ids = np.asarray(
            sorted({self.tokenizer.vocab.intern(word) for word in options.stop_words}), dtype=np.int64
        )

    def score(self, texts: Sequence[str]) -> Signals:
        batch = self.tokenizer.tokenize(texts)
        vocab = self.tokenizer.vocab
        ids = batch.ids
        words = batch.counts.astype(np.float64)
        is_word = vocab.is_word[ids]
        non_symbol_words = batch.per_doc_sum(is_word)
        hashes = [text.count("#") for text in texts]
        ellipses = [text.count("...") + text.count("…") for text in texts]
        bullet_lines, ellipsis_lines, lines = line_shapes(texts)
        return {
            "words": words,
            "non_symbol_words": non_symbol_words,
            "mean_word_length": ratio(batch.per_doc_sum(np.where(is_word, vocab.length[ids], 0)), non_symbol_words),
            "hash_word_ratio": ratio(hashes, words),
            "ellipsis_word_ratio": ratio(ellipses, words),
            "bullet_lines_ratio": ratio(bullet_lines, lines),
            "end_ellipsis_lines_ratio": ratio(ellipsis_lines, lines),
            "alpha_words_ratio": ratio(batch.per_doc_sum(vocab.has_alpha[ids]), words),
            "stop_words": _distinct_members(batch, self._stop_ids),
        }

    def signal_kinds(self) -> dict[str, SignalKind]:
        return {"words": SignalKind.COUNT, "non_symbol_words": SignalKind.COUNT, "stop_words": SignalKind.COUNT,
                "mean_word_length": SignalKind.LENGTH,
                **dict.fromkeys(("hash_word_ratio", "ellipsis_word_ratio", "bullet_lines_ratio",
                                 "end_ellipsis_lines_ratio", "alpha_words_ratio"), SignalKind.PROBABILITY)}

    def default_rules(self) -> list[dict[str, Any]]:
        o: GopherQualityOptions = self.options
        rules = []
        if enabled(o.min_doc_words):
            rules.append(rule("non_symbol_words", "gopher_short_doc", min=o.min_doc_words))
        if enabled(o.max_doc_words):
            rules.append(rule("non_symbol_words", "gopher_long_doc", max=o.max_doc_words))
        if enabled(o.min_avg_word_length):
            rules.append(rule("mean_word_length", "gopher_below_avg_threshold", min=o.min_avg_word_length))
        if enabled(o.max_avg_word_length):
            rules.append(rule("mean_word_length", "gopher_above_avg_threshold", max=o.max_avg_word_length))
        if enabled(o.max_symbol_word_ratio):
            rules.append(rule("hash_word_ratio", "gopher_too_many_hashes", max=o.max_symbol_word_ratio))
            rules.append(rule("ellipsis_word_ratio", "gopher_too_many_ellipsis", max=o.max_symbol_word_ratio))
        if enabled(o.max_bullet_lines_ratio):
            rules.append(rule("bullet_lines_ratio", "gopher_too_many_bullets", max=o.max_bullet_lines_ratio))
        if enabled(o.max_ellipsis_lines_ratio):
            rules.append(rule("end_ellipsis_lines_ratio", "gopher_too_many_end_ellipsis", max=o.max_ellipsis_lines_ratio))
        if enabled(o.max_non_alpha_words_ratio):
            rules.append(rule("alpha_words_ratio", "gopher_below_alpha_threshold", min=o.max_non_alpha_words_ratio))
        if enabled(o.min_stop_words):
            rules.append(rule("stop_words", "gopher_enough_stop_words", min=o.min_stop_words))
        return rules


def line_shapes(texts: Sequence[str], implementation: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per text: lines starting with a bullet, lines ending with an ellipsis, lines (``splitlines``).
    ``implementation``: as :func:`key_counts`."""
    if _implementation_is_compiled(implementation):
        shapes = np.empty((3, len(texts)), dtype=np.int64)
        _compiled.line_shapes(texts, *shapes)
        return shapes[0], shapes[1], shapes[2]
    bullets, ellipses, counts = [], [], []
    for text in texts:
        lines = text.splitlines()
        bullets.append(sum(1 for line in lines if line.lstrip().startswith(("•", "-"))))
        ellipses.append(sum(1 for line in lines if line.rstrip().endswith(("...", "…"))))
        counts.append(len(lines))
    return np.asarray(bullets, dtype=np.int64), np.asarray(ellipses, dtype=np.int64), np.asarray(counts, dtype=np.int64)


def _distinct_members(batch: TokenizedBatch, member_ids: np.ndarray) -> np.ndarray:
    """Per document, how many distinct tokens of ``member_ids`` occur in it."""
    n_docs = len(batch.offsets) - 1
    if not len(member_ids) or not len(batch.ids):
        return np.zeros(n_docs)
    doc_of_token = np.repeat(np.arange(n_docs), batch.counts)
    hits = np.isin(batch.ids, member_ids)
    pairs = np.unique(doc_of_token[hits] * (int(batch.ids.max()) + 1) + batch.ids[hits])
    return np.bincount(pairs // (int(batch.ids.max()) + 1), minlength=n_docs).astype(np.float64)


# --- repetition ------------------------------------------------------------------------------------

# odd 64-bit multiplier for rolling n-gram hashes of token ids (arithmetic wraps mod 2**64)
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
_DOC_SALT = np.uint64(0xD6E8FEB86659FD93)


class GopherRepetitionOptions(RuleOptions):
    """datatrove ``GopherRepetitionFilter`` arguments; ``None`` (or 0) switches a check off."""

    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    #: (n, max share of characters in the most frequent n-gram)
    top_n_grams: list[tuple[int, float]] = [(2, 0.2), (3, 0.18), (4, 0.16)]
    #: (n, max share of characters in repeated n-grams)
    dup_n_grams: list[tuple[int, float]] = [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]

    @field_validator("top_n_grams", "dup_n_grams")
    @classmethod
    def _positive_n(cls, value: list[tuple[int, float]]) -> list[tuple[int, float]]:
        for n, _ in value:
            if n < 1:
                raise ValueError(f"n-gram size must be at least 1, got {n}")
        return value


@register
class GopherRepetition(RuleScorer):
    """Duplicate line / paragraph shares (count and characters) and n-gram repetition shares.

    ``top_<n>_gram_char_frac``: characters of the most frequent n-gram (ties: the first seen) times
    its count, over the document's characters. ``dup_<n>_gram_char_frac``: characters of n-grams
    that repeat an earlier one, scanning left to right and skipping past each repeat (datatrove's
    greedy scan). n-grams are compared as token sequences; datatrove compares the tokens glued
    together without a separator, which differs only when two token sequences glue to the same
    string.
    """

    kind = "gopher_repetition"
    Options = GopherRepetitionOptions
    reference = "GopherRepetitionFilter"

    def score(self, texts: Sequence[str]) -> Signals:
        o: GopherRepetitionOptions = self.options
        n_docs = len(texts)
        chars = np.asarray([len(text) for text in texts], dtype=np.float64)
        signals = {"chars": chars}
        for name in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"):
            signals[name] = np.zeros(n_docs)
        for i, text in enumerate(texts):
            if not text:
                continue
            paragraphs = _paragraphs(text)
            count, duplicate_chars = duplicates(paragraphs)
            signals["dup_para_frac"][i] = count / len(paragraphs)
            signals["dup_para_char_frac"][i] = duplicate_chars / len(text)
            lines = _lines(text)
            count, duplicate_chars = duplicates(lines)
            signals["dup_line_frac"][i] = count / len(lines)
            signals["dup_line_char_frac"][i] = duplicate_chars / len(text)
        batch = self.tokenizer.tokenize(texts)
        top, repeated = _ngram_repetition(batch, self.tokenizer.vocab.length,
                                          [n for n, _ in o.top_n_grams], [n for n, _ in o.dup_n_grams])
        safe_chars = np.maximum(chars, 1)
        for n, values in top.items():
            signals[f"top_{n}_gram_char_frac"] = values / safe_chars
        for n, values in repeated.items():
            signals[f"dup_{n}_gram_char_frac"] = values / safe_chars
        return signals

    def signal_kinds(self) -> dict[str, SignalKind]:
        o: GopherRepetitionOptions = self.options
        shares = ["dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac",
                  *(f"top_{n}_gram_char_frac" for n, _ in o.top_n_grams),
                  *(f"dup_{n}_gram_char_frac" for n, _ in o.dup_n_grams)]
        return {"chars": SignalKind.COUNT, **dict.fromkeys(shares, SignalKind.PROBABILITY)}

    def default_rules(self) -> list[dict[str, Any]]:
        o: GopherRepetitionOptions = self.options
        rules = [rule("chars", "empty", min=1)]
        for signal in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"):
            threshold = getattr(o, signal)
            if enabled(threshold):
                rules.append(rule(signal, signal, max=threshold))
        rules += [rule(f"top_{n}_gram_char_frac", f"top_{n}_gram", max=limit) for n, limit in o.top_n_grams]
        rules += [rule(f"dup_{n}_gram_char_frac", f"duplicated_{n}_n_grams", max=limit) for n, limit in o.dup_n_grams]
        return rules


# datatrove splits with re.split(r"\n{2,}", text.strip()) and re.split("\n+", text); these give the
# same lists (tests/test_rules.py) with str.split, about ten times faster than the regex scan.
def _paragraphs(text: str) -> list[str]:
    """``re.split(r"\n{2,}", text.strip())``: a run of k newlines leaves k // 2 - 1 empty parts
    and, when k is odd, one newline at the start of the next part."""
    return [part[1:] if part[:1] == "\n" else part for part in text.strip().split("\n\n") if part] or [""]


def _lines(text: str) -> list[str]:
    """``re.split("\n+", text)``: empty parts only at the ends (text starting / ending with a newline)."""
    parts = text.split("\n")
    if len(parts) < 3:
        return parts
    return [parts[0], *filter(None, parts[1:-1]), parts[-1]]


def _ngram_repetition(batch: TokenizedBatch, token_lengths: np.ndarray, top_ns: list[int],
                      dup_ns: list[int]) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per document: characters of the most frequent n-gram times its count (``top_ns``), and
    characters of greedily counted repeated n-grams (``dup_ns``), for the whole batch at once.

    n-grams are rolling 64-bit hashes of token ids salted with the document index. Counting is
    done on *candidate* positions only: an (n+1)-gram can repeat only where its leading n-gram
    repeats, so after the first full count each larger n looks at a shrinking set of positions.
    """
    n_docs = len(batch.offsets) - 1
    top = {n: np.zeros(n_docs) for n in top_ns}
    repeated = {n: np.zeros(n_docs) for n in dup_ns}
    wanted = set(top_ns) | set(dup_ns)
    n_tokens = len(batch.ids)
    if not n_tokens or not wanted:
        return top, repeated
    doc_of_token = np.repeat(np.arange(n_docs), batch.counts)
    doc_end = batch.offsets[1:][doc_of_token]
    doc_start = batch.offsets[:-1]
    cumulative = np.concatenate([[0], np.cumsum(token_lengths[batch.ids])])
    tokens = batch.ids.astype(np.uint64)
    salted = doc_of_token.astype(np.uint64) * _DOC_SALT
    # positions whose (n-1)-gram repeats (every position before the first count) and the
    # n-gram hash at each of them: later n hash only the shrinking candidate set
    candidates = np.arange(n_tokens)
    hashes = tokens.copy()
    for n in range(1, max(wanted) + 1):
        if n > 1:
            fits = candidates + n <= doc_end[candidates]  # the whole n-gram inside its document
            candidates, hashes = candidates[fits], hashes[fits]
            hashes = hashes * _HASH_MULTIPLIER + tokens[candidates + n - 1]
        if not len(candidates):
            break
        if n not in wanted:
            continue  # counting only narrows the candidates; the next n counts them anyway
        keys = hashes + salted[candidates]
        count_at = key_counts(keys)
        if n in top:
            top[n] = _top_chars(n, candidates, count_at, doc_of_token, doc_start, batch.counts, cumulative)
        repeats = count_at > 1
        candidates, hashes, keys = candidates[repeats], hashes[repeats], keys[repeats]
        if n in repeated and len(candidates):
            repeated[n] = greedy_repeated_chars(n, candidates, keys, cumulative[candidates + n] - cumulative[candidates],
                                                doc_of_token[candidates], n_docs)
    return top, repeated


def _top_chars(n: int, positions: np.ndarray, count_at: np.ndarray, doc_of_token: np.ndarray,
               doc_start: np.ndarray, doc_tokens: np.ndarray, cumulative: np.ndarray) -> np.ndarray:
    """Characters (joined with spaces) of each document's most frequent n-gram times its count.

    Ties go to the n-gram seen first (``Counter.most_common`` keeps insertion order). Documents
    whose n-grams are all unique (none among ``positions`` repeats) take their first n-gram, once.
    """
    result = np.zeros(len(doc_start))
    has_ngram = doc_tokens >= n
    first = doc_start[has_ngram]
    result[has_ngram] = cumulative[first + n] - cumulative[first] + n - 1
    repeats = count_at > 1
    if repeats.any():
        position, count = positions[repeats], count_at[repeats]
        doc = doc_of_token[position]
        order = np.lexsort((position, -count, doc))  # per document: highest count, then earliest
        doc_sorted = doc[order]
        best = order[np.flatnonzero(np.r_[True, doc_sorted[1:] != doc_sorted[:-1]])]
        best_position = position[best]
        result[doc[best]] = (cumulative[best_position + n] - cumulative[best_position] + n - 1) * count[best]
    return result


def _implementation_is_compiled(implementation: str) -> bool:
    """``compiled`` (``_gopher.c``, built by ``pip install -e``), ``python`` (numpy and Python),
    or ``auto``: compiled when built."""
    if implementation not in ("auto", "compiled", "python"):
        raise ValueError(f"unknown implementation {implementation!r}; use auto, compiled or python")
    if implementation == "compiled" and _compiled is None:
        raise ImportError("selectd.scorers.heuristics._gopher is not built (reinstall with a C compiler)")
    return implementation == "compiled" or (implementation == "auto" and _compiled is not None)


def key_counts(keys: np.ndarray, implementation: str = "auto") -> np.ndarray:
    """How many times each position's key occurs among ``keys`` (uint64), as int64. Compiled: one
    hash-table pass; otherwise numpy's sort-based unique, the same counts."""
    if _implementation_is_compiled(implementation):
        counts = np.empty(len(keys), dtype=np.int64)
        _compiled.key_counts(np.ascontiguousarray(keys, dtype=np.uint64), counts)
        return counts
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.int64)


def greedy_repeated_chars(n: int, positions: np.ndarray, keys: np.ndarray, chars: np.ndarray,
                          docs: np.ndarray, n_docs: int, implementation: str = "auto") -> np.ndarray:
    """datatrove's ``find_all_duplicate`` scan per document, visiting only n-grams that occur more
    than once: a unique n-gram is never in the seen set, so the scan just steps over it.

    ``positions`` (ascending within each document), ``keys``, ``chars`` and ``docs`` (ascending)
    describe the candidate n-grams. ``implementation``: as :func:`key_counts`.
    """
    totals = np.zeros(n_docs)
    if _implementation_is_compiled(implementation):
        _compiled.greedy_repeated_chars(n, np.ascontiguousarray(positions, dtype=np.int64),
                                        np.ascontiguousarray(keys, dtype=np.uint64),
                                        np.ascontiguousarray(chars, dtype=np.int64),
                                        np.ascontiguousarray(docs, dtype=np.int64), totals)
        return totals
    current_doc = -1
    seen: set[int] = set()
    next_position = total = 0
    for position, key, length, doc in zip(positions.tolist(), keys.tolist(), chars.tolist(), docs.tolist()):
        if doc != current_doc:
            if current_doc >= 0:
                totals[current_doc] = total
            current_doc, seen, next_position, total = doc, set(), 0, 0
        if position < next_position:
            continue  # inside a repeat the scan jumped over
        if key in seen:
            total += length
            next_position = position + n
        else:
            seen.add(key)
            next_position = position + 1
    if current_doc >= 0:
        totals[current_doc] = total
    return totals
