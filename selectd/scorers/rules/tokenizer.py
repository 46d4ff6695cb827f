"""datatrove's English word split (spaCy's ``en`` tokenizer), re-implemented without spaCy.

datatrove's Gopher and FineWeb filters count words with ``split_into_words(text, "eng")``, which runs
``spacy.blank("en")`` over the whole document, keeps each token's text and drops whitespace
tokens. spaCy tokenizes every whitespace-separated chunk on its own (special cases, then prefixes
and suffixes peeled off, then infixes split), so the result is a pure function of the chunk. We
port that algorithm (``spacy/tokenizer.pyx``: ``_split_affixes`` / ``_attach_tokens``) over the
same patterns and special cases (vendored in ``reference_tables.py``) and cache it per chunk:
text is Zipfian, so after warm-up most chunks are a dictionary hit, where datatrove (which
tokenizes inside spaCy's ``memory_zone``, with spaCy's cache off) pays the full pipeline per token.
New chunks (about one in five on the sample corpus even after thousands of documents: version
strings, URLs, code) take the ported algorithm. It runs in C (``_chunksplit.c``, built by
``pip install -e``; :func:`compiled_splitter`) on the same tables: the prefix, suffix and infix
regexes are compiled here to small matching programs (:func:`compile_program`), the URL regex
stays Python's and is called only where a URL is possible (:func:`url_prefilter`); the C code
also interns the tokens and computes their features. Without the extension :class:`EnglishSplitter`
does it in Python, made cheaper by memoising the affix split of the inner string and by trying
only the regex alternatives that can start or end with the character at hand; both give the
same tokens (tests/test_rules_tokenizer.py).

spaCy's last step, ``_apply_special_cases``, re-merges special cases that only show up after affix
splitting (``"):"`` in ``"(foo):"``); it is ported too, restricted to one chunk (a match spanning
whitespace never equals a special-case string, so spaCy leaves it alone as well).

Tokens are interned in a :class:`Vocabulary` holding per-token features (length, symbol-only,
has a letter, sentence punctuation) as numpy arrays, so the scorers compute their signals with
array operations over token ids instead of per-word Python. A scorer that needs only word counts
(FineWeb) skips all that: :meth:`WordTokenizer.token_counts` keeps one number per chunk.
"""
from __future__ import annotations

import functools
import logging
import re
import struct
import unicodedata
from re import _constants as sre, _parser as sre_parse  # the stdlib's own regex parser (3.11)
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from selectd.arrays import GrowingArray

from selectd.scorers.rules import reference_tables as tables

log = logging.getLogger(__name__)

#: languages whose datatrove word tokenizer is re-implemented here (datatrove's code, ISO 639-1)
SUPPORTED_LANGUAGES = {"eng": "en", "en": "en", "eng_Latn": "en"}

TERMINAL_PUNCTUATION = tuple(tables.TERMINAL_PUNCTUATION)
SENTENCE_PUNCT_CHARS = frozenset(tables.SENTENCE_PUNCT_CHARS)


#: longer than any fixed-length suffix alternative of spaCy's English suffixes ("km/h", "US$", ...)
_LONGEST_SUFFIX = 8
_ASCII_DIGIT = re.compile("[0-9]")
_INFIX_TRIGGER = re.compile("[.…,\\-–—~+*^:<>=/]|" + tables.ICON_CLASS)
_NON_PUNCTUATION = re.compile("[^" + re.escape(tables.GOPHER_PUNCTUATION) + "]")


def _edge_chars(pattern: str, last: bool) -> frozenset[int] | None:
    """Code points the first (``last=False``) or last character a match of ``pattern`` consumes
    can be, read from the parsed pattern; None when that is not known (then: any)."""
    return _sequence_edge(list(sre_parse.parse(pattern)), last)


def _sequence_edge(items: list, last: bool) -> frozenset[int] | None:
    for op, av in reversed(items) if last else items:
        if op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            continue  # zero width: anchors and lookarounds consume nothing
        return _node_edge(op, av, last)
    return None


def _node_edge(op, av, last: bool) -> frozenset[int] | None:
    if op == sre.LITERAL:
        return frozenset((av,))
    if op == sre.IN:
        chars: set[int] = set()
        for item_op, item in av:
            if item_op == sre.LITERAL:
                chars.add(item)
            elif item_op == sre.RANGE:
                chars.update(range(item[0], item[1] + 1))
            else:
                return None  # negated class or category
        return frozenset(chars)
    if op == sre.BRANCH:
        chars = set()
        for branch in av[1]:
            edge = _sequence_edge(list(branch), last)
            if edge is None:
                return None
            chars |= edge
        return frozenset(chars)
    if op == sre.SUBPATTERN:
        return _sequence_edge(list(av[-1]), last)
    if op in (sre.MAX_REPEAT, sre.MIN_REPEAT) and av[0] > 0:
        return _sequence_edge(list(av[2]), last)
    return None


