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
from selectd.models.manifest import ModelLoadError
from selectd.thresholds import Rule, first_failures
from selectd.scorers.base import Scorer, scorer_class
from selectd.selection import Selector


@dataclass
class Stage:
    name: str
    scorer: Scorer
    rules: list[Rule]
    selector: Selector | None = None
    #: key path of the stage in the config (``stages[2]``), named by errors
    path: str = ""
    #: the rules are the scorer's defaults (set by its options), not the stage's ``rules``
    default_rules: bool = False

    @classmethod
    def from_config(cls, config: StageConfig, path: str = "") -> "Stage":
        scorer_type = scorer_class(config.type)
        scorer = scorer_type(config.name, scorer_type.Options.model_validate(config.options))
        rules = config.rules if config.rules is not None else [Rule.model_validate(r) for r in scorer.default_rules()]
        return cls(config.name, scorer, rules, Selector(config.select) if config.select else None, path,
                   config.rules is None)

    def signal_problems(self, emitted: set[str]) -> list[str]:
        """Rules and selection must name signals the scorer emits (checked at load, not per document):
        one line per rule that does not, naming its key path."""
        where = self.path or self.name
        wanted = [(f"{where}.options" if self.default_rules else f"{where}.rules[{index}].signal", rule.signal)
                  for index, rule in enumerate(self.rules)]
        if self.selector:
            wanted.append((f"{where}.select.signal", self.selector.config.signal))
        missing = {signal for _, signal in wanted} - emitted
        if not missing:
            return []
        hint = self.scorer.missing_signals_hint(missing)
        return [f"{key}: {'a default rule names ' if self.default_rules else ''}{signal!r}, not a signal of stage "
                f"{self.name!r} ({self.scorer.kind}), which emits {signal_list(emitted)}" + (f"; {hint}" if hint else "")
                for key, signal in wanted if signal in missing]

    def decide(self, texts: Sequence[str]) -> tuple[dict[str, np.ndarray], list[str | None]]:
        signals = self.scorer.run(texts)
        reasons = first_failures(self.rules, signals, len(texts))
        if self.selector:
            alive = np.array([r is None for r in reasons], dtype=bool)
            if alive.any():
                lengths = np.fromiter((len(texts[i]) for i in np.flatnonzero(alive)), dtype=np.float64)
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


def signal_list(signals: set[str], shown: int = 12) -> str:
    """``a, b, c`` — or the first ``shown`` and how many there are, for scorers with hundreds."""
    names = sorted(signals)
    if len(names) <= shown:
        return ", ".join(names) or "no signals"
    return ", ".join(names[:shown]) + f", … ({len(names)} in all)"


def _option_path(index: int, config: StageConfig, message: str) -> str:
    """``stages[i].options.<key>`` of the option whose value the error names (a model directory),
    else ``stages[i].options``."""
    for key, value in config.options.items():
        if isinstance(value, str) and value and value in message:
            return f"stages[{index}].options.{key}"
    return f"stages[{index}].options"


WARMUP_TEXT = "A short English sentence, used to warm up each scorer and list the signals it emits."

StageTimer = Callable[[str, float, int], None]


class Cascade:
    def __init__(self, stages: list[Stage]):
        self.stages = stages

    @classmethod
    def from_config(cls, configs: Sequence[StageConfig]) -> "Cascade":
        """The enabled stages with their scorers loaded; a scorer that cannot be built (a model
        directory missing or damaged, options its model contradicts) is a :class:`ConfigError`
        naming the stage's key path."""
        stages: list[Stage] = []
        for index, config in enumerate(configs):
            if not config.enabled:
                continue
            try:
                stages.append(Stage.from_config(config, f"stages[{index}]"))
            except (ModelLoadError, ValueError, OSError) as exc:
                cls(stages).close()
                raise ConfigError(f"{_option_path(index, config, str(exc))}: {exc}") from None
        return cls(stages)

    def versions(self) -> dict[str, dict[str, str]]:
        return {s.name: v for s in self.stages if (v := s.scorer.versions())}

    def warmup(self) -> dict[str, set[str]]:
        """Warm every scorer up and check its rules against the signals it really emits (a
        :class:`ConfigError` lists every rule that names another); returns each stage's signals."""
        emitted: dict[str, set[str]] = {}
        problems: list[str] = []
        for stage in self.stages:
            stage.scorer.warmup()
            emitted[stage.name] = set(stage.scorer.run([WARMUP_TEXT]))
            problems += stage.signal_problems(emitted[stage.name])
        if problems:
            raise ConfigError("\n".join(problems))
        return emitted

    def close(self) -> None:
        for stage in self.stages:
            stage.scorer.close()

    def run(self, texts: Sequence[str], on_stage: StageTimer | None = None,
            clock: Callable[[], float] = time.perf_counter) -> list[Verdict]:
        """``on_stage(name, seconds, documents)`` after each stage, timed by ``clock`` (wall time for
        the metrics; the load test's per-stage table passes a CPU clock)."""
        verdicts = [Verdict() for _ in texts]
        alive = list(range(len(texts)))
        for stage in self.stages:
            if not alive:
                break
            began = clock()
            signals, reasons = stage.decide([texts[i] for i in alive])
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
