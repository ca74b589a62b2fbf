"""Data-movement ops: the ``tensor`` family of the op table.

This module defines Gather, GatherElements, GatherND, ScatterND, Concat, Tile, Pad, Trilu, CumSum,
OneHot, DepthToSpace, SpaceToDepth and Resize; its :data:`DEFS` also includes the shape-computation
and reshaping ops of :mod:`eqsat.egraph.opdefs.shape_ops` (Shape, Size, Constant, ConstantOfShape,
Range, Reshape, Flatten, Squeeze, Unsqueeze, Expand, Transpose, Split, Slice).

Semantics follow ONNX opset >= 13 (Pad's ``pads``/``value`` are accepted as attributes too; the
opset-18 ``axes`` input of Pad is supported). Resize implements every mode of opset 19 (nearest
with all rounding modes, linear, cubic, antialiasing, ``axes``, ``keep_aspect_ratio_policy``,
every coordinate transformation including ``tf_crop_and_resize``) as a separable product of
per-axis interpolation matrices; its output size needs ``scales`` or ``sizes`` to be constant.

Attrs passed to ``infer``/``run`` carry the node's output count as ``"_num_outputs"`` (see
:mod:`eqsat.egraph.opdefs.shape_ops`; only Split uses it).
"""

from __future__ import annotations

import math

import numpy as np

from eqsat.egraph.ir import Dim, TensorType
from eqsat.egraph.opdefs import shape_ops
from eqsat.egraph.opdefs.base import (
    InferCtx,
    Kind,
    OpDef,
    ShapeError,
    ints,
    norm_axis,
    opt_input_or_attr,
    per_output_element,
    same,
    sym_divide,
)
from eqsat.egraph.opdefs.shape_ops import arg, norm_axes, sym_add, sym_mul

# ---------------------------------------------------------------------------- gather / scatter


def _index_check(t: TensorType, what: str) -> None:
    if t.dtype not in ("int32", "int64"):
        raise ShapeError(f"{what} must be int32 or int64, got {t.dtype}")


def _gather_infer(ctx: InferCtx) -> list[TensorType]:
    x, idx = ctx.t(0), ctx.t(1)
    _index_check(idx, "Gather indices")
    a = norm_axis(int(ctx.a("axis", 0)), x.rank)
    return [TensorType(x.dtype, x.shape[:a] + idx.shape + x.shape[a + 1 :])]


def _wrap(idx: np.ndarray, n: int) -> np.ndarray:
    idx = np.asarray(idx, dtype=np.int64)
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ShapeError(f"index out of range for a dim of size {n}")
    return np.where(idx < 0, idx + n, idx)


def _gather(args, at):
    x = args[0]
    a = norm_axis(int(at.get("axis", 0)), x.ndim)
    return [np.take(x, _wrap(args[1], x.shape[a]), axis=a)]


def _gather_el_infer(ctx: InferCtx) -> list[TensorType]:
    x, idx = ctx.t(0), ctx.t(1)
    _index_check(idx, "GatherElements indices")
    if x.rank != idx.rank:
        raise ShapeError(f"GatherElements: ranks differ ({x}, {idx})")
    norm_axis(int(ctx.a("axis", 0)), x.rank)
    return [TensorType(x.dtype, idx.shape)]


def _gather_el(args, at):
    x = args[0]
    a = norm_axis(int(at.get("axis", 0)), x.ndim)
    return [np.take_along_axis(x, _wrap(args[1], x.shape[a]), axis=a)]


def _gathernd_infer(ctx: InferCtx) -> list[TensorType]:
    x, idx = ctx.t(0), ctx.t(1)
    _index_check(idx, "GatherND indices")
    b, m = int(ctx.a("batch_dims", 0)), idx.shape[-1] if idx.rank else None
    if not isinstance(m, int):
        raise ShapeError(f"GatherND: the last dim of indices {idx} must be static")
    if not 0 <= b < min(x.rank, idx.rank) or b + m > x.rank:
        raise ShapeError(f"GatherND: indices {idx} do not fit data {x} (batch_dims {b})")
    return [TensorType(x.dtype, idx.shape[:-1] + x.shape[b + m :])]


