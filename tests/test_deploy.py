"""deploy/: everything that can be validated without a Docker engine or a cluster.

- compose.yaml against the compose-spec schema (check-jsonschema's vendored copy) and its wiring
  (topics, mounts, config files, grace periods);
- prometheus.yml and alerts.yml with ``promtool check config`` / ``check rules``; every dashboard
  panel's PromQL parsed by promtool (as recording rules of a synthetic rules file);
- the Kubernetes manifests against the Kubernetes OpenAPI schemas (kubernetes-validate, strict);
  the KEDA ScaledObjects (a CRD, not in those schemas) against a schema of the CRD's fields, their
  HPA behaviour against the autoscaling/v2 schema, and cross-checked with the config and topics;
- both Dockerfiles' instructions; the HEALTHCHECK command and the with-models manifest check are
  executed for real;
- live: the compose selectd config runs against the Tansu broker on a read-only root filesystem
  (a private mount namespace with a tmpfs /tmp, as in the container), fed by the compose crawler's
  command (loadtest.producer); every metric name used by a rule or panel must be exposed by that
  daemon, and a real Prometheus server scrapes it, loads the alert rules and answers the
  dashboard's queries with data.
"""
from __future__ import annotations

import copy
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml
from dockerfile_parse import DockerfileParser
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, Topics, collect, create_topics
from loadtest.harness import DaemonProcess
from selectd.config import Config, config_from_dict, load_config
from selectd.demo.broker import free_port

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
K8S_VERSION = "1.31.0"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "selectd.json"
# Grafana's variables, replaced by what an "All" selection over a short range expands to.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*"}
# Metrics Prometheus makes itself, not the daemon.
PROMETHEUS_SYNTHETIC = {"up"}
# Panels that must show data as soon as a daemon has processed documents (item 5 of the issue).
MAIN_PANELS = {"Documents in / s", "Documents out / s by outcome", "Consumer lag by topic",
               "Rejections / s by stage and reason", "Dead letters / s by reason",
               "Batch duration (poll to commit)", "Stage duration p99 per batch", "Assigned partitions"}


def bin_path(name: str) -> str:
    """A console script of this venv (check-jsonschema), else one on PATH (promtool)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or pytest.fail(f"{name} not installed (make test installs it)"))


def run_tool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([bin_path(args[0]), *args[1:]], capture_output=True, text=True, timeout=120)


def load_yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_targets() -> list[tuple[str, str]]:
    """(panel title, expr) of every query of every panel."""
    return [(panel["title"], target["expr"]) for panel in dashboard()["panels"] if panel["type"] != "row"
            for target in panel["targets"]]


def with_grafana_variables(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
            for rule in group["rules"]]


def metric_names(expr: str) -> set[str]:
    """Metric names selected anywhere in a PromQL expression (walks the parsed AST)."""
    names: set[str] = set()

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            return
        if isinstance(node, promql_parser.MatrixSelector):
            walk(node.vector_selector)
            return
        for attr in ("lhs", "rhs", "expr", "param"):
            child = getattr(node, attr, None)
            if child is not None:
                walk(child)
        for arg in getattr(node, "args", None) or []:
            walk(arg)

    walk(promql_parser.parse(expr))
    return names


# ---------------------------------------------------------------------------------------------
# compose


def test_compose_file_matches_the_compose_spec(tmp_path):
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    # The schema is strict enough to catch a misspelt key: the check is not a no-op.
    broken = compose()
    broken["services"]["selectd"]["read_only_root"] = True
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    result = run_tool("check-jsonschema", "--builtin-schema", "vendor.compose-spec", str(tmp_path / "compose.yaml"))
    assert result.returncode == 1 and "read_only_root" in result.stdout + result.stderr


def _container_path(service: dict, container_path: str) -> Path:
    """The repository file a service sees at ``container_path`` through a bind mount."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(".") and (container_path == target or container_path.startswith(target + "/")):
            return (DEPLOY / source / container_path[len(target):].lstrip("/")).resolve()
    raise AssertionError(f"nothing is mounted at {container_path}")


