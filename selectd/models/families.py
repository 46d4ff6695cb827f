"""Model families behind ``selectd export|verify|bench``.

Each family module exposes the same small surface, so the CLI has one code path for all of them:

- ``MANIFEST_KIND``: the ``kind`` its exporter writes into manifest.json;
- ``add_export_arguments(parser)`` / ``export(args) -> int``;
- ``add_reference_arguments(parser)``: the ``--against`` reference options shared by verify/bench;
- ``verify(args) -> int``: compare the exported model with its reference; non-zero beyond tolerance;
- ``bench(args) -> int``: docs/s of ours vs the reference, same texts, same run.
"""
from __future__ import annotations

import importlib
from types import ModuleType

#: CLI name -> module implementing the family
FAMILIES: dict[str, str] = {
    "fasttext": "selectd.models.fasttext.cli",
    "hf": "selectd.models.transformer.cli",
    "causal-lm": "selectd.models.causal_lm.cli",
}


def family(name: str) -> ModuleType:
    return importlib.import_module(FAMILIES[name])


def family_for_kind(kind: str) -> ModuleType:
    for name in FAMILIES:
        try:
            module = family(name)
        except ImportError:
            continue
        if module.MANIFEST_KIND == kind:
            return module
    raise ValueError(f"no model family exports manifests of kind {kind!r}")


def available_families() -> list[str]:
    names = []
    for name in FAMILIES:
        try:
            family(name)
        except ImportError:
            continue
        names.append(name)
    return names
