"""Model families behind ``selectd export|verify|bench``.

Each family module exposes the same small surface, so the CLI has one code path for all of them:

- ``MANIFEST_KIND``: the ``kind`` its exporter writes into manifest.json;
- ``add_export_arguments(parser)`` / ``export(args) -> int``;
- ``add_verify_arguments(parser)`` / ``verify(args) -> int``: compare an exported model directory
  (``args.model_dir``) with its reference; non-zero exit beyond tolerance. ``selectd verify DIR``
  picks the family from the manifest's kind;
- ``add_bench_arguments(parser)`` / ``bench(args) -> int``: docs/s of ours vs the reference, same
  texts, same run (selectd/models/benchmark.py has the shared timing and reporting).

``rules`` has only a benchmark (our rule filters vs datatrove's).
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: CLI name -> module implementing the family
FAMILIES: dict[str, str] = {
    "rules": "selectd.tools.rules_bench",
    "fasttext": "selectd.models.fasttext.cli",
    "hf": "selectd.models.transformer.cli",
    "causal-lm": "selectd.models.causal_lm.cli",
}


def family(name: str) -> ModuleType:
    return importlib.import_module(FAMILIES[name])


def family_for_kind(kind: str) -> ModuleType:
    for name in FAMILIES:
        module = family(name)
        if getattr(module, "MANIFEST_KIND", None) == kind:
            return module
    raise ValueError(f"no model family exports manifests of kind {kind!r}")
