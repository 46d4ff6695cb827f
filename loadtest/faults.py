"""Fault injection against a real Kafka-protocol broker (Tansu, memory storage), with figures.

    nice python -m loadtest.faults --docs 100000 --kills 20 [--client confluent-kafka]

Scenarios (each also runs, smaller, in tests/test_reliability.py through the same functions):

- ``kill``: kill -9 the daemon at random moments while documents stream through, restarting it each
  time; the moments are spread over the whole stream (each kill comes once the routed count passed a
  random point of it, then after a random fraction of a second, so it lands mid-batch); every id must
  come out (accepted / rejected / DLQ); duplicates are counted per crash and must stay within one
  batch (``batch.max_docs``) per crash.
- ``broker``: stop the broker and start it again on the same port. The test broker keeps everything
  in memory, so topics, data and committed offsets are gone after the restart: this checks the
  daemon's side only — it reports not-ready (/readyz 503, ``selectd_broker_up`` 0), keeps running,
  and processes new messages once a broker is back.
- ``group``: three members share the input; one is killed -9 mid-stream; no id may be missing.
- ``produce``: outputs too large for the producer's ``max_request_size`` are dead-lettered as
  ``produce_failed`` (cut to fit when the original is too large too), counted in
  ``selectd_produce_failures_total`` and the input is still committed only after that.
  (Tansu creates missing topics on first use and has no switch to turn that off, so "topic missing,
  auto-create off" is covered by tests/test_reliability.py with the failure injected at the producer.)
- ``poison``: the loadtest.poison corpus: every malformed message in the DLQ with its reason, every
  good one routed, the daemon alive, its peak RSS under ``--rss-bound-mb``.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import typing
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from loadtest.harness import (RULE_STAGES, DaemonProcess, OutputReader, Streamer, TopicNames, documents, metric,
                              write_config)
from loadtest.poison import Limits, PoisonReport, check_outputs, generate, produce_corpus
from selectd.config import KafkaClient

MB = 1024 * 1024


def _say(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


# --- kill -9 cycles ---------------------------------------------------------------------------------
@dataclass
class KillReport:
    docs: int
    kills: int
    missing: int
    duplicates: int
    duplicates_per_crash: list[int]
    batch_max_docs: int
    seconds: float
    peak_rss_bytes: int
    received: list[tuple[float, str, bytes | None, dict[str, bytes]]]  # the reader's (produced, topic, key, headers)
    kill_times: list[float]                                              # time.time() of each kill

    def lines(self) -> list[str]:
        return [f"kill -9 cycles survived: {self.kills}, documents: {self.docs}, ids missing: {self.missing}",
                f"duplicates: {self.duplicates} in all; per crash: {self.duplicates_per_crash} "
                f"(max {max(self.duplicates_per_crash, default=0)}, bound batch.max_docs = {self.batch_max_docs})",
                f"wall time {self.seconds:.0f} s, peak RSS of any daemon run {self.peak_rss_bytes / MB:.0f} MiB"]


def kill_cycles(bootstrap: str, workdir: Path, docs: int, kills: int, rate: float, seed: int = 0,
                partitions: int = 4, max_docs: int = 200, nice: int = 0,
                messages: list[tuple[bytes, bytes]] | None = None, stages: str = RULE_STAGES,
                extra: str = "", client: str = "kafka-python") -> KillReport:
    """``messages``: the input, keyed by document id (default: ``docs`` generated documents);
    ``stages`` and ``extra``: the daemon config's [[stages]] and more tables (``write_config``);
    ``client``: the daemon's Kafka client."""
    messages = messages if messages is not None else documents(docs, "k")
    docs = len(messages)
    rng = random.Random(seed)
    # where in the stream (documents routed) each kill comes
    kill_points = sorted(rng.sample(range(docs // 50, docs * 19 // 20), kills))
    names = TopicNames(partitions)
    names.create(bootstrap)
    config = write_config(workdir / f"{names.tag}.toml", bootstrap, names, extra=extra, stages=stages, max_docs=max_docs,
                          client=client)
    reader = OutputReader(bootstrap, list(names.outputs.values()))
    reader.start()
    streamer = Streamer(bootstrap, names.input, messages, rate)
    began = time.monotonic()
    streamer.start()
    kill_times: list[float] = []
    peak_rss = 0
    log_path = workdir / f"{names.tag}-daemon.log"
    daemon: DaemonProcess | None = None
    try:
        for cycle in range(kills):
            daemon = DaemonProcess(config, log_path, nice=nice)
            daemon.wait_for_event("partitions assigned", 90)
            _wait(lambda: reader.distinct_count() >= kill_points[cycle], timeout_s=300, step_s=0.02)
            time.sleep(rng.uniform(0, 0.5))
            if daemon.alive():
                peak_rss = max(peak_rss, daemon.peak_rss_bytes())
            daemon.kill()
            kill_times.append(time.time())  # the clock of the outputs' produce timestamps
            _say(f"kill {cycle + 1}/{kills}: produced {streamer.sent}, routed ids {reader.distinct_count()}")
        daemon = DaemonProcess(config, log_path, nice=nice)
        streamer.join()
        if streamer.error:
            raise RuntimeError(f"producing the input failed: {streamer.error!r}")
        wanted = {key for key, _ in messages}
        reader.wait_for(wanted, timeout_s=max(120.0, docs / 200))
        time.sleep(2)  # late duplicates
        peak_rss = max(peak_rss, daemon.peak_rss_bytes())
        if daemon.terminate() != 0:
            raise RuntimeError(f"the last daemon did not drain cleanly; log: {log_path}")
    finally:
        reader.stop()
        if daemon:
            daemon.close()
    received = reader.snapshot()
    counts = Counter(key for _, _, key, _ in received)
    per_crash = [0] * kills
    seen: set[bytes | None] = set()
    for produced, _, key, _ in sorted(received, key=lambda message: message[0]):
        if key in seen:
            # A duplicate comes from the last crash before it was produced (its batch was re-read). By
            # produce time, not by when the reader got it: a reader running behind would charge
            # the duplicates of several crashes to a later one.
            crash = sum(1 for t in kill_times if t <= produced) - 1
            per_crash[max(0, crash)] += 1
        seen.add(key)
    return KillReport(docs, kills, len(wanted - set(counts)), sum(c - 1 for c in counts.values()), per_crash,
                      max_docs, time.monotonic() - began, peak_rss, received, kill_times)


# --- broker stop / start ----------------------------------------------------------------------------
@dataclass
class BrokerRestartReport:
    not_ready_after_s: float          # from broker stop to /readyz 503
    broker_up_while_down: float       # selectd_broker_up while the broker was down
    alive_while_down: bool
    down_s: float
    resumed_after_s: float            # from broker start to the first new message routed
    ready_again: bool
    new_missing: int

    def lines(self) -> list[str]:
        return [f"broker down {self.down_s:.0f} s: /readyz 503 after {self.not_ready_after_s:.1f} s, "
                f"selectd_broker_up {self.broker_up_while_down:.0f}, daemon alive: {self.alive_while_down}",
                f"broker back: first new message routed after {self.resumed_after_s:.1f} s, ready again: {self.ready_again}, "
                f"new ids missing: {self.new_missing}"]


def _readyz(url: str) -> int:
    try:
        return urllib.request.urlopen(url.rsplit("/", 1)[0] + "/readyz", timeout=3).status
    except urllib.error.HTTPError as exc:
        return exc.code


def _wait(condition, timeout_s: float, step_s: float = 0.2) -> float | None:
    """Seconds until ``condition()`` held, or None on timeout."""
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        if condition():
            return time.monotonic() - began
        time.sleep(step_s)
    return None


def broker_restart(workdir: Path, down_s: float = 15.0, nice: int = 0, client: str = "kafka-python") -> BrokerRestartReport:
    from selectd.demo.broker import TansuBroker

    broker = TansuBroker(log_path=workdir / "tansu-restart.log").start()
    names = TopicNames(2)
    daemon: DaemonProcess | None = None
    try:
        names.create(broker.bootstrap)
        # The restarted broker has lost every producer's state: librdkafka's idempotent producer takes its
        # UNKNOWN_PRODUCER_ID answers for its own epoch to bump and retries until the delivery timeout
        # (kafka-python asks for a new producer id at once); a short one keeps the scenario short.
        config = write_config(workdir / f"{names.tag}.toml", broker.bootstrap, names, metrics="lag_interval_s = 1.0",
                              kafka="request_timeout_ms = 10000\ndelivery_timeout_ms = 15000", client=client)
        daemon = DaemonProcess(config, workdir / f"{names.tag}-daemon.log", nice=nice)
        url = daemon.metrics_url()
        from kafka import KafkaProducer

        def send(batch):
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=5)
            for key, value in batch:
                producer.send(names.input, key=key, value=value)
            producer.flush()
            producer.close()

        reader = OutputReader(broker.bootstrap, list(names.outputs.values()))
        reader.start()
        before = documents(20, "before")
        send(before)
        if not reader.wait_for({k for k, _ in before}, 60):
            raise RuntimeError("the daemon did not route the first documents")
        reader.stop()
        if _wait(lambda: _readyz(url) == 200, 30) is None:
            raise RuntimeError("the daemon never became ready")

        broker.stop()
        stopped = time.monotonic()
        not_ready = _wait(lambda: _readyz(url) == 503, 60)
        time.sleep(max(0.0, down_s - (time.monotonic() - stopped)))
        broker_up = metric(url, "selectd_broker_up")
        alive = daemon.alive()

        broker.start()  # same port; memory storage: an empty broker
        started = time.monotonic()
        names.create(broker.bootstrap)
        reader = OutputReader(broker.bootstrap, list(names.outputs.values()))
        reader.start()
        # One message first: the member's position is past the new, empty log's end, so the first
        # fetch is out of range and resets to the start; later messages are then read in order.
        first = documents(1, "after")
        send(first)
        resumed = _wait(lambda: first[0][0] in reader.distinct_keys(), 120)
        resumed_after = time.monotonic() - started if resumed is not None else float("inf")
        after = documents(200, "after", start=1)
        send(after)
        reader.wait_for({k for k, _ in after}, 60)
        reader.stop()
        missing = len({k for k, _ in first + after} - reader.distinct_keys())
        ready_again = _wait(lambda: _readyz(url) == 200, 30) is not None
        if daemon.terminate() != 0:
            raise RuntimeError("daemon did not exit cleanly after the broker restart")
        return BrokerRestartReport(not_ready if not_ready is not None else float("inf"), broker_up, alive, down_s,
                                   resumed_after, ready_again, missing)
    finally:
        if daemon:
            daemon.close()
        broker.stop()


# --- a three-member group loses one member ----------------------------------------------------------
@dataclass
class GroupReport:
    docs: int
    members: int
    missing: int
    duplicates: int
    partitions_by_survivor: list[int] = field(default_factory=list)

    def lines(self) -> list[str]:
        return [f"{self.members}-member group, one killed -9 mid-stream: {self.docs} documents, ids missing: "
                f"{self.missing}, duplicates: {self.duplicates}"]


def group_member_loss(bootstrap: str, workdir: Path, docs: int, members: int = 3, rate: float = 0,
                      nice: int = 0, client: str = "kafka-python") -> GroupReport:
    names = TopicNames(6)
    names.create(bootstrap)
    config = write_config(workdir / f"{names.tag}.toml", bootstrap, names, client=client)
    daemons = [DaemonProcess(config, workdir / f"{names.tag}-m{i}.log", nice=nice) for i in range(members)]
    reader = OutputReader(bootstrap, list(names.outputs.values()))
    reader.start()
    try:
        for daemon in daemons:
            daemon.wait_for_event("partitions assigned", 90)
        messages = documents(docs, "g")
        streamer = Streamer(bootstrap, names.input, messages, rate)
        streamer.start()
        # Kill one member once it has routed some of the stream, so it dies holding work in flight.
        victim = daemons[0]
        _wait(lambda: reader.distinct_count() >= docs // 4, 120, 0.05)
        victim.kill()
        streamer.join()
        wanted = {key for key, _ in messages}
        reader.wait_for(wanted, timeout_s=120)
        time.sleep(2)
        for daemon in daemons[1:]:
            daemon.terminate()
    finally:
        reader.stop()
        for daemon in daemons:
            daemon.close()
    counts = Counter(key for _, _, key, _ in reader.snapshot())
    return GroupReport(docs, members, len(wanted - set(counts)), sum(c - 1 for c in counts.values()))


# --- produce failures -------------------------------------------------------------------------------
@dataclass
class ProduceFailureReport:
    documents: int
    too_large: int
    dead_lettered_produce_failed: int
    truncated: int
    failures_counted: float
    routed_ok: int
    missing: int
    committed_all: bool

    def lines(self) -> list[str]:
        return [f"produce failures: {self.too_large} of {self.documents} outputs over max_request_size -> "
                f"{self.dead_lettered_produce_failed} in the DLQ as produce_failed ({self.truncated} cut to fit), "
                f"selectd_produce_failures_total {self.failures_counted:.0f}, others routed {self.routed_ok}, "
                f"missing {self.missing}, offsets committed to the end: {self.committed_all}"]


def produce_failures(bootstrap: str, workdir: Path, documents_n: int = 200, every: int = 10, nice: int = 0,
                     client: str = "kafka-python") -> ProduceFailureReport:
    """Every ``every``-th document carries an extra field that makes it, and so its output and its dead
    letter, exceed the producer's ``max_request_size`` (64 KiB here)."""
    import orjson
    from kafka import KafkaConsumer, TopicPartition

    names = TopicNames(1)
    names.create(bootstrap)
    limit = 65_536
    config = write_config(workdir / f"{names.tag}.toml", bootstrap, names, stages="", client=client,
                          kafka=f"max_request_size = {limit}\nproducer_batch_size = {limit}")
    messages = []
    for key, value in documents(documents_n, "p"):
        i = int(key.split(b"-")[1])
        if i % every == 0:
            value = orjson.dumps({**orjson.loads(value), "blob": "b" * 2 * limit})
        messages.append((key, value))
    oversized = {key for i, (key, _) in enumerate(messages) if i % every == 0}
    daemon = DaemonProcess(config, workdir / f"{names.tag}-daemon.log", nice=nice)
    reader = OutputReader(bootstrap, list(names.outputs.values()))
    try:
        url = daemon.metrics_url()
        reader.start()
        streamer = Streamer(bootstrap, names.input, messages)
        streamer.start()
        streamer.join()
        reader.wait_for({k for k, _ in messages}, 90)
        time.sleep(1)
        failures = metric(url, "selectd_produce_failures_total", error="too_large")
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=names.group, enable_auto_commit=False)
        committed = _wait(lambda: consumer.committed(TopicPartition(names.input, 0)) == documents_n, 30) is not None
        consumer.close(autocommit=False)
        daemon.terminate()
    finally:
        reader.stop()
        daemon.close()
    received = reader.snapshot()
    dlq = names.outputs["dlq"]
    produce_failed = {key for _, topic, key, headers in received
                      if topic == dlq and headers.get("selectd.reason") == b"produce_failed"}
    truncated = sum(1 for _, topic, _, headers in received if topic == dlq and "selectd.truncated_from_bytes" in headers)
    routed = {key for _, topic, key, _ in received if topic != dlq}
    return ProduceFailureReport(documents_n, len(oversized), len(produce_failed & oversized), truncated, failures,
                                len(routed - oversized), len({k for k, _ in messages} - produce_failed - routed), committed)


# --- poison corpus ----------------------------------------------------------------------------------
@dataclass
class PoisonRun:
    report: PoisonReport
    alive: bool
    peak_rss_bytes: int
    rss_bound_bytes: int
    seconds: float

    def lines(self) -> list[str]:
        return self.report.lines() + [f"daemon alive throughout: {self.alive}, peak RSS {self.peak_rss_bytes / MB:.0f} MiB "
                                      f"(bound {self.rss_bound_bytes / MB:.0f} MiB), {self.seconds:.0f} s"]


def poison(bootstrap: str, workdir: Path, n_bad: int, rss_bound_bytes: int, huge_texts: int = 3,
           nice: int = 0, client: str = "kafka-python") -> PoisonRun:
    names = TopicNames(2)
    names.create(bootstrap)
    limits = Limits()
    config = write_config(workdir / f"{names.tag}.toml", bootstrap, names, extra=limits.input_toml(), client=client,
                          kafka=f"max_request_size = {limits.max_request_size}")
    messages = list(generate(n_bad, seed=0, limits=limits, huge_texts=huge_texts))
    began = time.monotonic()
    placed = produce_corpus(bootstrap, names.input, messages)
    del messages
    daemon = DaemonProcess(config, workdir / f"{names.tag}-daemon.log", nice=nice)
    reader = OutputReader(bootstrap, list(names.outputs.values()))
    try:
        reader.start()
        peak = 0
        deadline = time.monotonic() + max(180.0, n_bad / 50)
        while time.monotonic() < deadline and daemon.alive():
            peak = max(peak, daemon.peak_rss_bytes())
            where = {(int(h["selectd.source.partition"]), int(h["selectd.source.offset"])) for _, _, _, h in reader.snapshot()}
            if len(where & placed.keys()) == len(placed):
                break
            time.sleep(1)
        time.sleep(1)
        alive = daemon.alive()
        if alive:
            peak = max(peak, daemon.peak_rss_bytes())
            daemon.terminate()
    finally:
        reader.stop()
        daemon.close()
    outputs = [(topic, headers) for _, topic, _, headers in reader.snapshot()]
    return PoisonRun(check_outputs(placed, outputs, names.outputs["dlq"]), alive, peak, rss_bound_bytes,
                     time.monotonic() - began)


# --- the command ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=100_000, help="documents streamed through the kill cycles")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1000.0, help="documents/s produced during the kill cycles")
    parser.add_argument("--group-docs", type=int, default=20_000)
    parser.add_argument("--poison", type=int, default=10_000, help="malformed messages in the poison run")
    parser.add_argument("--rss-bound-mb", type=float, default=1024.0, help="peak RSS allowed in the poison run")
    parser.add_argument("--only", nargs="*", choices=["kill", "broker", "group", "produce", "poison"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nice", type=int, default=10, help="niceness of the daemons")
    parser.add_argument("--client", choices=typing.get_args(KafkaClient), default="kafka-python",
                        help="the daemons' Kafka client ([kafka] client)")
    parser.add_argument("--workdir", type=Path, help="configs and daemon logs (default: a temporary folder)")
    args = parser.parse_args(argv)
    from selectd.demo.broker import TansuBroker

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="selectd-faults-"))
    workdir.mkdir(parents=True, exist_ok=True)
    _say(f"work folder: {workdir}")
    wanted = set(args.only or ["kill", "broker", "group", "produce", "poison"])
    ok = True
    with TansuBroker(log_path=workdir / "tansu.log") as broker:
        if "kill" in wanted:
            report = kill_cycles(broker.bootstrap, workdir, args.docs, args.kills, args.rate, args.seed, nice=args.nice,
                                 client=args.client)
            ok &= report.missing == 0 and max(report.duplicates_per_crash, default=0) <= report.batch_max_docs
            print("\n".join(report.lines()), flush=True)
        if "broker" in wanted:
            restart = broker_restart(workdir, nice=args.nice, client=args.client)
            ok &= restart.alive_while_down and restart.ready_again and restart.new_missing == 0
            print("\n".join(restart.lines()), flush=True)
        if "group" in wanted:
            group = group_member_loss(broker.bootstrap, workdir, args.group_docs, rate=args.group_docs / 20, nice=args.nice,
                                      client=args.client)
            ok &= group.missing == 0
            print("\n".join(group.lines()), flush=True)
        if "produce" in wanted:
            produced = produce_failures(broker.bootstrap, workdir, nice=args.nice, client=args.client)
            ok &= produced.missing == 0 and produced.committed_all
            print("\n".join(produced.lines()), flush=True)
        if "poison" in wanted:
            run = poison(broker.bootstrap, workdir, args.poison, int(args.rss_bound_mb * MB), nice=args.nice,
                         client=args.client)
            ok &= run.report.ok and run.alive and run.peak_rss_bytes <= run.rss_bound_bytes
            print("\n".join(run.lines()), flush=True)
    print("RESULT:", "PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
