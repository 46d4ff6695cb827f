"""The client-neutral half of the Kafka package: what the commit protocol needs of a consumer, and
the produce-failure policy every producer client shares.

Partitions are ``(topic, partition)`` pairs and offsets plain ints; a client's own types and
errors never reach the commit loop: a source raises :class:`BrokerError` (or :class:`CommitFailed`),
a sink :class:`selectd.sinks.base.DeliveryError`.

Produce-failure policy (:class:`ProducerSink`, so nothing is dropped silently and no good document is
dead-lettered by a broker that is only slow):
1. a failed send is retried ``delivery.produce_retries`` times with backoff;
2. an output that still fails with an error that no retry can fix (the record too large for the
   producer or the broker, an illegal topic name, no authorisation to write the topic, a record the
   broker refuses as invalid) is dead-lettered: the ORIGINAL input bytes go to the DLQ with reason
   ``produce_failed`` and the error in a header;
3. anything else still failing raises ``DeliveryError``, and the commit protocol does not commit
   the batch and retries it after a backoff: the broker down, a partition without a leader, a send
   not acknowledged within ``kafka.delivery_timeout_ms`` (a slow partition), a topic the broker does
   not know (with auto-creation off the producer waits for its metadata until it times out: create
   the topic and the batch goes through), the DLQ itself failing; a failure of the producer itself
   (kind ``producer_failed``) at once, without retries through it.
A dead letter larger than the producer's ``max_request_size`` (a huge input, or an output made too
large by one) would fail forever and block its partition: it is sent cut to fit
(:func:`selectd.records.dead_letter`). Every failure is counted in ``selectd_produce_failures_total``
by its kind (:data:`FAILURE_KINDS`, the same vocabulary whichever client produced).

A client names each of its errors by kind (:meth:`ProducerSink._failure_kind`); which kinds are
permanent is decided here, once for both clients (:data:`PERMANENT_FAILURES`).
"""
from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from typing import Protocol, Sequence

from selectd.config import Config
from selectd.metrics import Metrics
from selectd.records import Output, Record, RetriableBatchError, dead_letter
from selectd.sinks.base import DeliveryError, Sink

log = logging.getLogger("selectd.sink")

#: a partition of a topic: (topic, partition)
Partition = tuple[str, int]


#: what went wrong with a send, whichever client made it: the ``error`` label of
#: ``selectd_produce_failures_total`` (a closed set, so dashboards and alerts read the same for both)
FAILURE_KINDS = {
    "too_large": "the record is over the producer's max_request_size or the broker's limit",
    "timed_out": "not acknowledged within kafka.delivery_timeout_ms, or the topic's metadata never came",
    "unknown_topic": "the broker does not know the topic or partition",
    "invalid_topic": "the topic name is illegal",
    "not_authorized": "no authorisation to write the topic",
    "invalid_record": "the broker refused the record as corrupt or invalid",
    "unavailable": "broker unreachable, partition without a leader, not enough replicas: passes",
    "producer_failed": "the producer itself failed (fenced, fatal idempotence error): a fresh one is opened",
    "other": "anything else (the log line and the dead letter's selectd.error header have the error)",
}
#: kinds that another attempt will not fix: the output is dead-lettered instead of retried (everything
#: else, timeouts and unknown topics included, is retried and leaves the batch uncommitted)
PERMANENT_FAILURES = frozenset({"too_large", "invalid_topic", "not_authorized", "invalid_record"})

