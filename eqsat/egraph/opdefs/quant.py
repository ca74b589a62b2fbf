"""Quantized ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv (ONNX opset >= 13; the per-axis and blocked scales of
later opsets included).

The reference semantics are ONNX's: quantizing rounds half to even and saturates to the output
type's range, zero points are subtracted in int32, integer contractions accumulate in int32
(wrapping on overflow, which the spec leaves to the producer to avoid), and the QLinear ops
requantize their int32 accumulator with the float32 multiplier ``a_scale * b_scale / y_scale``
(per output channel where the weight's scale is). The contractions' shape rules and loops are
MatMul's and Conv's (:mod:`eqsat.egraph.opdefs.nn`), run on the zero-point-shifted integers,
so padding with 0 there is padding with the zero point here. float8 and 4-bit types are not
supported (numpy has none): such a model imports with these nodes opaque.

No rule rewrites these ops (so none needs Z3 semantics for them); the compiler lowers them
(:mod:`eqsat.lower.compute_quant`, the same semantics as loop nests). What the e-graph
optimizes is the float graph around them, and constant folding quantizes a
float weight ahead of time (QuantizeLinear) but never dequantizes one (``foldable=False``: see
:class:`~eqsat.egraph.opdefs.base.OpDef`).
"""

from __future__ import annotations

import numpy as np

from eqsat.egraph.ir import TensorType
from eqsat.egraph.opdefs.base import (
    InferCtx,
    Kind,
    OpDef,
    ShapeError,
    norm_axis,
    per_output_element,
)
from eqsat.egraph.opdefs.elementwise import onnx_dtype
from eqsat.egraph.opdefs.nn import conv, conv_flops, conv_infer, matmul_flops, matmul_infer

_QTYPES = ("uint8", "int8", "uint16", "int16", "int32")


def _check_q(dtype: str, what: str) -> None:
    if dtype not in _QTYPES:
        raise ShapeError(f"{what}: unsupported quantized type {dtype}")