def test_compose_stack_is_wired_together():
    services = compose()["services"]
    assert {"kafka", "topics", "selectd", "crawler", "prometheus", "grafana"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, "KRaft, one node"

    selectd = services["selectd"]
    config = load_config(_container_path(selectd, selectd["command"][selectd["command"].index("--config") + 1]))
    assert selectd["read_only"] is True and "/tmp" in selectd["tmpfs"]
    assert config.metrics.host == "0.0.0.0", "Prometheus scrapes it over the compose network"
    assert int(selectd["stop_grace_period"].rstrip("s")) > config.delivery.drain_timeout_s, "SIGTERM drain fits"
    assert selectd["depends_on"]["topics"]["condition"] == "service_completed_successfully"

    created = dict(re.findall(r"^\s*create (\S+) (\d+)$", services["topics"]["command"][0], re.M))
    needed = {*config.kafka.input_topics, config.topics.accepted, config.topics.rejected, config.topics.dlq,
              *(route.topic for route in config.routes)}
    assert needed <= set(created), f"topics not created: {needed - set(created)}"

    crawler = services["crawler"]
    assert crawler["entrypoint"] == ["python", "-m", "loadtest.producer"]
    options = _options(crawler["command"])
    assert options["--topic"] == config.kafka.input_topics[0]
    assert options["--bootstrap"] in config.kafka.bootstrap_servers
    corpus_out = services["corpus"]["command"][0]
    assert options["--corpus"] == corpus_out, "the crawler replays what the corpus service wrote"
    assert _container_path(crawler, "/opt/loadtest/loadtest") == (REPO / "loadtest").resolve()

    prometheus = services["prometheus"]
    prometheus_yml = _container_path(prometheus, "/etc/prometheus/prometheus.yml")
    scrape = yaml.safe_load(prometheus_yml.read_text())
    for rule_file in scrape["rule_files"]:
        assert _container_path(prometheus, str(Path("/etc/prometheus") / rule_file)).is_file()
    selectd_job = next(job for job in scrape["scrape_configs"] if job["job_name"] == "selectd")
    assert selectd_job["dns_sd_configs"][0]["names"] == ["selectd"]
    assert selectd_job["dns_sd_configs"][0]["port"] == config.metrics.port

    grafana = services["grafana"]
    provider = yaml.safe_load(_container_path(grafana, "/etc/grafana/provisioning/dashboards/selectd.yaml").read_text())
    dashboards_dir = _container_path(grafana, provider["providers"][0]["options"]["path"])
    assert (dashboards_dir / DASHBOARD.name).is_file()
    datasource = yaml.safe_load(_container_path(grafana, "/etc/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def _options(command: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line (flags without a value map to "")."""
    out: dict[str, str] = {}
    for i, item in enumerate(command):
        if item.startswith("--"):
            nxt = command[i + 1] if i + 1 < len(command) else ""
            out[item] = "" if nxt.startswith("--") else nxt
    return out


# ---------------------------------------------------------------------------------------------
# Prometheus rules, scrape config, dashboard PromQL


def test_prometheus_config_and_alert_rules_pass_promtool():
    rules = run_tool("promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = run_tool("promtool", "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    names = {rule["alert"] for rule in alert_rules()}
    # The alerts the issue asks for: lag growing, DLQ rate, no progress, model (re)load failures,
    # rebalance storms, not ready.
    assert {"SelectdConsumerLagGrowing", "SelectdDeadLetterRateHigh", "SelectdNoProgress", "SelectdModelReloadFailed",
            "SelectdDown", "SelectdRebalanceStorm", "SelectdNotReady"} <= names


# Alert unit tests for `promtool test rules`: (alert, input series, evaluate at, labels of the
# alerts expected to fire — none for a case that must stay silent). Series are one sample a minute.
_SERIES = 'instance="a:9108",job="selectd"'
ALERT_CASES = [
    ("SelectdDown", {f"up{{{_SERIES}}}": "0x10"}, "5m", [{"instance": "a:9108", "job": "selectd"}]),
    ("SelectdDown", {f"up{{{_SERIES}}}": "1x10"}, "5m", []),
    ("SelectdNotReady", {f"selectd_ready{{{_SERIES}}}": "0x10"}, "8m", [{"instance": "a:9108", "job": "selectd"}]),
    ("SelectdNotReady", {f"selectd_ready{{{_SERIES}}}": "0 0 0 1 1 1 1 1 1 1"}, "8m", []),
    ("SelectdBrokerUnreachable", {f"selectd_broker_up{{{_SERIES}}}": "0x10"}, "5m", [{"instance": "a:9108", "job": "selectd"}]),
    # 2 partitions, 6,000 each and growing by 100 a minute: over 10,000 in total and rising.
    ("SelectdConsumerLagGrowing", {f'selectd_consumer_lag_messages{{{_SERIES},topic="raw",partition="{p}"}}': "6000+100x40"
                                   for p in (0, 1)}, "30m", [{"topic": "raw"}]),
    # high but steady (being worked off as fast as it comes): no alert
    ("SelectdConsumerLagGrowing", {f'selectd_consumer_lag_messages{{{_SERIES},topic="raw",partition="0"}}': "20000x40"}, "30m", []),
    ("SelectdNoProgress", {f'selectd_documents_in_total{{{_SERIES},topic="raw"}}': "100x30",
                           f'selectd_consumer_lag_messages{{{_SERIES},topic="raw",partition="0"}}': "500x30"},
     "20m", [{"instance": "a:9108"}]),
    # idle: nothing consumed because nothing is waiting
    ("SelectdNoProgress", {f'selectd_documents_in_total{{{_SERIES},topic="raw"}}': "100x30",
                           f'selectd_consumer_lag_messages{{{_SERIES},topic="raw",partition="0"}}': "0x30"}, "20m", []),
    # busy: lag waiting but documents flowing
    ("SelectdNoProgress", {f'selectd_documents_in_total{{{_SERIES},topic="raw"}}': "0+100x30",
                           f'selectd_consumer_lag_messages{{{_SERIES},topic="raw",partition="0"}}': "500x30"}, "20m", []),
    ("SelectdDeadLetterRateHigh", {f'selectd_documents_in_total{{{_SERIES},topic="raw"}}': "0+100x40",
                                   f'selectd_dead_letters_total{{{_SERIES},reason="invalid_json"}}': "0+10x40"}, "30m", [{}]),
    ("SelectdDeadLetterRateHigh", {f'selectd_documents_in_total{{{_SERIES},topic="raw"}}': "0+100x40",
                                   f'selectd_dead_letters_total{{{_SERIES},reason="invalid_json"}}': "0+1x40"}, "30m", []),
    ("SelectdModelReloadFailed", {f'selectd_model_reloads_total{{{_SERIES},result="failure"}}': "0 0 0 1 1 1"}, "4m",
     [{"instance": "a:9108", "job": "selectd", "result": "failure"}]),
    ("SelectdModelReloadFailed", {f'selectd_model_reloads_total{{{_SERIES},result="success"}}': "0 0 0 1 1 1",
                                  f'selectd_model_reloads_total{{{_SERIES},result="failure"}}': "0x5"}, "4m", []),
    ("SelectdRebalanceStorm", {f'selectd_rebalances_total{{{_SERIES},event="revoked"}}': "0+1x30"}, "25m", [{"instance": "a:9108"}]),
    ("SelectdRebalanceStorm", {f'selectd_rebalances_total{{{_SERIES},event="revoked"}}': "0 0 1 1 1 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2"},
     "19m", []),
    ("SelectdProduceFailures", {f'selectd_produce_failures_total{{{_SERIES},topic="train",error="KafkaTimeoutError"}}': "0 0 3 3 3"},
     "3m", [{"instance": "a:9108", "topic": "train"}]),
    ("SelectdCommitFailures", {f"selectd_commit_failures_total{{{_SERIES}}}": "0+1x15"}, "10m", [{"instance": "a:9108", "job": "selectd"}]),
    ("SelectdCommitFailures", {f"selectd_commit_failures_total{{{_SERIES}}}": "0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"}, "14m", []),
]


def test_alerts_fire_when_they_should_and_stay_silent_otherwise(tmp_path):
    """`promtool test rules` over synthetic series, every alert with a firing and a silent case."""
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in alert_rules()}
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations")  # promtool compares annotations too; these tests are about when alerts fire
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    tests = [{"interval": "1m",
              "input_series": [{"series": series, "values": values} for series, values in inputs.items()],
              "alert_rule_test": [{"eval_time": at, "alertname": alert,
                                   "exp_alerts": [{"exp_labels": {**labels, "severity": severity[alert]}} for labels in expected]}]}
             for alert, inputs, at, expected in ALERT_CASES]
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump({"rule_files": ["alerts.yml"], "evaluation_interval": "1m",
                                                              "tests": tests}))
    result = run_tool("promtool", "test", "rules", str(tmp_path / "alerts_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    firing = {alert for alert, _, _, expected in ALERT_CASES if expected}
    silent = {alert for alert, _, _, expected in ALERT_CASES if not expected}
    assert firing == set(severity), f"alerts never shown to fire: {set(severity) - firing}"
    assert silent >= set(severity) - {"SelectdBrokerUnreachable", "SelectdProduceFailures"}, "most have a silent case too"


def test_every_dashboard_query_parses_with_promtool(tmp_path):
    targets = dashboard_targets()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": with_grafana_variables(expr)} for i, (_, expr) in enumerate(targets)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run_tool("promtool", "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(targets)} rules found" in result.stdout
    # promtool really parses the expressions: a broken one fails.
    path.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(a[1m])"}]}]}))
    assert run_tool("promtool", "check", "rules", str(path)).returncode != 0


def test_dashboard_is_provisionable():
    board = dashboard()
    provisioned = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    uid = provisioned["datasources"][0]["uid"]
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == uid, panel["title"]
        assert panel["targets"] and all(t["datasource"]["uid"] == uid for t in panel["targets"]), panel["title"]
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    boxes = [(panel["title"], panel["gridPos"]) for panel in board["panels"]]
    for i, (title, a) in enumerate(boxes):
        for other, b in boxes[i + 1:]:
            overlap = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
            assert not overlap, f"panels {title!r} and {other!r} overlap"
    assert MAIN_PANELS <= {title for title, _ in dashboard_targets()}
    variable = board["templating"]["list"][0]
    assert variable["datasource"]["uid"] == uid and "$" + variable["name"] in GRAFANA_VARIABLES


# ---------------------------------------------------------------------------------------------
# Kubernetes


def k8s_documents() -> list[tuple[Path, dict]]:
    return [(path, doc) for path in sorted(K8S.rglob("*.yaml")) for doc in load_yaml_docs(path)]


def by_kind(kind: str, directory: Path) -> list[dict]:
    return [doc for path, doc in k8s_documents() if doc["kind"] == kind and path.parent == directory]


def test_kubernetes_manifests_match_the_kubernetes_schemas():
    validated = set()
    for path, doc in k8s_documents():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue  # a CRD: see test_keda_scaled_objects
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        validated.add(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= validated
    # strict validation rejects an unknown field: the check is not a no-op.
    deployment = copy.deepcopy(by_kind("Deployment", K8S)[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# The fields of keda.sh/v1alpha1 ScaledObject (KEDA's CRD) that these manifests may use. Trigger
# metadata values are strings in the CRD (additionalProperties: string); the kafka scaler's keys
# are from its documentation.
KAFKA_TRIGGER_KEYS = {"bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
                      "offsetResetPolicy", "allowIdleConsumers", "scaleToZeroOnInvalidOffset",
                      "excludePersistentLag", "limitToPartitionsWithLag", "version", "partitionLimitation", "sasl", "tls"}
SCALED_OBJECT_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": {"type": "object", "required": ["name"]},
        "spec": {
            "type": "object",
            "required": ["scaleTargetRef", "triggers"],
            "additionalProperties": False,
            "properties": {
                "scaleTargetRef": {"type": "object", "required": ["name"], "additionalProperties": False,
                                   "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                                  "apiVersion": {"type": "string"}, "envSourceContainerName": {"type": "string"}}},
                "pollingInterval": {"type": "integer", "minimum": 1},
                "cooldownPeriod": {"type": "integer", "minimum": 0},
                "initialCooldownPeriod": {"type": "integer", "minimum": 0},
                "idleReplicaCount": {"type": "integer", "minimum": 0},
                "minReplicaCount": {"type": "integer", "minimum": 0},
                "maxReplicaCount": {"type": "integer", "minimum": 1},
                "fallback": {"type": "object"},
                "advanced": {"type": "object", "additionalProperties": False, "properties": {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": {"type": "object", "additionalProperties": False, "properties": {
                        "name": {"type": "string"}, "behavior": {"type": "object"}}},
                    "scalingModifiers": {"type": "object"}}},
                "triggers": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "required": ["type", "metadata"], "additionalProperties": False,
                    "properties": {
                        "type": {"type": "string"}, "name": {"type": "string"}, "useCachedMetrics": {"type": "boolean"},
                        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                        "authenticationRef": {"type": "object", "required": ["name"]},
                        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                    "if": {"properties": {"type": {"const": "kafka"}}},
                    "then": {"properties": {"metadata": {
                        "required": ["bootstrapServers", "consumerGroup", "topic", "lagThreshold"],
                        "propertyNames": {"enum": sorted(KAFKA_TRIGGER_KEYS)}}}},
                }},
            },
        },
    },
}


def _partitions_created(job: dict) -> dict[str, int]:
    script = job["spec"]["template"]["spec"]["containers"][0]["args"][0]
    return {topic: int(n) for topic, n in re.findall(r"^\s*create (\S+) (\d+)$", script, re.M)}


def _selectd_config(configmap: dict) -> Config:
    return config_from_dict(tomllib.loads(configmap["data"]["selectd.toml"]))


@pytest.mark.parametrize("directory", [K8S, K8S / "gpu"], ids=["cpu", "gpu"])
def test_keda_scaled_objects(directory):
    partitions = _partitions_created(next(doc for doc in by_kind("Job", K8S) if doc["metadata"]["name"] == "selectd-topics"))
    (scaled,) = by_kind("ScaledObject", directory)
    jsonschema.validate(scaled, SCALED_OBJECT_SCHEMA)
    spec = scaled["spec"]
    # The HPA behaviour KEDA passes through is autoscaling/v2's: validate it with that schema.
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "probe"},
           "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec["scaleTargetRef"]["name"]},
                    "minReplicas": spec["minReplicaCount"], "maxReplicas": spec["maxReplicaCount"],
                    "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]}}
    kubernetes_validate.validate(hpa, K8S_VERSION, strict=True)

    (deployment,) = by_kind("Deployment", directory)
    assert spec["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    (configmap,) = by_kind("ConfigMap", directory)
    config = _selectd_config(configmap)
    (trigger,) = spec["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert metadata["consumerGroup"] == config.kafka.group_id
    assert metadata["topic"] in config.kafka.input_topics
    assert set(metadata["bootstrapServers"].split(",")) == set(config.kafka.bootstrap_servers)
    assert spec["maxReplicaCount"] == partitions[metadata["topic"]], "max replicas = partitions of the input topic"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    with pytest.raises(jsonschema.ValidationError):  # numbers where KEDA wants strings are caught
        broken = copy.deepcopy(scaled)
        broken["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 5000
        jsonschema.validate(broken, SCALED_OBJECT_SCHEMA)


@pytest.mark.parametrize("directory", [K8S, K8S / "gpu"], ids=["cpu", "gpu"])
def test_kubernetes_deployment_fits_its_config_and_image(directory):
    (deployment,) = by_kind("Deployment", directory)
    (configmap,) = by_kind("ConfigMap", directory)
    config = _selectd_config(configmap)
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["run", "--config", "/etc/selectd/selectd.toml"]
    config_volume = next(v for v in pod["volumes"] if v.get("configMap"))
    assert config_volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["metrics"] == config.metrics.port
    assert config.metrics.host == "0.0.0.0"
    assert pod["terminationGracePeriodSeconds"] > config.delivery.drain_timeout_s, "SIGTERM drain fits"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {m["mountPath"] for m in container["volumeMounts"]} >= {"/tmp", "/models", "/etc/selectd"}
    assert pod["securityContext"]["runAsUser"] == int(_dockerfile_arg(DEPLOY / "Dockerfile", "SELECTD_UID"))
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    for kind in ("Service", "PodDisruptionBudget"):
        (selector_owner,) = by_kind(kind, K8S)
        selector = selector_owner["spec"]["selector"]
        selector = selector.get("matchLabels", selector)
        assert selector.items() <= labels.items(), f"the {kind} selects these pods"
    if directory.name == "gpu":
        assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
        assert container["image"].endswith(":cuda")
        assert any(stage.options.get("provider") == "cuda" for stage in config.stages), "a stage runs on the GPU"


# ---------------------------------------------------------------------------------------------
# Dockerfiles


def _instructions(path: Path) -> list[dict]:
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes())).structure


def _dockerfile_arg(path: Path, name: str) -> str:
    for item in _instructions(path):
        if item["instruction"] == "ARG" and item["value"].startswith(name + "="):
            return item["value"].split("=", 1)[1]
    raise AssertionError(f"{path}: no ARG {name}=...")


def _stage(instructions: list[dict], name: str) -> list[dict]:
    """Instructions of the stage ``FROM ... AS name``."""
    out: list[dict] | None = None
    for item in instructions:
        if item["instruction"] == "FROM":
            if out is not None:
                break
            if item["value"].split()[-1] == name:
                out = []
        elif out is not None:
            out.append(item)
    assert out is not None, f"no stage {name}"
    return out


def _env(stage: list[dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in stage:
        if item["instruction"] == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", item["value"]))
    return env


def _healthcheck_command(path: Path) -> list[str]:
    (healthcheck,) = [i for i in _instructions(path) if i["instruction"] == "HEALTHCHECK"]
    return json.loads(healthcheck["value"].split("CMD", 1)[1])


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_runtime_stage(name):
    path = DEPLOY / name
    instructions = _instructions(path)
    runtime = _stage(instructions, "runtime")
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    uid = users[-1].split(":")[0].replace("${SELECTD_UID}", _dockerfile_arg(path, "SELECTD_UID"))
    assert uid.isdigit() and int(uid) != 0, f"runs as a non-root user, not {users[-1]!r}"
    env = _env(runtime)
    assert env["HOME"] == env["TMPDIR"] == "/tmp", "the only writable place with a read-only root filesystem"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert _healthcheck_command(path)[:2] == ["python", "-c"]
    assert "/healthz" in env["SELECTD_HEALTH_URL"]
    entry = next(i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT")
    assert json.loads(entry) == ["selectd"]
    for item in instructions:  # every build-context source exists
        if item["instruction"] == "COPY" and "--from" not in item["value"]:
            for source in item["value"].split()[:-1]:
                if not source.startswith("--") and "$" not in source:
                    assert (REPO / source).exists(), f"{name}: COPY {source}: missing"
    base = _dockerfile_arg(path, "CUDA_IMAGE" if name.endswith("cuda") else "PYTHON_IMAGE")
    if name.endswith("cuda"):
        assert base.startswith("nvidia/cuda:") and "runtime" in base
        assert "onnxruntime-gpu" in " ".join(i["value"] for i in instructions if i["instruction"] == "RUN")
    else:
        assert base.startswith("python:3.11-slim")


def test_image_install_includes_every_module():
    """The images `pip install .`: every directory of committed selectd modules must be a package
    setuptools finds with the project's own settings, or the image would miss it."""
    from setuptools import find_packages

    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = set(find_packages(where=str(REPO), include=find["include"]))
    tracked = subprocess.run(["git", "ls-files", "selectd"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    module_dirs = {str(Path(name).parent).replace("/", ".") for name in tracked.split() if name.endswith(".py")}
    assert module_dirs and module_dirs <= packages, f"not installed by pip install .: {module_dirs - packages}"


def test_baked_models_are_checked_at_build(tmp_path):
    """Run the with-models stage's RUN step against a real model directory, then a corrupted one."""
    from selectd.models.manifest import write_manifest

    (step,) = [i["value"] for i in _stage(_instructions(DEPLOY / "Dockerfile"), "with-models") if i["instruction"] == "RUN"]
    models = tmp_path / "models"
    model = models / "tiny"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\x00" * 64)
    write_manifest(model, "hf_classifier", {"labels": ["a"]})
    script = step.replace("/models", str(models))

    def run_step() -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                              env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})

    ok = run_step()
    assert ok.returncode == 0 and "hf_classifier" in ok.stdout, ok.stderr
    (model / "weights.bin").write_bytes(b"\x01" * 64)
    bad = run_step()
    assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr


# ---------------------------------------------------------------------------------------------
# Live: the compose config against the test broker, scraped by a real Prometheus


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
                  "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
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


def root_mount_options(pid: int) -> set[str]:
    """Mount options of / as process ``pid`` sees it."""
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/":
            return set(fields[5].split(","))
    raise AssertionError(f"no / mount in /proc/{pid}/mountinfo")


BAD_LINES = [b"{not json", b'{"id": "no-text"}', b'{"id": 7, "text": "id is a number"}', b"[1, 2]"]


@pytest.fixture(scope="module")
def live(broker, sample_corpus, tmp_path_factory):
    """The compose selectd config running against Tansu on a read-only root filesystem, fed by the
    compose crawler's command, scraped every second by a real Prometheus that loads the alert rules."""
    workdir = tmp_path_factory.mktemp("deploy-live")
    topics = Topics(partitions=3)
    create_topics(broker, topics)
    corpus = workdir / "corpus.jsonl"
    real_lines = sample_corpus.read_bytes().splitlines()[:1200]
    corpus.write_bytes(b"\n".join(real_lines + BAD_LINES) + b"\n")
    n_messages = len(real_lines) + len(BAD_LINES)

    services = compose()["services"]
    config_path = workdir / "selectd.toml"  # a copy the reload test can break
    shutil.copyfile(_container_path(services["selectd"], "/etc/selectd/selectd.toml"), config_path)
    daemon = DaemonProcess(config_path, workdir / "selectd.log",
                    f'kafka.bootstrap_servers=["{broker.bootstrap}"]', f"kafka.group_id={topics.group}",
                    f'kafka.input_topics=["{topics.input}"]', f"topics.accepted={topics.accepted}",
                    f"topics.rejected={topics.rejected}", f"topics.dlq={topics.dlq}",
                    "metrics.host=127.0.0.1", "metrics.port=0", "metrics.lag_interval_s=1",
                    # a group join waits about max_poll_interval_ms on Tansu: keep the test quick
                    "kafka.max_poll_interval_ms=5000", "kafka.session_timeout_ms=6000", "kafka.heartbeat_interval_ms=1000",
                    "batch.max_docs=100", "batch.linger_ms=50", launcher=READ_ONLY_ROOT)
    prometheus = None
    try:
        metrics_url = daemon.metrics_url()
        assert "ro" in root_mount_options(daemon.process.pid), "the daemon runs with a read-only root filesystem"
        target = urllib.parse.urlparse(metrics_url).netloc
        prometheus = Prometheus(workdir, target)
        wait_for(prometheus.ready, 30, "prometheus ready")
        daemon.wait_for_event("partitions assigned")
        # The compose crawler's command line, pointed at the test broker and corpus.
        command = services["crawler"]["entrypoint"] + services["crawler"]["command"]
        options = _options(command)
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
        for name in re.findall(r"label_values\((\w+)", variable["definition"]):
            used.setdefault(name, set()).add(f"variable {variable['name']}")
    missing = {name: sorted(where) for name, where in used.items()
               if name not in declared and name not in PROMETHEUS_SYNTHETIC}
    assert not missing, f"not exposed by the daemon: {missing}"
    assert len(used) >= 15, "the extraction found the metrics"


def test_dockerfile_healthcheck_command_probes_the_daemon(live):
    command = _healthcheck_command(DEPLOY / "Dockerfile")
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
