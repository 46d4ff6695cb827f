"""Dedup stores: claim semantics, replay safety, durability after kill -9, one round trip per
batch, errors, replicas sharing Redis, and the Bloom store's measured false-positive rate."""
from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from selectd.dedup.bloom import BloomStore, key_rate_for_documents
from selectd.dedup.keys import KeyBatch, MinhashKeys
from selectd.dedup.minhash import MinhashOptions
from selectd.tools.redis_server import RedisServer, free_port
from selectd.dedup.redis_store import RedisStore
from selectd.dedup.stage import StoreConfig, open_store
from selectd.dedup.local import LocalStore
from selectd.dedup.store import Match, StoreError, StoreOpenError

REPO = Path(__file__).resolve().parent.parent


def batch(*docs: list[int]) -> KeyBatch:
    keys = [key for doc in docs for key in doc]
    offsets = np.cumsum([0] + [len(doc) for doc in docs])
    return KeyBatch(np.asarray(keys, dtype=np.uint64), offsets.astype(np.int64),
                    np.zeros(len(keys), dtype=np.uint8), ("k",))


@pytest.fixture(params=["local", "redis", "bloom"])
def open_test_store(request, tmp_path, redis_server):
    """A function (re)opening one fresh store of each kind at the same place."""
    prefix = f"t{free_port()}:"  # a fresh key space per test on the shared server
    opened = []

    def open_():
        if request.param == "local":
            store = LocalStore(tmp_path / "local")
        elif request.param == "redis":
            store = RedisStore(redis_server.url, prefix=prefix, bucket_bits=8)
        else:
            store = BloomStore(tmp_path / "bloom", capacity=100_000, false_positive_rate=1e-6)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


def test_claim_semantics(open_test_store):
    store = open_test_store()
    # doc b shares key 2 with a (earlier in the batch); c repeats its own key; d is new
    assert store.claim(batch([1, 2], [3, 2], [4, 4], [5]), ["a", "b", "c", "d"]) == [
        None, Match(1, "a"), None, None]
    # chain: e shares only b's new key 3, b itself being a duplicate; f matches d on its 2nd key
    # and a on its 3rd: the first matching key is reported; g's keys are all new
    assert store.claim(batch([3, 9], [10, 5, 1], [11]), ["e", "f", "g"]) == [
        Match(0, "b"), Match(1, "d"), None]
    # a document without keys is never a duplicate; large keys use all 64 bits
    assert store.claim(batch([], [2**64 - 1], [2**64 - 1]), ["h", "i", "j"]) == [None, None, Match(0, "i")]
    stats = store.stats()
    assert (stats.documents, stats.keys) == (8, 9) and stats.memory_bytes > 0


def test_replay_is_recognised_as_itself_after_a_restart(open_test_store):
    store = open_test_store()
    first = batch([1, 2], [2, 3], [4])
    assert store.claim(first, ["a", "b", "c"]) == [None, Match(0, "a"), None]
    second = batch([4, 5], [6], [6, 7])
    assert store.claim(second, ["d", "e", "f"]) == [Match(0, "c"), None, Match(0, "e")]
    store.close()
    store = open_test_store()  # the daemon restarts and re-reads the uncommitted batches
    assert store.claim(first, ["a", "b", "c"]) == [None, Match(0, "a"), None]
    assert store.claim(second, ["d", "e", "f"]) == [Match(0, "c"), None, Match(0, "e")]
    # the same content under another id is a duplicate
    assert store.claim(batch([1], [7]), ["x", "y"]) == [Match(0, "a"), Match(0, "f")]


def test_one_round_trip_per_batch(open_test_store, redis_server):
    store = open_test_store()
    keys = MinhashKeys(MinhashOptions())
    texts = [f"document {'x' * (i % 13)} {'y' * (i // 13)} says something about things and more words here"
             for i in range(300)]
    calls_before = redis_server.command_calls("evalsha")
    for start in range(0, 300, 100):
        store.claim(keys.derive(texts[start:start + 100]), [str(i) for i in range(start, start + 100)])
    assert store.round_trips == 3
    if isinstance(store, RedisStore):  # counted by the server: one script call per batch
        assert redis_server.command_calls("evalsha") - calls_before == 3


