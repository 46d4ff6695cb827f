"""``selectd bench rules`` runs and reports ours vs datatrove per filter (the report's shape, not speed)."""
import argparse
import json
import os

import pytest

from selectd.tools import rules_bench


TEXTS = [
    "The committee met on Tuesday to review the budget for the coming year. Members agreed that the "
    f"library should have longer opening hours, and that funding would be increased by {i} percent.\n"
    "Residents who wish to comment can write to the town hall before the end of the month. The minutes "
    "of the meeting will be published online, together with the figures presented by the treasurer."
    for i in range(12)
] + ["buy cheap buy cheap buy cheap", "Lorem ipsum dolor sit amet.\n{\"json\": true}"] * 3


def run_bench(tmp_path, capsys, *extra):
    path = tmp_path / "texts.jsonl"
    path.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(TEXTS)))
    parser = argparse.ArgumentParser()
    rules_bench.add_bench_arguments(parser)
    code = rules_bench.bench(parser.parse_args(["--texts", str(path), "--batch-size", "4", *extra]))
    return code, capsys.readouterr().out


def test_bench_reports_every_filter_against_datatrove(tmp_path, capsys):
    code, out = run_bench(tmp_path, capsys, "--json", "--warm-texts", "6")
    assert code == 0
    report = json.loads(out)
    assert report["texts"] == len(TEXTS) - 6 and report["warm_texts"] == 6 and report["clock"] == "cpu"
    assert set(report["filters"]) == set(rules_bench.REFERENCES)
    for kind, result in report["filters"].items():
        for side in ("ours", "reference", "ours_cold", "ours_hot"):
            assert result[side]["docs_per_s"] > 0, (kind, side)
        assert result["ratio"] == pytest.approx(result["ours"]["docs_per_s"] / result["reference"]["docs_per_s"])
        assert result["decision_agreement"] == 1.0
        assert result["rejected"]["ours"] == result["rejected"]["reference"]


def test_bench_text_report_and_filter_choice(tmp_path, capsys):
    code, out = run_bench(tmp_path, capsys, "--filters", "c4_quality", "--limit", "10", "--clock", "wall")
    assert code == 0
    lines = out.strip().splitlines()
    assert "wall time" in lines[0]
    assert lines[0].startswith("5 timed texts") and len(lines) == 2 and lines[1].startswith("c4_quality")


def test_bench_refuses_bad_input(tmp_path, capsys):
    missing = argparse.Namespace(texts=str(tmp_path / "missing.jsonl"), limit=None, filters=["c4_quality"],
                                 batch_size=4, warm_texts=None, clock="cpu", json=False)
    assert rules_bench.bench(missing) == 2
    assert "missing.jsonl" in capsys.readouterr().out
    code, out = run_bench(tmp_path, capsys, "--warm-texts", str(len(TEXTS)))
    assert code == 2 and "--warm-texts" in out


def test_bench_gives_the_cores_back(tmp_path, capsys):
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no CPU affinity on this platform")
    before = os.sched_getaffinity(0)
    run_bench(tmp_path, capsys, "--filters", "fineweb_quality", "--limit", "6")
    assert os.sched_getaffinity(0) == before
