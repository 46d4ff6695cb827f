"""spaCy's English tokenizer on one whitespace-free chunk, ported to Python (:class:`EnglishSplitter`).

spaCy tokenizes every whitespace-separated chunk on its own (special cases, then prefixes and
suffixes peeled off, then infixes split), so the result is a pure function of the chunk. We port
that algorithm (``spacy/tokenizer.pyx``: ``_split_affixes`` / ``_attach_tokens``) over the same
patterns and special cases (vendored in ``spacy_tables.py``). It is made cheaper by memoising the
affix split of the inner string and by trying only the regex alternatives that can start or end
with the character at hand; the C splitter (``_chunksplit.c``, programs from ``byte_program.py``)
runs the same algorithm on the same tables, and both give spaCy's tokens
(tests/test_rules_tokenizer.py).

spaCy's last step, ``_apply_special_cases``, re-merges special cases that only show up after affix
splitting (``"):"`` in ``"(foo):"``); it is ported too, restricted to one chunk (a match spanning
whitespace never equals a special-case string, so spaCy leaves it alone as well).
"""
from __future__ import annotations

import re
from re import _constants as sre, _parser as sre_parse  # the stdlib's own regex parser (3.11)
from typing import Callable, Iterator, Sequence

from selectd.text import spacy_tables

#: longer than any fixed-length suffix alternative of spaCy's English suffixes ("km/h", "US$", ...)
_LONGEST_SUFFIX = 8
_ASCII_DIGIT = re.compile("[0-9]")
_INFIX_TRIGGER = re.compile("[.…,\\-–—~+*^:<>=/]|" + spacy_tables.ICON_CLASS)


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


#: spaCy's URL pattern's optional "user:password@" part
_URL_USER_INFO = r"(?:\S+(?::\S*)?@)?"


def url_matcher(pattern: str) -> Callable[[str], re.Match | None]:
    """``re.compile(pattern).match``, or a function matching the same strings faster.

    The user-info part of spaCy's URL pattern can only match a string with an "@"; on any other
    string its ``\\S+`` still runs to the end and backs off one character at a time. Those strings
    are matched against the pattern without that part: the same matches, in ~40 % of the time
    (URL-shaped chunks were a tenth of tokenizing the bench's English pages)."""
    full = re.compile(pattern).match
    if _URL_USER_INFO not in pattern:
        return full
    without_user_info = re.compile(pattern.replace(_URL_USER_INFO, "", 1)).match

    def url_match(string: str) -> re.Match | None:
        return full(string) if "@" in string else without_user_info(string)

    return url_match


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
        if "|".join(p + "$" for p in spacy_tables.EN_SUFFIXES) != spacy_tables.EN_SUFFIX_PATTERN or (
            "|".join(spacy_tables.EN_INFIXES) != spacy_tables.EN_INFIX_PATTERN
        ):
            raise RuntimeError("spacy_tables.py is inconsistent: regenerate it with generate_spacy_tables.py")
        # every prefix alternative is anchored with ^ (spaCy's compile_prefix_regex), so match()
        # finds what spaCy's search() finds without trying every start position
        self._prefix = re.compile(spacy_tables.EN_PREFIX_PATTERN).match
        self._suffixes = _ByChar(spacy_tables.EN_SUFFIXES, "$", last=True)
        self._infixes = _ByChar(spacy_tables.EN_INFIXES, "", last=False)
        # url_match, specials, merges and longest_merge are also what the C splitter is built from
        # (byte_program.compiled_splitter)
        self.url_match = url_matcher(spacy_tables.EN_URL_PATTERN)
        self.specials: dict[str, tuple[str, ...]] = spacy_tables.EN_SPECIAL_CASES
        #: affix split (before special-case merging) of strings seen, e.g. "word" inside "(word),"
        self._memo: dict[str, tuple[str, ...]] = {}
        self._max_memo = max_memo
        # spaCy's special-case matcher: special cases that affix splitting would cut, keyed by the
        # tokens they are cut into (spaCy's PhraseMatcher patterns)
        self.merges: dict[tuple[str, ...], tuple[str, ...]] = {}
        for string, tokens in self.specials.items():
            pieces = self._split(string, {}, None)
            if len(pieces) > 1:
                self.merges[pieces] = tokens
        self.longest_merge = max(map(len, self.merges), default=0)
        self._merge_starts = {pieces[0] for pieces in self.merges}
        #: special cases made of letters only: the one kind of letters-only chunk that is not one token
        self.letter_specials = frozenset(string for string in self.specials if string.isalpha())

    def chunk_tokens(self, chunk: str) -> tuple[str, ...]:
        """Tokens of one chunk (a maximal run of non-whitespace characters)."""
        if len(self._memo) >= self._max_memo:
            self._memo.clear()
        tokens = self._split(chunk, self.specials, self._memo)
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
        if "." in string and self.url_match(string):  # every URL the pattern accepts has a dot
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
            for end in range(start + 2, min(n, start + self.longest_merge) + 1)
            if tokens[start:end] in self.merges
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
                merged.extend(self.merges[tokens[index:end]])
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

