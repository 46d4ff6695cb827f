"""The embedded default run (``selectd demo``, the README's first command).

No external services and no source checkout (``pip install 'selectd[demo]'`` is enough): it
builds the sample corpus and the demo models into WORKDIR, starts a local Tansu broker, creates
the topics, runs ``selectd run`` with the example config (package data) pointed at that broker
(written to WORKDIR/selectd.toml) as a child process in WORKDIR (exactly as in production; the
config's model directories are relative to it), streams the corpus into the input topic together
with a few malformed messages, shows a live progress line from the daemon's own metrics, then
stops the daemon with SIGTERM (drain) and prints the summary. Everything it writes is in WORKDIR.
"""
from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Iterator

import orjson

from selectd.config import load_config
from selectd.demo import configs
from selectd.demo.broker import TansuBroker, free_port
from selectd.demo.corpus import build_corpus
from selectd.kafka.admin import ensure_topics, produce
from selectd.status import by_label, scrape

#: the example config, shipped in the package (deploy/selectd.example.toml links to it)
EXAMPLE_CONFIG = Path(__file__).resolve().parent / "selectd.example.toml"

MALFORMED = [b"{not json", b"[]", orjson.dumps({"id": 1, "text": "id is a number"}),
             orjson.dumps({"id": "no-text"}), b'{"id": "bad-utf8", "text": "\xff"}']


def _scrape(url: str) -> dict[str, float]:
    """The totals the progress line and the summary show, from the daemon's own metrics."""
    samples = scrape(url, timeout_s=2)
    totals = {f"outcome:{k}": v for k, v in by_label(samples, "selectd_documents_out_total", "outcome").items()}
    totals.update({f"reason:{k}": v for k, v in by_label(samples, "selectd_rejections_total", "stage", "reason").items() if v})
    totals.update({f"dlq:{k}": v for k, v in by_label(samples, "selectd_dead_letters_total", "reason").items() if v})
    return totals


def _messages(corpus: Path) -> Iterator[tuple[bytes, bytes]]:
    """The corpus keyed by document id, then the malformed messages."""
    with open(corpus, "rb") as handle:
        for line in handle:
            yield orjson.loads(line)["id"].encode(), line.rstrip(b"\n")
    for value in MALFORMED:
        yield b"malformed", value


def _progress(totals: dict[str, float], produced: int, began: float) -> str:
    done = totals.get("outcome:accepted", 0) + totals.get("outcome:rejected", 0) + totals.get("outcome:dlq", 0)
    rate = done / max(1e-9, time.monotonic() - began)
    return (f"\r{int(done):>7}/{produced} routed | accepted {int(totals.get('outcome:accepted', 0))} "
            f"rejected {int(totals.get('outcome:rejected', 0))} dlq {int(totals.get('outcome:dlq', 0))} | {rate:,.0f} docs/s ")


#: model directories the example config uses (relative to the daemon's working directory), and the
#: arguments of ``python -m selectd.tools.fasttext.demo_models`` that build each (nothing downloaded)
DEMO_MODELS = [
    (Path("models/lid176"), ["lid", "models/lid176"]),
    (Path("models/quality_fasttext"), ["quality", "--out", "models/quality_fasttext", "--corpus", "{corpus}"]),
]


def ensure_models(workdir: Path, corpus: Path, models: list[tuple[Path, list[str]]] = DEMO_MODELS) -> None:
    """Build each model directory of ``models`` that is missing under ``workdir``. The builder runs as
    a child process: the demo never imports the offline tools (``selectd.tools``)."""
    for directory, arguments in models:
        if (workdir / directory / "manifest.json").exists():
            continue
        print(f"building {workdir / directory}")
        subprocess.run([sys.executable, "-m", "selectd.tools.fasttext.demo_models",
                        *(part.format(corpus=corpus.resolve()) for part in arguments)], cwd=workdir, check=True)


