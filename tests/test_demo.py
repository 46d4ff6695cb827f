"""The README's first command: the embedded default run, end to end."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.kafka
def test_embedded_demo_routes_every_message_and_prints_a_summary(tmp_path):
    result = subprocess.run([sys.executable, "-m", "selectd.cli", "demo", "--docs", "400", "--workdir", str(tmp_path)],
                            cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    assert "metrics at http://" in out and "broker: Tansu on 127.0.0.1:" in out
    routed = int(re.search(r"routed:\s+(\d+) documents", out).group(1))
    counts = {k: int(v) for k, v in re.findall(r"^\s+(accepted|rejected|dlq):\s+(\d+)$", out, re.M)}
    assert routed == 405 == sum(counts.values()), out  # 400 documents + 5 malformed messages
    assert counts["dlq"] == 5 and counts["accepted"] > 0 and counts["rejected"] > 0
    assert "lid/language:" in out, "the language-ID stage ran and rejected non-English documents"
    assert "daemon exit code: 0" in out
