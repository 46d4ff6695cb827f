"""The message types every step shares, and the one builder of dead letters.

A :class:`Record` comes in (from Kafka, or a JSONL line), parsing turns it into a :class:`Document`
or an :class:`Invalid`, routing turns those into :class:`Output` messages, and a sink delivers them.
A dead letter carries the input's ORIGINAL bytes to ``topics.dlq`` with the reason, the document
id (when one could be parsed) and the source in headers; :func:`dead_letter` builds every one of
them, whether parsing rejected the input or a sink could not produce what the cascade made of it.
A step that cannot finish a batch for now raises a :class:`RetriableBatchError`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

#: DLQ reasons (also the ``reason`` label of the DLQ counter; a closed set keeps cardinality low):
#: the parse failures, then ``produce_failed`` (an output that no retry could deliver)
DLQ_REASONS = (
    "tombstone", "message_too_large", "invalid_utf8", "invalid_json", "not_an_object",
    "missing_id", "id_not_string", "missing_text", "text_not_string", "empty_text",
    "text_too_large", "invalid_unicode", "produce_failed",
)

Outcome = Literal["accepted", "rejected", "dlq", "attributes"]


class RetriableBatchError(Exception):
    """A batch could not be finished for a reason that may pass: a broker or sink unreachable, a
    dedup store unreachable or its disk full. Nothing of the batch was decided for good: it is not
    committed, and the commit loop reads it again after a backoff, reporting not-ready meanwhile.
    Each step raises its own subclass (:class:`selectd.sinks.base.DeliveryError`,
    :class:`selectd.kafka.base.BrokerError`, :class:`selectd.dedup.store.StoreError`)."""


@dataclass(slots=True)
class Record:
    """One input message, from Kafka or from a JSONL line (topic = file name, offset = line index)."""
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass(slots=True)
class Document:
    record: Record
    id: str
    text: str
    fields: dict[str, Any]  # the whole parsed object, untouched


@dataclass(slots=True)
class Invalid:
    record: Record
    reason: str
    detail: str
    doc_id: str | None = None  # when the input had a string id


@dataclass(slots=True)
class Output:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    outcome: Outcome
    reason: str | None
    record: Record
    doc_id: str | None = None
    stage: str | None = None   # rejecting stage
    detail: str | None = None  # why a message was dead-lettered


def source_headers(record: Record) -> list[tuple[str, bytes]]:
    """Where an output came from; the source timestamp lets consumers measure end-to-end latency."""
    headers = [("selectd.source.topic", record.topic.encode()),
               ("selectd.source.partition", str(record.partition).encode()),
               ("selectd.source.offset", str(record.offset).encode())]
    if record.timestamp_ms is not None:
        headers.append(("selectd.source.timestamp_ms", str(record.timestamp_ms).encode()))
    return headers


#: a document id longer than this is cut in the ``selectd.id`` header (ids are short; a huge one must
#: not make its dead letter too large to send)
ID_HEADER_MAX_BYTES = 1024

#: what a Kafka record adds to its key, value and headers (a batch header of 61 bytes, record
#: framing and varints), with room to spare
RECORD_OVERHEAD_BYTES = 512
#: what an accepted or rejected output adds to its input's bytes, generously: the spliced ``selectd``
#: object (decision, scores, versions) and the source headers
OUTPUT_ROOM_BYTES = 16_384


def dead_letter(record: Record, topic: str, reason: str, detail: str, *, intended_topic: str | None = None,
                doc_id: str | None = None, max_bytes: int | None = None) -> Output:
    """The dead letter of ``record``: its original key, value and headers, then ``selectd.reason``,
    ``selectd.error`` (``detail``), ``selectd.id`` (the document id, when the input had one),
    ``selectd.intended_topic`` (the output it replaces, if any) and the source headers.

    With ``max_bytes`` (the producer's per-record limit) a letter that would not fit is cut to fit,
    since it would fail forever and block its partition: the input's own headers are dropped (they
    may be what is huge), the key is cut to 1 KiB, the value to what room is left, and
    ``selectd.truncated_from_bytes`` gives the original value size; selectd's own headers (the id
    and the source coordinates among them) stay.
    """
    own = [("selectd.reason", reason.encode()), ("selectd.error", detail.encode("utf-8", "replace"))]
    if doc_id is not None:
        own.append(("selectd.id", doc_id.encode("utf-8", "replace")[:ID_HEADER_MAX_BYTES]))
    if intended_topic is not None:
        own.append(("selectd.intended_topic", intended_topic.encode()))
    own += source_headers(record)
    letter = Output(topic, record.key, record.value, [*record.headers, *own], "dlq", reason, record, doc_id,
                    detail=detail)
    if max_bytes is None or _record_size(letter.key, letter.value, letter.headers) <= max_bytes:
        return letter
    own.append(("selectd.truncated_from_bytes", str(len(record.value or b"")).encode()))
    key = record.key[:1024] if record.key is not None else None
    room = max_bytes - _record_size(key, b"", own)
    return dataclasses.replace(letter, key=key, value=(record.value or b"")[:max(0, room)], headers=own)


def _record_size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return (len(key or b"") + len(value or b"") + sum(len(k.encode()) + len(v) for k, v in headers)
            + RECORD_OVERHEAD_BYTES)
