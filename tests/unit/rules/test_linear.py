"""The linear family (convolutions and matmuls as linear maps), each rule alone on a small graph
with random weights: it fires, an extraction that prefers what the rule made takes its
right-hand side (the ops show it), and onnxruntime gives the same outputs as the original, in
both directions. Guards: a padded average pooling that divides by what it covers, a residual
around a convolution that changes the size, a near-identity weight, and convolutions with
different windows are left alone."""

import numpy as np
import onnx
import pytest
from onnx import helper

from eqsat.egraph import passes
from eqsat.egraph.encode import encode
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.egraph.saturate import saturate
from eqsat.extract.cost import AstSize
from eqsat.extract.extraction import extract
from eqsat.rules import linear, schedule
from eqsat.verify.numeric import compare_models
from tests.helpers import init, model, vi

RULES = [r.name for r in linear.rules()]
RNG = np.random.default_rng(19)


def _f(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def _run(m: onnx.ModelProto, rule: str):
    """``rule`` alone; extraction prefers the e-nodes it made. (matches, ops after, model)."""
    g = passes.eliminate_dead_code(passes.fold_constants(import_onnx(m)))
    rules = [r for r in schedule.select(("linear",)) if r.name == rule]
    sat = saturate(encode(g), schedule.rulesets(rules), rewrites=schedule.rewrites(rules))
    ex = extract(sat, AstSize(), extractor="ilp", prefer_rewrites=True)
    out = export_onnx(passes.fold_constants(ex.graph, bounded=False))
    onnx.checker.check_model(out, full_check=True)
    for a, b in ((m, out), (out, m)):
        v = compare_models(a, b, seeds=(0, 1))
        assert v.ok, v.reason
    return sat.matches.get(rule, 0), sorted(n.op_type for n in out.graph.node), out


def _conv(x, w, b, y, **attrs):
    return helper.make_node("Conv", [x, w, b] if b else [x, w], [y], **attrs)


def witness_merge_conv_add(spatial=(6, 6)):
    """relu(conv(x1) + conv(x2)): ResNeXt's last 1x1 conv plus its projection shortcut."""
    nodes = [
        _conv("x1", "w1", "b1", "p"),
        _conv("x2", "w2", "b2", "q"),
        helper.make_node("Add", ["p", "q"], ["s"]),
        helper.make_node("Relu", ["s"], ["y"]),
    ]
    inits = [init("w1", _f(4, 3, 1, 1)), init("b1", _f(4)), init("w2", _f(4, 2, 1, 1))]
    inits.append(init("b2", _f(4)))
    ins = [vi("x1", [1, 3, 6, 6]), vi("x2", [1, 2, *spatial])]
    return model(nodes, ins, [vi("y", None)], inits)


def witness_conv_concat_split():
    """A SqueezeNet fire's squeeze reading the previous fire's concatenated expands."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Sigmoid", ["x"], ["b"]),
        helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
        _conv("c", "w", "bias", "y", pads=[1, 1, 1, 1]),
    ]
    inits = [init("w", _f(4, 6, 3, 3)), init("bias", _f(4))]
    return model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", None)], inits)


def witness_avgpool(pads=(1, 1, 1, 1), include=1):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node(
            "AveragePool",
            ["r"],
            ["y"],
            kernel_shape=[3, 3],
            pads=list(pads),
            strides=[1, 1],
            count_include_pad=include,
        ),
    ]
    return model(nodes, [vi("x", [1, 3, 6, 6])], [vi("y", None)])


def witness_conv_residual(pads=(1, 1, 1, 1)):
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        _conv("r", "w", "b", "c", pads=list(pads)),
        helper.make_node("Add", ["r", "c"], ["y"]),
    ]
    inits = [init("w", _f(3, 3, 3, 3)), init("b", _f(3))]
    return model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", None)], inits)


def witness_matmul_residual():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["m"]),
        helper.make_node("Add", ["m", "r"], ["y"]),
    ]
    return model(nodes, [vi("x", [2, 3, 4])], [vi("y", None)], [init("w", _f(4, 4))])


def witness_matmul_identity(eye=None):
    eye = np.eye(4, dtype=np.float32) if eye is None else eye
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["r", "eye"], ["m"]),
        helper.make_node("Tanh", ["m"], ["y"]),
    ]
    return model(nodes, [vi("x", [2, 4])], [vi("y", None)], [init("eye", eye)])


def witness_conv_identity():
    kernel = np.zeros((3, 3, 3, 3), np.float32)
    for o in range(3):
        kernel[o, o, 1, 1] = 1.0
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        _conv("r", "eye", "", "c", pads=[1, 1, 1, 1]),
        helper.make_node("Tanh", ["c"], ["y"]),
    ]
    return model(nodes, [vi("x", [1, 3, 4, 4])], [vi("y", None)], [init("eye", kernel)])


def witness_grouped_convs():
    """Two grouped (4 groups) 3x3 convs of one input, 8 and 4 output channels."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        _conv("r", "wa", "ba", "p", group=4, pads=[1, 1, 1, 1]),
        _conv("r", "wb", "bb", "q", group=4, pads=[1, 1, 1, 1]),
        helper.make_node("Concat", ["q", "p"], ["y"], axis=1),
    ]
    inits = [init("wa", _f(8, 2, 3, 3)), init("ba", _f(8)), init("wb", _f(4, 2, 3, 3))]
    inits.append(init("bb", _f(4)))
    return model(nodes, [vi("x", [1, 8, 5, 5])], [vi("y", None)], inits)


