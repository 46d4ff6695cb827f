"""The streaming dedup decision against references, on the near-duplicate corpus in one stream order.

MinHash: against datatrove's full pipeline (signature -> buckets -> cluster -> filter, one task).
Our decision is "shares a band with an earlier document"; datatrove's buckets step pairs each
document with the previous one of the same band, so the documents we remove must be exactly the
second members of its pairs. Its filter removes all but one document per connected cluster, and a
stream cannot always do the same; the differences are listed and each must have one of two causes:

- *representative*: datatrove keeps one document per cluster, chosen by union-by-size in bucket
  and signature order, not the earliest; we keep the earliest (the only one a stream can keep)
  and remove the one datatrove kept;
- *late bridge*: the document shares no band with any earlier document; it joined its cluster
  only through a document that came after it, which a stream has not seen when it decides.

Exact: against a dictionary of the full normalized strings (datatrove's own ``simplify_text``).

Both run the stages themselves (``minhash_dedup``, ``exact_dedup`` with their default rules, the
embedded store) on the corpus in batches, as the cascade does.
"""
from __future__ import annotations

import collections
from pathlib import Path

import pytest

from conftest import as_documents
from selectd.cascade import Stage
from selectd.config import StageConfig
from selectd.dedup.keys import ExactDedupOptions
from selectd.dedup.stage import Duplicate, StoreConfig
from selectd.scorers.base import StageContext

BATCH = 400


def stream(kind: str, options: dict, docs: list[dict], store_path: Path, batch: int = BATCH) -> list[Duplicate | None]:
    """What a ``kind`` stage decides on ``docs`` in stream order: per document, the rejection as a
    Duplicate (the id it names, the key whose signal is set), or None when it is kept."""
    stage = Stage.from_config(StageConfig(name="dedup", type=kind, options=options),
                              StageContext(StoreConfig(path=store_path)))
    labels = stage.scorer.keys.labels
    verdicts: list[Duplicate | None] = []
    try:
        for start in range(0, len(docs), batch):
            signals, reasons = stage.decide(as_documents(docs[start:start + batch]))
            for position, reason in enumerate(reasons):
                matched = [label for label in labels if signals[stage.scorer.signal(label)][position] == 1]
                if reason is None:
                    assert matched == [] and signals["duplicate_of"][position] is None
                    verdicts.append(None)
                else:  # one key's signal set, the default rule's reason naming it
                    assert len(matched) == 1 and reason == stage.scorer.signal(matched[0])
                    verdicts.append(Duplicate(signals["duplicate_of"][position], matched[0]))
    finally:
        stage.scorer.close()
    return verdicts


@pytest.fixture(scope="module")
def minhash_verdicts(dedup_corpus, tmp_path_factory):
    return stream("minhash_dedup", {}, dedup_corpus, tmp_path_factory.mktemp("minhash"))


def test_minhash_removes_exactly_the_documents_datatrove_pairs_with_an_earlier_one(
        dedup_corpus, datatrove_minhash, minhash_verdicts):
    removed = {d for d, verdict in enumerate(minhash_verdicts) if verdict is not None}
    paired_later = {later for _, later in datatrove_minhash.pairs}
    assert removed == paired_later
    # duplicate_of names an earlier document that shares a band (same signature rows) with it
    position = {doc["id"]: d for d, doc in enumerate(dedup_corpus)}
    signatures = datatrove_minhash.signatures
    for d in removed:
        verdict = minhash_verdicts[d]
        of = position[verdict.of]
        assert verdict.key == "minhash" and of < d
        assert (signatures[of] == signatures[d]).all(axis=1).any(), (d, of)


def datatrove_clusters(pairs: list[tuple[int, int]]) -> dict[int, list[int]]:
    root: dict[int, int] = {}

    def find(x: int) -> int:
        while root.get(x, x) != x:
            x = root[x]
        return x

    for a, b in pairs:
        ra, rb = find(a), find(b)
        if ra != rb:
            root[max(ra, rb)] = min(ra, rb)
    clusters = collections.defaultdict(list)
    for doc in {d for pair in pairs for d in pair}:
        clusters[find(doc)].append(doc)
    return {first: sorted(members) for first, members in clusters.items()}


