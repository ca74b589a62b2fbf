"""Shape-computation and reshaping ops: Shape, Size, Constant(OfShape), Range, Reshape, Flatten,
Squeeze, Unsqueeze, Expand, Transpose, Split, Slice.

Part of the ``tensor`` family (:mod:`eqsat.egraph.opdefs.tensor` re-exports these in its DEFS).
Semantics follow ONNX opset >= 13; an argument that moved from an attribute to an input across
opsets (Split ``split``, Squeeze/Unsqueeze ``axes``, Slice ``starts``/``ends``/``axes``) is
accepted in either form, by presence. Shape arguments given as inputs must be compile-time
constants for inference (``InferCtx.const``); symbolic dims are kept where the result can be
written exactly (``"batch*128"`` for products, ``"seq+1"`` / ``"seq-1"`` for offsets).

Split needs its node's output count: the callers (:func:`eqsat.egraph.ops.op_attrs`, used by
import, inference and the interpreter) put it into the attrs passed to ``infer`` and ``run``
under the key ``"_num_outputs"``.
"""

from __future__ import annotations

import math
import re

import numpy as np

from eqsat.egraph.ir import ArrayAttr, Dim, TensorType
from eqsat.egraph.opdefs.base import (
    InferCtx,
    Kind,
    OpDef,
    ShapeError,
    broadcast,
    ints,
    norm_axis,
    opt_input_or_attr,
    shape_arg,
    sym_dim,
    sym_divide,
    sym_product,
)

BIG = 2**31 - 1  # a Slice bound at or beyond this means "to the end"


def arg(args, i: int):
    """Input ``i`` at run time, or None when omitted."""
    return args[i] if i < len(args) else None


def _lin(d: Dim) -> tuple[int, list[str]]:
    if isinstance(d, int):
        return d, []
    m = re.fullmatch(r"(.+?)([+-]\d+)", d)
    return (int(m.group(2)), m.group(1).split("+")) if m else (0, d.split("+"))


def sym_add(*dims: Dim) -> Dim:
    """Sum of dims: an int, or a symbol written ``"a+b+3"`` / ``"seq-1"``."""
    k, terms = 0, []
    for d in dims:
        kk, tt = _lin(d)
        k, terms = k + kk, terms + tt
    if not terms:
        return k
    return "+".join(terms) + (f"{k:+d}" if k else "")


def sym_mul(d: Dim, k: int) -> Dim:
    kk, syms = sym_product([d])
    return 0 if k == 0 else sym_dim(kk * k, syms)


def norm_axes(axes, rank: int) -> list[int]:
    """Axes normalized to [0, rank); ShapeError on out-of-range or repeated axes."""
    out = [norm_axis(int(a), rank) for a in axes]
    if len(set(out)) != len(out):
        raise ShapeError(f"repeated axes {list(axes)}")
    return out


# ---------------------------------------------------------------------------- Shape, Size


def shape_range(r: int, attrs) -> slice:
    """The dims Shape returns: ``start``/``end`` (opset 15) wrapped once, then clamped."""
    start, end = int(attrs.get("start", 0) or 0), attrs.get("end")
    end = r if end is None else int(end)
    start, end = (start + r if start < 0 else start), (end + r if end < 0 else end)
    return slice(min(max(start, 0), r), min(max(end, 0), r))


def _shape_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    n = len(x.shape[shape_range(x.rank, ctx.attrs)])
    return [TensorType("int64", (n,))]


def _shape_static(ctx: InferCtx) -> list[np.ndarray] | None:
    x = ctx.t(0)
    dims = x.shape[shape_range(x.rank, ctx.attrs)]
    if not all(isinstance(d, int) for d in dims):
        return None
    return [np.array(dims, dtype=np.int64)]


def _shape(args, at):
    return [np.array(args[0].shape[shape_range(args[0].ndim, at)], dtype=np.int64)]


def _size_infer(ctx: InferCtx) -> list[TensorType]:
    ctx.t(0)
    return [TensorType("int64", ())]


def _size(args, at):
    return [np.array(args[0].size, dtype=np.int64)]


def _size_static(ctx: InferCtx) -> list[np.ndarray] | None:
    x = ctx.t(0)
    return [np.array(x.numel(), dtype=np.int64)] if x.is_static else None


# ---------------------------------------------------------------------------- constants


def _constant_value(at) -> np.ndarray:
    if at.get("value") is not None:
        v = at["value"]
        return v.array() if isinstance(v, ArrayAttr) else np.asarray(v)
    kinds = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    for name, dt in kinds.items():
        if at.get(name) is not None:
            return np.array(at[name], dtype=dt)
    raise ShapeError("Constant needs a value, value_float(s) or value_int(s) attribute")