def witness_conv_add_shared_input():
    """Two grouped 3x3 convs of one input, added (one with bias, one without)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        _conv("r", "wa", "ba", "p", group=2, pads=[1, 1, 1, 1]),
        _conv("r", "wb", "", "q", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["p", "q"], ["y"]),
    ]
    inits = [init("wa", _f(4, 2, 3, 3)), init("ba", _f(4)), init("wb", _f(4, 2, 3, 3))]
    return model(nodes, [vi("x", [1, 4, 5, 5])], [vi("y", None)], inits)


def witness_pool_conv(pads=(1, 1, 1, 1), include=0, bias=True, kernel=1, after=False):
    """Inception's pool branch: a padded 3x3 average pooling (count_include_pad=0), then a 1x1
    conv with bias; ``after``: the other way round (a 1x1 conv, then a 2x2/2 pooling)."""
    pool = dict(kernel_shape=[3, 3], pads=list(pads), count_include_pad=include)
    if after:
        pool = dict(kernel_shape=[2, 2], strides=[2, 2], count_include_pad=include)
    cpads, b = [kernel // 2] * 4, "b" if bias else ""
    nodes = [helper.make_node("Relu", ["x"], ["r"])]
    if after:
        nodes += [_conv("r", "w", b, "c", pads=cpads),
                  helper.make_node("AveragePool", ["c"], ["y"], **pool)]
    else:
        nodes += [helper.make_node("AveragePool", ["r"], ["p"], **pool),
                  _conv("p", "w", b, "y", pads=cpads)]
    inits = [init("w", _f(2, 3, kernel, kernel)), init("b", _f(2))]
    return model(nodes, [vi("x", [1, 3, 6, 6])], [vi("y", None)], inits)


def witness_conv_add_shared_weight():
    """One 3x3 kernel on two inputs of one type, added (one conv with bias)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sigmoid", ["x"], ["s"]),
        _conv("r", "w", "b", "p", pads=[1, 1, 1, 1]),
        _conv("s", "w", "", "q", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["p", "q"], ["y"]),
    ]
    inits = [init("w", _f(4, 3, 3, 3)), init("b", _f(4))]
    return model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", None)], inits)


def witness_conv_enlarge():
    """A 1x3 and a 3x3 conv of one input (Inception's factorized convs beside a 3x3)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        _conv("r", "w13", "b", "p", pads=[0, 1, 0, 1]),
        _conv("r", "w33", "", "q", pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["p", "q"], ["y"]),
    ]
    inits = [init("w13", _f(4, 3, 1, 3)), init("b", _f(4)), init("w33", _f(4, 3, 3, 3))]
    return model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", None)], inits)


def witness_matmul_add(shared: int):
    """x·W + y·W (shared right operand, 1) or W·x + W·y (shared left operand, 0)."""
    ins = (["r", "w"], ["s", "w"]) if shared else (["w", "r"], ["w", "s"])
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("MatMul", ins[0], ["p"]),
        helper.make_node("MatMul", ins[1], ["q"]),
        helper.make_node("Add", ["p", "q"], ["y"]),
    ]
    return model(nodes, [vi("x", [3, 3])], [vi("y", None)], [init("w", _f(3, 3))])


def witness_matmul_chain():
    """(x·A)·B, A and B constant: A·B folds into one weight."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["r", "a"], ["p"]),
        helper.make_node("MatMul", ["p", "b"], ["y"]),
    ]
    return model(
        nodes, [vi("x", [2, 4])], [vi("y", None)], [init("a", _f(4, 8)), init("b", _f(8, 3))]
    )


