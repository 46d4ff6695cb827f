"""Dedup stages in the daemon on the test broker: kill -9 mid-stream with the embedded store, two
replicas sharing a Redis store, and Redis stopped mid-stream."""
from __future__ import annotations

import random
import time

import orjson
import pytest

from conftest import Topics, collect, create_topics, produce, write_config
from loadtest import faults
from loadtest.harness import metric
from selectd.kafka.sink import murmur2
from selectd.tools.redis_server import RedisServer

pytestmark = pytest.mark.kafka

DEDUP_STAGES = """
[[stages]]
name = "exact"
type = "exact_dedup"

[[stages]]
name = "near"
type = "minhash_dedup"
"""

WORDS = ("river town market bridge stone salt wool timber boat harbour mill grain barley orchard lantern chapel "
         "ledger archive letter railway canal lock towpath warehouse workshop kiln forge quarry meadow hedge "
         "shepherd ferry tide marsh reed heron willow alder beacon signal lamp winter harvest fair guild").split()


def stream_with_duplicates(n_unique: int, duplicate_share: float, prefix: str, seed: int = 0) -> tuple[
        list[tuple[bytes, bytes]], dict[str, str]]:
    """``(messages, original_of)``: unique texts of ~120 words, and later in the stream, under new
    ids, copies of some of them (exact, case and punctuation changed, or one word changed), making
    ``duplicate_share`` of the messages; ``original_of`` maps each copy's id to its original's."""
    rng = random.Random(seed)
    texts = {f"{prefix}-u{i}": " ".join(rng.choice(WORDS) for _ in range(120)) for i in range(n_unique)}
    order = list(texts)
    original_of: dict[str, str] = {}
    n_copies = round(n_unique * duplicate_share / (1 - duplicate_share))
    for c in range(n_copies):
        original = f"{prefix}-u{rng.randrange(n_unique)}"
        text = texts[original]
        kind = c % 3
        if kind == 1:
            text = text.upper().replace(" ", ", ", 5) + "."
        elif kind == 2:
            words = text.split()
            words[len(words) // 2] = "changed"
            text = " ".join(words)
        copy = f"{prefix}-c{c}"
        texts[copy] = text
        original_of[copy] = original
        # somewhere after its original
        order.insert(rng.randrange(order.index(original) + 1, len(order) + 1), copy)
    messages = [(doc_id.encode(), orjson.dumps({"id": doc_id, "text": texts[doc_id]})) for doc_id in order]
    return messages, original_of


def test_kill_9_mid_stream_loses_no_unique_document_and_still_removes_duplicates_across_restarts(broker, tmp_path):
    messages, original_of = stream_with_duplicates(800, 0.2, "k9")
    # one partition: every copy is read after its original, whichever run of the daemon reads it
    report = faults.kill_cycles(broker.bootstrap, tmp_path, docs=len(messages), kills=3, rate=35, partitions=1,
                                messages=messages, stages=DEDUP_STAGES,
                                extra=f'[dedup]\npath = "{tmp_path / "store"}"\n')
    assert report.kills == 3 and report.missing == 0, report.lines()
    topics: dict[str, set[str]] = {}
    first_produced: dict[str, float] = {}
    for produced, topic, key, _ in report.received:
        doc_id = key.decode()
        topics.setdefault(doc_id, set()).add(topic.rsplit("-", 1)[1])
        first_produced.setdefault(doc_id, produced)
    originals = [doc_id for doc_id in topics if doc_id not in original_of]
    wrong_originals = [doc_id for doc_id in originals if topics[doc_id] != {"accepted"}]
    assert wrong_originals == [], "a unique document was rejected (as a duplicate of itself, after a replay?)"
    kept_copies = [doc_id for doc_id in original_of if topics[doc_id] != {"rejected"}]
    assert kept_copies == [], "a duplicate was passed (or also passed after a replay)"
    # duplicates whose original was routed by an earlier run of the daemon, before a kill -9
    across = [copy for copy, original in original_of.items()
              if any(first_produced[original] < kill < first_produced[copy] for kill in report.kill_times)]
    print(f"\n{len(messages)} documents, {len(original_of)} duplicates, {report.kills} kills; "
          f"{len(across)} duplicates removed by a later run than their original's; {report.duplicates} outputs repeated "
          f"after crashes, all with the first decision")
    assert len(across) >= 50


def _on_partition(prefix: str, partition: int, n: int, partitions: int = 2) -> list[str]:
    """``n`` ids that the producer's default partitioner puts on ``partition`` (keys are ids)."""
    ids, i = [], 0
    while len(ids) < n:
        candidate = f"{prefix}-{i}"
        if (murmur2(candidate.encode()) & 0x7FFFFFFF) % partitions == partition:
            ids.append(candidate)
        i += 1
    return ids


def _message(doc_id: str, text: str) -> tuple[bytes, bytes]:
    return doc_id.encode(), orjson.dumps({"id": doc_id, "text": text})


def _decisions(messages) -> dict[str, list[dict]]:
    """Per id, the ``selectd`` objects of its outputs (more than one after a re-read batch)."""
    out: dict[str, list[dict]] = {}
    for message in messages:
        value = orjson.loads(message.value)
        out.setdefault(value["id"], []).append(value["selectd"])
    return out


def _wait(condition, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_two_replicas_sharing_redis_remove_duplicates_placed_on_the_other_partition_once(
        broker, tmp_path, daemons, redis_server):
    topics = Topics(partitions=2)
    create_topics(broker, topics)
    config = write_config(tmp_path / "c.toml", broker, topics, stages=DEDUP_STAGES,
                          extra=f'[dedup]\nstore = "redis"\nurl = "{redis_server.url}"\nprefix = "{topics.tag}:"\n')
    replicas = [daemons(config, tmp_path / f"replica{r}.log") for r in range(2)]
    urls = [replica.metrics_url() for replica in replicas]
    _wait(lambda: [metric(url, "selectd_assigned_partitions") for url in urls] == [1, 1], 60, "a partition each")
    rng = random.Random(1)
    n = 120
    texts = [" ".join(rng.choice(WORDS) for _ in range(100)) for _ in range(n)]
    firsts, seconds = _on_partition("p0", 0, n), _on_partition("p1", 1, n)
    # pair i: a text on partition 0 and its copy on partition 1 (exact for even i, one word changed for odd)
    copies = [text if i % 2 == 0 else text.replace(text.split()[50], "changed", 1) for i, text in enumerate(texts)]
    produce(broker, topics.input, [m for i in range(n) for m in (_message(firsts[i], texts[i]),
                                                                _message(seconds[i], copies[i]))])
    decisions = _decisions(collect(broker, [topics.accepted, topics.rejected], 2 * n))
    assert len(decisions) == 2 * n
    removed_once = 0
    for i in range(n):
        pair = [decisions[firsts[i]], decisions[seconds[i]]]
        assert all(len({d["decision"] for d in outputs}) == 1 for outputs in pair), "one decision per document"
        kept = [outputs[0] for outputs in pair if outputs[0]["decision"] == "accepted"]
        removed = [(doc_id, outputs[0]) for doc_id, outputs in zip((firsts[i], seconds[i]), pair)
                   if outputs[0]["decision"] == "rejected"]
        assert len(kept) == 1 and len(removed) == 1, (i, pair)
        doc_id, selectd = removed[0]
        other = seconds[i] if doc_id == firsts[i] else firsts[i]
        assert selectd["scores"][selectd["stage"]]["duplicate_of"] == other
        assert selectd["reason"] == ("duplicate_text" if i % 2 == 0 else "near_duplicate")
        removed_once += 1
    by_replica = [metric(url, "selectd_duplicates_total") for url in urls]
    print(f"\n{n} pairs split over two replicas: each removed once; duplicates found by replica {by_replica}")
    assert removed_once == n and sum(by_replica) == n
    assert all(metric(url, "selectd_documents_in_total") > 0 for url in urls), "both replicas took part"


def test_redis_stopped_mid_stream_nothing_committed_not_ready_then_recovers_without_a_guess(broker, tmp_path, daemons,
                                                                                           kafka_client):
    # with each Kafka client: the batch the store failed is sought back and read again (librdkafka drops
    # what it had prefetched for a partition it seeks, and the source what it held of it)
    topics = Topics(partitions=1)
    create_topics(broker, topics)
    with RedisServer(tmp_path / "redis", extra_args=["--appendonly", "yes", "--appendfsync", "always"]) as redis:
        config = write_config(tmp_path / "c.toml", broker, topics, stages=DEDUP_STAGES, client=kafka_client, extra=(
            f'[dedup]\nstore = "redis"\nurl = "{redis.url}"\ntimeout_s = 1.0\n'
            '[delivery]\nbroker_backoff_max_s = 1.0\n'))
        daemon = daemons(config, tmp_path / "daemon.log")
        url = daemon.metrics_url()
        rng = random.Random(2)
        texts = [" ".join(rng.choice(WORDS) for _ in range(100)) for _ in range(40)]
        produce(broker, topics.input, [_message(f"first-{i}", text) for i, text in enumerate(texts)])
        assert len(_decisions(collect(broker, [topics.accepted], 40))) == 40
        _wait(lambda: faults._readyz(url) == 200, 30, "ready")

        redis.stop()
        commits = metric(url, "selectd_commits_total")
        # copies of the first documents and new ones, while the store is unreachable
        produce(broker, topics.input, [_message(f"copy-{i}", text) for i, text in enumerate(texts)]
                + [_message(f"new-{i}", " ".join(rng.choice(WORDS) for _ in range(100))) for i in range(20)])
        _wait(lambda: faults._readyz(url) == 503, 30, "/readyz 503 while the store is down")
        _wait(lambda: metric(url, "selectd_dedup_store_errors_total") >= 2, 30, "store errors counted (retries)")
        assert metric(url, "selectd_ready") == 0 and metric(url, "selectd_broker_up") == 1
        assert metric(url, "selectd_commits_total") == commits, "nothing committed while the store is down"
        assert len(collect(broker, [topics.accepted, topics.rejected], 41, timeout_s=3)) == 40, \
            "no document passed or dropped on a guess"
        assert daemon.alive()

        redis.start()  # same port and data
        decisions = _decisions(collect(broker, [topics.accepted, topics.rejected], 100, timeout_s=60))
        _wait(lambda: faults._readyz(url) == 200, 30, "ready again")
    assert len(decisions) == 100, "nothing lost"
    for i in range(40):
        assert {d["decision"] for d in decisions[f"copy-{i}"]} == {"rejected"}
        assert all(d["scores"]["exact"]["duplicate_of"] == f"first-{i}" for d in decisions[f"copy-{i}"])
    assert all({d["decision"] for d in decisions[f"new-{i}"]} == {"accepted"} for i in range(20))
