"""Causal LMs on ONNX Runtime: parity with PyTorch, CoLoR / Min-K% / perplexity maths, window policy, load checks.

Fixture models are tiny GPT-2 and GPT-NeoX prior / conditional pairs trained for a few seconds
on the sample corpus (conditional = prior fine-tuned on its python-docs documents), exported
once per session.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import orjson
import pytest

import torch  # export extra, part of the test extra

from selectd.models.causal_lm.model import (  # noqa: E402
    DEFAULT_MAX_TOKENS_PER_RUN, INPUT_NAME, CausalLM, WindowPolicy, mean_cross_entropy, min_k_prob,
)
from selectd.models.hf_common import probe_embedding_rows  # noqa: E402
from selectd.models.manifest import ModelLoadError, load_manifest, write_manifest  # noqa: E402
from selectd.models.runtime import resolve_providers  # noqa: E402
from conftest import assert_kinds_declared  # noqa: E402
from selectd.scorers.base import scorer_class  # noqa: E402
from selectd.tools.causal_lm import cli  # noqa: E402
from selectd.tools.causal_lm.export import (  # noqa: E402
    ATTENTION_BLOCKS, BLOCKED_ATTENTION, HEAD_CHUNKS, TorchReference, UnsupportedAttention, blocked_causal_attention,
    export,
)
from selectd.tools.causal_lm.train import build_color_pair, save_checkpoint, tiny_model, train_tokenizer  # noqa: E402

CONTEXT = 128
WINDOW = 64  # below the context, so long documents are windowed
TARGET_SOURCE = "python-docs"


@pytest.fixture(scope="session")
def corpus(sample_corpus) -> list[dict]:
    return [orjson.loads(line) for line in sample_corpus.read_bytes().splitlines()]


@pytest.fixture(scope="session")
def eval_texts(corpus) -> list[str]:
    """Held-out documents (not used in training), cut to keep the test fast; a few are windowed."""
    return [r["text"][:1200] for r in corpus[2000:2600]]


@pytest.fixture(scope="session", params=["gpt2", "gpt_neox"])
def pair(request, corpus, tmp_path_factory):
    """(architecture, checkpoints, exported prior dir, exported conditional dir)."""
    torch.set_num_threads(1)  # the CI machine has 2 shared cores: more threads only contend
    general = [r["text"][:3000] for r in corpus[:500]]
    target = [r["text"][:3000] for r in corpus[:2000] if r["source"] == TARGET_SOURCE]
    root = tmp_path_factory.mktemp(f"lm-{request.param}")
    checkpoints = build_color_pair(general, target, root, architecture=request.param, vocab_size=512, context=CONTEXT,
                                   hidden=32, layers=2, heads=2, prior_steps=60, conditional_steps=40,
                                   sequence_length=64)
    export(checkpoints.prior, root / "prior.onnx.d")
    export(checkpoints.conditional, root / "conditional.onnx.d")
    return request.param, checkpoints, root / "prior.onnx.d", root / "conditional.onnx.d"


def _reference_logprobs(checkpoint: Path, texts: list[str]) -> list[np.ndarray]:
    torch.set_num_threads(1)
    return TorchReference(checkpoint, WINDOW).text_logprobs(texts)


def test_token_logprobs_match_pytorch(pair, eval_texts):
    _, checkpoints, prior_dir, conditional_dir = pair
    texts = eval_texts[:80]
    for model_dir, checkpoint in ((prior_dir, checkpoints.prior), (conditional_dir, checkpoints.conditional)):
        assert load_manifest(model_dir).metadata["attention"].startswith("blocked-causal")
        ours = CausalLM(model_dir, window=WINDOW).text_logprobs(texts)
        theirs = _reference_logprobs(checkpoint, texts)
        assert [len(a) for a in ours.logprobs] == [len(b) for b in theirs]
        assert max(ours.windows) > 1, "some documents must span several windows"
        worst = max(float(np.abs(a - b).max()) for a, b in zip(ours.logprobs, theirs) if len(a))
        assert worst <= 1e-4, f"{model_dir}: max |Δ log-prob| {worst}"


def test_color_scores_rank_like_pytorch_on_500_documents(pair, eval_texts):
    _, checkpoints, prior_dir, conditional_dir = pair
    texts = eval_texts[:500]
    scorer = scorer_class("color_filter")("color", scorer_class("color_filter").Options(
        prior_model_dir=str(prior_dir), conditional_model_dir=str(conditional_dir), window=WINDOW))
    signals = scorer.run(texts)
    prior = _reference_logprobs(checkpoints.prior, texts)
    conditional = _reference_logprobs(checkpoints.conditional, texts)
    expected = np.array([mean_cross_entropy(p) - mean_cross_entropy(c) for p, c in zip(prior, conditional)])
    scored = ~np.isnan(expected)
    assert scored.sum() >= 500 - 5
    assert np.array_equal(np.isnan(signals["color"]), ~scored)
    assert np.array_equal(np.argsort(signals["color"][scored], kind="stable"), np.argsort(expected[scored], kind="stable"))
    # the fine-tuning moved the conditional model: target-like documents gain the most
    assert np.nanstd(signals["color"]) > 0.01
    np.testing.assert_allclose(signals["color"], signals["ce_prior"] - signals["ce_conditional"])
    assert_kinds_declared(scorer, signals)
    assert set(signals) == set(scorer.signals_help().split(", ")), "check-config --list-scorers says what it emits"


def test_color_filter_prefers_target_documents(pair, corpus):
    _, _, prior_dir, conditional_dir = pair
    held_out = corpus[2000:]
    target = [r["text"][:1200] for r in held_out if r["source"] == TARGET_SOURCE][:40]
    other = [r["text"][:1200] for r in held_out if r["source"] not in (TARGET_SOURCE, "synthetic")][:40]
    scorer = scorer_class("color_filter")("color", scorer_class("color_filter").Options(
        prior_model_dir=str(prior_dir), conditional_model_dir=str(conditional_dir), window=WINDOW))
    assert np.nanmean(scorer.run(target)["color"]) > np.nanmean(scorer.run(other)["color"])


def _detect_pretrain_min_k(model, text_ids: list[int], ratio: float) -> float:
    """detect-pretrain-code's Min-K% Prob, written as in the reference (one document, whole)."""
    input_ids = torch.tensor(text_ids).unsqueeze(0)
    with torch.no_grad():
        logits = model(input_ids).logits
    probs = torch.nn.functional.log_softmax(logits[0, :-1], dim=-1)
    token_log_probs = probs.gather(dim=-1, index=input_ids[0][1:].unsqueeze(-1)).squeeze(-1)
    all_prob = token_log_probs.numpy().tolist()
    k_length = int(len(all_prob) * ratio)
    topk_prob = np.sort(all_prob)[:k_length]
    return -np.mean(topk_prob).item()


