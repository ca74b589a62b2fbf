"""Every claimed op's compute definition, lowered alone and interpreted, equals the op table's
numpy semantics (``OPS[op].run`` via ``TensorGraph.interpret``), with attribute variants:
broadcasting, negative axes, keepdims, conv group/stride/pads/dilations, pool ceil_mode and
count_include_pad, and shape-like arguments as constants."""

from __future__ import annotations

import numpy as np
import pytest

from eqsat.egraph.interpret import interpret as interpret_graph
from eqsat.egraph.ir import ArrayAttr, Node, TensorGraph, TensorType, make_attrs
from eqsat.egraph.opdefs import quant
from eqsat.egraph.opdefs.base import Kind
from eqsat.egraph.ops import OPS, infer_node
from eqsat.lower.compute import CLAIMED, COMPUTE
from eqsat.lower.lower import lower

RNG = np.random.default_rng(0)


def x(*shape, lo=-2.0, hi=2.0, dtype="float32"):
    """A run-time input."""
    return ("x", RNG.uniform(lo, hi, shape).astype(dtype))


def w(value, dtype=None):
    """A constant input (a weight)."""
    return ("w", np.asarray(value, dtype=dtype))


def ints_(*shape, lo=-3, hi=4, dtype="int64"):
    return ("x", RNG.integers(lo, hi, shape).astype(dtype))


def bools(*shape):
    return ("x", RNG.integers(0, 2, shape).astype(bool))


OMIT = None
HALVES = ("x", np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 126.5, 127.5, -128.5, 300, -300],
                        dtype="float32"))
F = x(2, 3, 4)
POS = x(2, 3, 4, lo=0.5, hi=2.0)
NCHW = x(1, 4, 7, 7)

UNARY = [o for o, d in OPS.items() if d.kind is Kind.ELEMENTWISE and d.inputs == (1, 1)]
BINARY = ["Add", "Sub", "Mul", "Div", "Max", "Min", "Sum"]
CMP = ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"]
NONFINITE = ("x", np.array([[np.nan, np.inf, -np.inf], [0.0, -1.5, 3e38]], np.float32))
SPECIAL_UNARY = {
    "Log": [([POS], {})],
    "Sqrt": [([POS], {})],
    "Not": [([bools(2, 3)], {})],
    "IsNaN": [([NONFINITE], {})],
    "IsInf": [
        ([NONFINITE], {}),
        ([NONFINITE], {"detect_negative": 0}),
        ([NONFINITE], {"detect_positive": 0}),
    ],
}

