"""The merge family, each rule alone: it fires on a witness graph, an extraction that prefers the
merged form (MatMul priced far above everything else) picks it, and the result agrees with the
original numerically in both directions. Members whose input depends on another member's
result are never merged (that would need the future: a cycle)."""

import math

import numpy as np
import onnx
import pytest
from onnx import helper

from eqsat.egraph import passes
from eqsat.egraph.encode import encode
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.egraph.saturate import saturate
from eqsat.extract.cost import CostModelBase
from eqsat.extract.extraction import extract
from eqsat.rules import schedule
from eqsat.verify.numeric import compare_models
from tests.helpers import init, model, vi


class PreferMerged(CostModelBase):
    """A cost model under which one wide MatMul (or Conv) beats several narrow ones."""

    name = "prefer-merged"

    def node_cost(self, op, attrs, ins, outs):
        return 100.0 if op in ("MatMul", "Conv") else 1.0


def _run(m: onnx.ModelProto, disabled=(), families=("cleanup", "merge")):
    g = passes.eliminate_dead_code(passes.fold_constants(import_onnx(m)))
    rules = schedule.select(families, disabled)
    sat = saturate(encode(g), schedule.rulesets(rules), rewrites=schedule.rewrites(rules))
    ex = extract(sat, PreferMerged())
    out = passes.fold_constants(ex.graph, bounded=False)
    return sat, ex, export_onnx(out)


def _check_both_directions(a: onnx.ModelProto, b: onnx.ModelProto) -> None:
    onnx.checker.check_model(b, full_check=True)
    for x, y in ((a, b), (b, a)):
        v = compare_models(x, y, seeds=(0, 1))
        assert v.ok, v.reason


def _ops(m: onnx.ModelProto) -> list[str]:
    return sorted(n.op_type for n in m.graph.node)


