"""The fold family, each rule alone on a witness: it fires, the folded graph is what extraction
picks (fewer kernels), and it agrees with the original in both directions. Guards are tested on
the constants that must not fold (a spatial constant whose size equals the channel count)."""

import numpy as np
import onnx
import pytest
from onnx import helper

from eqsat import pipeline
from eqsat.rules import fold, schedule
from eqsat.verify.numeric import compare_models
from tests.helpers import init, model, vi

RNG = np.random.default_rng(0)
FOLD_RULES = [r.name for r in fold.rules()]


def _w(name, shape, positive=False):
    a = RNG.standard_normal(shape).astype(np.float32)
    return init(name, np.abs(a) + 0.5 if positive else a)


def _conv_model(tail_nodes, tail_inits, bias=True, out="y", group=1, hw=5):
    """x[1,4,hw,hw] -> Conv(4->4, 3x3, pads 1) -> tail."""
    ins = ["x", "w", "b"] if bias else ["x", "w"]
    nodes = [helper.make_node("Conv", ins, ["c"], pads=[1, 1, 1, 1], group=group)]
    inits = [_w("w", [4, 4 // group, 3, 3])] + ([_w("b", [4])] if bias else [])
    return model(nodes + tail_nodes, [vi("x", [1, 4, hw, hw])], [vi(out, None)], inits + tail_inits)


def _optimize(m, rule):
    others = tuple(n for n in FOLD_RULES if n != rule)
    opts = pipeline.Options(rules=("fold",), disabled_rules=others, seeds=(0, 1))
    result = pipeline.optimize(m, opts)
    assert result.verdict.ok
    onnx.checker.check_model(result.model, full_check=True)
    back = compare_models(result.model, m, seeds=(2,))
    assert back.ok, back.reason
    return result.egraph["saturation"]["matches"].get(rule, 0), [
        n.op_type for n in result.model.graph.node
    ]


def witness_dropout():
    nodes = [
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Dropout", ["s", "r"], ["d"]),
        helper.make_node("Tanh", ["d"], ["y"]),
    ]
    return model(nodes, [vi("x", [2, 3])], [vi("y", None)], [init("r", np.float32(0.3))])


def witness_batchnorm(bias=True, group=1):
    bn = helper.make_node("BatchNormalization", ["c", "s", "be", "m", "v"], ["y"], epsilon=1e-3)
    inits = [_w("s", [4]), _w("be", [4]), _w("m", [4]), _w("v", [4], positive=True)]
    return _conv_model([bn], inits, bias=bias, group=group)


def witness_mul(shape=(4, 1, 1), bias=True):
    hw = shape[-1] if len(shape) == 4 and shape[-1] > 1 else 5
    mul = helper.make_node("Mul", ["k", "c"], ["y"])
    return _conv_model([mul], [_w("k", list(shape))], bias, hw=hw)


def witness_add(shape=(1, 4, 1, 1), bias=True):
    return _conv_model([helper.make_node("Add", ["c", "k"], ["y"])], [_w("k", list(shape))], bias)


def witness_gemm(rank=2):
    shape = [3, 4] if rank == 2 else [2, 3, 4]
    nodes = [
        helper.make_node("MatMul", ["a", "w"], ["m"]),
        helper.make_node("Add", ["m", "c"], ["y"]),
    ]
    return model(nodes, [vi("a", shape)], [vi("y", None)], [_w("w", [4, 5]), _w("c", [5])])


def witness_batchnorm_gemm(trans_b=1, with_c=True):
    w_shape = [5, 4] if trans_b else [4, 5]
    ins = ["a", "w", "c"] if with_c else ["a", "w"]
    nodes = [
        helper.make_node("Gemm", ins, ["g"], alpha=0.5, beta=2.0, transB=trans_b),
        helper.make_node("BatchNormalization", ["g", "s", "be", "m", "v"], ["y"], epsilon=1e-3),
    ]
    inits = [_w("w", w_shape), _w("s", [5]), _w("be", [5]), _w("m", [5])]
    inits += [_w("v", [5], positive=True)] + ([_w("c", [5])] if with_c else [])
    return model(nodes, [vi("a", [3, 4])], [vi("y", None)], inits)


WITNESSES = {
    "fold-batchnorm-into-gemm": witness_batchnorm_gemm,
    "dropout-elim": witness_dropout,
    "fold-batchnorm-into-conv": witness_batchnorm,
    "fold-mul-into-conv": witness_mul,
    "fold-add-into-conv": witness_add,
    "matmul-add-to-gemm": witness_gemm,
}


def test_every_fold_rule_has_a_witness_and_is_scheduled_before_merging():
    assert set(WITNESSES) == set(FOLD_RULES)
    order = [r.family for r in schedule.rewrites(schedule.select(("merge", "fold")))]
    assert order == sorted(order, key=["fold", "merge"].index)


def test_dropout_elim():
    n, ops = _optimize(witness_dropout(), "dropout-elim")
    assert n == 1 and "Dropout" not in ops


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("group", [1, 2])
def test_batchnorm_folds_into_conv(bias, group):
    n, ops = _optimize(witness_batchnorm(bias, group), "fold-batchnorm-into-conv")
    assert n >= 1 and ops == ["Conv"]


@pytest.mark.parametrize("trans_b", [0, 1])
@pytest.mark.parametrize("with_c", [True, False])
def test_batchnorm_folds_into_gemm(trans_b, with_c):
    n, ops = _optimize(witness_batchnorm_gemm(trans_b, with_c), "fold-batchnorm-into-gemm")
    assert n >= 1 and ops == ["Gemm"]


@pytest.mark.parametrize("shape", [(4, 1, 1), (1, 4, 1, 1), (1,), ()])
def test_per_channel_mul_folds_into_conv(shape):
    n, ops = _optimize(witness_mul(shape), "fold-mul-into-conv")
    assert n >= 1 and ops == ["Conv"]


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (4, 5, 5), (2, 4, 1, 1)])
def test_constants_that_are_not_per_channel_do_not_fold(shape):
    # [1,1,2,2] has as many values as there are channels: reshaping it to [4,1,1,1] would
    # type-check and be wrong. [2,4,1,1] would grow the batch axis.
    n, ops = _optimize(witness_mul(shape), "fold-mul-into-conv")
    assert n == 0 and ops == ["Conv", "Mul"]


@pytest.mark.parametrize("shape,bias", [((1, 4, 1, 1), True), ((4, 1, 1), False), ((1,), True)])
def test_per_channel_add_folds_into_conv(shape, bias):
    n, ops = _optimize(witness_add(shape, bias), "fold-add-into-conv")
    assert n >= 1 and ops == ["Conv"]


def test_single_value_add_without_bias_is_left_alone():
    n, ops = _optimize(witness_add((1,), bias=False), "fold-add-into-conv")
    assert n == 0 and ops == ["Conv", "Add"]


def test_matmul_add_becomes_gemm_for_rank_2_only():
    n, ops = _optimize(witness_gemm(2), "matmul-add-to-gemm")
    assert n == 1 and ops == ["Gemm"]
    n, ops = _optimize(witness_gemm(3), "matmul-add-to-gemm")
    assert n == 0 and ops == ["MatMul", "Add"]
