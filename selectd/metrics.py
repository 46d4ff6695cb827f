"""Prometheus metrics, one registry per daemon, names per ../notes conventions.

``selectd_`` prefix, base units as suffixes, counters end in ``_total``, labels of low cardinality
only (topic, partition, stage, reason, outcome; signal, fixed by the stages' scorers). Known label
sets are initialised to zero at start so dashboards and alerts see series before the first event.
The score histograms and drift gauges come from :class:`selectd.distributions.SignalDistributions`,
a collector on the same registry.
"""
from __future__ import annotations

import collections
import time
from typing import Iterable, Mapping, Sequence

from prometheus_client import (GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR, CollectorRegistry, Counter, Gauge,
                               Histogram, Info, disable_created_metrics)

from selectd import __version__
from selectd.distributions import SignalDistributions
from selectd.records import DLQ_REASONS, Output, Record
from selectd.signal_kinds import SignalKind

BATCH_SIZE_BUCKETS = (1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000)
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OUTCOMES = ("accepted", "rejected", "dlq", "attributes")
DECISIONS = ("accepted", "rejected")

# *_created series double the exposition and no dashboard or alert of ours reads them.
disable_created_metrics()


class Progress:
    """Whether the commit loop gets through its work, for /healthz: since when work has been waiting
    (records fetched and not committed, or consumer lag) with no batch done: committed, or failed on
    something outside the loop (broker, dedup store) and given back to be retried. The loop reports;
    the HTTP thread reads."""

    def __init__(self, clock=time.monotonic):
        self._clock = clock
        self._waiting_since: float | None = None

    def update(self, waiting: bool) -> None:
        if not waiting:
            self._waiting_since = None
        elif self._waiting_since is None:
            self._waiting_since = self._clock()

    def batch_done(self) -> None:
        """A batch was committed or given back to be retried: whatever still waits has waited from now."""
        if self._waiting_since is not None:
            self._waiting_since = self._clock()

    def stalled_s(self) -> float:
        """Seconds work has waited with no batch done (0 when nothing waits)."""
        since = self._waiting_since
        return 0.0 if since is None else self._clock() - since


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        r = self.registry = registry or CollectorRegistry()
        # The standard process_* / python_* series (CPU, RSS, open fds, GC, version), as the default
        # registry has them: this registry is private, so they are added by hand.
        for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
            r.register(collector)
        self.progress = Progress()
        self.documents_in = Counter("selectd_documents_in_total", "Messages consumed, by source topic", ["topic"], registry=r)
        self.documents_out = Counter("selectd_documents_out_total", "Messages produced and acknowledged, by destination topic and outcome",
                                     ["topic", "outcome"], registry=r)
        self.rejections = Counter("selectd_rejections_total", "Documents rejected, by stage and reason", ["stage", "reason"], registry=r)
        self.dead_letters = Counter("selectd_dead_letters_total", "Messages sent to the dead-letter topic, by reason", ["reason"], registry=r)
        self.produce_failures = Counter("selectd_produce_failures_total", "Output sends that failed, by destination topic and error kind (too_large, timed_out, unavailable, ...)",
                                        ["topic", "error"], registry=r)
        self.produce_retries = Counter("selectd_produce_retries_total", "Output sends retried", registry=r)
        self.batch_size = Histogram("selectd_batch_documents", "Documents per batch", buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_latency = Histogram("selectd_batch_duration_seconds", "Wall time from batch poll to commit",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.stage_latency = Histogram("selectd_stage_duration_seconds", "Time a stage takes per batch", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.stage_documents = Counter("selectd_stage_documents_total", "Documents scored by each stage", ["stage"], registry=r)
        self.shadow_decisions = Counter("selectd_shadow_decisions_total", "Documents a shadow stage scored, by what it "
                                        "would decide (shadow) and what the live cascade decided (live)",
                                        ["stage", "shadow", "live"], registry=r)
        self.shadow_rejections = Counter("selectd_shadow_rejections_total", "Documents a shadow stage would reject, "
                                         "by reason", ["stage", "reason"], registry=r)
        self.distributions = SignalDistributions()
        r.register(self.distributions)
        self.consumer_lag = Gauge("selectd_consumer_lag_messages", "End offset minus committed offset per partition",
                                  ["topic", "partition"], registry=r)
        self.assigned_partitions = Gauge("selectd_assigned_partitions", "Partitions assigned to this member", registry=r)
        self.rebalances = Counter("selectd_rebalances_total", "Partition assignments and revocations", ["event"], registry=r)
        self.commits = Counter("selectd_commits_total", "Offset commits that succeeded", registry=r)
        self.commit_failures = Counter("selectd_commit_failures_total", "Offset commits that failed", registry=r)
        self.last_processed = Gauge("selectd_last_processed_timestamp_seconds", "Unix time the last batch was committed", registry=r)
        self.broker_up = Gauge("selectd_broker_up", "1 while the last broker operation succeeded", registry=r)
        self.ready = Gauge("selectd_ready", "1 when joined to the group with models loaded, and no batch failing (broker, dedup store)", registry=r)
        self.model_reloads = Counter("selectd_model_reloads_total", "Config/model reloads, by result", ["result"], registry=r)
        # dedup stages (selectd.scorers.dedup) and their store
        self.duplicates = Counter("selectd_duplicates_total", "Documents a dedup stage found duplicates, by stage and "
                                  "the key that matched (text, a field name, minhash)", ["stage", "key"], registry=r)
        self.dedup_store_latency = Histogram("selectd_dedup_store_duration_seconds", "Time of a dedup stage's store "
                                             "claim (one round trip per batch)", ["stage"], buckets=LATENCY_BUCKETS,
                                             registry=r)
        self.dedup_store_errors = Counter("selectd_dedup_store_errors_total", "Dedup store calls that failed (a failed "
                                          "claim leaves its batch uncommitted, to be retried)", ["stage"], registry=r)
        self.dedup_store_documents = Gauge("selectd_dedup_store_documents", "Documents in the dedup store (Redis: "
                                           "every replica's)", registry=r)
        self.dedup_store_keys = Gauge("selectd_dedup_store_keys", "Keys in the dedup store", registry=r)
        self.dedup_store_bytes = Gauge("selectd_dedup_store_bytes", "Dedup store size by medium: memory (local stores: "
                                       "this process's index or filter; Redis: the server's used_memory), disk "
                                       "(local stores' files)", ["medium"], registry=r)
        self.build_info = Info("selectd_build", "Version of selectd", registry=r)
        self.config_info = Info("selectd_config", "Digest of the effective config and model versions", registry=r)
        self.build_info.info({"version": __version__})
        for reason in DLQ_REASONS:
            self.dead_letters.labels(reason)
        for event in ("assigned", "revoked"):
            self.rebalances.labels(event)
        for result in ("success", "failure"):
            self.model_reloads.labels(result)
        self.broker_up.set(0)
        self.ready.set(0)

    def declare_topics(self, input_topics: list[str], outputs: dict[str, str]) -> None:
        for topic in input_topics:
            self.documents_in.labels(topic)
        for outcome, topic in outputs.items():
            self.documents_out.labels(topic, outcome)

    def declare_stages(self, stages: list[str]) -> None:
        for stage in stages:
            self.stage_latency.labels(stage)
            self.stage_documents.labels(stage)

    def declare_signals(self, stage: str, kinds: Mapping[str, SignalKind], shadow: bool) -> list[str]:
        """Score histograms (and drift) for a stage's signals; a shadow stage's agreement counters.
        Returns why some signals have no drift reference."""
        if shadow:
            for would in DECISIONS:
                for live in DECISIONS:
                    self.shadow_decisions.labels(stage, would, live)
        return self.distributions.declare(stage, kinds)

    def observe_stage(self, stage: str, seconds: float, documents: int) -> None:
        self.stage_latency.labels(stage).observe(seconds)
        self.stage_documents.labels(stage).inc(documents)

    def declare_dedup_stage(self, stage: str, keys: Sequence[str]) -> None:
        for key in keys:
            self.duplicates.labels(stage, key)
        self.dedup_store_latency.labels(stage)
        self.dedup_store_errors.labels(stage)

    def observe_dedup(self, stage: str, claim_seconds: float, duplicates_by_key: dict[str, int]) -> None:
        self.dedup_store_latency.labels(stage).observe(claim_seconds)
        for key, count in duplicates_by_key.items():
            self.duplicates.labels(stage, key).inc(count)

    def set_dedup_store_size(self, documents: int, keys: int, memory_bytes: int, disk_bytes: int) -> None:
        self.dedup_store_documents.set(documents)
        self.dedup_store_keys.set(keys)
        self.dedup_store_bytes.labels("memory").set(memory_bytes)
        self.dedup_store_bytes.labels("disk").set(disk_bytes)

    def count_shadow(self, decisions: Mapping[tuple[str, str | None, bool], int]) -> None:
        """Shadow-stage agreement: ``decisions[(stage, reason it would reject for or None, live
        accepted)]`` documents of one batch."""
        for (stage, reason, live_accepted), count in decisions.items():
            self.shadow_decisions.labels(stage, "rejected" if reason else "accepted",
                                         "accepted" if live_accepted else "rejected").inc(count)
            if reason:
                self.shadow_rejections.labels(stage, reason).inc(count)

    def mark_processed(self) -> None:
        self.last_processed.set(time.time())

    def count_consumed(self, records: Iterable[Record]) -> None:
        """Count input messages read, by source topic (one ``inc`` per topic)."""
        for topic, count in collections.Counter(record.topic for record in records).items():
            self.documents_in.labels(topic).inc(count)

    def count_delivered(self, outputs: Sequence[Output]) -> None:
        """Count outputs the sink has confirmed (Kafka: acknowledged by the broker).

        Aggregated per label set first: one ``inc`` per series instead of one per document."""
        by_destination = collections.Counter((out.topic, out.outcome) for out in outputs)
        rejected = collections.Counter((out.stage, out.reason) for out in outputs if out.outcome == "rejected")
        dead = collections.Counter(out.reason for out in outputs if out.outcome == "dlq")
        for (topic, outcome), count in by_destination.items():
            self.documents_out.labels(topic, outcome).inc(count)
        for (stage, reason), count in rejected.items():
            self.rejections.labels(stage, reason).inc(count)
        for reason, count in dead.items():
            self.dead_letters.labels(reason).inc(count)

    def totals(self, family: str, labels: tuple[str, ...]) -> dict[str, float]:
        """Non-zero sample values of a counter family, summed by the given labels (joined by '/')."""
        out: dict[str, float] = {}
        for metric in self.registry.collect():
            for sample in metric.samples:
                if sample.name == family and sample.value:
                    key = "/".join(sample.labels[label] for label in labels)
                    out[key] = out.get(key, 0) + sample.value
        return out