class _ByChar:
    """An alternation of regex pieces, re-compiled per character with only the pieces whose match
    can start (or end) with that character, in their original order: the leftmost match and the
    alternative chosen are unchanged, and the big shared character classes are tried far less."""

    def __init__(self, pieces: Sequence[str], anchor: str, last: bool):
        self._pieces = [piece + anchor for piece in pieces]
        self._edges = [_edge_chars(piece, last) for piece in pieces]
        self._compiled: dict[str, re.Pattern | None] = {}

    def get(self, char: str) -> re.Pattern | None:
        compiled = self._compiled.get(char, False)
        if compiled is False:
            code = ord(char)
            pieces = [piece for piece, edge in zip(self._pieces, self._edges) if edge is None or code in edge]
            compiled = re.compile("|".join(pieces)) if pieces else None
            self._compiled[char] = compiled
        return compiled


class EnglishSplitter:
    """spaCy's ``en`` tokenizer on one whitespace-free chunk."""

    def __init__(self, max_memo: int = 200_000) -> None:
        if "|".join(p + "$" for p in tables.EN_SUFFIXES) != tables.EN_SUFFIX_PATTERN or (
            "|".join(tables.EN_INFIXES) != tables.EN_INFIX_PATTERN
        ):
            raise RuntimeError("reference_tables.py is inconsistent: regenerate it with tables.py")
        # every prefix alternative is anchored with ^ (spaCy's compile_prefix_regex), so match()
        # finds what spaCy's search() finds without trying every start position
        self._prefix = re.compile(tables.EN_PREFIX_PATTERN).match
        self._suffixes = _ByChar(tables.EN_SUFFIXES, "$", last=True)
        self._infixes = _ByChar(tables.EN_INFIXES, "", last=False)
        self._url = re.compile(tables.EN_URL_PATTERN).match
        self._specials: dict[str, tuple[str, ...]] = tables.EN_SPECIAL_CASES
        #: affix split (before special-case merging) of strings seen, e.g. "word" inside "(word),"
        self._memo: dict[str, tuple[str, ...]] = {}
        self._max_memo = max_memo
        # spaCy's special-case matcher: special cases that affix splitting would cut, keyed by the
        # tokens they are cut into (spaCy's PhraseMatcher patterns)
        self._merges: dict[tuple[str, ...], tuple[str, ...]] = {}
        for string, tokens in self._specials.items():
            pieces = self._split(string, {}, None)
            if len(pieces) > 1:
                self._merges[pieces] = tokens
        self._longest_merge = max(map(len, self._merges), default=0)
        self._merge_starts = {pieces[0] for pieces in self._merges}
        #: special cases made of letters only: the one kind of letters-only chunk that is not one token
        self.letter_specials = frozenset(string for string in self._specials if string.isalpha())

    def chunk_tokens(self, chunk: str) -> tuple[str, ...]:
        """Tokens of one chunk (a maximal run of non-whitespace characters)."""
        if len(self._memo) >= self._max_memo:
            self._memo.clear()
        tokens = self._split(chunk, self._specials, self._memo)
        return self._merge_special_cases(tokens) if len(tokens) > 1 else tokens

    def _split(self, string: str, specials: dict[str, tuple[str, ...]],
               memo: dict[str, tuple[str, ...]] | None) -> tuple[str, ...]:
        """spaCy's ``_split_affixes`` + ``_attach_tokens``. Each pass of spaCy's loop peels at
        most one prefix and one suffix and goes on with the rest as if it were a new chunk, so
        the rest is split recursively (and memoised: a known word inside new punctuation is
        a dictionary hit)."""
        if not string:
            return ()
        if string in specials:
            return specials[string]
        if memo is not None:
            known = memo.get(string)
            if known is not None:
                return known
        if string.isalpha():
            tokens: tuple[str, ...] = (string,)  # letters match no prefix, suffix, infix or URL
        else:
            tokens = self._split_once(string, specials, memo)
        if memo is not None:
            memo[string] = tokens
        return tokens

    def _split_once(self, string: str, specials: dict[str, tuple[str, ...]],
                    memo: dict[str, tuple[str, ...]] | None) -> tuple[str, ...]:
        pre_len = self._prefix_len(string)
        if pre_len:
            prefix, minus_pre = string[:pre_len], string[pre_len:]
            if minus_pre and minus_pre in specials:
                return (prefix,) + specials[minus_pre]
        suf_len = self._suffix_len(string[pre_len:])
        if suf_len:
            suffix, minus_suf = string[-suf_len:], string[:-suf_len]
            if minus_suf and minus_suf in specials:
                return specials[minus_suf] + (suffix,)
        if pre_len and suf_len and pre_len + suf_len <= len(string):
            return (prefix,) + self._split(string[pre_len:-suf_len], specials, memo) + (suffix,)
        if pre_len:
            return (prefix,) + self._split(minus_pre, specials, memo)
        if suf_len:
            return self._split(minus_suf, specials, memo) + (suffix,)
        if "." in string and self._url(string):  # every URL the pattern accepts has a dot
            return (string,)
        return tuple(self._split_infixes(string))

    def _merge_special_cases(self, tokens: tuple[str, ...]) -> tuple[str, ...]:
        """spaCy's ``_apply_special_cases`` within one chunk: longest, then leftmost, matches first."""
        n = len(tokens)
        if not any(token in self._merge_starts for token in tokens[:-1]):
            return tokens
        matches = [
            (end - start, start, end)
            for start in range(n)
            for end in range(start + 2, min(n, start + self._longest_merge) + 1)
            if tokens[start:end] in self._merges
        ]
        if not matches:
            return tokens
        taken: set[int] = set()
        chosen: dict[int, int] = {}
        for _, start, end in sorted(matches, key=lambda match: (-match[0], match[1])):
            if start not in taken and end - 1 not in taken:
                chosen[start] = end
            taken.update(range(start, end))
        merged: list[str] = []
        index = 0
        while index < n:
            end = chosen.get(index)
            if end is None:
                merged.append(tokens[index])
                index += 1
            else:
                merged.extend(self._merges[tokens[index:end]])
                index = end
        return tuple(merged)

    # The pre-checks below skip a regex search where no alternative of spaCy's pattern can match;
    # tests/test_rules_tokenizer.py checks the whole split against spaCy itself.
    def _prefix_len(self, string: str) -> int:
        # prefixes are punctuation / symbols, except the currencies US$, C$ and A$
        first = string[0]
        if first.isalnum() and first not in "UCA":
            return 0
        match = self._prefix(string)
        return match.end() - match.start() if match else 0

    def _suffix_len(self, string: str) -> int:
        """spaCy's suffix search. Every alternative is anchored with $; none ends in an ASCII digit;
        the ones ending in a letter are 's and units right after a digit; and apart from a run
        of dots none is longer than _LONGEST_SUFFIX (lookbehinds still see the text before ``pos``)."""
        if not string:
            return 0
        last = string[-1]
        if last in "0123456789":
            return 0
        if (last.isalpha() and string[-2:-1] not in ("'", "’")
                and not _ASCII_DIGIT.search(string, max(0, len(string) - _LONGEST_SUFFIX))):
            return 0
        pattern = self._suffixes.get(last)
        if pattern is None:
            return 0
        if len(string) <= _LONGEST_SUFFIX or string.endswith(".."):
            match = pattern.search(string)
        else:
            match = pattern.search(string, len(string) - _LONGEST_SUFFIX)
        return match.end() - match.start() if match else 0

    def _infix_matches(self, string: str) -> Iterator[re.Match]:
        """What ``finditer`` of spaCy's infix pattern yields, trying only where a match can start:
        every infix alternative begins with a character of _INFIX_TRIGGER."""
        end = 0
        for trigger in _INFIX_TRIGGER.finditer(string):
            position = trigger.start()
            if position < end:
                continue
            pattern = self._infixes.get(string[position])
            match = pattern.match(string, position) if pattern is not None else None
            if match:
                yield match
                end = match.end() if match.end() > position else position + 1

    def _split_infixes(self, string: str) -> list[str]:
        tokens: list[str] = []
        start = 0
        for match in self._infix_matches(string):
            infix_start, infix_end = match.start(), match.end()
            if infix_start == 0:
                continue  # spaCy ignores an infix at the very start
            if infix_start != start:
                tokens.append(string[start:infix_start])
            if infix_start != infix_end:
                tokens.append(string[infix_start:infix_end])
            start = infix_end
        if string[start:]:
            tokens.append(string[start:])
        return tokens

    def split(self, text: str) -> list[str]:
        """The word list datatrove's ``split_into_words(text, "eng")`` returns (uncached)."""
        return [token for chunk in text.split() for token in self.chunk_tokens(chunk)]


