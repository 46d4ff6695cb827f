"""MinHash signatures identical to datatrove 0.10.1's ``MinhashDedupSignature``.

datatrove, per document: ``simplify_text`` (normalize.py), its English word tokenizer (spaCy's
``en`` split, whitespace tokens dropped), word n-grams joined with single spaces, each hashed to
64 bits (the first 8 bytes of SHA-1, little-endian; 4 bytes for 32-bit precision), then for each of
``num_buckets * hashes_per_bucket`` hash functions ``min((h * a + b) mod 2^64 mod (2^61 - 1))``
(masked to 32 bits for 32-bit precision), ``a``/``b`` drawn by ``np.random.RandomState(seed)``.
A document with fewer words than ``n_grams`` has no signature (datatrove writes none, so it is
never a duplicate).

Here the same values come cheaper: the word split is selectd's port of spaCy's (a cached chunk
table, no spaCy), words of a whole batch are split at once, and the n-gram hashing and minimum run
in C (``_minhash.c``) over the batch's word ids; without the extension, the n-grams are hashed
with hashlib and the minimum is taken with numpy over all n-grams x hash functions at once.

Only datatrove's ``sha1`` hash is offered: its default ``xxhash`` passes ``str`` to
``xxhash.xxh64_intdigest``, which current xxhash releases reject, so it has no reference output.
"""
from __future__ import annotations

import hashlib
from typing import Literal, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from selectd.dedup.normalize import TextNorm, simplify_text
from selectd.text.vocabulary import shared_tokenizer, tokenizer_language

try:
    from selectd.dedup import _minhash as _compiled
except ImportError:  # built without a C compiler: _python_signatures gives the same values, slower
    _compiled = None

MERSENNE_PRIME = np.uint64((1 << 61) - 1)
#: n-gram hashes per numpy block in the fallback path (x hash functions x 8 bytes of memory)
_BLOCK_SHINGLES = 8192


def check_language(language: str) -> str:
    """``language`` if its datatrove word tokenizer is re-implemented, else a ValueError."""
    tokenizer_language(language)
    return language


class MinhashOptions(BaseModel):
    """datatrove's ``MinhashConfig`` (same fields and defaults, ``hash_config`` flattened into
    ``precision`` and ``hash_fc``) and ``MinhashDedupSignature``'s ``language``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_grams: int = Field(default=5, ge=1, description="words per shingle")
    num_buckets: int = Field(default=14, ge=1, description="LSH bands; a document matches on any one")
    hashes_per_bucket: int = Field(default=8, ge=1, description="hashes per band; all must be equal")
    seed: int = Field(default=1, ge=0, lt=2**32, description="seed of the hash functions' parameters")
    precision: Literal[32, 64] = 64
    hash_fc: Literal["sha1"] = Field(default="sha1", description="n-gram hash (datatrove's sha1)")
    norm: TextNorm = TextNorm()
    language: str = Field(default="eng", description="datatrove word tokenizer language (English only)")

    @field_validator("language")
    @classmethod
    def _tokenizer_exists(cls, language: str) -> str:
        return check_language(language)

    @property
    def num_hashes(self) -> int:
        return self.num_buckets * self.hashes_per_bucket

    @property
    def dtype(self) -> type:
        return np.uint32 if self.precision == 32 else np.uint64

    def describe(self) -> str:
        """Everything that changes the signature values, as one string (part of the store keys)."""
        norm = ",".join(f"{k}={int(v)}" for k, v in self.norm.model_dump().items())
        return (f"minhash:{self.n_grams}ng:{self.num_buckets}x{self.hashes_per_bucket}:{self.hash_fc}"
                f"{self.precision}:seed={self.seed}:{self.language}:{norm}")


class MinhashSigner:
    """Signatures of batches of texts for one :class:`MinhashOptions`."""

    def __init__(self, options: MinhashOptions = MinhashOptions(), implementation: str = "auto"):
        """``implementation``: ``compiled`` (``_minhash.c``), ``python`` or ``auto`` (compiled when built)."""
        if implementation not in ("auto", "compiled", "python"):
            raise ValueError(f"unknown MinHash implementation {implementation!r}; use auto, compiled or python")
        if implementation == "compiled" and _compiled is None:
            raise RuntimeError("the C MinHash (selectd/dedup/_minhash.c) is not available: "
                               "reinstall with a C compiler (pip install -e .)")
        self.options = options
        self.compiled = _compiled is not None and implementation != "python"
        self.tokenizer = shared_tokenizer()
        # datatrove's MinhashDedupSignature.parameters, drawn the same way
        gen = np.random.RandomState(options.seed)
        self.a = gen.randint(1, MERSENNE_PRIME, dtype=np.uint64, size=options.num_hashes)
        self.b = gen.randint(0, MERSENNE_PRIME, dtype=np.uint64, size=options.num_hashes)

    def signatures(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(signatures, has_signature)``: ``signatures[d]`` is document d's ``(num_buckets,
        hashes_per_bucket)`` array (datatrove's ``get_signature``, in its dtype); ``has_signature[d]``
        is False for a document with fewer than ``n_grams`` words (its row is meaningless)."""
        o = self.options
        batch = self.tokenizer.tokenize([simplify_text(text, o.norm) for text in texts])
        has_signature = batch.counts >= o.n_grams
        if self.compiled:
            flat = np.frombuffer(_compiled.signatures(self.tokenizer.vocab.strings, batch.ids, batch.offsets,
                                                      o.n_grams, self.a, self.b, o.precision), dtype=np.uint64)
        else:
            flat = self._python_signatures(batch.ids, batch.offsets)
        shape = (len(texts), o.num_buckets, o.hashes_per_bucket)
        return flat.reshape(shape).astype(o.dtype), has_signature

    def _python_signatures(self, ids: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """The fallback of ``_minhash.signatures``: same values (minima stay at the dtype's max for
        documents without a signature)."""
        o = self.options
        strings = self.tokenizer.vocab.strings
        width = 4 if o.precision == 32 else 8
        shingles: list[int] = []
        owners: list[int] = []  # document of each shingle
        for d, (start, end) in enumerate(zip(offsets[:-1].tolist(), offsets[1:].tolist())):
            words = [strings[i] for i in ids[start:end].tolist()]
            grams = [" ".join(words[g:g + o.n_grams]) for g in range(len(words) - o.n_grams + 1)]
            shingles.extend(int.from_bytes(hashlib.sha1(gram.encode()).digest()[:width], "little") for gram in grams)
            owners.extend([d] * len(grams))
        out = np.full((len(offsets) - 1, o.num_hashes), np.iinfo(np.uint64).max, dtype=np.uint64)
        shingle_array = np.asarray(shingles, dtype=np.uint64).reshape(-1, 1)
        owner_array = np.asarray(owners, dtype=np.int64)
        for start in range(0, len(shingles), _BLOCK_SHINGLES):
            block = slice(start, start + _BLOCK_SHINGLES)
            values = (shingle_array[block] * self.a + self.b) % MERSENNE_PRIME
            if o.precision == 32:
                values &= np.uint64(0xFFFFFFFF)
            docs, first = np.unique(owner_array[block], return_index=True)  # owners are non-decreasing
            np.minimum.at(out, docs, np.minimum.reduceat(values, first, axis=0))
        return out