def _gathernd(args, at):
    x, idx = args[0], np.asarray(args[1], np.int64)
    b, m = int(at.get("batch_dims", 0)), idx.shape[-1]
    batch = x.shape[:b]
    xs = x.reshape((-1, *x.shape[b:]))  # the batch dims flattened into one
    qs = idx.reshape((xs.shape[0], -1, m))
    rows = [
        xs[n][tuple(_wrap(q[:, j], xs.shape[1 + j]) for j in range(m))] for n, q in enumerate(qs)
    ]
    return [np.stack(rows).reshape(batch + idx.shape[b:-1] + x.shape[b + m :])]


_SCATTER = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatternd_infer(ctx: InferCtx) -> list[TensorType]:
    x, idx, upd = ctx.t(0), ctx.t(1), ctx.t(2)
    _index_check(idx, "ScatterND indices")
    k = idx.shape[-1] if idx.rank else None
    if isinstance(k, int) and (k > x.rank or upd.rank != idx.rank - 1 + x.rank - k):
        raise ShapeError(f"ScatterND: updates {upd} do not fit data {x} and indices {idx}")
    return [x]


def _scatternd(args, at):
    x, idx, upd = args[0], np.asarray(args[1], np.int64), args[2]
    k = idx.shape[-1]
    out = x.copy()
    idx = idx.reshape(-1, k)
    idx = tuple(_wrap(idx[:, j], x.shape[j]) for j in range(k))
    upd = upd.reshape((-1,) + x.shape[k:])
    red = at.get("reduction", "none")
    if red == "none":
        out[idx] = upd
    elif red in _SCATTER:
        _SCATTER[red].at(out, idx, upd)
    else:
        raise ShapeError(f"ScatterND: unknown reduction {red!r}")
    return [out]


# ---------------------------------------------------------------------------- Concat, Tile, Pad


def _concat_infer(ctx: InferCtx) -> list[TensorType]:
    ts = [ctx.t(i) for i in range(len(ctx.types))]
    if ctx.a("axis") is None:
        raise ShapeError("Concat needs an axis")
    r = ts[0].rank
    if r == 0:
        raise ShapeError("Concat of scalars")
    axis = norm_axis(int(ctx.a("axis")), r)
    out = list(ts[0].shape)
    for t in ts[1:]:
        if t.rank != r or t.dtype != ts[0].dtype:
            raise ShapeError(f"Concat: inputs {[str(t) for t in ts]} differ in rank or dtype")
        for k, d in enumerate(t.shape):
            if k == axis:
                continue
            if isinstance(d, int) and isinstance(out[k], int) and d != out[k]:
                raise ShapeError(f"Concat: inputs {[str(t) for t in ts]} differ on axis {k}")
            if isinstance(out[k], str) and isinstance(d, int):
                out[k] = d
    out[axis] = sym_add(*(t.shape[axis] for t in ts))
    return [TensorType(ts[0].dtype, tuple(out))]


def _concat(args, at):
    return [np.concatenate(args, axis=int(at["axis"]))]


def _tile_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    reps = ints(ctx.const(1, "Tile repeats"))
    if len(reps) != x.rank or any(r < 0 for r in reps):
        raise ShapeError(f"Tile: repeats {reps} invalid for rank {x.rank}")
    return [TensorType(x.dtype, tuple(sym_mul(d, r) for d, r in zip(x.shape, reps, strict=True)))]


def _tile(args, at):
    return [np.tile(args[0], ints(args[1]))]


def _pad_width(rank: int, pads, axes) -> list[tuple[int, int]]:
    axes = norm_axes(axes if axes is not None else range(rank), rank)
    if pads is None or len(pads) != 2 * len(axes):
        raise ShapeError(f"Pad: {pads} is not two pads for each of {len(axes)} axes")
    width = [(0, 0)] * rank
    for i, a in enumerate(axes):
        width[a] = (pads[i], pads[i + len(axes)])
    return width


