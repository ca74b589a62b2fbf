"""Constant folding and dead-code removal."""

import numpy as np
from onnx import TensorProto, helper

from eqsat.egraph import passes
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.verify.numeric import compare_models
from tests.helpers import init, model, vi


def test_shape_chain_on_static_shapes_folds_to_a_constant_reshape():
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
        helper.make_node("Unsqueeze", ["d0", "zero1"], ["d0u"]),
        helper.make_node("Concat", ["d0u", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    inits = [
        init("zero", np.array(0, np.int64)),
        init("zero1", np.array([0], np.int64)),
        init("minus1", np.array([-1], np.int64)),
    ]
    m = model(nodes, [vi("x", [2, 3, 4])], [vi("y", [2, 12])], inits)
    g = import_onnx(m)
    assert g.types["y"].shape == (2, 12)
    f = passes.fold_constants(g)
    assert [n.op for n in f.nodes] == ["Reshape"]
    np.testing.assert_array_equal(f.weights[f.nodes[0].inputs[1]], [2, -1])
    assert compare_models(m, export_onnx(f), rtol=0, atol=0).ok


def test_weight_only_arithmetic_folds_but_huge_expansions_do_not():
    nodes = [
        helper.make_node("Mul", ["w", "two"], ["w2"]),
        helper.make_node("Add", ["x", "w2"], ["a"]),
        helper.make_node("Expand", ["one", "big"], ["e"]),
        helper.make_node("ReduceSum", ["e"], ["s"], keepdims=0),
        helper.make_node("Add", ["a", "s"], ["y"]),
    ]
    inits = [
        init("w", np.ones((4,), np.float32)),
        init("two", np.array(2.0, np.float32)),
        init("one", np.array([1.0], np.float32)),
        init("big", np.array([1024, 1024], np.int64)),
    ]
    m = model(nodes, [vi("x", [4])], [vi("y", [4])], inits)
    f = passes.fold_constants(import_onnx(m))
    ops = [n.op for n in f.nodes]
    assert "Mul" not in ops  # folded into a weight
    assert "Expand" in ops  # 4 MiB result from 24 bytes of input: kept as a node
    assert compare_models(m, export_onnx(f)).ok


def test_dead_code_is_removed_but_inputs_stay():
    nodes = [
        helper.make_node("Relu", ["x"], ["y"]),
        helper.make_node("Neg", ["x"], ["unused"]),
        helper.make_node("Add", ["unused", "w"], ["unused2"]),
    ]
    m = model(
        nodes,
        [vi("x", [3]), vi("z", [3], TensorProto.FLOAT)],
        [vi("y", [3])],
        [init("w", np.ones(3, np.float32))],
    )
    g = passes.eliminate_dead_code(import_onnx(m))
    assert [n.op for n in g.nodes] == ["Relu"]
    assert g.inputs == ("x", "z") and not g.weights
    g.check()


def _sliced_model(bounds, axis=1, width=8):
    """y_k = Tanh(Slice(Sigmoid(x), bounds[k], axis)) for each (start, end) in ``bounds``."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["s"])]
    inits = [init("ax", np.array([axis], np.int64))]
    outs = []
    for k, (b, e) in enumerate(bounds):
        inits += [init(f"b{k}", np.array([b], np.int64)), init(f"e{k}", np.array([e], np.int64))]
        nodes.append(helper.make_node("Slice", ["s", f"b{k}", f"e{k}", "ax"], [f"p{k}"]))
        nodes.append(helper.make_node("Tanh", [f"p{k}"], [f"y{k}"]))
        outs.append(vi(f"y{k}", None))
    return model(nodes, [vi("x", [2, width])], outs, inits)


def _split_check(bounds, expect_split: bool):
    m = _sliced_model(bounds)
    g = passes.eliminate_dead_code(passes.slices_to_split(import_onnx(m)))
    ops = [n.op for n in g.nodes]
    assert ("Split" in ops) == expect_split
    assert ops.count("Slice") == (0 if expect_split else len(bounds))
    out = export_onnx(g)
    assert compare_models(m, out, rtol=0, atol=0).ok
    return g


def test_slices_that_tile_an_axis_become_one_split():
    g = _split_check([(4, 8), (0, 2), (2, 4)], True)  # any order
    split = next(n for n in g.nodes if n.op == "Split")
    np.testing.assert_array_equal(g.weights[split.inputs[1]], [2, 2, 4])


def test_slices_covering_half_an_axis_split_with_unused_outputs():
    g = _split_check([(0, 2), (4, 6)], True)  # gaps 2..4 and 6..8 become unused outputs
    split = next(n for n in g.nodes if n.op == "Split")
    assert len(split.outputs) == 4
    np.testing.assert_array_equal(g.weights[split.inputs[1]], [2, 2, 2, 2])


def test_overlapping_or_sparse_slices_stay():
    _split_check([(0, 4), (2, 6)], False)  # overlap
    _split_check([(0, 1), (7, 8)], False)  # a quarter of the axis: Split would copy 4x more
    _split_check([(0, 8)], False)  # one slice