#: the broker's answers by kind: Kafka protocol error codes, which both clients report as they are
#: (kafka-python's ``errno``, librdkafka's non-negative ``code()``); a client maps its own local errors
PROTOCOL_ERROR_KINDS = {
    2: "invalid_record",     # CORRUPT_MESSAGE
    3: "unknown_topic",      # UNKNOWN_TOPIC_OR_PARTITION
    5: "unavailable",        # LEADER_NOT_AVAILABLE
    6: "unavailable",        # NOT_LEADER_OR_FOLLOWER
    7: "unavailable",        # REQUEST_TIMED_OUT (the broker waited for its replicas)
    10: "too_large",         # MESSAGE_TOO_LARGE
    17: "invalid_topic",     # INVALID_TOPIC_EXCEPTION
    18: "too_large",         # RECORD_LIST_TOO_LARGE
    19: "unavailable",        # NOT_ENOUGH_REPLICAS
    20: "unavailable",        # NOT_ENOUGH_REPLICAS_AFTER_APPEND
    29: "not_authorized",    # TOPIC_AUTHORIZATION_FAILED
    45: "producer_failed",   # OUT_OF_ORDER_SEQUENCE_NUMBER
    47: "producer_failed",   # INVALID_PRODUCER_EPOCH
    59: "producer_failed",   # UNKNOWN_PRODUCER_ID
    87: "invalid_record",    # INVALID_RECORD
    90: "producer_failed",   # PRODUCER_FENCED
}


class BrokerError(RetriableBatchError):
    """A broker operation failed in a way a later attempt may not (unreachable, timed out): opening a
    client at start, or an operation of the source."""


def next_backoff(previous: float, cap: float) -> float:
    """The wait before the next attempt at the broker: 0.5 s, doubled after each failure, at most ``cap``."""
    return min(cap, max(0.5, previous * 2))


class CommitFailed(BrokerError):
    """The broker refused or never answered the offset commit of a delivered batch."""


class Source(Protocol):
    """A consumer in a group, as the commit protocol uses it. Every method runs on the loop's
    thread; those that talk to the broker raise :class:`BrokerError`."""

    def poll_batch(self, stop: threading.Event) -> list[Record]:
        """Up to ``batch.max_docs`` records / ``batch.max_bytes`` bytes, waiting at most
        ``batch.linger_ms`` once the first record arrived; an empty list when idle or stopping."""

    def keep_alive(self) -> None:
        """Stay in the group while a batch takes long: poll, taking in at most about one batch
        more (then with every partition paused)."""

    def resume(self) -> None:
        """Undo :meth:`keep_alive`'s pause."""

    def rewind(self, records: list[Record]) -> None:
        """Seek every owned partition of ``records`` back to its first record, to read them again."""

    def commit(self, offsets: dict[Partition, int]) -> None:
        """Commit the next offset to read per partition; raises :class:`CommitFailed`."""

    def owned(self) -> set[Partition]:
        """The partitions assigned to this member now (a rebalance may shrink it at any time)."""

    @property
    def joined(self) -> bool:
        """An assignment (possibly empty) arrived: this member is in the group."""

    def update_lag(self, committed: dict[Partition, int]) -> None:
        """Refresh the lag gauges of the owned partitions (``committed``: offsets this member committed)."""

    def reconfigure(self, config: Config) -> None:
        """Use a reloaded config's batch limits ([kafka] settings need a restart)."""

    def close(self) -> None:
        """Leave the group at once, committing nothing."""


