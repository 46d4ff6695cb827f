"""deploy/prometheus: promtool checks the scrape config and every rule file, unit-tests when each
alert fires and stays silent, and the rules hold up anywhere (no job name, absent(), runbooks)."""
from __future__ import annotations

import re
import sys

import yaml

from deploy_helpers import ALERTS, DEPLOY, K8S, README, alert_rules, documented, run_tool, selectors

sys.path.insert(0, str(DEPLOY / "prometheus"))
from prometheusrule import prometheus_rule  # noqa: E402  (a script in deploy/, not a package)


def test_prometheus_config_and_alert_rules_pass_promtool():
    rules = run_tool(*documented("promtool", "check", "rules", "deploy/prometheus/alerts.yml"))
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = run_tool(*documented("promtool", "check", "config", "deploy/prometheus/prometheus.yml"))
    assert config.returncode == 0, config.stdout + config.stderr
    names = {rule["alert"] for rule in alert_rules()}
    assert {"SelectdConsumerLagGrowing", "SelectdDeadLetterRateHigh", "SelectdNoProgress", "SelectdModelReloadFailed",
            "SelectdDown", "SelectdAbsent", "SelectdRebalanceStorm", "SelectdNotReady"} <= names


# Alert unit tests for `promtool test rules`: (alert, input series, evaluate at, labels of the
# alerts expected to fire — none for a case that must stay silent). Series are one sample a minute.
# The job is a PodMonitor's ("namespace/name"), not compose's "selectd": no rule may depend on it.
_SERIES = 'instance="a:9108",job="ml/selectd"'
_A = {"instance": "a:9108", "job": "ml/selectd"}
ALERT_CASES = [
    # a replica that served selectd metrics stops answering (crashed, crash-looping)
    ("SelectdDown", {f"up{{{_SERIES}}}": "1 1 1 0x10", f"selectd_ready{{{_SERIES}}}": "1 1 1 _x10"}, "8m", [_A]),
    # a down target of a shared scrape job that never was selectd; a healthy replica beside it
    ("SelectdDown", {'up{instance="b:8080",job="ml/selectd"}': "0x10", f"up{{{_SERIES}}}": "1x10",
                     f"selectd_ready{{{_SERIES}}}": "1x10"}, "8m", []),
    # no selectd series anywhere (every replica gone, or never scraped): absent() fires
    ("SelectdAbsent", {'up{instance="b:8080",job="kubernetes-pods"}': "1x10"}, "8m", [{}]),
    ("SelectdAbsent", {f"selectd_ready{{{_SERIES}}}": "1x10"}, "8m", []),
    ("SelectdNotReady", {f"selectd_ready{{{_SERIES}}}": "0x10"}, "8m", [_A]),
    ("SelectdNotReady", {f"selectd_ready{{{_SERIES}}}": "0 0 0 1 1 1 1 1 1 1"}, "8m", []),
    ("SelectdBrokerUnreachable", {f"selectd_broker_up{{{_SERIES}}}": "0x10"}, "5m", [_A]),
    ("SelectdBrokerUnreachable", {f"selectd_broker_up{{{_SERIES}}}": "0 0 1 1 1 1 1 1 1 1"}, "5m", []),
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
     [{**_A, "result": "failure"}]),
    ("SelectdModelReloadFailed", {f'selectd_model_reloads_total{{{_SERIES},result="success"}}': "0 0 0 1 1 1",
                                  f'selectd_model_reloads_total{{{_SERIES},result="failure"}}': "0x5"}, "4m", []),
    ("SelectdRebalanceStorm", {f'selectd_rebalances_total{{{_SERIES},event="revoked"}}': "0+1x30"}, "25m", [{"instance": "a:9108"}]),
    ("SelectdRebalanceStorm", {f'selectd_rebalances_total{{{_SERIES},event="revoked"}}': "0 0 1 1 1 2 2 2 2 2 2 2 2 2 2 2 2 2 2 2"},
     "19m", []),
    ("SelectdProduceFailures", {f'selectd_produce_failures_total{{{_SERIES},topic="train",error="KafkaTimeoutError"}}': "0 0 3 3 3"},
     "3m", [{"instance": "a:9108", "topic": "train"}]),
    ("SelectdProduceFailures", {f'selectd_produce_failures_total{{{_SERIES},topic="train",error="KafkaTimeoutError"}}': "0x4"},
     "3m", []),
    ("SelectdCommitFailures", {f"selectd_commit_failures_total{{{_SERIES}}}": "0+1x15"}, "10m", [_A]),
    ("SelectdCommitFailures", {f"selectd_commit_failures_total{{{_SERIES}}}": "0 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1"}, "14m", []),
    # a retried batch failing on the store every minute (one series per dedup stage)
    ("SelectdDedupStoreFailing", {f'selectd_dedup_store_errors_total{{{_SERIES},stage="{stage}"}}': "0+2x20"
                                  for stage in ("exact", "near")}, "16m", [{"instance": "a:9108"}]),
    # a Redis restart: errors for two minutes, then none
    ("SelectdDedupStoreFailing", {f'selectd_dedup_store_errors_total{{{_SERIES},stage="exact"}}': "0 2 4 6 6 6 6 6 6 6 6 6 6 6 6 6 6 6 6 6"},
     "16m", []),
    # a signal's PSI above the daemon's exported bound for 15 minutes; a steady one beside it stays quiet
    ("SelectdScoreDrift", {f'selectd_signal_drift{{{_SERIES},stage="gopher",signal="stop_words"}}': "0.05 0.05 0.4x30",
                           f'selectd_signal_drift_bound{{{_SERIES},stage="gopher",signal="stop_words"}}': "0.25x32",
                           f'selectd_signal_drift{{{_SERIES},stage="gopher",signal="words"}}': "0.05x32",
                           f'selectd_signal_drift_bound{{{_SERIES},stage="gopher",signal="words"}}': "0.25x32"},
     "20m", [{**_A, "stage": "gopher", "signal": "stop_words"}]),
    # the same PSI under a higher configured bound, and a short spike above the default one: silent
    ("SelectdScoreDrift", {f'selectd_signal_drift{{{_SERIES},stage="gopher",signal="stop_words"}}': "0.4x30",
                           f'selectd_signal_drift_bound{{{_SERIES},stage="gopher",signal="stop_words"}}': "0.5x30",
                           f'selectd_signal_drift{{{_SERIES},stage="q",signal="hq_prob"}}': "0.1x10 0.4x5 0.1x15",
                           f'selectd_signal_drift_bound{{{_SERIES},stage="q",signal="hq_prob"}}': "0.25x30"}, "25m", []),
]