def _param(p: np.ndarray, x: np.ndarray, axis: int, block: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast against ``x``: per tensor (one value), per
    axis (a vector along ``axis``) or blocked (``block`` consecutive elements share one)."""
    p = np.asarray(p)
    if p.ndim == 0 or (p.size == 1 and not block):
        return p.reshape(())
    axis = norm_axis(axis, x.ndim)
    if block:
        return np.repeat(p, block, axis=axis).take(range(x.shape[axis]), axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    return p.reshape(shape)


def _saturate(v: np.ndarray, dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    return np.clip(v, info.min, info.max).astype(dtype)


def _zp(args, i: int, like: np.ndarray) -> np.ndarray:
    """Zero point ``i`` as int32 (0 when omitted)."""
    z = args[i] if len(args) > i and args[i] is not None else np.zeros((), like.dtype)
    return np.asarray(z).astype(np.int32)


# --------------------------------------------------------------------- quantize, dequantize


def _q_dtype(ctx: InferCtx) -> str:
    if ctx.has(2):
        return ctx.t(2).dtype
    to = ctx.a("output_dtype", 0)
    return onnx_dtype(to) if to else "uint8"


def _quantize_infer(ctx: InferCtx) -> list[TensorType]:
    dtype = _q_dtype(ctx)
    _check_q(dtype, "QuantizeLinear")
    return [TensorType(dtype, ctx.t(0).shape)]


def _quantize(args, at):
    x, scale = args[0], args[1]
    dtype = args[2].dtype.name if len(args) > 2 and args[2] is not None else None
    if dtype is None:
        to = at.get("output_dtype", 0)
        dtype = onnx_dtype(to) if to else "uint8"
    axis, block = int(at.get("axis", 1)), int(at.get("block_size", 0) or 0)
    s = _param(scale, x, axis, block).astype(np.float32)
    z = _param(_zp(args, 2, np.zeros((), dtype)), x, axis, block)
    q = np.rint(x.astype(np.float32) / s).astype(np.float64) + z
    return [_saturate(q, dtype)]


def _dequantize_infer(ctx: InferCtx) -> list[TensorType]:
    _check_q(ctx.t(0).dtype, "DequantizeLinear")
    to = ctx.a("output_dtype", 0)
    return [TensorType(onnx_dtype(to) if to else ctx.t(1).dtype, ctx.t(0).shape)]


def _dequantize(args, at):
    x, scale = args[0], args[1]
    axis, block = int(at.get("axis", 1)), int(at.get("block_size", 0) or 0)
    to = at.get("output_dtype", 0)
    out = onnx_dtype(to) if to else scale.dtype.name
    z = _param(_zp(args, 2, x), x, axis, block)
    s = _param(scale, x, axis, block).astype(np.float32)
    return [((x.astype(np.int32) - z).astype(np.float32) * s).astype(out)]


def _dynamic_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    if x.dtype != "float32":
        raise ShapeError(f"DynamicQuantizeLinear takes float32, got {x.dtype}")
    return [
        TensorType("uint8", x.shape),
        TensorType("float32", ()),
        TensorType("uint8", ()),
    ]


def _dynamic(args, at):
    """uint8 with the scale and zero point that map [min(x, 0), max(x, 0)] onto [0, 255]."""
    x = args[0].astype(np.float32)
    lo = np.minimum(np.float32(0), x.min(initial=np.float32(0)))
    hi = np.maximum(np.float32(0), x.max(initial=np.float32(0)))
    scale = np.float32((hi - lo) / np.float32(255))
    with np.errstate(divide="ignore", invalid="ignore"):
        zp = _saturate(np.rint(np.float32(0) - lo / scale), "uint8")
        y = _saturate(np.rint(x / scale) + zp.astype(np.float64), "uint8")
    return [y, np.asarray(scale, np.float32), np.asarray(zp)]


# ------------------------------------------------------------------------- contractions


def _as(ctx: InferCtx, idx: tuple[int | None, ...], dtype: str) -> InferCtx:
    """The context a float contraction's shape rule sees: inputs ``idx`` of this op, retyped."""
    types = [
        TensorType(dtype, ctx.t(i).shape) if i is not None and ctx.has(i) else None for i in idx
    ]
    consts = [ctx.consts[i] if i is not None and i < len(ctx.consts) else None for i in idx]
    return InferCtx(types, consts, ctx.attrs, ctx.opset)


def _matmul_integer_infer(ctx: InferCtx) -> list[TensorType]:
    for i in (0, 1):
        _check_q(ctx.t(i).dtype, "MatMulInteger")
    return [TensorType("int32", matmul_infer(_as(ctx, (0, 1), "int32"))[0].shape)]


def _shift_a(a: np.ndarray, z: np.ndarray) -> np.ndarray:
    """A - a_zero_point, with a per-row zero point (one per row of A's last two dims)."""
    a = a.astype(np.int32)
    return a - (z.reshape(-1, 1) if z.ndim == 1 and z.size > 1 else z.reshape(()))


def _matmul_integer(args, at):
    a = _shift_a(args[0], _zp(args, 2, args[0]))
    b = args[1].astype(np.int32) - _zp(args, 3, args[1])  # per column: broadcasts on the last
    return [np.matmul(a, b).astype(np.int32)]


def _conv_integer_infer(ctx: InferCtx) -> list[TensorType]:
    for i in (0, 1):
        _check_q(ctx.t(i).dtype, "ConvInteger")
    return [TensorType("int32", conv_infer(_as(ctx, (0, 1), "int32"))[0].shape)]


def _per_channel(z: np.ndarray, w: np.ndarray) -> np.ndarray:
    """A weight's zero point (or scale) per output channel, broadcast over (M, C, *kernel)."""
    return z.reshape(-1, *[1] * (w.ndim - 1)) if z.ndim == 1 and z.size > 1 else z.reshape(())


def _conv_integer(args, at):
    x = args[0].astype(np.int32) - _zp(args, 2, args[0]).reshape(())
    w = args[1].astype(np.int32) - _per_channel(_zp(args, 3, args[1]), args[1])
    return [conv([x, w], at)[0].astype(np.int32)]


def _qlinear_out(ctx: InferCtx, zp: int, what: str) -> str:
    dtype = ctx.t(zp).dtype if ctx.has(zp) else ctx.t(0).dtype
    _check_q(dtype, what)
    return dtype


def _requantize(acc: np.ndarray, multiplier: np.ndarray, zp: np.ndarray, dtype: str):
    y = np.rint(acc.astype(np.float32) * multiplier.astype(np.float32)).astype(np.float64)
    return _saturate(y + zp.astype(np.float64), dtype)


def _qlinear_matmul_infer(ctx: InferCtx) -> list[TensorType]:
    dtype = _qlinear_out(ctx, 7, "QLinearMatMul")
    return [TensorType(dtype, matmul_infer(_as(ctx, (0, 3), "int32"))[0].shape)]


def _qlinear_matmul(args, at):
    a, a_s, a_z, b, b_s, b_z, y_s, y_z = args[:8]
    acc = _matmul_integer([a, b, a_z, b_z], {})[0]
    a_s = np.asarray(a_s, np.float32)
    b_s = np.asarray(b_s, np.float32)
    mult = (a_s.reshape(-1, 1) if a_s.size > 1 else a_s.reshape(())) * b_s.reshape(
        -1 if b_s.size > 1 else ()
    )
    mult = mult / np.asarray(y_s, np.float32).reshape(())
    dtype = y_z.dtype.name if y_z is not None else a.dtype.name
    return [_requantize(acc, mult, np.asarray(0 if y_z is None else y_z).reshape(()), dtype)]


def _qlinear_conv_infer(ctx: InferCtx) -> list[TensorType]:
    dtype = _qlinear_out(ctx, 7, "QLinearConv")
    return [TensorType(dtype, conv_infer(_as(ctx, (0, 3), "int32"))[0].shape)]


def _qlinear_conv(args, at):
    x, x_s, x_z, w, w_s, w_z, y_s, y_z = (list(args) + [None] * 9)[:8]
    b = args[8] if len(args) > 8 else None
    acc = _conv_integer([x, w, x_z, w_z], at)[0]
    if b is not None:
        acc = acc + b.astype(np.int32).reshape(-1, *[1] * (acc.ndim - 2))
    w_s = np.asarray(w_s, np.float32)
    nd = acc.ndim - 2
    per = w_s.reshape(-1, *[1] * nd) if w_s.size > 1 else w_s.reshape(())
    mult = np.asarray(x_s, np.float32).reshape(()) * per / np.asarray(y_s, np.float32).reshape(())
    dtype = y_z.dtype.name if y_z is not None else x.dtype.name
    return [_requantize(acc, mult, np.asarray(0 if y_z is None else y_z).reshape(()), dtype)]


def _sub(idx: tuple[int | None, ...], flops):
    """A float contraction's FLOP count on inputs ``idx`` of this op."""
    return lambda ins, outs, at: flops(
        [ins[i] if i is not None and i < len(ins) else None for i in idx], outs, at
    )


_WIN = {"auto_pad": "NOTSET", "pads": None, "strides": None, "dilations": None}
_CONV = {**_WIN, "group": 1, "kernel_shape": None}
_Q = {"axis": 1, "saturate": 1, "block_size": 0, "output_dtype": 0}

DEFS: tuple[OpDef, ...] = (
    OpDef(
        "QuantizeLinear", "elementwise", _quantize_infer, _quantize, per_output_element(3),
        attrs=_Q, inputs=(2, 3),
    ),
    OpDef(
        "DequantizeLinear", "elementwise", _dequantize_infer, _dequantize,
        per_output_element(2),
        attrs={"axis": 1, "block_size": 0, "output_dtype": 0}, inputs=(2, 3), foldable=False,
    ),
    OpDef(
        "DynamicQuantizeLinear", "reduce", _dynamic_infer, _dynamic,
        lambda ins, outs, at: 5 * ins[0].numel(), outputs=(3, 3), kind=Kind.REDUCTION,
    ),
    OpDef(
        "MatMulInteger", "linalg", _matmul_integer_infer, _matmul_integer,
        _sub((0, 1), matmul_flops), inputs=(2, 4),
    ),
    OpDef(
        "ConvInteger", "conv", _conv_integer_infer, _conv_integer, _sub((0, 1), conv_flops),
        attrs=_CONV, inputs=(2, 4),
    ),
    OpDef(
        "QLinearMatMul", "linalg", _qlinear_matmul_infer, _qlinear_matmul,
        _sub((0, 3), matmul_flops), inputs=(8, 8),
    ),
    OpDef(
        "QLinearConv", "conv", _qlinear_conv_infer, _qlinear_conv, _sub((0, 3, 8), conv_flops),
        attrs=_CONV, inputs=(8, 9),
    ),
)  # fmt: skip