class LagGauges:
    """The ``selectd_consumer_lag_messages`` series of one member, for either client's source: one
    per owned partition; a revoked partition's series is removed, so no member reports the lag of a
    partition it no longer reads."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics
        self._series: set[tuple[str, str]] = set()

    def retain(self, owned: set[Partition]) -> None:
        for labels in list(self._series):
            if (labels[0], int(labels[1])) not in owned:
                self.metrics.consumer_lag.remove(*labels)
                self._series.discard(labels)

    def set(self, topic: str, partition: int, lag: int) -> None:
        labels = (topic, str(partition))
        self.metrics.consumer_lag.labels(*labels).set(max(0, lag))
        self._series.add(labels)


class ProducerSink(Sink):
    """A Kafka sink: send a batch's outputs, wait until the broker acknowledged every one, apply the
    failure policy (module docstring). A client provides the producer: :meth:`_send_all`,
    :meth:`_failure_kind`, :meth:`_discard_producer`, :meth:`close`."""

    def __init__(self, config: Config, metrics: Metrics):
        super().__init__(metrics)
        self.config = config

    @abstractmethod
    def _send_all(self, outputs: Sequence[Output]) -> list[tuple[Output, Exception]]:
        """Send ``outputs`` and wait up to ``kafka.delivery_timeout_ms`` for their acknowledgements;
        the outputs that failed, with their errors. Raises ``DeliveryError`` when the producer itself
        fails (no producer, flush failing)."""

    @abstractmethod
    def _failure_kind(self, error: Exception) -> str:
        """What ``error`` (as :meth:`_send_all` reports it) means, one of :data:`FAILURE_KINDS`."""

    def _is_permanent(self, error: Exception) -> bool:
        """Another attempt will not fix ``error``: dead-letter the output instead of retrying."""
        return self._failure_kind(error) in PERMANENT_FAILURES

    def _is_too_large(self, error: Exception) -> bool:
        """``error`` says the record is over the producer's size limit."""
        return self._failure_kind(error) == "too_large"

    @abstractmethod
    def _discard_producer(self) -> None:
        """Drop the producer after a failed batch; the next send opens a fresh one (an idempotent
        producer that hit a fatal error fails every later send)."""

    def send(self, outputs: Sequence[Output]) -> list[Output]:
        try:
            return self._deliver(outputs)
        except DeliveryError:
            self._discard_producer()
            raise

    def _send_counted(self, outputs: Sequence[Output]) -> list[tuple[Output, Exception]]:
        """:meth:`_send_all`, each failure counted by kind; a failure of the producer itself raises
        ``DeliveryError`` at once (retries through the same producer would fail alike)."""
        failed = self._send_all(outputs)
        broken = None
        for out, exc in failed:
            kind = self._failure_kind(exc)
            self.metrics.produce_failures.labels(out.topic, kind).inc()
            if kind == "producer_failed":
                broken = exc
        if broken is not None:
            raise DeliveryError(f"producer failed: {broken!r}")
        return failed

    def _deliver(self, outputs: Sequence[Output]) -> list[Output]:
        policy = self.config.delivery
        failed = self._send_counted(outputs)
        for attempt in range(policy.produce_retries):
            if not failed:
                break
            retriable = [(out, exc) for out, exc in failed if not self._is_permanent(exc)]
            if not retriable:
                break
            time.sleep(policy.retry_backoff_s * (2 ** attempt))
            self.metrics.produce_retries.inc(len(retriable))
            permanent = [(out, exc) for out, exc in failed if self._is_permanent(exc)]
            failed = permanent + self._send_counted([out for out, _ in retriable])
        letters = self._dead_letter_undeliverable(failed) if failed else []
        undelivered = {id(out) for out, _ in failed}
        return [out for out in outputs if id(out) not in undelivered] + letters

    def _dead_letter_undeliverable(self, failed: list[tuple[Output, Exception]]) -> list[Output]:
        # A dead letter that failed for its size is sent again cut to fit; any other DLQ failure is transient.
        transient = [(out, exc) for out, exc in failed if not self._is_permanent(exc)
                     or (out.outcome == "dlq" and not self._is_too_large(exc))]
        if transient:
            out, exc = transient[0]
            raise DeliveryError(f"{len(transient)} outputs undelivered after retries, e.g. to {out.topic!r}: {exc!r}")
        dlq = self.config.topics.dlq
        limit = self.config.kafka.max_request_size
        letters = []
        for out, exc in failed:
            source = f"{out.record.topic}:{out.record.partition}:{out.record.offset}"
            if out.outcome == "dlq":  # failed for its size: the same letter, cut to fit
                log.warning("dead letter too large; sending it truncated",
                            extra={"bytes": len(out.value or b""), "source": source})
                letters.append(dead_letter(out.record, out.topic, out.reason, out.detail, doc_id=out.doc_id,
                                           max_bytes=limit))
                continue
            log.warning("output dead-lettered", extra={"topic": out.topic, "error": repr(exc)[:300], "source": source})
            letters.append(dead_letter(out.record, dlq, "produce_failed", repr(exc)[:1000], intended_topic=out.topic,
                                       doc_id=out.doc_id, max_bytes=limit))
        still = self._send_counted(letters)
        if still:
            raise DeliveryError(f"dead-lettering {len(still)} undeliverable outputs failed: {still[0][1]!r}")
        return letters
