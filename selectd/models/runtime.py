"""ONNX Runtime sessions built the same way for every scorer family."""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import onnxruntime as ort

from selectd.models.manifest import ModelLoadError

ExecutionProvider = Literal["cpu", "cuda"]

_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def resolve_providers(provider: ExecutionProvider) -> list[str | tuple[str, dict[str, str]]]:
    """ONNX Runtime provider list for a configured provider; cuda falls back to nothing silently never."""
    wanted = _PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted not in available:
        raise ModelLoadError(
            f"execution provider {provider!r} requested but this onnxruntime build offers only "
            f"{', '.join(available)} (cuda needs the onnxruntime-gpu package and a visible GPU)"
        )
    if provider == "cuda":
        # TF32 matrix products moved the demo LM's token log-probs by 3.7e-3 on an H200 (2.9e-6
        # without): scores must match the fp32 model they were validated on, so TF32 stays off.
        return [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    return [wanted]


def make_session(model_path: Path, provider: ExecutionProvider = "cpu", threads: int = 1) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(str(model_path), sess_options=options, providers=resolve_providers(provider))
    except ModelLoadError:
        raise
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise ModelLoadError(f"{model_path}: ONNX Runtime cannot load it: {exc}") from exc
    if provider == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
        raise ModelLoadError(f"{model_path}: CUDA execution provider failed to initialise")
    return session
