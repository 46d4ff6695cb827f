"""fastText's prediction as a row table plus an ONNX graph of its output layer.

The host sums each document's table rows (``selectd/models/fasttext/features.py``, in C where
built: ONNX Runtime's Gather costs ~70 ns per row, which made it most of a language-ID prediction)
and scales the sum by float32(1 / number of ids), as fastText. The graph takes that mean, ``hidden`` float32
[batch, width], and outputs ``probs`` float32 [batch, nlabels], the probability fastText's
``predict(k=-1)`` reports for every label (softmax / ova: p + 1e-5; hs: exp of the path's summed
log(σ + 1e-5), which can slightly exceed 1).

The output layer is linear in the mean embedding, so when the output layer uses fewer rows than the
model has dimensions (every few-label classifier) the exporter folds ``W · Oᵀ`` into the table: each
id then adds ``rows`` floats instead of ``dim``, and the graph starts from the logits.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from selectd.models.fasttext.binary import FastTextModel
from selectd.models.fasttext.model import HIDDEN_INPUT

if TYPE_CHECKING:
    import onnx

OPSET = 17
#: fastText's sigmoid table (loss.cc): 512 steps over [-8, 8]
SIGMOID_TABLE_SIZE = 512
MAX_SIGMOID = 8
#: fastText adds this inside every log (std_log)
LOG_EPSILON = 1e-5
#: fold in row blocks so a multi-GB input matrix is never converted to float64 at once
FOLD_BLOCK_ROWS = 1 << 16


def sigmoid_table() -> np.ndarray:
    x = (np.arange(SIGMOID_TABLE_SIZE + 1) * 2 * MAX_SIGMOID / SIGMOID_TABLE_SIZE - MAX_SIGMOID).astype(np.float32)
    return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def huffman_paths(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """fastText's ``HierarchicalSoftmaxLoss::buildTree`` as two [nlabels-1, nlabels] 0/1 matrices.

    left[n, l] = 1 when label l's path goes left at internal node ``nlabels + n`` (factor 1 − σ),
    right[n, l] = 1 when it goes right (factor σ). Internal node ``nlabels + n`` scores with output
    row n.
    """
    osz = len(counts)
    total = 2 * osz - 1
    count = np.full(total, 1e15, dtype=np.float64)
    count[:osz] = counts
    parent = np.full(total, -1, dtype=np.int64)
    is_right = np.zeros(total, dtype=bool)
    leaf, node = osz - 1, osz
    for i in range(osz, total):
        pair = []
        for _ in range(2):
            if leaf >= 0 and count[leaf] < count[node]:
                pair.append(leaf)
                leaf -= 1
            else:
                pair.append(node)
                node += 1
        count[i] = count[pair[0]] + count[pair[1]]
        parent[pair[0]] = parent[pair[1]] = i
        is_right[pair[1]] = True
    left = np.zeros((max(osz - 1, 0), osz), dtype=np.float32)
    right = np.zeros_like(left)
    for label in range(osz):
        child = label
        while parent[child] >= 0:
            (right if is_right[child] else left)[parent[child] - osz, label] = 1.0
            child = parent[child]
    return left, right


def output_rows(model: FastTextModel) -> np.ndarray:
    """The output-matrix rows the loss uses: one per label, or one per internal node for hs."""
    if model.args.loss == "hs":
        return model.output_matrix[: len(model.labels) - 1]
    return model.output_matrix


def write_table(model: FastTextModel, fold: bool, path: Path) -> tuple[int, int]:
    """Write the table whose rows the host sums per document (W, or W·Oᵀ when folding) as raw
    little-endian float32, and return its shape.

    Streams in row blocks: the input matrix may be a memory map of a multi-GB file.
    """
    matrix = model.input_matrix
    rows_out = output_rows(model).astype(np.float64)
    width = rows_out.shape[0] if fold else matrix.shape[1]
    with open(path, "wb") as handle:
        for start in range(0, matrix.shape[0], FOLD_BLOCK_ROWS):
            block = np.asarray(matrix[start:start + FOLD_BLOCK_ROWS])
            if fold:
                block = (block.astype(np.float64) @ rows_out.T).astype(np.float32)
            handle.write(np.ascontiguousarray(block, dtype="<f4").tobytes())
    return matrix.shape[0], width


def build_graph(model: FastTextModel, fold: bool) -> "onnx.ModelProto":
    """The ONNX model from the mean of a document's table rows to fastText's probabilities."""
    from onnx import TensorProto, helper, numpy_helper

    width = len(output_rows(model)) if fold else model.args.dim
    initializers = [numpy_helper.from_array(np.array(LOG_EPSILON, dtype=np.float32), "epsilon")]
    nodes = []
    if fold:
        logits = "hidden"
    else:
        initializers.append(numpy_helper.from_array(
            np.ascontiguousarray(output_rows(model).T, dtype=np.float32), "output_t"))
        nodes.append(helper.make_node("MatMul", ["hidden", "output_t"], ["logits"]))
        logits = "logits"

    loss = model.args.loss
    if loss == "softmax":
        nodes += [helper.make_node("Softmax", [logits], ["p"], axis=-1),
                  helper.make_node("Add", ["p", "epsilon"], ["probs"])]
    elif loss in ("ova", "ns"):
        # fastText's table sigmoid: T[int((x + 8) * 32)], 0 below -8, 1 above 8
        initializers += [
            numpy_helper.from_array(sigmoid_table(), "sigmoid_table"),
            numpy_helper.from_array(np.array(MAX_SIGMOID, dtype=np.float32), "max_sigmoid"),
            numpy_helper.from_array(np.array(-MAX_SIGMOID, dtype=np.float32), "min_sigmoid"),
            numpy_helper.from_array(np.array(SIGMOID_TABLE_SIZE / (2 * MAX_SIGMOID), dtype=np.float32), "steps_per_unit"),
            numpy_helper.from_array(np.array(0, dtype=np.int64), "first_step"),
            numpy_helper.from_array(np.array(SIGMOID_TABLE_SIZE, dtype=np.int64), "last_step"),
            numpy_helper.from_array(np.array(0.0, dtype=np.float32), "zero"),
            numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one"),
        ]
        nodes += [
            helper.make_node("Sub", [logits, "min_sigmoid"], ["shifted"]),
            helper.make_node("Mul", ["shifted", "steps_per_unit"], ["scaled"]),
            helper.make_node("Floor", ["scaled"], ["floored"]),
            helper.make_node("Cast", ["floored"], ["step_raw"], to=TensorProto.INT64),
            helper.make_node("Clip", ["step_raw", "first_step", "last_step"], ["step"]),
            helper.make_node("Gather", ["sigmoid_table", "step"], ["tabled"], axis=0),
            helper.make_node("Less", [logits, "min_sigmoid"], ["below"]),
            helper.make_node("Greater", [logits, "max_sigmoid"], ["above"]),
            helper.make_node("Where", ["above", "one", "tabled"], ["upper_capped"]),
            helper.make_node("Where", ["below", "zero", "upper_capped"], ["p"]),
            helper.make_node("Add", ["p", "epsilon"], ["probs"]),
        ]
    elif loss == "hs":
        left, right = huffman_paths(model.label_counts)
        initializers += [numpy_helper.from_array(left, "left_paths"),
                         numpy_helper.from_array(right, "right_paths"),
                         numpy_helper.from_array(np.array(1.0, dtype=np.float32), "one")]
        nodes += [
            helper.make_node("Sigmoid", [logits], ["sigma"]),
            helper.make_node("Sub", ["one", "sigma"], ["one_minus_sigma"]),
            helper.make_node("Add", ["one_minus_sigma", "epsilon"], ["left_arg"]),
            helper.make_node("Add", ["sigma", "epsilon"], ["right_arg"]),
            helper.make_node("Log", ["left_arg"], ["log_left"]),
            helper.make_node("Log", ["right_arg"], ["log_right"]),
            helper.make_node("MatMul", ["log_left", "left_paths"], ["left_sum"]),
            helper.make_node("MatMul", ["log_right", "right_paths"], ["right_sum"]),
            helper.make_node("Add", ["left_sum", "right_sum"], ["log_probs"]),
            helper.make_node("Exp", ["log_probs"], ["probs"]),
        ]
    else:
        raise ValueError(f"{model.path}: unsupported loss {loss!r}")

    graph = helper.make_graph(
        nodes, "fasttext",
        inputs=[helper.make_tensor_value_info(HIDDEN_INPUT, TensorProto.FLOAT, ["batch", width])],
        outputs=[helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", len(model.labels)])],
        initializer=initializers,
    )
    onnx_model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                   producer_name="selectd")
    onnx_model.ir_version = 8
    return onnx_model
