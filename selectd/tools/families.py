"""Model families behind ``selectd export|verify|bench``.

Each family module exposes the same small surface, so the CLI has one code path for all of them:

- ``MANIFEST_KIND``: the ``kind`` its exporter writes into manifest.json;
- ``add_export_arguments(parser)`` / ``export(args) -> int``;
- ``add_verify_arguments(parser)`` / ``verify(args) -> int``: compare an exported model directory
  (``args.model_dir``) with its reference; non-zero exit beyond tolerance. ``selectd verify DIR``
  picks the family from the manifest's kind;
- ``add_bench_arguments(parser)`` / ``bench(args) -> int``: docs/s of ours vs the reference, same
  texts, same run (selectd/tools/benchmark.py has the shared timing and reporting).

``rules``, ``dedup`` and ``signals`` have only a benchmark (our heuristic filters vs datatrove's;
MinHash signatures vs datatrove's, with the dedup stage's and stores' costs; the score histograms and
drift of the metrics vs prometheus_client's per-value histograms). ``selectd.cli`` imports this
module only inside its export / verify / bench commands, so the daemon never loads the tools.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType

from selectd.models.manifest import ModelLoadError, load_manifest
from selectd.tools import dedup_bench, rules_bench, signal_bench
from selectd.tools.causal_lm import cli as causal_lm_cli
from selectd.tools.fasttext import cli as fasttext_cli
from selectd.tools.transformer import cli as transformer_cli

#: CLI name -> module implementing the family
FAMILIES: dict[str, ModuleType] = {
    "rules": rules_bench,
    "dedup": dedup_bench,
    "signals": signal_bench,
    "fasttext": fasttext_cli,
    "hf": transformer_cli,
    "causal-lm": causal_lm_cli,
}


def family_for_kind(kind: str) -> ModuleType:
    for module in FAMILIES.values():
        if getattr(module, "MANIFEST_KIND", None) == kind:
            return module
    raise ValueError(f"no model family exports manifests of kind {kind!r}")


def run_family_command(verb: str, argv: list[str]) -> int:
    """``selectd export|bench FAMILY ...``: ``argv`` is everything after the verb."""
    parser = argparse.ArgumentParser(prog=f"selectd {verb}")
    families = parser.add_subparsers(dest="family", required=True)
    for name, module in FAMILIES.items():
        add = getattr(module, f"add_{verb}_arguments", None)
        run = getattr(module, verb, None)
        if add is None or run is None:
            continue
        summary = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else None
        # argparse %-formats help strings; a docstring such as "Min-K% Prob" must not be read as one.
        sub = families.add_parser(name, help=summary.replace("%", "%%") if summary else None)
        add(sub)
        sub.set_defaults(func=run)
    args = parser.parse_args(argv)
    return args.func(args)


def run_verify(model_dir: Path, argv: list[str]) -> int:
    """``selectd verify MODEL_DIR ...``: the family is the one whose exporter wrote the manifest's kind."""
    try:
        manifest = load_manifest(model_dir, verify=False)
        module = family_for_kind(manifest.kind)
    except (ModelLoadError, ValueError) as exc:
        print(f"selectd verify: {exc}", file=sys.stderr)
        return 2
    family_parser = argparse.ArgumentParser(prog=f"selectd verify {model_dir}")
    module.add_verify_arguments(family_parser)
    family_args = family_parser.parse_args([str(model_dir), *argv])
    return module.verify(family_args)
