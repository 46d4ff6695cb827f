"""Words of whole documents as token ids: :class:`WordTokenizer`, its chunk table and :class:`Vocabulary`.

datatrove's Gopher and FineWeb filters count words with ``split_into_words(text, "eng")``, which runs
``spacy.blank("en")`` over the whole document, keeps each token's text and drops whitespace
tokens. spaCy splits every whitespace-separated chunk on its own, so the tokens are a pure function
of the chunk (:mod:`selectd.text.affix_split`), and we keep them per chunk: text is Zipfian, so
after warm-up most chunks are a table hit, where datatrove (which tokenizes inside spaCy's
``memory_zone``, with spaCy's cache off) pays the full pipeline per token. New chunks (about one in
eight on the bench's pages even after thousands of documents: version strings, URLs, code, words
with punctuation attached) are split and their tokens interned.

Both tables, chunk -> token ids and token -> id, live in C (``_chunksplit.WordTables``, built by
``pip install -e``; :func:`~selectd.text.byte_program.compiled_tables`): a batch of texts becomes
token ids in one call, a known chunk costing a hash probe and a new one its split, with no Python
object made except the string of a new token. Without the C extension, :class:`PythonWordTables`
does the same in Python dictionaries around :class:`~selectd.text.affix_split.EnglishSplitter`;
both give the same token ids (tests/test_rules_tokenizer.py).

Tokens are interned in a :class:`Vocabulary` holding per-token features (length, symbol-only,
has a letter, sentence punctuation) as numpy arrays, so the scorers compute their signals with
array operations over token ids instead of per-word Python. A scorer that needs only word counts
(FineWeb) skips all that: :meth:`WordTokenizer.token_counts` keeps one number per chunk.
"""
from __future__ import annotations

import functools
import re
import struct
import unicodedata
from dataclasses import dataclass
from itertools import chain
from typing import Sequence

import numpy as np

from selectd.arrays import GrowingArray
from selectd.text import spacy_tables
from selectd.text.affix_split import EnglishSplitter
from selectd.text.byte_program import compiled_tables

#: languages whose datatrove word tokenizer is re-implemented here (datatrove's code, ISO 639-1)
SUPPORTED_LANGUAGES = {"eng": "en", "en": "en", "eng_Latn": "en"}

SENTENCE_PUNCT_CHARS = frozenset(spacy_tables.SENTENCE_PUNCT_CHARS)

_NON_PUNCTUATION = re.compile("[^" + re.escape(spacy_tables.GOPHER_PUNCTUATION) + "]")


@functools.cache
def _is_punct_char(char: str) -> bool:
    return unicodedata.category(char).startswith("P")


def _is_punct(token: str) -> bool:
    # spaCy's Token.is_punct: every character in a Unicode punctuation category
    return all(map(_is_punct_char, token))


def _code_points(chars) -> bytes:
    return struct.pack(f"<{len(chars)}I", *sorted(map(ord, chars)))


#: _chunksplit.token_features' character sets: datatrove's punctuation, the sentencizer's enders
_FEATURE_SETS = (_code_points(spacy_tables.GOPHER_PUNCTUATION), _code_points(SENTENCE_PUNCT_CHARS))


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
    from selectd.text._chunksplit import token_features

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
    """Token strings interned to ids (by the word tables), with the per-token features the scorers need.

    Interning only records the string; :meth:`sync` (once per batch) computes the features of the
    tokens added since, into the numpy arrays the scorers index with token ids.
    """

    def __init__(self, tables: PythonWordTables, compiled: bool = False) -> None:
        """``tables``: what interns the tokens (:class:`PythonWordTables` or the C
        ``_chunksplit.WordTables``); ``compiled``: compute the features in C (``_chunksplit.token_features``)."""
        self._tables = tables
        #: token strings by id (the tables' own list)
        self.strings: list[str] = tables.strings
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
        """The id of ``token``, interned when new (call :meth:`sync` before reading its features)."""
        return self._tables.intern(token)

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


