"""Neural-network ops: matmuls, convolutions, pools, normalizations, softmax and reductions.

Semantics follow ONNX opset >= 13. Arguments that moved from an attribute to an input across
opsets (Reduce* ``axes``) are accepted in either form, by presence. Reference implementations
keep the input dtype (float16 accumulates in float32); convolutions and pools work on strided
window views (:mod:`eqsat.egraph.opdefs.window`), never on Python loops over output pixels.
Unsupported: BatchNormalization training mode (ShapeError).
"""

from __future__ import annotations

import numpy as np
import onnx.helper

from eqsat.egraph.ir import Dim, TensorType
from eqsat.egraph.opdefs.base import (
    InferCtx,
    Kind,
    OpDef,
    ShapeError,
    broadcast,
    norm_axis,
    opt_input_or_attr,
    per_output_element,
)
from eqsat.egraph.opdefs.window import Window, int_list, sym_add, sym_mul, windows

_S = slice(None)


def _acc(x: np.ndarray) -> np.ndarray:
    """The array to compute on: float16 accumulates in float32."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


def _arg(args: list, i: int):
    return args[i] if len(args) > i else None


def _prod(ds) -> int:
    """Product of dims, symbols counting as 1 (cost estimates)."""
    return int(np.prod([d if isinstance(d, int) else 1 for d in ds], dtype=np.int64))


def _in0_flops(k: int):
    return lambda ins, outs, at: k * ins[0].numel()


def _eq(a: Dim, b: Dim, what: str) -> None:
    if isinstance(a, int) and isinstance(b, int) and a != b:
        raise ShapeError(f"{what}: {a} != {b}")


def _unidir(shape, target, what: str) -> None:
    """Check that ``shape`` broadcasts to ``target`` without changing it."""
    if len(shape) > len(target):
        raise ShapeError(f"{what} {list(shape)} does not broadcast to {list(target)}")
    for d, t in zip(shape[::-1], target[::-1], strict=False):
        if d != 1:
            _eq(d, t, f"{what} {list(shape)} does not broadcast to {list(target)}")


def _bcast_c(a: np.ndarray, nd: int) -> np.ndarray:
    """A per-channel (C,) vector shaped to broadcast over (N, C, *spatial)."""
    return _acc(a).reshape(-1, *[1] * nd)


# ------------------------------------------------------------------------------------- linalg


def matmul_infer(ctx: InferCtx) -> list[TensorType]:
    a, b = ctx.t(0), ctx.t(1)
    if a.rank == 0 or b.rank == 0 or a.dtype != b.dtype:
        raise ShapeError(f"MatMul needs two tensors of rank >= 1 and one dtype, got {a}, {b}")
    sa = a.shape if a.rank > 1 else (1, *a.shape)
    sb = b.shape if b.rank > 1 else (*b.shape, 1)
    _eq(sa[-1], sb[-2], "MatMul inner dims")
    out = broadcast(sa[:-2], sb[:-2]) + sa[-2:-1] * (a.rank > 1) + sb[-1:] * (b.rank > 1)
    return [TensorType(a.dtype, out)]


def matmul(args, at):
    return [np.asarray(np.matmul(_acc(args[0]), _acc(args[1]))).astype(args[0].dtype)]


def matmul_flops(ins, outs, at) -> int:
    return 2 * outs[0].numel() * _prod(ins[0].shape[-1:])


def _gemm_infer(ctx: InferCtx) -> list[TensorType]:
    a, b = ctx.t(0), ctx.t(1)
    if a.rank != 2 or b.rank != 2:
        raise ShapeError("Gemm operands must be 2-D")
    m, k = a.shape[::-1] if ctx.a("transA", 0) else a.shape
    k2, n = b.shape[::-1] if ctx.a("transB", 0) else b.shape
    _eq(k, k2, "Gemm inner dims")
    if ctx.has(2):
        _unidir(ctx.t(2).shape, (m, n), "Gemm C")
    return [TensorType(a.dtype, (m, n))]


def _gemm(args, at):
    a, b, c = _acc(args[0]), _acc(args[1]), _arg(args, 2)
    y = (a.T if at.get("transA", 0) else a) @ (b.T if at.get("transB", 0) else b)
    y = np.asarray(at.get("alpha", 1.0), y.dtype) * y
    if c is not None:
        y = y + np.asarray(at.get("beta", 1.0), y.dtype) * _acc(c)
    return [y.astype(args[0].dtype)]


def _gemm_flops(ins, outs, at) -> int:
    k = ins[0].shape[0 if at.get("transA", 0) else 1]
    return (2 * _prod([k]) + 2) * outs[0].numel()


def _einsum_infer(ctx: InferCtx) -> list[TensorType]:
    ts = [ctx.t(i) for i in range(len(ctx.types))]
    lhs, arrow, rhs = str(ctx.a("equation", "")).replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ts):
        raise ShapeError(f"Einsum equation names {len(terms)} operands, got {len(ts)}")
    if not arrow:  # implicit output: broadcast dims, then letters used once, sorted
        letters = lhs.replace("...", "").replace(",", "")
        once = sorted(c for c in set(letters) if letters.count(c) == 1)
        rhs = ("..." if "..." in lhs else "") + "".join(once)
    dims: dict[str, Dim] = {}
    ell = []
    for term, t in zip(terms, ts, strict=True):
        head, dots, tail = term.partition("...")
        n_ell = t.rank - len(head) - len(tail)
        if n_ell < 0 or (n_ell and not dots):
            raise ShapeError(f"Einsum term {term!r} does not fit rank {t.rank}")
        ell.append(t.shape[len(head) : len(head) + n_ell])
        named = t.shape[: len(head)] + t.shape[len(head) + n_ell :]
        for c, d in zip(head + tail, named, strict=True):
            old = dims.get(c, 1)
            if old == 1 or (isinstance(old, str) and d != 1):
                dims[c] = d
            elif d != 1:
                _eq(old, d, f"Einsum dim {c!r}")
    head, dots, tail = rhs.partition("...")
    mid = list(broadcast(*ell)) if dots else []
    return [TensorType(ts[0].dtype, tuple([dims[c] for c in head] + mid + [dims[c] for c in tail]))]


def _einsum(args, at):
    eq = str(at["equation"]).replace(" ", "")
    return [np.asarray(np.einsum(eq, *[_acc(a) for a in args])).astype(args[0].dtype)]


def _einsum_flops(ins, outs, at) -> int:
    return 2 * max([t.numel() for t in ins if t is not None] + [outs[0].numel()])


# --------------------------------------------------------------------------------------- conv


def _conv_types(ctx: InferCtx, op: str):
    x, w = ctx.t(0), ctx.t(1)
    kernel = ctx.a("kernel_shape") or w.shape[2:]
    if x.rank < 3 or w.rank != x.rank or not all(isinstance(k, int) for k in kernel):
        raise ShapeError(
            f"{op} needs input (N, C, *spatial) and a weight of that rank with a static kernel"
        )
    return x, w, int(ctx.a("group", 1)), kernel


def conv_infer(ctx: InferCtx) -> list[TensorType]:
    x, w, g, kernel = _conv_types(ctx, "Conv")
    _eq(x.shape[1], sym_mul(w.shape[1], g), "Conv input channels vs weight C/group * group")
    if isinstance(w.shape[0], int) and w.shape[0] % g:
        raise ShapeError(f"Conv output channels {w.shape[0]} not divisible by group {g}")
    if ctx.has(2):
        _eq(_prod(ctx.t(2).shape), _prod(w.shape[:1]), "Conv bias size")
    spatial = Window.of(ctx.attrs, kernel).out_shape(x.shape[2:])
    return [TensorType(x.dtype, (x.shape[0], w.shape[0], *spatial))]


def conv(args, at):
    """im2col: a (N, g, Cg*K, P) window copy times the (g, M/g, Cg*K) weight."""
    x, w, b = args[0], args[1], _arg(args, 2)
    g, (n, c), m = int(at.get("group", 1)), x.shape[:2], w.shape[0]
    nd, kernel = x.ndim - 2, w.shape[2:]
    win = Window.of(at, kernel)
    out, pb, pe = win.resolve(x.shape[2:])
    v = windows(_acc(x), win, out, pb, pe, 0).reshape(n, g, c // g, *out, *kernel)
    perm = [0, 1, 2, *range(3 + nd, 3 + 2 * nd), *range(3, 3 + nd)]
    cols = v.transpose(perm).reshape(n, g, -1, _prod(out))
    y = np.matmul(_acc(w).reshape(g, m // g, -1), cols).reshape(n, m, *out)
    return [(y if b is None else y + _bcast_c(b, nd)).astype(x.dtype)]


def conv_flops(ins, outs, at) -> int:
    bias = len(ins) > 2 and ins[2] is not None
    return (2 * _prod(ins[1].shape[1:]) + bias) * outs[0].numel()


def convt_geometry(spatial, kernel, at):
    """(window, output dims, pad begins, pad ends) of ConvTranspose; pads < 0 extend.

    Unpadded, the output is ``s * in + c`` with ``c = output_padding + extent - s``. SAME_* aims
    at ``s * in`` but, like Conv, never pads negatively (as ONNX Runtime does).
    """
    nd = len(kernel)
    win = Window.of({**at, "ceil_mode": 0}, kernel)
    outpad = int_list(at.get("output_padding"), nd, 0, "output_padding")
    oshape = list(at.get("output_shape") or ())[-nd:]
    same = win.auto_pad.startswith("SAME")
    res = []
    for i, d in enumerate(spatial):
        s, c = win.strides[i], outpad[i] + win.extent(i) - win.strides[i]
        if oshape or same:
            want = oshape[i] if oshape else None
            total = (s * d + c - want if isinstance(d, int) else 0) if oshape else max(0, c)
            small, big = total // 2, total - total // 2
            pb, pe = (small, big) if win.auto_pad == "SAME_UPPER" else (big, small)
        else:
            pb, pe = (0, 0) if win.auto_pad == "VALID" else (win.pads[i], win.pads[i + nd])
        want = oshape[i] if oshape else sym_add(sym_mul(d, s), c - pb - pe)
        if isinstance(want, int) and want <= 0:
            raise ShapeError(f"ConvTranspose output size {want} along spatial axis {i}")
        res.append((want, pb, pe))
    return win, *([r[j] for r in res] for j in range(3))


def _convt_infer(ctx: InferCtx) -> list[TensorType]:
    x, w, g, kernel = _conv_types(ctx, "ConvTranspose")
    _eq(x.shape[1], w.shape[0], "ConvTranspose input channels vs weight")
    _, out, _, _ = convt_geometry(x.shape[2:], kernel, ctx.attrs)
    return [TensorType(x.dtype, (x.shape[0], sym_mul(w.shape[1], g), *out))]


def _convt(args, at):
    """col2im: per-pixel (M, *kernel) contributions, scatter-added once per kernel offset."""
    x, w, b = args[0], args[1], _arg(args, 2)
    g, (n, c), nd = int(at.get("group", 1)), x.shape[:2], x.ndim - 2
    kernel, mg, sp = w.shape[2:], w.shape[1], x.shape[2:]
    win, out, pb, _ = convt_geometry(sp, kernel, at)
    wg = _acc(w).reshape(g, c // g, mg * _prod(kernel)).transpose(0, 2, 1)
    cols = np.matmul(wg, _acc(x).reshape(n, g, c // g, -1)).reshape(n, g * mg, *kernel, *sp)
    full = [win.strides[i] * (sp[i] - 1) + win.extent(i) for i in range(nd)]
    y = np.zeros((n, g * mg, *full), cols.dtype)
    for k in np.ndindex(*kernel):
        st = [k[i] * win.dilations[i] for i in range(nd)]
        sl = [slice(st[i], st[i] + full[i] - win.extent(i) + 1, win.strides[i]) for i in range(nd)]
        y[(_S, _S, *sl)] += cols[(_S, _S, *k)]
    # pads crop the full result; negative pads (explicit output_shape) extend it with zeros
    width = [(0, 0)] * 2 + [(max(0, -pb[i]), max(0, out[i] + pb[i] - full[i])) for i in range(nd)]
    y = np.pad(y, width)[
        (_S, _S, *[slice(max(0, p), max(0, p) + o) for p, o in zip(pb, out, strict=True)])
    ]
    return [(y if b is None else y + _bcast_c(b, nd)).astype(x.dtype)]


def _convt_flops(ins, outs, at) -> int:
    return 2 * ins[0].numel() * _prod(ins[1].shape[1:])


# --------------------------------------------------------------------------------------- pools


def _pool_infer(ctx: InferCtx) -> list[TensorType]:
    x, kernel = ctx.t(0), ctx.a("kernel_shape")
    if x.rank < 3 or not kernel:
        raise ShapeError("pooling needs an (N, C, *spatial) input and kernel_shape")
    t = TensorType(x.dtype, (*x.shape[:2], *Window.of(ctx.attrs, kernel).out_shape(x.shape[2:])))
    return [t, TensorType("int64", t.shape)]  # MaxPool's Indices; callers truncate


def _lowest(dtype: np.dtype):
    return False if dtype.kind == "b" else -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _highest(dtype: np.dtype):
    return True if dtype.kind == "b" else np.inf if dtype.kind == "f" else np.iinfo(dtype).max


def _maxpool(args, at):
    x = args[0]
    win = Window.of(at, at["kernel_shape"])
    out, pb, pe = win.resolve(x.shape[2:])
    v, nd = windows(x, win, out, pb, pe, _lowest(x.dtype)), win.nd
    y = v.max(axis=tuple(range(-nd, 0)))
    if at.get("_num_outputs", 1) < 2:
        return [y]
    # Indices: flat positions in the unpadded input, row-major (storage_order 1: column-major
    # over the spatial axes), offset by (n * C + c) * prod(spatial).
    kidx = np.unravel_index(v.reshape(*y.shape, -1).argmax(-1), win.kernel)
    order = range(nd) if at.get("storage_order", 0) else range(nd - 1, -1, -1)
    idx, step = np.zeros(y.shape, np.int64), 1
    for i in order:
        o = np.arange(out[i]).reshape(-1, *[1] * (nd - 1 - i))
        idx += (o * win.strides[i] + kidx[i] * win.dilations[i] - pb[i]) * step
        step *= x.shape[2 + i]
    nc = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * nd)
    return [y, idx + nc * step]


def _avgpool(args, at):
    """Window sums over window counts: real elements, or (count_include_pad) padded ones too."""
    x = args[0]
    win = Window.of(at, at["kernel_shape"])
    out, pb, pe = win.resolve(x.shape[2:])
    axes, zeros = tuple(range(-win.nd, 0)), [0] * win.nd
    total = windows(_acc(x), win, out, pb, pe, 0).sum(axis=axes)
    if at.get("count_include_pad", 0):
        padded = np.ones((1, 1, *[d + b + e for d, b, e in zip(x.shape[2:], pb, pe, strict=True)]))
        count = windows(padded, win, out, zeros, zeros, 0).sum(axis=axes)
    else:
        count = windows(np.ones((1, 1, *x.shape[2:])), win, out, pb, pe, 0).sum(axis=axes)
    return [(total / count.astype(total.dtype)).astype(x.dtype)]


def _pool_flops(ins, outs, at) -> int:
    return outs[0].numel() * _prod(at.get("kernel_shape", ()))


def _global_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    if x.rank < 3:
        raise ShapeError("global pooling needs an (N, C, *spatial) input")
    return [TensorType(x.dtype, (*x.shape[:2], *[1] * (x.rank - 2)))]


def _global(fn):
    def run(args, at):
        x = args[0]
        return [fn(_acc(x), axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)]

    return run


# -------------------------------------------------------------------------------- softmax/norm


def _softmax_infer(ctx: InferCtx) -> list[TensorType]:
    norm_axis(int(ctx.a("axis", -1)), ctx.t(0).rank)
    return [ctx.t(0)]


def _softmax(log: bool):
    def run(args, at):
        x = _acc(args[0])
        axis = norm_axis(int(at.get("axis", -1)), x.ndim)
        z = x - x.max(axis=axis, keepdims=True)
        e = np.exp(z)
        s = e.sum(axis=axis, keepdims=True)
        return [(z - np.log(s) if log else e / s).astype(args[0].dtype)]

    return run


def _stash(at) -> np.dtype:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(at.get("stash_type", 1))))


def _ln_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    axis = norm_axis(int(ctx.a("axis", -1)), x.rank)
    for i in (1, 2):
        if ctx.has(i):
            _unidir(ctx.t(i).shape, x.shape[axis:], f"LayerNormalization input {i}")
    stat = TensorType(_stash(ctx.attrs).name, (*x.shape[:axis], *[1] * (x.rank - axis)))
    return [x, stat, stat]


def _ln(args, at):
    """Statistics in stash_type; normalized values cast back before scale and bias."""
    x, scale, bias = args[0], args[1], _arg(args, 2)
    axes = tuple(range(norm_axis(int(at.get("axis", -1)), x.ndim), x.ndim))
    xs = x.astype(_stash(at))
    mean = xs.mean(axis=axes, keepdims=True)
    d = xs - mean
    inv = 1 / np.sqrt((d * d).mean(axis=axes, keepdims=True) + float(at.get("epsilon", 1e-5)))
    y = (d * inv).astype(x.dtype) * scale
    y = y if bias is None else y + bias
    return [y.astype(x.dtype), mean.astype(xs.dtype), inv.astype(xs.dtype)]


def _chan_infer(n: int, op: str):
    """X (N, C, ...) plus ``n - 1`` per-channel (C,) parameters; output typed like X."""

    def infer(ctx: InferCtx) -> list[TensorType]:
        x = ctx.t(0)
        if op == "BatchNormalization" and (
            ctx.a("training_mode", 0) or ctx.a("_num_outputs", 1) > 1
        ):
            raise ShapeError("BatchNormalization: only inference mode (one output) is supported")
        if x.rank < 2 or any(ctx.t(i).rank != 1 for i in range(1, n)):
            raise ShapeError(f"{op} needs X of rank >= 2 and 1-D per-channel parameters")
        for i in range(1, n):
            _eq(ctx.t(i).shape[0], x.shape[1], f"{op} input {i} size vs channels")
        return [x]

    return infer


def _bn(args, at):
    x, scale, b, mean, var = args[:5]
    if at.get("training_mode", 0):
        raise ShapeError("BatchNormalization training mode is not supported")
    nd = x.ndim - 2
    inv = 1 / np.sqrt(_bcast_c(var, nd) + float(at.get("epsilon", 1e-5)))
    y = (_acc(x) - _bcast_c(mean, nd)) * inv * _bcast_c(scale, nd) + _bcast_c(b, nd)
    return [y.astype(x.dtype)]


def _instnorm(args, at):
    x, scale, b = args[:3]
    nd, xa, axes = x.ndim - 2, _acc(x), tuple(range(2, x.ndim))
    d = xa - xa.mean(axis=axes, keepdims=True)
    var = (d * d).mean(axis=axes, keepdims=True)
    y = d / np.sqrt(var + float(at.get("epsilon", 1e-5))) * _bcast_c(scale, nd)
    return [(y + _bcast_c(b, nd)).astype(x.dtype)]


# ------------------------------------------------------------------------------------- reduce


def _reduce_axes(axes, rank: int, noop: bool) -> tuple[int, ...] | None:
    """Normalized axes; None = identity (empty axes with noop_with_empty_axes)."""
    if axes is None or len(axes) == 0:
        return None if noop else tuple(range(rank))
    return tuple(sorted({norm_axis(int(a), rank) for a in axes}))


def _reduced(t: TensorType, axes, keep, dtype: str | None = None) -> TensorType:
    shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape) if keep or i not in axes)
    return TensorType(dtype or t.dtype, shape)


def _reduce_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    axes = opt_input_or_attr(ctx, 1, "axes", "Reduce axes")
    axes = _reduce_axes(axes, x.rank, bool(ctx.a("noop_with_empty_axes", 0)))
    return [x if axes is None else _reduced(x, axes, ctx.a("keepdims", 1))]


def _reduce(fn):
    def run(args, at):
        x, ax = args[0], _arg(args, 1)
        ax = at.get("axes") if ax is None else np.asarray(ax).reshape(-1)
        axes = _reduce_axes(ax, x.ndim, bool(at.get("noop_with_empty_axes", 0)))
        if axes is None:
            return [x.copy()]
        return [np.asarray(fn(x, axes, bool(at.get("keepdims", 1)))).astype(x.dtype)]

    return run


def _extreme(fn, init_of):
    """max/min whose empty reductions give the dtype's identity (-inf/+inf, False/True)."""

    def go(x, axes, keep):
        empty = any(x.shape[a] == 0 for a in axes)
        return fn(x, axis=axes, keepdims=keep, **({"initial": init_of(x.dtype)} if empty else {}))

    return go


