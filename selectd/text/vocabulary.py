"""Words of whole documents as token ids: :class:`WordTokenizer`, its chunk cache and :class:`Vocabulary`.

datatrove's Gopher and FineWeb filters count words with ``split_into_words(text, "eng")``, which runs
``spacy.blank("en")`` over the whole document, keeps each token's text and drops whitespace
tokens. spaCy splits every whitespace-separated chunk on its own, so the tokens are a pure function
of the chunk (:mod:`selectd.text.affix_split`), and we cache them per chunk: text is Zipfian, so
after warm-up most chunks are a dictionary hit, where datatrove (which tokenizes inside spaCy's
``memory_zone``, with spaCy's cache off) pays the full pipeline per token. New chunks (about one in
five on the sample corpus even after thousands of documents: version strings, URLs, code) are split
in C (``_chunksplit.c``, built by ``pip install -e``; :func:`~selectd.text.byte_program.compiled_splitter`),
which also interns the tokens and computes their features, or else by the Python
:class:`~selectd.text.affix_split.EnglishSplitter`; both give the same tokens
(tests/test_rules_tokenizer.py).

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
from typing import Sequence

import numpy as np

from selectd.arrays import GrowingArray
from selectd.text import spacy_tables
from selectd.text.affix_split import EnglishSplitter
from selectd.text.byte_program import compiled_splitter

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
            raise RuntimeError("the C word splitter (selectd/text/_chunksplit.c) is not available: "
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
