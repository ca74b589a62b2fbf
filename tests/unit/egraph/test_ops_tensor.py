"""Unit tests of the tensor op family: symbolic-dim shape inference (Reshape 0/-1, Flatten,
Transpose, Concat, Slice, Expand, Gather, Pad), Shape/Size static values, Split variants, and the
numpy semantics checked against the inferred types. (Full semantics are checked against the ONNX
backend node tests by ``tests/conformance``.)"""

from __future__ import annotations

import numpy as np
import pytest

from eqsat.egraph.ir import ArrayAttr, TensorType
from eqsat.egraph.opdefs import tensor
from eqsat.egraph.opdefs.base import InferCtx, ShapeError
from tests.helpers import run_op as run

OPS = {d.name: d for d in tensor.DEFS}
F32 = "float32"
I64 = "int64"
INT_MAX = 2**63 - 1


def T(*shape, dtype=F32) -> TensorType:
    return TensorType(dtype, tuple(shape))


def c64(*v) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def infer(op, types, consts=None, attrs=None, n_out=1):
    consts = consts if consts is not None else [None] * len(types)
    at = {**(attrs or {}), "_num_outputs": n_out}
    return OPS[op].infer(InferCtx(types, consts, at))[:n_out]


def shapes(op, types, consts=None, attrs=None, n_out=1):
    return [t.shape for t in infer(op, types, consts, attrs, n_out)]


def _shape_arg(v):
    return T(len(v), dtype=I64), c64(*v)


# ---------------------------------------------------------------------------- Reshape


@pytest.mark.parametrize(
    "target, want",
    [
        ([0, 128, 12, 64], ("batch", 128, 12, 64)),
        ([-1, 768], ("batch*128", 768)),
        ([0, -1], ("batch", 98304)),
        ([0, 0, -1, 64], ("batch", 128, 12, 64)),
        ([-1], ("batch*98304",)),
    ],
)
def test_reshape_symbolic(target, want):
    t, c = _shape_arg(target)
    assert shapes("Reshape", [T("batch", 128, 768), t], [None, c]) == [want]


def test_reshape_product_symbol_round_trip():
    t, c = _shape_arg([-1, 128, 768])
    assert shapes("Reshape", [T("batch*128", 768), t], [None, c]) == [("batch", 128, 768)]


def test_reshape_errors_and_allowzero():
    t, c = _shape_arg([-1, -1])
    with pytest.raises(ShapeError):
        infer("Reshape", [T(2, 3), t], [None, c])
    t, c = _shape_arg([4, 2])
    with pytest.raises(ShapeError):
        infer("Reshape", [T(2, 3), t], [None, c])
    with pytest.raises(ShapeError, match="constant"):
        infer("Reshape", [T(2, 3), t])
    (y,) = run("Reshape", [np.zeros((0, 3), np.float32), c64(0, 3)], {"allowzero": 1})
    assert y.shape == (0, 3)
    (y,) = run("Reshape", [np.zeros((2, 3, 4), np.float32), c64(0, -1)])
    assert y.shape == (2, 12)


# ---------------------------------------------------------------------------- Flatten, Transpose


@pytest.mark.parametrize(
    "axis, want",
    [(0, (1, "batch*12")), (1, ("batch", 12)), (2, ("batch*3", 4)), (-1, ("batch*3", 4))],
)
def test_flatten_symbolic(axis, want):
    assert shapes("Flatten", [T("batch", 3, 4)], attrs={"axis": axis}) == [want]


def test_transpose_symbolic():
    assert shapes("Transpose", [T("batch", "seq", 8)]) == [(8, "seq", "batch")]
    x = T("batch", "seq", 12, 64)
    assert shapes("Transpose", [x], attrs={"perm": (0, 2, 1, 3)}) == [("batch", 12, "seq", 64)]
    with pytest.raises(ShapeError):
        infer("Transpose", [x], attrs={"perm": (0, 1, 1, 3)})
    (y,) = run("Transpose", [np.arange(24, dtype=np.float32).reshape(2, 3, 4)], {"perm": (2, 0, 1)})
    assert np.array_equal(y, np.arange(24).reshape(2, 3, 4).transpose(2, 0, 1))


# ---------------------------------------------------------------------------- Concat, Slice