def run_embedded(docs: int = 5000, partitions: int = 2, keep: bool = False, workdir: Path = Path("artifacts/demo"),
                 config_path: Path = EXAMPLE_CONFIG) -> int:
    # kafka-python logs connection churn at ERROR when the broker stops at the end; not news here.
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    workdir.mkdir(parents=True, exist_ok=True)
    corpus = workdir / f"sample-{docs}.jsonl"
    if not corpus.exists():
        print(f"building the sample corpus ({docs} documents) -> {corpus}")
        build_corpus(corpus, n_docs=docs, seed=0)
    ensure_models(workdir, corpus)
    with TansuBroker(log_path=workdir / "tansu.log") as broker:
        print(f"broker: Tansu on {broker.bootstrap} (memory storage)")
        data = configs.on_broker(tomllib.loads(config_path.read_text()), broker.bootstrap)
        data["metrics"] = {**data.get("metrics", {}), "port": free_port()}
        data["logging"] = {**data.get("logging", {}), "format": "text", "level": "WARNING"}
        daemon_config = configs.write_config(workdir.resolve() / "selectd.toml", data)
        config = load_config(daemon_config)
        outputs = {config.topics.accepted: 1, config.topics.rejected: 1, config.topics.dlq: 1,
                   **{route.topic: 1 for route in config.routes}}
        if config.topics.attributes:
            outputs[config.topics.attributes] = 1
        ensure_topics(config.kafka, {**{t: partitions for t in config.kafka.input_topics}, **outputs})
        # The example config names model directories relative to the daemon's working directory.
        daemon = subprocess.Popen([sys.executable, "-m", "selectd.cli", "run", "--config", str(daemon_config)],
                                  cwd=workdir)
        url = f"http://{config.metrics.host}:{config.metrics.port}/metrics"
        print(f"daemon: pid {daemon.pid}, config {daemon_config}, metrics at {url}")
        try:
            began = time.monotonic()
            produced = produce(broker.bootstrap, config.kafka.input_topics[0], _messages(corpus))
            print(f"produced {produced} messages to {config.kafka.input_topics[0]} ({len(MALFORMED)} malformed)")
            totals: dict[str, float] = {}
            first_out = None
            last_line = 0.0
            while daemon.poll() is None:
                try:
                    totals = _scrape(url)
                except OSError:
                    time.sleep(0.5)
                    continue
                done = sum(totals.get(f"outcome:{o}", 0) for o in ("accepted", "rejected", "dlq"))
                if done and first_out is None:
                    first_out = time.monotonic()
                line = _progress(totals, produced, began)
                if sys.stdout.isatty():
                    sys.stdout.write(line)
                    sys.stdout.flush()
                elif time.monotonic() - last_line >= 5:  # a log file gets a line every 5 s, not a flood
                    print(line.strip(), flush=True)
                    last_line = time.monotonic()
                if done >= produced and not keep:
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - (first_out or began)
            print()
        except KeyboardInterrupt:
            print("\ninterrupted")
        finally:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
            code = daemon.wait(60)
        _print_summary(totals, elapsed if totals else 0.0, code)
        return code


def _print_summary(totals: dict[str, float], seconds: float, code: int) -> None:
    done = sum(totals.get(f"outcome:{o}", 0) for o in ("accepted", "rejected", "dlq"))
    print("\nsummary")
    print(f"  routed:   {int(done)} documents, {done / seconds if seconds else 0:,.0f} docs/s through the broker")
    for outcome in ("accepted", "rejected", "dlq"):
        print(f"  {outcome + ':':9} {int(totals.get('outcome:' + outcome, 0))}")
    for prefix, title in (("reason:", "rejected by stage/reason"), ("dlq:", "dead-lettered by reason")):
        rows = sorted(((k[len(prefix):], v) for k, v in totals.items() if k.startswith(prefix)), key=lambda kv: -kv[1])
        if rows:
            print(f"  {title}:")
            for key, value in rows:
                print(f"    {key}: {int(value)}")
    print(f"  daemon exit code: {code}")
