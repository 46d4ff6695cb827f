"""fastText's tokenization and feature hashing on the host, vectorized over a batch of documents.

Exactly fastText's ``Dictionary::getLine`` (see ../shared/specs/fasttext-inference.md):

- bytes are split on space, \\n, \\r, \\t, \\v, \\f and \\0 (Unicode spaces do not split); the line
  ends with the end-of-sentence token ``</s>``, and a literal ``</s>`` token in the text ends it
  early, as in fastText. fastText's Python ``predict`` refuses "\\n"; here it separates tokens like
  a space (the preprocessing profiles remove newlines before scoring anyway);
- tokens starting with ``__label__`` are skipped;
- an in-vocabulary word gives its id and (if maxn > 0) its char n-gram buckets, an unknown word its
  char n-gram buckets only; every word's FNV-1a hash feeds the word n-grams (64-bit wraparound);
- buckets map to rows ``nwords + bucket``, through the pruned index for pruned .ftz files.

Where the time goes is per-token Python work, so each distinct token is resolved once: a dict from
token bytes to a row of a token table (vocabulary words are its first rows) holding the token's FNV
hash, whether it is a word, and its unigram feature ids. New tokens are resolved in bulk per batch
with numpy (FNV over a byte matrix, char n-grams over all start positions at once). The table is
reset to the vocabulary when it grows past ``cache_limit`` unknown tokens, bounding memory on an
endless stream.

:class:`CompiledFeaturizer` runs the same algorithm in C (``_featurize.c``), with the same idea of
resolving a token once (a bounded cache of each token's feature ids, cleared when full), and sums
each document's table rows for the model; it is used whenever
``pip install -e .`` could build it, because even this numpy path stays near native fastText's
speed (measured: 1.4x native on a dim-100 bigram model vs 2.4x for the C path). The tests check
both against native fastText and against each other.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from selectd.arrays import GrowingArray

EOS = b"</s>"
LABEL_PREFIX = b"__label__"
FNV_OFFSET = np.uint32(2166136261)
FNV_PRIME = np.uint32(16777619)
WORD_NGRAM_MULTIPLIER = np.uint64(116049371)
#: below this many tokens still being hashed, finish the long ones with a plain loop
_VECTOR_MIN_ACTIVE = 16


def _sign_extended(data: bytes) -> np.ndarray:
    """Bytes as uint32 after int8 sign extension, as fastText's ``h ^ uint32(int8(c))``."""
    return np.frombuffer(data, dtype=np.int8).astype(np.int32).view(np.uint32)


def _fnv_scalar(h: int, data: bytes) -> int:
    for byte in data:
        h = ((h ^ (byte | 0xFFFFFF00 if byte >= 128 else byte)) * 16777619) & 0xFFFFFFFF
    return h


def fnv1a(tokens: Sequence[bytes]) -> np.ndarray:
    """fastText's 32-bit FNV-1a hash of each token (uint32), vectorized across tokens."""
    count = len(tokens)
    if count == 0:
        return np.empty(0, dtype=np.uint32)
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=count)
    flat = _sign_extended(b"".join(tokens))
    starts = np.cumsum(lengths) - lengths
    order = np.argsort(-lengths, kind="stable")  # longest first: the active tokens are a prefix
    sorted_lengths = lengths[order]
    sorted_starts = starts[order]
    hashes = np.full(count, FNV_OFFSET, dtype=np.uint32)
    # number of tokens longer than each position: the prefix still being hashed
    active_at = np.searchsorted(-sorted_lengths, -np.arange(int(sorted_lengths[0])), side="left")
    position = 0
    for position, active in enumerate(active_at.tolist()):
        if active < _VECTOR_MIN_ACTIVE and position > 0:
            break
        head = hashes[:active]
        np.bitwise_xor(head, flat[sorted_starts[:active] + position], out=head)
        np.multiply(head, FNV_PRIME, out=head)
    else:
        position = len(active_at)
    for rank in range(int(np.count_nonzero(sorted_lengths > position))):
        token = tokens[int(order[rank])]
        hashes[rank] = _fnv_scalar(int(hashes[rank]), token[position:])
    result = np.empty(count, dtype=np.uint32)
    result[order] = hashes
    return result


