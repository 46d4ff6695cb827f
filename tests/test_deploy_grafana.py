"""deploy/grafana: every dashboard query parses (promtool), the dashboard is provisionable and
works against any Prometheus datasource (a datasource variable, no fixed uid)."""
from __future__ import annotations

import yaml

from deploy_helpers import GRAFANA_VARIABLES, MAIN_PANELS, dashboard, dashboard_targets, run_tool, with_grafana_variables

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


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


def datasources(node) -> list[dict]:
    """Every ``datasource`` object anywhere in the dashboard."""
    if isinstance(node, dict):
        own = [node["datasource"]] if isinstance(node.get("datasource"), dict) else []
        return own + [found for value in node.values() for found in datasources(value)]
    if isinstance(node, list):
        return [found for value in node for found in datasources(value)]
    return []


def test_dashboard_is_provisionable_on_any_prometheus():
    board = dashboard()
    variables = board["templating"]["list"]
    datasource = next(v for v in variables if v["type"] == "datasource")
    assert datasource["name"] == "datasource" and datasource["query"] == "prometheus"
    used = datasources(board)
    assert used and all(source == DATASOURCE for source in used), "every query goes to the chosen datasource, no fixed uid"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert 0 <= panel["gridPos"]["x"] and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    boxes = [(panel["title"], panel["gridPos"]) for panel in board["panels"]]
    for i, (title, a) in enumerate(boxes):
        for other, b in boxes[i + 1:]:
            overlap = a["x"] < b["x"] + b["w"] and b["x"] < a["x"] + a["w"] and a["y"] < b["y"] + b["h"] and b["y"] < a["y"] + a["h"]
            assert not overlap, f"panels {title!r} and {other!r} overlap"
    assert MAIN_PANELS <= {title for title, _ in dashboard_targets()}
    queries = [v for v in variables if v["type"] == "query"]
    assert queries and all("$" + v["name"] in GRAFANA_VARIABLES for v in queries)
