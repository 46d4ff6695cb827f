"""Composition: config → metrics → pipeline → Kafka source/sink → commit loop (``run``), or
config → pipeline → JSONL in/out (``score``)."""
from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import orjson

from selectd.config import Config, ConfigError
from selectd.distributions import DriftSettings
from selectd.kafka.commit import CommitLoop
from selectd.kafka.sink import KafkaSink
from selectd.kafka.source import KafkaSource
from selectd.metrics import OUTCOMES, Metrics
from selectd.pipeline import Pipeline
from selectd.server import start_http_server
from selectd.sinks.jsonl import JsonlSink
from selectd.sources.jsonl import read_batches

log = logging.getLogger("selectd")


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


def run_daemon(config: Config, reload_config: Callable[[], Config] | None = None) -> int:
    """The daemon. Returns the process exit code. ``reload_config`` re-reads the config on SIGHUP."""
    metrics = new_metrics(config)
    with ExitStack() as stack:
        metrics_url = ""
        if config.metrics.enabled:
            server = start_http_server(metrics, config.metrics.host, config.metrics.port)
            stack.callback(server.shutdown)
            host, port = server.server_address[:2]
            metrics_url = f"http://{host}:{port}/metrics"
            log.info("metrics listening", extra={"url": metrics_url})
        # Models load and warm up before the consumer joins, so a joined member is ready to work.
        pipeline = _build_pipeline(config, metrics)
        _publish_config_info(metrics, pipeline)
        sink = KafkaSink(config, metrics)
        stack.callback(sink.close)
        source = KafkaSource(config, metrics)
        stack.callback(source.close)
        build_pipeline = (lambda: _reloaded_pipeline(reload_config, metrics)) if reload_config else None
        loop = CommitLoop(config, pipeline, source, sink, metrics, build_pipeline)
        stack.callback(lambda: loop.pipeline.close())  # the pipeline running at exit (SIGHUP swaps it)
        _install_signal_handlers(loop)
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


def _install_signal_handlers(loop: CommitLoop) -> None:
    def stop(signum, _frame):
        if loop.stop.is_set():
            log.error("second signal: exiting at once without draining", extra={"signal": signum})
            os._exit(130)
        log.info("draining", extra={"signal": signal.Signals(signum).name,
                                    "drain_timeout_s": loop.config.delivery.drain_timeout_s})
        loop.request_stop()

    def reload(_signum, _frame):
        loop.reload_requested.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)


def score_file(config: Config, in_path: Path, out_path: Path, attributes_path: Path | None = None,
               batch_size: int | None = None, profile_path: Path | None = None) -> Summary:
    """The same pipeline over a JSONL file: every input line yields exactly one output line.
    ``profile_path``: also write the score distributions there, a drift reference for ``[drift]``."""
    metrics = new_metrics(config)
    pipeline = _build_pipeline(config, metrics)
    began = time.perf_counter()
    try:
        with ExitStack() as stack:
            main = stack.enter_context(open(out_path, "wb"))
            attributes = stack.enter_context(open(attributes_path, "wb")) if attributes_path else None
            sink = JsonlSink(metrics, main, attributes)
            for records in read_batches(in_path, batch_size or config.batch.max_docs):
                metrics.count_consumed(records)
                sink.deliver(pipeline.process(records))
    finally:
        pipeline.close()
    if profile_path:
        profile_path.write_bytes(orjson.dumps(metrics.distributions.profile(config.digest), option=orjson.OPT_INDENT_2))
    return Summary.from_metrics(metrics, time.perf_counter() - began)
