"""deploy/compose.yaml: valid against the compose-spec schema, and its services fit together."""
from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

import yaml

from conftest import REPO
from deploy_helpers import DASHBOARD, command_options, compose, container_path, documented, run_tool
from selectd.config import load_config


def test_compose_file_matches_the_compose_spec(tmp_path):
    command = documented("check-jsonschema", "--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml")
    result = run_tool(*command)
    assert result.returncode == 0, result.stdout + result.stderr
    # The schema is strict enough to catch a misspelt key: the check is not a no-op.
    broken = compose()
    broken["services"]["selectd"]["read_only_root"] = True
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    result = run_tool(*command[:-1], str(tmp_path / "compose.yaml"))
    assert result.returncode == 1 and "read_only_root" in result.stdout + result.stderr


def test_compose_stack_is_wired_together():
    services = compose()["services"]
    assert {"kafka", "topics", "selectd", "crawler", "prometheus", "grafana", "redis"} <= set(services)
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert set(kafka["environment"]["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}, "KRaft, one node"

    selectd = services["selectd"]
    config = load_config(container_path(selectd, selectd["command"][selectd["command"].index("--config") + 1]))
    assert selectd["read_only"] is True and "/tmp" in selectd["tmpfs"]
    assert config.metrics.host == "0.0.0.0", "Prometheus scrapes it over the compose network"
    assert int(selectd["stop_grace_period"].rstrip("s")) > config.delivery.drain_timeout_s, "SIGTERM drain fits"
    assert selectd["depends_on"]["topics"]["condition"] == "service_completed_successfully"
    assert selectd["build"]["target"] == "runtime", "the daemon's image, not the last stage of the Dockerfile"

    # the dedup stages' store: the official Redis image, shared by every replica, durable, never evicting
    redis = services["redis"]
    assert redis["image"].startswith("redis:") and config.dedup.store == "redis"
    assert {s.type for s in config.stages if s.enabled} >= {"exact_dedup", "minhash_dedup"}
    url = urllib.parse.urlsplit(config.dedup.url)
    assert (url.hostname, url.port or 6379) == ("redis", 6379), "the compose service name and Redis' port"
    assert selectd["depends_on"]["redis"]["condition"] == "service_healthy" and "healthcheck" in redis
    server = command_options(redis["command"])
    assert server["--appendonly"] == "yes" and server["--appendfsync"] == "always", "claims on disk before the reply"
    assert server["--maxmemory-policy"] == "noeviction", "a full Redis refuses writes instead of forgetting keys"
    assert any(volume.split(":")[1] == "/data" for volume in redis["volumes"])

    created = dict(re.findall(r"^\s*create (\S+) (\d+)$", services["topics"]["command"][0], re.M))
    needed = {*config.kafka.input_topics, config.topics.accepted, config.topics.rejected, config.topics.dlq,
              *(route.topic for route in config.routes)}
    assert needed <= set(created), f"topics not created: {needed - set(created)}"
    # the example config's routes too: its quality stage is what a user adds once a model is mounted
    example_routes = {route.topic for route in load_config(REPO / "deploy" / "selectd.example.toml").routes}
    assert config.routes and example_routes and example_routes <= set(created), \
        f"routed topics not created: {example_routes - set(created)}"
    assert set(created) <= needed | example_routes, "every created topic is one a config uses"

    crawler = services["crawler"]
    assert crawler["entrypoint"] == ["python", "-m", "loadtest.producer"]
    options = command_options(crawler["command"])
    assert options["--topic"] == config.kafka.input_topics[0]
    assert options["--bootstrap"] in config.kafka.bootstrap_servers
    corpus_out = services["corpus"]["command"][0]
    assert options["--corpus"] == corpus_out, "the crawler replays what the corpus service wrote"
    assert container_path(crawler, "/opt/loadtest/loadtest") == (REPO / "loadtest").resolve()

    prometheus = services["prometheus"]
    prometheus_yml = container_path(prometheus, "/etc/prometheus/prometheus.yml")
    scrape = yaml.safe_load(prometheus_yml.read_text())
    for rule_file in scrape["rule_files"]:
        assert container_path(prometheus, str(Path("/etc/prometheus") / rule_file)).is_file()
    selectd_job = next(job for job in scrape["scrape_configs"] if job["job_name"] == "selectd")
    assert selectd_job["dns_sd_configs"][0]["names"] == ["selectd"]
    assert selectd_job["dns_sd_configs"][0]["port"] == config.metrics.port

    grafana = services["grafana"]
    provider = yaml.safe_load(container_path(grafana, "/etc/grafana/provisioning/dashboards/selectd.yaml").read_text())
    dashboards_dir = container_path(grafana, provider["providers"][0]["options"]["path"])
    assert (dashboards_dir / DASHBOARD.name).is_file()
    datasource = yaml.safe_load(container_path(grafana, "/etc/grafana/provisioning/datasources/prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
