"""kafka-python sink: the produce-failure policy of :class:`selectd.kafka.base.ProducerSink` over
kafka-python's producer, what kind of failure each of its errors is, a cheaper partitioner, and one
wakeup of the sender thread per batch instead of one per record."""
from __future__ import annotations

import struct
from contextlib import contextmanager
from typing import Iterator, Sequence

from kafka import KafkaProducer
from kafka import errors as kafka_errors
from kafka.partitioner.default import DefaultPartitioner

from selectd.config import Config
from selectd.kafka.base import PROTOCOL_ERROR_KINDS, BrokerError, ProducerSink
from selectd.kafka.settings import opening, producer_kwargs
from selectd.metrics import Metrics
from selectd.records import Output
from selectd.sinks.base import DeliveryError

#: kafka-python's own errors (not broker answers) by failure kind (selectd.kafka.base.FAILURE_KINDS)
LOCAL_ERROR_KINDS = (
    # a send not acknowledged before the delivery timeout, or a topic whose metadata never arrived
    # (missing, with auto-creation off)
    (kafka_errors.KafkaTimeoutError, "timed_out"),
    ((kafka_errors.KafkaConnectionError, kafka_errors.NodeNotReadyError), "unavailable"),
)

_MURMUR2_M = 0x5BD1E995
_WORDS = struct.Struct("<I")


def murmur2(data: bytes) -> int:
    """The Java client's murmur2 (``Utils.murmur2``), as kafka-python's ``murmur2``, reading 4 bytes
    per step instead of one (about 1.5x faster in CPython)."""
    length = len(data)
    h = 0x9747B28C ^ length
    body = length & ~3
    for (k,) in _WORDS.iter_unpack(data[:body]):
        k = (k * _MURMUR2_M) & 0xFFFFFFFF
        k ^= k >> 24
        h = ((h * _MURMUR2_M) & 0xFFFFFFFF) ^ ((k * _MURMUR2_M) & 0xFFFFFFFF)
    tail = length & 3
    if tail:
        if tail == 3:
            h ^= data[body + 2] << 16
        if tail >= 2:
            h ^= data[body + 1] << 8
        h = ((h ^ data[body]) * _MURMUR2_M) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * _MURMUR2_M) & 0xFFFFFFFF
    return h ^ (h >> 15)


class KeyHashPartitioner(DefaultPartitioner):
    """kafka-python's default partitioner (keyed: murmur2 of the key modulo the partition count, as the
    Java client; unkeyed: a random available partition), cheaper per record, which matters at
    thousands of outputs a second: a one-partition topic skips the hash, and the hash is faster."""

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partitions = cluster.partitions_for_topic(topic)
        if serialized_key is None or partitions is None:  # unknown topic: the default raises
            return super().partition(topic, key, serialized_key, value, serialized_value, cluster)
        if len(partitions) == 1:
            return next(iter(partitions))
        ordered = sorted(partitions)
        return ordered[(murmur2(serialized_key) & 0x7FFFFFFF) % len(ordered)]


def _no_wakeup() -> None:
    pass


@contextmanager
def wakeups_at_flush(producer: KafkaProducer) -> Iterator[None]:
    """Sends inside this block do not wake kafka-python's sender thread; the ``flush()`` after them does.

    kafka-python (pinned to 3.0.12) wakes the sender on every ``send()`` once a partition holds more
    than one batch (``RecordAccumulator.append`` then reports "batch full"): a write to its wakeup
    socket and a GIL hand-off per record while a large batch is queued, ~3-5 µs per document here.
    The sink flushes right after queueing a batch, and ``flush()`` wakes the sender itself, so the
    per-record wakeups buy nothing. Done by shadowing the private ``producer._sender.wakeup`` for the
    duration of the block (tests/test_reliability.py checks the attribute and the per-record wakeups
    on the pinned version, so an upgrade that changes them fails there).

    A ``send()`` to a topic whose metadata is not known yet wakes the sender to fetch it and waits:
    the caller fetches the metadata of every topic first (``producer.partitions_for``). kafka-python
    3.0 has no buffer pool, so no send waits for the sender to free memory.
    """
    sender = producer._sender
    sender.wakeup = _no_wakeup
    try:
        yield
    finally:
        del sender.wakeup


class KafkaSink(ProducerSink):
    def __init__(self, config: Config, metrics: Metrics):
        super().__init__(config, metrics)
        self.producer: KafkaProducer | None = self._new_producer()

    def _new_producer(self) -> KafkaProducer:
        return opening(lambda: KafkaProducer(**producer_kwargs(self.config.kafka), partitioner=KeyHashPartitioner()))

    def _send_all(self, outputs: Sequence[Output]) -> list[tuple[Output, Exception]]:
        try:
            if self.producer is None:
                self.producer = self._new_producer()
            producer = self.producer
            futures = []
            failed: list[tuple[Output, Exception]] = []
            unsendable: dict[str, Exception] = {}  # topics whose metadata failed: what their sends would raise
            for topic in {out.topic for out in outputs}:
                try:
                    producer.partitions_for(topic)
                except kafka_errors.KafkaError as exc:
                    unsendable[topic] = exc
            with wakeups_at_flush(producer):
                for out in outputs:
                    if out.topic in unsendable:
                        failed.append((out, unsendable[out.topic]))
                        continue
                    try:
                        futures.append((out, producer.send(out.topic, value=out.value, key=out.key, headers=out.headers)))
                    except kafka_errors.KafkaError as exc:  # e.g. too large: raised before anything is queued
                        failed.append((out, exc))
            self.producer.flush(timeout=self.config.kafka.delivery_timeout_ms / 1000)
        except (kafka_errors.KafkaError, BrokerError) as exc:  # no producer, or the flush timed out: nothing is known sent
            raise DeliveryError(f"producer failed: {exc!r}") from exc
        for out, future in futures:
            if not future.is_done:
                failed.append((out, kafka_errors.KafkaTimeoutError("not acknowledged before the delivery timeout")))
            elif future.failed():
                failed.append((out, future.exception))
        return failed

    def _failure_kind(self, error: Exception) -> str:
        errno = getattr(error, "errno", None)
        if errno is not None:
            return PROTOCOL_ERROR_KINDS.get(errno, "other")
        for errors, kind in LOCAL_ERROR_KINDS:
            if isinstance(error, errors):
                return kind
        return "other"

    def _discard_producer(self) -> None:
        producer, self.producer = self.producer, None
        if producer is not None:
            try:
                producer.close(timeout=0)
            except kafka_errors.KafkaTimeoutError:
                # close() flushes first: records still queued (the batch's flush timed out) make it time
                # out. Its sender expires them within delivery_timeout_ms; the producer is closed when
                # it is collected (KafkaProducer.__del__).
                pass

    def close(self, timeout_s: float = 10) -> None:
        if self.producer is not None:
            self.producer.close(timeout=timeout_s)