# ---- the C splitter (_chunksplit.c) -------------------------------------------------------------
# It runs EnglishSplitter's algorithm in C. Its regexes are compiled here, from the vendored
# patterns, to "programs": a list of alternatives in pattern order, each a sequence of nodes (one
# character from a set, a greedy repeat of one, ^, $, fixed-width lookarounds). Alternations inside
# a sequence are expanded into separate alternatives, which keeps the regex engine's first-match
# order unless a variable repeat comes before them (refused, as is anything else these nodes do
# not express exactly: the program is then not used).

_MAX_CODE_POINT = 0x10FFFF
_OP_SET, _OP_REPEAT, _OP_BEGIN, _OP_END, _OP_BEHIND, _OP_AHEAD = range(6)
_UNBOUNDED = 0xFFFFFFFF
_NODE = struct.Struct("<BBHIII")    # _chunksplit.c's Node
_ALT = struct.Struct("<IIiII")      # _chunksplit.c's Alt
_SET = struct.Struct("<2QII")       # _chunksplit.c's CharSet
_RANGE = struct.Struct("<II")

#: a set of code points as sorted, disjoint, non-adjacent inclusive ranges
CharRanges = tuple[tuple[int, int], ...]


class UnsupportedPattern(ValueError):
    """A regex construct the C splitter's programs do not express."""