def test_concat_symbolic():
    a, b = T("batch", "past", 64), T("batch", 1, 64)
    assert shapes("Concat", [a, b], attrs={"axis": 1}) == [("batch", "past+1", 64)]
    assert shapes("Concat", [a, b, b], attrs={"axis": -2}) == [("batch", "past+2", 64)]
    assert shapes("Concat", [T("batch", 3), T(2, 3)], attrs={"axis": 0}) == [("batch+2", 3)]
    assert shapes("Concat", [T("n", 3), T(5, 3)], attrs={"axis": 1}) == [(5, 6)]
    with pytest.raises(ShapeError):
        infer("Concat", [T(2, 3), T(2, 4)], attrs={"axis": 0})
    with pytest.raises(ShapeError):
        infer("Concat", [T(2, 3), T(2, 3, dtype=I64)], attrs={"axis": 0})


def _slice_shape(x, starts, ends, axes=None, steps=None):
    args = [c64(*starts), c64(*ends)] + [c64(*v) for v in (axes, steps) if v is not None]
    types = [x] + [TensorType(I64, a.shape) for a in args]
    return shapes("Slice", types, [None, *args])[0]


def test_slice_symbolic():
    x = T("batch", "seq", 768)
    assert _slice_shape(x, [0], [INT_MAX], [1]) == ("batch", "seq", 768)
    assert _slice_shape(x, [-1], [INT_MAX], [1]) == ("batch", 1, 768)
    assert _slice_shape(x, [1], [INT_MAX], [1]) == ("batch", "seq-1", 768)
    assert _slice_shape(x, [0], [-1], [-2]) == ("batch", "seq-1", 768)
    assert _slice_shape(x, [0, 0], [4, 384], [1, 2]) == ("batch", 4, 384)
    assert _slice_shape(x, [-1], [-INT_MAX - 1], [1], [-1]) == ("batch", "seq", 768)
    with pytest.raises(ShapeError):
        _slice_shape(x, [2], [1], [1], [-1])


@pytest.mark.parametrize(
    "s, e, st", [(1, 4, 1), (-3, INT_MAX, 1), (4, -INT_MAX - 1, -1), (10, -10, -2), (-9, 9, 3)]
)
def test_slice_run_matches_numpy(s, e, st):
    x = np.arange(30, dtype=np.float32).reshape(5, 6)
    (y,) = run("Slice", [x, c64(s), c64(e), c64(1), c64(st)])
    assert np.array_equal(y, x[:, s:e:st])


# ---------------------------------------------------------------------------- Expand, Gather, Pad


def test_expand_symbolic():
    t, c = _shape_arg([1, 128, 768])
    assert shapes("Expand", [T("batch", 1, 768), t], [None, c]) == [("batch", 128, 768)]
    t, c = _shape_arg([2, 1, 1])
    assert shapes("Expand", [T("seq", 4), t], [None, c]) == [(2, "seq", 4)]
    t, c = _shape_arg([3, 5])
    with pytest.raises(ShapeError):
        infer("Expand", [T(2, 5), t], [None, c])
    (y,) = run("Expand", [np.arange(3, dtype=np.float32).reshape(3, 1), c64(2, 1, 4)])
    assert y.shape == (2, 3, 4) and y[1, 2, 3] == 2


def test_gather_symbolic():
    emb, ids = T(30522, 768), T("batch", "seq", dtype=I64)
    assert shapes("Gather", [emb, ids]) == [("batch", "seq", 768)]
    hidden, last = T("batch", "seq", 768), T(dtype=I64)
    assert shapes("Gather", [hidden, last], attrs={"axis": 1}) == [("batch", 768)]
    with pytest.raises(ShapeError):
        infer("Gather", [emb, T(3, dtype=F32)])
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    (y,) = run("Gather", [x, c64(-1, 0)], {"axis": 1})
    assert np.array_equal(y, x[:, [3, 0]])
    with pytest.raises(ShapeError):
        run("Gather", [x, c64(3)])


def test_pad_symbolic_and_negative():
    t, c = _shape_arg([0, 1, 0, 2])
    assert shapes("Pad", [T("n", "seq"), t], [None, c]) == [("n", "seq+3")]
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    (y,) = run("Pad", [x, c64(1, -1, 0, 2), np.array(7, np.float32)])
    assert np.array_equal(y, np.pad(x[:, 1:], ((1, 0), (0, 2)), constant_values=7))


# ---------------------------------------------------------------------------- Shape, Size, Constant


