"""What kind of quantity a scorer signal is, and the histogram buckets that suit each kind.

Each scorer declares its signals' kinds (:meth:`selectd.scorers.base.Scorer.signal_kinds`); the
kind picks the bucket upper bounds of the signal's score histogram (``selectd_signal_value``) and
the bins of its drift distance (:mod:`selectd.distributions`). Probabilities need resolution
across [0, 1], word counts and perplexities span orders of magnitude: one bucket set would suit
none of them.
"""
from __future__ import annotations

from enum import Enum

import numpy as np


class SignalKind(str, Enum):
    PROBABILITY = "probability"  # in [0, 1]: probabilities, shares, fractions, 0/1 flags
    COUNT = "count"              # non-negative and long-tailed: words, lines, characters, tokens
    LENGTH = "length"            # a mean length in characters (mean word length)
    PERPLEXITY = "perplexity"    # >= 1 and long-tailed
    NATS = "nats"                # log-losses in nats: cross-entropy, Min-K% Prob
    SCORE = "score"              # real, either sign, mostly within ±10: differences, ordinal heads
    CATEGORY = "category"        # strings (language codes, labels): no histogram, no drift


def _one_two_five(low_exponent: int, high_exponent: int) -> list[float]:
    return [m * 10.0 ** e for e in range(low_exponent, high_exponent) for m in (1, 2, 5)]


#: upper bounds (Prometheus ``le``) of each numeric kind's buckets; +Inf is implied
BUCKETS: dict[SignalKind, np.ndarray] = {kind: np.array(edges, dtype=np.float64) for kind, edges in {
    SignalKind.PROBABILITY: [0.01, *np.round(np.arange(0.05, 0.951, 0.05), 2), 0.99, 1.0],
    SignalKind.COUNT: [0.0, *_one_two_five(0, 6), 1e6],
    SignalKind.LENGTH: [1.0, *np.arange(2.0, 8.01, 0.5), 9.0, 10.0, 12.0, 15.0, 20.0, 50.0],
    SignalKind.PERPLEXITY: [1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
                            1e3, 2e3, 5e3, 1e4, 1e5],
    SignalKind.NATS: [*np.arange(0.5, 6.01, 0.5), 7.0, 8.0, 9.0, 10.0, 12.0, 15.0, 20.0],
    SignalKind.SCORE: [-10.0, -5.0, -3.0, -2.0, -1.0, -0.5, -0.25, -0.1, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0],
}.items()}


def kind_of(declared: dict[str, SignalKind], signal: str, values: np.ndarray) -> SignalKind:
    """The declared kind; a signal its scorer did not declare (a plugin's) is a category when its
    values are strings, else a :attr:`SignalKind.SCORE`."""
    if signal in declared:
        return declared[signal]
    return SignalKind.CATEGORY if np.asarray(values).dtype == object else SignalKind.SCORE

