"""Score distributions per stage and signal: histograms, reference profiles and drift.

A stage's numeric signals are grouped by kind (the kind picks the bucket bounds,
:data:`selectd.signal_kinds.BUCKETS`). Values are bucketed in one vectorised pass per group (its
signals stacked as rows: one ``searchsorted`` and one ``bincount`` for all of them) once at least
:data:`BUCKET_DOCS` documents are waiting, or at a scrape: about ten microseconds per pass plus a
few nanoseconds per value, instead of one ``Histogram.observe`` per document and signal. Small
batches are copied and wait, so a one-document batch costs a copy, not a pass.
:class:`SignalDistributions` is a Prometheus collector exposing them as ``selectd_signal_value``
(labels ``stage``, ``signal``). NaN values (a fastText document without features, a ratio over an
empty text) are left out of the histograms. Categorical signals have no histogram.

Drift, when enabled, compares each signal's live distribution with a reference by the population
stability index

    PSI = sum over bins of (live_i - ref_i) * ln(live_i / ref_i)

over the histogram's buckets (+Inf included) plus one bin for NaN values, where ``live_i`` and
``ref_i`` are the bins' shares after adding 0.5 to every bin's count (so an empty bin stays
finite). The reference is a profile file (``selectd score --profile``: the histograms of a sample
run) or the first ``reference_docs`` documents the stage scores after start; the live window is
the most recently bucketed values holding at least ``window_docs`` documents (it moves by the
bucketed chunk: a batch, or small batches gathered; a chunk leaves once the newer ones alone hold
that many). ``selectd_signal_drift`` is exported once both are full, next to
``selectd_signal_drift_bound``, the configured bound the alert compares it with. Under 0.1 is
usually read as stable and above 0.25 as a shift; two samples of one distribution over B occupied
bins give about (B - 1) * (1/reference + 1/window) by chance.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import numpy as np
from prometheus_client.metrics_core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString

from selectd.signal_kinds import BUCKETS, SignalKind

PROFILE_FORMAT = "selectd-profile/1"
#: documents a group gathers before bucketing them (a scrape buckets whatever waits)
BUCKET_DOCS = 256
#: added to every bin's count before shares are taken
SMOOTHING = 0.5


@dataclass(frozen=True)
class DriftSettings:
    """``[drift]`` as plain numbers (metrics sit below the config in the layout)."""
    reference_docs: int
    window_docs: int
    bound: float


def psi(reference: np.ndarray, live: np.ndarray) -> np.ndarray:
    """Population stability index of bin-count rows (one per signal), each bin smoothed by
    :data:`SMOOTHING`."""
    ref = (reference + SMOOTHING) / (reference.sum(axis=-1, keepdims=True) + SMOOTHING * reference.shape[-1])
    cur = (live + SMOOTHING) / (live.sum(axis=-1, keepdims=True) + SMOOTHING * live.shape[-1])
    return ((cur - ref) * np.log(cur / ref)).sum(axis=-1)


class _Group:
    """The numeric signals of one kind of one stage: a row each in every table.

    ``counts[:, i]`` for bucket i (``len(edges)`` is +Inf), ``counts[:, -1]`` NaN values."""

    def __init__(self, kind: SignalKind, signals: list[str]):
        self.kind = kind
        self.signals = signals
        self.edges = BUCKETS[kind]
        self.bins = len(self.edges) + 2
        self.offsets = (np.arange(len(signals)) * self.bins)[:, None]
        self.counts = np.zeros((len(signals), self.bins), dtype=np.int64)
        self.sums = np.zeros(len(signals))
        self.drift: _Drift | None = None
        self.waiting: list[list[np.ndarray]] = []  # per batch, a row per signal, not bucketed yet
        self.waiting_docs = 0

    def add(self, rows: list[np.ndarray]) -> None:
        """Queue one batch's values (a row per signal); bucket once enough documents wait."""
        self.waiting.append(rows)
        self.waiting_docs += len(rows[0])
        if self.waiting_docs >= BUCKET_DOCS:
            self.flush()

    def flush(self) -> None:
        """Bucket the waiting values into the histograms (and the drift reference or window)."""
        if not self.waiting:
            return
        columns = self.waiting[0] if len(self.waiting) == 1 else [np.concatenate(c) for c in zip(*self.waiting)]
        values = np.vstack(columns).astype(np.float64, copy=False)
        self.waiting.clear()
        self.waiting_docs = 0
        counts, sums = self.bucket(values)
        self.counts += counts
        self.sums += sums
        if self.drift is not None:
            self.drift.add(self, counts, values)

    def bucket(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(bin counts per signal, sum of the non-NaN values per signal) of a (signals, documents) array."""
        sums = values.sum(axis=1)
        # side="left": a value equal to an upper bound belongs to that bucket (Prometheus' le)
        index = np.searchsorted(self.edges, values, side="left")
        total = sums.sum()
        if total != total:  # a NaN somewhere
            missing = np.isnan(values)
            index[missing] = self.bins - 1
            sums = np.where(missing, 0.0, values).sum(axis=1)
        counts = np.bincount((index + self.offsets).ravel(), minlength=self.counts.size).reshape(self.counts.shape)
        return counts, sums


class _Drift:
    """A group's reference and live window (every signal of a group sees the same documents)."""

    def __init__(self, settings: DriftSettings, shape: tuple[int, int], reference: np.ndarray | None):
        self.settings = settings
        self.reference = reference            # None while the first reference_docs are still coming
        self.learned = np.zeros(shape, dtype=np.int64)
        self.learned_docs = 0
        self.window: deque[tuple[np.ndarray, int]] = deque()
        self.window_docs = 0

    def add(self, group: _Group, counts: np.ndarray, values: np.ndarray) -> None:
        n = values.shape[1]
        if self.reference is None:
            need = self.settings.reference_docs - self.learned_docs
            if n < need:
                self.learned += counts
                self.learned_docs += n
                return
            # this batch completes the reference: its first `need` documents go there, the rest to the window
            head = group.bucket(values[:, :need])[0]
            self.reference = self.learned + head
            self.learned_docs += need
            counts, n = counts - head, n - need
            if not n:
                return
        self.window.append((counts, n))
        self.window_docs += n
        while self.window_docs - self.window[0][1] >= self.settings.window_docs:
            self.window_docs -= self.window.popleft()[1]

    def distances(self) -> np.ndarray | None:
        if self.reference is None or self.window_docs < self.settings.window_docs:
            return None
        return psi(self.reference, sum(counts for counts, _ in self.window))


class SignalDistributions:
    """Prometheus collector of the score histograms and drift gauges (register it on a registry).

    ``observe`` runs on the pipeline's thread, ``collect`` on the HTTP server's; one lock guards
    the groups' tables."""

    def __init__(self) -> None:
        self._groups: dict[str, list[_Group]] = {}
        self._lock = threading.Lock()
        self._drift: DriftSettings | None = None
        self._reference: Mapping[str, Any] | None = None  # a profile's stages, when drift has a file

    def enable_drift(self, settings: DriftSettings, profile: Mapping[str, Any] | None = None) -> None:
        """Track drift of the stages declared from now on; ``profile`` (a :meth:`profile` dict) gives
        the references, else each stage learns its own from its first ``reference_docs`` documents."""
        if profile is not None and profile.get("format") != PROFILE_FORMAT:
            raise ValueError(f"not a selectd profile (format {profile.get('format')!r}, expected {PROFILE_FORMAT!r})")
        self._drift = settings
        self._reference = profile["stages"] if profile is not None else None

    def declare(self, stage: str, kinds: Mapping[str, SignalKind]) -> list[str]:
        """Histograms for a stage's numeric signals, kept across reloads while the stage emits the
        same signals of the same kinds. Returns why some signals have no drift reference (missing
        from, or bucketed unlike, the profile file)."""
        by_kind: dict[SignalKind, list[str]] = {}
        for signal, kind in kinds.items():
            if kind is not SignalKind.CATEGORY:
                by_kind.setdefault(kind, []).append(signal)
        current = {(g.kind, tuple(g.signals)): g for g in self._groups.get(stage, [])}
        groups = [current.get((kind, tuple(signals))) or _Group(kind, signals) for kind, signals in by_kind.items()]
        problems: list[str] = []
        for group in groups:
            if self._drift is not None and group.drift is None:
                reference = self._reference_for(stage, group, problems)
                if reference is not False:
                    group.drift = _Drift(self._drift, group.counts.shape, reference)
        with self._lock:
            self._groups[stage] = groups
        return problems

    def _reference_for(self, stage: str, group: _Group, problems: list[str]) -> np.ndarray | None | bool:
        """The group's reference rows from the profile file (None: learn them; False: no drift)."""
        if self._reference is None:
            return None
        rows = []
        for signal in group.signals:
            entry = self._reference.get(stage, {}).get(signal)
            if entry is None:
                problems.append(f"{stage}.{signal} is not in the drift reference profile")
            elif entry.get("kind") != group.kind.value or not np.array_equal(entry.get("le"), group.edges):
                problems.append(f"{stage}.{signal} was profiled as {entry.get('kind')!r} with other buckets than "
                                f"its {group.kind.value!r} histogram; profile again with this version")
            else:
                rows.append([*entry["counts"], entry["nan"]])
        return np.array(rows, dtype=np.int64) if len(rows) == len(group.signals) else False

    def observe(self, stage: str, signals: Mapping[str, np.ndarray]) -> None:
        """Add one batch of a stage's signals (over the documents that reached it) to its histograms."""
        for group in self._groups.get(stage, ()):
            rows = [signals[name] for name in group.signals]
            if len(rows[0]) < BUCKET_DOCS:
                rows = [np.array(row, dtype=np.float64) for row in rows]  # it waits: not the scorer's array
            with self._lock:
                group.add(rows)

    def _flush(self) -> None:
        for groups in self._groups.values():
            for group in groups:
                group.flush()

    def drift(self) -> dict[tuple[str, str], float]:
        """PSI of every signal whose reference and window are full, by (stage, signal)."""
        out = {}
        with self._lock:
            self._flush()
            for stage, groups in self._groups.items():
                for group in groups:
                    distances = group.drift.distances() if group.drift is not None else None
                    if distances is not None:
                        out.update({(stage, signal): float(d) for signal, d in zip(group.signals, distances)})
        return out

    def profile(self, config_digest: str = "") -> dict[str, Any]:
        """The histograms as a reference profile (what ``selectd score --profile`` writes)."""
        stages: dict[str, dict[str, Any]] = {}
        with self._lock:
            self._flush()
            for stage, groups in self._groups.items():
                for group in groups:
                    for signal, row, total in zip(group.signals, group.counts.tolist(), group.sums.tolist()):
                        stages.setdefault(stage, {})[signal] = {
                            "kind": group.kind.value, "le": group.edges.tolist(), "counts": row[:-1], "nan": row[-1],
                            "documents": sum(row[:-1]), "sum": total}
        return {"format": PROFILE_FORMAT, "config": config_digest, "stages": stages}

    def collect(self) -> Iterator[Metric]:
        histograms = HistogramMetricFamily("selectd_signal_value", "Signal values of the documents each stage "
                                           "scored (NaN left out); buckets by the signal's kind",
                                           labels=["stage", "signal"])
        drift = GaugeMetricFamily("selectd_signal_drift", "Population stability index of the signal's recent "
                                  "values against its reference", labels=["stage", "signal"])
        bound = GaugeMetricFamily("selectd_signal_drift_bound", "Drift above this fires SelectdScoreDrift "
                                  "([drift] bound)", labels=["stage", "signal"])
        distances = self.drift()
        with self._lock:
            for stage, groups in self._groups.items():
                for group in groups:
                    les = [floatToGoString(le) for le in group.edges.tolist()] + ["+Inf"]
                    for signal, row, total in zip(group.signals, group.counts[:, :-1].cumsum(axis=1).tolist(),
                                                  group.sums.tolist()):
                        histograms.add_metric([stage, signal], list(zip(les, row)), total)
                        if group.drift is not None:
                            bound.add_metric([stage, signal], group.drift.settings.bound)
                        if (stage, signal) in distances:
                            drift.add_metric([stage, signal], distances[(stage, signal)])
        yield histograms
        yield drift
        yield bound