def _normalized(ranges) -> CharRanges:
    merged: list[list[int]] = []
    for low, high in sorted(ranges):
        if merged and low <= merged[-1][1] + 1:
            merged[-1][1] = max(merged[-1][1], high)
        else:
            merged.append([low, high])
    return tuple((low, high) for low, high in merged)


def _complement(ranges: CharRanges) -> CharRanges:
    gaps, start = [], 0
    for low, high in ranges:
        if low > start:
            gaps.append((start, low - 1))
        start = high + 1
    if start <= _MAX_CODE_POINT:
        gaps.append((start, _MAX_CODE_POINT))
    return tuple(gaps)


def _char_ranges(op, av) -> CharRanges | None:
    """The code points one single-character regex item matches; None for other items."""
    if op == sre.LITERAL:
        return ((av, av),)
    if op == sre.NOT_LITERAL:
        return _complement(((av, av),))
    if op == sre.ANY:
        return _complement(((10, 10),))  # no DOTALL: anything but a newline
    if op != sre.IN:
        return None
    ranges, negate = [], False
    for item_op, item in av:
        if item_op == sre.NEGATE:
            negate = True
        elif item_op == sre.LITERAL:
            ranges.append((item, item))
        elif item_op == sre.RANGE:
            ranges.append(item)
        else:
            raise UnsupportedPattern(f"character class item {item_op} {item}")
    return _complement(_normalized(ranges)) if negate else _normalized(ranges)


def _expand(items: list) -> list[tuple[list[tuple], bool]]:
    """Alternatives of a parsed regex sequence, in match order: (nodes, has a variable repeat)."""
    alternatives: list[tuple[list[tuple], bool]] = [([], False)]

    def extend(options: list[tuple[list[tuple], bool]]) -> None:
        nonlocal alternatives
        if len(options) > 1 and any(variable for _, variable in alternatives):
            raise UnsupportedPattern("an alternation after a variable repeat")
        alternatives = [(nodes + more, variable or more_variable)
                        for nodes, variable in alternatives for more, more_variable in options]

    for op, av in items:
        chars = _char_ranges(op, av)
        if chars is not None:
            extend([([("set", chars)], False)])
        elif op == sre.AT and av in (sre.AT_BEGINNING, sre.AT_BEGINNING_STRING):
            extend([([("begin",)], False)])
        elif op == sre.AT and av in (sre.AT_END, sre.AT_END_STRING):
            extend([([("end",)], False)])  # chunks hold no newline, so $ is the end
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            direction, body = av
            sets = tuple(_char_ranges(*item) for item in body)
            if not sets or any(chars is None for chars in sets):
                raise UnsupportedPattern("a lookaround that is not a fixed run of characters")
            extend([([("behind" if direction < 0 else "ahead", op == sre.ASSERT_NOT, sets)], False)])
        elif op == sre.SUBPATTERN:
            _group, add_flags, del_flags, body = av
            if add_flags & ~re.UNICODE or del_flags:
                raise UnsupportedPattern("inline flags")
            extend(_expand(list(body)))
        elif op == sre.BRANCH:
            extend([alternative for branch in av[1] for alternative in _expand(list(branch))])
        elif op == sre.MAX_REPEAT:
            low, high, body = av
            chars = _char_ranges(*body[0]) if len(body) == 1 else None
            if chars is None:
                raise UnsupportedPattern("a repeat of more than one character")
            extend([([("repeat", chars, low, high)], low != high)])
        else:
            raise UnsupportedPattern(f"regex construct {op}")
    return alternatives


def _edge_ranges(nodes: list[tuple], last: bool) -> CharRanges:
    """The characters a match of ``nodes`` can begin (or end) with."""
    chars: list[tuple[int, int]] = []
    for node in reversed(nodes) if last else nodes:
        if node[0] == "set" or (node[0] == "repeat" and node[2] > 0):
            return _normalized(chars + list(node[1]))
        if node[0] == "repeat":
            chars.extend(node[1])
    raise UnsupportedPattern("an alternative that can match the empty string")


