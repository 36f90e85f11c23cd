"""Compose a bundle's ONNX graph from parts, with the ``onnx`` package (no torch).

A backbone graph (``x`` normalised ``N×C×H×W`` → ``features`` ``N×D``) becomes the deployed
graph: input normalisation in front, a linear softmax head and the unfamiliar score behind:

    pixels ─ (x − mean)·scale ─ backbone ─ features ─┬─ Gemm ─ Softmax ─ probabilities
                                                     └─ k-th nearest cosine distance ─ unfamiliar_score,
                                                                                       unfamiliar

:func:`add_unfamiliar` alone serves graphs exported whole from torch, whose ``features`` are a
second output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from shoal.bundle.unfamiliar import Unfamiliar

if TYPE_CHECKING:
    import onnx

INPUT = "pixels"
FEATURES = "features"
PROBABILITIES = "probabilities"
SCORE = "unfamiliar_score"
VERDICT = "unfamiliar"
BANK = "shoal_bank_t"  # the initializer holding the transposed embedding bank (D×M)


def compose(backbone: onnx.ModelProto, *, mean: np.ndarray, scale: np.ndarray, weight: np.ndarray,
            bias: np.ndarray, unfamiliar: Unfamiliar | None) -> onnx.ModelProto:
    """The deployed graph from a backbone graph and a fitted head.

    Args:
        backbone: one input (normalised ``N×C×H×W``), one output ``features`` ``(N, D)``.
        mean: the mean to subtract, ``(C, H, W)`` or ``(C, 1, 1)``, pixel units.
        scale: ``(C, 1, 1)`` factor after subtracting the mean.
        weight: ``(K, D)`` head weight; bias: ``(K,)``.
        unfamiliar: the detector, or ``None`` for a graph with ``probabilities`` only.

    Returns:
        A new model: input ``pixels`` (float32 ``N×C×H×W``, 0..255), outputs ``probabilities``
        and, with a detector, ``unfamiliar_score`` and ``unfamiliar``.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto()
    model.CopyFrom(backbone)
    graph = model.graph
    (old_input,) = graph.input
    dims = [d.dim_value if d.HasField("dim_value") else "batch" for d in old_input.type.tensor_type.shape.dim]
    _constant(graph, "shoal_mean", mean)
    _constant(graph, "shoal_scale", scale)
    front = [helper.make_node("Sub", [INPUT, "shoal_mean"], ["shoal_centred"]),
             helper.make_node("Mul", ["shoal_centred", "shoal_scale"], [old_input.name])]
    nodes = front + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.input[:]
    graph.input.append(helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, dims))

    _constant(graph, "shoal_head_weight", weight)
    _constant(graph, "shoal_head_bias", bias)
    graph.node.extend([
        helper.make_node("Gemm", [FEATURES, "shoal_head_weight", "shoal_head_bias"], ["shoal_logits"], transB=1),
        helper.make_node("Softmax", ["shoal_logits"], [PROBABILITIES], axis=1),
    ])
    graph.output.insert(0, helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", len(bias)]))
    add_unfamiliar(model, unfamiliar)
    onnx.checker.check_model(model)
    return model


def add_unfamiliar(model: onnx.ModelProto, unfamiliar: Unfamiliar | None) -> None:
    """Turn the graph's ``features`` output into ``unfamiliar_score`` and ``unfamiliar`` outputs.

    The score is :meth:`Unfamiliar.scores` in ONNX operators: unit-normalise, cosine similarity
    to the bank, the k-th largest, one minus it. Without a detector the ``features`` output is
    only dropped.
    """
    from onnx import TensorProto, helper

    graph = model.graph
    if unfamiliar is None:
        _drop_output(graph, FEATURES)
        return
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
    k = min(unfamiliar.k, len(unfamiliar.bank))
    _constant(graph, BANK, np.ascontiguousarray(unfamiliar.bank.T))
    _constant(graph, "shoal_eps", np.array(1e-12, np.float32))
    _constant(graph, "shoal_one", np.array(1.0, np.float32))
    _constant(graph, "shoal_k", np.array([k], np.int64))
    _constant(graph, "shoal_kth", np.array(k - 1, np.int64))
    _constant(graph, "shoal_threshold", np.array(unfamiliar.threshold, np.float32))
    if opset >= 18:  # ReduceL2 took its axes as an attribute before opset 18, as an input since
        _constant(graph, "shoal_axis", np.array([1], np.int64))
        norm = helper.make_node("ReduceL2", [FEATURES, "shoal_axis"], ["shoal_norm"], keepdims=1)
    else:
        norm = helper.make_node("ReduceL2", [FEATURES], ["shoal_norm"], axes=[1], keepdims=1)
    graph.node.extend([
        norm,
        helper.make_node("Max", ["shoal_norm", "shoal_eps"], ["shoal_norm_safe"]),
        helper.make_node("Div", [FEATURES, "shoal_norm_safe"], ["shoal_unit"]),
        helper.make_node("MatMul", ["shoal_unit", BANK], ["shoal_similarity"]),
        helper.make_node("TopK", ["shoal_similarity", "shoal_k"], ["shoal_nearest", "shoal_nearest_index"], axis=1),
        helper.make_node("Gather", ["shoal_nearest", "shoal_kth"], ["shoal_kth_similarity"], axis=1),
        helper.make_node("Sub", ["shoal_one", "shoal_kth_similarity"], [SCORE]),
        helper.make_node("Greater", [SCORE, "shoal_threshold"], [VERDICT]),
    ])
    _drop_output(graph, FEATURES)
    graph.output.extend([helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, ["batch"]),
                         helper.make_tensor_value_info(VERDICT, TensorProto.BOOL, ["batch"])])


def _constant(graph: onnx.GraphProto, name: str, value: np.ndarray) -> None:
    from onnx import numpy_helper

    array = np.asarray(value)
    array = array.astype(np.float32) if array.dtype.kind == "f" else array
    graph.initializer.append(numpy_helper.from_array(array, name))


def _drop_output(graph: onnx.GraphProto, name: str) -> None:
    kept = [o for o in graph.output if o.name != name]
    del graph.output[:]
    graph.output.extend(kept)
