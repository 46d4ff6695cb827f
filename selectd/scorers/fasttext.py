"""Scorer ``fasttext``: an exported fastText classifier (language ID, PreSelect, DCLM, Dolma taggers).

Signals:

- ``prob_<label>`` for each requested label (the label without ``__label__``, lower-cased, other
  characters as ``_``): the probability native fastText's ``predict(k=-1)`` reports;
- language ID (profile ``lid``): ``language`` (the top label's code, e.g. ``en``) and
  ``language_prob``; no per-label probabilities unless ``labels`` asks for them;
- DCLM (profile ``dclm``): ``hq_prob`` as DCLM computes it from ``predict(k=1)``: the top label's
  probability if it is the positive label, else 1 − that probability.

A document with no features (nothing left after tokenization) gets no prediction from fastText:
its probabilities are NaN (a ``min`` rule rejects it) and its language is "".
"""
from __future__ import annotations

import re
from typing import Any, Literal, Sequence

import numpy as np
from pydantic import Field

from selectd import preprocess
from selectd.models.fasttext.model import FastTextOnnx
from selectd.scorers.base import Scorer, ScorerOptions, Signals, register
from selectd.signal_kinds import SignalKind

LABEL_PREFIX = "__label__"
#: signals that only a preprocessing profile gives, by profile
PROFILE_SIGNALS = {"lid": {"language", "language_prob"}, "dclm": {"hq_prob"}}


class FastTextOptions(ScorerOptions):
    model_dir: str = Field(description="directory written by `selectd export fasttext`")
    profile: str | None = Field(default=None, description="preprocessing profile; default: the manifest's")
    labels: list[str] | None = Field(default=None, description="labels whose probability is a signal; "
                                     "default: all labels (language ID: none)")
    label: str | None = Field(default=None, description="label that `threshold` applies to "
                              "(profile dclm: the positive label, default __label__hq)")
    threshold: float | None = Field(default=None, ge=0.0, description="default rule: keep if prob(label) "
                                    "(dclm: hq_prob) >= threshold")
    languages: list[str] | None = Field(default=None, description="language ID default rule: keep if language is one of these")
    min_language_prob: float | None = Field(default=None, ge=0.0, le=1.0, description="language ID default rule")
    provider: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads")
    batch_size: int = Field(default=64, ge=1, description="documents per ONNX Runtime run")


def _qualified(label: str) -> str:
    return label if label.startswith(LABEL_PREFIX) else LABEL_PREFIX + label


def label_signal(label: str) -> str:
    """Signal name of a label's probability: ``__label__hq`` -> ``prob_hq``."""
    bare = label[len(LABEL_PREFIX):] if label.startswith(LABEL_PREFIX) else label
    return "prob_" + re.sub(r"[^0-9a-z]+", "_", bare.lower()).strip("_")


@register
class FastTextScorer(Scorer):
    kind = "fasttext"
    Options = FastTextOptions

    def __init__(self, name: str, options: FastTextOptions):
        super().__init__(name, options)
        self.model = FastTextOnnx(options.model_dir, provider=options.provider, threads=options.threads,
                                  batch_size=options.batch_size)
        self.profile_name = options.profile or self.model.profile
        self._preprocess = preprocess.profile(self.profile_name)
        self.is_lid = self.profile_name == "lid"
        self.is_dclm = self.profile_name == "dclm"
        column = {label: i for i, label in enumerate(self.model.labels)}

        def columns_of(labels: Sequence[str]) -> list[int]:
            unknown = [label for label in labels if _qualified(label) not in column]
            if unknown:
                raise ValueError(f"scorer {name!r}: labels {', '.join(unknown)} are not in {options.model_dir} "
                                 f"(labels: {', '.join(self.model.labels[:20])}{' …' if len(column) > 20 else ''})")
            return [column[_qualified(label)] for label in labels]

        requested = options.labels if options.labels is not None else ([] if self.is_lid else self.model.labels)
        self.emitted = list(zip(columns_of(requested), (label_signal(label) for label in requested)))
        decision = options.label or ("__label__hq" if self.is_dclm else None)
        self.decision_column = columns_of([decision])[0] if decision else None
        if options.threshold is not None and decision is None:
            raise ValueError(f"scorer {name!r}: threshold needs `label` (the label it applies to)")
        self.codes = np.array([label[len(LABEL_PREFIX):] if label.startswith(LABEL_PREFIX) else label
                               for label in self.model.labels] + [""], dtype=object)

    def preprocess(self, text: str) -> str:
        return self._preprocess(text)

    def score(self, texts: Sequence[str]) -> Signals:
        probs = self.model.predict(texts)
        signals: Signals = {signal: probs[:, column].astype(np.float64) for column, signal in self.emitted}
        predicted = ~np.isnan(probs[:, 0]) if len(self.model.labels) else np.zeros(len(texts), dtype=bool)
        top = np.where(predicted, np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1), len(self.model.labels))
        top_prob = np.where(predicted, probs[np.arange(len(texts)), np.minimum(top, probs.shape[1] - 1)], np.nan)
        if self.is_lid:
            signals["language"] = self.codes[top]
            signals["language_prob"] = top_prob.astype(np.float64)
        if self.is_dclm and self.decision_column is not None:
            # DCLM: predict(k=1); hq_prob = p if the top label is hq else 1 - p
            signals["hq_prob"] = np.where(top == self.decision_column, top_prob, 1.0 - top_prob).astype(np.float64)
        if self.decision_column is not None and not self.is_dclm:
            signals.setdefault(label_signal(self.model.labels[self.decision_column]),
                               probs[:, self.decision_column].astype(np.float64))
        return signals

    def signal_kinds(self) -> dict[str, SignalKind]:
        # every numeric signal is a probability; the language code is a category
        return {"language": SignalKind.CATEGORY, "language_prob": SignalKind.PROBABILITY, "hq_prob": SignalKind.PROBABILITY,
                **{label_signal(label): SignalKind.PROBABILITY for label in self.model.labels}}

    def default_rules(self) -> list[dict[str, Any]]:
        options: FastTextOptions = self.options
        rules: list[dict[str, Any]] = []
        if options.languages is not None:
            rules.append({"signal": "language", "in": list(options.languages), "reason": "language"})
        if options.min_language_prob is not None:
            rules.append({"signal": "language_prob", "min": options.min_language_prob, "reason": "language_prob"})
        if options.threshold is not None and self.decision_column is not None:
            signal = "hq_prob" if self.is_dclm else label_signal(self.model.labels[self.decision_column])
            rules.append({"signal": signal, "min": options.threshold, "reason": f"{self.name}_{signal}"})
        return rules

    def versions(self) -> dict[str, str]:
        return {"model": self.model.version, "profile": self.profile_name}

    def missing_signals_hint(self, missing: set[str]) -> str | None:
        for profile, signals in PROFILE_SIGNALS.items():
            if missing & signals and profile != self.profile_name:
                source = "options.profile" if self.options.profile else f"the manifest of {self.options.model_dir}"
                return (f"{', '.join(sorted(missing & signals))} come with profile {profile!r}, and this stage runs "
                        f"profile {self.profile_name!r} (from {source}): set options.profile = \"{profile}\", or "
                        f"export the model again with --profile {profile}")
        return None

    @classmethod
    def signals_help(cls) -> str:
        return ("prob_<label> for each label of `labels` (default: every label; language ID: none); profile lid: "
                "language, language_prob; profile dclm: hq_prob")
