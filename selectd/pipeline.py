"""Parse → cascade → router for one batch of records; shared by ``selectd run`` and ``selectd score``."""
from __future__ import annotations

from typing import Sequence

from selectd.cascade import Cascade
from selectd.config import Config
from selectd.metrics import Metrics
from selectd.parse import parse_record
from selectd.records import Document, Invalid, Output, Record
from selectd.router import Router
from selectd.scorers.base import StageContext


class Pipeline:
    def __init__(self, config: Config, cascade: Cascade, metrics: Metrics | None = None):
        self.config = config
        self.cascade = cascade
        self.router = Router(config, cascade.versions())
        self.metrics = metrics

    @classmethod
    def from_config(cls, config: Config, metrics: Metrics | None = None) -> "Pipeline":
        cascade = Cascade.from_config(config.stages, StageContext(config.dedup, metrics))
        cascade.warmup()
        return cls(config, cascade, metrics)

    def process(self, records: Sequence[Record]) -> list[Output]:
        """Every record yields exactly one primary output (accepted, rejected or DLQ), in order."""
        limits = self.config.input
        parsed = [parse_record(r, limits.max_message_bytes, limits.max_text_bytes) for r in records]
        documents = [p for p in parsed if isinstance(p, Document)]
        on_stage = self.metrics.observe_stage if self.metrics else None
        verdicts = iter(self.cascade.run(documents, on_stage))
        outputs: list[Output] = []
        for item in parsed:
            if isinstance(item, Invalid):
                outputs.append(self.router.dead_letter(item))
            else:
                outputs.extend(self.router.outputs_for(item, next(verdicts)))
        return outputs

    def close(self) -> None:
        self.cascade.close()