def shared_lhs_witness() -> onnx.ModelProto:
    widths = (5, 6, 7)
    nodes = []
    for i in range(len(widths)):
        nodes.append(helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Tanh", [f"m{i}"], [f"y{i}"]))
    rng = np.random.default_rng(0)
    inits = [
        init(f"w{i}", rng.standard_normal((4, n)).astype(np.float32)) for i, n in enumerate(widths)
    ]
    outs = [vi(f"y{i}", None) for i in range(len(widths))]
    return model(nodes, [vi("x", [2, 3, 4])], outs, inits)


def shared_rhs_witness() -> onnx.ModelProto:
    """x0 and x1 share w; a third MatMul's input is Tanh(x0 @ w) (an RNN state)."""
    nodes = [
        helper.make_node("MatMul", ["x0", "w"], ["m0"]),
        helper.make_node("MatMul", ["x1", "w"], ["m1"]),
        helper.make_node("Tanh", ["m0"], ["h"]),
        helper.make_node("Slice", ["h", "s0", "s1", "ax"], ["hs"]),
        helper.make_node("MatMul", ["hs", "w"], ["m2"]),
        helper.make_node("Add", ["m1", "m2"], ["y"]),
    ]
    inits = [init("w", np.random.default_rng(1).standard_normal((5, 5)).astype(np.float32))]
    inits += [
        helper.make_tensor(n, onnx.TensorProto.INT64, [1], [v])
        for n, v in (("s0", 0), ("s1", 3), ("ax", 0))
    ]
    return model(nodes, [vi("x0", [3, 5]), vi("x1", [3, 5])], [vi("y", None)], inits)


def shared_input_conv_witness(small_pads=(1, 1, 1, 1)) -> onnx.ModelProto:
    """A 3x3 (pads 1) and a 1x1 conv of one input, SqueezeNet's expand pair."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Conv", ["x", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[p - 1 for p in small_pads]),
        helper.make_node("Relu", ["c3"], ["r3"]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Concat", ["r1", "r3"], ["y"], axis=1),
    ]
    shapes = {"w3": (5, 3, 3, 3), "b3": (5,), "w1": (4, 3, 1, 1), "b1": (4,)}
    inits = [init(k, rng.standard_normal(v).astype(np.float32)) for k, v in shapes.items()]
    return model(nodes, [vi("x", [1, 3, 6, 6])], [vi("y", None)], inits)


def matmul_add_witness(h_rows=3) -> onnx.ModelProto:
    """tanh(x @ a + h @ b), an RNN gate: x [3, 4], h [h_rows, 5]."""
    rng = np.random.default_rng(4)
    nodes = [
        helper.make_node("MatMul", ["x", "a"], ["xa"]),
        helper.make_node("MatMul", ["h", "b"], ["hb"]),
        helper.make_node("Add", ["xa", "hb"], ["s"]),
        helper.make_node("Tanh", ["s"], ["y"]),
    ]
    inits = [
        init("a", rng.standard_normal((4, 6)).astype(np.float32)),
        init("b", rng.standard_normal((5, 6)).astype(np.float32)),
    ]
    return model(nodes, [vi("x", [3, 4]), vi("h", [h_rows, 5])], [vi("y", None)], inits)


WITNESSES = {
    "merge-matmul-add": matmul_add_witness,
    "merge-matmul-shared-lhs": shared_lhs_witness,
    "merge-matmul-shared-rhs": shared_rhs_witness,
    "merge-conv-shared-input": shared_input_conv_witness,
}


def test_sum_of_two_projections_becomes_one_projection_of_the_concatenation():
    m = matmul_add_witness()
    sat, _, out = _run(m, disabled=("merge-matmul-shared-lhs", "merge-matmul-shared-rhs"))
    assert sat.matches["merge-matmul-add"] == 1
    assert _ops(out) == ["Concat", "MatMul", "Tanh"]
    _check_both_directions(m, out)


def test_projections_of_differently_shaped_inputs_are_not_concatenated():
    m = matmul_add_witness(h_rows=1)  # [3, 6] + [1, 6] broadcasts, but [x h] does not exist
    sat, _, out = _run(m, disabled=("merge-matmul-shared-lhs", "merge-matmul-shared-rhs"))
    assert sat.matches["merge-matmul-add"] == 0
    assert _ops(out).count("MatMul") == 2


def test_convs_of_one_input_merge_with_the_small_kernel_padded():
    m = shared_input_conv_witness()
    sat, _, out = _run(m, families=("merge-conv",))
    assert sat.matches["merge-conv-shared-input"] == 2
    assert _ops(out).count("Conv") == 1
    assert "Pad" not in _ops(out)  # the padded weight is folded at export
    _check_both_directions(m, out)


def test_a_small_kernel_that_padding_would_shift_is_not_merged():
    # 3x3 without padding (4x4 output) next to a 1x1 (6x6 output): a padded 1x1 would need
    # pads 1 where the 3x3 has 0 — different windows, so no merge.
    rng = np.random.default_rng(3)
    nodes = [
        helper.make_node("Conv", ["x", "w3"], ["y3"]),
        helper.make_node("Conv", ["x", "w1"], ["y1"]),
    ]
    inits = [
        init("w3", rng.standard_normal((5, 3, 3, 3)).astype(np.float32)),
        init("w1", rng.standard_normal((4, 3, 1, 1)).astype(np.float32)),
    ]
    m = model(nodes, [vi("x", [1, 3, 6, 6])], [vi("y3", None), vi("y1", None)], inits)
    sat, _, out = _run(m, families=("merge-conv",))
    assert sat.matches["merge-conv-shared-input"] == 0
    assert _ops(out).count("Conv") == 2


def test_conv_merging_is_not_in_the_default_schedule():
    # measured slower in onnxruntime on CPU (blocked channel layout): opt-in only
    assert "merge-conv" not in schedule.DEFAULT_FAMILIES


def test_shared_lhs_merges_three_matmuls_into_one():
    m = shared_lhs_witness()
    sat, ex, out = _run(m, disabled=("merge-matmul-shared-rhs", "merge-matmul-add"))
    assert sat.matches["merge-matmul-shared-lhs"] == 3
    assert _ops(out).count("MatMul") == 1
    assert _ops(out).count("Slice") == 3
    assert "Concat" not in _ops(out)  # the concatenated weight is folded at export
    _check_both_directions(m, out)


def test_shared_rhs_batches_independent_inputs_only():
    m = shared_rhs_witness()
    sat, ex, out = _run(m, disabled=("merge-matmul-shared-lhs", "merge-matmul-add"))
    # x0 @ w and x1 @ w merge; hs @ w depends on x0 @ w and is left out.
    assert sat.matches["merge-matmul-shared-rhs"] == 2
    assert _ops(out).count("MatMul") == 2
    assert "Concat" in _ops(out)
    _check_both_directions(m, out)


@pytest.mark.parametrize("rule", ["merge-matmul-shared-lhs", "merge-matmul-shared-rhs"])
def test_disabled_merge_does_not_fire(rule):
    m = shared_lhs_witness() if rule.endswith("lhs") else shared_rhs_witness()
    sat, _, out = _run(m, disabled=(rule, "merge-matmul-add"))
    assert sat.matches.get(rule, 0) == 0
    assert _ops(out).count("MatMul") == _ops(m).count("MatMul")


def test_extraction_keeps_the_separate_matmuls_when_merging_does_not_pay():
    # Under AST size one MatMul + 3 Slices is bigger than 3 MatMuls: extraction says no.
    m = shared_lhs_witness()
    g = import_onnx(m)
    rules = schedule.select(("merge",))
    sat = saturate(encode(g), schedule.rulesets(rules), rewrites=schedule.rewrites(rules))
    ex = extract(sat)
    assert ex.graph.op_histogram().get("MatMul") == 3
    assert math.isfinite(ex.cost)


def test_nasrnn_gates_merge_end_to_end_under_the_default_schedule():
    from collections import Counter

    from eqsat import pipeline
    from eqsat.examples import build_example

    m = build_example("nasrnn", "small")  # 2 steps, 8 gates, 2 matmuls per gate
    result = pipeline.optimize(m, pipeline.Options(extractor="ilp"))
    before = Counter(n.op_type for n in m.graph.node)
    after = Counter(n.op_type for n in result.model.graph.node)
    assert before["MatMul"] == 32
    assert after["MatMul"] <= 4  # at most one per step and side: the eight gates merged
    assert after["Add"] < before["Add"]  # per-step gate sums merged through the slices
    assert result.egraph["extraction"]["extractor"] == "ilp"
    assert result.verdict.ok
