"""Dedup keys: what a document is compared on, as 64-bit integers a store can hold.

A key is the first 8 bytes (little-endian) of BLAKE2b over a namespace, a slot label and the
content, so keys of different stages, fields or MinHash configurations never meet even in one
store. Two derivations:

- :class:`ExactKeys` (``exact_dedup``): the normalized text and/or the values of named fields
  (``url``); a document is a duplicate when any of its keys was claimed by another document.
- :class:`MinhashKeys` (``minhash_dedup``): one key per LSH band of the datatrove MinHash
  signature (bucket index + the band's hashes), so two documents share a key exactly when
  datatrove's ``MinhashDedupBuckets`` would pair them in that bucket.

64 bits: two different contents share a key with probability 2^-64 per pair; with ``k`` keys
per document, ``n`` documents make about ``(k n)^2 / 2^65`` such collisions (0.05 for 100 million
MinHash documents with 14 bands), each a document wrongly marked duplicate.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from selectd.dedup.minhash import MinhashOptions, MinhashSigner
from selectd.dedup.normalize import TextNorm, simplify_text


@dataclass(frozen=True)
class KeyBatch:
    """The keys of a batch of documents: document d's keys are ``keys[offsets[d]:offsets[d+1]]``,
    in the order they are checked; ``slots[i]`` indexes ``labels``, naming what key i is made of
    (``text``, a field name, ``minhash``)."""

    keys: np.ndarray      # uint64
    offsets: np.ndarray   # int64, n_docs + 1
    slots: np.ndarray     # uint8, one per key
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def doc_keys(self, d: int) -> np.ndarray:
        return self.keys[self.offsets[d]:self.offsets[d + 1]]


def _digest64(prefix: bytes, content: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(prefix + content, digest_size=8).digest(), "little")


def _namespace(description: str) -> bytes:
    """A fixed-length prefix standing for ``description`` (so content cannot shift into it)."""
    return hashlib.blake2b(description.encode(), digest_size=16).digest()


class ExactDedupOptions(BaseModel):
    """``exact_dedup`` stage options: which keys a document is compared on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: bool = Field(default=True, description="key on the normalized text")
    fields: list[str] = Field(default_factory=list, description="key on each of these fields' values (e.g. url)")
    normalization: Literal["simplified", "whitespace", "none"] = Field(
        default="simplified",
        description="simplified: datatrove's simplify_text (lowercase, no punctuation, numbers as 0, no "
                    "diacritics, single spaces), as CCNet / Dolma normalize for dedup; whitespace: "
                    "whitespace runs as one space, ends stripped; none: the text as is (NeMo's exact dedup)")

    @model_validator(mode="after")
    def _some_key(self) -> "ExactDedupOptions":
        if not self.text and not self.fields:
            raise ValueError("exact_dedup needs a key: text = true and/or fields = [...]")
        # each key names a signal, duplicate_<key>, beside duplicate_of
        labels = (["text"] if self.text else []) + self.fields
        if clash := sorted({name for name in labels if labels.count(name) > 1 or name == "of"}):
            raise ValueError(f"fields {clash}: a key is named once, and not 'of' (nor 'text' with text = true)")
        return self

    def normalize(self, text: str) -> str:
        if self.normalization == "simplified":
            return simplify_text(text, TextNorm())
        if self.normalization == "whitespace":
            return " ".join(text.split())
        return text


class ExactKeys:
    """Keys of ``exact_dedup``: the normalized text's (none for a text that normalizes to
    nothing), then each configured field's (none where the field is missing, null or empty).
    A field value is keyed as its string (``str()`` of a number), not normalized."""

    def __init__(self, options: ExactDedupOptions):
        self.options = options
        self.labels = (("text",) if options.text else ()) + tuple(options.fields)
        self._prefixes = [_namespace(f"exact:text:{options.normalization}")] if options.text else []
        self._prefixes += [_namespace(f"exact:field:{name}") for name in options.fields]

    def derive(self, texts: Sequence[str], fields: Sequence[Mapping[str, Any]]) -> KeyBatch:
        keys: list[int] = []
        slots: list[int] = []
        offsets = [0]
        for text, doc_fields in zip(texts, fields, strict=True):
            contents = [self.options.normalize(text)] if self.options.text else []
            contents += [doc_fields.get(name) for name in self.options.fields]
            for slot, content in enumerate(contents):
                if content is None or content == "":
                    continue
                keys.append(_digest64(self._prefixes[slot], str(content).encode("utf-8", "surrogatepass")))
                slots.append(slot)
            offsets.append(len(keys))
        return KeyBatch(np.asarray(keys, dtype=np.uint64), np.asarray(offsets, dtype=np.int64),
                        np.asarray(slots, dtype=np.uint8), self.labels)


class MinhashKeys:
    """Keys of ``minhash_dedup``: one per band of each document's signature (none for a document
    without a signature, which datatrove never removes either)."""

    labels = ("minhash",)

    def __init__(self, options: MinhashOptions, implementation: str = "auto"):
        self.signer = MinhashSigner(options, implementation)
        self._prefix = _namespace(options.describe())

    def derive(self, texts: Sequence[str], fields: Sequence[Mapping[str, Any]] | None = None) -> KeyBatch:
        signatures, has_signature = self.signer.signatures(texts)
        n_buckets = self.signer.options.num_buckets
        keys = [_digest64(self._prefix, bucket.to_bytes(2, "little") + band.tobytes())
                for d in np.flatnonzero(has_signature) for bucket, band in enumerate(signatures[d])]
        offsets = np.concatenate([[0], np.cumsum(has_signature * n_buckets)]).astype(np.int64)
        return KeyBatch(np.asarray(keys, dtype=np.uint64), offsets, np.zeros(len(keys), dtype=np.uint8), self.labels)
