"""Live: the compose selectd config runs against the Tansu broker on a read-only root filesystem (a
private mount namespace with a tmpfs /tmp, as in the container), fed by the compose crawler's
command (loadtest.producer); every metric name a rule or panel uses must be exposed by that daemon,
the image's HEALTHCHECK command probes it, and a real Prometheus server scrapes it, loads the alert
rules and answers the dashboard's queries with data."""
from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, Topics, collect, create_topics
from deploy_helpers import (ALERTS, DEPLOY, MAIN_PANELS, PROMETHEUS_SYNTHETIC, alert_rules, command_options, compose,
                            container_path, dashboard, dashboard_targets, healthcheck_command, metric_names,
                            with_grafana_variables)
from loadtest.harness import DaemonProcess
from selectd.demo.broker import free_port


def http_json(url: str, timeout: float = 5) -> dict:
    return json.loads(urllib.request.urlopen(url, timeout=timeout).read())


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


class Prometheus:
    """/usr/bin/prometheus on a free port with a temp config that scrapes one target every second."""

    def __init__(self, workdir: Path, target: str):
        self.url = f"http://127.0.0.1:{free_port()}"
        config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                  "rule_files": [str(ALERTS)],
                  "scrape_configs": [{"job_name": "selectd", "static_configs": [{"targets": [target]}]}]}
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.log = open(workdir / "prometheus.log", "wb")
        self.process = subprocess.Popen(
            [shutil.which("prometheus") or "/usr/bin/prometheus", f"--config.file={workdir / 'prometheus.yml'}",
             f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address={self.url.removeprefix('http://')}"],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.log_path = workdir / "prometheus.log"

    def query(self, expr: str) -> list[dict]:
        body = http_json(f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert body["status"] == "success", body
        return body["data"]["result"]

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("prometheus exited:\n" + self.log_path.read_text()[-3000:])
        try:
            return urllib.request.urlopen(self.url + "/-/ready", timeout=2).status == 200
        except (urllib.error.URLError, ConnectionError):
            return False

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


# The container's filesystem, without a container: a private mount namespace where the root
# filesystem is read-only and HOME/TMPDIR point at a fresh tmpfs (the image's /tmp), with
# PYTHONDONTWRITEBYTECODE. The tmpfs goes on a new scratch directory, not over /tmp, so a checkout
# or virtualenv that happens to live under /tmp stays visible to the daemon.
READ_ONLY_ROOT = ("unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                  'scratch=$(mktemp -d) && mount -t tmpfs -o size=64m tmpfs "$scratch"'
                  ' && mount -o remount,bind,ro /'
                  ' && HOME="$scratch" TMPDIR="$scratch" PYTHONDONTWRITEBYTECODE=1 exec "$@"', "read-only-root")


def root_mountcommand_options(pid: int) -> set[str]:
    """Mount options of / as process ``pid`` sees it."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return set(fields[5].split(","))
    raise AssertionError(f"no / mount in /proc/{pid}/mountinfo")


BAD_LINES = [b"{not json", b'{"id": "no-text"}', b'{"id": 7, "text": "id is a number"}', b"[1, 2]"]


@pytest.fixture(scope="module")
def live(broker, sample_corpus, redis_server, tmp_path_factory):
    """The compose selectd config running against Tansu (and a redis-server for its dedup stages) on a
    read-only root filesystem, fed by the compose crawler's command, scraped every second by a real
    Prometheus that loads the alert rules."""
    workdir = tmp_path_factory.mktemp("deploy-live")
    topics = Topics(partitions=3)
    create_topics(broker, topics)
    corpus = workdir / "corpus.jsonl"
    real_lines = sample_corpus.read_bytes().splitlines()[:1200]
    corpus.write_bytes(b"\n".join(real_lines + BAD_LINES) + b"\n")
    n_messages = len(real_lines) + len(BAD_LINES)

    services = compose()["services"]
    config_path = workdir / "selectd.toml"  # a copy the reload test can break
    shutil.copyfile(container_path(services["selectd"], "/etc/selectd/selectd.toml"), config_path)
    daemon = DaemonProcess(config_path, workdir / "selectd.log",
                    f'kafka.bootstrap_servers=["{broker.bootstrap}"]', f"kafka.group_id={topics.group}",
                    f'kafka.input_topics=["{topics.input}"]', f"topics.accepted={topics.accepted}",
                    f"topics.rejected={topics.rejected}", f"topics.dlq={topics.dlq}",
                    "metrics.host=127.0.0.1", "metrics.port=0", "metrics.lag_interval_s=1",
                    # a group join waits about max_poll_interval_ms on Tansu: keep the test quick
                    "kafka.max_poll_interval_ms=5000", "kafka.session_timeout_ms=6000", "kafka.heartbeat_interval_ms=1000",
                    "batch.max_docs=100", "batch.linger_ms=50",
                    f"dedup.url={redis_server.url}", f"dedup.prefix={topics.tag}:", launcher=READ_ONLY_ROOT)
    prometheus = None
    try:
        metrics_url = daemon.metrics_url()
        assert "ro" in root_mountcommand_options(daemon.process.pid), "the daemon runs with a read-only root filesystem"
        target = urllib.parse.urlparse(metrics_url).netloc
        prometheus = Prometheus(workdir, target)
        wait_for(prometheus.ready, 30, "prometheus ready")
        daemon.wait_for_event("partitions assigned")
        # The compose crawler's command line, pointed at the test broker and corpus.
        command = services["crawler"]["entrypoint"] + services["crawler"]["command"]
        options = command_options(command)
        args = [sys.executable, *command[1:3]]  # -m loadtest.producer
        for option, value in options.items():
            value = {"--bootstrap": broker.bootstrap, "--topic": topics.input, "--corpus": str(corpus),
                     "--rate": "400"}.get(option, value)
            if option != "--loop":
                args += [option, value] if value else [option]
        produced = subprocess.run(args + ["--count", str(n_messages)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert produced.returncode == 0, produced.stderr
        assert f"sent {n_messages} messages" in produced.stderr
        out = collect(broker, [topics.accepted, topics.rejected, topics.dlq], n_messages, timeout_s=120)
        assert len({m.offset for m in out if m.topic == topics.dlq}) >= len(BAD_LINES)
        yield {"daemon": daemon, "metrics_url": metrics_url, "prometheus": prometheus, "n_messages": n_messages,
               "config_path": config_path}
    finally:
        if prometheus:
            prometheus.close()
        daemon.close()
        config_path.unlink(missing_ok=True)


def exposed_names(exposition: str) -> tuple[set[str], set[str]]:
    """(every series name the daemon declares, the names that have samples in this scrape)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    declared, sampled = set(), set()
    for family in text_string_to_metric_families(exposition):
        declared.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        sampled.update(sample.name for sample in family.samples)
    return declared | sampled, sampled


def test_every_metric_a_rule_or_panel_uses_is_exposed_by_the_daemon(live):
    exposition = urllib.request.urlopen(live["metrics_url"], timeout=5).read().decode()
    declared, _ = exposed_names(exposition)
    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alert {rule['alert']}")
    for title, expr in dashboard_targets():
        for name in metric_names(with_grafana_variables(expr)):
            used.setdefault(name, set()).add(f"panel {title!r}")
    for variable in dashboard()["templating"]["list"]:
        for name in re.findall(r"label_values\((\w+)", variable.get("definition", "")):
            used.setdefault(name, set()).add(f"variable {variable['name']}")
    missing = {name: sorted(where) for name, where in used.items()
               if name not in declared and name not in PROMETHEUS_SYNTHETIC}
    assert not missing, f"not exposed by the daemon: {missing}"
    assert len(used) >= 15, "the extraction found the metrics"


def test_dockerfile_healthcheck_command_probes_the_daemon(live):
    command = healthcheck_command(DEPLOY / "Dockerfile")
    command[0] = sys.executable  # the image's `python`
    health_url = live["metrics_url"].rsplit("/", 1)[0] + "/healthz"
    assert subprocess.run(command, env={"SELECTD_HEALTH_URL": health_url}, timeout=10).returncode == 0
    dead = subprocess.run(command, env={"SELECTD_HEALTH_URL": f"http://127.0.0.1:{free_port()}/healthz"},
                          capture_output=True, timeout=10)
    assert dead.returncode != 0, "a daemon that does not answer is unhealthy"


def test_real_prometheus_scrapes_the_daemon_and_the_dashboard_shows_data(live):
    prometheus: Prometheus = live["prometheus"]
    wait_for(lambda: prometheus.query('up{job="selectd"} == 1'), 30, "a successful scrape")
    n = live["n_messages"]
    wait_for(lambda: (r := prometheus.query("sum(selectd_documents_in_total)")) and float(r[0]["value"][1]) >= n,
             60, f"documents_in to reach {n} in Prometheus")
    exposition = urllib.request.urlopen(live["metrics_url"], timeout=5).read().decode()
    _, sampled = exposed_names(exposition)
    answered, empty = set(), []
    for title, expr in dashboard_targets():
        names = metric_names(with_grafana_variables(expr))
        if not names <= sampled:
            continue  # a series that exists only once its event happened (e.g. produce failures)
        if prometheus.query(with_grafana_variables(expr)):
            answered.add(title)
        else:
            empty.append((title, expr))
    assert not empty, f"queries that returned nothing: {empty}"
    assert MAIN_PANELS <= answered, f"main panels without data: {MAIN_PANELS - answered}"
    # The numbers are the daemon's: every input counted once, DLQ and rejections seen.
    outputs = prometheus.query("sum by (outcome) (selectd_documents_out_total)")
    by_outcome = {r["metric"]["outcome"]: float(r["value"][1]) for r in outputs}
    assert sum(by_outcome.values()) == n
    assert by_outcome["dlq"] >= len(BAD_LINES) and by_outcome["rejected"] > 0 and by_outcome["accepted"] > 0


def test_real_prometheus_evaluates_every_alert_rule(live):
    prometheus: Prometheus = live["prometheus"]

    def evaluated() -> list[dict] | None:
        rules = [rule for group in http_json(prometheus.url + "/api/v1/rules")["data"]["groups"] for rule in group["rules"]]
        return rules if rules and all(rule.get("lastEvaluation", "").startswith("20") and rule["health"] != "unknown"
                                      for rule in rules) else None

    rules = wait_for(evaluated, 30, "every rule evaluated")
    assert {rule["name"] for rule in rules} == {rule["alert"] for rule in alert_rules()}
    assert all(rule["health"] == "ok" for rule in rules), [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    # Nothing is wrong with a daemon that just processed its input: no alert may be firing.
    firing = [alert["labels"]["alertname"] for alert in http_json(prometheus.url + "/api/v1/alerts")["data"]["alerts"]
              if alert["state"] == "firing"]
    assert not firing, firing


def test_failed_reload_keeps_the_daemon_serving_and_fires_its_alert(live):
    """Runs last: SIGHUP with a broken config, as an operator's bad ConfigMap edit would."""
    prometheus: Prometheus = live["prometheus"]
    daemon: DaemonProcess = live["daemon"]
    config_path: Path = live["config_path"]
    good = config_path.read_text()
    config_path.write_text(good + "\n[[stages]]\nname = \"broken\"\ntype = \"no_such_scorer\"\n")
    daemon.process.send_signal(signal.SIGHUP)
    firing = wait_for(lambda: prometheus.query('ALERTS{alertname="SelectdModelReloadFailed",alertstate="firing"}'),
                      30, "SelectdModelReloadFailed firing")
    assert firing[0]["metric"]["result"] == "failure"
    assert daemon.process.poll() is None
    readyz = live["metrics_url"].rsplit("/", 1)[0] + "/readyz"
    assert urllib.request.urlopen(readyz, timeout=5).status == 200, "still serving on the old config"
    config_path.write_text(good)
    daemon.process.send_signal(signal.SIGHUP)
    wait_for(lambda: prometheus.query('selectd_model_reloads_total{result="success"} > 0'), 30, "a successful reload")