class PythonWordTables:
    """``_chunksplit.WordTables`` in Python, for an install without the C extension: the same
    methods and attributes, the same token ids (int64 arrays where the C tables give bytearrays).

    Two dictionaries keyed by chunk: its token ids (chunks interned by :meth:`tokenize`) and its
    number of words (every chunk split, also by :meth:`count_words`, which interns nothing).
    """

    def __init__(self, splitter: EnglishSplitter) -> None:
        self.splitter = splitter
        self.ids: dict[str, int] = {}
        #: token strings by id
        self.strings: list[str] = []
        #: chunks split so far
        self.splits = 0
        self._chunk_tokens: dict[str, tuple[int, ...]] = {}
        self._chunk_words: dict[str, int] = {}

    @property
    def chunks(self) -> int:
        """Chunks in the chunk table (every chunk split is in ``_chunk_words``)."""
        return len(self._chunk_words)

    def clear_chunks(self) -> None:
        self._chunk_tokens.clear()
        self._chunk_words.clear()

    def intern(self, token: str) -> int:
        index = self.ids.get(token)
        if index is None:
            index = self.ids[token] = len(self.strings)
            self.strings.append(token)
        return index

    def _split(self, chunk: str) -> tuple[str, ...]:
        tokens = self.splitter.chunk_tokens(chunk)
        self.splits += 1
        self._chunk_words[chunk] = len(tokens)
        return tokens

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of the texts' chunks, concatenated, and each text's offset into them."""
        table = self._chunk_tokens
        ids: list[int] = []
        offsets = [0]
        for text in texts:
            chunks = text.split()
            try:
                ids.extend(chain.from_iterable(map(table.__getitem__, chunks)))
            except KeyError:  # new chunks: undo the partial extend, add them in order, look up again
                del ids[offsets[-1]:]
                for chunk in chunks:
                    if chunk not in table:
                        table[chunk] = tuple(map(self.intern, self._split(chunk)))
                ids.extend(chain.from_iterable(map(table.__getitem__, chunks)))
            offsets.append(len(ids))
        return np.asarray(ids, dtype=np.int64), np.asarray(offsets, dtype=np.int64)

    def count_words(self, texts: Sequence[str]) -> np.ndarray:
        """Words of each text: a chunk of letters only is one word unless it is a special case
        ("cannot"); the others' counts come from the chunk table (new ones are split and added)."""
        return np.fromiter(map(self._count_words, texts), dtype=np.int64, count=len(texts))

    def _count_words(self, text: str) -> int:
        chunks = text.split()
        letter_specials = self.splitter.letter_specials
        other = [chunk for chunk in chunks if not chunk.isalpha() or chunk in letter_specials]
        chunk_words = self._chunk_words
        try:
            return len(chunks) - len(other) + sum(map(chunk_words.__getitem__, other))
        except KeyError:
            for chunk in other:
                if chunk not in chunk_words:
                    self._split(chunk)
            return len(chunks) - len(other) + sum(map(chunk_words.__getitem__, other))


@dataclass
class TokenizedBatch:
    """Token ids of a batch of documents, concatenated; document i is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: np.ndarray
    offsets: np.ndarray

    @property
    def counts(self) -> np.ndarray:
        return np.diff(self.offsets)

    def per_doc_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of a per-token array within each document (0 for a document without tokens), as float64.

        ``np.add.reduceat`` over the values with a zero appended (so every offset is an index);
        a cumulative sum of booleans in float64 took twenty times longer."""
        padded = np.zeros(len(values) + 1, dtype=np.float64)
        padded[:-1] = values
        sums = np.add.reduceat(padded, self.offsets[:-1])
        sums[self.counts == 0] = 0  # reduceat gives the value at the offset for an empty range
        return sums


class WordTokenizer:
    """Shared per-process tokenizer: word tables (chunk -> token ids, token -> id) and a :class:`Vocabulary`.

    The chunk table is bounded (``max_chunks``); when full it is cleared between batches, the
    vocabulary kept. Word counts alone (:meth:`token_counts`, all FineWeb needs) add a chunk with
    its count and no tokens interned.
    """

    def __init__(self, max_chunks: int = 1_000_000, implementation: str = "auto") -> None:
        """``implementation``: ``compiled`` (the tables in C, ``_chunksplit.c``), ``python``, or
        ``auto``: compiled when it was built."""
        if implementation not in ("auto", "compiled", "python"):
            raise ValueError(f"unknown word split implementation {implementation!r}; use auto, compiled or python")
        self.splitter = EnglishSplitter()
        compiled = compiled_tables(self.splitter) if implementation != "python" else None
        if implementation == "compiled" and compiled is None:
            raise RuntimeError("the C word splitter (selectd/text/_chunksplit.c) is not available: "
                               "reinstall with a C compiler (pip install -e .)")
        #: whether the tables are the C ones
        self.compiled = compiled is not None
        self.tables = compiled if compiled is not None else PythonWordTables(self.splitter)
        self.vocab = Vocabulary(self.tables, compiled=self.compiled)
        self.max_chunks = max_chunks

    def _start_batch(self) -> None:
        """A full chunk table is cleared here, before a batch, never inside one."""
        if self.tables.chunks >= self.max_chunks:
            self.tables.clear_chunks()

    def tokenize(self, texts: Sequence[str]) -> TokenizedBatch:
        """Token ids of each text, the vocabulary synced (its features cover every id returned)."""
        self._start_batch()
        ids, offsets = self.tables.tokenize(texts)
        self.vocab.sync()
        return TokenizedBatch(np.frombuffer(ids, dtype=np.int64), np.frombuffer(offsets, dtype=np.int64))

    def token_counts(self, texts: Sequence[str]) -> np.ndarray:
        """Number of words (datatrove's split) of each text, without building the token list."""
        self._start_batch()
        return np.frombuffer(self.tables.count_words(texts), dtype=np.int64)

    def words(self, text: str) -> list[str]:
        strings = self.vocab.strings
        return [strings[i] for i in self.tokenize([text]).ids.tolist()]


_shared: WordTokenizer | None = None


def shared_tokenizer() -> WordTokenizer:
    """One tokenizer per process, so the rule scorers of a cascade share their chunk table."""
    global _shared
    if _shared is None:
        _shared = WordTokenizer()
    return _shared


def reset_shared_tokenizer() -> None:
    """Start the next :func:`shared_tokenizer` from empty tables (benchmarks measure cold runs)."""
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
