"""A private ``redis-server`` (the Debian package, ``make redis-server``) for tests and
benchmarks: loopback only, a free port, data in its own directory, stopped on exit."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from selectd.dedup.redis_store import RespClient
from selectd.dedup.store import StoreError


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """``with RedisServer() as server: server.url``. ``extra_args``: more ``redis-server`` options,
    e.g. ``["--appendonly", "yes"]`` (the default keeps nothing on disk)."""

    def __init__(self, directory: Path | None = None, extra_args: list[str] | None = None):
        self.executable = shutil.which("redis-server")
        if self.executable is None:
            raise RuntimeError("redis-server is not installed (make redis-server: Debian package redis-server)")
        self._own_directory = directory is None
        self.directory = Path(tempfile.mkdtemp(prefix="redis-")) if directory is None else directory
        self.extra_args = extra_args or []
        self.port = 0
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10) -> "RedisServer":
        """Start the server (again: on the same port and directory)."""
        self.port = self.port or free_port()
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [self.executable, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--save", "", "--appendonly", "no", *self.extra_args],
            stdout=open(self.directory / "redis.log", "ab"), stderr=subprocess.STDOUT)
        client = RespClient(self.url, timeout_s=1)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.call("PING")
                client.close()
                return self
            except StoreError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                    self.stop()
                    raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log}")
                time.sleep(0.05)

    def command_calls(self, command: str) -> int:
        """How many times the server has run ``command`` (``INFO commandstats``)."""
        client = RespClient(self.url, timeout_s=5)
        try:
            stats = client.call("INFO", "commandstats").decode()
        finally:
            client.close()
        line = next((line for line in stats.splitlines() if line.startswith(f"cmdstat_{command.lower()}:")), "calls=0,")
        return int(line.split("calls=")[1].split(",")[0])

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_directory:
            shutil.rmtree(self.directory, ignore_errors=True)
