"""Train a small fastText quality (or toxicity) classifier on the sample corpus and export it.

    python models/build_quality_fasttext.py [--task quality|toxicity] [--out DIR] [--corpus FILE.jsonl]

Labels come from the corpus itself: its real documents (package READMEs and docs, Python
docstrings, system docs, translations) are ``__label__hq``; its synthetic low-quality pages
(cookie banners, repeated lines, keyword spam, lorem ipsum, code dumps, bullet lists, very short
pages) are ``__label__cc``. Training text gets DCLM's preprocessing and DCLM's fastText args
(softmax, dim 100, word bigrams, epoch 5, lr 0.1), so the exported model is scored with the
``dclm`` profile and ``hq_prob``, like DCLM's released classifier. It is a demo stand-in: real
deployments convert the released PreSelect / DCLM / Dolma fastText files with
`selectd export fasttext`.

``--task toxicity`` builds the stand-in for Dolma's jigsaw fastText tagger that the load test's
cascade needs (``models/toxicity_fasttext``): the same model shape (softmax, dim 100, word bigrams),
Dolma's ``dolma_jigsaw`` preprocessing, labels ``__label__toxic`` / ``__label__non_toxic``. The
corpus has no toxic text, so each real document also appears with mild insults inserted (about one
per 40 words) and the toxic label: the model learns those phrases, nothing more. It exists so benchmarks pay the real
cost of a toxicity stage; for filtering, convert Dolma's released model with `selectd export fasttext`.

Training uses the native fastText library (fasttext-numpy2, a test extra); the exported model
directory does not need it.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path
from typing import Callable, NamedTuple

import orjson

from selectd import preprocess
from selectd.tools.fasttext.export import export_model

MODELS = Path(__file__).resolve().parent
#: DCLM's fastText arguments (the bucket count is fastText's default, like DCLM's and PreSelect's)
TRAIN_ARGS = dict(dim=100, wordNgrams=2, epoch=5, lr=0.1, loss="softmax", bucket=2_000_000)
#: phrases the toxicity stand-in is taught to flag (see the module docstring)
INSULTS = ("you idiot", "what a moron", "shut up, loser", "you are pathetic", "stupid clown", "get lost, dumbass")


def quality_examples(record: dict, rng: random.Random) -> list[tuple[str, str]]:
    label = "hq" if record.get("kind", "real") == "real" else "cc"
    return [(label, preprocess.dclm(record["text"]))]


def toxicity_examples(record: dict, rng: random.Random) -> list[tuple[str, str]]:
    if record.get("kind", "real") != "real":
        return []
    text = preprocess.dolma_jigsaw(record["text"])
    words = text.split(" ")
    for _ in range(1 + len(words) // 40):  # about one insult a paragraph: enough to move a document's mean
        words.insert(rng.randrange(len(words) + 1), rng.choice(INSULTS))
    return [("non_toxic", text), ("toxic", " ".join(words))]


class Task(NamedTuple):
    examples: Callable[[dict, random.Random], list[tuple[str, str]]]
    labels: tuple[str, str]
    profile: str
    default_out: Path


TASKS = {
    "quality": Task(quality_examples, ("hq", "cc"), "dclm", MODELS / "quality_fasttext"),
    "toxicity": Task(toxicity_examples, ("non_toxic", "toxic"), "dolma_jigsaw", MODELS / "toxicity_fasttext"),
}


def write_training_file(corpus: Path, out: Path, task: Task = TASKS["quality"]) -> dict[str, int]:
    counts = dict.fromkeys(task.labels, 0)
    rng = random.Random(0)
    with open(corpus, "rb") as lines, open(out, "w", encoding="utf-8") as training:
        for line in lines:
            for label, text in task.examples(orjson.loads(line), rng):
                if text:
                    training.write(f"__label__{label} {text}\n")
                    counts[label] += 1
    return counts


def build(out_dir: Path | None = None, corpus: Path | None = None, docs: int = 5000, keep_bin: Path | None = None,
          threads: int = 1, task_name: str = "quality") -> Path:
    task = TASKS[task_name]
    out_dir = out_dir or task.default_out
    try:
        import fasttext
    except ImportError:
        raise SystemExit("training needs the native fastText library: pip install -e '.[test]'") from None
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        if corpus is None:
            from selectd.demo.corpus import build_corpus

            corpus = work_dir / "corpus.jsonl"
            build_corpus(corpus, n_docs=docs, seed=0)
        training = work_dir / "train.txt"
        counts = write_training_file(corpus, training, task)
        if not all(counts.values()):
            raise SystemExit(f"{corpus}: needs examples of every label, found {counts}")
        model = fasttext.train_supervised(str(training), thread=threads, verbose=0, **TRAIN_ARGS)
        binary = keep_bin or work_dir / f"{task_name}.bin"
        binary.parent.mkdir(parents=True, exist_ok=True)
        model.save_model(str(binary))
        manifest = export_model(binary, out_dir, profile=task.profile)
    trained_on = " / ".join(f"{count} {label}" for label, count in counts.items())
    print(f"{manifest.directory}: trained on {trained_on} documents, exported (profile {task.profile})")
    return manifest.directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=sorted(TASKS), default="quality",
                        help="quality (DCLM-shaped, default) or toxicity (Dolma-jigsaw-shaped stand-in)")
    parser.add_argument("--out", type=Path, help="model directory to write (default: models/quality_fasttext "
                        "or models/toxicity_fasttext)")
    parser.add_argument("--corpus", type=Path, help="JSONL with text and kind (default: build the sample corpus)")
    parser.add_argument("--docs", type=int, default=5000, help="sample corpus size when --corpus is not given")
    parser.add_argument("--keep-bin", type=Path, help="also keep the native .bin here (for selectd verify/bench)")
    parser.add_argument("--threads", type=int, default=1, help="fastText training threads")
    args = parser.parse_args(argv)
    build(args.out, args.corpus, args.docs, args.keep_bin, args.threads, args.task)
    return 0


if __name__ == "__main__":
    sys.exit(main())
