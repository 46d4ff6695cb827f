"""``selectd bench dedup``: MinHash signatures vs datatrove's, the dedup stage's cost, the stores'.

Same texts, same run: signatures against datatrove's, the stage's cost per document, and each
store's size per million documents, latency and round trips per batch.

- Signatures: CPU seconds of this process on one core. datatrove's side is exactly what
  ``MinhashDedupSignature.run`` does per document (``get_shingles`` + ``get_signature``) without
  its file writes; ours is :meth:`MinhashSigner.signatures` per batch, each implementation, after
  the word cache has seen the warm-up texts (a daemon that has been running a while). Both are
  warmed first (datatrove's first call loads spaCy), and the outputs are compared.
- Stage: the ``minhash_dedup`` stage with a fresh embedded store, CPU and wall time per document.
- Stores: ``store_docs`` synthetic documents of 14 random keys (MinHash's band count, all new: the
  largest a store grows per document) and 16-character ids, in batches; memory and disk (local
  stores: their own accounting and file sizes; Redis: ``used_memory`` growth of a private
  server) scaled to a million documents, bytes written to storage per document; per-batch wall
  latency; round trips per batch (Redis: counted by the server). The Bloom store is sized for exactly these keys at ``bloom_document_rate`` per
  document, and its false-positive rate is then measured on fresh documents.
"""
from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from selectd.dedup.bloom import BloomStore, key_rate_for_documents
from selectd.dedup.keys import KeyBatch
from selectd.dedup.minhash import MinhashOptions, MinhashSigner
from selectd.tools.benchmark import emit, one_core, read_texts
from selectd.tools.dedup_corpus import build_corpus
from selectd.tools.redis_server import RedisServer
from selectd.dedup.redis_store import RedisStore
from selectd.cascade import Stage
from selectd.config import StageConfig
from selectd.dedup.local import LocalStore
from selectd.dedup.stage import StoreConfig
from selectd.dedup.store import DedupStore
from selectd.records import Document, Record
from selectd.scorers.base import StageContext

BANDS = 14


def _cpu(run: Callable[[], Any]) -> tuple[float, Any]:
    start = time.process_time()
    result = run()
    return time.process_time() - start, result


def _batches(items: Sequence, size: int) -> list[Sequence]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def measure_signatures(warm_texts: Sequence[str], texts: Sequence[str], batch_size: int = 1000,
                       options: MinhashOptions = MinhashOptions()) -> dict[str, Any]:
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.text import TextNormConfig

    reference = MinhashDedupSignature("/nonexistent", config=MinhashConfig(
        n_grams=options.n_grams, num_buckets=options.num_buckets, hashes_per_bucket=options.hashes_per_bucket,
        seed=options.seed, norm_config=TextNormConfig(**options.norm.model_dump()),
        hash_config=HashConfig(precision=options.precision, hash_fc=options.hash_fc)))

    def datatrove_signatures():
        out = []
        for text in texts:
            shingles = reference.get_shingles(text)
            out.append(np.array(reference.get_signature(shingles)) if shingles.size else None)
        return out

    reference.get_shingles(warm_texts[0] if warm_texts else "warm up")  # loads spaCy
    datatrove_s, expected = _cpu(datatrove_signatures)
    chars = sum(map(len, texts))
    result: dict[str, Any] = {"texts": len(texts), "megabytes": chars / 1e6,
                              "datatrove": {"seconds": datatrove_s, "docs_per_s": len(texts) / datatrove_s}}
    for implementation in ("compiled", "python"):
        try:
            signer = MinhashSigner(options, implementation)
        except RuntimeError:  # the C extension was not built
            continue
        for batch in _batches(warm_texts, batch_size):
            signer.signatures(batch)
        seconds, outputs = _cpu(lambda: [signer.signatures(batch) for batch in _batches(texts, batch_size)])
        signatures = np.concatenate([sig for sig, _ in outputs]) if outputs else np.zeros((0,))
        has = np.concatenate([has for _, has in outputs]) if outputs else np.zeros((0,), bool)
        equal = sum((e is None and not h) or (e is not None and h and np.array_equal(s, e))
                    for e, s, h in zip(expected, signatures, has))
        result[implementation] = {"seconds": seconds, "docs_per_s": len(texts) / seconds,
                                  "ratio": datatrove_s / seconds, "equal_signatures": equal}
    return result


def measure_stage(warm_texts: Sequence[str], texts: Sequence[str], batch_size: int = 1000) -> dict[str, Any]:
    """The ``minhash_dedup`` stage as the cascade runs it (keys, one claim against a fresh embedded
    store, signals and the default rule's decision), per batch; CPU and wall time per document."""
    documents = [Document(Record("bench", 0, i, None, None), f"doc-{i}", text, {}) for i, text in enumerate(texts)]
    with tempfile.TemporaryDirectory() as directory:
        stage = Stage.from_config(StageConfig(name="near", type="minhash_dedup"),
                                  StageContext(StoreConfig(path=Path(directory))))
        try:
            for batch in _batches(warm_texts, batch_size):
                stage.scorer.keys.derive(batch)  # warms the word cache only: nothing stored
            wall = time.perf_counter()
            cpu, reasons = _cpu(lambda: [r for batch in _batches(documents, batch_size) for r in stage.decide(batch)[1]])
            wall = time.perf_counter() - wall
            round_trips = stage.scorer.deduplicator.store.round_trips
        finally:
            stage.scorer.close()
    return {"texts": len(texts), "cpu_us_per_doc": 1e6 * cpu / len(texts), "wall_us_per_doc": 1e6 * wall / len(texts),
            "duplicates": sum(r is not None for r in reasons),
            "round_trips_per_batch": round_trips / len(_batches(texts, batch_size))}


