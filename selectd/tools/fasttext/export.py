"""Export a fastText .bin/.ftz to a model directory (the layout :mod:`selectd.models.fasttext.model` reads)."""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import numpy as np

from selectd import preprocess
from selectd.models.fasttext.binary import FastTextModel, read_model
from selectd.models.fasttext.model import (INPUT_NAME, LABEL_ENCODING, MANIFEST_KIND, ONNX_NAME, OUTPUT_NAME,
                                           PRUNEIDX_NAME, TABLE_NAME, VOCAB_NAME)
from selectd.models.manifest import Manifest, sha256_file, write_manifest
from selectd.tools.fasttext.graph import build_graph, output_rows, write_table


def should_fold(model: FastTextModel) -> bool:
    """Fold W·Oᵀ when the output layer uses fewer rows than the model has dimensions."""
    used_rows = len(model.labels) - 1 if model.args.loss == "hs" else len(model.labels)
    return used_rows < model.args.dim


#: a language-ID label: an ISO 639 code, with a script for GlotLID / NLLB-style models (``eng_Latn``)
LANGUAGE_LABEL = re.compile(r"__label__[a-z]{2,3}(_[A-Z][a-z]{3})?")
#: fewer labels than this are a classifier's classes even when they look like codes (``hq`` / ``cc``)
MIN_LANGUAGE_LABELS = 10


def detect_profile(model: FastTextModel) -> str:
    """``lid`` for a language-ID model (every label a language code: lid.176, GlotLID, NLLB's), else
    ``identity``: other classifiers' preprocessing cannot be told from the file."""
    labels = [label.decode(*LABEL_ENCODING) for label in model.labels]
    if len(labels) >= MIN_LANGUAGE_LABELS and all(LANGUAGE_LABEL.fullmatch(label) for label in labels):
        return "lid"
    return "identity"


def export_model(source: Path | str, out_dir: Path | str, profile: str | None = None) -> Manifest:
    """Parse a fastText .bin/.ftz and write an exported model directory. ``profile``: the
    preprocessing the model was trained with; None picks it from the labels (:func:`detect_profile`)."""
    if profile is not None:
        preprocess.profile(profile)  # unknown profile names fail before any work
    source = Path(source)
    out_dir = Path(out_dir)
    model = read_model(source)
    profile = profile or detect_profile(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    if (out_dir / "manifest.json").exists() or (out_dir / ONNX_NAME).exists():
        raise FileExistsError(f"{out_dir}: already holds an exported model; choose an empty directory")
    fold = should_fold(model)
    table_rows, _ = write_table(model, fold, out_dir / TABLE_NAME)
    if fold:  # long documents are summed as fastText sums them: W's rows in float32, then O (model.py)
        write_table(model, False, out_dir / INPUT_NAME)
        (out_dir / OUTPUT_NAME).write_bytes(np.ascontiguousarray(output_rows(model), dtype="<f4").tobytes())
    (out_dir / ONNX_NAME).write_bytes(build_graph(model, fold).SerializeToString())
    (out_dir / VOCAB_NAME).write_bytes(b"\n".join(model.words))
    if model.pruneidx_size >= 0:
        (out_dir / PRUNEIDX_NAME).write_text("".join(f"{b} {r}\n" for b, r in sorted(model.pruneidx.items())))
    metadata: dict[str, Any] = {
        "args": dataclasses.asdict(model.args),
        "labels": [label.decode(*LABEL_ENCODING) for label in model.labels],
        "nwords": model.nwords,
        "pruneidx_size": model.pruneidx_size,
        "profile": profile,
        "folded": fold,
        "table_rows": table_rows,
        "source": {"name": source.name, "sha256": sha256_file(source), "version": model.version,
                   "quantized": model.quantized},
    }
    return write_manifest(out_dir, MANIFEST_KIND, metadata)
