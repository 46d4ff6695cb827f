"""JSONL file sink for ``selectd score``: the message value of every primary output, one per line.

Accepted and rejected outputs are written exactly as they would be produced to Kafka. A
dead-lettered line is not JSON we can extend, so it becomes an object with the decision and the
original line as text. Attribute records go to their own file when one is given, else nowhere
(and are not counted as delivered).
"""
from __future__ import annotations

from typing import BinaryIO, Sequence

import orjson

from selectd.metrics import Metrics
from selectd.records import Output
from selectd.sinks.base import Sink


def dead_letter_line(out: Output) -> bytes:
    raw = out.record.value
    return orjson.dumps({
        "selectd": {"decision": "dlq", "topic": out.topic, "reason": out.reason, "detail": out.detail, "id": out.doc_id,
                    "source": {"file": out.record.topic, "line": out.record.offset + 1}},
        "raw": raw.decode("utf-8", "replace") if raw is not None else None,
    })


class JsonlSink(Sink):
    def __init__(self, metrics: Metrics, main: BinaryIO, attributes: BinaryIO | None = None):
        super().__init__(metrics)
        self.main = main
        self.attributes = attributes

    def send(self, outputs: Sequence[Output]) -> list[Output]:
        written = []
        for out in outputs:
            if out.outcome == "attributes":
                if self.attributes is None:
                    continue
                self.attributes.write(out.value + b"\n")
            elif out.outcome == "dlq":
                self.main.write(dead_letter_line(out) + b"\n")
            else:
                self.main.write(out.value + b"\n")
            written.append(out)
        return written
