"""Quantized compute definitions: the lowering facet of :mod:`eqsat.egraph.opdefs.quant`.

Consumes a :class:`~eqsat.lower.compute.Ctx` of QuantizeLinear, DequantizeLinear,
MatMulInteger, QLinearMatMul, ConvInteger or QLinearConv; produces a
:class:`~eqsat.lower.compute.View` (the element-wise two) or a
:class:`~eqsat.lower.compute.Reduction` (the contractions).

The semantics are the op records' numpy references, step for step, so results are bit-equal:

- quantizing is ``saturate(roundeven(float32(x) / float32(scale)) + zero_point)``: the
  division and the rounding (half to even, LLVM's ``llvm.roundeven``) in float32, the zero
  point and the clamp to the output type's range in float64 (exact for every int32), then the
  conversion, which the clamp made exact;
- dequantizing is ``float32(int32(x) - int32(zero_point)) * float32(scale)``;
- scales and zero points are per tensor, per axis (a vector along ``axis``) or blocked
  (``block_size`` consecutive elements share one along ``axis``);
- the integer contractions are MatMul's and Conv's compute definitions
  (:mod:`eqsat.lower.compute_reduce`) run on *shifted views* ``int32(a) - a_zero_point`` (A's
  zero point per row or per tensor, B's per column, a conv weight's per output channel), so
  they accumulate in int32 (wrapping, as the reference), and Conv's padding reads 0 in the
  shifted domain, i.e. the zero point, as the spec wants;
- QLinearMatMul / QLinearConv requantize the int32 accumulator (plus QLinearConv's int32 bias)
  with the float32 multiplier ``(a_scale * b_scale) / y_scale`` (per row / column / output
  channel where the scales are vectors), rounding and saturating as quantizing does.

DynamicQuantizeLinear is three reductions (one kernel per output, as LayerNormalization's
statistics): each runs the min and max stages over the whole input (initialized with 0, which
is ``min(x, 0)`` / ``max(x, 0)``), then stores the scale ``(hi - lo) / 255``, the zero point
``saturate(roundeven(0 - lo / scale))``, or ``y`` quantized with both.

These are plain loop nests; :mod:`eqsat.lower.schedule_int8` puts the 2-D integer matmuls
with a constant B onto the VNNI micro-kernel (``vpdpbusd``, :mod:`eqsat.backends.llvm.vnni`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from eqsat.egraph.ir import TensorType
from eqsat.egraph.opdefs.base import norm_axis
from eqsat.lower.compute_base import Compute, Ctx, Reduction, Stage, Unsupported, View
from eqsat.lower.compute_ew import k
from eqsat.lower.compute_reduce import conv, matmul
from eqsat.lower.indexing import dim
from eqsat.lower.loops import (
    INDEX,
    BinaryOp,
    BinOp,
    Cast,
    Const,
    Expr,
    ReduceOp,
    call,
    maximum,
    minimum,
)

I32, F32, F64 = "int32", "float32", "float64"


def numel(shape) -> int:
    """Elements of a static shape (a symbolic dim counts as more than one)."""
    return int(np.prod([d if isinstance(d, int) else 2 for d in shape]))


def _as(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(dtype, e)


def _scalar_or(p: View, idx: tuple, what: str) -> Expr:
    """``p`` (a per-tensor parameter: rank 0, or one element) at its one element."""
    if p.type.rank == 0:
        return p.at(())
    if numel(p.shape) == 1:
        return p.at((Const(0, INDEX),) * p.type.rank)
    raise Unsupported(what)


def _param(p: View | None, idx, axis: int, block: int, dtype: str, what: str) -> Expr:
    """Scale or zero point ``p`` at the element ``idx`` of the operand (0 when omitted)."""
    if p is None:
        return k(0, dtype)
    if p.type.rank == 0 or (numel(p.shape) == 1 and not block):
        return _as(_scalar_or(p, idx, what), dtype)
    axis = norm_axis(axis, len(idx))
    if block:
        pi = list(idx)
        pi[axis] = BinOp(BinaryOp.FLOORDIV, idx[axis], Const(block, INDEX))
        return _as(p.at(tuple(pi)), dtype)
    if p.type.rank != 1:
        raise Unsupported(f"{what}: a per-axis parameter must be a vector")
    return _as(p.at((idx[axis],)), dtype)


def saturate_round(v: Expr, dtype: str, zero_point: Expr | None = None) -> Expr:
    """``dtype(clamp(roundeven(v) + zero_point))``: ``v`` float32, the rest in float64."""
    r = _as(call("roundeven", v), F64)
    if zero_point is not None:
        r = r + _as(zero_point, F64)
    info = np.iinfo(dtype)
    return Cast(dtype, minimum(maximum(r, k(info.min, F64)), k(info.max, F64)))


def _axis_block(ctx: Ctx, rank: int) -> tuple[int, int]:
    """The raw ``axis`` (normalized where a per-axis parameter uses it) and ``block_size``."""
    return int(ctx.a("axis", 1)), int(ctx.a("block_size", 0) or 0)


def _opt(ctx: Ctx, i: int) -> View | None:
    return ctx.ins[i] if ctx.has(i) else None


def _quantize(ctx: Ctx) -> list[View]:
    x, s, z, out = ctx.x(0), ctx.x(1), _opt(ctx, 2), ctx.out
    axis, block = _axis_block(ctx, x.type.rank)

    def at(idx):
        q = _as(x.at(idx), F32) / _param(s, idx, axis, block, F32, "QuantizeLinear scale")
        zp = None if z is None else _param(z, idx, axis, block, F64, "QuantizeLinear zero point")
        return saturate_round(q, out.dtype, zp)

    return [View(out, at)]


def _dequantize(ctx: Ctx) -> list[View]:
    x, s, z, out = ctx.x(0), ctx.x(1), _opt(ctx, 2), ctx.out
    axis, block = _axis_block(ctx, x.type.rank)

    def at(idx):
        d = _as(x.at(idx), I32) - _param(z, idx, axis, block, I32, "DequantizeLinear zero point")
        y = _as(d, F32) * _param(s, idx, axis, block, F32, "DequantizeLinear scale")
        return _as(y, out.dtype)

    return [View(out, at)]


def _dynamic(ctx: Ctx) -> list[Reduction]:
    x = ctx.x(0)
    rank = x.type.rank
    extents = tuple(dim(d) for d in x.shape)
    read = lambda row, rs, vals: _as(x.at(tuple(rs)), F32)  # noqa: E731
    stages = tuple(Stage(n, op, F32, tuple(f"{n}{a}" for a in range(rank)), extents, read,
                         init=0.0) for n, op in (("lo", ReduceOp.MIN), ("hi", ReduceOp.MAX)))

    def scale(v):
        return BinOp(BinaryOp.DIV, v["hi"] - v["lo"], k(255.0, F32))

    def zero_point(v):
        return saturate_round(k(0.0, F32) - BinOp(BinaryOp.DIV, v["lo"], scale(v)), "uint8")

    def y(idx, v):
        q = BinOp(BinaryOp.DIV, _as(x.at(idx), F32), scale(v))
        return saturate_round(q, "uint8", zero_point(v))

    finals = (y, lambda idx, v: scale(v), lambda idx, v: zero_point(v))
    named = [p for p, o in enumerate(ctx.node.outputs[:3]) if o]  # out_types are the named
    return [Reduction(t, (), stages, finals[p]) for p, t in zip(named, ctx.out_types, strict=True)]


# ------------------------------------------------------------------------------ contractions


def _shifted(x: View, z: View | None, zero_at) -> View:
    """``int32(x) - z`` as a view; ``zero_at(idx)`` is z's element for x's element ``idx``."""
    if z is None:
        return View(TensorType(I32, x.shape), lambda idx: _as(x.at(idx), I32))
    return View(TensorType(I32, x.shape), lambda idx: _as(x.at(idx), I32) - zero_at(idx))


def _vector_or_scalar(p: View | None, pos: int, what: str, dtype: str = I32):
    """A function ``idx -> p`` where p is per tensor, or a vector indexed by ``idx[pos]``."""
    if p is None:
        return lambda idx: k(0, dtype)
    if p.type.rank == 0 or numel(p.shape) == 1:
        return lambda idx: _as(_scalar_or(p, idx, what), dtype)
    if p.type.rank != 1:
        raise Unsupported(f"{what} must be a scalar or a vector")
    return lambda idx: _as(p.at((idx[pos],)), dtype)


def _int_matmul(ctx: Ctx, a: int, za: int, b: int, zb: int) -> Reduction:
    av, bv = ctx.x(a), ctx.x(b)
    a_zero = _vector_or_scalar(_opt(ctx, za), -2, "MatMul A zero point")  # per row of A
    b_zero = _vector_or_scalar(_opt(ctx, zb), -1, "MatMul B zero point")  # per column of B
    if av.type.rank < 2 and ctx.has(za) and numel(av.shape) > 1 and numel(ctx.x(za).shape) > 1:
        raise Unsupported("a per-row zero point of a vector A")
    ins = [_shifted(av, _opt(ctx, za), a_zero), _shifted(bv, _opt(ctx, zb), b_zero)]
    acc_out = TensorType(I32, ctx.out.shape)
    sub = replace(ctx, ins=ins, in_types=[x.type for x in ins], out_types=[acc_out])
    return matmul(sub)


def _int_conv(ctx: Ctx, x: int, zx: int, w: int, zw: int) -> Reduction:
    xv, wv = ctx.x(x), ctx.x(w)
    zxv = _opt(ctx, zx)
    x_zero = (lambda idx: _as(_scalar_or(zxv, idx, "ConvInteger x zero point"), I32)) \
        if zxv is not None else None
    w_zero = _vector_or_scalar(_opt(ctx, zw), 0, "Conv weight zero point")  # per out channel
    ins = [_shifted(xv, zxv, x_zero), _shifted(wv, _opt(ctx, zw), w_zero)]
    acc_out = TensorType(I32, ctx.out.shape)
    sub = replace(ctx, ins=ins, in_types=[v.type for v in ins], out_types=[acc_out])
    return conv(sub)


def _matmul_integer(ctx: Ctx) -> Reduction:
    return _int_matmul(ctx, 0, 2, 1, 3)


def _conv_integer(ctx: Ctx) -> Reduction:
    return _int_conv(ctx, 0, 2, 1, 3)


def _requantized(ctx: Ctx, red: Reduction, a_scale, b_scale, bias=None) -> Reduction:
    """``red`` (int32) requantized to ``ctx.out``: scales are ``idx -> float32`` functions."""
    y_s = _vector_or_scalar(ctx.x(6), 0, "y_scale", F32)
    y_z = _opt(ctx, 7)
    y_zero = None if y_z is None else _vector_or_scalar(y_z, 0, "y_zero_point", F64)
    out = ctx.out

    def final(idx, v):
        acc = v["acc"] if bias is None else v["acc"] + bias(idx)
        mult = BinOp(BinaryOp.DIV, a_scale(idx) * b_scale(idx), y_s(idx))
        return saturate_round(_as(acc, F32) * mult, out.dtype,
                              None if y_zero is None else y_zero(idx))

    return Reduction(out, red.rows, red.stages, final)


def _qlinear_matmul(ctx: Ctx) -> Reduction:
    red = _int_matmul(ctx, 0, 2, 3, 5)
    a_s = _vector_or_scalar(ctx.x(1), -2, "a_scale", F32)
    b_s = _vector_or_scalar(ctx.x(4), -1, "b_scale", F32)
    return _requantized(ctx, red, a_s, b_s)


def _qlinear_conv(ctx: Ctx) -> Reduction:
    red = _int_conv(ctx, 0, 2, 3, 5)
    x_s = _vector_or_scalar(ctx.x(1), 1, "x_scale", F32)
    w_s = _vector_or_scalar(ctx.x(4), 1, "w_scale", F32)  # per output channel (axis 1 of y)
    bias = _vector_or_scalar(_opt(ctx, 8), 1, "bias") if ctx.has(8) else None
    return _requantized(ctx, red, x_s, w_s, bias)


TABLE: dict[str, Compute] = {
    "QuantizeLinear": Compute("element-wise (quantize)", _quantize),
    "DequantizeLinear": Compute("element-wise (dequantize)", _dequantize),
    "DynamicQuantizeLinear": Compute("reduction (dynamic quantize)", _dynamic, outputs=3),
    "MatMulInteger": Compute("gemm (int8)", _matmul_integer),
    "QLinearMatMul": Compute("gemm (int8, requantized)", _qlinear_matmul),
    "ConvInteger": Compute("conv (int8)", _conv_integer),
    "QLinearConv": Compute("conv (int8, requantized)", _qlinear_conv),
}
