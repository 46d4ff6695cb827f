"""HTTP endpoints: /metrics (Prometheus), /healthz (alive and not stuck), /readyz (joined, models loaded).

/healthz fails (503) when work has waited ``stall_timeout_s`` with no batch done (committed, or
failed and given back to be retried) while the broker is up: records fetched and not committed,
or consumer lag, and a loop that does not get through them (a scorer hung, a deadlock). A broker
or a dedup store that is down is not the daemon's fault and a restart would not help: /readyz
reports that, /healthz stays 200.
"""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from selectd.metrics import Metrics


def health(metrics: Metrics, stall_timeout_s: float) -> tuple[bool, str]:
    """(healthy, what /healthz says)."""
    stalled = metrics.progress.stalled_s()
    broker_up = metrics.broker_up._value.get() == 1
    if stall_timeout_s and broker_up and stalled > stall_timeout_s:
        return False, f"stalled: work has waited {stalled:.0f} s with no batch done (limit {stall_timeout_s:g} s)"
    return True, "ok"


def start_http_server(metrics: Metrics, host: str, port: int, stall_timeout_s: float = 0.0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._reply(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                healthy, text = health(metrics, stall_timeout_s)
                self._reply(200 if healthy else 503, text.encode() + b"\n")
            elif path == "/readyz":
                ready = metrics.ready._value.get() == 1  # the gauge is the single source of truth
                self._reply(200 if ready else 503, b"ready\n" if ready else b"not ready\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, status: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not worth a log line each
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="selectd-http", daemon=True).start()
    return server
