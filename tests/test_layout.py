"""The layout's import rules, read from the README's map: imports only run down the layers, the runtime
never loads the offline tools, and a started pipeline has no export-time library in memory."""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "selectd"

#: export-time libraries the running daemon must not import
EXPORT_LIBRARIES = ("torch", "onnx", "transformers")
TOOLS = "tools"


def layer_map() -> dict[str, int | str]:
    """README's "Map of the code" table: first path part under selectd/ (``kafka``, ``cli``) -> layer
    number, or "tools"."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    layers: dict[str, int | str] = {}
    for row in re.finditer(r"^\| (\d+|tools) \| ([^|]+) \|", section, re.MULTILINE):
        layer = row.group(1)
        for name in re.findall(r"`([^`]+)`", row.group(2)):
            layers[name.rstrip("/").removesuffix(".py")] = int(layer) if layer.isdigit() else TOOLS
    return layers


def unit_of(module: str) -> str:
    """``selectd.kafka.commit`` -> ``kafka``; ``selectd`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def selectd_imports(path: Path) -> list[tuple[int, str, bool]]:
    """(line, imported selectd module, inside a function) for every import of the file."""
    tree = ast.parse(path.read_text())
    found: list[tuple[int, str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((child.lineno, alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module == "selectd":  # `from selectd import scorers` imports a submodule
                    found.extend((child.lineno, f"selectd.{alias.name}", in_function) for alias in child.names
                                 if (PACKAGE / alias.name).exists() or (PACKAGE / f"{alias.name}.py").exists())
                else:
                    found.append((child.lineno, child.module, in_function))
            visit(child, nested)

    visit(tree, False)
    return [item for item in found if item[1] == "selectd" or item[1].startswith("selectd.")]


def test_readme_map_names_every_module_of_the_package():
    layers = layer_map()
    assert layers.get("cli") == 11 and layers.get("tools") == TOOLS  # the table parsed
    unnamed = sorted({unit_of(module_name(path)) for path in PACKAGE.rglob("*.py")} - set(layers))
    assert unnamed == [], f"modules the README's map does not name: {unnamed}"


def test_imports_run_down_the_layers_and_never_into_the_tools():
    layers = layer_map()
    broken = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = unit_of(module_name(path))
        own = layers[importer]
        for line, imported, in_function in selectd_imports(path):
            target = layers.get(unit_of(imported))
            where = f"{path.relative_to(REPO)}:{line} imports {imported}"
            if own == TOOLS:
                continue  # the tools may use any layer
            if target == TOOLS:
                # only the command line reaches the tools, and only when an offline command runs
                if not (importer == "cli" and in_function):
                    broken.append(f"{where}: the runtime imports the offline tools")
            elif target is None or target > own:
                broken.append(f"{where}: layer {own} imports layer {target}")
    assert broken == []


def test_the_rule_checker_sees_a_broken_import(tmp_path, monkeypatch):
    """The checker itself: an upward import written into a layer-0 module is reported."""
    fake = tmp_path / "selectd"
    (fake / "kafka").mkdir(parents=True)
    (fake / "records.py").write_text("from selectd.kafka import commit\n")
    (fake / "kafka" / "commit.py").write_text("")
    imports = selectd_imports(fake / "records.py")
    assert imports == [(1, "selectd.kafka", False)]
    assert layer_map()[unit_of(imports[0][1])] > layer_map()["records"]


#: a started pipeline: the app and CLI imported, `run` parsed, every scorer module imported, and the
#: rule cascade built and run over a batch through `score_file` (what `selectd score` does)
STARTED_PIPELINE = """
import importlib, json, pkgutil, sys
from pathlib import Path
import selectd.app, selectd.cli, selectd.scorers
from selectd.config import config_from_dict
for module in pkgutil.walk_packages(selectd.scorers.__path__, "selectd.scorers."):
    importlib.import_module(module.name)
selectd.cli.build_parser().parse_args(["run", "--config", "selectd.toml"])
workdir = Path(sys.argv[1])
(workdir / "in.jsonl").write_text('{"id": "a", "text": "A plain sentence about rivers and the sea."}\\n')
config = config_from_dict({
    "kafka": {"bootstrap_servers": ["127.0.0.1:9"], "group_id": "g", "input_topics": ["in"]},
    "topics": {"accepted": "a", "rejected": "r", "dlq": "d"},
    "stages": [{"name": kind, "type": kind} for kind in
               ("gopher_quality", "gopher_repetition", "c4_quality", "fineweb_quality")],
})
selectd.app.score_file(config, workdir / "in.jsonl", workdir / "out.jsonl")
assert (workdir / "out.jsonl").read_text().count("\\n") == 1
print(json.dumps(sorted(sys.modules)))
"""


def test_started_pipeline_loads_neither_the_tools_nor_torch_onnx_transformers(tmp_path):
    # a fresh interpreter: this test process has imported the tools and torch through other tests
    loaded = json.loads(subprocess.run([sys.executable, "-c", STARTED_PIPELINE, str(tmp_path)], capture_output=True,
                                       text=True, check=True).stdout)
    assert "selectd.scorers.heuristics.gopher" in loaded  # the walk above did reach the scorers
    tools = [name for name in loaded if name == "selectd.tools" or name.startswith("selectd.tools.")]
    export_libraries = [name for name in loaded if name.split(".")[0] in EXPORT_LIBRARIES]
    assert tools == [], "the runtime imports the offline tools"
    assert export_libraries == [], "the runtime imports an export-time library"
