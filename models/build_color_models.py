"""Train a small CoLoR-Filter prior / conditional LM pair on the sample corpus, export both, measure the cost.

    python models/build_color_models.py [--out models/color] [--corpus FILE.jsonl] [--target-source python-docs]

CoLoR-Filter's recipe at toy scale: a byte-level BPE tokenizer and a GPT-NeoX-style prior LM are
trained on the general pool (the sample corpus); the conditional LM is a copy of the prior
fine-tuned on the target subset (by default the corpus's ``python-docs`` documents). Both
checkpoints go through `selectd export causal-lm`'s exporter (with its PyTorch parity check) into
``OUT/prior`` and ``OUT/conditional``; the Hugging Face checkpoints stay in ``OUT/checkpoints``.
The last step scores held-out documents with the ``color_filter`` scorer (one thread) and writes
the cost per document to ``OUT/cost.json``.

Cost per document: two forward passes (prior and conditional) over every token of the document,
windows of ``--window`` tokens, so the cost grows linearly with document length and model size;
this script reports ms/document (wall and CPU) and tokens/s for the model it built. Measured
with the defaults (GPT-NeoX, 1.8M parameters, vocabulary 4,096, window 512; blocked causal
attention, 2,048 tokens per run) on the 2-core development machine, one thread, the 200
held-out documents of today's sample corpus (mean 1,329 tokens): 183 ms of CPU time per
document; wall time 186 ms (7,145 document tokens/s, each token running through both models)
when the shared machine was quiet, 276-278 ms under load. With the vocabulary head reduced in
chunks: 166 ms of CPU time per document, wall 185 ms at a load average of 4.3 on the 2 cores. Real CoLoR models (~150M
parameters) cost roughly 60× more per token (a 162M-parameter GPT-NeoX shape, vocabulary
50,304, ran 225 tokens/s per model on one core), so the stage belongs after the cheap ones,
where only documents that survived them pay for it::

    [[stages]]
    name = "color"
    type = "color_filter"
    options = { prior_model_dir = "models/color/prior", conditional_model_dir = "models/color/conditional" }
    select = { signal = "color", keep_fraction = 0.0625, method = "running_quantile" }   # τ = 16

Training needs the export extra (torch, transformers); the exported directories do not.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import orjson

DEFAULT_OUT = Path(__file__).resolve().parent / "color"


def read_corpus(path: Path | None, n_docs: int) -> list[dict]:
    if path is None:
        from selectd.demo.corpus import build_corpus

        path = Path(tempfile.mkdtemp(prefix="selectd-corpus-")) / "sample.jsonl"
        build_corpus(path, n_docs=n_docs, seed=0)
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def measure_cost(prior: Path, conditional: Path, texts: list[str], window: int) -> dict:
    """ms per document and tokens/s of the color_filter scorer on ``texts``, one thread."""
    from selectd.scorers.base import scorer_class

    cls = scorer_class("color_filter")
    scorer = cls("color", cls.Options(prior_model_dir=str(prior), conditional_model_dir=str(conditional),
                                      window=window, threads=1))
    scorer.warmup()
    began, began_cpu = time.perf_counter(), time.process_time()
    signals = {}
    for start in range(0, len(texts), 32):
        batch = scorer.run(texts[start:start + 32])
        for key, values in batch.items():
            signals.setdefault(key, []).extend(values.tolist())
    seconds, cpu_seconds = time.perf_counter() - began, time.process_time() - began_cpu
    tokens = int(sum(signals["tokens"]))
    # wall time is the cost on an idle core; CPU time is the steadier figure on a shared machine
    return {"documents": len(texts), "seconds": seconds, "ms_per_document": 1000 * seconds / len(texts),
            "cpu_ms_per_document": 1000 * cpu_seconds / len(texts),
            "tokens_per_document": tokens / len(texts), "tokens_per_s": tokens / seconds,
            "forward_passes_per_token": 2, "threads": 1, "window": window}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--corpus", type=Path, help="JSONL with text and source fields (default: build the sample corpus)")
    parser.add_argument("--corpus-docs", type=int, default=3000, help="documents in the built sample corpus")
    parser.add_argument("--target-source", default="python-docs", help="corpus source that forms the target data")
    parser.add_argument("--architecture", choices=["gpt2", "gpt_neox", "llama"], default="gpt_neox")
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=2, help="attention heads (head size = hidden / heads)")
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--prior-steps", type=int, default=300)
    parser.add_argument("--conditional-steps", type=int, default=150)
    parser.add_argument("--sequence-length", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for training")
    parser.add_argument("--cost-docs", type=int, default=200, help="held-out documents the cost is measured on")
    args = parser.parse_args(argv)

    import torch

    from selectd.tools.causal_lm.export import export
    from selectd.tools.causal_lm.train import build_color_pair

    torch.set_num_threads(args.threads)
    records = read_corpus(args.corpus, args.corpus_docs)
    held_out = records[-args.cost_docs:]
    training = records[:-args.cost_docs]
    general = [r["text"] for r in training]
    target = [r["text"] for r in training if r.get("source") == args.target_source]
    if not target:
        print(f"no training documents with source {args.target_source!r}", file=sys.stderr)
        return 2
    began = time.perf_counter()
    pair = build_color_pair(general, target, args.out / "checkpoints", architecture=args.architecture,
                            vocab_size=args.vocab_size, context=args.context, hidden=args.hidden, layers=args.layers,
                            heads=args.heads, prior_steps=args.prior_steps, conditional_steps=args.conditional_steps,
                            sequence_length=args.sequence_length)
    trained = time.perf_counter() - began
    prior = export(pair.prior, args.out / "prior")
    export(pair.conditional, args.out / "conditional")
    cost = measure_cost(args.out / "prior", args.out / "conditional", [r["text"] for r in held_out], args.context)
    report = {"architecture": args.architecture, "parameters": prior.metadata["parameters"],
              "general_documents": len(general), "target_documents": len(target),
              "prior_train_loss": pair.prior_loss, "conditional_train_loss": pair.conditional_loss,
              "training_seconds": trained, "cost": cost}
    (args.out / "cost.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
