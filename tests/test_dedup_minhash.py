"""MinHash signatures and their text normalization equal datatrove 0.10.1's (minhash.py, normalize.py)."""
import re
import sys
import unicodedata

import numpy as np
import pytest

from dedup_reference import datatrove_config
from selectd.dedup import normalize
from selectd.dedup.minhash import MinhashOptions, MinhashSigner
from selectd.dedup.normalize import TextNorm, simplify_text

TRICKY = [
    "Café naïve ﬁancé résumé — “quoted” Ⅻ 3,5 km/h 10km ١٢٣٫٤ 𑵐𑵑 ２０２４年 cannot gonna don't",
    "Tabs\tand\u00a0no-break\u2028line\u3000ideographic  spaces\x1c\x1dseparators",
    "MONDAY january 1st, 2023: Ünïcödé ÅNGSTRÖM ǅ İstanbul ΣΊΣΥΦΟΣ",
    "e\u0301 a\u0300\u0323 combining marks after ASCII letters, and ㈱ ﬀ compatibility characters",
    "short", "", "   ", "!!! ??? ...",
]


def test_normalization_tables_equal_datatrove_over_all_code_points():
    from datatrove.utils import text as dt

    assert normalize.PUNCTUATION == dt.PUNCTUATION
    every = [chr(c) for c in range(sys.maxunicode + 1) if not 0xD800 <= c <= 0xDFFF]
    # numbers: datatrove's \p{Nd} (the regex module) against our re class, one code point at a time
    assert [c for c in every if bool(dt.NUMBERS_PATTERN.fullmatch(c)) != bool(normalize._NUMBERS.fullmatch(c))] == []
    # whitespace: str.split() splits exactly where datatrove's re \s+ matches
    assert [c for c in every if c.isspace() != bool(re.fullmatch(r"\s", c))] == []
    # diacritics: the dropped characters are exactly category Mn
    assert set(normalize._drop_marks()) == {ord(c) for c in every if unicodedata.category(c) == "Mn"}
    assert simplify_text("".join(every)) == dt.simplify_text("".join(every))


@pytest.mark.parametrize("norm", [TextNorm(), TextNorm(norm_weekdays=True, norm_monthnames=True),
                                  TextNorm(lowercase=False, norm_numbers=False, norm_unicode_diacritics=False),
                                  TextNorm(remove_punctuation=False, norm_whitespace=False)])
def test_simplify_text_equals_datatrove(dedup_corpus, norm):
    from datatrove.utils.text import TextNormConfig, simplify_text as reference

    config = TextNormConfig(**norm.model_dump())
    texts = TRICKY + [doc["text"] for doc in dedup_corpus[::5]]
    assert [i for i, t in enumerate(texts) if simplify_text(t, norm) != reference(t, config)] == []


def test_signatures_equal_datatrove_on_the_corpus(dedup_corpus, datatrove_minhash):
    """Both implementations, default MinhashConfig (sha1 hash): every document of the corpus, the
    reference read from the signature files of datatrove's own pipeline run."""
    texts = [doc["text"] for doc in dedup_corpus]
    assert len(texts) >= 1000
    expected = datatrove_minhash.signatures
    assert len(expected) >= 1000
    for implementation in ("compiled", "python"):
        signatures, has_signature = MinhashSigner(MinhashOptions(), implementation).signatures(texts)
        assert set(np.flatnonzero(has_signature).tolist()) == set(expected), implementation
        wrong = [d for d, sig in expected.items() if not np.array_equal(signatures[d], sig)]
        assert wrong == [], (implementation, wrong[:5])


@pytest.mark.parametrize("options", [
    MinhashOptions(precision=32),
    MinhashOptions(n_grams=3, num_buckets=5, hashes_per_bucket=4, seed=7),
    MinhashOptions(n_grams=1, num_buckets=2, hashes_per_bucket=20, seed=123,
                   norm=TextNorm(lowercase=False, remove_punctuation=False)),
])
def test_signatures_equal_datatrove_for_other_configs(dedup_corpus, options):
    from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

    reference = MinhashDedupSignature("/nonexistent", config=datatrove_config(options))
    texts = TRICKY + [doc["text"] for doc in dedup_corpus[:250]]
    expected = []
    for text in texts:
        shingles = reference.get_shingles(text)
        expected.append(np.array(reference.get_signature(shingles)) if shingles.size else None)
    for implementation in ("compiled", "python"):
        signatures, has_signature = MinhashSigner(options, implementation).signatures(texts)
        assert signatures.dtype == (np.uint32 if options.precision == 32 else np.uint64)
        for d, sig in enumerate(expected):
            assert has_signature[d] == (sig is not None), (implementation, d)
            if sig is not None:
                assert np.array_equal(signatures[d], sig), (implementation, d)


def test_options_are_checked():
    with pytest.raises(ValueError, match="English"):
        MinhashOptions(language="fra")
    with pytest.raises(ValueError):
        MinhashOptions(hash_fc="xxhash")
    with pytest.raises(ValueError, match="implementation"):
        MinhashSigner(MinhashOptions(), "fortran")
