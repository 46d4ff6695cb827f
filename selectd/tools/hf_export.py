"""Export pieces shared by the Hugging Face families (sequence classifiers, causal LMs).

Needs the ``export`` extra (torch, transformers); the runtime half is :mod:`selectd.models.hf_common`.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from selectd.models.hf_common import TOKENIZER_FILE
from selectd.models.manifest import ModelLoadError


def copy_tokenizer(checkpoint: Path, out_dir: Path) -> Path:
    """``tokenizer.json`` from the checkpoint, or converted from its slow tokenizer files."""
    target = out_dir / TOKENIZER_FILE
    if (checkpoint / TOKENIZER_FILE).is_file():
        shutil.copyfile(checkpoint / TOKENIZER_FILE, target)
        return target
    from transformers import AutoTokenizer

    try:
        fast = AutoTokenizer.from_pretrained(checkpoint, use_fast=True)
        fast.backend_tokenizer.save(str(target))
    except Exception as exc:  # transformers raises many types for missing / unconvertible vocabularies
        raise ModelLoadError(f"{checkpoint}: no tokenizer.json and the tokenizer cannot be converted: {exc}") from exc
    return target


def tokenizer_pad_token(tokenizer_config_path: Path) -> str | None:
    """The ``pad_token`` of a checkpoint's tokenizer_config.json, if it names one."""
    if not tokenizer_config_path.is_file():
        return None
    value = json.loads(tokenizer_config_path.read_text()).get("pad_token")
    if isinstance(value, dict):  # older transformers store AddedToken dicts
        value = value.get("content")
    return value if isinstance(value, str) else None


def reference_device(name: str) -> torch.device:
    """The device a PyTorch reference runs on: "cpu", or "cuda" where this PyTorch sees a GPU (a
    load error otherwise, rather than a traceback in the middle of a bench)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("the PyTorch reference should run on cuda, but this PyTorch sees no CUDA device "
                             f"(torch {torch.__version__})")
    return torch.device(name)


def export_onnx(module: Any, example_inputs: Mapping[str, Any], output_names: Sequence[str], path: Path,
                opset: int = 17, output_axes: Mapping[str, Mapping[int, str]] | None = None) -> None:
    """Export a torch module to ONNX with dynamic batch and sequence axes on every input.

    ``example_inputs`` maps input names to example ``[batch, seq]`` tensors in the order the
    module's ``forward`` takes them; outputs get a dynamic batch axis (axis 0), the further
    dynamic axes ``output_axes`` names (e.g. a per-token output's sequence axis) and any others
    as traced. Uses the TorchScript exporter (no onnxscript dependency), in eval mode with
    gradients off, so dropout is never exported.
    """
    module.eval()
    dynamic_axes: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in example_inputs}
    dynamic_axes.update({name: {0: "batch", **(output_axes or {}).get(name, {})} for name in output_names})
    with torch.no_grad():
        torch.onnx.export(
            module, tuple(example_inputs.values()), str(path), dynamo=False,
            input_names=list(example_inputs), output_names=list(output_names),
            dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
        )
