"""spaCy's English regexes compiled to the byte programs of the C splitter (``_chunksplit.c``).

The C splitter runs :class:`~selectd.text.affix_split.EnglishSplitter`'s algorithm on the same
tables. Its regexes are compiled here, from the vendored patterns (:func:`compile_program`), to
"programs": a list of alternatives in pattern order, each a sequence of nodes (one character from
a set, a greedy repeat of one, ^, $, fixed-width lookarounds). Alternations inside a sequence are
expanded into separate alternatives, which keeps the regex engine's first-match order unless a
variable repeat comes before them (refused, as is anything else these nodes do not express
exactly: the program is then not used, and the Python splitter does the work). The URL regex stays
Python's and is called only where a URL is possible (:func:`url_prefilter`).
:func:`compiled_splitter` builds the C splitter from these programs, :func:`compiled_tables` the C
word tables (vocabulary and chunk table) over it.
"""
from __future__ import annotations

import logging
import re
import struct
from re import _constants as sre, _parser as sre_parse  # the stdlib's own regex parser (3.11)
from typing import Sequence

from selectd.text import spacy_tables
from selectd.text.affix_split import EnglishSplitter

log = logging.getLogger(__name__)

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
        from selectd.text._chunksplit import Splitter
    except ImportError:
        return None
    try:
        url_dots, url_tld = url_prefilter(spacy_tables.EN_URL_PATTERN) or (0, ())
        tld_set: list[bytes] = []
        tld_ranges: list[bytes] = []
        _pack_set(url_tld, tld_set, tld_ranges)
        return Splitter(
            prefix=compile_program(spacy_tables.EN_PREFIX_PATTERN),
            suffix=compile_program(spacy_tables.EN_SUFFIX_PATTERN, anchored_end=True),
            infix=compile_program(spacy_tables.EN_INFIX_PATTERN),
            specials=[(string, _token_lengths(tokens)) for string, tokens in splitter.specials.items()],
            merges=[(pieces, _token_lengths(tokens)) for pieces, tokens in splitter.merges.items()],
            longest_merge=splitter.longest_merge,
            url_match=splitter.url_match,
            url_dots=url_dots,
            url_tld=(b"", b"", b"".join(tld_set), b"".join(tld_ranges)),
        )
    except UnsupportedPattern as error:
        log.warning("word split runs in Python only: the C splitter cannot express spaCy's patterns (%s)", error)
        return None


def compiled_tables(splitter: EnglishSplitter):
    """The C word tables (``_chunksplit.WordTables``: vocabulary and chunk table) over the C
    splitter of ``splitter``'s tables; None when :func:`compiled_splitter` is."""
    compiled = compiled_splitter(splitter)
    if compiled is None:
        return None
    from selectd.text._chunksplit import WordTables

    return WordTables(compiled)