def test_min_k_and_perplexity_match_direct_reference(pair, eval_texts):
    _, checkpoints, prior_dir, _ = pair
    ratio = 0.2
    scorer = scorer_class("causal_lm")("lm", scorer_class("causal_lm").Options(
        model_dir=str(prior_dir), window=CONTEXT, min_k_ratio=ratio))
    reference = TorchReference(checkpoints.prior, CONTEXT)
    candidates = [t[:200] for t in eval_texts[:200]]
    fitting = [(t, i) for t, i in zip(candidates, reference.encode(candidates)) if 2 / ratio <= len(i) <= CONTEXT][:50]
    assert len(fitting) >= 20
    texts, ids = [t for t, _ in fitting], [i for _, i in fitting]
    assert [len(i) for i in scorer.model.encode(texts)] == [len(i) for i in ids]
    signals = scorer.run(texts)
    expected_min_k = np.array([_detect_pretrain_min_k(reference.model, i, ratio) for i in ids])
    np.testing.assert_allclose(signals["min_k"], expected_min_k, atol=1e-4)
    # same maths on the same log-probabilities: equal to the last bit
    lps = reference.document_logprobs(ids)
    for lp in lps:
        k = int(len(lp) * ratio)
        assert min_k_prob(lp, ratio) == -np.mean(np.sort(lp)[:k]).item()
    expected_ppl = np.array([float(torch.exp(torch.nn.functional.cross_entropy(
        reference.model(torch.tensor([i])).logits[0, :-1], torch.tensor(i[1:])))) for i in ids])
    np.testing.assert_allclose(signals["perplexity"], expected_ppl, rtol=1e-4)
    np.testing.assert_array_equal(signals["tokens"], [len(i) - 1 for i in ids])
    assert_kinds_declared(scorer, signals)