def char_ngram_hashes(tokens: Sequence[bytes], minn: int, maxn: int) -> tuple[np.ndarray, np.ndarray]:
    """FNV hashes of the char n-grams of ``"<" + token + ">"`` for every token.

    Returns (token index, hash) pairs in fastText's order. A character is a UTF-8 lead byte with its continuation
    bytes; n-grams of n = minn..maxn characters start at every character, except the single
    characters "<" and ">" themselves (fastText's ``computeSubwords``).
    """
    if not tokens or maxn <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint32)
    wrapped = [b"<" + token + b">" for token in tokens]
    lengths = np.fromiter(map(len, wrapped), dtype=np.int64, count=len(wrapped))
    word_ends = np.cumsum(lengths)
    word_starts = word_ends - lengths
    joined = b"".join(wrapped) + b"<"  # sentinel: the byte after the last word starts a character
    raw = np.frombuffer(joined, dtype=np.uint8)
    is_continuation = (raw & 0xC0) == 0x80
    values = _sign_extended(joined)
    owner_of_byte = np.repeat(np.arange(len(wrapped)), lengths)

    starts = np.flatnonzero(~is_continuation[:-1])
    owner = owner_of_byte[starts]
    first_char = starts == word_starts[owner]
    end = word_ends[owner]
    position = starts.copy()
    chars = np.zeros(len(starts), dtype=np.int64)
    hashes = np.full(len(starts), FNV_OFFSET, dtype=np.uint32)
    start_id = np.arange(len(starts))
    owner_of_start = owner
    out_start: list[np.ndarray] = []
    out_hash: list[np.ndarray] = []
    while len(position):
        np.bitwise_xor(hashes, values[position], out=hashes)
        np.multiply(hashes, FNV_PRIME, out=hashes)
        position += 1
        at_boundary = ~is_continuation[position]
        chars += at_boundary
        at_end = position == end
        emit = at_boundary & (chars >= minn) & ~((chars == 1) & (first_char | at_end))
        if emit.any():
            out_start.append(start_id[emit])
            out_hash.append(hashes[emit])
        alive = ~(at_end | (at_boundary & (chars >= maxn)))
        if not alive.all():
            start_id, first_char, end, position, chars, hashes = (
                start_id[alive], first_char[alive], end[alive], position[alive], chars[alive], hashes[alive])
    if not out_start:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.uint32)
    # fastText's order: by start character, then by length (emitted here by step: re-sort)
    emitted_start = np.concatenate(out_start)
    order = np.argsort(emitted_start, kind="stable")
    return owner_of_start[emitted_start[order]], np.concatenate(out_hash)[order]


class _TokenIndex(dict):
    """token bytes -> row of the token table; unseen tokens get the next row and wait in ``pending``."""

    def __init__(self, initial: dict[bytes, int]):
        super().__init__(initial)
        self.pending: list[bytes] = []

    def __missing__(self, token: bytes) -> int:
        row = len(self)
        self[token] = row
        self.pending.append(token)
        return row


