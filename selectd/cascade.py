"""The scorer cascade: stages run in configured order on the documents still alive.

A stage = a scorer + its rules (+ optional streaming selection). A document rejected by a stage
is not scored by later stages, so cheap rules in front keep expensive models from seeing
documents that are already out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from selectd.config import ConfigError, StageConfig
from selectd.records import Document
from selectd.thresholds import Rule, first_failures
from selectd.scorers.base import Scorer, StageContext, scorer_class
from selectd.selection import Selector


@dataclass
class Stage:
    name: str
    scorer: Scorer
    rules: list[Rule]
    selector: Selector | None = None

    @classmethod
    def from_config(cls, config: StageConfig, context: StageContext = StageContext()) -> "Stage":
        scorer_type = scorer_class(config.type)
        scorer = scorer_type(config.name, scorer_type.Options.model_validate(config.options))
        scorer.attach(context)
        rules = config.rules if config.rules is not None else [Rule.model_validate(r) for r in scorer.default_rules()]
        return cls(config.name, scorer, rules, Selector(config.select) if config.select else None)

    def check_signals(self, emitted: set[str]) -> None:
        """Rules and selection must name signals the scorer emits (checked at load, not per document)."""
        wanted = {r.signal for r in self.rules} | ({self.selector.config.signal} if self.selector else set())
        if missing := wanted - emitted:
            raise ConfigError(f"stage {self.name!r}: rules name unknown signals {sorted(missing)}; "
                             f"the scorer emits {sorted(emitted)}")

    def decide(self, documents: Sequence[Document]) -> tuple[dict[str, np.ndarray], list[str | None]]:
        signals = self.scorer.run_documents(documents)
        reasons = first_failures(self.rules, signals, len(documents))
        if self.selector:
            alive = np.array([r is None for r in reasons], dtype=bool)
            if alive.any():
                lengths = np.fromiter((len(documents[i].text) for i in np.flatnonzero(alive)), dtype=np.float64)
                kept = self.selector.keep(signals[self.selector.config.signal][alive], lengths)
                for i, keep in zip(np.flatnonzero(alive), kept):
                    if not keep:
                        reasons[i] = self.selector.config.reason
        return signals, reasons


@dataclass
class Verdict:
    """What the cascade concluded about one document."""
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage -> signal -> value
    stage: str | None = None   # rejecting stage, None when accepted
    reason: str | None = None

    @property
    def accepted(self) -> bool:
        return self.stage is None


StageTimer = Callable[[str, float, int], None]


class Cascade:
    def __init__(self, stages: list[Stage]):
        self.stages = stages

    @classmethod
    def from_config(cls, configs: Sequence[StageConfig], context: StageContext = StageContext()) -> "Cascade":
        return cls([Stage.from_config(c, context) for c in configs if c.enabled])

    def versions(self) -> dict[str, dict[str, str]]:
        return {s.name: v for s in self.stages if (v := s.scorer.versions())}

    def warmup(self) -> None:
        """Warm every scorer up and check its rules against the signals it really emits."""
        for stage in self.stages:
            stage.scorer.warmup()
            stage.check_signals(stage.scorer.emitted_signals())

    def close(self) -> None:
        for stage in self.stages:
            stage.scorer.close()

    def run(self, documents: Sequence[Document], on_stage: StageTimer | None = None,
            clock: Callable[[], float] = time.perf_counter) -> list[Verdict]:
        """``on_stage(name, seconds, documents)`` after each stage, timed by ``clock`` (wall time for
        the metrics; the load test's per-stage table passes a CPU clock)."""
        verdicts = [Verdict() for _ in documents]
        alive = list(range(len(documents)))
        for stage in self.stages:
            if not alive:
                break
            began = clock()
            signals, reasons = stage.decide([documents[i] for i in alive])
            if on_stage:
                on_stage(stage.name, clock() - began, len(alive))
            # tolist() turns numpy scalars into Python ones, which orjson writes directly.
            columns = {name: np.asarray(values).tolist() for name, values in signals.items()}
            survivors = []
            for position, doc_index in enumerate(alive):
                verdict = verdicts[doc_index]
                verdict.scores[stage.name] = {name: col[position] for name, col in columns.items()}
                if reasons[position] is None:
                    survivors.append(doc_index)
                else:
                    verdict.stage, verdict.reason = stage.name, reasons[position]
            alive = survivors
        return verdicts
