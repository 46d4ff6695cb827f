"""Oracles for the dedup tests: the near-duplicate corpus and datatrove's full MinHash pipeline
run on it once per session, and a redis-server (fixtures imported by conftest.py).

datatrove's four steps run with ``LocalPipelineExecutor`` (one task, in this process) on the
corpus in stream order: ``MinhashDedupSignature`` -> ``MinhashDedupBuckets`` ->
``MinhashDedupCluster`` -> ``MinhashDedupFilter``. Besides what the filter removes, the run's
files give each document's signature (the per-bucket ``.minhash.sig`` records) and the duplicate
pairs the buckets step found (``.dups``), which the tests use to explain differences.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from selectd.tools.dedup_corpus import build_corpus
from selectd.dedup.minhash import MinhashOptions


def datatrove_config(options: MinhashOptions):
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    return MinhashConfig(n_grams=options.n_grams, num_buckets=options.num_buckets,
                         hashes_per_bucket=options.hashes_per_bucket, seed=options.seed,
                         norm_config=TextNormConfig(**options.norm.model_dump()),
                         hash_config=HashConfig(precision=options.precision, hash_fc=options.hash_fc))


@dataclass
class DatatroveMinhash:
    signatures: dict[int, np.ndarray]   # stream index -> (buckets, hashes); absent: no signature
    pairs: list[tuple[int, int]]        # duplicate pairs found by MinhashDedupBuckets
    removed: set[int]                   # stream indices MinhashDedupFilter dropped


def run_datatrove_minhash(texts: list[str], workdir: Path, options: MinhashOptions = MinhashOptions()) -> DatatroveMinhash:
    from datatrove.data import Document
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter,
                                                  MinhashDedupSignature)

    config = datatrove_config(options)

    def documents():
        return [Document(text=text, id=str(i)) for i, text in enumerate(texts)]

    kept: list[int] = []

    def collect(data, rank=0, world_size=1):
        for doc in data:
            kept.append(int(doc.id))
            yield doc

    steps = [
        [documents(), MinhashDedupSignature(output_folder=str(workdir / "sigs"), config=config)],
        [MinhashDedupBuckets(input_folder=str(workdir / "sigs"), output_folder=str(workdir / "buckets"), config=config)],
        [MinhashDedupCluster(input_folder=str(workdir / "buckets"), output_folder=str(workdir / "remove"), config=config)],
        [documents(), MinhashDedupFilter(input_folder=str(workdir / "remove")), collect],
    ]
    for name, pipeline in zip(("sigs", "buckets", "cluster", "filter"), steps):
        tasks = config.num_buckets if name == "buckets" else 1
        LocalPipelineExecutor(pipeline=pipeline, tasks=tasks, workers=1,
                              logging_dir=str(workdir / "logs" / name)).run()
    return DatatroveMinhash(_read_signatures(workdir / "sigs", options), _read_pairs(workdir / "buckets"),
                            set(range(len(texts))) - set(kept))


def _read_signatures(folder: Path, options: MinhashOptions) -> dict[int, np.ndarray]:
    width = "<u4" if options.precision == 32 else "<u8"
    record = np.dtype([("sig", width, options.hashes_per_bucket), ("doc", "<u4")])
    signatures: dict[int, np.ndarray] = {}
    for bucket in range(options.num_buckets):
        rows = np.fromfile(folder / f"bucket_{bucket:03d}" / "00000.minhash.sig", dtype=record)
        for sig, doc in zip(rows["sig"], rows["doc"].tolist()):
            signatures.setdefault(doc, np.zeros((options.num_buckets, options.hashes_per_bucket), dtype=width))[bucket] = sig
    return signatures


def _read_pairs(folder: Path) -> list[tuple[int, int]]:
    pairs = []
    for path in sorted(folder.glob("*.dups")):
        data = path.read_bytes()
        pairs += [(d1, d2) for _, d1, _, d2 in struct.iter_unpack("<4I", data)]
    return pairs


@pytest.fixture(scope="session")
def redis_server():
    """One private redis-server for the session; tests keep to their own key prefixes."""
    from selectd.tools.redis_server import RedisServer

    with RedisServer() as server:
        yield server


@pytest.fixture(scope="session")
def dedup_corpus() -> list[dict]:
    corpus = build_corpus()
    assert len(corpus) >= 2000, "the machine has too little text for the dedup corpus"
    return corpus


@pytest.fixture(scope="session")
def datatrove_minhash(dedup_corpus, tmp_path_factory) -> DatatroveMinhash:
    return run_datatrove_minhash([doc["text"] for doc in dedup_corpus], tmp_path_factory.mktemp("datatrove_minhash"))