def _constant_infer(ctx: InferCtx) -> list[TensorType]:
    v = _constant_value(ctx.attrs)
    return [TensorType(v.dtype.name, tuple(v.shape))]


def _constant(args, at):
    return [_constant_value(at)]


def _constant_static(ctx: InferCtx) -> list[np.ndarray]:
    return [_constant_value(ctx.attrs)]


def fill_value(at) -> np.ndarray:
    v = at.get("value")
    if v is None:
        return np.zeros((), np.float32)
    v = v.array() if isinstance(v, ArrayAttr) else np.asarray(v)
    if v.size != 1:
        raise ShapeError("ConstantOfShape value must have one element")
    return v.reshape(())


def _cos_shape(shape) -> tuple[int, ...]:
    dims = tuple(ints(shape))
    if any(d < 0 for d in dims):
        raise ShapeError(f"ConstantOfShape: negative dim in {list(dims)}")
    return dims


def _cos_infer(ctx: InferCtx) -> list[TensorType]:
    dims = _cos_shape(ctx.const(0, "ConstantOfShape shape"))
    return [TensorType(fill_value(ctx.attrs).dtype.name, dims)]


def _cos(args, at):
    return [np.full(_cos_shape(args[0]), fill_value(at))]


def _range_len(start, limit, delta) -> int:
    start, limit, delta = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    if delta == 0:
        raise ShapeError("Range delta must be non-zero")
    if start.dtype.kind in "iu":
        return len(range(int(start), int(limit), int(delta)))
    return max(math.ceil((float(limit) - float(start)) / float(delta)), 0)


def _range(args, at):
    start, delta = (np.asarray(args[i]).reshape(()) for i in (0, 2))
    n, dt = _range_len(*args), start.dtype
    work = np.float32 if dt == np.float16 else dt  # float16 accumulates in float32
    return [(start.astype(work) + np.arange(n, dtype=work) * delta.astype(work)).astype(dt)]


def _range_infer(ctx: InferCtx) -> list[TensorType]:
    vals = [ctx.const(i, "Range start/limit/delta") for i in range(3)]
    return [TensorType(ctx.t(0).dtype, (_range_len(*vals),))]


# ---------------------------------------------------------------------------- reshaping


def _reshape_dims(in_shape, shape, allowzero: bool) -> list[Dim]:
    out: list[Dim | None] = []
    neg = None
    for i, s in enumerate(shape):
        if isinstance(s, str):  # a symbolic target dim (a shape computed from a symbolic dim)
            out.append(s)
        elif s == -1:
            if neg is not None:
                raise ShapeError("Reshape: more than one -1 in the target shape")
            neg = i
            out.append(None)
        elif s == 0 and not allowzero:
            if i >= len(in_shape):
                raise ShapeError(f"Reshape: 0 at position {i} beyond the input rank")
            out.append(in_shape[i])
        elif s < 0:
            raise ShapeError(f"Reshape: invalid target dim {s}")
        else:
            out.append(s)
    known = [d for d in out if d is not None]
    if neg is not None:
        out[neg] = sym_divide(in_shape, known)
    elif all(isinstance(d, int) for d in list(in_shape) + known):
        if math.prod(in_shape) != math.prod(known):  # type: ignore[arg-type]
            raise ShapeError(f"Reshape: cannot reshape {list(in_shape)} to {shape}")
    return out  # type: ignore[return-value]


def _reshape_target(ctx: InferCtx) -> list[Dim]:
    if ctx.has(1):
        return shape_arg(ctx.const(1, "Reshape shape"))
    v = opt_input_or_attr(ctx, 1, "shape", "Reshape shape")
    if v is None:
        raise ShapeError("Reshape needs a shape")
    return v


def _reshape_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    dims = _reshape_dims(x.shape, _reshape_target(ctx), bool(ctx.a("allowzero", 0)))
    return [TensorType(x.dtype, tuple(dims))]


def _reshape(args, at):
    shape = ints(arg(args, 1) if arg(args, 1) is not None else at["shape"])
    x = args[0]
    return [x.reshape(_reshape_dims(x.shape, shape, bool(at.get("allowzero", 0)))).copy()]


def _flatten_dims(shape, axis: int) -> tuple[Dim, Dim]:
    r = len(shape)
    if not -r <= axis <= r:
        raise ShapeError(f"Flatten: axis {axis} out of range for rank {r}")
    axis = axis + r if axis < 0 else axis
    return sym_dim(*sym_product(shape[:axis])), sym_dim(*sym_product(shape[axis:]))


def _flatten_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    return [TensorType(x.dtype, _flatten_dims(x.shape, int(ctx.a("axis", 1))))]


