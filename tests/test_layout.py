"""The layout's import rules (see the README's map): the daemon's runtime never loads the offline tools."""
from __future__ import annotations

import json
import subprocess
import sys

#: what `selectd run` loads: the app, the CLI with its parser built and `run` parsed, every scorer
RUNTIME_IMPORTS = """
import importlib, json, pkgutil, sys
import selectd.app, selectd.cli, selectd.scorers
for module in pkgutil.walk_packages(selectd.scorers.__path__, "selectd.scorers."):
    importlib.import_module(module.name)
selectd.cli.build_parser().parse_args(["run", "--config", "selectd.toml"])
print(json.dumps(sorted(sys.modules)))
"""

#: export-time libraries the running daemon must not import
EXPORT_LIBRARIES = ("torch", "onnx", "transformers")


def test_runtime_loads_neither_the_tools_nor_torch_onnx_transformers():
    # a fresh interpreter: this test process has imported the tools and torch through other tests
    loaded = json.loads(subprocess.run([sys.executable, "-c", RUNTIME_IMPORTS], capture_output=True, text=True,
                                       check=True).stdout)
    assert "selectd.scorers.heuristics.gopher" in loaded  # the walk above did reach the scorers
    tools = [name for name in loaded if name == "selectd.tools" or name.startswith("selectd.tools.")]
    export_libraries = [name for name in loaded if name.split(".")[0] in EXPORT_LIBRARIES]
    assert tools == [], "the runtime imports the offline tools"
    assert export_libraries == [], "the runtime imports an export-time library"
