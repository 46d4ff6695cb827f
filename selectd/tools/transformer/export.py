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
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from selectd.models.hf_common import check_vocabulary, load_tokenizer, pad_batch, special_tokens, tokenizer_id_count
from selectd.models.manifest import Manifest, ModelLoadError, write_manifest
from selectd.models.transformer.model import (CELADON_CLASSES, CELADON_HEADS, INPUT_NAMES, MANIFEST_KIND, Task,
                                              padded_logits)
from selectd.tools.hf_export import copy_tokenizer, export_onnx, reference_device, tokenizer_pad_token
from selectd.tools.transformer.quantize import DEFAULT_CALIBRATION_AGREEMENT, check_calibration_target, quantize_int8

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
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


def export(checkpoint: Path | str, out_dir: Path | str, task: Task, quantize: str | None = None,
           max_length: int | None = None, head_names: Sequence[str] | None = None,
           calibration_texts: Sequence[str] | None = None,
           calibration_agreement: float = DEFAULT_CALIBRATION_AGREEMENT) -> Manifest:
    """Export a checkpoint to ``out_dir``: ONNX graph(s), tokenizer.json, manifest.json.

    ``calibration_texts`` (with ``quantize="int8"``): documents on which the int8 graph must keep
    ``calibration_agreement`` of the fp32 graph's decisions (:mod:`.quantize`).
    """
    import transformers

    if quantize not in (None, "int8"):
        raise ValueError(f"unknown quantization {quantize!r}; supported: int8")
    if calibration_texts is not None and quantize != "int8":
        raise ValueError("calibration texts are for the int8 graph: add --quantize int8")
    check_calibration_target(calibration_agreement)
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
    (out_dir / INT8_FILE).unlink(missing_ok=True)  # an earlier export's graph must not be signed as this one's
    metadata = {
        "task": task,
        **outputs,
        "architecture": model.config.model_type,
        "max_length": length,
        "vocab_size": vocab_rows,
        "special_tokens": {"prefix": list(specials.prefix), "suffix": list(specials.suffix), "pad_id": specials.pad_id},
        "inputs": list(INPUT_NAMES),
        "onnx": {"fp32": FP32_FILE},
        "default_precision": "fp32",
        "preprocessing": "identity",
        "source": str(checkpoint.resolve()),
        "exported_with": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    manifest = write_manifest(out_dir, MANIFEST_KIND, metadata)
    if quantize != "int8":
        return manifest
    # the fp32 manifest above lets the calibration run the fp32 graph as the scorer does
    plan = quantize_int8(out_dir, FP32_FILE, INT8_FILE, calibration_texts, calibration_agreement)
    metadata.update(onnx={"fp32": FP32_FILE, "int8": INT8_FILE}, default_precision="int8",
                    int8_quantization=plan.manifest_record())
    return write_manifest(out_dir, MANIFEST_KIND, metadata)


class TorchReference:
    """The checkpoint in PyTorch eager on ``device`` ("cpu" or "cuda"), tokenized by transformers the way
    a user's script would."""

    def __init__(self, checkpoint: Path | str, task: Task, max_length: int, device: str = "cpu"):
        from transformers import AutoTokenizer

        self.device = reference_device(device)
        model, self.outputs = load_checkpoint(checkpoint, task)
        self.model = model.to(self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.max_length = max_length

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """One padded run per call, as ``tokenizer(texts, padding=True)`` gives it."""
        batch = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, padding=True,
                               return_tensors="pt")
        return self._logits(batch["input_ids"], batch["attention_mask"])

    def run_sequences(self, sequences: Sequence[Sequence[int]], pad_id: int, max_tokens_per_run: int,
                      max_padding: float) -> np.ndarray:
        """Logits for already tokenized sequences, cut into the same runs ``HFClassifier.run_sequences`` makes."""
        return padded_logits(lambda input_ids, attention_mask: self._logits(torch.from_numpy(input_ids),
                                                                              torch.from_numpy(attention_mask)),
                             sequences, pad_id, max_tokens_per_run, max_padding)

    def _logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.model(input_ids.to(self.device), attention_mask.to(self.device)).float().cpu().numpy()
