"""Dynamic int8 quantization of an exported classifier graph, checked against fp32 on calibration texts.

Needs onnx and onnxruntime only (no torch): it compares the int8 graph with the fp32 ONNX graph.

ONNX Runtime's dynamic quantization stores weights in int8 and quantizes each MatMul's input
per run with one uint8 scale, (max - min) / 255. A MatMul whose input has a few outlying values
gets a coarse step for all the others, and the rounding error travels down the residual stream.
So the int8 graph always keeps the MatMuls matching ``INT8_FP32_NODES`` in fp32, and, given
calibration texts (documents like those the model will score, not the ones it is verified on):

1. one fp32 pass records the input of every weight MatMul (and Gemm) and its *activation outlier
   ratio*, the mean over runs of ``(max - min) / rms``: how many typical values one run's uint8
   range spans, so how coarse the int8 step is for that input;
2. the graph is quantized and its logits compared with the fp32 graph's on the same texts
   (:func:`expected_agreement`); while the share of decisions expected to agree is below
   ``target``, the int8 MatMuls with the highest outlier ratio move to fp32 (an eighth of the
   candidates per step, so at most eight re-quantizations; with every MatMul in fp32 the graph
   is the fp32 one and agrees fully).

What was kept in fp32, and the calibration agreement reached, go into the manifest.
"""
from __future__ import annotations

import math
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from selectd.models.runtime import make_session
from selectd.models.transformer.model import HFClassifier, decisions, padded_logits, session_forward

#: Dynamic int8 quantization settings (weights int8, activations uint8 scaled per run). Per-channel
#: weight scales keep small rows of a matrix from sharing one coarse scale with its largest; 7-bit
#: weights (reduce_range) keep ONNX Runtime's uint8 x int8 kernels on CPUs without VNNI (AVX2,
#: like this 2-core machine) from saturating the int16 sums of adjacent products. Measured here
#: against fp32 on 520 snippets, all-MiniLM-L6-v2 with a fine-tuned last layer kept 98.5 % of its
#: decisions with neither setting, 99.8 % per-channel alone, 99.4 % with both; per-channel alone
#: dropped the tiny DeBERTa-v2 fixture from 99.6 % to 96.7 % (saturation), both kept 99.2 %.
#: Fusing the graph first (onnxruntime.transformers.optimizer) changed neither agreement nor speed:
#: the session's own ORT_ENABLE_ALL optimizations already fuse attention, LayerNorm and GELU.
#: Only MatMuls are quantized: they are where int8 saves time. ONNX Runtime would also store the
#: embedding tables (Gather) in uint8 with ONE scale per table, which saves file size and memory
#: but no time, and its rounding enters every token's hidden state: with every MatMul in fp32, the
#: tiny BERT / DeBERTa-v2 fixtures still lost 0.4-1 % of their decisions to it alone.
INT8_SETTINGS: dict[str, Any] = {"per_channel": True, "reduce_range": True, "op_types_to_quantize": ["MatMul"]}
#: MatMuls always kept in fp32 in the int8 graph: the projections that write into the residual
#: stream (Hugging Face's ``attention.output.dense`` and ``output.dense`` in BERT, RoBERTa,
#: DeBERTa-v2/v3, MiniLM). Their inputs (the attention context, the GELU output) have a few
#: outlying values per run. Measured on 520 snippets, all-MiniLM-L6-v2 with a fine-tuned last
#: layer, three training seeds: 99.23 / 98.65 / 99.04 % of decisions kept with every MatMul in
#: int8, 100 / 99.42 / 99.62 % with these in fp32 (max |Δlogit| 5.8 -> 2.6); the int8 graph's
#: speed-up over fp32 went from 1.45x to 1.23x (CPU time, same run).
INT8_FP32_NODES = re.compile(r"/output/dense/")
#: Default share of documents expected to keep their fp32 decisions in int8 (expected_agreement
#: on the calibration texts). Stricter than verify's 99 % bar so that it holds on documents the
#: calibration did not see (MIN_INT8_AGREEMENT in tests/test_transformer.py has the figures).
DEFAULT_CALIBRATION_AGREEMENT = 0.998
#: Calibration texts read from a file at most (more costs export time, not accuracy)
MAX_CALIBRATION_TEXTS = 1000
#: Texts per call in the calibration passes, as verify runs them; it also bounds the memory the
#: recorded MatMul inputs take (one call's runs at a time)
CALIBRATION_TEXTS_PER_CALL = 32
#: Share of the remaining int8 candidates moved to fp32 per step
CANDIDATES_PER_STEP = 1 / 8