CASES: dict[str, list[tuple[list, dict]]] = {
    **{op: [([F], {})] for op in UNARY if op not in ("Cast",)},
    **SPECIAL_UNARY,
    **{op: [([F, x(3, 1)], {}), ([x(4), F], {})] for op in BINARY},
    **{op: [([ints_(2, 3, 4, lo=0, hi=3), ints_(3, 1, lo=0, hi=3)], {})] for op in CMP},
    **{op: [([bools(2, 3), bools(3)], {})] for op in ("And", "Or", "Xor")},
    "Sum": [([F, x(3, 1), x(1, 4)], {})],
    "Max": [([F, x(3, 1), x(4)], {})],
    "Min": [([F, x(1, 3, 1)], {})],
    "Div": [
        ([F, x(3, 1, lo=0.5)], {}),
        ([ints_(3, 4, lo=-9, hi=9), ("w", np.array([2, -3, 4, 5]))], {}),
    ],
    "Pow": [([POS, x(4)], {}), ([F, w(np.float32(2))], {}), ([POS, w(np.float32(0.5))], {})],
    "Mod": [
        ([ints_(3, 4, lo=-9, hi=9), w([2, -3, 4, 5])], {}),
        ([ints_(3, 4, lo=-9, hi=9), w([2, -3, 4, 5])], {"fmod": 1}),
    ],
    "Where": [([bools(2, 3, 4), x(3, 4), x(1)], {})],
    "Clip": [([F, w(np.float32(-0.5)), w(np.float32(0.7))], {}), ([F, w(np.float32(0)), ""], {})],
    "Cast": [([F], {"to": 6}), ([ints_(3, 4)], {"to": 1}), ([F], {"to": 9})],
    "CastLike": [([F, w(np.zeros(1, np.int32))], {})],
    "Gelu": [([F], {}), ([F], {"approximate": "tanh"})],
    "LeakyRelu": [([F], {}), ([F], {"alpha": 0.3})],
    "Elu": [([F], {"alpha": 0.5})],
    "HardSigmoid": [([F], {"alpha": 0.3, "beta": 0.4})],
    "BatchNormalization": [
        (
            [
                x(2, 3, 4, 4),
                w(RNG.uniform(0.5, 2, 3).astype("float32")),
                w(RNG.uniform(-1, 1, 3).astype("float32")),
                w(RNG.uniform(-1, 1, 3).astype("float32")),
                w(RNG.uniform(0.5, 2, 3).astype("float32")),
            ],
            {"epsilon": 1e-3},
        ),
        ([x(2, 3, 5), x(3), x(3), x(3), x(3, lo=0.5)], {}),
    ],  # fmt: skip
    # ---------------------------------------------------------------- views
    "Identity": [([F], {})],
    "Dropout": [([F], {})],
    "Transpose": [([F], {"perm": (2, 0, 1)}), ([F], {})],
    "Reshape": [([F, w([4, -1])], {}), ([x(2, 12), w([2, 3, 2, 2])], {}), ([F, w([-1])], {})],
    "Flatten": [([x(2, 3, 4, 5)], {"axis": 2}), ([F], {"axis": 0})],
    "Squeeze": [([x(2, 1, 4), w([1])], {}), ([x(1, 3, 1)], {})],
    "Unsqueeze": [([x(3, 4), w([0, -1])], {})],
    "Expand": [([x(3, 1), w([2, 3, 4])], {})],
    "Slice": [
        ([x(6, 8), w([1, -1]), w([5, 0]), w([0, 1]), w([2, -2])], {}),
        ([F, w([1]), w([100]), w([-1])], {}),
    ],
    "Concat": [([x(2, 3), w(RNG.random((2, 1), np.float32)), x(2, 4)], {"axis": -1})],
    "Split": [([x(3, 6), w([2, 4])], {"axis": 1}), ([x(4, 3)], {"axis": 0})],
    "Gather": [
        ([x(3, 4, 5), w([[0, -1], [2, 1]])], {"axis": 1}),
        ([x(3, 4), w(np.int64(-2))], {}),
        ([x(5, 2), ints_(4, lo=-5, hi=5)], {"axis": 0}),
    ],
    "GatherElements": [([x(3, 4), w([[0, 3], [1, -1], [2, 0]])], {"axis": 1})],
    "GatherND": [
        ([x(3, 4, 5), w([[0, -1], [2, 1]])], {}),
        ([x(3, 4), ints_(2, 1, 1, lo=-3, hi=3)], {}),
        ([x(2, 3, 4), w([[1], [0]])], {"batch_dims": 1}),
        ([x(2, 3, 4, 5), w([[[2, 3], [0, -1]], [[1, 1], [2, 0]]])], {"batch_dims": 1}),
    ],
    "Pad": [
        ([x(3, 4), w([0, 1, 2, 0])], {}),
        ([x(3, 4), w([1, 2, 0, 1]), w(np.float32(0.5))], {"mode": "constant"}),
        ([x(3, 4), w([1, 2, 2, 1])], {"mode": "edge"}),
        ([x(3, 4), w([2, 1, 1, 3])], {"mode": "reflect"}),
    ],
    "Tile": [([x(2, 3, 1), w([2, 1, 3])], {})],
    "Trilu": [([x(4, 5)], {}), ([x(2, 4, 5), w(np.int64(1))], {"upper": 0})],
    "DepthToSpace": [
        ([x(1, 8, 2, 3)], {"blocksize": 2}),
        ([x(1, 8, 2, 3)], {"blocksize": 2, "mode": "CRD"}),
    ],
    "SpaceToDepth": [([x(1, 2, 4, 6)], {"blocksize": 2})],
    "OneHot": [
        ([ints_(2, 3, lo=-3, hi=5), w(np.int64(5)), w(np.array([0.0, 1.0], np.float32))], {}),
        ([ints_(4, lo=0, hi=3), w(np.int64(3)), w(np.array([-1, 2], np.int64))], {"axis": 0}),
    ],
    "Range": [
        ([w(np.float32(0.5)), w(np.float32(4)), w(np.float32(0.75))], {}),
        ([w(np.int64(7)), w(np.int64(-2)), w(np.int64(-3))], {}),
    ],
    "ConstantOfShape": [
        ([w([2, 3])], {}),
        ([w([4, 1, 2])], {"value": ArrayAttr.of(np.array([7], np.int64))}),
    ],
    "Resize": [
        ([NCHW, "", w([1.0, 1.0, 2.0, 2.0], "float32")], {}),
        ([NCHW, "", "", w([1, 4, 3, 10])], {"mode": "linear"}),
        (
            [ints_(1, 2, 4, 5, lo=-128, hi=128, dtype="int8"), "", w([1, 1, 1.5, 0.6], "float32")],
            {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        ),
        ([x(2, 6), "", w([1.0, 1.7], "float32")], {"mode": "cubic", "nearest_mode": "floor"}),
        (
            [x(1, 1, 4, 4), w([0, 0, 0.2, 0.1, 1, 1, 0.9, 0.8], "float32"), "", w([1, 1, 3, 5])],
            {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize",
             "extrapolation_value": -1.0},
        ),
    ],
    "ConvTranspose": [
        ([x(1, 3, 4, 5), w(RNG.random((3, 2, 3, 3), np.float32))], {}),
        (
            [x(2, 4, 3, 4), w(RNG.random((4, 3, 3, 2), np.float32)), x(6)],
            {"group": 2, "strides": [2, 3], "pads": [1, 0, 0, 1], "output_padding": [1, 2]},
        ),
        ([x(1, 2, 5), x(2, 1, 3)], {"strides": [2], "dilations": [2], "auto_pad": "SAME_UPPER"}),
    ],
    # ---------------------------------------------------------------- reductions
    "MatMul": [
        ([F, x(4, 5)], {}),
        ([x(4), x(2, 4, 5)], {}),
        ([x(2, 1, 3, 4), x(5, 4, 6)], {}),
        ([x(3, 4), x(4)], {}),
    ],
    "Gemm": [
        (
            [x(3, 4), w(RNG.random((5, 4), np.float32)), w(RNG.random(5, np.float32))],
            {"transB": 1, "alpha": 0.5, "beta": 2.0},
        ),
        ([x(4, 3), x(4, 5)], {"transA": 1}),
        ([x(3, 4), x(4, 5), x(3, 1)], {}),
    ],  # fmt: skip
    "Conv": [
        (
            [NCHW, w(RNG.random((6, 2, 3, 3), np.float32)), w(RNG.random(6, np.float32))],
            {"group": 2, "strides": (2, 2), "pads": (1, 1, 1, 1)},
        ),
        ([NCHW, x(3, 4, 3, 3)], {"dilations": (2, 2)}),
        ([NCHW, x(4, 1, 3, 3)], {"group": 4, "auto_pad": "SAME_UPPER", "strides": (2, 2)}),
        ([x(1, 3, 9), x(2, 3, 2)], {"pads": (0, 2), "strides": (3,)}),
    ],  # fmt: skip
    "MaxPool": [
        ([NCHW], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
        ([NCHW], {"kernel_shape": (2, 2), "strides": (2, 2), "ceil_mode": 1}),
        ([NCHW], {"kernel_shape": (2, 3), "dilations": (2, 1)}),
    ],
    "AveragePool": [
        ([NCHW], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}),
        ([NCHW], {"kernel_shape": (3, 3), "pads": (1, 0, 1, 2), "count_include_pad": 1}),
        ([NCHW], {"kernel_shape": (2, 2), "strides": (2, 2), "ceil_mode": 1}),
        ([NCHW], {"kernel_shape": (2, 2)}),
    ],
    "GlobalAveragePool": [([NCHW], {})],
    "GlobalMaxPool": [([x(2, 3, 4, 5)], {})],
    "ReduceSum": [
        ([F, w([1])], {"keepdims": 0}),
        ([F, w([-1, 0])], {}),
        ([F], {"noop_with_empty_axes": 1}),
    ],
    "ReduceMean": [([F], {"axes": (-1,)}), ([F], {"axes": (0, 2), "keepdims": 0})],
    "ReduceMax": [([F], {"axes": (1,)}), ([F], {})],
    "ReduceMin": [([F], {"axes": (-2,), "keepdims": 0})],
    "ReduceProd": [([F], {"axes": (2,)})],
    "ReduceSumSquare": [([F], {"axes": (0,)})],
    "ReduceL2": [([F], {"axes": (1, 2), "keepdims": 0})],
    "ArgMax": [
        ([ints_(3, 5, lo=0, hi=3)], {"axis": 1}),
        ([ints_(3, 5, lo=0, hi=3)], {"axis": 1, "select_last_index": 1, "keepdims": 0}),
    ],
    "ArgMin": [([F], {"axis": -1, "keepdims": 0})],
    "CumSum": [
        ([F, w(np.int64(1))], {}),
        ([F, w(np.int64(-1))], {"exclusive": 1}),
        ([F, w(np.int64(2))], {"reverse": 1}),
        ([F, w(np.int64(0))], {"reverse": 1, "exclusive": 1}),
    ],
    "Softmax": [([F], {}), ([F], {"axis": 1})],
    "LogSoftmax": [([F], {"axis": 0})],
    "LayerNormalization": [
        ([F, x(4), x(4)], {}),
        ([F, w(RNG.random((3, 4), np.float32))], {"axis": 1, "epsilon": 1e-3}),
    ],
    "InstanceNormalization": [([x(2, 3, 4, 5), x(3), x(3)], {})],
    # quantized ops (opdefs.quant): exact halves round to even, saturation at both ends
    "QuantizeLinear": [
        ([HALVES, w(np.float32(1.0)), w(np.uint8(128))], {}),
        ([x(2, 3, 4, lo=-300, hi=300), w(np.float32(0.7)), w(np.int8(-3))], {}),
        ([x(2, 3, 4, lo=-300, hi=300), w(np.float32(1.3))], {}),  # uint8, zero point 0
        ([x(2, 3, 4, lo=-90, hi=90), w([0.5, 1.0, 2.0], "float32"), w([0, 5, -3], "int8")],
         {"axis": 1}),
        ([x(2, 3, 4, lo=-9, hi=9), w(RNG.uniform(0.1, 1, (2, 3, 2)).astype("float32")),
          w(np.zeros((2, 3, 2), "int8"))], {"axis": 2, "block_size": 2}),
        ([x(2, 5, lo=-9e4, hi=9e4), w(np.float32(0.5)), w(np.int32(7))], {}),
    ],
    "DynamicQuantizeLinear": [([x(2, 3, 4, lo=-3, hi=5)], {}), ([x(7, lo=0.5, hi=2)], {}),
                              ([x(3, 5, lo=-4, hi=-1)], {})],
    "DequantizeLinear": [
        ([ints_(2, 3, 4, lo=0, hi=256, dtype="uint8"), w(np.float32(0.3)), w(np.uint8(9))], {}),
        ([ints_(2, 3, 4, lo=-128, hi=128, dtype="int8"), w([0.5, 1.0, 2.0], "float32"),
          w([0, 5, -3], "int8")], {"axis": -2}),
        ([ints_(4, 3, lo=-99999, hi=99999, dtype="int32"), w(np.float32(0.01))], {}),
    ],
    "MatMulInteger": [
        ([ints_(3, 5, lo=0, hi=256, dtype="uint8"), ints_(5, 4, lo=-128, hi=128, dtype="int8"),
          w(np.uint8(12)), w(np.int8(-5))], {}),
        ([ints_(2, 3, 5, lo=-128, hi=128, dtype="int8"), ints_(5, 4, lo=0, hi=256, dtype="uint8"),
          w([1, -2, 3], "int8"), w([7, 0, 200, 9], "uint8")], {}),
        ([ints_(3, 5, lo=0, hi=256, dtype="uint8"), ints_(5, 4, lo=0, hi=256, dtype="uint8")], {}),
    ],
    "QLinearMatMul": [
        ([ints_(3, 6, lo=0, hi=256, dtype="uint8"), w(np.float32(0.02)), w(np.uint8(120)),
          ints_(6, 4, lo=-128, hi=128, dtype="int8"), w(np.float32(0.05)), w(np.int8(3)),
          w(np.float32(0.1)), w(np.uint8(100))], {}),
        ([ints_(3, 6, lo=-128, hi=128, dtype="int8"), w(np.float32(0.5)), w(np.int8(0)),
          ints_(6, 4, lo=-128, hi=128, dtype="int8"), w([0.1, 0.2, 0.3, 0.4], "float32"),
          w(np.zeros(4, "int8")), w(np.float32(0.7)), w(np.int8(-4))], {}),
    ],
    "ConvInteger": [
        ([ints_(1, 2, 5, 5, lo=0, hi=256, dtype="uint8"),
          ints_(3, 2, 3, 3, lo=-128, hi=128, dtype="int8"), w(np.uint8(17)),
          w([1, -2, 0], "int8")], {"pads": [1, 1, 1, 1]}),
        ([ints_(1, 4, 6, 6, lo=0, hi=256, dtype="uint8"),
          ints_(4, 2, 2, 2, lo=0, hi=256, dtype="uint8")], {"group": 2, "strides": [2, 2]}),
    ],
    "QLinearConv": [
        ([ints_(1, 2, 5, 5, lo=0, hi=256, dtype="uint8"), w(np.float32(0.03)), w(np.uint8(128)),
          ints_(3, 2, 3, 3, lo=-128, hi=128, dtype="int8"), w([0.02, 0.03, 0.05], "float32"),
          w(np.zeros(3, "int8")), w(np.float32(0.04)), w(np.uint8(110)),
          w([100, -2000, 30], "int32")], {"pads": [1, 1, 1, 1]}),
        ([ints_(1, 2, 4, 4, lo=-128, hi=128, dtype="int8"), w(np.float32(0.1)), w(np.int8(3)),
          ints_(2, 2, 1, 1, lo=-128, hi=128, dtype="int8"), w(np.float32(0.2)), w(np.int8(0)),
          w(np.float32(0.3)), w(np.int8(-7))], {}),
    ],
}


def single(op: str, inputs: list, attrs: dict) -> tuple[TensorGraph, dict]:
    """A graph of one ``op`` node over the given run-time inputs and weights."""
    names, types, weights, feeds, consts = [], {}, {}, {}, []
    for p, spec in enumerate(inputs):
        if spec in (OMIT, ""):
            names.append("")
            consts.append(None)
            continue
        how, arr = spec
        name = f"in{p}"
        names.append(name)
        types[name] = TensorType(arr.dtype.name, tuple(arr.shape))
        (weights if how == "w" else feeds)[name] = arr
        consts.append(arr if how == "w" else None)
    d = OPS[op]
    n_out = 2 if op == "Split" else 1
    outs = tuple(f"out{k}" for k in range(n_out))
    node = Node(op, tuple(names), outs, make_attrs(attrs))
    in_types = [types.get(n) if n else None for n in names]
    for o, t in zip(outs, infer_node(node, in_types, consts), strict=False):
        types[o] = t
    assert d.kind is not Kind.SOURCE or COMPUTE[op].what == "fill"
    graph = TensorGraph(tuple(feeds), outs, (node,), types, weights)
    graph.check()
    return graph, feeds


PARAMS = [
    pytest.param(op, i, id=f"{op}-{i}") for op in sorted(CASES) for i in range(len(CASES[op]))
]


@pytest.mark.parametrize(("op", "case"), PARAMS)
def test_compute_matches_the_op_table(op, case):
    inputs, attrs = CASES[op][case]
    graph, feeds = single(op, inputs, attrs)
    want = interpret_graph(graph, feeds)
    lowered = lower(graph)
    got = lowered.run(feeds)
    for name, ref in want.items():
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape, name
        if ref.dtype.kind == "f":
            np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(got[name], ref)
    # one node: the op is its own kernel (a view that is a graph output is stored once)
    assert len(lowered.program.kernels) == len(graph.outputs)


def test_every_claimed_op_has_a_case():
    assert set(CASES) == set(CLAIMED), set(CLAIMED) ^ set(CASES)


def test_families_follow_the_kinds():
    for op, c in COMPUTE.items():
        kind = OPS[op].kind
        if c.what.startswith("element-wise"):
            assert kind is Kind.ELEMENTWISE, op
        elif c.what == "view":
            assert kind is Kind.INJECTIVE, op
        elif c.what == "fill":  # reads no input: a SOURCE op
            assert kind is Kind.SOURCE and c.data == (), op
        else:
            assert kind in (Kind.REDUCTION, Kind.COMPLEX), op
    # every element-wise and injective op of the table is claimed (the quantized ones too);
    # SOURCE ops are not
    assert {d.name for d in quant.DEFS} <= CLAIMED
    for op, d in OPS.items():
        if d.kind in (Kind.ELEMENTWISE, Kind.INJECTIVE):
            assert op in CLAIMED, op
        if d.kind is Kind.SOURCE:
            assert op not in CLAIMED or COMPUTE[op].what == "fill", op