def _flatten(args, at):
    x = args[0]
    return [x.reshape(_flatten_dims(x.shape, int(at.get("axis", 1)))).copy()]


def _squeeze_dims(shape, axes) -> list[Dim]:
    if axes is None:  # every dim of size 1; a symbolic dim is assumed not to be 1
        return [d for d in shape if d != 1]
    ax = norm_axes(axes, len(shape))
    for a in ax:
        if isinstance(shape[a], int) and shape[a] != 1:
            raise ShapeError(f"Squeeze: dim {a} of {list(shape)} is not 1")
    return [d for i, d in enumerate(shape) if i not in ax]


def _unsqueeze_dims(shape, axes) -> list[Dim]:
    if axes is None:
        raise ShapeError("Unsqueeze needs axes")
    ax = norm_axes(axes, len(shape) + len(axes))
    rest = iter(shape)
    return [1 if i in ax else next(rest) for i in range(len(shape) + len(ax))]


def _axes_op(dims_fn, what: str):
    """(infer, run) of an op reshaping input 0 by ``dims_fn(shape, axes)`` (axes: input 1 or
    the pre-opset-13 attribute)."""

    def infer(ctx: InferCtx) -> list[TensorType]:
        x = ctx.t(0)
        axes = opt_input_or_attr(ctx, 1, "axes", f"{what} axes")
        return [TensorType(x.dtype, tuple(dims_fn(x.shape, axes)))]

    def run(args, at):
        v = arg(args, 1)
        axes = ints(v) if v is not None else at.get("axes")
        return [args[0].reshape(dims_fn(args[0].shape, axes)).copy()]

    return infer, run


def _expand_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    return [TensorType(x.dtype, broadcast(x.shape, tuple(shape_arg(ctx.const(1, "Expand shape")))))]


def _expand(args, at):
    x = args[0]
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(ints(args[1])))).copy()]


def _perm(rank: int, perm) -> list[int]:
    if perm is None:
        return list(range(rank))[::-1]
    p = [int(a) for a in perm]
    if sorted(p) != list(range(rank)):
        raise ShapeError(f"Transpose: perm {p} is not a permutation of rank {rank}")
    return p


def _transpose_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    return [TensorType(x.dtype, tuple(x.shape[i] for i in _perm(x.rank, ctx.a("perm"))))]


def _transpose(args, at):
    return [np.ascontiguousarray(np.transpose(args[0], _perm(args[0].ndim, at.get("perm"))))]


# ---------------------------------------------------------------------------- Split, Slice


