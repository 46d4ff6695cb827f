"""confluent-kafka (librdkafka) source: a consumer in a group, batches bounded by count, bytes and
linger time, and the assignment, commits and lag of this member (:class:`selectd.kafka.base.Source`).

How librdkafka differs from kafka-python, and what follows from it here:

* Rebalance callbacks (``on_assign`` / ``on_revoke`` / ``on_lost``) run inside ``consume()`` on the
  calling thread, the commit loop's, never on a thread of their own: the assignment they keep needs
  no lock. They only track ownership, as kafka-python's listener does: revoked partitions are never
  committed, the new owner reads them again.
* ``max.poll.interval.ms`` counts the time between the application's ``consume()`` calls (and must
  be >= ``session.timeout.ms``, a config check). :meth:`keep_alive` consumes into ``_held`` until it
  holds a batch, and only then pauses every assigned partition (partitions assigned meanwhile are
  paused in the callback, before anything is fetched). Pausing is what costs: librdkafka drops the
  messages it prefetched for a paused partition and fetches them again after :meth:`resume`. A batch
  a little slower than the keep-alive interval therefore pauses nothing, and what a pause can drop
  is bounded by ``queued.max.messages.kbytes`` (two batches' bytes, :func:`librdkafka_consumer`);
  with librdkafka's default of 64 MB every slow batch re-fetched most of a backlog (measured: the
  cascade's broker CPU doubled, the daemon 45 % slower).
* ``seek()`` drops a partition's prefetched messages: messages past a batch's byte cap are held here
  (``_held``) and start the next batch instead of being sought back.
* Lag: librdkafka keeps the high watermark of every fetch response (``get_watermark_offsets(cached=True)``,
  free); the broker's ListOffsets answer is asked too, as a probe that the broker answers, and the
  larger of the two counts (the test broker, Tansu, answers ListOffsets(latest) with the last batch's
  base offset + 1, short of the end).
* Client-wide errors (all brokers down, TLS or authentication failing) never raise: librdkafka
  retries by itself and reports them to ``error_cb`` (logged, throttled). Opening the source asks a
  broker for metadata, so brokers that do not answer at start are a :class:`BrokerError` there (the
  daemon retries, :func:`selectd.app.connect`), as with kafka-python; later the lag probe, the
  commit and the delivery of a batch fail, which is what the commit loop reports as not-ready.
"""
from __future__ import annotations

import functools
import logging
import threading
import time

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from selectd.config import Config
from selectd.kafka.base import BrokerError, CommitFailed, LagGauges, Partition
from selectd.kafka.settings import librdkafka_consumer
from selectd.metrics import Metrics
from selectd.records import Record

log = logging.getLogger("selectd.source")

#: how long a broker query of the lag refresh may take (as kafka-python's end_offsets timeout)
QUERY_TIMEOUT_S = 5.0


def _broker_errors(method):
    """confluent-kafka's errors out of ``method`` as :class:`BrokerError`."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except KafkaException as exc:
            raise BrokerError(exc.args[0].str() if exc.args else repr(exc)) from exc
    return wrapper


class Assignment:
    """The partitions this member owns, kept by the rebalance callbacks (inside ``consume()``, on the
    loop's thread)."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self.partitions: set[Partition] = set()
        self.joined = False  # an assignment (possibly empty) arrived: this member is in the group

    def add(self, partitions: list[TopicPartition]) -> None:
        self.partitions |= {(tp.topic, tp.partition) for tp in partitions}
        self.joined = True
        self._changed("assigned", partitions)

    def remove(self, partitions: list[TopicPartition], event: str) -> None:
        self.partitions -= {(tp.topic, tp.partition) for tp in partitions}
        self._changed(event, partitions)

    def _changed(self, event: str, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels("assigned" if event == "assigned" else "revoked").inc()
        self.metrics.assigned_partitions.set(len(self.partitions))
        log.info(f"partitions {event}", extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in partitions)})


