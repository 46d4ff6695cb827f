"""confluent-kafka (librdkafka) sink: the produce-failure policy of :class:`selectd.kafka.base.ProducerSink`
over librdkafka's producer, and what kind of failure each of its errors is.

librdkafka batches, compresses, retries and (with ``enable_idempotence``) numbers the records in its
own threads, outside the GIL. ``produce()`` only queues: a record over ``message.max.bytes`` fails
there at once, every other outcome arrives as a delivery report served inside ``flush()``. With
``delivery.report.only.error`` only failures call back into Python, through the one callback of the
producer: a batch costs one ``produce()`` per output (no per-record callback object) and one
``flush()``, and an output without a failure report once the flush returned with nothing left in the
queue was acknowledged. A failure report names the record's topic and value, which identify the
output (outputs of one batch to one topic with the same bytes are all taken as failed: at worst one
is sent twice). ``message.timeout.ms`` (``kafka.delivery_timeout_ms``) bounds how long a record may
wait, so the flush returns with every report served; a record that timed out fails the batch, as
kafka-python's flush timing out does (:data:`NOT_ACKNOWLEDGED`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from selectd.config import Config
from selectd.kafka.base import PROTOCOL_ERROR_KINDS, ProducerSink
from selectd.kafka.settings import librdkafka_producer
from selectd.metrics import Metrics
from selectd.records import Output
from selectd.sinks.base import DeliveryError

#: librdkafka's own (negative) error codes by failure kind (selectd.kafka.base.FAILURE_KINDS)
LOCAL_ERROR_KINDS = {
    KafkaError._TIMED_OUT: "timed_out",
    KafkaError._UNKNOWN_TOPIC: "unknown_topic",  # a missing topic, auto-creation off (after its metadata wait)
    KafkaError._UNKNOWN_PARTITION: "unknown_topic",
    KafkaError._TRANSPORT: "unavailable",
    KafkaError._ALL_BROKERS_DOWN: "unavailable",
    KafkaError._RESOLVE: "unavailable",
    KafkaError._FATAL: "producer_failed",
    KafkaError._FENCED: "producer_failed",
}

#: a record not acknowledged within kafka.delivery_timeout_ms (or purged when the flush outlived it):
#: as kafka-python's flush timing out, the batch fails with the producer (DeliveryError: not
#: committed, retried after a backoff with a fresh producer), nothing is dead-lettered for it. (An
#: idempotent librdkafka producer whose broker lost its state, e.g. after a restart, retries until
#: this timeout; a fresh producer gets a new producer id.)
NOT_ACKNOWLEDGED = {KafkaError._MSG_TIMED_OUT, KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}

#: seconds a flush may take beyond the delivery timeout (the failure reports' own round trip), and
#: what is left for the reports of a purge after that
FLUSH_MARGIN_S = 5.0


class ConfluentSink(ProducerSink):
    """``new_producer``: builds the producer from its librdkafka settings (confluent-kafka's ``Producer``
    is a C type whose methods cannot be replaced on an instance: tests inject faults with a subclass)."""

    def __init__(self, config: Config, metrics: Metrics, new_producer: Callable[[dict[str, Any]], Producer] = Producer):
        super().__init__(config, metrics)
        self._new_producer = new_producer
        self._reported: list[tuple[KafkaError, Message]] = []  # failure reports of the batch being sent
        self.producer: Producer | None = self._open()

    def _open(self) -> Producer:
        return self._new_producer({**librdkafka_producer(self.config.kafka), "delivery.report.only.error": True,
                                   "on_delivery": self._on_failure})

    def _on_failure(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:  # delivery.report.only.error: only failures are reported
            self._reported.append((error, message))

    def _send_all(self, outputs: Sequence[Output]) -> list[tuple[Output, Exception]]:
        if self.producer is None:
            self.producer = self._open()
        producer = self.producer
        produce = producer.produce
        self._reported = []
        refused: dict[int, KafkaError] = {}  # raised by produce(): nothing was queued
        for index, out in enumerate(outputs):
            while True:
                try:
                    produce(out.topic, out.value, out.key, headers=out.headers)
                    break
                except BufferError:  # the local queue is full: serve reports until there is room
                    producer.poll(0.05)
                except KafkaException as exc:  # e.g. over message.max.bytes
                    refused[index] = exc.args[0]
                    break
        timeout_s = self.config.kafka.delivery_timeout_ms / 1000 + FLUSH_MARGIN_S
        if producer.flush(timeout_s):
            producer.purge(in_queue=True, in_flight=True)  # what is left is reported failed (_PURGE_*)
            if producer.flush(FLUSH_MARGIN_S):
                raise DeliveryError("producer failed: records neither acknowledged nor failed after the delivery timeout")
        failures = {**refused, **self._failed_outputs(outputs)}
        timed_out = sum(1 for error in failures.values() if error.code() in NOT_ACKNOWLEDGED)
        if timed_out:
            raise DeliveryError(f"producer failed: {timed_out} records not acknowledged within kafka.delivery_timeout_ms")
        return [(outputs[index], KafkaException(error)) for index, error in sorted(failures.items())]

    def _failed_outputs(self, outputs: Sequence[Output]) -> dict[int, KafkaError]:
        """The outputs the failure reports name (by topic and value), with their errors."""
        if not self._reported:
            return {}
        by_record: dict[tuple[str, bytes | None], list[int]] = {}
        for index, out in enumerate(outputs):
            by_record.setdefault((out.topic, out.value), []).append(index)
        failed: dict[int, KafkaError] = {}
        for error, message in self._reported:
            indices = by_record.get((message.topic(), message.value()))
            if indices is None:  # cannot happen: every report is of a record of this batch
                raise DeliveryError(f"producer failed: a failure report of no output of the batch: {error.str()}")
            failed.update((index, error) for index in indices)
        return failed

    def _failure_kind(self, error: Exception) -> str:
        if not (isinstance(error, KafkaException) and error.args and isinstance(error.args[0], KafkaError)):
            return "other"
        if error.args[0].fatal():  # e.g. an idempotent producer's sequence lost: every later send fails too
            return "producer_failed"
        code = error.args[0].code()
        if code >= 0:
            return PROTOCOL_ERROR_KINDS.get(code, "other")
        return LOCAL_ERROR_KINDS.get(code, "other")

    def _discard_producer(self) -> None:
        if self.producer is not None:
            self.producer.purge(in_queue=True, in_flight=True)
            self.producer.flush(0)
            self.producer = None

    def close(self, timeout_s: float = 10) -> None:
        if self.producer is not None:
            self.producer.flush(timeout_s)
