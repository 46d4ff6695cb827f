"""Write deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/alerts.yml.

The alert rules have one source, alerts.yml (what compose's Prometheus loads and promtool tests);
under prometheus-operator they travel as a PrometheusRule holding the same groups. Run
``python deploy/prometheus/prometheusrule.py`` (or ``make prometheusrule``) after editing alerts.yml;
the deploy tests fail while the two differ.
"""
from __future__ import annotations

from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ALERTS = HERE / "alerts.yml"
PROMETHEUS_RULE = HERE.parent / "k8s" / "base" / "prometheusrule.yaml"
HEADER = "# Generated from deploy/prometheus/alerts.yml by deploy/prometheus/prometheusrule.py: edit that file.\n"


def prometheus_rule(alerts: Path = ALERTS) -> str:
    groups = yaml.safe_load(alerts.read_text())["groups"]
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "selectd", "labels": {"app.kubernetes.io/name": "selectd"}},
            "spec": {"groups": groups}}
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=120)


if __name__ == "__main__":
    PROMETHEUS_RULE.write_text(prometheus_rule())