@dataclass
class Int8Plan:
    """Which MatMuls the int8 graph keeps in fp32, and why."""

    fp32_nodes: list[str]  # every MatMul kept in fp32: the pattern's, then the calibration's in order
    pattern_nodes: int  # how many of them INT8_FP32_NODES chose
    calibration: dict[str, Any] = field(default_factory=dict)  # empty when no calibration texts were given

    def manifest_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"method": "dynamic", "weights": "int8", **INT8_SETTINGS,
                                  "fp32_nodes": len(self.fp32_nodes), "fp32_pattern": INT8_FP32_NODES.pattern}
        if self.calibration:
            record["calibration"] = self.calibration
        return record


def weight_products(graph_file: Path) -> dict[str, str]:
    """The products dynamic quantization turns into int8, by the name ONNX Runtime's quantizer gives
    them, with the activation each one multiplies: MatMuls whose second input is a weight, and
    Gemms (classification heads, poolers), which it first rewrites as MatMuls named
    ``<gemm>_MatMul``. Products of two activations (attention scores) stay fp32."""
    import onnx

    graph = onnx.load(str(graph_file), load_external_data=False).graph
    weights = {initializer.name for initializer in graph.initializer}
    suffix = {"MatMul": "", "Gemm": "_MatMul"}
    return {node.name + suffix[node.op_type]: node.input[0] for node in graph.node
            if node.op_type in suffix and node.input[1] in weights}


def pattern_nodes(graph_file: Path) -> list[str]:
    """The weight products of ``graph_file`` that INT8_FP32_NODES keeps in fp32 whatever the calibration."""
    return [name for name in weight_products(graph_file) if INT8_FP32_NODES.search(name)]


def quantize_graph(fp32_file: Path, int8_file: Path, fp32_nodes: Sequence[str]) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(fp32_file, int8_file, weight_type=QuantType.QInt8, nodes_to_exclude=list(fp32_nodes),
                     **INT8_SETTINGS)


def _in_calls(forward: Callable[[np.ndarray, np.ndarray], np.ndarray], model: HFClassifier,
              sequences: Sequence[Sequence[int]]) -> np.ndarray:
    """Logits of ``sequences`` by ``forward``, CALIBRATION_TEXTS_PER_CALL of them per call, each
    call cut into the scorer's padded runs."""
    step = CALIBRATION_TEXTS_PER_CALL
    return np.concatenate([padded_logits(forward, sequences[start:start + step], model.specials.pad_id,
                                         model.max_tokens_per_run, model.max_padding)
                           for start in range(0, len(sequences), step)])


