"""Train a small fastText quality classifier on the sample corpus and export it.

    python models/build_quality_fasttext.py [--out models/quality_fasttext] [--corpus FILE.jsonl]

Labels come from the corpus itself: its real documents (package READMEs and docs, Python
docstrings, system docs, translations) are ``__label__hq``; its synthetic low-quality pages
(cookie banners, repeated lines, keyword spam, lorem ipsum, code dumps, bullet lists, very short
pages) are ``__label__cc``. Training text gets DCLM's preprocessing and DCLM's fastText args
(softmax, dim 100, word bigrams, epoch 5, lr 0.1), so the exported model is scored with the
``dclm`` profile and ``hq_prob``, like DCLM's released classifier. It is a demo stand-in: real
deployments convert the released PreSelect / DCLM / Dolma fastText files with
`selectd export fasttext`.

Training uses the native fastText library (fasttext-numpy2, a test extra); the exported model
directory does not need it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import orjson

from selectd import preprocess
from selectd.models.fasttext.model import export_model

DEFAULT_OUT = Path(__file__).resolve().parent / "quality_fasttext"
#: DCLM's fastText arguments (the bucket count is fastText's default, like DCLM's and PreSelect's)
TRAIN_ARGS = dict(dim=100, wordNgrams=2, epoch=5, lr=0.1, loss="softmax", bucket=2_000_000)


def write_training_file(corpus: Path, out: Path) -> dict[str, int]:
    counts = {"hq": 0, "cc": 0}
    with open(corpus, "rb") as lines, open(out, "w", encoding="utf-8") as training:
        for line in lines:
            record = orjson.loads(line)
            label = "hq" if record.get("kind", "real") == "real" else "cc"
            text = preprocess.dclm(record["text"])
            if text:
                training.write(f"__label__{label} {text}\n")
                counts[label] += 1
    return counts


def build(out_dir: Path = DEFAULT_OUT, corpus: Path | None = None, docs: int = 5000, keep_bin: Path | None = None,
          threads: int = 1) -> Path:
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
        counts = write_training_file(corpus, training)
        if not counts["hq"] or not counts["cc"]:
            raise SystemExit(f"{corpus}: needs both real and synthetic documents, found {counts}")
        model = fasttext.train_supervised(str(training), thread=threads, verbose=0, **TRAIN_ARGS)
        binary = keep_bin or work_dir / "quality.bin"
        binary.parent.mkdir(parents=True, exist_ok=True)
        model.save_model(str(binary))
        manifest = export_model(binary, out_dir, profile="dclm")
    print(f"{manifest.directory}: trained on {counts['hq']} hq / {counts['cc']} cc documents, exported (profile dclm)")
    return manifest.directory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model directory to write")
    parser.add_argument("--corpus", type=Path, help="JSONL with text and kind (default: build the sample corpus)")
    parser.add_argument("--docs", type=int, default=5000, help="sample corpus size when --corpus is not given")
    parser.add_argument("--keep-bin", type=Path, help="also keep the native .bin here (for selectd verify/bench)")
    parser.add_argument("--threads", type=int, default=1, help="fastText training threads")
    args = parser.parse_args(argv)
    build(args.out, args.corpus, args.docs, args.keep_bin, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
