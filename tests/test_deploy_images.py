"""deploy/Dockerfile and Dockerfile.cuda: what each stage runs as and installs, what the build
context holds (.dockerignore), and the build-time model check, executed for real."""
from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO
from deploy_helpers import DEPLOY, README, dockerfile_arg, healthcheck_command, instructions, stage, stage_names


def _env(instructions_of_stage: list[dict]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in instructions_of_stage:
        if item["instruction"] == "ENV":
            env.update(re.findall(r"(\w+)=(\S+)", item["value"]))
    return env


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_dockerfile_runtime_stage(name):
    path = DEPLOY / name
    runtime = stage(path, "runtime")
    users = [i["value"] for i in runtime if i["instruction"] == "USER"]
    uid = users[-1].split(":")[0].replace("${SELECTD_UID}", dockerfile_arg(path, "SELECTD_UID"))
    assert uid.isdigit() and int(uid) != 0, f"runs as a non-root user, not {users[-1]!r}"
    env = _env(runtime)
    assert env["HOME"] == env["TMPDIR"] == "/tmp", "the only writable place with a read-only root filesystem"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert healthcheck_command(path)[:2] == ["python", "-c"]
    assert "/healthz" in env["SELECTD_HEALTH_URL"]
    entry = next(i["value"] for i in runtime if i["instruction"] == "ENTRYPOINT")
    assert json.loads(entry) == ["selectd"]
    for item in instructions(path):  # every build-context source exists
        if item["instruction"] == "COPY" and "--from" not in item["value"]:
            for source in item["value"].split()[:-1]:
                if not source.startswith("--") and "$" not in source:
                    assert (REPO / source).exists(), f"{name}: COPY {source}: missing"
    base = dockerfile_arg(path, "CUDA_IMAGE" if name.endswith("cuda") else "PYTHON_IMAGE")
    if name.endswith("cuda"):
        assert base.startswith("nvidia/cuda:") and "runtime" in base
        assert "onnxruntime-gpu" in " ".join(i["value"] for i in instructions(path) if i["instruction"] == "RUN")
    else:
        assert base.startswith("python:3.11-slim")


def test_cuda_image_runs_the_onnx_runtime_the_gpu_check_ran():
    """deploy/README.md records the GPU check's onnxruntime-gpu and CUDA versions; the image must be
    what was checked, on a base with that CUDA major (the wheel links libcudart.so.<major>)."""
    checked = re.search(r"GPU check ran onnxruntime-gpu (\S+) \(CUDA (\d+)\)", README.read_text())
    assert checked, "deploy/README.md names the GPU check's onnxruntime-gpu version"
    path = DEPLOY / "Dockerfile.cuda"
    assert dockerfile_arg(path, "ONNXRUNTIME_GPU_VERSION") == checked.group(1)
    assert dockerfile_arg(path, "CUDA_IMAGE").split(":")[1].split(".")[0] == checked.group(2)


def test_every_build_the_runbook_shows_names_an_existing_target():
    """The last stage of deploy/Dockerfile bakes models in: a build without --target is not the daemon."""
    builds = re.findall(r"docker build -f (deploy/Dockerfile\S*) (.*?) \.", README.read_text())
    assert builds
    for dockerfile, options in builds:
        target = re.search(r"--target (\S+)", options)
        stages = stage_names(REPO / dockerfile)
        assert target and target.group(1) in stages, f"docker build -f {dockerfile} {options}: name one of {stages}"


def test_export_image_has_the_export_tools():
    """The models Job's image (target export): the runtime image plus `pip install .[export]`."""
    export_build = " ".join(i["value"] for i in stage(DEPLOY / "Dockerfile", "export-build") if i["instruction"] == "RUN")
    assert '.[export]' in export_build
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["export"]
    assert {re.split(r"[<>=]", e)[0] for e in extras} >= {"torch", "transformers", "onnx"}
    assert [i["value"] for i in stage(DEPLOY / "Dockerfile", "export") if i["instruction"] == "COPY"] == \
        ["--from=export-build /opt/selectd /opt/selectd"]


def test_build_context_leaves_out_what_the_image_never_copies():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(path: str) -> bool:
        verdict = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!")
            if fnmatch.fnmatch(path, pattern) or fnmatch.fnmatch(path, pattern + "/*"):
                verdict = not negate
        return verdict

    assert all(ignored(p) for p in (".venv/bin/python", ".git/HEAD", "artifacts/demo/corpus.jsonl", "tests/conftest.py"))
    assert not ignored("artifacts/models/quality/manifest.json"), "the with-models target copies artifacts/models"
    for name in ("Dockerfile", "Dockerfile.cuda"):
        for item in instructions(DEPLOY / name):
            if item["instruction"] == "COPY" and "--from" not in item["value"]:
                for source in item["value"].split()[:-1]:
                    if not source.startswith("--") and "$" not in source:
                        assert not ignored(source), f"{name}: COPY {source} is left out of the build context"


def test_image_install_includes_every_module():
    """The images `pip install .`: every directory of committed selectd modules must be a package
    setuptools finds with the project's own settings, or the image would miss it."""
    from setuptools import find_packages

    find = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = set(find_packages(where=str(REPO), include=find["include"]))
    tracked = subprocess.run(["git", "ls-files", "selectd"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    module_dirs = {str(Path(name).parent).replace("/", ".") for name in tracked.split() if name.endswith(".py")}
    assert module_dirs and module_dirs <= packages, f"not installed by pip install .: {module_dirs - packages}"


def test_baked_models_are_checked_at_build(tmp_path):
    """Run the with-models stage's RUN step against a real model directory, then a corrupted one."""
    from selectd.models.manifest import write_manifest

    (step,) = [i["value"] for i in stage(DEPLOY / "Dockerfile", "with-models") if i["instruction"] == "RUN"]
    models = tmp_path / "models"
    model = models / "tiny"
    model.mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\x00" * 64)
    write_manifest(model, "hf_classifier", {"labels": ["a"]})
    script = step.replace("/models", str(models))

    def run_step() -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True,
                              env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})

    ok = run_step()
    assert ok.returncode == 0 and "hf_classifier" in ok.stdout, ok.stderr
    (model / "weights.bin").write_bytes(b"\x01" * 64)
    bad = run_step()
    assert bad.returncode != 0 and "sha256 mismatch" in bad.stderr
