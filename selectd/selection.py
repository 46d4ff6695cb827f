"""Streaming "keep the top fraction" selection on one signal.

Batch tools rank the whole pool and keep the top 1/τ (CoLoR-Filter) or the top 10 % of characters
(PreSelect). A stream never sees the whole pool, so two approximations are offered:

- ``window_top``: within each batch reaching the stage, keep the ⌊B·f⌋ best of its B documents
  (the batch is the window: set ``batch.max_docs`` to choose B);
- ``running_quantile``: keep a document when its score is at or above the (1 − f) weighted
  quantile of the recent history (the last ``history`` scores, current batch included), so the
  kept share converges to f over time. With ``weight = "chars"`` the quantile is over characters,
  which is PreSelect's "top 10 % by characters". The first ``warmup_docs`` documents are all kept
  (they still enter the history): a quantile of a few hundred scores is too rough to reject by.

State lives in the process: a restart or a rebalance starts a fresh history.
"""
from __future__ import annotations

from collections import deque

import numpy as np

from selectd.config import SelectionConfig

HISTORY = 100_000


class Selector:
    def __init__(self, config: SelectionConfig, history: int = HISTORY):
        self.config = config
        self._scores: deque[np.ndarray] = deque()
        self._weights: deque[np.ndarray] = deque()
        self._held = 0
        self._history = history
        self._seen = 0  # documents this selector has decided on

    def keep(self, scores: np.ndarray, char_counts: np.ndarray) -> np.ndarray:
        """Boolean mask over ``scores`` (NaN never kept)."""
        scores = np.asarray(scores, dtype=np.float64)
        weights = (np.asarray(char_counts, dtype=np.float64) if self.config.weight == "chars"
                   else np.ones(len(scores)))
        if len(scores) == 0:
            return np.zeros(0, dtype=bool)
        if self.config.method == "window_top":
            return self._window_top(scores)
        self._remember(scores, weights)
        threshold = weighted_top_threshold(np.concatenate(self._scores), np.concatenate(self._weights),
                                           self.config.keep_fraction)
        keep = scores >= threshold
        warming = max(0, min(len(scores), self.config.warmup_docs - self._seen))
        keep[:warming] = ~np.isnan(scores[:warming])
        self._seen += len(scores)
        return keep

    def _window_top(self, scores: np.ndarray) -> np.ndarray:
        keep_count = int(np.floor(len(scores) * self.config.keep_fraction))
        mask = np.zeros(len(scores), dtype=bool)
        if keep_count:
            order = np.argsort(np.where(np.isnan(scores), -np.inf, scores), kind="stable")[::-1]
            mask[order[:keep_count]] = True
        return mask & ~np.isnan(scores)

    def _remember(self, scores: np.ndarray, weights: np.ndarray) -> None:
        finite = ~np.isnan(scores)
        self._scores.append(scores[finite])
        self._weights.append(weights[finite])
        self._held += int(finite.sum())
        while self._held - len(self._scores[0]) >= self._history and len(self._scores) > 1:
            self._held -= len(self._scores.popleft())
            self._weights.popleft()


def weighted_top_threshold(scores: np.ndarray, weights: np.ndarray, fraction: float) -> float:
    """The smallest score s such that documents scoring ≥ s carry at least ``fraction`` of the weight.

    Mirrors the batch recipe: sort descending, accumulate weight until the fraction is reached,
    that document's score is the threshold.
    """
    if len(scores) == 0:
        return float("inf")
    order = np.argsort(scores, kind="stable")[::-1]
    cumulative = np.cumsum(weights[order])
    total = cumulative[-1]
    if total <= 0:
        return float("inf")
    index = int(np.searchsorted(cumulative, fraction * total, side="left"))
    return float(scores[order[min(index, len(order) - 1)]])