def synthetic_batches(n_docs: int, batch_size: int, seed: int = 0) -> Iterator[tuple[KeyBatch, list[str]]]:
    """Batches of documents with ``BANDS`` random (so all new) keys each and 16-character ids."""
    rng = np.random.default_rng(seed)
    for start in range(0, n_docs, batch_size):
        n = min(batch_size, n_docs - start)
        keys = rng.integers(0, 2**64, size=n * BANDS, dtype=np.uint64)
        yield (KeyBatch(keys, np.arange(0, (n + 1) * BANDS, BANDS, dtype=np.int64), np.zeros(len(keys), np.uint8),
                        ("minhash",)), [f"doc-{start + i:012d}" for i in range(n)])


def _fill(store: DedupStore, n_docs: int, batch_size: int) -> dict[str, Any]:
    latencies = []
    for batch, ids in synthetic_batches(n_docs, batch_size):
        start = time.perf_counter()
        store.claim(batch, ids)
        latencies.append(time.perf_counter() - start)
    latencies_ms = 1e3 * np.array(latencies)
    return {"batches": len(latencies), "batch_ms_median": float(np.median(latencies_ms)),
            "batch_ms_p99": float(np.percentile(latencies_ms, 99)),
            "docs_per_s": n_docs / float(np.sum(latencies)), "round_trips_per_batch": store.round_trips / len(latencies)}


def _written_bytes() -> int:
    """Bytes this process has caused to be written to storage (Linux /proc/self/io; 0 elsewhere)."""
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("write_bytes:"))
    except OSError:
        return 0


def _local_figures(store: DedupStore, n_docs: int, fill: dict[str, Any], written: int) -> dict[str, Any]:
    stats = store.stats()
    return {**fill, "disk_mb_per_million_docs": stats.disk_bytes / n_docs, "memory_mb_per_million_docs":
            stats.memory_bytes / n_docs, "written_bytes_per_doc": written / n_docs}


def measure_stores(n_docs: int = 200_000, batch_size: int = 1000, kinds: Sequence[str] = ("local", "redis", "bloom"),
                   bloom_document_rate: float = 1e-3) -> dict[str, Any]:
    """Sizes are scaled to a million documents (bytes / n_docs * 1e6 / 1e6 = bytes per document)."""
    results: dict[str, Any] = {"documents": n_docs, "keys_per_document": BANDS, "batch_size": batch_size}
    with tempfile.TemporaryDirectory() as directory:
        directory = Path(directory)
        if "local" in kinds:
            written = _written_bytes()
            with LocalStore(directory / "local") as store:
                fill = _fill(store, n_docs, batch_size)
                results["local"] = _local_figures(store, n_docs, fill, _written_bytes() - written)
            start = time.perf_counter()
            LocalStore(directory / "local").close()  # a restart reads the log back into memory
            results["local"]["reopen_s"] = time.perf_counter() - start
        if "redis" in kinds:
            bucket_bits = max(1, min(24, math.ceil(math.log2(max(2, n_docs * BANDS / 100)))))
            with RedisServer(directory / "redis") as server, \
                    RedisStore(server.url, bucket_bits=bucket_bits, timeout_s=60) as store:
                before = store.stats().memory_bytes
                fill = _fill(store, n_docs, batch_size)
                used = store.stats().memory_bytes - before
                calls = server.command_calls("evalsha")
            results["redis"] = {**fill, "bucket_bits": bucket_bits, "memory_mb_per_million_docs": used / n_docs,
                                "server_calls_per_batch": calls / fill["batches"]}
        if "bloom" in kinds:
            key_rate = key_rate_for_documents(bloom_document_rate, BANDS)
            written = _written_bytes()
            with BloomStore(directory / "bloom", capacity=n_docs * BANDS, false_positive_rate=key_rate) as store:
                fill = _fill(store, n_docs, batch_size)
                results["bloom"] = _local_figures(store, n_docs, fill, _written_bytes() - written)
                fresh = next(synthetic_batches(100_000, 100_000, seed=1))[0].keys
                seen = store.filter.contains(fresh)
                stats = store.stats()
                filter_bytes = store.filter.words.nbytes
            # the filter grows with the capacity asked; the journal window is a fixed amount
            results["bloom"].update(filter_mb_per_million_docs=filter_bytes / n_docs,
                                    window_memory_mb=(stats.memory_bytes - filter_bytes) / 1e6,
                                    journal_disk_mb=(stats.disk_bytes - filter_bytes) / 1e6,
                                    document_rate_asked=bloom_document_rate, key_rate_asked=key_rate,
                                    key_rate_measured=float(seen.mean()),
                                    document_rate_measured=float(seen.reshape(-1, BANDS).any(axis=1).mean()))
    return results


