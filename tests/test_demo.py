"""The README's first command: the embedded default run, end to end."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest


@pytest.mark.kafka
def test_embedded_demo_routes_every_message_and_prints_a_summary(tmp_path):
    # run from outside the checkout: the demo needs nothing of it, and writes only into its work directory
    workdir = tmp_path / "work"
    result = subprocess.run([sys.executable, "-m", "selectd.cli", "demo", "--docs", "400", "--workdir", "work"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "metrics at http://" in out and "broker: Tansu on 127.0.0.1:" in out
    routed = int(re.search(r"routed:\s+(\d+) documents", out).group(1))
    counts = {k: int(v) for k, v in re.findall(r"^\s+(accepted|rejected|dlq):\s+(\d+)$", out, re.M)}
    assert routed == 405 == sum(counts.values()), out  # 400 documents + 5 malformed messages
    assert counts["dlq"] == 5 and counts["accepted"] > 0 and counts["rejected"] > 0
    assert "lid/language:" in out, "the language-ID stage ran and rejected non-English documents"
    assert "daemon exit code: 0" in out
    written = {path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*") if path.is_file()}
    assert {"work/selectd.toml", "work/sample-400.jsonl", "work/tansu.log", "work/models/lid176/manifest.json",
            "work/models/quality_fasttext/manifest.json"} <= written
    assert all(path.startswith("work/") for path in written), "everything goes into the work directory"
