"""models/build_color_models.py: a prior / conditional pair trained, exported and costed end to end (tiny sizes)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np


from selectd.models.manifest import load_manifest  # noqa: E402
from selectd.scorers.base import scorer_class  # noqa: E402

SCRIPT = Path(__file__).resolve().parent.parent / "models" / "build_color_models.py"


def _script():
    spec = importlib.util.spec_from_file_location("build_color_models", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_build_color_models_trains_exports_and_costs(sample_corpus, tmp_path, capsys):
    corpus = tmp_path / "corpus.jsonl"
    lines = sample_corpus.read_bytes().splitlines()
    corpus.write_bytes(b"\n".join(lines[:400]) + b"\n")
    out = tmp_path / "color"
    assert _script().main(["--out", str(out), "--corpus", str(corpus), "--vocab-size", "300", "--hidden", "32",
                           "--layers", "1", "--heads", "2", "--context", "128", "--prior-steps", "20",
                           "--conditional-steps", "20", "--sequence-length", "64", "--cost-docs", "10"]) == 0
    report = json.loads((out / "cost.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["cost"]["documents"] == 10 and report["cost"]["ms_per_document"] > 0
    assert report["cost"]["cpu_ms_per_document"] > 0
    assert report["target_documents"] > 0
    for name in ("prior", "conditional"):
        manifest = load_manifest(out / name, expected_kind="causal-lm")
        assert manifest.metadata["context_length"] == 128
    cls = scorer_class("color_filter")
    scorer = cls("color", cls.Options(prior_model_dir=str(out / "prior"), conditional_model_dir=str(out / "conditional"),
                                      window=128))
    signals = scorer.run(["def main():\n    return 0\n", "The cat sat on the mat."])
    assert np.all(np.isfinite(signals["color"]))
    assert np.any(signals["color"] != 0), "the conditional model must differ from the prior"
