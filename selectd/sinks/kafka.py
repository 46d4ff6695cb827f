"""Kafka sink: send a batch's outputs and wait until the broker acknowledged every one.

Failure policy (so nothing is dropped silently):
1. a failed send is retried ``delivery.produce_retries`` times with backoff;
2. an output that still fails with an error that retrying cannot fix (message too large, topic
   missing or not authorised) is dead-lettered: the ORIGINAL input bytes go to the DLQ with
   reason ``produce_failed`` and the error in a header;
3. anything else still failing (broker down, DLQ itself failing) raises :class:`DeliveryError`:
   the commit protocol then does not commit the batch and retries it after a backoff.
Every failure is counted in ``selectd_produce_failures_total``.
"""
from __future__ import annotations

import logging
import time
from typing import Sequence

from kafka import KafkaProducer
from kafka import errors as kafka_errors

from selectd.config import Config
from selectd.kafka_client import connection_kwargs
from selectd.metrics import Metrics
from selectd.router import Output, source_headers

log = logging.getLogger("selectd.sink")

#: errors that another attempt will not fix: dead-letter the document instead
PERMANENT_ERRORS = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    kafka_errors.UnknownTopicOrPartitionError,
    kafka_errors.KafkaTimeoutError,  # metadata for the topic never arrived: missing topic, auto-create off
)


class DeliveryError(Exception):
    """Some outputs of the batch could not be delivered; the batch must not be committed."""


class KafkaSink:
    def __init__(self, config: Config, metrics: Metrics):
        self.config = config
        self.metrics = metrics
        kafka = config.kafka
        self.producer = KafkaProducer(
            **connection_kwargs(kafka),
            acks="all",
            enable_idempotence=True,
            compression_type=None if kafka.compression_type == "none" else kafka.compression_type,
            linger_ms=kafka.linger_ms,
            batch_size=kafka.producer_batch_size,
            max_request_size=kafka.max_request_size,
            delivery_timeout_ms=kafka.delivery_timeout_ms,
            max_block_ms=10_000,
        )

    def _send_all(self, outputs: Sequence[Output]) -> list[tuple[Output, Exception]]:
        futures = []
        failed: list[tuple[Output, Exception]] = []
        for out in outputs:
            try:
                futures.append((out, self.producer.send(out.topic, value=out.value, key=out.key, headers=out.headers)))
            except kafka_errors.KafkaError as exc:  # e.g. too large: raised before anything is queued
                failed.append((out, exc))
        self.producer.flush(timeout=self.config.kafka.delivery_timeout_ms / 1000)
        for out, future in futures:
            if not future.is_done:
                failed.append((out, kafka_errors.KafkaTimeoutError("not acknowledged before the delivery timeout")))
            elif future.failed():
                failed.append((out, future.exception))
        for out, exc in failed:
            self.metrics.produce_failures.labels(out.topic, type(exc).__name__).inc()
        return failed

    def deliver(self, outputs: Sequence[Output]) -> None:
        policy = self.config.delivery
        failed = self._send_all(outputs)
        for attempt in range(policy.produce_retries):
            if not failed:
                break
            retriable = [(out, exc) for out, exc in failed if not isinstance(exc, PERMANENT_ERRORS)]
            if not retriable:
                break
            time.sleep(policy.retry_backoff_s * (2 ** attempt))
            self.metrics.produce_retries.inc(len(retriable))
            permanent = [(out, exc) for out, exc in failed if isinstance(exc, PERMANENT_ERRORS)]
            failed = permanent + self._send_all([out for out, _ in retriable])
        if failed:
            self._dead_letter_undeliverable(failed)
        undelivered = {id(out) for out, _ in failed}
        self.metrics.count_delivered([out for out in outputs if id(out) not in undelivered])

    def _dead_letter_undeliverable(self, failed: list[tuple[Output, Exception]]) -> None:
        transient = [(out, exc) for out, exc in failed if not isinstance(exc, PERMANENT_ERRORS) or out.outcome == "dlq"]
        if transient:
            out, exc = transient[0]
            raise DeliveryError(f"{len(transient)} outputs undelivered after retries, e.g. to {out.topic!r}: {exc!r}")
        dlq = self.config.topics.dlq
        letters = []
        for out, exc in failed:
            log.warning("output dead-lettered", extra={"topic": out.topic, "error": repr(exc)[:300],
                                                       "source": f"{out.record.topic}:{out.record.partition}:{out.record.offset}"})
            letters.append(Output(dlq, out.record.key, out.record.value,
                                  [*out.record.headers, ("selectd.reason", b"produce_failed"),
                                   ("selectd.error", repr(exc)[:1000].encode()),
                                   ("selectd.intended_topic", out.topic.encode()), *source_headers(out.record)],
                                  "dlq", "produce_failed", out.record, out.doc_id))
        still = self._send_all(letters)
        if still:
            raise DeliveryError(f"dead-lettering {len(still)} undeliverable outputs failed: {still[0][1]!r}")
        self.metrics.count_delivered(letters)

    def close(self, timeout_s: float = 10) -> None:
        self.producer.close(timeout=timeout_s)
