"""Heuristic quality scorers reproducing datatrove 0.10.1's Gopher, C4 and FineWeb filters.

Each scorer emits the filter's underlying signals; its ``default_rules()`` are datatrove's default
thresholds with datatrove's rejection reasons, so ``selectd.thresholds.first_failures`` over them gives
datatrove's decision.
"""
from selectd.scorers.heuristics.c4 import C4Quality
from selectd.scorers.heuristics.fineweb import FineWebQuality
from selectd.scorers.heuristics.gopher import GopherQuality, GopherRepetition

__all__ = ["C4Quality", "FineWebQuality", "GopherQuality", "GopherRepetition"]
