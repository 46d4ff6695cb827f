"""Composition: config → metrics → pipeline → Kafka source/sink → commit loop (``run``), or
config → pipeline → JSONL in/out (``score``)."""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from selectd import exits
from selectd.config import Config, ConfigError
from selectd.distributions import DriftSettings
from selectd.kafka.base import BrokerError, Source, next_backoff
from selectd.kafka.clients import check_client, open_clients
from selectd.kafka.commit import CommitLoop
from selectd.metrics import OUTCOMES, Metrics
from selectd.pipeline import Pipeline
from selectd.server import start_http_server
from selectd.sinks.base import Sink
from selectd.sinks.jsonl import JsonlSink
from selectd.sources.jsonl import open_input, read_batches

log = logging.getLogger("selectd")

#: ``selectd score -o -``
STDOUT = "-"


def output_topics(config: Config) -> dict[str, str]:
    topics = {"accepted": config.topics.accepted, "rejected": config.topics.rejected, "dlq": config.topics.dlq}
    if config.topics.attributes:
        topics["attributes"] = config.topics.attributes
    return topics


def new_metrics(config: Config) -> Metrics:
    metrics = Metrics()
    metrics.declare_topics(config.kafka.input_topics, output_topics(config))
    for route in config.routes:
        metrics.documents_out.labels(route.topic, "accepted")
    metrics.declare_stages([s.name for s in config.stages if s.enabled])
    if config.drift:
        drift = config.drift
        profile = _read_profile(drift.reference) if drift.reference else None
        try:
            metrics.distributions.enable_drift(DriftSettings(drift.reference_docs, drift.window_docs, drift.bound), profile)
        except ValueError as exc:
            raise ConfigError(f"drift.reference: {drift.reference}: {exc}") from None
    return metrics


def _read_profile(path: Path) -> dict[str, Any]:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"drift.reference: {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"drift.reference: {path}: not JSON: {exc}") from None


def _build_pipeline(config: Config, metrics: Metrics) -> Pipeline:
    pipeline = Pipeline.from_config(config, metrics)
    if pipeline.drift_problems:
        log.warning("signals without a drift reference", extra={"signals": pipeline.drift_problems})
    return pipeline


@dataclass
class Summary:
    """Totals read back from the metrics registry, so the summary and the scrape always agree."""
    documents_in: float
    outputs: dict[str, float]
    rejections: dict[str, float]
    dead_letters: dict[str, float]
    seconds: float
    #: "stage/shadow decision/live decision" -> documents
    shadow: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_metrics(cls, metrics: Metrics, seconds: float) -> "Summary":
        return cls(sum(metrics.totals("selectd_documents_in_total", ("topic",)).values()),
                   metrics.totals("selectd_documents_out_total", ("outcome",)),
                   metrics.totals("selectd_rejections_total", ("stage", "reason")),
                   metrics.totals("selectd_dead_letters_total", ("reason",)), seconds,
                   metrics.totals("selectd_shadow_decisions_total", ("stage", "shadow", "live")))

    def lines(self) -> list[str]:
        rate = self.documents_in / self.seconds if self.seconds else 0.0
        out = [f"documents in: {int(self.documents_in)} in {self.seconds:.1f} s ({rate:,.0f} docs/s)"]
        out.append("  " + ", ".join(f"{k}: {int(self.outputs.get(k, 0))}" for k in OUTCOMES
                                    if k != "attributes" or k in self.outputs))
        for title, table in (("rejected by stage/reason", self.rejections), ("dead-lettered by reason", self.dead_letters)):
            if table:
                out.append(f"  {title}:")
                out.extend(f"    {k}: {int(v)}" for k, v in sorted(table.items(), key=lambda kv: -kv[1]))
        for stage in sorted({key.split("/")[0] for key in self.shadow}):
            parts = []
            for would in ("reject", "accept"):
                live = {decision: int(self.shadow.get(f"{stage}/{would}ed/{decision}", 0)) for decision in ("accepted", "rejected")}
                parts.append(f"would {would} {sum(live.values())} (live accepted {live['accepted']}, rejected {live['rejected']})")
            out.append(f"  shadow stage {stage}: " + "; ".join(parts))
        return out


def check(config: Config) -> list[str]:
    """Build everything ``run`` builds short of connecting: the client's needs, every stage's scorer
    with its model (manifest and sha256 checked), rules, selections and routes against the signals
    the stages emit. Raises :class:`ConfigError` naming key paths; returns warnings (limits that
    contradict each other)."""
    check_client(config)
    Pipeline.from_config(config).close()
    return config.limit_warnings()


def connect(config: Config, open_clients: Callable[[], tuple[Sink, Source]], stop: threading.Event
            ) -> tuple[Sink, Source] | None:
    """``open_clients()`` until the brokers answer: each failed try (a :class:`BrokerError`) is logged
    and tried again after a backoff doubling up to ``delivery.broker_backoff_max_s``. None when
    ``stop`` is set first. The daemon is not ready meanwhile (nothing has joined the group)."""
    backoff = 0.0
    attempt = 0
    while not stop.is_set():
        attempt += 1
        try:
            clients = open_clients()
        except BrokerError as exc:
            backoff = next_backoff(backoff, config.delivery.broker_backoff_max_s)
            log.warning("brokers not reachable; retrying", extra={
                "attempt": attempt, "bootstrap_servers": config.kafka.bootstrap_servers,
                "error": repr(exc)[:500], "retry_in_s": backoff})
            stop.wait(backoff)
            continue
        log.info("connected to the brokers", extra={"attempts": attempt})
        return clients
    return None


