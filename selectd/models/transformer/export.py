"""Hugging Face sequence classifiers → ONNX, and the PyTorch reference verify / bench compare against.

Needs the ``export`` extra (torch, transformers, onnx); the daemon never imports this module.

Checkpoints read:

- ``multilabel`` / ``multiclass``: any ``AutoModelForSequenceClassification`` checkpoint (BERT,
  RoBERTa, DeBERTa-v2/v3, MiniLM, ...); labels from ``config.id2label``. Detoxify checkpoints
  are multilabel, FineWeb-Edu-style ones multiclass.
- ``multihead``: Celadon's layout: a backbone under its usual prefix (``deberta.``, ``bert.``,
  ...) plus ``heads.{i}.weight`` / ``heads.{i}.bias`` linear layers applied to the first ([CLS])
  hidden state; logits ``[batch, heads, classes]``.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from selectd.models.hf_common import (
    TOKENIZER_FILE, check_vocabulary, export_onnx, load_tokenizer, pad_batch, special_tokens, token_capped_batches,
    tokenizer_id_count, tokenizer_pad_token,
)
from selectd.models.manifest import Manifest, ModelLoadError, write_manifest
from selectd.models.transformer.model import CELADON_CLASSES, CELADON_HEADS, INPUT_NAMES, MANIFEST_KIND, Task

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
#: Dynamic int8 quantization settings (weights int8, activations uint8 scaled per run). Per-channel
#: weight scales keep small rows of a matrix from sharing one coarse scale with its largest; 7-bit
#: weights (reduce_range) keep ONNX Runtime's uint8 x int8 kernels on CPUs without VNNI (AVX2,
#: like this 2-core machine) from saturating the int16 sums of adjacent products. Measured here
#: against fp32 on 520 snippets, all-MiniLM-L6-v2 with a fine-tuned last layer kept 98.5 % of its
#: decisions with neither setting, 99.8 % per-channel alone, 99.4 % with both; per-channel alone
#: dropped the tiny DeBERTa-v2 fixture from 99.6 % to 96.7 % (saturation), both kept 99.2 %.
#: Fusing the graph first (onnxruntime.transformers.optimizer) changed neither agreement nor speed:
#: the session's own ORT_ENABLE_ALL optimizations already fuse attention, LayerNorm and GELU.
INT8_SETTINGS: dict[str, Any] = {"per_channel": True, "reduce_range": True}
#: MatMuls kept in fp32 in the int8 graph: the projections that write into the residual stream
#: (Hugging Face's ``attention.output.dense`` and ``output.dense`` in BERT, RoBERTa, DeBERTa-v2/v3,
#: MiniLM). Their inputs (the attention context, the GELU output) have a few outlying values per
#: run, so one uint8 scale per run rounds the rest coarsely, and the error is added to every later
#: layer. Measured on 520 snippets, all-MiniLM-L6-v2 with a fine-tuned last layer, three training
#: seeds: 99.23 / 98.65 / 99.04 % of decisions kept with every MatMul in int8, 100 / 99.42 /
#: 99.62 % with these in fp32 (max |Δlogit| 5.8 -> 2.6); the int8 graph's speed-up over fp32
#: went from 1.45x to 1.23x (CPU time, same run), the other MatMuls (Q/K/V, the FFN's first
#: projection) are still int8.
INT8_FP32_NODES = re.compile(r"/output/dense/")
#: tokenizer_config.json uses a huge sentinel for "no limit"
_NO_LIMIT = 100_000


class MultiHeadClassifier(nn.Module):
    """Backbone + independent linear heads on the first token, Celadon's layout.

    The backbone is registered under its ``base_model_prefix`` and the heads as ``heads``, so the
    state dict has the same keys as a Celadon checkpoint.
    """

    def __init__(self, backbone: nn.Module, n_heads: int, n_classes: int):
        super().__init__()
        self.prefix = backbone.base_model_prefix
        self.add_module(self.prefix, backbone)
        self.heads = nn.ModuleList(nn.Linear(backbone.config.hidden_size, n_classes) for _ in range(n_heads))

    @property
    def config(self):
        return getattr(self, self.prefix).config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = getattr(self, self.prefix)(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        first = hidden[:, 0]
        return torch.stack([head(first) for head in self.heads], dim=1)

    def save_checkpoint(self, directory: Path, head_names: Sequence[str]) -> None:
        """Write config.json (with the head names) and model.safetensors in Celadon's layout."""
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        config = self.config.to_dict()
        config["head_names"] = list(head_names)
        (directory / "config.json").write_text(json.dumps(config, indent=2))
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))