def outlier_ratios(fp32_file: Path, inputs: dict[str, str], model: HFClassifier,
                   sequences: Sequence[Sequence[int]]) -> tuple[dict[str, float], np.ndarray]:
    """Activation outlier ratio of each node's input (``inputs``: node -> tensor; mean over runs of
    (max - min) / rms) and the fp32 logits, from one pass over ``sequences`` run as the scorer runs them."""
    import onnx

    graph_model = onnx.load(str(fp32_file))
    recorded = sorted(set(inputs.values()))  # Q, K and V share one input: record it once
    for name in recorded:
        graph_model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    ratio_sums = dict.fromkeys(recorded, 0.0)
    runs = 0

    def recording_forward(input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        nonlocal runs
        out = session.run(["logits", *recorded], {"input_ids": input_ids, "attention_mask": attention_mask})
        for name, values in zip(recorded, out[1:]):
            rms = math.sqrt(float(np.mean(np.square(values, dtype=np.float64))))
            spread = float(max(values.max(), 0.0) - min(values.min(), 0.0))  # uint8's range includes 0
            ratio_sums[name] += spread / rms if rms > 0 else 0.0
        runs += 1
        return out[0]

    with tempfile.TemporaryDirectory() as scratch:
        recording_file = Path(scratch) / "recording.onnx"
        onnx.save(graph_model, str(recording_file))
        session = make_session(recording_file)
        logits = _in_calls(recording_forward, model, sequences)
    return {node: ratio_sums[tensor] / runs for node, tensor in inputs.items()}, logits


def decision_margins(task: str, logits: np.ndarray) -> np.ndarray:
    """How far each decision of each document is from flipping, ``[n, decisions]``: a label's
    |logit| (multilabel), the gap between the first and second class (multiclass; per head)."""
    if task == "multilabel":
        return np.abs(logits)
    top_two = np.sort(logits, axis=-1)[..., -2:]
    return (top_two[..., 1] - top_two[..., 0]).reshape(len(logits), -1)


def decision_shifts(task: str, got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """How far ``got`` moved each decision's margin from ``expected``'s, ``[n, decisions]`` (for
    classes: the largest change of the gap between the expected class and any other)."""
    if task == "multilabel":
        return np.abs(got - expected)
    top = expected.argmax(axis=-1)[..., None]
    gaps_got = np.take_along_axis(got, top, axis=-1) - got
    gaps_expected = np.take_along_axis(expected, top, axis=-1) - expected
    return np.abs(gaps_got - gaps_expected).max(axis=-1).reshape(len(got), -1)


def expected_agreement(task: str, got: np.ndarray, expected: np.ndarray) -> float:
    """Share of documents expected to keep their decisions: every document's margins against every
    document's int8 shifts (a decision counts as flipped when the shift reaches its margin, in
    either direction, so this errs low). Counting the flips among n calibration documents
    instead has too few near-ties to tell 99.0 % from 99.8 %; n x n pairs do."""
    margins, shifts = decision_margins(task, expected), decision_shifts(task, got, expected)
    flips = np.zeros((len(margins), len(shifts)), dtype=bool)
    for column in range(margins.shape[1]):  # one decision at a time keeps memory at n x n
        flips |= shifts[None, :, column] >= margins[:, None, column]
    return float(1.0 - flips.mean())


def _int8_logits(int8_file: Path, model: HFClassifier, sequences: Sequence[Sequence[int]]) -> np.ndarray:
    return _in_calls(session_forward(make_session(int8_file)), model, sequences)


def check_calibration_target(target: float) -> None:
    if not 0.0 < target <= 1.0:
        raise ValueError(f"calibration agreement must be a share in (0, 1], got {target}")


def quantize_int8(model_dir: Path, fp32_file: str, int8_file: str, calibration_texts: Sequence[str] | None = None,
                  target: float = DEFAULT_CALIBRATION_AGREEMENT) -> Int8Plan:
    """Write ``int8_file`` next to ``fp32_file`` in ``model_dir`` (an exported directory whose manifest
    lists the fp32 graph) and return what it keeps in fp32 (module docstring)."""
    fp32_path, int8_path = model_dir / fp32_file, model_dir / int8_file
    kept = pattern_nodes(fp32_path)
    plan = Int8Plan(kept, len(kept))
    quantize_graph(fp32_path, int8_path, kept)
    if calibration_texts is None:
        return plan
    if not calibration_texts:
        raise ValueError("calibration texts: none given (a file with at least one {\"text\": ...} line is needed)")
    model = HFClassifier(model_dir, precision="fp32")
    sequences = model.windows(calibration_texts).sequences
    candidates = {name: tensor for name, tensor in weight_products(fp32_path).items() if name not in kept}
    ratios, expected = outlier_ratios(fp32_path, candidates, model, sequences)
    candidates = sorted(candidates, key=lambda name: -ratios[name])
    step = max(1, math.ceil(len(candidates) * CANDIDATES_PER_STEP))
    got = _int8_logits(int8_path, model, sequences)
    agreements = [expected_agreement(model.task, got, expected)]
    while agreements[-1] < target and candidates:
        kept += candidates[:step]
        del candidates[:step]
        quantize_graph(fp32_path, int8_path, kept)
        got = _int8_logits(int8_path, model, sequences)
        agreements.append(expected_agreement(model.task, got, expected))
    plan.fp32_nodes = kept
    plan.calibration = {
        "texts": len(calibration_texts),
        "target_agreement": target,
        "expected_agreement_by_step": [round(a, 4) for a in agreements],
        "decision_agreement": round(float(np.all(decisions(model.task, got) == decisions(model.task, expected),
                                                 axis=1).mean()), 4),
        "fp32_for_outliers": {name: round(ratios[name], 1) for name in kept[plan.pattern_nodes:]},
    }
    return plan
