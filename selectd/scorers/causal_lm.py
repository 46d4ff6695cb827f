"""Scorers ``causal_lm`` (perplexity, Min-K% Prob) and ``color_filter`` (CoLoR-Filter) on exported causal LMs.

Both run one forward pass per model per window (:mod:`selectd.models.causal_lm.model`: windows of
at most ``window`` tokens, stride ``window − 1``) and compute, from the per-token log-probabilities
lp of all the document's predicted tokens (token-weighted over its windows):

- ``causal_lm``: ``ce`` = −mean(lp) in nats, ``perplexity`` = exp(ce), ``min_k`` = Min-K% Prob
  (detect-pretrain-code): −mean of the k smallest lp with k = floor(len(lp) · ``min_k_ratio``),
  at least 1 (the reference's empty mean would be NaN); higher = more likely unseen text;
- ``color_filter``: ``color`` = mean CE under the prior − mean CE under the conditional model,
  higher = the target fine-tuning helped more = better; also ``ce_prior``, ``ce_conditional``.

Both also give ``tokens`` (predicted tokens) and ``windows``. A document of fewer than two tokens
predicts nothing: its scores are NaN, which fails any threshold. No default rules: perplexity and
CoLoR scales depend on the model, so thresholds or streaming top-1/τ selection (the stage's
``select``) are the user's. The window policy goes into every output record via :meth:`versions`.
"""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
from pydantic import Field

from selectd.models.causal_lm.model import (DEFAULT_MAX_TOKENS_PER_RUN, DEFAULT_MIN_K_RATIO, DEFAULT_WINDOW, CausalLM,
                                            DocumentLogProbs, mean_cross_entropy, min_k_prob)
from selectd.models.manifest import MANIFEST_NAME, ModelLoadError
from selectd.scorers.base import Scorer, ScorerOptions, Signals, register
from selectd.signal_kinds import SignalKind

_COUNT_KINDS = {"tokens": SignalKind.COUNT, "windows": SignalKind.COUNT}


def _counts(result: DocumentLogProbs) -> Signals:
    return {"tokens": np.array([len(lp) for lp in result.logprobs], dtype=np.float64),
            "windows": result.windows.astype(np.float64)}


class _LMOptions(ScorerOptions):
    window: int = Field(default=DEFAULT_WINDOW, ge=2, description="tokens per window; at most the model's context")
    provider: Literal["cpu", "cuda"] = "cpu"
    threads: int = Field(default=1, ge=1, description="ONNX Runtime intra-op threads")
    max_tokens_per_run: int = Field(default=DEFAULT_MAX_TOKENS_PER_RUN, ge=2, description="cap on padded tokens per ONNX Runtime call")


class CausalLMOptions(_LMOptions):
    model_dir: str = Field(description="directory written by `selectd export causal-lm`")
    min_k_ratio: float = Field(default=DEFAULT_MIN_K_RATIO, gt=0, le=1,
                               description="Min-K% Prob: share of lowest-probability tokens averaged (0.05-0.6)")


class ColorFilterOptions(_LMOptions):
    prior_model_dir: str = Field(description="the prior LM (trained on the general pool), exported")
    conditional_model_dir: str = Field(description="the prior fine-tuned on the target data, exported")


def _load(model_dir: str, options: _LMOptions) -> CausalLM:
    return CausalLM(model_dir, window=options.window, provider=options.provider, threads=options.threads,
                    max_tokens_per_run=options.max_tokens_per_run)


@register
class CausalLMScorer(Scorer):
    kind = "causal_lm"
    Options = CausalLMOptions

    @classmethod
    def signals_help(cls) -> str:
        return "ce, perplexity, min_k, tokens, windows"

    def __init__(self, name: str, options: CausalLMOptions):
        super().__init__(name, options)
        self.model = _load(options.model_dir, options)

    def score(self, texts: Sequence[str]) -> Signals:
        ratio = self.options.min_k_ratio
        result = self.model.text_logprobs(texts)
        ce = np.array([mean_cross_entropy(lp) for lp in result.logprobs])
        return {"ce": ce, "perplexity": np.exp(ce),
                "min_k": np.array([min_k_prob(lp, ratio) for lp in result.logprobs]), **_counts(result)}

    def signal_kinds(self) -> dict[str, SignalKind]:
        return {"ce": SignalKind.NATS, "perplexity": SignalKind.PERPLEXITY, "min_k": SignalKind.NATS, **_COUNT_KINDS}

    def versions(self) -> dict[str, str]:
        return {"model": self.model.manifest.version, "window_policy": self.model.policy.describe()}


@register
class ColorFilterScorer(Scorer):
    kind = "color_filter"
    Options = ColorFilterOptions

    @classmethod
    def signals_help(cls) -> str:
        return "color, ce_prior, ce_conditional, tokens, windows"

    def __init__(self, name: str, options: ColorFilterOptions):
        super().__init__(name, options)
        self.prior = _load(options.prior_model_dir, options)
        self.conditional = _load(options.conditional_model_dir, options)
        if self.prior.tokenizer_fingerprint != self.conditional.tokenizer_fingerprint:
            raise ModelLoadError(
                f"{self.conditional.manifest.directory / MANIFEST_NAME}: tokenizer differs from the prior's "
                f"({self.prior.manifest.directory / MANIFEST_NAME}); CoLoR-Filter compares per-token losses "
                f"of one tokenization, so the conditional model must be a fine-tune of the prior")

    def score(self, texts: Sequence[str]) -> Signals:
        token_ids = self.prior.encode(texts)
        prior = self.prior.document_logprobs(token_ids)
        conditional = self.conditional.document_logprobs(token_ids)
        ce_prior = np.array([mean_cross_entropy(lp) for lp in prior.logprobs])
        ce_conditional = np.array([mean_cross_entropy(lp) for lp in conditional.logprobs])
        return {"color": ce_prior - ce_conditional, "ce_prior": ce_prior, "ce_conditional": ce_conditional,
                **_counts(prior)}

    def signal_kinds(self) -> dict[str, SignalKind]:
        # color: the prior's loss minus the conditional's, a small signed difference
        return {"color": SignalKind.SCORE, "ce_prior": SignalKind.NATS, "ce_conditional": SignalKind.NATS, **_COUNT_KINDS}

    def versions(self) -> dict[str, str]:
        return {"prior": self.prior.manifest.version, "conditional": self.conditional.manifest.version,
                "window_policy": self.prior.policy.describe()}