def measure(texts: Sequence[str], warm_texts: int | None = None, batch_size: int = 1000, store_docs: int = 200_000,
            stores: Sequence[str] = ("local", "redis", "bloom")) -> dict[str, Any]:
    """Everything above; the first ``warm_texts`` texts (default: a third) only warm the caches."""
    n_warm = len(texts) // 3 if warm_texts is None else warm_texts
    if not 0 <= n_warm < len(texts):
        raise ValueError(f"warm_texts must leave texts to time ({n_warm} of {len(texts)})")
    warm, timed = texts[:n_warm], texts[n_warm:]
    with one_core() as core:
        report = {"core": core, "clock": "cpu", "warm_texts": n_warm,
                  "signatures": measure_signatures(warm, timed, batch_size),
                  "stage": measure_stage(warm, timed, batch_size)}
    report["stores"] = measure_stores(store_docs, batch_size, stores)
    return report


def format_report(report: dict[str, Any]) -> str:
    sig, stage, stores = report["signatures"], report["stage"], report["stores"]
    lines = [f"signatures: {sig['texts']} texts ({sig['megabytes']:.1f} MB) after {report['warm_texts']} warm-up, "
             f"one core, CPU time: datatrove MinhashDedupSignature {sig['datatrove']['docs_per_s']:.0f} docs/s"]
    for implementation in ("compiled", "python"):
        if implementation in sig:
            r = sig[implementation]
            lines.append(f"  ours ({implementation}) {r['docs_per_s']:.0f} docs/s = {r['ratio']:.1f}x datatrove, "
                         f"{r['equal_signatures']}/{sig['texts']} signatures equal")
    lines.append(f"stage minhash_dedup + embedded store: {stage['cpu_us_per_doc']:.0f} us CPU / doc, "
                 f"{stage['wall_us_per_doc']:.0f} us wall / doc, {stage['round_trips_per_batch']:.0f} store round trip per batch")
    lines.append(f"stores: {stores['documents']} documents x {stores['keys_per_document']} keys (all new), "
                 f"batches of {stores['batch_size']}; MB per million documents")
    for kind in ("local", "redis", "bloom"):
        if kind not in stores:
            continue
        r = stores[kind]
        if kind == "bloom":
            size = (f"filter {r['filter_mb_per_million_docs']:.0f} (memory and disk) + journal window "
                    f"{r['window_memory_mb']:.0f} MB memory, {r['journal_disk_mb']:.0f} MB disk (fixed)")
        else:
            size = f"memory {r['memory_mb_per_million_docs']:.0f}"
        if kind == "local":
            size += f", disk {r['disk_mb_per_million_docs']:.0f}"
        if kind != "redis":
            size += f", written {r['written_bytes_per_doc']:.0f} B/doc"
        extra = {"local": lambda: f"; reopen {r['reopen_s']:.2f} s",
                 "redis": lambda: f"; bucket_bits {r['bucket_bits']}, {r['server_calls_per_batch']:.0f} server call / batch",
                 "bloom": lambda: (f"; false duplicates per document asked {r['document_rate_asked']:g}, measured "
                                   f"{r['document_rate_measured']:g} (per key {r['key_rate_asked']:.2g} / "
                                   f"{r['key_rate_measured']:.2g})")}[kind]()
        lines.append(f"  {kind:6s} {size}; batch {r['batch_ms_median']:.1f} ms median, {r['batch_ms_p99']:.1f} ms p99, "
                     f"{r['docs_per_s']:.0f} docs/s, {r['round_trips_per_batch']:.0f} round trip / batch{extra}")
    return "\n".join(lines)


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--texts", type=Path, help="JSONL file with a 'text' field per line (default: the "
                        "near-duplicate corpus of selectd.tools.dedup_corpus, built from this machine's files)")
    parser.add_argument("--docs", type=int, default=2500, help="texts to use (the corpus size, or the first N of --texts)")
    parser.add_argument("--warm-texts", type=int, default=None,
                        help="texts that only warm the word cache (default: the first third)")
    parser.add_argument("--store-docs", type=int, default=200_000, help="synthetic documents per store")
    parser.add_argument("--stores", nargs="*", default=["local", "redis", "bloom"], choices=["local", "redis", "bloom"])
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def bench(args: argparse.Namespace) -> int:
    try:
        texts = (read_texts(args.texts, args.docs) if args.texts
                 else [doc["text"] for doc in build_corpus(max_docs=args.docs)])
        report = measure(texts, args.warm_texts, args.batch_size, args.store_docs, args.stores)
    except (ValueError, OSError) as exc:
        print(f"selectd bench dedup: {exc}")
        return 2
    emit(report, args.json, format_report(report).splitlines())
    return 0