CHILD = """
import sys, time
import numpy as np
sys.path.insert(0, {tests!r})
from test_dedup_store import batch
from selectd.dedup.stage import StoreConfig, open_store
store = open_store(StoreConfig.model_validate_json({config!r}))
store.claim(batch(*[[k] for k in range({n})]), [str(k) for k in range({n})])
print("claimed", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("kind", ["local", "bloom"])
def test_keys_survive_kill_9_once_claim_returned(tmp_path, kind):
    """A daemon killed right after a batch's claim returned (the point where it commits the
    offsets) still knows the batch's keys when it starts again (the Bloom store's filter was saved
    empty, before the batch: the journal restores its keys)."""
    config = StoreConfig(store=kind, path=tmp_path / "store", capacity=10_000)
    child = subprocess.Popen([sys.executable, "-c", CHILD.format(tests=str(REPO / "tests"), config=config.model_dump_json(),
                                                                 n=500)],
                             stdout=subprocess.PIPE, cwd=REPO)
    assert child.stdout.readline() == b"claimed\n"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    with open_store(config) as store:
        matches = store.claim(batch(*[[k] for k in range(500)]), [f"other-{k}" for k in range(500)])
    assert matches == [Match(0, str(k)) for k in range(500)]


@pytest.mark.parametrize("kind", ["local", "bloom"])
def test_disk_full_raises_and_keeps_nothing_of_the_batch(tmp_path, kind):
    """A write refused by the file system (here: the file-size limit, EFBIG, as ENOSPC on a full
    disk) raises StoreError; the log is left as it was, so the retried batch, and a restart,
    decide as if the failed attempt never happened."""
    config = StoreConfig(store=kind, path=tmp_path / "store", capacity=100_000)
    big = batch(*[[k] for k in range(2, 5_000)])
    with open_store(config) as store:
        store.claim(batch([1]), ["a"])
        log = next((tmp_path / "store").glob("*.log"))
        limit = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (log.stat().st_size + 1000, limit[1]))
        try:
            with pytest.raises(StoreError, match="cannot write"):
                store.claim(big, [f"first-{k}" for k in range(2, 5_000)])
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
            signal.signal(signal.SIGXFSZ, previous)
        assert store.claim(big, [str(k) for k in range(2, 5_000)]) == [None] * 4_998
    with open_store(config) as store:
        assert store.claim(batch([1], [4_000]), ["a", "x"]) == [None, Match(0, "4000")]
        assert store.stats().documents == 4_999


def test_store_open_errors(tmp_path, redis_server):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreOpenError, match="cannot open the dedup store"):
        LocalStore(tmp_path / "file" / "local")
    with LocalStore(tmp_path / "held"):
        with pytest.raises(StoreOpenError, match="another process holds it"):
            LocalStore(tmp_path / "held")
    port = free_port()
    with pytest.raises(StoreOpenError, match=f"cannot open the dedup store: redis \\('127.0.0.1', {port}\\)"):
        RedisStore(f"redis://127.0.0.1:{port}/0", timeout_s=1)
    with pytest.raises(StoreOpenError, match="scheme"):
        RedisStore("http://localhost/")
    RedisStore(redis_server.url, prefix="bits:", bucket_bits=10).close()
    with pytest.raises(StoreOpenError, match="bucket_bits = 10"):
        RedisStore(redis_server.url, prefix="bits:", bucket_bits=12)
    BloomStore(tmp_path / "bloom", capacity=1000, false_positive_rate=0.01).close()
    with pytest.raises(StoreOpenError, match="sized for other"):
        BloomStore(tmp_path / "bloom", capacity=2000, false_positive_rate=0.01)
    with pytest.raises(ValueError, match="needs url"):
        StoreConfig(store="redis")
    with pytest.raises(ValueError, match="needs capacity"):
        StoreConfig(store="bloom")


def test_redis_down_raises_store_error_then_recovers(tmp_path):
    with RedisServer(tmp_path / "redis", extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as server:
        store = RedisStore(server.url, timeout_s=2)
        assert store.claim(batch([1], [2]), ["a", "b"]) == [None, None]
        server.stop()
        with pytest.raises(StoreError):
            store.claim(batch([1], [3]), ["c", "d"])
        server.start()  # same port and data directory: the append-only file brings the keys back
        # after a server restart the script cache is empty: the store reloads the script itself
        assert store.claim(batch([1], [3]), ["c", "d"]) == [Match(0, "a"), None]
        store.close()


def test_redis_replicas_remove_cross_partition_duplicates_once(redis_server):
    """Two replicas claim concurrently through one server, each its own partition of a stream in
    which every text has an exact copy on the other partition and a one-word edit: no two kept
    documents share a band, every duplicate shares one with the document it names, and of each
    text and its exact copy at most one is kept."""
    keys = MinhashKeys(MinhashOptions())
    rng = np.random.default_rng(1)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    base = [" ".join("".join(rng.choice(letters, size=6)) for _ in range(60)) for _ in range(200)]
    edited = [text.replace(text.split()[30], "changed") for text in base]
    texts = [t for triple in zip(base, base, edited) for t in triple]  # copy k at index 3i + k
    partitions = [list(range(p, len(texts), 2)) for p in range(2)]   # a text and its copy: different replicas
    verdicts: dict[int, Match | None] = {}

    def replica(chunks: list[tuple[list[int], KeyBatch]]) -> None:
        store = RedisStore(redis_server.url, prefix="replicas:", bucket_bits=8)
        for chunk, chunk_keys in chunks:
            verdicts.update(zip(chunk, store.claim(chunk_keys, [str(d) for d in chunk])))
        store.close()

    # keys derived up front: the word split's cache is per process, not shared between threads
    work = [[(docs[i:i + 25], keys.derive([texts[d] for d in docs[i:i + 25]])) for i in range(0, len(docs), 25)]
            for docs in partitions]
    threads = [threading.Thread(target=replica, args=(chunks,)) for chunks in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bands = {d: set(keys.derive([texts[d]]).keys.tolist()) for d in range(len(texts))}
    kept = [d for d in range(len(texts)) if verdicts[d] is None]
    seen: set[int] = set()
    for d in kept:
        assert not bands[d] & seen, d
        seen |= bands[d]
    for d, match in verdicts.items():
        if match is not None:
            assert bands[d] & bands[int(match.owner)], d
    assert all(verdicts[3 * i] is not None or verdicts[3 * i + 1] is not None for i in range(200))
    assert 200 <= len(kept) < 220  # an edit can miss every band, rarely


def test_bloom_false_positive_rate_is_what_was_asked(tmp_path):
    rate = 1e-3
    store = BloomStore(tmp_path / "bloom", capacity=50_000, false_positive_rate=rate)
    rng = np.random.default_rng(0)
    inserted = rng.integers(0, 2**63, size=50_000, dtype=np.uint64)
    store.claim(KeyBatch(inserted, np.arange(50_001, dtype=np.int64), np.zeros(50_000, np.uint8), ("k",)),
                [str(i) for i in range(50_000)])
    probes = rng.integers(0, 2**63, size=400_000, dtype=np.uint64)
    measured = store.filter.contains(probes).mean()
    print(f"\nBloom filter at capacity: asked {rate:g}, measured {measured:g} per key")
    assert rate / 2 < measured < rate * 2
    # the per-document rate for 14 MinHash bands
    assert key_rate_for_documents(0.014, 14) == pytest.approx(0.001, rel=0.01)
    store.close()


def test_bloom_replay_outside_the_journal_is_a_duplicate_of_unknown(tmp_path):
    """The documented limit: the journal keeps owners of the last ``journal_docs`` documents (and
    of all documents since the last checkpoint of the bits: here one per batch)."""
    with BloomStore(tmp_path / "bloom", capacity=1000, false_positive_rate=1e-6, journal_docs=2,
                    checkpoint_keys=1) as store:
        store.claim(batch([1], [2], [3]), ["a", "b", "c"])
        store.claim(batch([4]), ["d"])
        assert store.claim(batch([3], [4]), ["c", "d"]) == [None, None]  # within the journal: itself
        assert store.claim(batch([1]), ["a"]) == [Match(0, None)]        # beyond it: seen, owner unknown


def test_open_store_builds_each_kind(tmp_path, redis_server):
    stores = [open_store(StoreConfig(path=tmp_path / "local")),
              open_store(StoreConfig(store="redis", url=redis_server.url, prefix="kinds:")),
              open_store(StoreConfig(store="bloom", path=tmp_path / "bloom", capacity=1000))]
    assert [type(s) for s in stores] == [LocalStore, RedisStore, BloomStore]
    for store in stores:
        assert store.claim(batch([1], [1]), ["a", "b"]) == [None, Match(0, "a")]
        store.close()


def test_bloom_snapshots_bound_the_journal_and_survive_a_restart(tmp_path):
    directory = tmp_path / "bloom"
    options = dict(capacity=20_000, false_positive_rate=1e-6, journal_docs=300, checkpoint_keys=1_000)
    with BloomStore(directory, **options) as store:
        for start in range(0, 6_000, 200):
            assert store.claim(batch(*[[k] for k in range(start, start + 200)]),
                               [str(k) for k in range(start, start + 200)]) == [None] * 200
        assert len(list(directory.glob("journal-*.log"))) <= 3  # older segments deleted after snapshots
        assert store.stats().keys == 6_000
        memory = store.stats().memory_bytes
    assert memory < store.filter.words.nbytes + 12 * 2 * 300 + 1000  # filter + the window's keys
    with BloomStore(directory, **options) as store:
        assert store.stats().keys == 6_000
        # the last batch replayed: recognised as itself; old documents' keys: seen, owner unknown;
        # recent ones: their owner
        assert store.claim(batch(*[[k] for k in range(5_800, 6_000)]),
                           [str(k) for k in range(5_800, 6_000)]) == [None] * 200
        assert store.claim(batch([5], [5_900], [6_001]), ["x", "y", "z"]) == [Match(0, None), Match(0, "5900"), None]


def test_local_log_cut_at_a_torn_record(tmp_path):
    with LocalStore(tmp_path) as store:
        store.claim(batch([1], [2]), ["a", "b"])
        store.claim(batch([3]), ["c"])
    log = next(tmp_path.glob("dedup-*.log"))
    whole = log.read_bytes()
    log.write_bytes(whole[:-3])  # the last record torn, as by a power cut during its write
    with LocalStore(tmp_path) as store:
        assert log.stat().st_size < len(whole) - 3  # cut back to the last whole record
        assert store.claim(batch([1], [3], [2]), ["x", "c", "y"]) == [Match(0, "a"), None, Match(0, "b")]
    with LocalStore(tmp_path) as store:
        assert store.claim(batch([3]), ["z"]) == [Match(0, "c")]


def test_sorted_keys_equal_a_dictionary():
    from selectd.dedup.keylog import SortedKeys

    rng = np.random.default_rng(3)
    index, reference = SortedKeys(), {}
    for step in range(60):
        keys = np.unique(rng.integers(0, 2**64, size=int(rng.integers(1, 400)), dtype=np.uint64))
        keys = keys[[int(k) not in reference for k in keys]]
        docs = np.full(len(keys), step, dtype=np.uint32)
        index.add(keys, docs)
        reference.update((int(k), step) for k in keys)
    assert len(index.runs) <= 12 and len(index) == len(reference)
    probe = np.concatenate([np.fromiter(reference, dtype=np.uint64)[::7], rng.integers(0, 2**64, 500, dtype=np.uint64)])
    assert index.lookup(probe).tolist() == [reference.get(int(k), -1) for k in probe]
    index.drop_before(30)
    assert index.lookup(probe).tolist() == [d if (d := reference.get(int(k), -1)) >= 30 else -1 for k in probe]
