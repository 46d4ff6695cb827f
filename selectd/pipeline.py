"""Parse → cascade → router for one batch of records; shared by ``selectd run`` and ``selectd score``."""
from __future__ import annotations

from typing import Sequence

from selectd.cascade import Cascade
from selectd.config import Config, ConfigError
from selectd.metrics import Metrics
from selectd.parse import parse_record
from selectd.records import Document, Invalid, Output, Record
from selectd.router import Router, route_signal_problems


class Pipeline:
    def __init__(self, config: Config, cascade: Cascade, metrics: Metrics | None = None):
        self.config = config
        self.cascade = cascade
        self.router = Router(config, cascade.versions())
        self.metrics = metrics

    @classmethod
    def from_config(cls, config: Config, metrics: Metrics | None = None) -> "Pipeline":
        """Load every stage's scorer, warm it up, and check every rule, selection and route against
        the signals the stages really emit: a :class:`selectd.config.ConfigError` naming key paths
        otherwise (``check-config`` runs this too, so it catches what ``run`` would)."""
        cascade = Cascade.from_config(config.stages)
        try:
            problems = route_signal_problems(config.routes, cascade.warmup())
            if problems:
                raise ConfigError("\n".join(problems))
        except BaseException:
            cascade.close()
            raise
        return cls(config, cascade, metrics)

    def process(self, records: Sequence[Record]) -> list[Output]:
        """Every record yields exactly one primary output (accepted, rejected or DLQ), in order."""
        limits = self.config.input
        parsed = [parse_record(r, limits.max_message_bytes, limits.max_text_bytes, limits.id_key, limits.text_key)
                  for r in records]
        documents = [p for p in parsed if isinstance(p, Document)]
        on_stage = self.metrics.observe_stage if self.metrics else None
        verdicts = iter(self.cascade.run([d.text for d in documents], on_stage))
        outputs: list[Output] = []
        for item in parsed:
            if isinstance(item, Invalid):
                outputs.append(self.router.dead_letter(item))
            else:
                outputs.extend(self.router.outputs_for(item, next(verdicts)))
        return outputs

    def close(self) -> None:
        self.cascade.close()
