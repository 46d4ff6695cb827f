"""Decision agreement with datatrove (the oracle) on ≥ 3,000 real documents of the sample corpus.

datatrove's four filters run per document one after the other, so its lru-cached word split is
computed once per document and shared, as in a datatrove pipeline.
"""
import json

import numpy as np
import pytest

from selectd.demo.corpus import build_corpus
from selectd.thresholds import Rule, first_failures
from selectd.scorers import scorer_class
from selectd.text.affix_split import EnglishSplitter

from datatrove.pipeline import filters  # test extra: missing means a broken install, not a skip
from datatrove.data import Document  # noqa: E402
from datatrove.utils.text import split_into_words  # noqa: E402

KINDS = {
    "gopher_quality": filters.GopherQualityFilter,
    "gopher_repetition": filters.GopherRepetitionFilter,
    "c4_quality": filters.C4QualityFilter,
    "fineweb_quality": filters.FineWebQualityFilter,
}
MIN_REAL_DOCS = 3000
MIN_AGREEMENT = 0.98


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("rules") / "sample.jsonl"
    build_corpus(path, n_docs=3500, seed=0)
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    real = [d["text"] for d in docs if d["kind"] == "real"]
    assert len(real) >= MIN_REAL_DOCS
    return {"real": real, "synthetic": [d["text"] for d in docs if d["kind"] != "real"]}


@pytest.fixture(scope="module")
def datatrove_verdicts(corpus):
    """Per corpus part: datatrove's reasons per filter (None = kept), and its word split."""
    references = {kind: cls() for kind, cls in KINDS.items()}
    verdicts = {}
    for part, texts in corpus.items():
        reasons = {kind: [] for kind in KINDS}
        words = []
        for index, text in enumerate(texts):
            for kind, reference in references.items():
                verdict = reference.filter(Document(text=text, id=str(index)))
                reasons[kind].append(None if verdict is True else verdict[1])
            words.append(split_into_words(text, "eng"))  # cached by the filters above
        verdicts[part] = {"reasons": reasons, "words": words}
    return verdicts


def our_reasons(kind, texts, batch_size=256):
    cls = scorer_class(kind)
    scorer = cls(kind, cls.Options())
    rules = [Rule(**r) for r in scorer.default_rules()]
    reasons = []
    for start in range(0, len(texts), batch_size):
        batch = texts[start:start + batch_size]
        reasons += first_failures(rules, scorer.run(batch), len(batch))
    return reasons


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_decision_agreement_with_datatrove(kind, corpus, datatrove_verdicts):
    for part, texts in corpus.items():
        ours = our_reasons(kind, texts)
        reference = datatrove_verdicts[part]["reasons"][kind]
        decisions = np.mean([(a is None) == (b is None) for a, b in zip(ours, reference)])
        reasons = np.mean([a == b for a, b in zip(ours, reference)])
        rejected = sum(r is not None for r in reference)
        print(f"{kind} on {len(texts)} {part} docs: decision agreement {decisions:.4f}, "
              f"same reason {reasons:.4f}, datatrove rejects {rejected}")
        assert decisions >= MIN_AGREEMENT, f"{kind}: {decisions:.4f} decision agreement on {part} documents"
        assert 0 < rejected < len(texts), f"{kind}: every {part} document gets the same decision"


def test_word_split_equals_datatrove_on_the_corpus(corpus, datatrove_verdicts):
    splitter = EnglishSplitter()
    for part, texts in corpus.items():
        words = datatrove_verdicts[part]["words"]
        same = np.mean([splitter.split(text) == reference for text, reference in zip(texts, words)])
        print(f"word split identical to datatrove's on {same:.4f} of {len(texts)} {part} docs")
        assert same >= 0.999
