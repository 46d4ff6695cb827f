"""Small causal LMs trained from local text: a CoLoR-Filter prior / conditional pair (export extra: torch).

Used by models/build_color_models.py and by the tests' fixture models. A byte-level BPE tokenizer
is trained on the general texts; the prior LM is trained on the general texts and the conditional
LM is a copy of the prior fine-tuned on the target texts (CoLoR-Filter's recipe at toy scale).
Checkpoints are written the Hugging Face way (config.json, model.safetensors, tokenizer.json,
tokenizer_config.json), so they go through the same exporter as any downloaded model.
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import torch
from torch import nn

Architecture = Literal["gpt2", "gpt_neox", "llama"]
END_OF_TEXT = "<|endoftext|>"
BOS = "<s>"


def train_tokenizer(texts: Sequence[str], vocab_size: int, bos: bool = False):
    """Byte-level BPE (GPT-2 / GPT-NeoX style); with ``bos`` every sequence starts with <s> (Llama style)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    specials = [END_OF_TEXT, BOS] if bos else [END_OF_TEXT]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts, trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, tokenizer.token_to_id(BOS))])
    return tokenizer


def tiny_model(architecture: Architecture, vocab_size: int, context: int, hidden: int, layers: int, heads: int,
               eos_id: int, seed: int = 0) -> nn.Module:
    from transformers import (GPT2Config, GPT2LMHeadModel, GPTNeoXConfig, GPTNeoXForCausalLM, LlamaConfig,
                              LlamaForCausalLM)

    torch.manual_seed(seed)
    common = {"vocab_size": vocab_size, "bos_token_id": eos_id, "eos_token_id": eos_id}
    if architecture == "gpt2":
        return GPT2LMHeadModel(GPT2Config(n_positions=context, n_embd=hidden, n_layer=layers, n_head=heads, **common))
    if architecture == "gpt_neox":
        return GPTNeoXForCausalLM(GPTNeoXConfig(max_position_embeddings=context, hidden_size=hidden,
                                                num_hidden_layers=layers, num_attention_heads=heads,
                                                intermediate_size=4 * hidden, **common))
    if architecture == "llama":
        return LlamaForCausalLM(LlamaConfig(max_position_embeddings=context, hidden_size=hidden,
                                            num_hidden_layers=layers, num_attention_heads=heads,
                                            num_key_value_heads=max(1, heads // 2), intermediate_size=3 * hidden,
                                            **common))
    raise ValueError(f"unknown architecture {architecture!r}; expected gpt2, gpt_neox or llama")


def train_lm(model: nn.Module, token_stream: Sequence[int], steps: int, sequence_length: int, batch_size: int = 8,
             lr: float = 3e-3, seed: int = 0) -> float:
    """Next-token training on random chunks of one token stream; returns the mean loss of the last steps."""
    if len(token_stream) <= sequence_length:
        raise ValueError(f"token stream of {len(token_stream)} tokens is too short for {sequence_length}-token chunks")
    rng = random.Random(seed)
    stream = torch.tensor(token_stream, dtype=torch.long)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    recent: list[float] = []
    for _ in range(steps):
        starts = [rng.randrange(len(stream) - sequence_length) for _ in range(batch_size)]
        batch = torch.stack([stream[s:s + sequence_length] for s in starts])
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recent = (recent + [float(loss.detach())])[-10:]
    model.eval()
    return sum(recent) / len(recent)


def save_checkpoint(model: nn.Module, tokenizer, directory: Path, bos: bool) -> Path:
    """config.json + model.safetensors + tokenizer.json / tokenizer_config.json in ``directory``."""
    from transformers import PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END_OF_TEXT,
                            bos_token=BOS if bos else END_OF_TEXT).save_pretrained(directory)
    return directory


@dataclass
class ColorPair:
    prior: Path
    conditional: Path
    prior_loss: float  # mean training loss of the last steps, nats/token
    conditional_loss: float


def build_color_pair(general: Sequence[str], target: Sequence[str], out_dir: Path, architecture: Architecture = "gpt_neox",
                     vocab_size: int = 1024, context: int = 512, hidden: int = 64, layers: int = 2, heads: int = 4,
                     prior_steps: int = 200, conditional_steps: int = 100, sequence_length: int = 128,
                     batch_size: int = 8, tokenizer_docs: int = 1000, seed: int = 0) -> ColorPair:
    """Train a tokenizer and a prior on ``general``, fine-tune a copy on ``target``; save both checkpoints.

    The tokenizer learns from the first ``tokenizer_docs`` general documents (BPE training time
    grows with the text; a thousand documents settle a few thousand merges).
    """
    bos = architecture == "llama"
    tokenizer = train_tokenizer(general[:tokenizer_docs], vocab_size, bos=bos)
    eos_id = tokenizer.token_to_id(END_OF_TEXT)

    def stream(texts: Sequence[str]) -> list[int]:
        ids: list[int] = []
        for encoding in tokenizer.encode_batch(list(texts), add_special_tokens=False):
            ids.extend(encoding.ids)
            ids.append(eos_id)
        return ids

    model = tiny_model(architecture, tokenizer.get_vocab_size(), context, hidden, layers, heads, eos_id, seed)
    prior_loss = train_lm(model, stream(general), prior_steps, sequence_length, batch_size, seed=seed)
    prior_dir = save_checkpoint(model, tokenizer, out_dir / "prior", bos)
    conditional = copy.deepcopy(model)
    conditional_loss = train_lm(conditional, stream(target), conditional_steps, sequence_length, batch_size,
                                lr=1e-3, seed=seed + 1)
    conditional_dir = save_checkpoint(conditional, tokenizer, out_dir / "conditional", bos)
    return ColorPair(prior_dir, conditional_dir, prior_loss, conditional_loss)
