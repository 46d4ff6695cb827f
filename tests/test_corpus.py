"""The sample corpus is deterministic, varied, multilingual and made only from local text."""
import json

from selectd.demo.corpus import build_corpus, main


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_corpus_is_deterministic_varied_and_multilingual(tmp_path):
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    counts = build_corpus(first, n_docs=400, seed=7)
    build_corpus(second, n_docs=400, seed=7)
    assert first.read_bytes() == second.read_bytes()

    docs = _read(first)
    assert len(docs) == counts["documents"] == 400
    assert len({d["id"] for d in docs}) == 400
    assert all(set(d) == {"id", "text", "source", "lang", "kind"} and d["text"] for d in docs)
    assert len({d["lang"] for d in docs}) > 3
    assert len({d["source"] for d in docs if d["kind"] == "real"}) >= 3
    synthetic = [d for d in docs if d["kind"].startswith("synthetic-")]
    assert 0 < len(synthetic) < len(docs) / 4
    assert len({d["kind"] for d in synthetic}) == 7
    mean_chars = sum(len(d["text"]) for d in docs) / len(docs)
    assert 1000 < mean_chars < 10_000
    assert counts["by_lang"] == {lang: sum(d["lang"] == lang for d in docs) for lang in counts["by_lang"]}


def test_seed_changes_the_corpus_and_cli_writes_it(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert main([str(out), "--docs", "50", "--seed", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 50
    other = tmp_path / "other.jsonl"
    build_corpus(other, n_docs=50, seed=2)
    assert [d["text"] for d in _read(out)] != [d["text"] for d in _read(other)]


def test_packages_beside_selectd_do_not_change_the_corpus(tmp_path, monkeypatch):
    """Only the docs of selectd's own runtime dependencies are read: the demo (selectd[demo]), the
    tests (selectd[test]) and an image (selectd alone) see the same package text, whatever else is
    installed next to it."""
    before = tmp_path / "before.jsonl"
    build_corpus(before, n_docs=200, seed=3)
    site = tmp_path / "lib" / "site-packages"
    dist_info = site / "zz_extra-1.0.dist-info"
    dist_info.mkdir(parents=True)
    prose = "An extra package that only a test tool installs. " * 40
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: zz-extra\nVersion: 1.0\n\n{prose}\n")
    (dist_info / "RECORD").write_text("zz_extra/README.md,,\n")
    (site / "zz_extra").mkdir()
    (site / "zz_extra" / "README.md").write_text(prose)
    monkeypatch.syspath_prepend(str(site))
    after = tmp_path / "after.jsonl"
    build_corpus(after, n_docs=200, seed=3)
    assert before.read_bytes() == after.read_bytes()
    assert "only a test tool installs" not in after.read_text()