def witness_scalar_mul():
    """A matmul scaled by a 0-d input (attention's 1/sqrt(d) is one when it is not a literal)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("MatMul", ["r", "w"], ["m"]),
        helper.make_node("Mul", ["m", "s"], ["y"]),
    ]
    return model(nodes, [vi("x", [2, 4]), vi("s", [])], [vi("y", None)], [init("w", _f(4, 3))])


def witness_pool_concat():
    """A max pooling of a channel concatenation (Inception's pooling branch after a concat)."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Concat", ["r", "s"], ["c"], axis=1),
        helper.make_node("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ]
    return model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", None)])


def witness_conv_batch():
    """A conv of two images concatenated along the batch."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Concat", ["r", "s"], ["c"], axis=0),
        _conv("c", "w", "b", "y", pads=[1, 1, 1, 1]),
    ]
    inits = [init("w", _f(4, 3, 3, 3)), init("b", _f(4))]
    return model(nodes, [vi("x", [1, 3, 5, 5])], [vi("y", None)], inits)


def witness_binary_concat():
    """concat(r + s, s + x): one add of two concatenations."""
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Add", ["r", "s"], ["p"]),
        helper.make_node("Add", ["s", "x"], ["q"]),
        helper.make_node("Concat", ["p", "q"], ["y"], axis=1),
    ]
    return model(nodes, [vi("x", [2, 3])], [vi("y", None)])


def witness_mul_ones():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Mul", ["r", "ones"], ["m"]),
        helper.make_node("Tanh", ["m"], ["y"]),
    ]
    return model(nodes, [vi("x", [2, 3])], [vi("y", None)], [init("ones", np.ones(3, np.float32))])


def witness_transpose_concat():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sigmoid", ["x"], ["s"]),
        helper.make_node("Concat", ["r", "s"], ["c"], axis=0),
        helper.make_node("Transpose", ["c"], ["y"], perm=[1, 0]),
    ]
    return model(nodes, [vi("x", [2, 3])], [vi("y", None)])


WITNESSES = {
    "transpose-concat-distribute": witness_transpose_concat,
    "conv-concat-batch": witness_conv_batch,
    "binary-concat-distribute": witness_binary_concat,
    "mul-ones-elim": witness_mul_ones,
    "pool-concat-distribute": witness_pool_concat,
    "scalar-mul-through-linear": witness_scalar_mul,
    "conv-add-shared-weight": witness_conv_add_shared_weight,
    "conv-enlarge-kernel": witness_conv_enlarge,
    "matmul-add-shared-rhs": lambda: witness_matmul_add(1),
    "matmul-add-shared-lhs": lambda: witness_matmul_add(0),
    "matmul-associative-2d": witness_matmul_chain,
    "conv-add-shared-input": witness_conv_add_shared_input,
    "merge-grouped-conv-shared-input": witness_grouped_convs,
    "merge-conv-add": witness_merge_conv_add,
    "conv-concat-split": witness_conv_concat_split,
    "avgpool-as-conv": witness_avgpool,
    "conv1x1-avgpool-commute": witness_pool_conv,
    "conv-residual-identity": witness_conv_residual,
    "matmul-residual-identity": witness_matmul_residual,
    "matmul-identity-elim": witness_matmul_identity,
    "conv-identity-elim": witness_conv_identity,
}
# what the right-hand side leaves in the exported graph (its constants folded)
AFTER = {
    "transpose-concat-distribute": ["Concat", "Relu", "Sigmoid", "Transpose", "Transpose"],
    "conv-concat-batch": ["Concat", "Conv", "Conv", "Relu", "Sigmoid"],
    "binary-concat-distribute": ["Add", "Concat", "Concat", "Relu", "Sigmoid"],
    "mul-ones-elim": ["Relu", "Tanh"],
    "pool-concat-distribute": ["Concat", "MaxPool", "MaxPool", "Relu", "Sigmoid"],
    "scalar-mul-through-linear": ["MatMul", "Mul", "Relu"],
    "conv-add-shared-weight": ["Add", "Conv", "Relu", "Sigmoid"],
    "conv-enlarge-kernel": ["Add", "Conv", "Conv", "Relu"],
    "matmul-add-shared-rhs": ["Add", "MatMul", "Relu", "Sigmoid"],
    "matmul-add-shared-lhs": ["Add", "MatMul", "Relu", "Sigmoid"],
    "matmul-associative-2d": ["MatMul", "Relu"],
    "conv-add-shared-input": ["Conv", "Relu"],
    "merge-grouped-conv-shared-input": ["Concat", "Conv", "Relu"] + ["Reshape"] * 3 + ["Slice"] * 2,
    "merge-conv-add": ["Concat", "Conv", "Relu"],
    "conv-concat-split": ["Add", "Conv", "Conv", "Relu", "Sigmoid"],
    "avgpool-as-conv": ["Conv", "Relu"],
    "conv1x1-avgpool-commute": ["AveragePool", "Conv", "Relu"],  # in the other order
    "conv-residual-identity": ["Conv", "Relu"],
    "matmul-residual-identity": ["MatMul", "Relu"],
    "matmul-identity-elim": ["Relu", "Tanh"],
    "conv-identity-elim": ["Relu", "Tanh"],
}


def test_every_linear_rule_has_a_witness():
    assert set(WITNESSES) == set(RULES) == set(AFTER)


def test_the_family_is_opt_in_but_on_where_extraction_prices_the_compiled_code():
    from eqsat import pipeline

    assert "linear" in schedule.FAMILIES and "linear" not in schedule.DEFAULT_FAMILIES
    assert pipeline.DEFAULT_RULES == schedule.DEFAULT_FAMILIES  # spelled out there: no egglog
    assert pipeline.rule_families(pipeline.Options()) == schedule.DEFAULT_FAMILIES
    compiled = pipeline.rule_families(pipeline.Options(target="llvm"))
    assert compiled == (*schedule.DEFAULT_FAMILIES, "linear")
    roofline = pipeline.Options(target="llvm", cost_model="roofline")  # onnxruntime's costs
    assert pipeline.rule_families(roofline) == schedule.DEFAULT_FAMILIES
    chosen = ("cleanup", "fold")  # an explicit choice is kept, whatever the target
    assert pipeline.rule_families(pipeline.Options(target="llvm", rules=chosen)) == chosen


def test_compile_moves_inceptions_pool_after_its_1x1_conv():
    """Under the compiler cost model (fusion terms on, the default) extraction takes
    conv1x1-avgpool-commute on Inception: each pool then averages its branch's output channels
    (32, 64), not the module's input channels (192, 256); the model is checked against the
    original (the gate). The small Inception is not used: there (8 channels in, 2 out) the
    fusion-terms pricing keeps the pool first (under the model without fusion terms it does not)."""
    from eqsat import pipeline
    from eqsat.examples import build_example

    m = build_example("inception")
    res = pipeline.compile(m, pipeline.Options(target="llvm", threads=1, cache=False))
    assert res.egraph["rewrites_fired"].get("conv1x1-avgpool-commute", 0) >= 1
    pools = [n for n in res.graph.nodes if n.op == "AveragePool"]
    assert sorted(res.graph.types[p.inputs[0]].shape[1] for p in pools) == [32, 64]
    assert res.verdict is not None and res.verdict.ok


@pytest.mark.parametrize("rule", RULES)
def test_linear_rule_alone_fires_and_agrees_under_onnxruntime(rule):
    n, ops, _ = _run(WITNESSES[rule](), rule)
    assert n >= 1
    assert ops == AFTER[rule]


def test_avgpool_with_count_include_pad_0_and_padding_is_not_a_conv():
    n, ops, _ = _run(witness_avgpool(include=0), "avgpool-as-conv")
    assert n == 0 and "AveragePool" in ops
    n, ops, _ = _run(witness_avgpool(pads=(0, 0, 0, 0), include=0), "avgpool-as-conv")
    assert n == 1 and ops == ["Conv", "Relu"]  # no padding: every window divides by 9


def _order(m: onnx.ModelProto) -> list[str]:
    return [n.op_type for n in m.graph.node]


@pytest.mark.parametrize(
    "kw, commutes",
    [
        ({}, True),  # count_include_pad=0: each window's weights sum to 1, the bias commutes
        ({"include": 1}, False),  # padded, count_include_pad=1: a border window averages 0s
        ({"include": 1, "bias": False}, True),  # ... which a bias-free conv maps to 0
        ({"include": 1, "pads": (0, 0, 0, 0)}, True),  # no padding: full windows
        ({"kernel": 3}, False),  # a 3x3 conv mixes pixels: it does not commute
        ({"after": True}, True),  # conv then a strided pool: the pool moves before the conv
        ({"after": True, "kernel": 3}, False),
    ],
)
def test_a_1x1_conv_and_an_average_pooling_commute_only_where_they_may(kw, commutes):
    m = witness_pool_conv(**kw)
    n, ops, out = _run(m, "conv1x1-avgpool-commute")
    assert (n >= 1) == commutes
    assert sorted(_order(m)) == ops
    assert (_order(out) != _order(m)) == commutes  # the two ops swapped places


def test_residual_identity_kernels_follow_asymmetric_padding_and_skip_dilation():
    # pads (0, 0) begin, (2, 2) end keep the size: the identity tap sits at (0, 0)
    n, ops, _ = _run(witness_conv_residual(pads=(0, 0, 2, 2)), "conv-residual-identity")
    assert n == 1 and ops == ["Conv", "Relu"]
    # dilation 2 with pads 2 keeps the size too, but the rule only takes dilation 1
    m = witness_conv_residual(pads=(2, 2, 2, 2))
    m.graph.node[1].attribute.append(helper.make_attribute("dilations", [2, 2]))
    n, ops, _ = _run(m, "conv-residual-identity")
    assert n == 0 and ops.count("Add") == 1


def test_a_weight_that_is_almost_the_identity_is_kept():
    eye = np.eye(4, dtype=np.float32)
    eye[0, 1] = 1e-3
    n, ops, _ = _run(witness_matmul_identity(eye), "matmul-identity-elim")
    assert n == 0 and "MatMul" in ops


def test_convs_of_inputs_with_different_windows_do_not_merge():
    # x2 is 6x7: 1x1 convs of both give results of different sizes, the Add broadcasts not
    # at all; with equal outputs but different input sizes (strides) the windows differ
    nodes = [
        _conv("x1", "w1", "", "p", strides=[2, 2]),
        _conv("x2", "w2", "", "q", strides=[2, 2]),
        helper.make_node("Add", ["p", "q"], ["y"]),
    ]
    inits = [init("w1", _f(4, 3, 1, 1)), init("w2", _f(4, 2, 1, 1))]
    m = model(nodes, [vi("x1", [1, 3, 6, 6]), vi("x2", [1, 2, 5, 5])], [vi("y", None)], inits)
    n, ops, _ = _run(m, "merge-conv-add")
    assert n == 0 and ops.count("Conv") == 2


@pytest.mark.parametrize(
    "example, size, rule",
    [
        ("resnext", "small", "merge-conv-add"),
        pytest.param("squeezenet", "default", "conv-concat-split", marks=pytest.mark.slow),
    ],
)
def test_linear_rules_fire_on_the_examples_and_the_gate_passes(example, size, rule):
    """ResNeXt's residual branch plus its projection shortcut (two 1x1 convs added, once their
    BatchNorms are folded); SqueezeNet's squeeze convs reading the previous fire's concat (the
    small SqueezeNet has one fire: nothing reads a concat)."""
    from eqsat import pipeline
    from eqsat.examples import build_example

    m = build_example(example, size)
    families = (*schedule.DEFAULT_FAMILIES, "linear")
    result = pipeline.optimize(m, pipeline.Options(rules=families, seeds=(0,)))
    assert result.egraph["saturation"]["matches"].get(rule, 0) >= 1
    assert result.verdict.ok
    assert result.egraph["cost_after"] <= result.egraph["cost_before"]


def test_a_rule_over_convs_stays_relevant_where_only_a_pooling_can_make_one():
    from egglog import Vec, i64, var

    from eqsat.egraph.lang import Tensor
    from eqsat.rules.base import Rule

    x, w = var("x", Tensor), var("w", Tensor)
    st, pads, dil, ks = (var(n, Vec[i64]) for n in ("st", "pads", "dil", "ks"))
    conv = Tensor.conv(x, w, Tensor.none(), i64(1), st, pads, dil, ks)
    over_convs = Rule("relu-of-conv", "t", Tensor.relu(conv), Tensor.relu(conv))
    pool = next(r for r in linear.rules() if r.name == "avgpool-as-conv")
    present = {"average_pool", "relu"}
    assert schedule.relevant([over_convs], present) == []
    assert over_convs in schedule.relevant([over_convs, pool], present)


def test_merge_conv_add_is_taken_on_resnext_where_the_roofline_prices_it_lower():
    """Its weight is a concatenation of folded weights (new classes): typed, so priced (it was
    left untyped, and the merged conv cost infinity, before class_types retried a Concat)."""
    from eqsat import pipeline
    from eqsat.examples import build_example

    m = build_example("resnext", "small")
    families = (*schedule.DEFAULT_FAMILIES, "linear")
    result = pipeline.optimize(m, pipeline.Options(rules=families, seeds=(0,)))
    before = [n.op_type for n in m.graph.node]
    ops = [n.op_type for n in result.model.graph.node]
    assert ops.count("Conv") == before.count("Conv") - 1  # conv3 + the shortcut: one conv
    assert ops.count("Add") == before.count("Add") - 1 and ops.count("Concat") == 1
    assert result.verdict.ok