_REDUCERS = {  # name -> (fn(x, axes, keepdims), flops per input element)
    "ReduceMean": (lambda x, a, k: _acc(x).mean(axis=a, keepdims=k), 1),
    "ReduceSum": (lambda x, a, k: _acc(x).sum(axis=a, keepdims=k), 1),
    "ReduceMax": (_extreme(np.max, _lowest), 1),
    "ReduceMin": (_extreme(np.min, _highest), 1),
    "ReduceProd": (lambda x, a, k: _acc(x).prod(axis=a, keepdims=k), 1),
    "ReduceL2": (lambda x, a, k: np.sqrt((_acc(x) ** 2).sum(axis=a, keepdims=k)), 2),
    "ReduceSumSquare": (lambda x, a, k: (_acc(x) ** 2).sum(axis=a, keepdims=k), 2),
}


def _arg_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    axis = norm_axis(int(ctx.a("axis", 0)), x.rank)
    return [_reduced(x, (axis,), ctx.a("keepdims", 1), "int64")]


def _argext(fn):
    def run(args, at):
        x = args[0]
        axis = norm_axis(int(at.get("axis", 0)), x.ndim)
        if at.get("select_last_index", 0):
            idx = x.shape[axis] - 1 - fn(np.flip(x, axis), axis=axis)
        else:
            idx = fn(x, axis=axis)
        idx = np.asarray(idx, np.int64)
        return [np.expand_dims(idx, axis) if at.get("keepdims", 1) else idx]

    return run