def _pad_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    pads = opt_input_or_attr(ctx, 1, "pads", "Pad pads")
    axes = opt_input_or_attr(ctx, 3, "axes", "Pad axes")
    width = _pad_width(x.rank, pads, axes)
    dims = tuple(sym_add(d, b, e) for d, (b, e) in zip(x.shape, width, strict=True))
    if any(isinstance(d, int) and d < 0 for d in dims):
        raise ShapeError(f"Pad: pads {pads} crop {x} below zero")
    return [TensorType(x.dtype, dims)]


def _pad(args, at):
    x = args[0]
    pads = ints(arg(args, 1)) if arg(args, 1) is not None else at.get("pads")
    axes = ints(arg(args, 3)) if arg(args, 3) is not None else None
    width = _pad_width(x.ndim, pads, axes)
    x = x[tuple(slice(max(-b, 0), x.shape[i] - max(-e, 0)) for i, (b, e) in enumerate(width))]
    width = [(max(b, 0), max(e, 0)) for b, e in width]
    mode = at.get("mode", "constant")
    if mode == "constant":
        cv = arg(args, 2)
        value = cv.reshape(-1)[0] if cv is not None and cv.size else (at.get("value") or 0)
        return [np.pad(x, width, mode="constant", constant_values=value).astype(x.dtype)]
    if mode not in ("reflect", "edge", "wrap"):
        raise ShapeError(f"Pad: unknown mode {mode!r}")
    return [np.pad(x, width, mode=mode)]


# ---------------------------------------------------------------------------- small ops


def _cumsum(args, at):
    x, a = args[0], norm_axis(int(np.asarray(args[1]).reshape(-1)[0]), args[0].ndim)
    if at.get("reverse", 0):
        x = np.flip(x, a)
    out = np.cumsum(x, axis=a, dtype=x.dtype)
    if at.get("exclusive", 0):
        out = np.concatenate([np.zeros_like(np.take(out, [0], a)), np.delete(out, -1, a)], a)
    return [np.ascontiguousarray(np.flip(out, a) if at.get("reverse", 0) else out)]


def _onehot_axis(rank: int, axis: int) -> int:
    if not -rank - 1 <= axis <= rank:
        raise ShapeError(f"OneHot: axis {axis} out of range for rank {rank}")
    return axis + rank + 1 if axis < 0 else axis


def _onehot_infer(ctx: InferCtx) -> list[TensorType]:
    idx, vals = ctx.t(0), ctx.t(2)
    depth = int(np.asarray(ctx.const(1, "OneHot depth")).reshape(-1)[0])
    a = _onehot_axis(idx.rank, int(ctx.a("axis", -1)))
    return [TensorType(vals.dtype, idx.shape[:a] + (depth,) + idx.shape[a:])]


def _onehot(args, at):
    idx, depth, vals = args[0], int(np.asarray(args[1]).reshape(-1)[0]), args[2]
    a = _onehot_axis(idx.ndim, int(at.get("axis", -1)))
    idx = np.where(idx < 0, idx + depth, idx)
    hot = np.expand_dims(idx, a) == np.arange(depth).reshape((-1,) + (1,) * (idx.ndim - a))
    off, on = vals.reshape(-1)[:2]
    return [np.where(hot, on, off).astype(vals.dtype)]


def _trilu(args, at):
    k = int(np.asarray(args[1]).reshape(-1)[0]) if arg(args, 1) is not None else 0
    fn = np.triu if at.get("upper", 1) else np.tril
    return [fn(args[0], k)]


def _d2s_infer(ctx: InferCtx) -> list[TensorType]:
    x, b = ctx.t(0), int(ctx.a("blocksize"))
    if x.rank != 4:
        raise ShapeError(f"DepthToSpace needs a 4-D input, got {x}")
    n, c, h, w = x.shape
    return [TensorType(x.dtype, (n, sym_divide([c], [b * b]), sym_mul(h, b), sym_mul(w, b)))]