def ascii_bitmap(ranges: CharRanges) -> tuple[int, int]:
    bits = 0
    for low, high in ranges:
        if low < 128:
            bits |= ((1 << (min(high, 127) + 1)) - 1) ^ ((1 << low) - 1)
    return bits & 0xFFFFFFFFFFFFFFFF, bits >> 64


def _pack_set(chars: CharRanges, sets: list[bytes], ranges: list[bytes]) -> None:
    """Append _chunksplit.c's CharSet of ``chars`` to ``sets``, its non-ASCII ranges to ``ranges``."""
    wide = [(max(low, 128), high) for low, high in chars if high >= 128]
    sets.append(_SET.pack(*ascii_bitmap(chars), len(ranges), len(wide)))
    ranges.extend(_RANGE.pack(*pair) for pair in wide)


def compile_program(pattern: str, anchored_end: bool = False) -> tuple[bytes, bytes, bytes, bytes]:
    """``pattern`` as _chunksplit.c's program: packed (nodes, alternatives, sets, ranges)."""
    parsed = sre_parse.parse(pattern)
    if parsed.state.flags & ~(re.UNICODE | re.VERBOSE):
        raise UnsupportedPattern(f"flags {parsed.state.flags}")
    nodes: list[bytes] = []
    alternatives: list[bytes] = []
    sets: list[bytes] = []
    ranges: list[bytes] = []

    def add_set(chars: CharRanges) -> int:
        _pack_set(chars, sets, ranges)
        return len(sets) - 1

    for alternative, _ in _expand(list(parsed)):
        if anchored_end and alternative[-1] != ("end",):
            raise UnsupportedPattern("a suffix alternative not anchored at the end")
        first = len(nodes)
        width = 0
        for node in alternative:
            kind = node[0]
            if kind == "set":
                nodes.append(_NODE.pack(_OP_SET, 0, 1, add_set(node[1]), 0, 0))
                width += 1 if width >= 0 else 0
            elif kind == "repeat":
                high = _UNBOUNDED if node[3] == sre.MAXREPEAT else node[3]
                nodes.append(_NODE.pack(_OP_REPEAT, 0, 1, add_set(node[1]), node[2], high))
                width = -1 if width < 0 or high == _UNBOUNDED else width + high
            elif kind in ("begin", "end"):
                nodes.append(_NODE.pack(_OP_BEGIN if kind == "begin" else _OP_END, 0, 0, 0, 0, 0))
            else:
                set_indices = [add_set(chars) for chars in node[2]]
                nodes.append(_NODE.pack(_OP_BEHIND if kind == "behind" else _OP_AHEAD, node[1], len(node[2]),
                                        set_indices[0], 0, 0))
        first_chars = add_set(_edge_ranges(alternative, last=False))
        alternatives.append(_ALT.pack(first, len(alternative), width, first_chars,
                                      add_set(_edge_ranges(alternative, last=True))))
    return b"".join(nodes), b"".join(alternatives), b"".join(sets), b"".join(ranges)


def _min_dots(items) -> int:
    """The fewest '.' characters a match of a parsed regex sequence consumes (classes count 0)."""
    dots = 0
    for op, av in items:
        if op == sre.LITERAL and av == ord("."):
            dots += 1
        elif op == sre.SUBPATTERN:
            dots += _min_dots(av[-1])
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT):
            dots += av[0] * _min_dots(av[2])
        elif op == sre.BRANCH:
            dots += min(_min_dots(branch) for branch in av[1])
    return dots


def url_prefilter(pattern: str) -> tuple[int, CharRanges] | None:
    """What every string spaCy's URL pattern matches contains: ``(dots, tld)``: at least ``dots``
    '.' characters, or a '.' followed by two characters of ``tld``. Read from the pattern's host
    alternation (an IP address of four dotted numbers | ``(label\\.)+`` and a top-level domain of two
    or more ``tld`` characters), its only part that is not optional; None when the pattern is not
    of that shape (then the C splitter asks the regex about every candidate)."""
    items = list(sre_parse.parse(pattern))
    branches = [av for op, av in items if op == sre.BRANCH]
    optional = all(op == sre.AT or (op == sre.MAX_REPEAT and av[0] == 0) for op, av in items if op != sre.BRANCH)
    if len(branches) != 1 or not optional:
        return None
    dots, tld = None, []
    for alternative in branches[0][1]:
        alternative = list(alternative)
        if len(alternative) >= 2:
            (labels_op, labels), (tld_op, top) = alternative[-2:]
            top_chars = _char_ranges(*top[2][0]) if tld_op == sre.MAX_REPEAT and len(top[2]) == 1 else None
            if (labels_op == sre.MAX_REPEAT and labels[0] >= 1 and list(labels[2])[-1:] == [(sre.LITERAL, ord("."))]
                    and top_chars is not None and top[0] >= 2):
                tld.extend(top_chars)
                continue
        if _min_dots(alternative) == 0:
            return None
        dots = _min_dots(alternative) if dots is None else min(dots, _min_dots(alternative))
    if dots is None or not tld:
        return None
    return dots, _normalized(tld)