def _split_sizes(dim: Dim, split, at) -> list[Dim]:
    if split is not None:
        if len(split) != at.get("_num_outputs", len(split)):
            raise ShapeError(f"Split: {len(split)} sizes for {at['_num_outputs']} outputs")
        if isinstance(dim, int) and sum(split) != dim:
            raise ShapeError(f"Split: sizes {split} do not add up to {dim}")
        if any(s < 0 for s in split):
            raise ShapeError(f"Split: negative size in {split}")
        return list(split)
    n = at.get("num_outputs") or at.get("_num_outputs")
    if not n:
        raise ShapeError("Split: the number of outputs is unknown")
    n = int(n)
    if at.get("_num_outputs", n) != n:
        raise ShapeError(f"Split: num_outputs={n} but the node has {at['_num_outputs']} outputs")
    if not isinstance(dim, int):
        return [sym_divide([dim], [n])] * n
    if dim % n == 0:
        return [dim // n] * n
    if not at.get("num_outputs"):
        raise ShapeError(f"Split: {dim} does not split evenly into {n}")
    chunk = -(-dim // n)
    if dim - chunk * (n - 1) < 0:
        raise ShapeError(f"Split: {dim} cannot split into {n} chunks of {chunk}")
    return [chunk] * (n - 1) + [dim - chunk * (n - 1)]


def _split_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    axis = norm_axis(int(ctx.a("axis", 0)), x.rank)
    split = opt_input_or_attr(ctx, 1, "split", "Split sizes")
    sizes = _split_sizes(x.shape[axis], split, ctx.attrs)
    return [TensorType(x.dtype, x.shape[:axis] + (s,) + x.shape[axis + 1 :]) for s in sizes]


def _split(args, at):
    x = args[0]
    axis = norm_axis(int(at.get("axis", 0)), x.ndim)
    s = arg(args, 1)
    split = ints(s) if s is not None else (list(at["split"]) if at.get("split") else None)
    sizes = _split_sizes(x.shape[axis], split, at)
    return [a.copy() for a in np.split(x, np.cumsum(sizes)[:-1].astype(np.int64), axis=axis)]


def _slice_args(rank: int, starts, ends, axes, steps) -> list[tuple[int, int, int, int]]:
    if len(starts) != len(ends):
        raise ShapeError("Slice: starts and ends differ in length")
    axes = norm_axes(axes if axes is not None else range(len(starts)), rank)
    steps = steps if steps is not None else [1] * len(starts)
    if len(axes) != len(starts) or len(steps) != len(starts):
        raise ShapeError("Slice: starts, ends, axes and steps differ in length")
    if any(s == 0 for s in steps):
        raise ShapeError("Slice: step 0")
    return list(zip(axes, starts, ends, steps, strict=True))


def _sym_slice_len(d: str, s: int, e: int, st: int) -> Dim:
    """Length of d[s:e:st] for a symbolic d, assuming d is at least as large as the bounds."""
    if st > 0:
        s = 0 if s <= -BIG else s
        if e >= BIG and s < 0:
            return -(s // st)  # the last -s elements: ceil(-s / st)
        if e >= BIG and st == 1:
            return sym_add(d, -s)
        if e < BIG and (s >= 0) == (e >= 0):
            return max(0, -(-(e - s) // st))
        if s >= 0 and st == 1:
            return sym_add(d, e - s)
    elif st == -1 and (s == -1 or s >= BIG) and e <= -BIG:
        return d
    raise ShapeError(f"Slice {s}:{e}:{st} of the symbolic dim {d!r} has no exact size")


def _slice_inputs(ctx: InferCtx):
    def get(i, name):
        return opt_input_or_attr(ctx, i, name, f"Slice {name}")

    return get(1, "starts"), get(2, "ends"), get(3, "axes"), get(4, "steps")


def _slice_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    starts, ends, axes, steps = _slice_inputs(ctx)
    if starts is None or ends is None:
        raise ShapeError("Slice needs starts and ends")
    out = list(x.shape)
    for a, s, e, st in _slice_args(x.rank, starts, ends, axes, steps):
        d = x.shape[a]
        if isinstance(d, int):
            out[a] = len(range(*slice(s, e, st).indices(d)))
        else:
            out[a] = _sym_slice_len(d, s, e, st)
    return [TensorType(x.dtype, tuple(out))]


def _slice(args, at):
    x = args[0]

    def get(i, name):
        v = arg(args, i)
        return ints(v) if v is not None else (list(at[name]) if at.get(name) else None)

    sl = [slice(None)] * x.ndim
    for a, s, e, st in _slice_args(x.ndim, *(get(i, n) for i, n in enumerate(_SLICE, 1))):
        sl[a] = slice(s, e, st)
    return [x[tuple(sl)].copy()]


_SLICE = ("starts", "ends", "axes", "steps")


def _op(
    name, cat, infer, run, ins=(1, 1), outs=(1, 1), static=None, *, ctor="", kind=None, **attrs
) -> OpDef:
    return OpDef(
        name,
        cat,
        infer,
        run,
        attrs=attrs,
        inputs=ins,
        outputs=outs,
        static_value=static,
        ctor=ctor,
        kind=kind,
    )


_SRC = Kind.SOURCE


_CONST = dict.fromkeys(("value", "value_float", "value_floats", "value_int", "value_ints"))
_SPLIT = {"axis": 0, "split": None, "num_outputs": None}

DEFS: tuple[OpDef, ...] = (
    _op("Shape", "shape", _shape_infer, _shape, static=_shape_static, kind=_SRC, start=0, end=None),
    _op("Size", "shape", _size_infer, _size, static=_size_static, kind=_SRC),
    _op(
        "Constant",
        "data",
        _constant_infer,
        _constant,
        (0, 0),
        static=_constant_static,
        kind=_SRC,
        **_CONST,
    ),
    _op("ConstantOfShape", "data", _cos_infer, _cos, kind=_SRC, value=None),
    _op("Range", "data", _range_infer, _range, (3, 3), kind=_SRC),
    _op("Reshape", "shape", _reshape_infer, _reshape, (1, 2), ctor="reshape", allowzero=0),
    _op("Flatten", "shape", _flatten_infer, _flatten, ctor="flatten", axis=1),
    _op("Squeeze", "shape", *_axes_op(_squeeze_dims, "Squeeze"), (1, 2), axes=None),
    _op("Unsqueeze", "shape", *_axes_op(_unsqueeze_dims, "Unsqueeze"), (1, 2), axes=None),
    _op("Expand", "data", _expand_infer, _expand, (2, 2)),
    _op("Transpose", "data", _transpose_infer, _transpose, ctor="transpose", perm=None),
    _op("Split", "data", _split_infer, _split, (1, 2), (1, -1), **_SPLIT),
    _op(
        "Slice",
        "data",
        _slice_infer,
        _slice,
        (1, 5),
        ctor="slice",
        starts=None,
        ends=None,
        axes=None,
    ),
)
