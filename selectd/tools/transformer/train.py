"""Brief fine-tuning of a classifier on labels built from local text (export extra: torch).

Used by ``models/build_toxicity_classifier.py`` and by the tests that give a real pretrained
backbone (all-MiniLM-L6-v2) a trained head. This is a few hundred steps of AdamW on CPU, enough
to make the model's decisions depend on its input, not a recipe for a production classifier.
"""
from __future__ import annotations

import random
from typing import Sequence

import numpy as np
import torch
from torch import nn

from selectd.models.transformer.model import Task


def fine_tune(model: nn.Module, tokenizer, texts: Sequence[str], targets: np.ndarray, task: Task, steps: int,
              batch_size: int = 16, learning_rate: float = 5e-5, max_length: int = 128, seed: int = 0,
              trainable: Sequence[str] = ()) -> list[float]:
    """Train ``model`` (``(input_ids, attention_mask) -> logits``) in place; returns the loss per step.

    ``targets``: multiclass ``[n]`` class indices; multilabel ``[n, labels]`` 0/1;
    multihead ``[n, heads]`` class indices per head. ``tokenizer`` is a transformers tokenizer.
    ``trainable``: names of parameters to train, by prefix (e.g. the head); empty = all. Training
    only the head keeps the backward pass out of the backbone, which is what makes this cheap on CPU.
    """
    torch.manual_seed(seed)
    order = random.Random(seed)
    indices = list(range(len(texts)))
    parameters = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not trainable or name.startswith(tuple(trainable)))
        if parameter.requires_grad:
            parameters.append(parameter)
    if not parameters:
        raise ValueError(f"no parameter name starts with any of {list(trainable)}")
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate)
    losses: list[float] = []
    model.train()
    for _ in range(steps):
        batch = order.sample(indices, min(batch_size, len(indices)))
        encoded = tokenizer([texts[i] for i in batch], truncation=True, max_length=max_length, padding=True,
                            return_tensors="pt")
        logits = model(encoded["input_ids"], encoded["attention_mask"])
        target = torch.as_tensor(targets[batch])
        if task == "multilabel":
            loss = nn.functional.binary_cross_entropy_with_logits(logits, target.float())
        elif task == "multiclass":
            loss = nn.functional.cross_entropy(logits, target.long())
        else:  # multihead: [batch, heads, classes] against [batch, heads]
            loss = nn.functional.cross_entropy(logits.flatten(0, 1), target.long().flatten())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