def test_shape_static_value():
    d = OPS["Shape"]

    def static(t, **attrs):
        return d.static_value(InferCtx([t], [None], attrs))

    assert np.array_equal(static(T(2, 128, 768))[0], c64(2, 128, 768))
    assert static(T("batch", 128)) is None
    assert np.array_equal(static(T("batch", 128), start=1)[0], c64(128))
    assert np.array_equal(static(T(2, 3, 4), start=-2, end=-1)[0], c64(3))
    assert shapes("Shape", [T("batch", 3, 4)], attrs={"start": 1}) == [(2,)]
    assert static(T(2, 3), start=5)[0].shape == (0,)
    size = OPS["Size"].static_value
    assert size(InferCtx([T(2, 3, 4)], [None], {}))[0] == 24
    assert size(InferCtx([T("b", 3)], [None], {})) is None


def test_constant_and_constant_of_shape():
    at = {"value": ArrayAttr.of(np.array([1.5, 2.5], np.float32))}
    assert infer("Constant", [], attrs=at) == [T(2)]
    assert OPS["Constant"].static_value(InferCtx([], [], {"value_ints": (1, 2, 3)}))[0].dtype == I64
    (y,) = run("ConstantOfShape", [c64(2, 3)])
    assert y.dtype == np.float32 and y.shape == (2, 3) and not y.any()
    (y,) = run("ConstantOfShape", [c64(2)], {"value": ArrayAttr.of(np.array([7], np.int32))})
    assert y.dtype == np.int32 and list(y) == [7, 7]


# ---------------------------------------------------------------------------- Split


def test_split_variants():
    x = np.arange(14, dtype=np.float32).reshape(7, 2)
    ys = run("Split", [x, c64(3, 4)], n_out=2)
    assert [y.shape for y in ys] == [(3, 2), (4, 2)]
    ys = run("Split", [x], {"split": (1, 6)}, n_out=2)
    assert [y.shape for y in ys] == [(1, 2), (6, 2)]
    ys = run("Split", [x], {"num_outputs": 4}, n_out=4)
    assert [y.shape[0] for y in ys] == [2, 2, 2, 1]
    ys = run("Split", [x], {"axis": 1}, n_out=2)
    assert np.array_equal(ys[1][:, 0], x[:, 1])
    with pytest.raises(ShapeError):
        infer("Split", [T(7, 2)], n_out=2)
    with pytest.raises(ShapeError):
        infer("Split", [T(7, 2)], attrs={"split": (3, 3)}, n_out=2)
    with pytest.raises(ShapeError):
        infer("Split", [T(6, 2)], attrs={"split": (3, 3)}, n_out=3)
    out = shapes("Split", [T("batch", 2304)], attrs={"axis": -1}, n_out=3)
    assert out == [("batch", 768)] * 3
    assert shapes("Split", [T("batch*4", 8)], n_out=2) == [("batch*2", 8)] * 2
    with pytest.raises(ShapeError):
        infer("Split", [T("batch", 8)], n_out=2)


def test_squeeze_unsqueeze_input_or_attr():
    x = T("batch", 1, 768)
    assert shapes("Squeeze", [x, T(1, dtype=I64)], [None, c64(1)]) == [("batch", 768)]
    assert shapes("Squeeze", [x], attrs={"axes": (-2,)}) == [("batch", 768)]
    assert shapes("Squeeze", [x]) == [("batch", 768)]
    with pytest.raises(ShapeError):
        infer("Squeeze", [x], attrs={"axes": (2,)})
    y = T("batch", "seq")
    assert shapes("Unsqueeze", [y, T(2, dtype=I64)], [None, c64(1, -1)]) == [("batch", 1, "seq", 1)]
    assert shapes("Unsqueeze", [y], attrs={"axes": (0,)}) == [(1, "batch", "seq")]
    (z,) = run("Unsqueeze", [np.zeros((2, 3), np.float32), c64(0, 3)])
    assert z.shape == (1, 2, 3, 1)


def test_tile_range_symbolic_and_flops():
    t, c = _shape_arg([1, 3])
    assert shapes("Tile", [T("batch", 4), t], [None, c]) == [("batch", 12)]
    (r,) = run("Range", [np.array(0, np.int64), np.array(10, np.int64), np.array(3, np.int64)])
    assert list(r) == [0, 3, 6, 9]
    assert OPS["Transpose"].flops([T(2, 3)], [T(3, 2)], {}) == 0
    assert OPS["Resize"].flops([T(1, 1, 2, 2)], [T(1, 1, 4, 4)], {"mode": "linear"}) > 0