def test_min_k_of_short_documents_uses_at_least_one_token():
    lp = np.array([-1.0, -3.0, -2.0])
    assert min_k_prob(lp, 0.2) == 3.0  # floor(3 * 0.2) = 0 -> the reference's NaN; we take the lowest
    assert min_k_prob(lp, 0.7) == 2.5
    assert np.isnan(min_k_prob(np.empty(0), 0.2)) and np.isnan(mean_cross_entropy(np.empty(0)))


def test_window_policy_predicts_every_token_once_and_is_recorded(pair, eval_texts):
    _, _, prior_dir, _ = pair
    model = CausalLM(prior_dir, window=WINDOW)
    ids = max(model.encode(eval_texts[:50]), key=len)
    assert len(ids) > 3 * WINDOW
    result = model.document_logprobs([ids, ids[:1], []])
    assert len(result.logprobs[0]) == len(ids) - 1
    assert result.windows[0] == -(-(len(ids) - 1) // (WINDOW - 1))
    spans = WindowPolicy(WINDOW).spans(len(ids))
    assert all(b[0] == a[1] - 1 for a, b in zip(spans, spans[1:])), "windows overlap by exactly one token"
    # a window is scored exactly as the same tokens alone
    second = model.run_windows([ids[spans[1][0]:spans[1][1]]])[0]
    np.testing.assert_allclose(result.logprobs[0][WINDOW - 1:2 * (WINDOW - 1)], second, atol=1e-5)
    assert len(result.logprobs[1]) == 0 and len(result.logprobs[2]) == 0
    # a token cap below one window runs each window alone, with the same result
    capped = CausalLM(prior_dir, window=WINDOW, max_tokens_per_run=WINDOW // 2).document_logprobs([ids])
    np.testing.assert_allclose(capped.logprobs[0], result.logprobs[0], atol=1e-5)

    scorer = scorer_class("causal_lm")("lm", scorer_class("causal_lm").Options(model_dir=str(prior_dir), window=WINDOW))
    signals = scorer.run(["", "x", eval_texts[0]])
    assert set(signals) == set(scorer.signals_help().split(", ")), "check-config --list-scorers says what it emits"
    assert np.isnan(signals["ce"][0]) and np.isnan(signals["min_k"][1]) and np.isfinite(signals["ce"][2])
    assert signals["tokens"][0] == 0
    assert f"window={WINDOW} stride={WINDOW - 1}" in scorer.versions()["window_policy"]
    assert "token-weighted" in scorer.versions()["window_policy"]


# --- blocked causal attention -----------------------------------------------------------------

@pytest.mark.parametrize("kv_heads", [4, 2])
def test_blocked_attention_equals_causal_sdpa_at_any_length(kv_heads):
    """Lengths below, at and around the block count (empty blocks), and grouped-query heads."""
    generator = torch.Generator().manual_seed(0)
    for length in (1, 2, 3, 4, 5, 17, 64):
        query = torch.randn(2, 4, length, 8, generator=generator)
        key, value = (torch.randn(2, kv_heads, length, 8, generator=generator) for _ in range(2))
        got, _ = blocked_causal_attention(None, query, key, value, None, scaling=0.3)
        expected = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, is_causal=True, scale=0.3, enable_gqa=kv_heads != 4).transpose(1, 2)
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)


def test_blocked_attention_refuses_what_it_does_not_compute():
    query = torch.zeros(1, 2, 4, 8)
    with pytest.raises(UnsupportedAttention, match="softcap"):
        blocked_causal_attention(None, query, query, query, None, softcap=30.0)
    with pytest.raises(UnsupportedAttention, match="padding mask"):
        blocked_causal_attention(None, query, query, query, torch.ones(1, 1, 4, 4, dtype=torch.bool))


