"""The layout family's Python-driven rules, each alone on a witness: it fires, extraction takes
the simpler graph, and the result agrees with the original in both directions. Guards: a reshape
with a 0 entry does not compose, a slice that straddles two inputs of a concat stays."""

import numpy as np
import onnx
import pytest
from onnx import helper

from eqsat import pipeline
from eqsat.rules import layout, schedule
from eqsat.rules.base import PyRule
from eqsat.verify.numeric import compare_models
from tests.helpers import init, model, vi

PY_RULES = [r.name for r in layout.rules() if isinstance(r, PyRule)]


def _i64(name, values):
    return init(name, np.array(values, np.int64))


def _optimize(m, rule, also=()):
    """Optimize with ``rule`` alone (plus ``also``, rules it enables) and check both ways."""
    every = [*layout.rules(), *schedule.FAMILIES["cleanup"]()]
    disabled = tuple(r.name for r in every if r.name != rule and r.name not in also)
    opts = pipeline.Options(rules=("cleanup", "layout"), disabled_rules=disabled, seeds=(0, 1))
    result = pipeline.optimize(m, opts)
    assert result.verdict.ok
    onnx.checker.check_model(result.model, full_check=True)
    back = compare_models(result.model, m, rtol=0, atol=0, seeds=(2,))
    assert back.ok, back.reason
    matches = result.egraph["saturation"]["matches"].get(rule, 0)
    return matches, [n.op_type for n in result.model.graph.node]


def _wrap(core_nodes, inputs, inits=()):
    """Sigmoid before and Tanh after, so that the rewritten core is not an input or output."""
    nodes = [helper.make_node("Sigmoid", ["x"], ["sx"])] + core_nodes
    nodes.append(helper.make_node("Tanh", ["core"], ["y"]))
    return model(nodes, inputs, [vi("y", None)], list(inits))


def witness_transpose_compose(p=(1, 2, 0), q=(2, 0, 1)):
    core = [
        helper.make_node("Transpose", ["sx"], ["t"], perm=list(q)),
        helper.make_node("Transpose", ["t"], ["core"], perm=list(p)),
    ]
    return _wrap(core, [vi("x", [2, 3, 4])])


def witness_reshape_compose(shape=(4, -1)):
    core = [
        helper.make_node("Reshape", ["sx", "s1"], ["r"]),
        helper.make_node("Reshape", ["r", "s2"], ["core"]),
    ]
    inits = [_i64("s1", [6, 4]), _i64("s2", list(shape))]
    return _wrap(core, [vi("x", [2, 3, 4])], inits)


def witness_reshape_noop():
    core = [helper.make_node("Reshape", ["sx", "s"], ["core"])]
    return _wrap(core, [vi("x", [2, 3, 4])], [_i64("s", [2, 3, -1])])


def witness_slice_of_concat(bounds=(3, 6)):
    """concat(sigmoid(x), relu(x)) along axis 1 (3 + 3), sliced back to ``bounds``."""
    core = [
        helper.make_node("Relu", ["x"], ["rx"]),
        helper.make_node("Concat", ["sx", "rx"], ["c"], axis=1),
        helper.make_node("Slice", ["c", "b", "e", "ax"], ["core"]),
    ]
    inits = [_i64("b", [bounds[0]]), _i64("e", [bounds[1]]), _i64("ax", [1])]
    return _wrap(core, [vi("x", [2, 3, 4])], inits)