def test_minhash_decisions_against_datatrove_filter(dedup_corpus, datatrove_minhash, minhash_verdicts):
    n = len(dedup_corpus)
    ours = {d for d, verdict in enumerate(minhash_verdicts) if verdict is not None}
    theirs = datatrove_minhash.removed
    clusters = datatrove_clusters(datatrove_minhash.pairs)
    cluster_of = {d: first for first, members in clusters.items() for d in members}
    has_earlier_match = {later for _, later in datatrove_minhash.pairs}
    explained = collections.Counter()
    lines = []
    for d in sorted(ours ^ theirs):
        members = clusters[cluster_of[d]]
        kept_by_datatrove = [m for m in members if m not in theirs]
        if d in theirs and d == members[0]:
            cause = "representative"  # we keep the cluster's earliest; datatrove kept a later one
        elif d in ours and kept_by_datatrove == [d] and d in has_earlier_match:
            cause = "representative"  # ... and that later one is a duplicate of an earlier document
        elif d in theirs and d not in has_earlier_match:
            cause = "late bridge"
        else:
            cause = "UNEXPLAINED"
        explained[cause] += 1
        lines.append(f"{dedup_corpus[d]['id']} ({dedup_corpus[d]['source']}, {dedup_corpus[d]['edit']}): "
                     f"{'datatrove' if d in theirs else 'ours'} removes it; {cause}; cluster of {len(members)} "
                     f"starting at {dedup_corpus[members[0]]['id']}, datatrove keeps "
                     f"{[dedup_corpus[m]['id'] for m in kept_by_datatrove]}")
    agreement = 1 - len(ours ^ theirs) / n
    # datatrove's clusters with the stream's choice of representative (the earliest member kept)
    keep_first = {d for members in clusters.values() for d in members[1:]}
    keep_first_agreement = 1 - len(ours ^ keep_first) / n
    # only late bridges separate us from datatrove's clusters once the representative is the earliest
    late_bridges = {d for members in clusters.values() for d in members[1:] if d not in has_earlier_match}
    print(f"\n{n} documents: datatrove removes {len(theirs)}, ours {len(ours)}; raw decision agreement "
          f"{agreement:.2%}, differences by cause {dict(explained)}:")
    print("\n".join(lines))
    print(f"against datatrove's clusters with the earliest member kept: agreement {keep_first_agreement:.2%}, "
          f"{len(ours ^ keep_first)} differences, all late bridges (kept by us, joined to an earlier document "
          f"only through a later one): {sorted(dedup_corpus[d]['id'] for d in keep_first - ours)}")
    assert explained["UNEXPLAINED"] == 0
    assert keep_first - ours == late_bridges and ours <= keep_first
    assert keep_first_agreement >= 0.995
    assert agreement >= 0.97
    assert len(ours) <= len(theirs)  # a late bridge only ever keeps more


def reference_exact(docs: list[dict], options: ExactDedupOptions) -> list[tuple[str, str] | None]:
    """Per document: (first id with the same key, which key) or None; full strings, no hashing."""
    from datatrove.utils.text import simplify_text

    normalize = {"simplified": simplify_text, "whitespace": lambda t: " ".join(t.split()),
                 "none": lambda t: t}[options.normalization]
    first: dict[tuple[str, str], str] = {}
    out = []
    for doc in docs:
        keys = ([("text", normalize(doc["text"]))] if options.text else []) + \
               [(name, str(doc[name])) for name in options.fields if doc.get(name) not in (None, "")]
        match = None
        for key in keys:
            if key[0] == "text" and key[1] == "":
                continue
            owner = first.setdefault(key, doc["id"])
            if owner != doc["id"] and match is None:
                match = (owner, key[0])
        out.append(match)
    return out


@pytest.mark.parametrize("options", [
    ExactDedupOptions(),
    ExactDedupOptions(normalization="whitespace"),
    ExactDedupOptions(normalization="none"),
    ExactDedupOptions(text=False, fields=["url"]),
    ExactDedupOptions(fields=["url"]),
], ids=["simplified", "whitespace", "none", "url", "text+url"])
def test_exact_dedup_equals_direct_reference(dedup_corpus, tmp_path, options):
    expected = reference_exact(dedup_corpus, options)
    verdicts = stream("exact_dedup", options.model_dump(), dedup_corpus, tmp_path)
    got = [None if v is None else (v.of, v.key) for v in verdicts]
    assert got == expected
    assert sum(v is not None for v in got) > 100  # the corpus has plenty of exact duplicates


def test_simplified_exact_keys_catch_reformatted_copies(dedup_corpus):
    """Copies that differ from their original only in case, line ends and punctuation: the later
    of the two is an exact duplicate once simplified; unnormalized, the copy never is."""
    original = {doc["source"]: d for d, doc in reversed(list(enumerate(dedup_corpus))) if doc["edit"] == "original"}
    copies = [(d, original[doc["source"]]) for d, doc in enumerate(dedup_corpus) if doc["edit"].startswith("reformat")]
    assert len(copies) >= 20
    simplified = reference_exact(dedup_corpus, ExactDedupOptions(normalization="simplified"))
    unnormalized = reference_exact(dedup_corpus, ExactDedupOptions(normalization="none"))
    assert all(simplified[max(copy, source)] is not None for copy, source in copies)
    assert all(unnormalized[copy] is None for copy, _ in copies)
