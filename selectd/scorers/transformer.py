"""Scorer ``transformer``: an exported Hugging Face classifier (Celadon, Detoxify, quality) on ONNX Runtime.

Signals, by the model's task (labels / heads come from its manifest; names are lower-cased with
runs of other characters turned into ``_``, so "Race/Origin" is ``race_origin``):

- multilabel (Detoxify): one probability per label (sigmoid) and ``flagged`` = 1.0 when any
  label reaches its threshold (``thresholds``, default 0.5);
- multiclass: ``label`` (str), ``probability`` of that label and ``p_<label>`` for every label;
- multihead (Celadon): each head's class score (0..3), ``score_sum`` and, for Celadon's five
  heads of four classes, ``decision`` in none / mild / toxic.

Every task also yields ``tokens`` (the document's length in tokens), ``windows`` (sequences run)
and ``coverage`` (share of the tokens that were scored): under the ``truncate`` policy a long
document has coverage below 1, so a first-512-token score is never mistaken for a whole-document
score. The policy itself is in :meth:`versions`, which goes into every output record.
"""
from __future__ import annotations

import re
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field, model_validator

from selectd import preprocess
from selectd.models.transformer.model import (
    CELADON_CLASSES, CELADON_HEADS, DEFAULT_MAX_PADDING, HFClassifier, LongDocumentPolicy, aggregate, celadon_decision,
)
from selectd.scorers.base import Scorer, ScorerOptions, Signals, register
from selectd.signal_kinds import SignalKind


class TransformerOptions(ScorerOptions):
    model_dir: str = Field(description="directory written by `selectd export hf`")
    provider: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads")
    precision: Literal["fp32", "int8"] | None = Field(default=None, description="default: the manifest's (int8 when exported with --quantize int8)")
    max_tokens_per_run: int = Field(default=8192, ge=1, description="cap on padded tokens per ONNX Runtime call")
    max_padding: float = Field(default=DEFAULT_MAX_PADDING, ge=0.0, le=1.0,
                               description="share of a run's tokens that may be padding (1: only the token cap splits runs)")
    long_documents: Literal["truncate", "window_max", "window_mean"] = Field(
        default="truncate", description="truncate: first max_length tokens; window_*: overlapping windows, max or mean")
    window_overlap: int = Field(default=64, ge=0, description="tokens shared by consecutive windows")
    max_windows: int = Field(default=64, ge=1, description="windows per document at most (coverage says what was left)")
    thresholds: dict[str, float] = Field(default_factory=dict, description="multilabel: per-label flag threshold (default 0.5)")

    @model_validator(mode="after")
    def _thresholds_are_probabilities(self) -> "TransformerOptions":
        for label, value in self.thresholds.items():
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold for {label!r} is {value}, not a probability in [0, 1]")
        return self


def signal_name(label: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")


@register
class TransformerScorer(Scorer):
    kind = "transformer"
    Options = TransformerOptions

    @classmethod
    def signals_help(cls) -> str:
        return ("by the model's task: multilabel: one probability per label, flagged; multiclass: label, probability, "
                "p_<label>; multihead: each head's score, score_sum (Celadon: decision); always tokens, windows, coverage")

    def __init__(self, name: str, options: TransformerOptions):
        super().__init__(name, options)
        self.model = HFClassifier(options.model_dir, precision=options.precision, provider=options.provider,
                                  threads=options.threads, max_tokens_per_run=options.max_tokens_per_run,
                                  max_padding=options.max_padding)
        self._preprocess = preprocess.profile(self.model.preprocessing)
        self.policy: LongDocumentPolicy = options.long_documents
        self.is_celadon = (self.model.task == "multihead" and len(self.model.heads) == len(CELADON_HEADS)
                           and self.model.classes == CELADON_CLASSES)
        unknown = set(options.thresholds) - set(self.model.labels)
        if unknown:
            raise ValueError(f"thresholds for labels the model does not have: {', '.join(sorted(unknown))} "
                             f"(labels: {', '.join(self.model.labels) or 'none, task ' + self.model.task})")
        self.thresholds = np.array([options.thresholds.get(label, 0.5) for label in self.model.labels])

    def preprocess(self, text: str) -> str:
        return self._preprocess(text)

    def score(self, texts: Sequence[str]) -> Signals:
        options: TransformerOptions = self.options
        windows = self.model.windows(texts, self.policy, options.window_overlap, options.max_windows)
        logits = self.model.run_sequences(windows.sequences)
        outputs = aggregate(self.model.task, logits, windows.owner, len(texts), self.policy)
        signals: Signals = {
            "tokens": windows.tokens.astype(np.float64),
            "windows": np.bincount(windows.owner, minlength=len(texts)).astype(np.float64),
            "coverage": np.divide(windows.scored, windows.tokens, out=np.ones(len(texts)), where=windows.tokens > 0),
        }
        if self.model.task == "multilabel":
            for column, label in enumerate(self.model.labels):
                signals[signal_name(label)] = outputs[:, column]
            signals["flagged"] = (outputs >= self.thresholds).any(axis=1).astype(np.float64)
        elif self.model.task == "multiclass":
            best = outputs.argmax(axis=1)
            signals["label"] = np.array([self.model.labels[i] for i in best], dtype=object)
            signals["probability"] = outputs[np.arange(len(texts)), best]
            for column, label in enumerate(self.model.labels):
                signals[f"p_{signal_name(label)}"] = outputs[:, column]
        else:
            for column, head in enumerate(self.model.heads):
                signals[signal_name(head)] = outputs[:, column]
            signals["score_sum"] = outputs.sum(axis=1)
            if self.is_celadon:
                signals["decision"] = celadon_decision(outputs)
        return signals

    def signal_kinds(self) -> dict[str, SignalKind]:
        kinds = {"tokens": SignalKind.COUNT, "windows": SignalKind.COUNT, "coverage": SignalKind.PROBABILITY}
        if self.model.task == "multilabel":
            kinds.update({signal_name(label): SignalKind.PROBABILITY for label in self.model.labels})
            kinds["flagged"] = SignalKind.PROBABILITY  # a 0/1 flag
        elif self.model.task == "multiclass":
            kinds.update({f"p_{signal_name(label)}": SignalKind.PROBABILITY for label in self.model.labels})
            kinds.update(label=SignalKind.CATEGORY, probability=SignalKind.PROBABILITY)
        else:  # multihead: each head's expected class index (Celadon: 0-3), their sum, Celadon's decision
            kinds.update({signal_name(head): SignalKind.SCORE for head in self.model.heads})
            kinds.update(score_sum=SignalKind.SCORE, decision=SignalKind.CATEGORY)
        return kinds

    def default_rules(self) -> list[dict[str, Any]]:
        if self.model.task == "multilabel":
            return [{"signal": "flagged", "max": 0.0, "reason": f"{self.name}_flagged"}]
        if self.is_celadon:
            return [{"signal": "decision", "in": ["none", "mild"], "reason": "toxic"}]
        return []

    def versions(self) -> dict[str, str]:
        options: TransformerOptions = self.options
        policy = f"{self.policy} max_length={self.model.max_length}"
        if self.policy != "truncate":
            policy += f" overlap={options.window_overlap} max_windows={options.max_windows}"
        return {"model": self.model.manifest.version, "precision": self.model.precision, "long_documents": policy}