def witness_concat_of_slices():
    core = [
        helper.make_node("Slice", ["sx", "z", "m", "ax"], ["a"]),
        helper.make_node("Slice", ["sx", "m", "big", "ax"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["core"], axis=-1),
    ]
    inits = [_i64("z", [0]), _i64("m", [3]), _i64("big", [2**62]), _i64("ax", [-1])]
    return _wrap(core, [vi("x", [2, 3, 5])], inits)


def witness_slice_slice_commute():
    """cols 3..6 of rows 1..3 of concat(sx, rx) along the columns: commuted, the column slice
    meets the concat and is rx (slice-of-concat), leaving one row slice of rx."""
    core = [
        helper.make_node("Relu", ["x"], ["rx"]),
        helper.make_node("Concat", ["sx", "rx"], ["cat"], axis=1),
        helper.make_node("Slice", ["cat", "r0", "r1", "a0"], ["rows"]),
        helper.make_node("Slice", ["rows", "c0", "c1", "a1"], ["core"]),
    ]
    inits = [_i64("r0", [1]), _i64("r1", [3]), _i64("a0", [0])]
    inits += [_i64("c0", [3]), _i64("c1", [6]), _i64("a1", [1])]
    return _wrap(core, [vi("x", [4, 3])], inits)


def witness_unary_concat():
    """relu(concat(relu(x), relu(sx))): distributed, relu-idempotent removes the inner Relus."""
    core = [
        helper.make_node("Relu", ["x"], ["rx"]),
        helper.make_node("Relu", ["sx"], ["rs"]),
        helper.make_node("Concat", ["rx", "rs"], ["cat"], axis=0),
        helper.make_node("Relu", ["cat"], ["core"]),
    ]
    return _wrap(core, [vi("x", [2, 3])])


ENABLES = {
    "slice-slice-commute": ("slice-of-concat",),
    "unary-concat-distribute": ("relu-idempotent",),
}


def witness_binary_slice_commute():
    core = [
        helper.make_node("Relu", ["x"], ["rx"]),
        helper.make_node("Slice", ["sx", "b", "e", "ax"], ["p"]),
        helper.make_node("Slice", ["rx", "b", "e", "ax"], ["q"]),
        helper.make_node("Add", ["p", "q"], ["core"]),
    ]
    inits = [_i64("b", [0]), _i64("e", [3]), _i64("ax", [-1])]
    return _wrap(core, [vi("x", [2, 8])], inits)


def witness_concat_flatten():
    """concat(concat(sx, concat(rx, sx)), rx) along axis 1, nested twice: one concat of four."""
    core = [
        helper.make_node("Relu", ["x"], ["rx"]),
        helper.make_node("Concat", ["rx", "sx"], ["c0"], axis=1),
        helper.make_node("Concat", ["sx", "c0"], ["c1"], axis=-1),
        helper.make_node("Concat", ["c1", "rx"], ["core"], axis=1),
    ]
    return _wrap(core, [vi("x", [2, 3])])


WITNESSES = {
    "concat-flatten": witness_concat_flatten,
    "unary-concat-distribute": witness_unary_concat,
    "slice-slice-commute": witness_slice_slice_commute,
    "binary-slice-commute": witness_binary_slice_commute,
    "transpose-compose": witness_transpose_compose,
    "reshape-compose": witness_reshape_compose,
    "reshape-noop": witness_reshape_noop,
    "slice-of-concat": witness_slice_of_concat,
    "concat-of-slices": witness_concat_of_slices,
}


def test_every_python_layout_rule_has_a_witness():
    assert set(WITNESSES) == set(PY_RULES)


@pytest.mark.parametrize("rule", PY_RULES)
def test_layout_rule_alone_fires_and_simplifies(rule):
    """An enabler (ENABLES) runs with the rule it enables: alone it changes nothing the cost
    model prices, and the extracted graph would not show its right-hand side."""
    m = WITNESSES[rule]()
    n, ops = _optimize(m, rule, ENABLES.get(rule, ()))
    assert n >= 1
    assert len(ops) < len(m.graph.node)


def test_transposes_that_compose_to_the_identity_vanish():
    n, ops = _optimize(witness_transpose_compose((1, 2, 0), (2, 0, 1)), "transpose-compose")
    assert n == 1 and ops == ["Sigmoid", "Tanh"]


def test_reshape_with_a_zero_does_not_compose():
    n, ops = _optimize(witness_reshape_compose((0, -1)), "reshape-compose")
    assert n == 0 and ops.count("Reshape") == 2


def test_slices_of_tensors_of_different_types_do_not_combine():
    # p = rows 0..2 of sigmoid(x) [2, 8], q = rows 0..2 of sigmoid(z) [4, 8]: same bounds, but
    # sigmoid(x) + sigmoid(z) does not even broadcast.
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["sx"]),
        helper.make_node("Sigmoid", ["z"], ["sz"]),
        helper.make_node("Slice", ["sx", "b", "e", "ax"], ["p"]),
        helper.make_node("Slice", ["sz", "b", "e", "ax"], ["q"]),
        helper.make_node("Add", ["p", "q"], ["y"]),
    ]
    inits = [_i64("b", [0]), _i64("e", [2]), _i64("ax", [0])]
    m = model(nodes, [vi("x", [2, 8]), vi("z", [4, 8])], [vi("y", None)], inits)
    n, ops = _optimize(m, "binary-slice-commute")
    assert n == 0 and ops.count("Slice") >= 1


def test_slice_straddling_two_concat_inputs_stays():
    n, ops = _optimize(witness_slice_of_concat((2, 4)), "slice-of-concat")
    assert n == 0 and "Slice" in ops and "Concat" in ops


def test_nested_concatenations_flatten_to_one():
    n, ops = _optimize(witness_concat_flatten(), "concat-flatten")
    assert n >= 1 and ops.count("Concat") == 1


def test_concatenations_along_different_axes_do_not_flatten():
    core = [
        helper.make_node("Relu", ["x"], ["rx"]),
        helper.make_node("Concat", ["rx", "sx"], ["c0"], axis=0),
        helper.make_node("Concat", ["c0", "c0"], ["core"], axis=1),
    ]
    n, ops = _optimize(_wrap(core, [vi("x", [2, 3])]), "concat-flatten")
    assert n == 0 and ops.count("Concat") == 2
