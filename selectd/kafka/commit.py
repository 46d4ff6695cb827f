"""The commit protocol: at-least-once delivery from input topics to output topics.

One batch in flight, the next one read meanwhile:

1. **poll** a batch bounded by count, bytes and linger time (``Source.poll_batch``);
2. **process and deliver** it on a worker thread: parse → cascade → router → produce, then wait
   until the broker acknowledged every output (``Sink.deliver``). Meanwhile the main thread
   polls the *next* batch (so fetching overlaps processing, and the member keeps polling), then,
   once the batch has taken a quarter of ``max_poll_interval_ms`` (at most 2 s), keeps polling with
   all partitions paused, so a slow model never exceeds ``max_poll_interval_ms`` and gets the
   member evicted;
3. **commit** offsets (last offset + 1 per partition) only after step 2 succeeded, and only for
   partitions this member still owns; then hand the next batch to the worker. Batches are
   committed strictly in order, and a read-ahead batch is never committed before it is delivered.

Consequences:
- A crash (even kill -9) at any point loses nothing: uncommitted input is read again by whoever
  owns the partition next. Duplicates are bounded by the one in-flight batch.
- If a batch cannot be finished for now (:class:`~selectd.records.RetriableBatchError`: delivery
  failed with the broker down or the DLQ failing, the commit failed, a dedup store was unreachable
  or its disk full), it is not committed: the consumer seeks back to the batch start (the
  read-ahead batch is dropped with it) and retries after a capped exponential backoff; the daemon
  never exits for that, it reports not-ready until a batch commits again.
- A rebalance during a batch (kafka-python 3.0 runs the listener on its network thread, where a
  blocking commit is impossible) only shrinks the owned set (``Source.owned``): outputs for revoked partitions are
  still delivered, their offsets are not committed, and the new owner re-reads them — duplicates,
  never loss. A read-ahead batch loses its records of revoked partitions before it starts.
- SIGHUP: between batches, load the new config and models on the worker thread (polling paused
  partitions meanwhile, so the member stays in the group), warm them up, then swap. A failed
  reload keeps the running pipeline. Kafka connection settings need a restart and are ignored.
- SIGTERM / SIGINT: stop polling, finish and deliver the in-flight batch, commit, leave the group,
  exit 0 (a read-ahead batch not started yet stays uncommitted, for the next owner). If that
  takes longer than ``delivery.drain_timeout_s`` the batch is abandoned uncommitted and the exit
  code is 3 (at-least-once still holds).

Between batches the loop also refreshes the lag gauges (every ``metrics.lag_interval_s``),
readiness, and what /healthz reads (:class:`selectd.metrics.Progress`: since when work has waited
with no batch done, committed or given up to be retried), and logs a progress line (every ``logging.progress_interval_s``: documents in, outputs
by outcome, input rate since the previous line).

The loop sees the source only through :class:`selectd.kafka.base.Source` (``(topic, partition)``
pairs, plain offsets, :class:`~selectd.kafka.base.BrokerError`) and the sink through
:class:`selectd.sinks.base.Sink`, so any Kafka client that provides both runs under this protocol.
"""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

from selectd import exits
from selectd.config import Config
from selectd.kafka.base import BrokerError, CommitFailed, Partition, Source, next_backoff
from selectd.metrics import Metrics
from selectd.pipeline import Pipeline
from selectd.records import Record, RetriableBatchError
from selectd.sinks.base import DeliveryError, Sink

log = logging.getLogger("selectd.commit")


class DrainTimeout(Exception):
    pass


def offsets_to_commit(records: list[Record], owned: set[Partition]) -> dict[Partition, int]:
    """Next offset to read per owned partition of the batch (Kafka commits the *next* offset)."""
    highest: dict[Partition, int] = {}
    for record in records:
        key = (record.topic, record.partition)
        if record.offset >= highest.get(key, -1):
            highest[key] = record.offset
    return {key: offset + 1 for key, offset in highest.items() if key in owned}


@dataclass(slots=True)
class InFlightBatch:
    """A batch handed to the worker thread: processed, delivered, not yet committed."""
    records: list[Record]
    future: Future
    started: float  # perf_counter() at submit


