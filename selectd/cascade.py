"""The scorer cascade: stages run in configured order on the documents still alive.

A stage = a scorer + its rules (+ optional streaming selection). A document rejected by a stage
is not scored by later stages, so cheap rules in front keep expensive models from seeing
documents that are already out.

A shadow stage (``shadow = true``) scores the documents that reach it and decides as a live stage
would, but its decision is only recorded (:attr:`Verdict.shadow`): every document it sees goes on
to the next stage, and its signals stay out of :attr:`Verdict.scores`, which routes read.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from selectd.config import ConfigError, StageConfig
from selectd.models.manifest import ModelLoadError
from selectd.records import Document
from selectd.thresholds import Rule, first_failures
from selectd.scorers.base import Scorer, Signals, StageContext, scorer_class
from selectd.selection import Selector
from selectd.signal_kinds import SignalKind, kind_of


@dataclass
class Stage:
    name: str
    scorer: Scorer
    rules: list[Rule]
    selector: Selector | None = None
    shadow: bool = False
    #: the kind of each signal the scorer emits, filled in by :meth:`Cascade.warmup`
    kinds: dict[str, SignalKind] = field(default_factory=dict)
    #: key path of the stage in the config (``stages[2]``), named by errors
    path: str = ""
    #: the rules are the scorer's defaults (set by its options), not the stage's ``rules``
    default_rules: bool = False

    @classmethod
    def from_config(cls, config: StageConfig, context: StageContext = StageContext(), path: str = "") -> "Stage":
        scorer_type = scorer_class(config.type)
        scorer = scorer_type(config.name, scorer_type.Options.model_validate(config.options))
        scorer.attach(context)
        rules = config.rules if config.rules is not None else [Rule.model_validate(r) for r in scorer.default_rules()]
        return cls(config.name, scorer, rules, Selector(config.select) if config.select else None, config.shadow,
                   path=path, default_rules=config.rules is None)

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
class ShadowVerdict:
    """What a shadow stage would have decided about one document."""
    scores: dict[str, Any]     # signal -> value
    reason: str | None = None  # the rejection it would have made, None when it would accept

    @property
    def accepted(self) -> bool:
        return self.reason is None


@dataclass
class Verdict:
    """What the cascade concluded about one document."""
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # live stage -> signal -> value
    stage: str | None = None   # rejecting stage, None when accepted
    reason: str | None = None
    shadow: dict[str, ShadowVerdict] = field(default_factory=dict)  # shadow stages that scored it

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


StageTimer = Callable[[str, float, int], None]
#: ``on_signals(stage, signals)``: a stage's signal arrays over the documents it scored
SignalObserver = Callable[[str, Signals], None]


class Cascade:
    def __init__(self, stages: list[Stage]):
        self.stages = stages

    @classmethod
    def from_config(cls, configs: Sequence[StageConfig], context: StageContext = StageContext()) -> "Cascade":
        """The enabled stages with their scorers loaded; a scorer that cannot be built (a model
        directory missing or damaged, options its model contradicts) is a :class:`ConfigError`
        naming the stage's key path."""
        stages: list[Stage] = []
        for index, config in enumerate(configs):
            if not config.enabled:
                continue
            try:
                stages.append(Stage.from_config(config, context, f"stages[{index}]"))
            except (ModelLoadError, ValueError, OSError) as exc:
                cls(stages).close()
                raise ConfigError(f"{_option_path(index, config, str(exc))}: {exc}") from None
        return cls(stages)

    def versions(self) -> dict[str, dict[str, str]]:
        return {s.name: v for s in self.stages if (v := s.scorer.versions())}

    def warmup(self) -> dict[str, set[str]]:
        """Warm every scorer up, check its rules against the signals it really emits (a
        :class:`ConfigError` lists every rule that names another) and learn their kinds; returns
        each stage's signals."""
        emitted: dict[str, set[str]] = {}
        problems: list[str] = []
        for stage in self.stages:
            stage.scorer.warmup()
            probe = stage.scorer.probe_signals()
            emitted[stage.name] = set(probe)
            problems += stage.signal_problems(emitted[stage.name])
            declared = stage.scorer.signal_kinds()
            stage.kinds = {signal: kind_of(declared, signal, values) for signal, values in probe.items()}
        if problems:
            raise ConfigError("\n".join(problems))
        return emitted

    def close(self) -> None:
        for stage in self.stages:
            stage.scorer.close()

    def run(self, documents: Sequence[Document], on_stage: StageTimer | None = None,
            clock: Callable[[], float] = time.perf_counter, on_signals: SignalObserver | None = None) -> list[Verdict]:
        """``on_stage(name, seconds, documents)`` after each stage, timed by ``clock`` (wall time for
        the metrics; the load test's per-stage table passes a CPU clock); ``on_signals(name,
        signals)`` with the stage's signal arrays (the score histograms)."""
        verdicts = [Verdict() for _ in documents]
        alive = list(range(len(documents)))
        for stage in self.stages:
            if not alive:
                break
            began = clock()
            signals, reasons = stage.decide([documents[i] for i in alive])
            if on_stage:
                on_stage(stage.name, clock() - began, len(alive))
            if on_signals:
                on_signals(stage.name, signals)
            # tolist() turns numpy scalars into Python ones, which orjson writes directly.
            columns = {name: np.asarray(values).tolist() for name, values in signals.items()}
            if stage.shadow:
                for position, doc_index in enumerate(alive):
                    verdicts[doc_index].shadow[stage.name] = ShadowVerdict(
                        {name: col[position] for name, col in columns.items()}, reasons[position])
                continue  # it never rejects: the same documents reach the next stage
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