def _optimized_graph_ops(model_dir: Path, tmp_path: Path) -> list[str]:
    """Op types of the graph as ONNX Runtime runs it (after its own optimisations)."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
    return [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]


def test_graph_builds_attention_masks_once_and_reduces_the_head_in_chunks(pair, tmp_path):
    """The block masks are shared by every layer (2 here), and the vocabulary head runs in chunks."""
    _, _, prior_dir, _ = pair
    ops = _optimized_graph_ops(prior_dir, tmp_path)
    assert ops.count("Less") == ATTENTION_BLOCKS
    assert ops.count("LogSoftmax") == HEAD_CHUNKS


def test_graph_handles_windows_shorter_than_its_chunks(pair):
    """1 token (nothing to predict) and 2-3 tokens (most head chunks empty) run, equal to PyTorch."""
    from selectd.tools.causal_lm.export import load_checkpoint, reference_token_logprobs

    _, checkpoints, prior_dir, _ = pair
    session = CausalLM(prior_dir, window=WINDOW).session
    assert session.run(None, {"input_ids": np.array([[5]], dtype=np.int64)})[0].shape == (1, 0)
    input_ids = np.array([[5, 9, 3], [7, 2, 0]], dtype=np.int64)
    got = session.run(None, {"input_ids": input_ids})[0]
    with torch.inference_mode():
        expected = reference_token_logprobs(load_checkpoint(checkpoints.prior), torch.from_numpy(input_ids),
                                            torch.ones(2, 3, dtype=torch.int64)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)


def _bidirectional_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """A wrong attention (sees future tokens): its graph must fail the export's parity check."""
    return torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scaling).transpose(1, 2), None


def _attention_with_softcap(module, query, key, value, attention_mask, **kwargs):
    return blocked_causal_attention(module, query, key, value, attention_mask, **kwargs, softcap=50.0)


@pytest.mark.parametrize("substitute, reason", [(_bidirectional_attention, "differs from PyTorch"),
                                                (_attention_with_softcap, "softcap")])
def test_export_falls_back_to_transformers_attention_and_records_why(pair, tmp_path, monkeypatch, substitute, reason):
    from transformers import AttentionInterface

    _, checkpoints, _, _ = pair
    monkeypatch.setitem(AttentionInterface._global_mapping, BLOCKED_ATTENTION, substitute)
    metadata = export(checkpoints.prior, tmp_path / "fallback").metadata
    assert metadata["attention"] == "sdpa"
    assert reason in metadata["attention_fallback_reason"]
    assert metadata["export_check_max_abs_diff"] <= 1e-4


def test_export_of_a_model_that_cannot_switch_attention_keeps_its_own(pair, tmp_path, monkeypatch):
    from selectd.tools.causal_lm import export as exporter

    _, checkpoints, _, _ = pair
    load = exporter.load_checkpoint

    def fixed_attention(checkpoint):
        model = load(checkpoint)
        model.set_attn_implementation("eager")  # not the fallback's sdpa, which it cannot switch to either
        model.set_attn_implementation = lambda name: None  # as transformers does for such models: a warning
        return model

    monkeypatch.setattr(exporter, "load_checkpoint", fixed_attention)
    metadata = export(checkpoints.prior, tmp_path / "own").metadata
    assert metadata["attention"] == "eager" and "does not dispatch attention" in metadata["attention_fallback_reason"]
    assert metadata["export_check_max_abs_diff"] <= 1e-4


# --- load-time failures ---------------------------------------------------------------------