class CommitLoop:
    """``build_pipeline`` loads the config and models again for a reload (SIGHUP); without it a
    reload request is ignored."""

    def __init__(self, config: Config, pipeline: Pipeline, source: Source, sink: Sink, metrics: Metrics,
                 build_pipeline: Callable[[], Pipeline] | None = None):
        self.config = config
        self.pipeline = pipeline
        self.source = source
        self.sink = sink
        self.metrics = metrics
        self.stop = threading.Event()
        self.drain_deadline: float | None = None
        self.committed: dict[Partition, int] = {}
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="selectd-batch")
        self._backoff = 0.0
        self._broker_up = True
        self._batches_ok = True  # False from a failed batch until one commits
        self._next_lag_update = 0.0
        self._lag = 0.0  # messages behind on the owned partitions, at the last refresh
        self._next_progress = 0.0
        self._progress_mark: tuple[float, float] | None = None  # (monotonic time, documents in) of the last line
        self.reload_requested = threading.Event()
        self.build_pipeline = build_pipeline

    def request_stop(self) -> None:
        if not self.stop.is_set():
            self.drain_deadline = time.monotonic() + self.config.delivery.drain_timeout_s
            self.stop.set()

    # --- one batch ------------------------------------------------------------------------------
    def _process_and_deliver(self, records: list[Record]) -> None:
        outputs = self.pipeline.process(records)
        self.sink.deliver(outputs)

    def _wait_keeping_alive(self, future: Future) -> None:
        """Wait for ``future``; once it has taken :meth:`_keep_alive_after_s`, poll paused partitions
        every quarter second so the member stays in the group and serves rebalances."""
        keep_alive_from = time.monotonic() + self._keep_alive_after_s()
        while True:
            try:
                future.result(timeout=0.25)
                return
            except TimeoutError:
                pass
            if self.drain_deadline is not None and time.monotonic() > self.drain_deadline:
                raise DrainTimeout()
            if time.monotonic() >= keep_alive_from:
                self.source.keep_alive()

    def _keep_alive_after_s(self) -> float:
        """A quarter of ``max_poll_interval_ms``, at most 2 s: well inside the poll interval, and
        batches shorter than that never pause. Pausing is what costs: both clients drop what they
        prefetched for a paused partition and fetch it again after the resume (measured with a
        keep-alive from 0.25 s: the cascade's broker CPU doubled in some runs, the daemon up to 45 %
        slower). A rebalance waits at most this long for a member in a batch."""
        return min(self.config.kafka.max_poll_interval_ms / 4000, 2.0)

    def submit(self, records: list[Record]) -> InFlightBatch:
        """Start processing and delivering ``records`` on the worker thread; the caller may poll meanwhile."""
        return InFlightBatch(records, self._worker.submit(self._process_and_deliver, records), time.perf_counter())

    def complete(self, batch: InFlightBatch) -> None:
        """Wait (polling paused partitions) until ``batch`` is delivered, then commit its owned partitions.
        Raises what delivery or the commit raised: the batch is then not committed."""
        try:
            self._wait_keeping_alive(batch.future)
        finally:
            self.source.resume()
        offsets = offsets_to_commit(batch.records, self.source.owned())
        if offsets:
            try:
                self.source.commit(offsets)
            except CommitFailed:
                self.metrics.commit_failures.inc()
                raise
            self.metrics.commits.inc()
            self.committed.update(offsets)
        self.metrics.progress.batch_done()
        elapsed = time.perf_counter() - batch.started
        self.metrics.batch_size.observe(len(batch.records))
        self.metrics.batch_latency.observe(elapsed)
        self.metrics.mark_processed()

    # --- reload ---------------------------------------------------------------------------------
    def _reload(self) -> None:
        self.reload_requested.clear()
        if self.build_pipeline is None:
            return
        log.info("reloading config and models")
        future = self._worker.submit(self.build_pipeline)
        try:
            self._wait_keeping_alive(future)
        except DrainTimeout:
            raise
        except Exception as exc:  # any failure to build keeps the running pipeline
            self.metrics.model_reloads.labels("failure").inc()
            log.error("reload failed; keeping the running config and models", extra={"error": repr(exc)[:1000]})
            return
        finally:
            self.source.resume()
        new = future.result()
        if new.config.kafka != self.config.kafka:
            log.warning("reload: [kafka] changes need a restart and were ignored")
        old = self.pipeline
        self.pipeline = new
        self.config = new.config.model_copy(update={"kafka": self.config.kafka})
        self.source.reconfigure(self.config)
        old.close()
        self.metrics.model_reloads.labels("success").inc()
        log.info("reloaded", extra={"config_digest": new.config.digest, "stages": [s.name for s in new.cascade.stages]})

    # --- the loop -------------------------------------------------------------------------------
    def _set_broker_up(self, up: bool) -> None:
        self._broker_up = up
        self.metrics.broker_up.set(1 if up else 0)
        self._update_ready()

    def _update_ready(self) -> None:
        # Models were loaded before the consumer existed; ready = in the group, broker reachable and
        # the last batch committed (not while a batch keeps failing, e.g. on a dedup store).
        self.metrics.ready.set(1 if self._broker_up and self._batches_ok and self.source.joined else 0)

    def _on_batch_failed(self, records: list[Record], exc: RetriableBatchError) -> None:
        self._batches_ok = False
        self.metrics.progress.batch_done()  # retrying an outside failure is not a stuck loop (/readyz says it)
        if isinstance(exc, (DeliveryError, BrokerError)):
            self._set_broker_up(False)
        else:
            self._update_ready()
        self._backoff = next_backoff(self._backoff, self.config.delivery.broker_backoff_max_s)
        log.warning("batch not committed; will retry", extra={"error": repr(exc)[:500], "backoff_s": self._backoff,
                                                              "documents": len(records)})
        try:
            self.source.rewind(records)
        except BrokerError as rewind_error:  # the partition may have moved meanwhile
            log.warning("rewind failed", extra={"error": repr(rewind_error)})
        self.stop.wait(self._backoff)

    def _refresh_lag(self) -> None:
        now = time.monotonic()
        if now < self._next_lag_update:
            return
        self._next_lag_update = now + self.config.metrics.lag_interval_s
        try:
            self.source.update_lag(self.committed)
            self._lag = sum(self.metrics.totals("selectd_consumer_lag_messages", ()).values())
            self._set_broker_up(True)
        except BrokerError as exc:
            self._set_broker_up(False)
            log.warning("lag refresh failed", extra={"error": repr(exc)[:300]})

    def _log_progress(self) -> None:
        """Every ``logging.progress_interval_s``: documents in and outputs by outcome so far (the
        metrics' totals), and the input rate since the previous line."""
        now = time.monotonic()
        if now < self._next_progress:
            return
        self._next_progress = now + self.config.logging.progress_interval_s
        documents_in = sum(self.metrics.totals("selectd_documents_in_total", ("topic",)).values())
        if self._progress_mark is not None:
            then, before = self._progress_mark
            outputs = self.metrics.totals("selectd_documents_out_total", ("outcome",))
            log.info("progress", extra={"documents_in": int(documents_in),
                                        "outputs": {outcome: int(count) for outcome, count in sorted(outputs.items())},
                                        "docs_per_s": round((documents_in - before) / max(now - then, 1e-9), 1)})
        self._progress_mark = (now, documents_in)

    def _owned_only(self, records: list[Record]) -> list[Record]:
        """A read-ahead batch without the records of partitions revoked since they were fetched: the
        new owner reads them from the committed offset, so processing them here would only duplicate."""
        owned = self.source.owned()
        return [r for r in records if (r.topic, r.partition) in owned]

    def run(self) -> int:
        log.info("consuming", extra={"topics": self.config.kafka.input_topics, "group": self.config.kafka.group_id})
        in_flight: InFlightBatch | None = None
        try:
            while not self.stop.is_set():
                if self.reload_requested.is_set():
                    if in_flight is not None:  # a reload happens between batches: finish this one first
                        self._complete_or_rewind(in_flight, [])
                        in_flight = None
                    self._reload()
                # While the worker processes the in-flight batch, read the next one.
                records = self.source.poll_batch(self.stop)
                self.metrics.count_consumed(records)
                self._refresh_lag()
                self._log_progress()
                self._update_ready()
                self.metrics.progress.update(waiting=bool(records) or in_flight is not None or self._lag > 0)
                if in_flight is not None:
                    if self.stop.is_set():
                        records = []  # stopping: the read-ahead batch stays uncommitted, for the next owner
                    committed = self._complete_or_rewind(in_flight, records)
                    in_flight = None
                    if not committed:
                        continue  # the read-ahead batch was rewound with it: both are read again
                    records = self._owned_only(records)
                if records:
                    in_flight = self.submit(records)
            if in_flight is not None:  # stopped right after a submit
                self._complete_or_rewind(in_flight, [])
            return exits.OK
        except DrainTimeout:
            log.error("drain timeout: in-flight batch abandoned uncommitted",
                      extra={"documents": len(in_flight.records) if in_flight else 0,
                             "drain_timeout_s": self.config.delivery.drain_timeout_s})
            return exits.DRAIN_TIMEOUT
        finally:
            self.metrics.ready.set(0)
            self._worker.shutdown(wait=False, cancel_futures=True)

    def _complete_or_rewind(self, batch: InFlightBatch, read_ahead: list[Record]) -> bool:
        """Complete ``batch``: True when committed. If its delivery or commit failed, it and the
        read-ahead records are rewound, to be read again after the backoff."""
        try:
            self.complete(batch)
        except RetriableBatchError as exc:
            self._on_batch_failed(batch.records + read_ahead, exc)
            return False
        self._backoff = 0.0
        self._batches_ok = True
        self._set_broker_up(True)
        return True