class LogitsOnly(nn.Module):
    """A ``*ForSequenceClassification`` model reduced to ``(input_ids, attention_mask) -> logits``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def _checkpoint_state(checkpoint: Path) -> dict[str, torch.Tensor]:
    safetensors_file = checkpoint / "model.safetensors"
    if safetensors_file.is_file():
        from safetensors.torch import load_file

        return load_file(str(safetensors_file))
    bin_file = checkpoint / "pytorch_model.bin"
    if bin_file.is_file():
        return torch.load(bin_file, map_location="cpu", weights_only=True)
    raise ModelLoadError(f"{checkpoint}: neither model.safetensors nor pytorch_model.bin found")


def load_checkpoint(checkpoint: Path | str, task: Task) -> tuple[nn.Module, dict[str, Any]]:
    """The PyTorch module (eval mode, returning logits) and what the manifest records about its outputs."""
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    checkpoint = Path(checkpoint)
    if not (checkpoint / "config.json").is_file():
        raise ModelLoadError(f"{checkpoint}: no config.json (not a Hugging Face checkpoint directory)")
    config = AutoConfig.from_pretrained(checkpoint)
    config._attn_implementation = "eager"  # the attention every exporter and architecture supports
    if task == "multihead":
        state = _checkpoint_state(checkpoint)
        n_heads = len({key.split(".")[1] for key in state if key.startswith("heads.")})
        if n_heads == 0:
            raise ModelLoadError(f"{checkpoint}: task multihead but the checkpoint has no heads.* weights")
        n_classes = int(state["heads.0.weight"].shape[0])
        model = MultiHeadClassifier(AutoModel.from_config(config), n_heads, n_classes)
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ModelLoadError(f"{checkpoint}: weights do not match a {config.model_type} multi-head model "
                                 f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
        raw = json.loads((checkpoint / "config.json").read_text())
        default_names = CELADON_HEADS if (n_heads, n_classes) == (len(CELADON_HEADS), CELADON_CLASSES) else ()
        names = raw.get("head_names") or default_names or [f"head_{i}" for i in range(n_heads)]
        outputs: dict[str, Any] = {"heads": list(names), "classes": n_classes}
    else:
        model = LogitsOnly(AutoModelForSequenceClassification.from_pretrained(checkpoint, config=config))
        id2label = model.config.id2label
        outputs = {"labels": [str(id2label[i]) for i in range(model.config.num_labels)]}
    return model.eval(), outputs


def default_max_length(checkpoint: Path, config: Any) -> int:
    """The shorter of the tokenizer's ``model_max_length`` and the model's position table.

    RoBERTa-style models start positions after the pad id, so they lose ``pad_token_id + 1``
    positions (514 → 512).
    """
    positions = int(getattr(config, "max_position_embeddings", 512))
    if config.model_type in ("roberta", "xlm-roberta", "camembert"):
        positions -= int(config.pad_token_id) + 1
    tokenizer_config = checkpoint / "tokenizer_config.json"
    if tokenizer_config.is_file():
        limit = json.loads(tokenizer_config.read_text()).get("model_max_length")
        if isinstance(limit, (int, float)) and 0 < limit < _NO_LIMIT:
            return min(int(limit), positions)
    return positions


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


def export(checkpoint: Path | str, out_dir: Path | str, task: Task, quantize: str | None = None,
           max_length: int | None = None, head_names: Sequence[str] | None = None) -> Manifest:
    """Export a checkpoint to ``out_dir``: ONNX graph(s), tokenizer.json, manifest.json."""
    import transformers

    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    model, outputs = load_checkpoint(checkpoint, task)
    if head_names:
        if task != "multihead" or len(head_names) != len(outputs["heads"]):
            raise ValueError(f"--heads names {len(head_names)} heads but the model has {len(outputs.get('heads', []))}")
        outputs["heads"] = list(head_names)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer_path = copy_tokenizer(checkpoint, out_dir)
    tokenizer = load_tokenizer(tokenizer_path)
    vocab_rows = int(getattr(model, model.prefix if isinstance(model, MultiHeadClassifier) else "model")
                     .get_input_embeddings().num_embeddings)
    check_vocabulary(tokenizer_id_count(tokenizer), vocab_rows, f"{checkpoint}")
    pad_token = tokenizer_pad_token(checkpoint / "tokenizer_config.json")
    specials = special_tokens(tokenizer, pad_token, str(tokenizer_path))
    length = max_length or default_max_length(checkpoint, model.config)

    example = [specials.wrap(tokenizer.encode(text, add_special_tokens=False).ids)
               for text in ("An example sentence to trace the graph.", "Short one.")]
    input_ids, attention_mask = pad_batch(example, specials.pad_id)
    export_onnx(model, {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention_mask)},
                ["logits"], out_dir / FP32_FILE)
    onnx_files = {"fp32": FP32_FILE}
    quantization: dict[str, Any] = {}
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        kept_fp32 = fp32_nodes(out_dir / FP32_FILE)
        quantize_dynamic(out_dir / FP32_FILE, out_dir / INT8_FILE, weight_type=QuantType.QInt8,
                         nodes_to_exclude=kept_fp32, **INT8_SETTINGS)
        quantization = {**INT8_SETTINGS, "fp32_nodes": len(kept_fp32), "fp32_pattern": INT8_FP32_NODES.pattern}
        onnx_files["int8"] = INT8_FILE
    elif quantize is not None:
        raise ValueError(f"unknown quantization {quantize!r}; supported: int8")
    metadata = {
        "task": task,
        **outputs,
        "architecture": model.config.model_type,
        "max_length": length,
        "vocab_size": vocab_rows,
        "special_tokens": {"prefix": list(specials.prefix), "suffix": list(specials.suffix), "pad_id": specials.pad_id},
        "inputs": list(INPUT_NAMES),
        "onnx": onnx_files,
        "default_precision": "int8" if quantize == "int8" else "fp32",
        "preprocessing": "identity",
        "source": str(checkpoint.resolve()),
        "exported_with": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    if quantization:
        metadata["int8_quantization"] = {"method": "dynamic", "weights": "int8", **quantization}
    return write_manifest(out_dir, MANIFEST_KIND, metadata)


def fp32_nodes(graph_file: Path) -> list[str]:
    """Names of the MatMuls in ``graph_file`` that the int8 graph keeps in fp32 (INT8_FP32_NODES)."""
    import onnx

    graph = onnx.load(str(graph_file), load_external_data=False).graph
    return [node.name for node in graph.node if node.op_type == "MatMul" and INT8_FP32_NODES.search(node.name)]


class TorchReference:
    """The checkpoint in PyTorch eager, tokenized by transformers the way a user's script would."""

    def __init__(self, checkpoint: Path | str, task: Task, max_length: int):
        from transformers import AutoTokenizer

        self.model, self.outputs = load_checkpoint(checkpoint, task)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.max_length = max_length

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """One padded run per call, as ``tokenizer(texts, padding=True)`` gives it."""
        batch = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                               return_tensors="pt")
        with torch.inference_mode():
            return self.model(batch["input_ids"], batch["attention_mask"]).float().numpy()

    def run_sequences(self, sequences: Sequence[Sequence[int]], pad_id: int, max_tokens_per_run: int,
                      max_padding: float) -> np.ndarray:
        """Logits for already tokenized sequences, cut into the same runs ``HFClassifier.run_sequences`` makes."""
        out: np.ndarray | None = None
        for run in token_capped_batches([len(s) for s in sequences], max_tokens_per_run, max_padding):
            input_ids, attention_mask = pad_batch([sequences[i] for i in run], pad_id)
            with torch.inference_mode():
                logits = self.model(torch.from_numpy(input_ids), torch.from_numpy(attention_mask)).float().numpy()
            if out is None:
                out = np.empty((len(sequences), *logits.shape[1:]), dtype=np.float32)
            out[run] = logits
        assert out is not None, "run_sequences needs at least one sequence"
        return out
