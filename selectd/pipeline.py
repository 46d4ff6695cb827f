"""Parse → cascade → router for one batch of records; shared by ``selectd run`` and ``selectd score``."""
from __future__ import annotations

import collections
from typing import Sequence

from selectd.cascade import Cascade, Verdict
from selectd.config import Config, ConfigError
from selectd.metrics import Metrics
from selectd.parse import parse_record
from selectd.records import Document, Invalid, Output, Record
from selectd.router import Router, route_signal_problems
from selectd.scorers.base import StageContext


class Pipeline:
    def __init__(self, config: Config, cascade: Cascade, metrics: Metrics | None = None):
        self.config = config
        self.cascade = cascade
        self.router = Router(config, cascade.versions())
        self.metrics = metrics
        #: signals whose drift has no reference (not in, or bucketed unlike, the profile file)
        self.drift_problems: list[str] = []
        if metrics:
            for stage in cascade.stages:
                self.drift_problems += metrics.declare_signals(stage.name, stage.kinds, stage.shadow)

    @classmethod
    def from_config(cls, config: Config, metrics: Metrics | None = None) -> "Pipeline":
        """Load every stage's scorer, warm it up, and check every rule, selection and route against
        the signals the stages really emit: a :class:`selectd.config.ConfigError` naming key paths
        otherwise (``check-config`` runs this too, so it catches what ``run`` would)."""
        cascade = Cascade.from_config(config.stages, StageContext(config.dedup, metrics))
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
        on_signals = self.metrics.distributions.observe if self.metrics else None
        verdicts = self.cascade.run(documents, on_stage, on_signals=on_signals)
        if self.metrics:
            self._count_shadow(verdicts)
        remaining = iter(verdicts)
        outputs: list[Output] = []
        for item in parsed:
            if isinstance(item, Invalid):
                outputs.append(self.router.dead_letter(item))
            else:
                outputs.extend(self.router.outputs_for(item, next(remaining)))
        return outputs

    def _count_shadow(self, verdicts: Sequence[Verdict]) -> None:
        decisions = collections.Counter((stage, shadow.reason, verdict.accepted)
                                        for verdict in verdicts for stage, shadow in verdict.shadow.items())
        if decisions:
            self.metrics.count_shadow(decisions)

    def close(self) -> None:
        self.cascade.close()
