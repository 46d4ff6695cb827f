"""kafka-python source: a consumer in a group, batches bounded by count, bytes and linger time, and
the assignment, commits and lag of this member (:class:`selectd.kafka.base.Source`).

kafka-python's types (``TopicPartition``, ``OffsetAndMetadata``) and errors stay here: the commit
loop sees ``(topic, partition)`` pairs, plain offsets and :class:`~selectd.kafka.base.BrokerError`.
"""
from __future__ import annotations

import functools
import logging
import threading
import time

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from selectd.config import Config
from selectd.kafka.base import BrokerError, CommitFailed, LagGauges, Partition
from selectd.kafka.settings import consumer_kwargs, opening
from selectd.metrics import Metrics
from selectd.records import Record

log = logging.getLogger("selectd.source")


def _broker_errors(method):
    """kafka-python's errors out of ``method`` as :class:`BrokerError`."""
    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except KafkaError as exc:
            raise BrokerError(repr(exc)) from exc
    return wrapper


class AssignmentTracker(ConsumerRebalanceListener):
    """Records the current assignment. kafka-python 3.0 calls this on its network thread, where
    blocking calls such as ``commit()`` raise; so it only updates state the main loop reads."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._lock = threading.Lock()
        self.assigned: set[Partition] = set()
        self.joined = False  # an assignment (possibly empty) arrived: this member is in the group

    def on_partitions_revoked(self, revoked):
        with self._lock:
            self.assigned -= {(tp.topic, tp.partition) for tp in revoked}
        self.metrics.rebalances.labels("revoked").inc()
        self.metrics.assigned_partitions.set(len(self.assigned))
        log.info("partitions revoked", extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in revoked)})

    def on_partitions_assigned(self, assigned):
        with self._lock:
            self.assigned |= {(tp.topic, tp.partition) for tp in assigned}
            self.joined = True
        self.metrics.rebalances.labels("assigned").inc()
        self.metrics.assigned_partitions.set(len(self.assigned))
        log.info("partitions assigned", extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)})

    def owned(self) -> set[Partition]:
        with self._lock:
            return set(self.assigned)


class KafkaSource:
    def __init__(self, config: Config, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        self.consumer = opening(lambda: KafkaConsumer(**consumer_kwargs(config)))
        self.assignment = AssignmentTracker(metrics)
        self.lag = LagGauges(metrics)
        self.consumer.subscribe(config.kafka.input_topics, listener=self.assignment)

    def poll_batch(self, stop: threading.Event) -> list[Record]:
        """Up to ``batch.max_docs`` records / ``batch.max_bytes`` bytes, waiting at most ``linger_ms``
        once the first record arrived. Records beyond the byte cap are sought back, not dropped."""
        limits = self.config.batch
        records: list[Record] = []
        size = 0
        deadline: float | None = None
        while not stop.is_set() and len(records) < limits.max_docs:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            wait_ms = 200 if deadline is None else max(1, int((deadline - now) * 1000))
            fetched = self.consumer.poll(timeout_ms=wait_ms, max_records=limits.max_docs - len(records))
            if not fetched:
                break  # idle (or linger over): return so the loop can refresh lag, readiness, reloads
            if deadline is None:
                deadline = time.monotonic() + limits.linger_ms / 1000
            for tp, messages in fetched.items():
                for message in messages:
                    value_size = len(message.value) if message.value is not None else 0
                    if records and size + value_size > limits.max_bytes:
                        # Over the byte cap: give the rest of this partition back to the fetcher.
                        self.consumer.seek(tp, message.offset)
                        break
                    size += value_size
                    records.append(Record(message.topic, message.partition, message.offset, message.key,
                                          message.value, message.timestamp, list(message.headers or [])))
            if size >= limits.max_bytes:
                break
        return records

    @_broker_errors
    def keep_alive(self) -> None:
        """Poll with every partition paused, so a slow batch does not exceed max_poll_interval_ms.

        A rebalance during the call may assign new, unpaused partitions; anything fetched for them
        is sought back so it is read again by the next real poll.
        """
        self.consumer.pause(*self.consumer.assignment())
        fetched = self.consumer.poll(timeout_ms=100)
        for tp, messages in fetched.items():
            self.consumer.seek(tp, messages[0].offset)

    @_broker_errors
    def resume(self) -> None:
        self.consumer.resume(*self.consumer.paused())

    @_broker_errors
    def rewind(self, records: list[Record]) -> None:
        """Seek every partition of an undelivered batch back to its first record, to retry it."""
        first: dict[Partition, int] = {}
        for record in records:
            key = (record.topic, record.partition)
            first[key] = min(first.get(key, record.offset), record.offset)
        owned = self.owned()
        for (topic, partition), offset in first.items():
            if (topic, partition) in owned:
                self.consumer.seek(TopicPartition(topic, partition), offset)

    def commit(self, offsets: dict[Partition, int]) -> None:
        try:
            self.consumer.commit({TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
                                  for (topic, partition), offset in offsets.items()})
        except KafkaError as exc:
            raise CommitFailed(repr(exc)) from exc

    def owned(self) -> set[Partition]:
        return self.assignment.owned()

    @property
    def joined(self) -> bool:
        return self.assignment.joined

    @_broker_errors
    def update_lag(self, committed: dict[Partition, int]) -> None:
        owned = self.owned()
        self.lag.retain(owned)
        if not owned:
            return
        ends = self.consumer.end_offsets([TopicPartition(*key) for key in owned], timeout_ms=5000)
        for tp, end in ends.items():
            # The high watermark of the last fetch response counts too: the test broker, Tansu, answers
            # ListOffsets(latest) with the last batch's base offset + 1, short of the end.
            end = max(end, self.consumer.highwater(tp) or 0)
            position = committed.get((tp.topic, tp.partition))
            if position is None:
                position = self.consumer.position(tp, timeout_ms=5000)
            self.lag.set(tp.topic, tp.partition, end - position)

    def reconfigure(self, config: Config) -> None:
        self.config = config

    def close(self) -> None:
        # Offsets were committed by the commit protocol; closing leaves the group at once.
        self.consumer.close(autocommit=False)
