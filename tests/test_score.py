"""``selectd score``: the formats datatrove and dolma write (gzip, zstandard, other field names),
stdin and stdout, and attribute records asked for on the command line."""
from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import orjson
import zstandard

from conftest import GOOD_TEXT

CONFIG = """
[kafka]
bootstrap_servers = "127.0.0.1:9092"
group_id = "g"
input_topics = "in"

[topics]
accepted = "a"
rejected = "r"
dlq = "d"

[logging]
level = "WARNING"

[[stages]]
name = "gopher"
type = "gopher_quality"
"""


def _lines(n: int = 30, id_key: str = "id", text_key: str = "text") -> bytes:
    docs = [orjson.dumps({id_key: f"doc-{i}", text_key: GOOD_TEXT if i % 3 else "too short", "n": i}) for i in range(n)]
    return b"\n".join(docs + [b"{not json"]) + b"\n"


def _score(tmp_path: Path, *argv: str, stdin: bytes | None = None,
           prelude: str = "") -> subprocess.CompletedProcess:
    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    code = f"import sys\n{prelude}\nfrom selectd.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, "score", "-c", str(config), *argv], input=stdin,
                          capture_output=True, timeout=300, cwd=tmp_path)


def _decisions(output: bytes) -> list[tuple[str | None, str]]:
    rows = [orjson.loads(line) for line in output.splitlines()]
    return [(row.get("id", row["selectd"].get("id")), row["selectd"]["decision"]) for row in rows]


def test_score_reads_gzip_zstandard_and_stdin_and_writes_stdout(tmp_path):
    data = _lines()
    (tmp_path / "in.jsonl").write_bytes(data)
    (tmp_path / "in.jsonl.gz").write_bytes(gzip.compress(data))
    (tmp_path / "in.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data))
    plain = _score(tmp_path, "in.jsonl", "-o", "plain.jsonl")
    assert plain.returncode == 0, plain.stderr
    expected = _decisions((tmp_path / "plain.jsonl").read_bytes())
    assert len(expected) == 31 and expected[-1] == (None, "dlq")
    assert {d for _, d in expected[:-1]} == {"accepted", "rejected"}
    for argv, stdin in ((["in.jsonl.gz", "-o", "-"], None), (["in.jsonl.zst", "-o", "-"], None),
                        (["-", "-o", "-"], data), (["-", "-o", "-"], gzip.compress(data))):
        result = _score(tmp_path, *argv, stdin=stdin)
        assert result.returncode == 0, (argv, result.stderr)
        assert _decisions(result.stdout) == expected, argv
        assert b"documents in: 31" in result.stderr, "the summary goes to stderr, stdout is the output alone"


def test_a_zstandard_input_without_the_package_is_a_clear_error(tmp_path):
    (tmp_path / "in.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_lines()))
    result = _score(tmp_path, "in.jsonl.zst", "-o", "out.jsonl", prelude="sys.modules['zstandard'] = None")
    assert result.returncode == 2
    assert b"zstandard-compressed, and the zstandard package is not installed (pip install 'selectd[codecs]')" in result.stderr


def test_score_takes_the_id_and_text_fields_of_other_tools(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(_lines(id_key="doc_id", text_key="content"))
    default = _score(tmp_path, "in.jsonl", "-o", "-")
    assert {d for _, d in _decisions(default.stdout)} == {"dlq"}, "without the keys: no id, no text"
    for argv in (["--id-key", "doc_id", "--text-key", "content"], ["--set", "input.id_key=doc_id", "--set", "input.text_key=content"]):
        result = _score(tmp_path, "in.jsonl", "-o", "-", *argv)
        rows = [orjson.loads(line) for line in result.stdout.splitlines()]
        assert [row["selectd"]["decision"] for row in rows[:3]] == ["rejected", "accepted", "accepted"], argv
        assert rows[1]["content"] == GOOD_TEXT and "text" not in rows[1], "the input's fields, untouched"


def test_attributes_flag_alone_turns_attribute_records_on(tmp_path):
    (tmp_path / "in.jsonl").write_bytes(_lines(6))
    result = _score(tmp_path, "in.jsonl", "-o", "out.jsonl", "--attributes", "attributes.jsonl")
    assert result.returncode == 0, result.stderr
    records = [orjson.loads(line) for line in (tmp_path / "attributes.jsonl").read_bytes().splitlines()]
    assert [r["id"] for r in records] == [f"doc-{i}" for i in range(6)], "one record per document, the config names no topic"
    assert "selectd__gopher__words" in records[1]["attributes"]