def test_alerts_fire_when_they_should_and_stay_silent_otherwise(tmp_path):
    """`promtool test rules` over synthetic series: every alert has a case where it fires (with the
    expected labels) and one where it must stay silent."""
    rules = yaml.safe_load(ALERTS.read_text())
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
    assert firing == silent == set(severity), f"without a firing case: {set(severity) - firing}; silent: {set(severity) - silent}"


def test_alerts_do_not_depend_on_a_job_name_and_cover_absence():
    """Kubernetes names scrape jobs after the PodMonitor or the annotation job, compose after its
    scrape config: a rule matching one job name would never fire under the others. Replicas that
    vanish from discovery leave no `up == 0` behind, so an absent() rule must catch them."""
    for rule in alert_rules():
        for selector in selectors(rule["expr"]):
            matched = {matcher.name for matcher in selector.matchers.matchers}
            assert "job" not in matched, f"{rule['alert']} selects a job: {rule['expr']}"
    assert any(re.search(r"\babsent\(", rule["expr"]) for rule in alert_rules())


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings (outside code blocks)."""
    text = re.sub(r"^```.*?^```", "", markdown, flags=re.M | re.S)
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", text, re.M)}


def test_every_alert_has_a_runbook_section():
    anchors = github_anchors(README.read_text())
    for rule in alert_rules():
        url = rule["annotations"].get("runbook_url", "")
        path, _, anchor = url.partition("#")
        assert path == "deploy/README.md" and anchor in anchors, f"{rule['alert']}: runbook_url {url!r} has no section"


def test_prometheus_rule_carries_the_alert_rules():
    """The PrometheusRule the kustomize base ships is alerts.yml's groups (make prometheusrule)."""
    committed = (K8S / "base" / "prometheusrule.yaml").read_text()
    assert committed == prometheus_rule(), "deploy/k8s/base/prometheusrule.yaml is stale: run `make prometheusrule`"
    assert yaml.safe_load(committed)["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"]