def _op(
    name, cat, infer, run, flops, ins=(1, 1), outs=(1, 1), *, ctor="", kind=None, **attrs
) -> OpDef:
    return OpDef(
        name, cat, infer, run, flops, attrs=attrs, inputs=ins, outputs=outs, ctor=ctor, kind=kind
    )


_WIN = {"auto_pad": "NOTSET", "pads": None, "strides": None, "dilations": None}
_CONV = {**_WIN, "group": 1, "kernel_shape": None}
_CONVT = {**_CONV, "output_padding": None, "output_shape": None}
_POOL = {**_WIN, "kernel_shape": None, "ceil_mode": 0}
_GEMM = {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0}
_LN = {"axis": -1, "epsilon": 1e-5, "stash_type": 1}
_BN = {"epsilon": 1e-5, "momentum": 0.9, "training_mode": 0}
_RED = {"keepdims": 1, "noop_with_empty_axes": 0, "axes": None}
_ARG = {"axis": 0, "keepdims": 1, "select_last_index": 0}
_BN_INFER = _chan_infer(5, "BatchNormalization")
_IN_INFER = _chan_infer(3, "InstanceNormalization")

DEFS: tuple[OpDef, ...] = (
    _op("MatMul", "linalg", matmul_infer, matmul, matmul_flops, (2, 2), ctor="matmul"),
    _op("Gemm", "linalg", _gemm_infer, _gemm, _gemm_flops, (2, 3), ctor="gemm", **_GEMM),
    _op("Einsum", "linalg", _einsum_infer, _einsum, _einsum_flops, (1, -1), equation=None),
    _op("Conv", "conv", conv_infer, conv, conv_flops, (2, 3), ctor="conv", **_CONV),
    _op("ConvTranspose", "conv", _convt_infer, _convt, _convt_flops, (2, 3), **_CONVT),
    _op(
        "MaxPool",
        "pool",
        _pool_infer,
        _maxpool,
        _pool_flops,
        outs=(1, 2),
        ctor="max_pool",
        **_POOL,
        storage_order=0,
    ),
    _op(
        "AveragePool",
        "pool",
        _pool_infer,
        _avgpool,
        _pool_flops,
        ctor="average_pool",
        **_POOL,
        count_include_pad=0,
    ),
    _op(
        "GlobalAveragePool",
        "pool",
        _global_infer,
        _global(np.mean),
        _in0_flops(1),
        ctor="global_average_pool",
        kind=Kind.REDUCTION,
    ),
    _op(
        "GlobalMaxPool", "pool", _global_infer, _global(np.max), _in0_flops(1), kind=Kind.REDUCTION
    ),
    _op(
        "Softmax",
        "activation",
        _softmax_infer,
        _softmax(False),
        per_output_element(5),
        ctor="softmax",
        kind=Kind.REDUCTION,
        axis=-1,
    ),
    _op(
        "LogSoftmax",
        "activation",
        _softmax_infer,
        _softmax(True),
        per_output_element(5),
        kind=Kind.REDUCTION,
        axis=-1,
    ),
    _op(
        "LayerNormalization",
        "norm",
        _ln_infer,
        _ln,
        _in0_flops(8),
        (2, 3),
        (1, 3),
        ctor="layer_norm",
        **_LN,
    ),
    # inference-mode BatchNormalization is a per-channel affine map
    _op(
        "BatchNormalization",
        "norm",
        _BN_INFER,
        _bn,
        _in0_flops(2),
        (5, 5),
        (1, 3),
        ctor="batch_norm",
        kind=Kind.ELEMENTWISE,
        **_BN,
    ),
    _op("InstanceNormalization", "norm", _IN_INFER, _instnorm, _in0_flops(8), (3, 3), epsilon=1e-5),
    *(
        _op(n, "reduce", _reduce_infer, _reduce(f), _in0_flops(k), (1, 2), **_RED)
        for n, (f, k) in _REDUCERS.items()
    ),
    _op("ArgMax", "reduce", _arg_infer, _argext(np.argmax), _in0_flops(1), **_ARG),
    _op("ArgMin", "reduce", _arg_infer, _argext(np.argmin), _in0_flops(1), **_ARG),
)