def _token_lengths(tokens: Sequence[str]) -> bytes:
    return struct.pack(f"<{len(tokens)}I", *map(len, tokens))


def compiled_splitter(splitter: EnglishSplitter):
    """The C splitter (``_chunksplit.c``) over ``splitter``'s tables; None when it was not built
    (no compiler at install time) or cannot express the vendored patterns."""
    try:
        from selectd.scorers.rules._chunksplit import Splitter
    except ImportError:
        return None
    try:
        url_dots, url_tld = url_prefilter(tables.EN_URL_PATTERN) or (0, ())
        tld_set: list[bytes] = []
        tld_ranges: list[bytes] = []
        _pack_set(url_tld, tld_set, tld_ranges)
        return Splitter(
            prefix=compile_program(tables.EN_PREFIX_PATTERN),
            suffix=compile_program(tables.EN_SUFFIX_PATTERN, anchored_end=True),
            infix=compile_program(tables.EN_INFIX_PATTERN),
            specials=[(string, _token_lengths(tokens)) for string, tokens in splitter._specials.items()],
            merges=[(pieces, _token_lengths(tokens)) for pieces, tokens in splitter._merges.items()],
            longest_merge=splitter._longest_merge,
            url_match=splitter._url,
            url_dots=url_dots,
            url_tld=(b"", b"", b"".join(tld_set), b"".join(tld_ranges)),
        )
    except UnsupportedPattern as error:
        log.warning("word split runs in Python only: the C splitter cannot express spaCy's patterns (%s)", error)
        return None


