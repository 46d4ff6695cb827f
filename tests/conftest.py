"""Shared fixtures: one Tansu broker per test session, daemon configs, produce/collect helpers."""
from __future__ import annotations

import itertools
import time
import typing
import uuid
from pathlib import Path

import orjson
import pytest

from loadtest import harness
from loadtest.harness import DaemonProcess, TopicNames
from selectd.config import KafkaClient
from selectd.demo.broker import TansuBroker
from selectd.kafka import admin
from selectd.records import Document, Record

# the dedup tests' session fixtures: the near-duplicate corpus, datatrove's MinHash pipeline run on it, a redis-server
from dedup_reference import datatrove_minhash, dedup_corpus, redis_server  # noqa: F401

REPO = Path(__file__).resolve().parent.parent
_names = itertools.count()
#: the Kafka clients the daemon runs on ([kafka] client)
KAFKA_CLIENTS = typing.get_args(KafkaClient)


@pytest.fixture(scope="session")
def broker(tmp_path_factory):
    with TansuBroker(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log") as running:
        yield running


@pytest.fixture(params=KAFKA_CLIENTS)
def kafka_client(request) -> str:
    """Each Kafka client in turn: a test taking this fixture runs once per client."""
    return request.param


@pytest.fixture(scope="session")
def sample_corpus(tmp_path_factory) -> Path:
    from selectd.demo.corpus import build_corpus

    path = tmp_path_factory.mktemp("corpus") / "sample.jsonl"
    build_corpus(path, n_docs=3000, seed=0)
    return path


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory, sample_corpus) -> Path:
    """The example config's model directories under one root (``models/lid176``, ``models/quality_fasttext``),
    built as the demo builds them; the quality model with 100k buckets instead of 2M, to stay small."""
    from selectd.tools.fasttext import demo_models as builders

    root = tmp_path_factory.mktemp("demo-models")
    builders.build_lid(root / "models" / "lid176")
    builders.build(root / "models" / "quality_fasttext", corpus=sample_corpus, bucket=100_000)
    return root


class Topics(TopicNames):
    """The load-test harness's topic names, unique per test, two input partitions by default."""

    def __init__(self, partitions: int = 2):
        super().__init__(partitions, tag=f"t{next(_names)}-{uuid.uuid4().hex[:6]}")


def write_config(path: Path, broker: TansuBroker, topics: Topics, stages: str = "", extra: str = "",
                 top: str = "", client: str = "kafka-python") -> Path:
    """The harness's daemon config with no stages unless given and [delivery] left to the test:
    ``top``: top-level keys (before any table); ``extra``: more tables; ``stages``: [[stages]] entries;
    ``client``: the Kafka client."""
    return harness.write_config(path, broker.bootstrap, topics, extra=extra, stages=stages, top=top, delivery="",
                                client=client)


def create_topics(broker: TansuBroker, topics: Topics) -> None:
    topics.create(broker.bootstrap)


def produce(broker: TansuBroker, topic: str, messages: list[tuple[bytes, bytes | None]]) -> None:
    admin.produce(broker.bootstrap, topic, messages)


def collect(broker: TansuBroker, topics: list[str], expected: int, timeout_s: float = 60) -> list:
    """Read every message of ``topics`` until ``expected`` arrived or the timeout passed."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(*topics, bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None)
    out = []
    deadline = time.monotonic() + timeout_s
    while len(out) < expected and time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=500).values():
            out.extend(messages)
    # A short extra read catches duplicates that arrive right after the expected count.
    for messages in consumer.poll(timeout_ms=1000).values():
        out.extend(messages)
    consumer.close()
    return out


GOOD_TEXT = (
    "The river that runs through the old town was once the main road for trade. Merchants brought salt, "
    "wool and timber down from the hills, and the market square grew up around the stone bridge where "
    "the boats were unloaded.\n\nToday the warehouses have become homes and small workshops. Visitors "
    "walk along the towpath in the summer, and a local society keeps records of the families who "
    "worked on the water for generations. Their archive holds letters, ledgers and photographs that "
    "show how the town changed when the railway arrived and the river trade slowly declined.\n\n"
    "Volunteers have restored two of the original barges, and with the help of a small grant they now "
    "offer short trips to schools, explaining how locks work and why the canal was built in the first place."
)


def documents(n: int, prefix: str = "doc", text: str | None = None) -> list[tuple[bytes, bytes]]:
    base = text or GOOD_TEXT
    return [(f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "text": base, "n": i, "meta": {"src": "test"}}))
            for i in range(n)]


def as_documents(objects: list[dict]) -> list[Document]:
    """Documents as parsing makes them of JSON objects with an "id" and a "text", for cascades run
    without records."""
    return [Document(Record("texts", 0, i, None, orjson.dumps(obj)), obj["id"], obj["text"], obj)
            for i, obj in enumerate(objects)]


def text_documents(texts: list[str]) -> list[Document]:
    """Documents of bare texts, with ids "0", "1", ..."""
    return as_documents([{"id": str(i), "text": text} for i, text in enumerate(texts)])


def assert_kinds_declared(scorer, signals: dict) -> None:
    """The scorer declares a kind for every signal it emitted: a category exactly for string values."""
    from selectd.signal_kinds import SignalKind

    kinds = scorer.signal_kinds()
    assert set(signals) <= set(kinds), f"undeclared signals: {set(signals) - set(kinds)}"
    for name, values in signals.items():
        assert (kinds[name] is SignalKind.CATEGORY) == (values.dtype == object), name


@pytest.fixture
def daemons():
    """Start ``selectd run`` child processes; every one still running at the end is killed."""
    started: list[DaemonProcess] = []

    def start(config: Path, log_path: Path, *overrides: str) -> DaemonProcess:
        daemon = DaemonProcess(config, log_path, *overrides)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.close()