class ConfluentSource:
    def __init__(self, config: Config, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        self.assignment = Assignment(metrics)
        self.consumer = Consumer(librdkafka_consumer(config))
        try:  # librdkafka never fails to open for brokers that are down: ask one, as kafka-python does at start
            self._probe(config.kafka.request_timeout_ms / 1000)
        except KafkaException as exc:
            self.consumer.close()
            raise BrokerError(f"no broker answered within kafka.request_timeout_ms: {exc.args[0].str()}") from exc
        # consumed past a batch's byte cap, or while a slow batch ran: the next batch starts with them
        self._held: list[Message] = []
        self._keeping_alive = False
        self.lag = LagGauges(metrics)
        self.consumer.subscribe(config.kafka.input_topics, on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _probe(self, timeout_s: float) -> None:
        """Metadata of the first input topic: raises ``KafkaException`` when no broker answers in time.
        (One topic, not all of a large cluster; consumers do not create topics they ask about.)"""
        self.consumer.list_topics(self.config.kafka.input_topics[0], timeout=timeout_s)

    # --- rebalance callbacks: inside consume(), on the loop's thread --------------------------------
    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The eager protocol (librdkafka's default range,roundrobin assignors, as kafka-python's): the
        # callback gets the whole new assignment.
        consumer.assign(partitions)
        if self._keeping_alive and partitions:
            consumer.pause(partitions)  # a slow batch is running: fetch nothing until resume()
        self.assignment.add(partitions)

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._forget(partitions)
        self.assignment.remove(partitions, "revoked")

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # the session timed out: the partitions are someone else's already
        self._forget(partitions)
        self.assignment.remove(partitions, "lost")

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        self._held = [m for m in self._held if (m.topic(), m.partition()) not in gone]

    # --- batches --------------------------------------------------------------------------------
    def poll_batch(self, stop: threading.Event) -> list[Record]:
        """Up to ``batch.max_docs`` records / ``batch.max_bytes`` bytes, waiting at most ``linger_ms``
        once the first record arrived. Records past the byte cap are held for the next batch."""
        limits = self.config.batch
        max_docs, max_bytes = limits.max_docs, limits.max_bytes
        records: list[Record] = []
        append = records.append
        size = 0
        deadline: float | None = None
        pending, self._held = self._held, []
        while not stop.is_set() and len(records) < max_docs:
            if not pending:
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                timeout = 0.2 if deadline is None else max(0.001, deadline - now)
                pending = self.consumer.consume(max_docs - len(records), timeout)
                if not pending:
                    break  # idle (or linger over): return so the loop can refresh lag, readiness, reloads
                if deadline is None:
                    deadline = time.monotonic() + limits.linger_ms / 1000
            for index, message in enumerate(pending):
                if message.error() is not None:
                    self._consumer_error(message.error())
                    continue
                value = message.value()
                value_size = len(value) if value is not None else 0
                if len(records) == max_docs or (records and size + value_size > max_bytes):
                    self._held = pending[index:]
                    return records
                size += value_size
                kind, timestamp = message.timestamp()
                append(Record(message.topic(), message.partition(), message.offset(), message.key(), value,
                              timestamp if kind else None, message.headers() or []))
            pending = []
        return records

    @staticmethod
    def _consumer_error(error: KafkaError) -> None:
        # e.g. a subscribed topic that does not exist, a fetch that failed: librdkafka retries by itself
        log.warning("consumer error", extra={"error": error.str(), "code": error.name(), "fatal": error.fatal()})

    @_broker_errors
    def keep_alive(self) -> None:
        """Consume, so a slow batch does not exceed max_poll_interval_ms (and rebalances are served):
        what arrives is held for the next batch; once a batch is held, every partition is paused."""
        max_docs = self.config.batch.max_docs
        if len(self._held) >= max_docs and not self._keeping_alive:
            self._keeping_alive = True
            assigned = self.consumer.assignment()
            if assigned:
                self.consumer.pause(assigned)
        self._held.extend(m for m in self.consumer.consume(max(1, max_docs - len(self._held)), 0.1)
                          if m.error() is None)

    @_broker_errors
    def resume(self) -> None:
        if not self._keeping_alive:
            return
        self._keeping_alive = False
        assigned = self.consumer.assignment()
        if assigned:
            self.consumer.resume(assigned)

    @_broker_errors
    def rewind(self, records: list[Record]) -> None:
        """Seek every owned partition of an undelivered batch back to its first record (held messages
        of those partitions go: they are fetched again)."""
        first: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        self._held = [m for m in self._held if (m.topic(), m.partition()) not in first]
        owned = self.owned()
        for (topic, partition), offset in first.items():
            if (topic, partition) in owned:
                self.consumer.seek(TopicPartition(topic, partition, offset))

    def commit(self, offsets: dict[Partition, int]) -> None:
        partitions = [TopicPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        try:
            result = self.consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            raise CommitFailed(exc.args[0].str() if exc.args else repr(exc)) from exc
        refused = [tp for tp in result or [] if tp.error is not None]
        if refused:
            raise CommitFailed(f"commit refused for {refused[0].topic}:{refused[0].partition}: {refused[0].error.str()}")

    def owned(self) -> set[Partition]:
        return set(self.assignment.partitions)

    @property
    def joined(self) -> bool:
        return self.assignment.joined

    @_broker_errors
    def update_lag(self, committed: dict[Partition, int]) -> None:
        owned = self.owned()
        self.lag.retain(owned)
        if not owned:
            # Nothing to measure, but whether the broker answers still counts: a member whose session
            # lapsed while the broker was away holds no partitions until it rejoins.
            self._probe(QUERY_TIMEOUT_S)
            return
        ends: dict[Partition, tuple[int, int]] = {}
        for key in owned:
            tp = TopicPartition(*key)
            low, high = self.consumer.get_watermark_offsets(tp, timeout=QUERY_TIMEOUT_S)  # raises when unanswered
            _, fetched_high = self.consumer.get_watermark_offsets(tp, cached=True)  # -1001 before a fetch
            ends[key] = (low, max(high, fetched_high))
        positions = {key: committed[key] for key in owned if key in committed}
        unknown = [TopicPartition(*key) for key in owned if key not in positions]
        for tp in self.consumer.position(unknown) if unknown else []:
            if tp.offset != OFFSET_INVALID:
                positions[(tp.topic, tp.partition)] = tp.offset
        unknown = [TopicPartition(*key) for key in owned if key not in positions]
        for tp in self.consumer.committed(unknown, timeout=QUERY_TIMEOUT_S) if unknown else []:
            if tp.offset >= 0:
                positions[(tp.topic, tp.partition)] = tp.offset
        earliest = self.config.kafka.auto_offset_reset == "earliest"
        for (topic, partition), (low, high) in ends.items():
            # nothing consumed or committed yet: the group starts at auto_offset_reset
            position = positions.get((topic, partition), low if earliest else high)
            self.lag.set(topic, partition, high - position)

    def reconfigure(self, config: Config) -> None:
        self.config = config

    def close(self) -> None:
        # Offsets were committed by the commit protocol (auto-commit is off); closing leaves the group.
        self.consumer.close()