class Featurizer:
    """Turns texts into fastText input-row ids, with per-document counts."""

    def __init__(self, words: Sequence[bytes], labels: Sequence[bytes], *, bucket: int, minn: int,
                 maxn: int, word_ngrams: int, pruneidx_size: int = -1,
                 pruneidx: dict[int, int] | None = None, cache_limit: int = 2_000_000):
        self.words = list(words)
        self.labels = list(labels)
        self.nwords = len(self.words)
        self.bucket = bucket
        self.minn = minn
        self.maxn = maxn
        self.word_ngrams = word_ngrams
        self.cache_limit = cache_limit
        self.bucket_row: np.ndarray | None = None
        if pruneidx_size >= 0:  # pruned .ftz: only the listed buckets have rows (0 listed: none)
            self.bucket_row = np.full(bucket, -1, dtype=np.int64)
            if pruneidx:
                self.bucket_row[np.fromiter(pruneidx.keys(), dtype=np.int64, count=len(pruneidx))] = \
                    np.fromiter(pruneidx.values(), dtype=np.int64, count=len(pruneidx))
        self._reset()

    # --- token table ----------------------------------------------------------------------
    def _reset(self) -> None:
        vocabulary = self.words + self.labels
        self.index = _TokenIndex({token: row for row, token in enumerate(vocabulary)})
        if len(self.index) != len(vocabulary):
            raise ValueError("duplicate entries in the fastText dictionary")
        capacity = 2 * len(vocabulary) + 1024
        self.is_word = GrowingArray(np.bool_, capacity)
        self.hash = GrowingArray(np.uint64, capacity)  # int32 hash sign-extended to 64 bits
        self.feature_start = GrowingArray(np.int64, capacity)
        self.feature_count = GrowingArray(np.int64, capacity)
        self.features = GrowingArray(np.int64, capacity * (2 if self.maxn <= 0 else 16))
        word_ids = np.arange(self.nwords, dtype=np.int64)
        self._append(self.words, word_ids, is_word=np.ones(self.nwords, dtype=bool))
        self._append(self.labels, np.full(len(self.labels), -1, dtype=np.int64),
                     is_word=np.zeros(len(self.labels), dtype=bool))
        self.vocabulary_rows = len(vocabulary)

    def _append(self, tokens: list[bytes], word_ids: np.ndarray, is_word: np.ndarray) -> None:
        """Add rows for ``tokens`` (their ``word_ids`` are -1 when out of vocabulary)."""
        count = len(tokens)
        hashes = fnv1a(tokens).view(np.int32).astype(np.int64).view(np.uint64)
        # unigram features: the word id if in vocabulary, then char n-grams (never for </s>)
        owners = [np.flatnonzero(is_word & (word_ids >= 0))]
        ids = [word_ids[owners[0]]]
        if self.maxn > 0:
            eligible = np.flatnonzero(is_word & np.fromiter((t != EOS for t in tokens), dtype=bool, count=count))
            owner, ngram_hash = char_ngram_hashes([tokens[i] for i in eligible], self.minn, self.maxn)
            rows, kept = self._bucket_rows(ngram_hash.astype(np.uint64))
            owners.append(eligible[owner[kept]])
            ids.append(rows)
        owner = np.concatenate(owners)
        order = np.argsort(owner, kind="stable")
        feature_count = np.bincount(owner, minlength=count)
        self.feature_start.extend(len(self.features) + np.cumsum(feature_count) - feature_count)
        self.feature_count.extend(feature_count)
        self.features.extend(np.concatenate(ids)[order])
        self.hash.extend(hashes)
        self.is_word.extend(is_word)

    def _resolve_pending(self) -> None:
        pending = self.index.pending
        if not pending:
            return
        self.index.pending = []
        is_word = np.fromiter((not t.startswith(LABEL_PREFIX) for t in pending), dtype=bool, count=len(pending))
        self._append(pending, np.full(len(pending), -1, dtype=np.int64), is_word)

    def _bucket_rows(self, bucket_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Input-matrix rows of hashed features (fastText's pushHash) and which hashes kept one."""
        buckets = (bucket_hashes % np.uint64(self.bucket)).astype(np.int64)
        if self.bucket_row is None:
            return self.nwords + buckets, np.ones(len(buckets), dtype=bool)
        rows = self.bucket_row[buckets]
        kept = rows >= 0
        return self.nwords + rows[kept], kept

    # --- documents -------------------------------------------------------------------------
    def tokenize(self, texts: Sequence[str]) -> tuple[list[bytes], np.ndarray]:
        """All tokens of all texts (each ending with </s>) and the token count of each text."""
        tokens: list[bytes] = []
        counts = np.empty(len(texts), dtype=np.int64)
        for i, text in enumerate(texts):
            data = text.encode("utf-8", "surrogatepass")
            if b"\0" in data:
                data = data.replace(b"\0", b" ")
            words = data.split()  # bytes.split(): space \t \n \r \v \f
            if EOS in data and EOS in words:
                del words[words.index(EOS):]
            words.append(EOS)
            tokens += words
            counts[i] = len(words)
        return tokens, counts

    def featurize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Input-row ids grouped by document, and the number of ids of each document.

        ``ids[offsets[d]:offsets[d] + counts[d]]`` are document d's ids, offsets the exclusive
        cumulative sum of counts. A document with count 0 has no prediction in fastText.
        """
        if len(self.index) - self.vocabulary_rows > self.cache_limit:
            self._reset()
        tokens, token_counts = self.tokenize(texts)
        rows = np.fromiter(map(self.index.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        self._resolve_pending()
        doc_of_token = np.repeat(np.arange(len(texts)), token_counts)
        words = self.is_word.values[rows]
        if not words.all():  # label-prefixed tokens are not words
            rows, doc_of_token = rows[words], doc_of_token[words]

        # unigram features: a gather from the token table's ragged feature lists
        lengths = self.feature_count.values[rows]
        total = int(lengths.sum())
        first = np.cumsum(lengths) - lengths
        gather = np.repeat(self.feature_start.values[rows] - first, lengths) + np.arange(total)
        parts_ids = [self.features.values[gather]]
        parts_docs = [np.repeat(doc_of_token, lengths)]

        # word n-grams over word hashes, in fastText's order (by first word, then length);
        # no n-gram crosses a document boundary
        if self.word_ngrams > 1 and len(rows) > 1:
            hashes = self.hash.values[rows]
            count = len(rows)
            longest = min(self.word_ngrams, count) - 1  # extra words after the first
            grams = np.zeros((count, longest), dtype=np.uint64)
            valid = np.zeros((count, longest), dtype=bool)
            ngram = hashes
            for extra in range(1, longest + 1):
                ngram = ngram[:-1] * WORD_NGRAM_MULTIPLIER + hashes[extra:]
                grams[:count - extra, extra - 1] = ngram
                valid[:count - extra, extra - 1] = doc_of_token[extra:] == doc_of_token[:-extra]
            valid = valid.ravel()
            ngram_rows, kept = self._bucket_rows(grams.ravel()[valid])
            parts_ids.append(ngram_rows)
            parts_docs.append(np.repeat(doc_of_token, longest)[valid][kept])
        ids = np.concatenate(parts_ids)
        docs = np.concatenate(parts_docs)
        order = np.argsort(docs, kind="stable")  # a few sorted runs: a cheap merge
        return ids[order], np.bincount(docs, minlength=len(texts))

    @staticmethod
    def sum_rows(table: np.ndarray, ids: np.ndarray, counts: np.ndarray, in_float64: bool) -> np.ndarray:
        """float32 [len(counts), width]: each document's sum of its rows of ``table``, in id order.

        In float32 one row after the other, as fastText's ``Vector::addRow`` (``cumsum`` is that
        sequential sum; numpy's ``sum`` and ``reduceat`` add pairwise or in SIMD lanes and drift
        from fastText by up to 1e-4 on a document of a million ids), or with ``in_float64`` exactly
        and rounded once: folded rows are logit contributions, whose float32 sum would drift 2e-5
        from fastText's float32 sum of hidden vectors (itself within ~1e-6 of exact over 10^5 ids).
        """
        sums = np.zeros((len(counts), table.shape[1]), dtype=np.float32)
        ends = np.cumsum(counts)
        for doc in np.flatnonzero(counts):
            rows = table[ids[ends[doc] - counts[doc]:ends[doc]]]
            sums[doc] = np.cumsum(rows.astype(np.float64) if in_float64 else rows, axis=0)[-1]
        return sums


class CompiledFeaturizer:
    """The same featurization in C (``_featurize.c``, built by ``pip install -e``): no per-token
    Python objects, so hashing costs less than native fastText's own prediction."""

    def __init__(self, words: Sequence[bytes], labels: Sequence[bytes], *, bucket: int, minn: int, maxn: int,
                 word_ngrams: int, pruneidx_size: int = -1, pruneidx: dict[int, int] | None = None,
                 cache_limit: int = 1 << 18):
        from selectd.models.fasttext._featurize import Featurizer as _Compiled

        bucket_rows = None
        if pruneidx_size > 0:
            rows = np.full(bucket, -1, dtype=np.int32)
            rows[np.fromiter(pruneidx.keys(), dtype=np.int64, count=len(pruneidx))] = \
                np.fromiter(pruneidx.values(), dtype=np.int32, count=len(pruneidx))
            bucket_rows = rows.tobytes()
        self._compiled = _Compiled(list(words), list(labels), bucket, minn, maxn, word_ngrams, bucket_rows,
                                   pruneidx_size == 0, cache_limit)

    def featurize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """As :meth:`Featurizer.featurize`."""
        ids, counts = self._compiled.featurize(texts)
        return np.frombuffer(ids, dtype=np.int64), np.frombuffer(counts, dtype=np.int64)

    @staticmethod
    def sum_rows(table: np.ndarray, ids: np.ndarray, counts: np.ndarray, in_float64: bool) -> np.ndarray:
        """As :meth:`Featurizer.sum_rows`, in C."""
        from selectd.models.fasttext._featurize import sum_rows

        table = np.ascontiguousarray(table, dtype=np.float32)
        sums = sum_rows(table, table.shape[1], np.ascontiguousarray(ids, dtype=np.int64),
                        np.ascontiguousarray(counts, dtype=np.int64), in_float64)
        return np.frombuffer(sums, dtype=np.float32).reshape(len(counts), table.shape[1])


def compiled_available() -> bool:
    try:
        from selectd.models.fasttext import _featurize  # noqa: F401
    except ImportError:
        return False
    return True


def make_featurizer(words: Sequence[bytes], labels: Sequence[bytes], implementation: str = "auto",
                    **model_args) -> Featurizer | CompiledFeaturizer:
    """``compiled`` (C), ``numpy``, or ``auto``: the compiled one when it was built."""
    if implementation == "compiled" or (implementation == "auto" and compiled_available()):
        return CompiledFeaturizer(words, labels, **model_args)
    if implementation not in ("auto", "numpy"):
        raise ValueError(f"unknown featurizer implementation {implementation!r}; use auto, compiled or numpy")
    return Featurizer(words, labels, **model_args)