def _d2s(args, at):
    x, b = args[0], int(at["blocksize"])
    n, c, h, w = x.shape
    if at.get("mode", "DCR") == "DCR":
        y = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
    else:
        y = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
    return [y.reshape(n, c // (b * b), h * b, w * b)]


def _s2d_infer(ctx: InferCtx) -> list[TensorType]:
    x, b = ctx.t(0), int(ctx.a("blocksize"))
    if x.rank != 4:
        raise ShapeError(f"SpaceToDepth needs a 4-D input, got {x}")
    n, c, h, w = x.shape
    hw = (sym_divide([h], [b]), sym_divide([w], [b]))
    return [TensorType(x.dtype, (n, sym_mul(c, b * b), *hw))]


def _s2d(args, at):
    x, b = args[0], int(at["blocksize"])
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // b, b, w // b, b)
    perm = (0, 3, 5, 1, 2, 4) if at.get("mode", "DCR") == "DCR" else (0, 1, 3, 5, 2, 4)
    return [y.transpose(perm).reshape(n, c * b * b, h // b, w // b)]


# ---------------------------------------------------------------------------- Resize


def _resize_plan(shape, at, scales, sizes) -> dict[int, tuple[Dim, float | None]]:
    """axis -> (output dim, scale) for every resized axis."""
    r = len(shape)
    axes = norm_axes(at.get("axes") or range(r), r)
    plan: dict[int, tuple[Dim, float | None]] = {}
    if scales is not None and len(scales):
        if len(scales) != len(axes):
            raise ShapeError(f"Resize: {len(scales)} scales for {len(axes)} axes")
        for a, s in zip(axes, scales, strict=True):
            d, s = shape[a], float(s)
            if isinstance(d, int):
                plan[a] = (int(s * d), s)
            elif s.is_integer():
                plan[a] = (sym_mul(d, int(s)), s)
            else:
                raise ShapeError(f"Resize: scale {s} of the symbolic dim {d!r}")
        return plan
    if sizes is None or len(sizes) != len(axes):
        raise ShapeError("Resize needs scales or sizes (one per axis)")
    policy = at.get("keep_aspect_ratio_policy", "stretch")
    if policy == "stretch":
        return {
            a: (int(n), n / shape[a] if isinstance(shape[a], int) else None)
            for a, n in zip(axes, sizes, strict=True)
        }
    if not all(isinstance(shape[a], int) for a in axes):
        raise ShapeError("Resize: keep_aspect_ratio_policy with symbolic dims")
    ratios = [int(n) / shape[a] for a, n in zip(axes, sizes, strict=True)]
    s = min(ratios) if policy == "not_larger" else max(ratios)
    return {a: (int(s * shape[a] + 0.5), s) for a in axes}


def _present(v) -> list | None:
    return None if v is None or np.asarray(v).size == 0 else np.asarray(v).reshape(-1).tolist()


def _resize_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    sizes = _present(ctx.const(3, "Resize sizes")) if ctx.has(3) else None
    scales = None
    if sizes is None and ctx.has(2):
        scales = _present(ctx.const(2, "Resize scales"))
    out = list(x.shape)
    for a, (d, _) in _resize_plan(x.shape, ctx.attrs, scales, sizes).items():
        out[a] = d
    return [TensorType(x.dtype, tuple(out))]


def _coords(mode: str, n_in: int, n_out: int, s: float, roi) -> np.ndarray:
    y, w = np.arange(n_out, dtype=np.float64), s * n_in
    if mode == "half_pixel":
        return (y + 0.5) / s - 0.5
    if mode == "pytorch_half_pixel":
        return np.full(n_out, -0.5) if w == 1 else (y + 0.5) / s - 0.5
    if mode == "half_pixel_symmetric":
        return n_in / 2 * (1 - n_out / w) + (y + 0.5) / s - 0.5
    if mode == "align_corners":
        return np.zeros(n_out) if w == 1 else y * (n_in - 1) / (w - 1)
    if mode == "asymmetric":
        return y / s
    if mode == "tf_crop_and_resize":
        lo, hi = roi
        if w == 1:
            return np.full(n_out, (hi - lo) * (n_in - 1) / 2 + lo * (n_in - 1))
        return y * (hi - lo) * (n_in - 1) / (w - 1) + lo * (n_in - 1)
    raise ShapeError(f"Resize: unknown coordinate_transformation_mode {mode!r}")


def _coeffs(at, ratio: np.ndarray, s: float) -> np.ndarray:
    """Interpolation weights of the neighbours ``base + start + j`` of each output point."""
    mode, r = at.get("mode", "nearest"), ratio[:, None]
    if mode == "nearest":
        nm = at.get("nearest_mode", "round_prefer_floor")
        rules = {"round_prefer_floor": r > 0.5, "round_prefer_ceil": r >= 0.5}
        hi = rules.get(nm, np.full_like(r, nm == "ceil", dtype=bool)) | (r == 1)
        return np.concatenate([~hi, hi], axis=1).astype(np.float64)
    aa, sa = bool(at.get("antialias", 0)), min(s, 1.0)
    a = float(at.get("cubic_coeff_a", -0.75))
    if mode == "linear":
        if not aa:
            return np.concatenate([1 - r, r], axis=1)
        start = math.floor(-1 / sa) + 1
        c = np.clip(1 - np.abs((np.arange(start, 2 - start) - r) * sa), 0, 1)
        return c / c.sum(axis=1, keepdims=True)
    if mode != "cubic":
        raise ShapeError(f"Resize: unknown mode {mode!r}")
    start = math.floor(-2 / sa) + 1 if aa else -1
    x = np.abs((np.arange(start, 2 - start) - r) * (sa if aa else 1.0))
    c = np.where(
        x <= 1,
        ((a + 2) * x - (a + 3)) * x * x + 1,
        np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0),
    )
    return c / c.sum(axis=1, keepdims=True) if aa else c


def resize_matrix(n_in: int, n_out: int, s: float, roi, at) -> tuple[np.ndarray, np.ndarray]:
    """The interpolation matrix ``w`` (n_out x n_in) of one resized axis, ``y = w @ x`` along
    it, and the output points outside the input (where tf_crop_and_resize extrapolates). Shared
    with the compiler, which reads each row's non-zero taps."""
    ctm = at.get("coordinate_transformation_mode", "half_pixel")
    xo = _coords(ctm, n_in, n_out, s, roi)
    base = np.ceil(xo) - 1
    c = _coeffs(at, xo - base, s)
    k = c.shape[1]
    idx = base.astype(np.int64)[:, None] + np.arange(k) + (1 - k // 2)
    if at.get("exclude_outside", 0):
        c = np.where((idx < 0) | (idx >= n_in), 0.0, c)
        c = c / np.where(c.sum(axis=1, keepdims=True) == 0, 1.0, c.sum(axis=1, keepdims=True))
    w = np.zeros((n_out, n_in))
    np.add.at(w, (np.repeat(np.arange(n_out), k), np.clip(idx, 0, n_in - 1).reshape(-1)), c.ravel())
    outside = (xo < 0) | (xo > n_in - 1) if ctm == "tf_crop_and_resize" else np.zeros(n_out, bool)
    return w, outside


def _resize_axis(x: np.ndarray, axis: int, n_out: int, s: float, roi, at) -> np.ndarray:
    w, outside = resize_matrix(x.shape[axis], n_out, s, roi, at)
    y = np.moveaxis(np.tensordot(w, x, axes=([1], [axis])), 0, axis)
    if outside.any():
        out = outside.reshape((1,) * axis + (n_out,) + (1,) * (x.ndim - axis - 1))
        y = np.where(out, float(at.get("extrapolation_value", 0.0)), y)
    return y


def resize_axes(x_shape, at, roi, scales, sizes) -> list[tuple[int, Dim, float | None, tuple]]:
    """(axis, output dim, scale, roi pair) of every axis Resize changes."""
    plan = _resize_plan(x_shape, at, scales, sizes)
    axes, out = list(plan), []
    for i, a in enumerate(axes):
        n_out, s = plan[a]
        pair = (roi[i], roi[i + len(axes)]) if roi else (0.0, 1.0)
        if s is not None and math.isclose(s, 1.0) and n_out == x_shape[a] and pair == (0.0, 1.0):
            continue
        out.append((a, n_out, s, pair))
    return out


def _resize(args, at):
    x = args[0]
    sizes = _present(arg(args, 3))
    scales = None if sizes is not None else _present(arg(args, 2))
    y = x.astype(np.float64)
    for a, n_out, s, pair in resize_axes(x.shape, at, _present(arg(args, 1)), scales, sizes):
        y = _resize_axis(y, a, int(n_out), s, pair, at)
    if x.dtype.kind in "iu":
        info = np.iinfo(x.dtype)
        y = np.clip(np.round(y), info.min, info.max)
    return [y.astype(x.dtype)]


def _resize_flops(ins, outs, at) -> int:
    k = {"nearest": 0, "linear": 4, "cubic": 16}.get(at.get("mode", "nearest"), 4)
    return k * sum(o.numel() for o in outs)


def _op(name, cat, infer, run, flops=None, ins=(1, 1), *, ctor="", kind=None, **attrs) -> OpDef:
    flops = flops or (lambda i, o, a: 0)
    return OpDef(name, cat, infer, run, flops, attrs=attrs, inputs=ins, ctor=ctor, kind=kind)


_RESIZE = {
    "antialias": 0,
    "axes": None,
    "coordinate_transformation_mode": "half_pixel",
    "cubic_coeff_a": -0.75,
    "exclude_outside": 0,
    "extrapolation_value": 0.0,
    "keep_aspect_ratio_policy": "stretch",
    "mode": "nearest",
    "nearest_mode": "round_prefer_floor",
}

DEFS: tuple[OpDef, ...] = shape_ops.DEFS + (
    _op("Gather", "data", _gather_infer, _gather, ins=(2, 2), axis=0),
    _op("GatherElements", "data", _gather_el_infer, _gather_el, ins=(2, 2), axis=0),
    _op("GatherND", "data", _gathernd_infer, _gathernd, ins=(2, 2), batch_dims=0),
    _op(
        "ScatterND",
        "data",
        _scatternd_infer,
        _scatternd,
        ins=(3, 3),
        kind=Kind.COMPLEX,
        reduction="none",
    ),
    _op("Concat", "data", _concat_infer, _concat, ins=(1, -1), ctor="concat", axis=None),
    _op("Tile", "data", _tile_infer, _tile, ins=(2, 2)),
    _op(
        "Pad",
        "data",
        _pad_infer,
        _pad,
        ins=(1, 4),
        ctor="pad",
        mode="constant",
        pads=None,
        value=None,
    ),
    _op("Trilu", "data", same, _trilu, ins=(1, 2), upper=1),
    _op(
        "CumSum",
        "data",
        same,
        _cumsum,
        per_output_element(1),
        (2, 2),
        kind=Kind.COMPLEX,  # a scan: each output element sums a prefix
        exclusive=0,
        reverse=0,
    ),
    _op("OneHot", "data", _onehot_infer, _onehot, ins=(3, 3), axis=-1),
    _op("DepthToSpace", "data", _d2s_infer, _d2s, blocksize=None, mode="DCR"),
    _op("SpaceToDepth", "data", _s2d_infer, _s2d, blocksize=None, mode="DCR"),
    _op(
        "Resize",
        "data",
        _resize_infer,
        _resize,
        _resize_flops,
        (1, 4),
        kind=Kind.COMPLEX,
        **_RESIZE,
    ),
)
