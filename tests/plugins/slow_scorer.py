"""A scorer plugin for tests: sleeps on chosen batches to simulate a slow model."""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from selectd.scorers.base import Scorer, ScorerOptions, register


class SlowOptions(ScorerOptions):
    sleep_s: float = 0.0
    every_nth_batch: int = 1


@register
class SlowScorer(Scorer):
    kind = "test_slow"
    Options = SlowOptions

    def __init__(self, name, options):
        super().__init__(name, options)
        self.batches = 0

    def warmup(self) -> None:
        pass

    def score(self, texts: Sequence[str]) -> dict[str, np.ndarray]:
        self.batches += 1
        if self.batches % self.options.every_nth_batch == 0:
            time.sleep(self.options.sleep_s)
        return {"chars": np.array([len(t) for t in texts], dtype=np.float64)}