@functools.cache
def _is_punct_char(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _is_punct(token: str) -> bool:
    # spaCy's Token.is_punct: every character in a Unicode punctuation category
    return all(map(_is_punct_char, token))


def _code_points(chars) -> bytes:
    return struct.pack(f"<{len(chars)}I", *sorted(map(ord, chars)))


#: _chunksplit.token_features' character sets: datatrove's punctuation, the sentencizer's enders
_FEATURE_SETS = (_code_points(tables.GOPHER_PUNCTUATION), _code_points(SENTENCE_PUNCT_CHARS))


def _python_token_features(new: list[str]) -> dict[str, list]:
    ends = [token in SENTENCE_PUNCT_CHARS for token in new]
    return {
        "length": list(map(len, new)),
        "is_word": [_NON_PUNCTUATION.search(token) is not None for token in new],
        "has_alpha": [token.isalpha() or any(map(str.isalpha, token)) for token in new],
        "ends_sentence": ends,
        "opens_sentence": [not end and not _is_punct(token) for token, end in zip(new, ends)],
    }


def _compiled_token_features(strings: list[str], start: int) -> dict[str, np.ndarray]:
    from selectd.scorers.rules._chunksplit import token_features

    lengths, flags = token_features(strings, start, *_FEATURE_SETS, _is_punct)
    bits = np.frombuffer(flags, dtype=np.uint8)
    return {
        "length": np.frombuffer(lengths, dtype=np.int64),
        **{name: (bits & bit) != 0 for name, bit in _FEATURE_BITS.items()},
    }


#: _chunksplit.c's FEATURE_* flags
_FEATURE_BITS = {"is_word": 1, "has_alpha": 2, "ends_sentence": 4, "opens_sentence": 8}


def _feature(name: str, doc: str) -> property:
    """A read-only view of one per-token feature array of a :class:`Vocabulary`."""
    return property(lambda vocab: vocab._features[name].values, doc=doc)


class Vocabulary:
    """Token strings interned to ids, with the per-token features the scorers need.

    Interning only records the string; :meth:`sync` (once per batch) computes the features of the
    tokens added since, into the numpy arrays the scorers index with token ids.
    """

    def __init__(self, compiled: bool = False) -> None:
        """``compiled``: compute the features in C (``_chunksplit.token_features``)."""
        self.ids: dict[str, int] = {}
        self.strings: list[str] = []
        self._synced = 0
        self._compiled = compiled
        self._features = {"length": GrowingArray(np.int64),
                          **{name: GrowingArray(bool) for name in _FEATURE_BITS}}

    # the per-token features, indexed by token id (synced tokens)
    length = _feature("length", "characters per token")
    is_word = _feature("is_word", 'has a character outside datatrove\'s PUNCTUATION_SET (a Gopher "non-symbol word")')
    has_alpha = _feature("has_alpha", "has an alphabetic character")
    ends_sentence = _feature("ends_sentence", "spaCy sentencizer: the token is a sentence-ending character")
    opens_sentence = _feature("opens_sentence",
                              "spaCy sentencizer: a token that can open a sentence (neither punctuation nor an ender)")

    def __len__(self) -> int:
        return len(self.strings)

    def intern(self, token: str) -> int:
        index = self.ids.get(token)
        if index is None:
            index = self.ids[token] = len(self.strings)
            self.strings.append(token)
        return index

    def sync(self) -> None:
        """Compute the features of every token interned since the last sync."""
        if self._synced == len(self.strings):
            return
        if self._compiled:
            features = _compiled_token_features(self.strings, self._synced)
        else:
            features = _python_token_features(self.strings[self._synced:])
        for name, values in features.items():
            self._features[name].extend(values)
        self._synced = len(self.strings)


@dataclass
class TokenizedBatch:
    """Token ids of a batch of documents, concatenated; document i is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray
    offsets: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def per_doc_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of a per-token array within each document (0 for a document without tokens)."""
        cumulative = np.concatenate([[0], np.cumsum(values, dtype=np.float64)])
        return cumulative[self.offsets[1:]] - cumulative[self.offsets[:-1]]


class WordTokenizer:
    """Shared per-process tokenizer: a chunk table over one :class:`Vocabulary`.

    Every distinct whitespace-separated chunk gets a chunk id, its tokens' ids stored once in a
    flat array. A document becomes a list of chunk ids (one C-level dictionary lookup per chunk:
    ``map(dict.__getitem__, text.split())``), and numpy expands chunk ids to token ids. The table
    is bounded (``max_chunks``); when full it is cleared between batches, the vocabulary kept.

    Word counts alone (:meth:`token_counts`, all FineWeb needs) take a lighter table: chunk -> number
    of words, filled by every split (either path), with no token interned. Bounded the same way.
    """

    def __init__(self, max_chunks: int = 1_000_000, implementation: str = "auto") -> None:
        """``implementation``: ``compiled`` (new chunks split and interned in C, ``_chunksplit.c``),
        ``python``, or ``auto``: compiled when it was built."""
        if implementation not in ("auto", "compiled", "python"):
            raise ValueError(f"unknown word split implementation {implementation!r}; use auto, compiled or python")
        self.splitter = EnglishSplitter()
        self.compiled = compiled_splitter(self.splitter) if implementation != "python" else None
        if implementation == "compiled" and self.compiled is None:
            raise RuntimeError("the C word splitter (selectd/scorers/rules/_chunksplit.c) is not available: "
                               "reinstall with a C compiler (pip install -e .)")
        self.vocab = Vocabulary(compiled=self.compiled is not None)
        self.max_chunks = max_chunks
        self._chunk_words: dict[str, int] = {}  # chunk -> its number of words
        self._clear_chunks()

    def _clear_chunks(self) -> None:
        self._chunk_index: dict[str, int] = {}
        self._pending_tokens: list[int] = []   # token ids of chunks added since the last sync
        self._pending_counts: list[int] = []   # their token counts
        self._chunk_tokens = GrowingArray(np.int64)   # token ids of all chunks, flat
        self._chunk_start = GrowingArray(np.int64)    # where each chunk's tokens start in it
        self._chunk_count = GrowingArray(np.int64)    # how many tokens each chunk has

    def _add_chunk(self, chunk: str) -> None:
        intern = self.vocab.intern
        tokens = [intern(token) for token in self.splitter.chunk_tokens(chunk)]
        index = len(self._chunk_index)
        self._chunk_index[chunk] = index
        self._chunk_words[chunk] = len(tokens)
        self._pending_tokens.extend(tokens)
        self._pending_counts.append(len(tokens))

    def chunk_ids(self, chunks: Sequence[str], out: list[int]) -> None:
        """Append the chunk id of each chunk to ``out``; call :meth:`sync` before expanding them."""
        index = self._chunk_index
        if self.compiled is not None:
            self.compiled.chunk_ids(chunks, out, index, self.vocab.ids, self.vocab.strings,
                                    self._pending_tokens, self._pending_counts, self._chunk_words)
            return
        before = len(out)
        try:
            out.extend(map(index.__getitem__, chunks))
        except KeyError:  # new chunks: undo the partial extend, add them, look up again
            del out[before:]
            for chunk in chunks:
                if chunk not in index:
                    self._add_chunk(chunk)
            out.extend(map(index.__getitem__, chunks))

    def sync(self) -> None:
        """Bring the chunk and vocabulary arrays up to date with every chunk seen so far."""
        self.vocab.sync()
        if not self._pending_counts:
            return
        counts = np.asarray(self._pending_counts, dtype=np.int64)
        starts = len(self._chunk_tokens) + np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._chunk_tokens.extend(self._pending_tokens)
        self._chunk_start.extend(starts)
        self._chunk_count.extend(counts)
        self._pending_tokens.clear()
        self._pending_counts.clear()

    def start_batch(self) -> None:
        """Call before collecting a batch's chunk ids: a full chunk table is cleared here, never
        while chunk ids are held (and a full word-count table, which holds no ids)."""
        if len(self._chunk_index) >= self.max_chunks:
            self._clear_chunks()
        if len(self._chunk_words) >= self.max_chunks:
            self._chunk_words.clear()

    def chunk_token_counts(self, chunks: np.ndarray) -> np.ndarray:
        """Number of tokens of each chunk id (synced)."""
        return self._chunk_count.values[chunks]

    def _batch_chunks(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ids of a batch, concatenated, and each document's offsets into them."""
        self.start_batch()
        if self.compiled is not None:
            ids, offsets = self.compiled.text_chunk_ids(texts, self._chunk_index, self.vocab.ids, self.vocab.strings,
                                                        self._pending_tokens, self._pending_counts, self._chunk_words)
            self.sync()
            return np.frombuffer(ids, dtype=np.int64), np.frombuffer(offsets, dtype=np.int64)
        chunk_ids: list[int] = []
        offsets = [0]
        for text in texts:
            self.chunk_ids(text.split(), chunk_ids)
            offsets.append(len(chunk_ids))
        self.sync()
        return np.asarray(chunk_ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64)

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Number of words (datatrove's split) of each text, without building the token list."""
        self.start_batch()
        count = self.compiled.count_words if self.compiled is not None else self._count_words
        chunk_words = self._chunk_words
        return np.fromiter((count(text, chunk_words) for text in texts), dtype=np.int64, count=len(texts))

    def _count_words(self, text: str, chunk_words: dict[str, int]) -> int:
        """``_chunksplit.Splitter.count_words`` in Python: a chunk of letters only is one word unless
        it is a special case ("cannot"); the others' counts come from ``chunk_words`` (new ones are
        split and added)."""
        chunks = text.split()
        letter_specials = self.splitter.letter_specials
        other = [chunk for chunk in chunks if not chunk.isalpha() or chunk in letter_specials]
        try:
            return len(chunks) - len(other) + sum(map(chunk_words.__getitem__, other))
        except KeyError:
            for chunk in other:
                if chunk not in chunk_words:
                    chunk_words[chunk] = len(self.splitter.chunk_tokens(chunk))
            return len(chunks) - len(other) + sum(map(chunk_words.__getitem__, other))

    def expand(self, chunks: np.ndarray) -> np.ndarray:
        """Token ids of a sequence of chunk ids (synced), concatenated."""
        counts = self.chunk_token_counts(chunks)
        total = int(counts.sum())
        ends = np.cumsum(counts)
        # position of each token in the flat chunk-token array: its chunk's start + its index in it
        within = np.arange(total) - np.repeat(ends - counts, counts)
        return self._chunk_tokens.values[np.repeat(self._chunk_start.values[chunks], counts) + within]

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        chunks, offsets = self._batch_chunks(texts)
        cumulative = np.concatenate([[0], np.cumsum(self.chunk_token_counts(chunks))])
        return TokenizedBatch(self.expand(chunks), cumulative[offsets])

    def words(self, text: str) -> list[str]:
        chunks, _ = self._batch_chunks([text])
        strings = self.vocab.strings
        return [strings[i] for i in self.expand(chunks).tolist()]


_shared: WordTokenizer | None = None


def shared_tokenizer() -> WordTokenizer:
    """One tokenizer per process, so the rule scorers of a cascade share their chunk cache."""
    global _shared
    if _shared is None:
        _shared = WordTokenizer()
    return _shared


def reset_shared_tokenizer() -> None:
    """Start the next :func:`shared_tokenizer` from an empty cache (benchmarks measure cold runs)."""
    global _shared
    _shared = None


def tokenizer_language(language: str) -> str:
    """Validate a datatrove ``language`` option: only English's tokenizer is re-implemented."""
    try:
        return SUPPORTED_LANGUAGES[language]
    except KeyError:
        raise ValueError(
            f"language {language!r}: only datatrove's English word tokenizer is re-implemented "
            f"(use one of {', '.join(sorted(SUPPORTED_LANGUAGES))})"
        ) from None