class _Signals:
    """SIGTERM / SIGINT stop connecting, or drain the commit loop once it runs; a second one exits at
    once. SIGHUP asks the loop for a reload (one asked for before it runs is done when it starts)."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.loop: CommitLoop | None = None

    def attach(self, loop: CommitLoop) -> None:
        self.loop = loop
        if self.reload.is_set():
            loop.reload_requested.set()
        if self.stop.is_set():
            loop.request_stop()

    def on_stop(self, signum, _frame) -> None:
        if self.stop.is_set():
            log.error("second signal: exiting at once without draining", extra={"signal": signum})
            os._exit(exits.SECOND_SIGNAL)
        self.stop.set()
        if self.loop:
            log.info("draining", extra={"signal": signal.Signals(signum).name,
                                        "drain_timeout_s": self.loop.config.delivery.drain_timeout_s})
            self.loop.request_stop()
        else:
            log.info("stopping before the consumer started", extra={"signal": signal.Signals(signum).name})

    def on_reload(self, _signum, _frame) -> None:
        self.reload.set()
        if self.loop:
            self.loop.reload_requested.set()

    def install(self) -> "_Signals":
        signal.signal(signal.SIGTERM, self.on_stop)
        signal.signal(signal.SIGINT, self.on_stop)
        signal.signal(signal.SIGHUP, self.on_reload)
        return self


def run_daemon(config: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """The daemon. Returns the process exit code (:mod:`selectd.exits`). ``reload_config`` re-reads
    the config on SIGHUP. Raises :class:`ConfigError` before connecting when the config cannot run."""
    signals = _Signals().install()
    metrics = new_metrics(config)
    with ExitStack() as stack:
        if config.metrics.enabled:
            server = start_http_server(metrics, config.metrics.host, config.metrics.port, config.metrics.stall_timeout_s)
            stack.callback(server.shutdown)
            host, port = server.server_address[:2]
            log.info("metrics listening", extra={"url": f"http://{host}:{port}/metrics"})
        for warning in config.limit_warnings():
            log.warning(warning)
        check_client(config)
        # Models load and warm up once, before connecting: a joined member is ready to work, and a
        # broker that is not up yet does not make them load again.
        began = time.perf_counter()
        pipeline = _build_pipeline(config, metrics)
        loop: CommitLoop | None = None
        stack.callback(lambda: (loop.pipeline if loop else pipeline).close())  # the one running at exit (SIGHUP swaps it)
        log.info("models loaded", extra={"stages": [s.name for s in pipeline.cascade.stages],
                                         "seconds": round(time.perf_counter() - began, 3)})
        _publish_config_info(metrics, pipeline)
        clients = connect(config, lambda: open_clients(config, metrics), signals.stop)
        if clients is None:
            log.info("stopped before connecting", extra={"exit_code": exits.OK})
            return exits.OK
        sink, source = clients
        stack.callback(sink.close)
        stack.callback(source.close)
        build_pipeline = (lambda: _reloaded_pipeline(reload_config, metrics)) if reload_config else None
        loop = CommitLoop(config, pipeline, source, sink, metrics, build_pipeline)
        signals.attach(loop)
        code = loop.run()
        log.info("stopped", extra={"exit_code": code})
        return code


def _publish_config_info(metrics: Metrics, pipeline: Pipeline) -> None:
    versions = {f"{stage}.{name}": value for stage, stage_versions in pipeline.cascade.versions().items()
                for name, value in stage_versions.items()}
    metrics.config_info.info({"digest": pipeline.config.digest,
                              "models": ",".join(f"{k}={v}" for k, v in sorted(versions.items()))})


def _reloaded_pipeline(reload_config: Callable[[], Config], metrics: Metrics) -> Pipeline:
    config = reload_config()
    metrics.declare_stages([s.name for s in config.stages if s.enabled])
    pipeline = _build_pipeline(config, metrics)
    _publish_config_info(metrics, pipeline)
    return pipeline


def score_file(config: Config, source: str | Path, output: str | Path, attributes_path: Path | None = None,
               batch_size: int | None = None, profile_path: Path | None = None) -> Summary:
    """The same pipeline over JSONL: every input line yields exactly one output line. ``source`` is a
    file (plain, gzip or zstandard) or ``-`` for stdin, ``output`` a file or ``-`` for stdout. With
    ``attributes_path`` the attribute records are made and written there, whether or not the
    config names an attributes topic. ``profile_path``: also write the score distributions there, a
    drift reference for ``[drift]``."""
    if attributes_path is not None and not config.topics.attributes:
        # the router makes attribute records for the attributes topic; here the topic is a file
        config = config.model_copy(update={"topics": config.topics.model_copy(update={"attributes": "attributes"})})
    metrics = new_metrics(config)
    pipeline = _build_pipeline(config, metrics)
    began = time.perf_counter()
    try:
        with ExitStack() as stack:
            lines, name = stack.enter_context(open_input(source))
            main = sys.stdout.buffer if str(output) == STDOUT else stack.enter_context(open(output, "wb"))
            attributes = stack.enter_context(open(attributes_path, "wb")) if attributes_path else None
            sink = JsonlSink(metrics, main, attributes)
            for records in read_batches(lines, name, batch_size or config.batch.max_docs):
                metrics.count_consumed(records)
                sink.deliver(pipeline.process(records))
            main.flush()
    finally:
        pipeline.close()
    if profile_path:
        profile_path.write_bytes(orjson.dumps(metrics.distributions.profile(config.digest), option=orjson.OPT_INDENT_2))
    return Summary.from_metrics(metrics, time.perf_counter() - began)