def _copy(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / model_dir.name
    shutil.copytree(model_dir, target)
    return target


def _rewrite_manifest(model_dir: Path) -> None:
    manifest = load_manifest(model_dir, verify=False)
    write_manifest(model_dir, manifest.kind, manifest.metadata)


def test_window_longer_than_context_fails_at_load(pair):
    _, _, prior_dir, _ = pair
    with pytest.raises(ModelLoadError, match=f"window of {CONTEXT + 1} tokens is longer than the model's context of {CONTEXT}"):
        CausalLM(prior_dir, window=CONTEXT + 1)
    with pytest.raises(ModelLoadError, match="longer than the model's context"):
        scorer_class("causal_lm")("lm", scorer_class("causal_lm").Options(model_dir=str(prior_dir), window=1024))


def test_tokenizer_of_another_vocabulary_fails_at_load(pair, corpus, tmp_path):
    _, _, prior_dir, _ = pair
    broken = _copy(prior_dir, tmp_path)
    train_tokenizer([r["text"] for r in corpus[:200]], 2048).save(str(broken / "tokenizer.json"))
    _rewrite_manifest(broken)
    with pytest.raises(ModelLoadError, match="vocabulary mismatch"):
        CausalLM(broken, window=WINDOW)


def test_color_pair_with_different_tokenizers_fails_at_load(pair, corpus, tmp_path):
    _, _, prior_dir, conditional_dir = pair
    other = _copy(conditional_dir, tmp_path)
    vocab = load_manifest(prior_dir).metadata["vocab_size"]
    train_tokenizer([r["text"] for r in corpus[800:1200]], vocab).save(str(other / "tokenizer.json"))
    _rewrite_manifest(other)
    options = scorer_class("color_filter").Options(prior_model_dir=str(prior_dir), conditional_model_dir=str(other),
                                                   window=WINDOW)
    with pytest.raises(ModelLoadError, match="tokenizer differs from the prior's"):
        scorer_class("color_filter")("color", options)


def test_bad_models_fail_at_load(pair, tmp_path):
    _, _, prior_dir, _ = pair
    tampered = _copy(prior_dir, tmp_path / "tampered")
    with open(tampered / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        CausalLM(tampered, window=WINDOW)

    garbage = _copy(prior_dir, tmp_path / "garbage")
    (garbage / "model.onnx").write_bytes(b"not an onnx graph")
    _rewrite_manifest(garbage)
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load it"):
        CausalLM(garbage, window=WINDOW)

    # a graph with the right signature that does not return log-probabilities (logits, say)
    import onnx
    from onnx import helper

    not_logprobs = _copy(prior_dir, tmp_path / "negated")
    graph = onnx.load(str(not_logprobs / "model.onnx"))
    for node in graph.graph.node:
        node.output[:] = ["raw" if name == "token_logprobs" else name for name in node.output]
    graph.graph.node.append(helper.make_node("Neg", ["raw"], ["token_logprobs"]))
    onnx.save(graph, str(not_logprobs / "model.onnx"))
    _rewrite_manifest(not_logprobs)
    with pytest.raises(ModelLoadError, match="are not log-probabilities"):
        CausalLM(not_logprobs, window=WINDOW)

    other_kind = _copy(prior_dir, tmp_path / "kind")
    manifest = json.loads((other_kind / "manifest.json").read_text())
    manifest["kind"] = "hf-classifier"
    (other_kind / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelLoadError, match="expected 'causal-lm'"):
        CausalLM(other_kind, window=WINDOW)


# --- Llama (BOS template, grouped-query attention) ---------------------------------------

def test_llama_exports_with_parity(corpus, tmp_path, eval_texts):
    tokenizer = train_tokenizer([r["text"] for r in corpus[:300]], 384, bos=True)
    model = tiny_model("llama", tokenizer.get_vocab_size(), CONTEXT, 32, 2, 4, tokenizer.token_to_id("<|endoftext|>"))
    checkpoint = save_checkpoint(model, tokenizer, tmp_path / "llama", bos=True)
    manifest = export(checkpoint, tmp_path / "llama.onnx.d")
    assert manifest.metadata["architecture"] == "llama"
    assert manifest.metadata["attention"].startswith("blocked-causal"), "grouped-query heads are repeated, not refused"
    lm = CausalLM(tmp_path / "llama.onnx.d", window=WINDOW)
    texts = eval_texts[:20]
    encoded = lm.encode(texts)
    assert all(ids[0] == tokenizer.token_to_id("<s>") for ids in encoded)
    ours = lm.document_logprobs(encoded).logprobs
    theirs = _reference_logprobs(checkpoint, texts)
    assert max(float(np.abs(a - b).max()) for a, b in zip(ours, theirs)) <= 1e-4


# --- the family CLI -------------------------------------------------------------------------

def _run(verb: str, argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    getattr(cli, f"add_{verb}_arguments")(parser)
    return getattr(cli, verb)(parser.parse_args(argv))


def test_cli_export_verify_bench(pair, eval_texts, tmp_path, capsys):
    architecture, checkpoints, prior_dir, conditional_dir = pair
    texts = tmp_path / "texts.jsonl"
    texts.write_bytes(b"\n".join(orjson.dumps({"text": t}) for t in eval_texts[:60]))
    out = tmp_path / "exported"
    assert _run("export", [str(checkpoints.conditional), str(out)]) == 0
    assert load_manifest(out).kind == cli.MANIFEST_KIND
    assert "max |Δ log-prob| vs PyTorch" in capsys.readouterr().out
    assert _run("verify", [str(prior_dir), "--against", str(checkpoints.prior), "--texts", str(texts),
                           "--window", str(WINDOW), "--conditional", str(out),
                           "--conditional-against", str(checkpoints.conditional), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["color"]["same_order"]
    assert report["models"]["prior"]["max_abs_token_logprob_diff"] <= 1e-4
    # verify fails against the wrong checkpoint
    assert _run("verify", [str(prior_dir), "--against", str(checkpoints.conditional), "--texts", str(texts),
                           "--window", str(WINDOW)]) == 1
    capsys.readouterr()
    assert _run("bench", [str(prior_dir), "--against", str(checkpoints.prior), "--texts", str(texts),
                          "--window", str(WINDOW), "--limit", "20", "--repeat", "1", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["tokens"] > 0 and bench["tokens_per_s"]["ours"] > 0 and bench["ratio"] > 0
    assert bench["architecture"] == architecture and bench["attention"].startswith("blocked-causal")
    assert bench["clock"] == "cpu" and len(bench["pass_ratios"]) == 1
    assert bench["max_tokens_per_run"] == DEFAULT_MAX_TOKENS_PER_RUN


def test_bench_on_cuda_times_by_wall_clock_and_refuses_cpu_time(pair, eval_texts, tmp_path, capsys):
    _, checkpoints, prior_dir, _ = pair
    texts = tmp_path / "texts.jsonl"
    texts.write_bytes(b"\n".join(orjson.dumps({"text": t}) for t in eval_texts[:4]))
    common = [str(prior_dir), "--against", str(checkpoints.prior), "--texts", str(texts), "--window", str(WINDOW),
              "--repeat", "1", "--provider", "cuda"]
    # CPU seconds would leave the GPU's work out of the timing, whatever the build
    assert _run("bench", [*common, "--clock", "cpu"]) == 2
    assert "--clock cpu does not count the GPU's work" in capsys.readouterr().err
    code = _run("bench", [*common, "--json"])
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert code == 0
        bench = json.loads(capsys.readouterr().out)
        assert bench["clock"] == "wall" and bench["onnxruntime_providers"][0] == "CUDAExecutionProvider"
    else:
        assert code == 2
        assert "execution provider 'cuda' requested" in capsys.readouterr().err


def test_cuda_sessions_keep_tf32_off(monkeypatch):
    """On an H200, TF32 products moved the demo LM's token log-probs by 3.7e-3 (2.9e-6 without)."""
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert resolve_providers("cuda") == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    assert resolve_providers("cpu") == ["CPUExecutionProvider"]


class _GatherWithoutBoundsCheck:
    """A session as the CUDA provider behaves: an out-of-range token id runs without an error."""

    def __init__(self, session):
        self.session = session

    def get_providers(self):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]

    def run(self, outputs, feeds, options=None):
        ids = feeds[INPUT_NAME]
        return self.session.run(outputs, {INPUT_NAME: np.minimum(ids, 0)}, options)


def test_embedding_rows_are_probed_on_cpu_for_a_gpu_session(pair):
    _, _, prior_dir, _ = pair
    lm = CausalLM(prior_dir, window=WINDOW)
    gpu_like = _GatherWithoutBoundsCheck(lm.session)
    probe_embedding_rows(gpu_like, lm.model_path, lambda ids: {INPUT_NAME: ids}, lm.vocab_size)
    with pytest.raises(ModelLoadError, match="more embedding rows than"):
        probe_embedding_rows(gpu_like, lm.model_path, lambda ids: {INPUT_NAME: ids}, lm.vocab_size - 1)


def test_a_cuda_reference_without_a_gpu_is_a_load_error(pair, monkeypatch):
    _, checkpoints, _, _ = pair
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="this PyTorch sees no CUDA device"):
        TorchReference(checkpoints.prior, WINDOW, device="cuda")
