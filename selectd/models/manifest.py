"""Model manifests: what a model directory holds and proof that its files are the exported ones.

An exported model is a directory with ``manifest.json`` and the files it lists. The manifest
records the model ``kind`` (which scorer family loads it), free-form metadata the exporter
writes (labels, preprocessing profile, args, ...) and the sha256 of every file. Loading verifies
every checksum before any file is parsed, so a truncated copy or a swapped file fails at load
with the file named, never at the first document. Only ONNX, JSON and plain-text files are ever
loaded: no pickle.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1


class ModelLoadError(Exception):
    """A model directory that cannot be used; the message names the file and the reason."""


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    directory: Path
    kind: str
    metadata: dict[str, Any]
    files: dict[str, str] = field(default_factory=dict)  # relative name -> sha256

    def path(self, name: str) -> Path:
        if name not in self.files:
            raise ModelLoadError(f"{self.directory / MANIFEST_NAME}: no file {name!r} in the manifest")
        return self.directory / name

    @property
    def version(self) -> str:
        """A short identifier of the exact model files: the sha256 of the manifest's file table."""
        table = json.dumps(self.files, sort_keys=True).encode()
        return hashlib.sha256(table).hexdigest()[:16]


def write_manifest(directory: Path, kind: str, metadata: dict[str, Any]) -> Manifest:
    """Checksum every file in ``directory`` (except the manifest) and write ``manifest.json``."""
    directory = Path(directory)
    files = {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }
    body = {"format_version": FORMAT_VERSION, "kind": kind, "metadata": metadata, "files": files}
    (directory / MANIFEST_NAME).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return Manifest(directory, kind, metadata, files)


def load_manifest(directory: Path | str, expected_kind: str | None = None, verify: bool = True) -> Manifest:
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ModelLoadError(f"{manifest_path}: not found (is {directory} an exported model directory?)")
    try:
        body = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{manifest_path}: unreadable manifest: {exc}") from exc
    if not isinstance(body, dict) or body.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{manifest_path}: unsupported manifest format_version {body.get('format_version')!r}"
                             if isinstance(body, dict) else f"{manifest_path}: not a JSON object")
    kind = body.get("kind")
    if expected_kind is not None and kind != expected_kind:
        raise ModelLoadError(f"{manifest_path}: model kind is {kind!r}, expected {expected_kind!r}")
    files = body.get("files") or {}
    if verify:
        for name, expected in files.items():
            path = directory / name
            if not path.is_file():
                raise ModelLoadError(f"{path}: listed in the manifest but missing")
            actual = sha256_file(path)
            if actual != expected:
                raise ModelLoadError(f"{path}: sha256 mismatch (manifest {expected[:12]}…, file {actual[:12]}…)")
    return Manifest(directory, kind, body.get("metadata") or {}, files)
