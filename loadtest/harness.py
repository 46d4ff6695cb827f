"""What the fault, poison and soak runs share: topic names, a daemon config, ``selectd run`` as a child
process (killable, with its RSS), a background producer and a reader of every output topic."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import orjson

from selectd.demo import configs
from selectd.kafka.admin import ensure_topics

REPO = Path(__file__).resolve().parent.parent

RULE_STAGES = """
[[stages]]
name = "gopher"
type = "gopher_quality"

[[stages]]
name = "repetition"
type = "gopher_repetition"
"""

DOC_TEXT = ("Rivers carry sediment from the mountains to the sea, and the deltas they build change shape "
            "with every flood season. Farmers have planted on this fertile ground for thousands of years. ")


@dataclass
class TopicNames:
    """Unique topic and group names for one run (or test), so runs sharing a broker never see each other."""
    partitions: int = 4
    tag: str = field(default_factory=lambda: f"lt-{uuid.uuid4().hex[:8]}")

    @property
    def input(self) -> str:
        return f"{self.tag}-in"

    @property
    def accepted(self) -> str:
        return f"{self.tag}-accepted"

    @property
    def rejected(self) -> str:
        return f"{self.tag}-rejected"

    @property
    def dlq(self) -> str:
        return f"{self.tag}-dlq"

    @property
    def outputs(self) -> dict[str, str]:
        return {"accepted": self.accepted, "rejected": self.rejected, "dlq": self.dlq}

    @property
    def group(self) -> str:
        return f"{self.tag}-group"

    def create(self, bootstrap: str) -> None:
        ensure_topics(bootstrap, {self.input: self.partitions, **{topic: 1 for topic in self.outputs.values()}})


def write_config(path: Path, bootstrap: str, names: TopicNames, extra: str = "", stages: str = RULE_STAGES,
                 top: str = "", max_docs: int = 200, kafka: str = "", metrics: str = "",
                 delivery: str = "broker_backoff_max_s = 2.0", client: str = "kafka-python") -> Path:
    """A daemon config for these topics on a local broker (:func:`selectd.demo.configs.on_broker`) with
    the Kafka ``client`` given; the TOML snippets add to it: ``top`` top-level keys, ``kafka``,
    ``metrics`` and ``delivery`` keys of those tables (an empty ``delivery`` leaves the [delivery]
    table out), ``extra`` more tables, ``stages`` the [[stages]] entries."""
    data = _merged(tomllib.loads(top), {
        "kafka": {"client": client, "group_id": names.group, "input_topics": [names.input]},
        "topics": {"accepted": names.accepted, "rejected": names.rejected, "dlq": names.dlq},
        "metrics": {"port": 0, **tomllib.loads(metrics)},
        "batch": {"max_docs": max_docs, "linger_ms": 50},
        **({"delivery": tomllib.loads(delivery)} if delivery else {}),
        "logging": {"format": "json"},
    }, tomllib.loads(extra + "\n" + stages))
    return configs.write_config(path, configs.on_broker(data, bootstrap, **tomllib.loads(kafka)))


def _merged(*tables: dict) -> dict:
    """The tables merged key by key, later ones winning, nested tables merged too."""
    out: dict = {}
    for table in tables:
        for key, value in table.items():
            out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def document(prefix: str, i: int) -> tuple[bytes, bytes]:
    """(key, value); the key is the document id, so outputs can be matched by key."""
    return f"{prefix}-{i}".encode(), orjson.dumps({"id": f"{prefix}-{i}", "text": DOC_TEXT * (3 + i % 5), "n": i})


def documents(n: int, prefix: str, start: int = 0) -> list[tuple[bytes, bytes]]:
    return [document(prefix, i) for i in range(start, start + n)]


class DaemonProcess:
    """``selectd run`` as a child process: kill -9, SIGTERM, its metrics URL and its resident memory."""

    def __init__(self, config: Path, log_path: Path, *overrides: str, nice: int = 0, launcher: tuple[str, ...] = ()):
        """``overrides``: ``--set`` items; ``launcher``: a command prefix the daemon runs under (e.g. a
        read-only-root mount namespace)."""
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self._log_offset = log_path.stat().st_size
        command = [sys.executable, "-m", "selectd.cli", "run", "--config", str(config)]
        for item in overrides:
            command += ["--set", item]
        if nice:
            command = ["nice", "-n", str(nice), *command]
        command = [*launcher, *command]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO,
                                        env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def events(self) -> list[dict]:
        """This process's log lines (the log file may hold earlier processes' lines too)."""
        with open(self.log_path, "rb") as log:
            log.seek(self._log_offset)
            lines = []
            for raw in log.read().splitlines():
                try:
                    lines.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    pass
            return lines

    def wait_for_event(self, event: str, timeout_s: float = 60) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.events():
                if line.get("event") == event:
                    return line
            if not self.alive():
                raise RuntimeError(f"daemon exited ({self.process.returncode}) before {event!r}:\n{self._log_tail()}")
            time.sleep(0.1)
        raise TimeoutError(f"no {event!r} within {timeout_s} s:\n{self._log_tail()}")

    def _log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_bytes()[-chars:].decode("utf-8", "replace")

    def metrics_url(self, timeout_s: float = 60) -> str:
        return self.wait_for_event("metrics listening", timeout_s)["url"]

    def _status_kb(self, field_name: str) -> int:
        with open(f"/proc/{self.pid}/status") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        raise RuntimeError(f"/proc/{self.pid}/status has no {field_name}")

    def rss_bytes(self) -> int:
        return self._status_kb("VmRSS") * 1024

    def peak_rss_bytes(self) -> int:
        return self._status_kb("VmHWM") * 1024

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout_s: float = 60) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        finally:
            self._log.close()

    def close(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()


def metric(url: str, name: str, **labels: str) -> float:
    from selectd.status import scrape, total

    return total(scrape(url), name, **labels)


class Streamer(threading.Thread):
    """Produces ``messages`` at about ``rate`` per second (0: as fast as the broker takes them)."""

    def __init__(self, bootstrap: str, topic: str, messages: Iterable[tuple[bytes, bytes | None]], rate: float = 0):
        super().__init__(daemon=True, name="loadtest-streamer")
        self.bootstrap, self.topic, self.messages, self.rate = bootstrap, topic, messages, rate
        self.sent = 0
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:  # started
            self.join(30)

    def run(self) -> None:
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=10, client_id="loadtest-streamer")
        failures: list[BaseException] = []
        began = time.monotonic()
        try:
            for key, value in self.messages:
                if self._halt.is_set():
                    break
                if self.rate > 0:
                    delay = began + self.sent / self.rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                producer.send(self.topic, key=key, value=value).add_errback(failures.append)
                self.sent += 1
            producer.flush()
            if failures:
                self.error = failures[0]
        except BaseException as exc:  # reported by the caller, which owns the run
            self.error = exc
        finally:
            producer.close()


class OutputReader(threading.Thread):
    """Reads every output topic from the start, keeping (produce time, topic, key, headers) per message:
    the producer's timestamp (CreateTime, seconds since the epoch), which says when the daemon sent it
    however late this reader gets to it."""

    def __init__(self, bootstrap: str, topics: list[str]):
        super().__init__(daemon=True, name="loadtest-reader")
        self.bootstrap, self.topics = bootstrap, topics
        self.received: list[tuple[float, str, bytes | None, dict[str, bytes]]] = []
        self._keys: set[bytes | None] = set()
        self._halt = threading.Event()
        self._lock = threading.Lock()

    def run(self) -> None:
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(*self.topics, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest",
                                 enable_auto_commit=False, group_id=None, fetch_max_bytes=64 * 1024 * 1024)
        try:
            while not self._halt.is_set():
                for messages in consumer.poll(timeout_ms=200).values():
                    with self._lock:
                        self.received.extend((m.timestamp / 1000, m.topic, m.key, dict(m.headers)) for m in messages)
                        self._keys.update(m.key for m in messages)
        finally:
            consumer.close()

    def snapshot(self) -> list[tuple[float, str, bytes | None, dict[str, bytes]]]:
        with self._lock:
            return list(self.received)

    def distinct_keys(self) -> set[bytes | None]:
        with self._lock:
            return set(self._keys)

    def distinct_count(self) -> int:
        with self._lock:
            return len(self._keys)

    def wait_for(self, keys: set[bytes], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if keys <= self.distinct_keys():
                return True
            time.sleep(0.5)
        return False

    def stop(self) -> None:
        self._halt.set()
        if self.ident is not None:  # started
            self.join(10)
