"""Unit tests of the nn op family: symbolic shape inference, window arithmetic, FLOP counts, and
numpy semantics checked against onnxruntime (one-node models, opset 17) as the oracle."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import helper

from eqsat.egraph.ir import TensorType
from eqsat.egraph.opdefs import nn
from eqsat.egraph.opdefs.base import InferCtx, ShapeError
from tests.helpers import run_op as run

OPS = {d.name: d for d in nn.DEFS}
F32 = "float32"
rng = np.random.default_rng(0)


def infer(op, types, attrs=None, consts=None):
    consts = consts if consts is not None else [None] * len(types)
    return OPS[op].infer(InferCtx(types, consts, dict(attrs or {})))


def ort_run(op, args, attrs=None, n_out=1, dtypes=None):
    names = [f"x{i}" if a is not None else "" for i, a in enumerate(args)]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **(attrs or {}))
    ins = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
        for n, a in zip(names, args, strict=True)
        if n
    ]
    dtypes = dtypes or [np.float32] + [np.int64] * (n_out - 1)  # MaxPool: Y, Indices
    dts = [helper.np_dtype_to_tensor_dtype(np.dtype(d)) for d in dtypes]
    graph = helper.make_graph(
        [node],
        "g",
        ins,
        [helper.make_tensor_value_info(o, d, None) for o, d in zip(outs, dts, strict=True)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {n: a for n, a in zip(names, args, strict=True) if n})


def randn(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def assert_close_to_ort(op, args, attrs, n_out=1, tol=1e-4):
    got = run(op, args, attrs, n_out)
    want = ort_run(op, args, attrs, n_out, [g.dtype for g in got])
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- shape inference


def test_conv_keeps_symbolic_batch():
    t = infer("Conv", [TensorType(F32, ("N", 3, 8, 8)), TensorType(F32, (16, 3, 3, 3))])
    assert t == [TensorType(F32, ("N", 16, 6, 6))]
    t = infer(
        "Conv",
        [TensorType(F32, ("N", 3, 8, 8)), TensorType(F32, (16, 3, 3, 3)), TensorType(F32, (16,))],
        {"pads": (1, 1, 1, 1), "strides": (2, 2)},
    )
    assert t[0].shape == ("N", 16, 4, 4)


def test_conv_symbolic_spatial_dims():
    x, w = TensorType(F32, ("N", 3, "H", "W")), TensorType(F32, (8, 3, 3, 3))
    assert infer("Conv", [x, w], {"pads": (1, 1, 1, 1)})[0].shape == ("N", 8, "H", "W")
    same = infer("Conv", [x, w], {"auto_pad": "SAME_UPPER", "strides": (2, 2)})[0].shape
    assert same == ("N", 8, "ceil(H/2)", "ceil(W/2)")
    strided = infer("Conv", [x, w], {"strides": (2, 2)})[0].shape
    assert all(isinstance(d, str) for d in strided[2:]) and strided[2] != strided[3]


def test_conv_invalid_shapes():
    with pytest.raises(ShapeError):  # channels 4 vs weight 3 * group 1
        infer("Conv", [TensorType(F32, (1, 4, 8, 8)), TensorType(F32, (8, 3, 3, 3))])
    with pytest.raises(ShapeError):  # kernel larger than the input
        infer("Conv", [TensorType(F32, (1, 3, 2, 2)), TensorType(F32, (8, 3, 3, 3))])
    with pytest.raises(ShapeError):  # bad pads length
        infer(
            "Conv", [TensorType(F32, (1, 3, 8, 8)), TensorType(F32, (8, 3, 3, 3))], {"pads": (1,)}
        )


def test_matmul_infer():
    t = infer("MatMul", [TensorType(F32, ("batch", 8, 16)), TensorType(F32, (16, 4))])
    assert t == [TensorType(F32, ("batch", 8, 4))]
    assert infer("MatMul", [TensorType(F32, (16,)), TensorType(F32, ("b", 2, 16, 4))])[0].shape == (
        "b",
        2,
        4,
    )
    assert infer("MatMul", [TensorType(F32, (3, 1, 5, 16)), TensorType(F32, (16, 7))])[0].shape == (
        3,
        1,
        5,
        7,
    )
    assert infer("MatMul", [TensorType(F32, (16,)), TensorType(F32, (16,))])[0].shape == ()
    with pytest.raises(ShapeError):
        infer("MatMul", [TensorType(F32, ("batch", 8, 16)), TensorType(F32, (15, 4))])


def test_reduce_axes_input_or_attribute():
    x = TensorType(F32, ("N", "S", 8))
    axes = np.array([1], np.int64)
    t_in = infer("ReduceMean", [x, TensorType("int64", (1,))], {"keepdims": 0}, [None, axes])
    t_attr = infer("ReduceMean", [x], {"keepdims": 0, "axes": (1,)})
    assert t_in == t_attr == [TensorType(F32, ("N", 8))]
    assert infer("ReduceSum", [x], {})[0].shape == (1, 1, 1)
    noop = {"noop_with_empty_axes": 1}
    empty = np.zeros(0, np.int64)
    assert infer("ReduceSum", [x, TensorType("int64", (0,))], noop, [None, empty]) == [x]
    with pytest.raises(ShapeError):  # axes known only at run time
        infer("ReduceMean", [x, TensorType("int64", (1,))])
    a = randn(2, 3, 4)
    (r1,) = run("ReduceSum", [a, np.array([-1], np.int64)], {"keepdims": 0})
    (r2,) = run("ReduceSum", [a], {"keepdims": 0, "axes": (2,)})
    np.testing.assert_allclose(r1, r2)
    np.testing.assert_allclose(r1, a.sum(-1), rtol=1e-6)


def test_batchnorm_training_mode_is_rejected():
    types = [TensorType(F32, ("B", 3, 4, 4))] + [TensorType(F32, (3,))] * 4
    assert infer("BatchNormalization", types)[0] == types[0]
    with pytest.raises(ShapeError):
        infer("BatchNormalization", types, {"training_mode": 1})


def test_flops():
    mm = OPS["MatMul"]
    ins = [TensorType(F32, ("batch", 8, 16)), TensorType(F32, (16, 4))]
    assert mm.flops(ins, mm.infer(InferCtx(ins, [None, None], {})), {}) == 2 * 8 * 4 * 16
    conv = OPS["Conv"]
    ins = [TensorType(F32, (1, 8, 16, 16)), TensorType(F32, (32, 4, 3, 3)), None]
    at = {"group": 2, "pads": (1, 1, 1, 1)}
    outs = conv.infer(InferCtx(ins, [None] * 3, at))
    assert outs[0].shape == (1, 32, 16, 16)
    assert conv.flops(ins, outs, at) == 2 * (32 * 16 * 16) * 4 * 9
    gemm = OPS["Gemm"]
    ins = [TensorType(F32, (16, 5)), TensorType(F32, (16, 7))]
    outs = gemm.infer(InferCtx(ins, [None] * 2, {"transA": 1}))
    assert outs[0].shape == (5, 7) and gemm.flops(ins, outs, {"transA": 1}) >= 2 * 5 * 7 * 16


# ------------------------------------------------------------------------------------ semantics


def test_grouped_conv_equals_per_group_convs():
    x, w, b = randn(2, 6, 9, 9), randn(9, 2, 3, 3), randn(9)
    at = {"group": 3, "strides": (2, 1), "pads": (1, 0, 1, 2), "dilations": (1, 2)}
    (y,) = run("Conv", [x, w, b], at)
    parts = []
    for g in range(3):
        sub = {k: v for k, v in at.items() if k != "group"}
        xs, ws, bs = x[:, 2 * g : 2 * g + 2], w[3 * g : 3 * g + 3], b[3 * g : 3 * g + 3]
        parts.append(run("Conv", [xs, ws, bs], sub)[0])
    np.testing.assert_allclose(y, np.concatenate(parts, axis=1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
def test_conv_auto_pad_vs_ort(auto_pad):
    x, w = randn(1, 2, 7, 6), randn(3, 2, 2, 3)
    at = {"auto_pad": auto_pad, "strides": (2, 2)}
    (y,) = run("Conv", [x, w], at)
    if auto_pad != "VALID":
        assert y.shape == (1, 3, 4, 3)
    assert_close_to_ort("Conv", [x, w], at)


@pytest.mark.parametrize(
    "shape, wshape, at",
    [
        ((2, 4, 11), (6, 2, 3), {"group": 2, "strides": (2,), "pads": (2, 1), "dilations": (2,)}),
        ((1, 2, 5, 6, 4), (4, 2, 2, 3, 2), {"strides": (1, 2, 1), "pads": (1, 0, 1, 0, 1, 1)}),
    ],
)
def test_conv_1d_3d_vs_ort(shape, wshape, at):
    assert_close_to_ort("Conv", [randn(*shape), randn(*wshape), randn(wshape[0])], at)


@pytest.mark.parametrize(
    "at",
    [
        {"group": 2, "strides": (2, 3), "pads": (1, 0, 0, 2), "output_padding": (1, 0)},
        {"strides": (2, 2), "dilations": (2, 1), "auto_pad": "SAME_UPPER"},
        {"strides": (3, 2), "output_shape": (12, 9)},
    ],
)
def test_conv_transpose_vs_ort(at):
    x, w, b = randn(2, 4, 4, 5), randn(4, 3, 3, 2), randn(6 if at.get("group") else 3)
    assert_close_to_ort("ConvTranspose", [x, w, b], at)


def test_conv_transpose_1d_3d_vs_ort():
    assert_close_to_ort("ConvTranspose", [randn(1, 2, 5), randn(2, 3, 3)], {"strides": (2,)})
    at = {"strides": (2, 1, 2), "pads": (0, 1, 0, 1, 0, 1)}
    assert_close_to_ort("ConvTranspose", [randn(1, 2, 3, 4, 3), randn(2, 2, 2, 3, 2)], at)


@pytest.mark.parametrize("include", [0, 1])
@pytest.mark.parametrize("ceil", [0, 1])
def test_average_pool_count_include_pad_vs_ort(include, ceil):
    x = randn(2, 3, 8, 7)
    at = {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 0)}
    assert_close_to_ort("AveragePool", [x], {**at, "count_include_pad": include, "ceil_mode": ceil})


def test_max_pool_with_indices_vs_ort():
    x = randn(2, 3, 9, 8)
    at = {"kernel_shape": (3, 2), "strides": (2, 2), "pads": (1, 0, 1, 1), "ceil_mode": 1}
    assert_close_to_ort("MaxPool", [x], at, n_out=2)
    assert_close_to_ort("MaxPool", [x], {**at, "dilations": (2, 1), "ceil_mode": 0}, n_out=2)
    assert_close_to_ort("MaxPool", [x], {"kernel_shape": (2, 2), "auto_pad": "SAME_LOWER"})


def test_max_pool_symbolic_and_int_dtype():
    t = infer("MaxPool", [TensorType("uint8", ("N", 3, "H", 9))], {"kernel_shape": (3, 3)})
    assert t[0].shape[:2] == ("N", 3) and t[0].shape[3] == 7 and t[0].dtype == "uint8"
    x = rng.integers(0, 255, (1, 1, 4, 4)).astype(np.uint8)
    (y,) = run("MaxPool", [x], {"kernel_shape": (2, 2), "strides": (2, 2)})
    np.testing.assert_array_equal(y, x.reshape(1, 1, 2, 2, 2, 2).max(axis=(3, 5)))


def test_norms_softmax_vs_ort():
    x = randn(2, 3, 4, 5)
    assert_close_to_ort("Softmax", [x], {"axis": 1})
    assert_close_to_ort("LogSoftmax", [x * 50], {})
    c = [randn(3), randn(3), randn(3), np.abs(randn(3)) + 0.1]
    assert_close_to_ort("BatchNormalization", [x, *c], {"epsilon": 1e-3})
    assert_close_to_ort("InstanceNormalization", [x, randn(3), randn(3)], {})
    ln = [x, randn(4, 5), randn(4, 5)]
    assert_close_to_ort("LayerNormalization", ln, {"axis": -2}, n_out=3)


def test_matmul_gemm_reduce_arg_vs_ort():
    assert_close_to_ort("MatMul", [randn(3, 1, 4, 5), randn(2, 5, 6)], {})
    assert_close_to_ort("MatMul", [randn(5), randn(3, 5, 2)], {})
    gemm = {"transA": 1, "alpha": 0.5, "beta": 2.0}
    assert_close_to_ort("Gemm", [randn(5, 3), randn(5, 4), randn(1, 4)], gemm)
    x = randn(3, 4, 5)
    for op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"):
        assert_close_to_ort(op, [x], {"axes": [0, -1], "keepdims": 0})
    assert_close_to_ort("ReduceSum", [x, np.array([1], np.int64)], {})
    ties = rng.integers(0, 3, (4, 6)).astype(np.float32)
    for op in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            at = {"axis": 1, "keepdims": 0, "select_last_index": last}
            want = ort_run(op, [ties], at, dtypes=[np.int64])[0]
            np.testing.assert_array_equal(run(op, [ties], at)[0], want)


def test_float16_stays_float16():
    x, w = randn(1, 2, 5, 5).astype(np.float16), randn(3, 2, 3, 3).astype(np.float16)
    (y,) = run("Conv", [x, w], {"pads": (1, 1, 1, 1)})
    assert y.dtype == np.float16
    ref = run("Conv", [x.astype(np.float32), w.astype(np.float32)], {"pads": (1, 1, 1, 1)})[0]
    np.testing.assert_allclose(y, ref, rtol=1e-2, atol=1e-2)
    (s,) = run("Softmax", [x], {})
    assert s.dtype == np.float16


def test_empty_reductions():
    x = np.zeros((2, 0, 4), np.float32)
    ax = np.array([1], np.int64)
    assert (run("ReduceMax", [x, ax])[0] == -np.inf).all()
    assert (run("ReduceMin", [x, ax])[0] == np.inf).all()
    assert (run("ReduceProd", [x, ax])[0] == 1).all()
    assert run("ReduceSum", [x, ax])[0].shape == (2, 1, 4)


def test_einsum():
    a, b = randn(2, 3, 4), randn(2, 4, 5)
    t = infer(
        "Einsum",
        [TensorType(F32, ("b", 3, 4)), TensorType(F32, ("b", 4, 5))],
        {"equation": "bij,bjk->bik"},
    )
    assert t[0].shape == ("b", 3, 5)
    (y,) = run("Einsum", [a, b], {"equation": "bij, bjk -> bik"})
    np.testing.assert_allclose(y, a @ b, rtol=1e-5)
    (d,) = run("Einsum", [randn(3, 5, 5)], {"equation": "...ii->...i"})
    assert d.shape == (3, 5)
    assert infer("Einsum", [TensorType(F32, (3, 4)), TensorType(F32, (4,))], {"equation": "ij,j"})[
        0
    ].shape == (3,)
