"""Element-wise ops: binary arithmetic with broadcasting, activations, casts, comparisons.

Semantics follow ONNX opset >= 13 (older models are converted to 13 on import). scipy.special
(erf, expit) is imported when one of those ops is evaluated: importing it took 0.3 s, on every
command that loads the op table, for the few models that fold an Erf or a Sigmoid.
"""

from __future__ import annotations

import numpy as np
import onnx.helper

from eqsat.egraph.ir import TensorType
from eqsat.egraph.opdefs.base import (
    InferCtx,
    Kind,
    OpDef,
    ShapeError,
    broadcast,
    per_output_element,
    same,
    zero_flops,
)


def onnx_dtype(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(int(elem_type))).name


def _special():
    import scipy.special

    return scipy.special


def _bcast(out_dtype: str | None = None):
    def infer(ctx: InferCtx) -> list[TensorType]:
        ts = [ctx.t(i) for i in range(len(ctx.types))]
        return [TensorType(out_dtype or ts[0].dtype, broadcast(*(t.shape for t in ts)))]

    return infer


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    q = np.abs(a) // np.abs(b)
    return (q * np.sign(a) * np.sign(b)).astype(a.dtype)


def _div(args, attrs):
    a, b = args
    if np.issubdtype(a.dtype, np.integer):
        return [_int_div(a, b)]
    return [np.asarray(a / b, dtype=a.dtype)]


def _pow(args, attrs):
    a, b = args
    return [np.asarray(np.power(a, b.astype(a.dtype) if a.dtype.kind == "f" else b), a.dtype)]


def _mod(args, attrs):
    a, b = args
    if attrs.get("fmod", 0):
        return [np.asarray(np.fmod(a, b), a.dtype)]
    return [np.asarray(np.mod(a, b), a.dtype)]


def _binary(name: str, fn, out_dtype: str | None = None, flops: int = 1, ctor: str = "") -> OpDef:
    return OpDef(
        name,
        "elementwise",
        _bcast(out_dtype),
        lambda args, attrs: [np.asarray(fn(args[0], args[1]))],
        per_output_element(flops) if flops else zero_flops,
        inputs=(2, 2),
        ctor=ctor,
    )


def _variadic(name: str, fn) -> OpDef:
    def run(args, attrs):
        out = args[0]
        for a in args[1:]:
            out = fn(out, a)
        return [np.asarray(out)]

    return OpDef(name, "elementwise", _bcast(), run, per_output_element(1), inputs=(1, -1))


def _unary(
    name: str, fn, flops: int = 1, category: str = "activation", attrs=None, ctor: str = ""
) -> OpDef:
    return OpDef(
        name,
        category,
        same,
        lambda args, at: [np.asarray(fn(args[0], at), dtype=args[0].dtype)],
        per_output_element(flops),
        attrs=attrs or {},
        ctor=ctor,
    )


def _gelu(x, at):
    if at.get("approximate", "none") == "tanh":
        c = np.sqrt(2.0 / np.pi).astype(x.dtype)
        return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _special().erf(x / np.sqrt(2.0).astype(x.dtype)))


def _clip_infer(ctx: InferCtx) -> list[TensorType]:
    return [ctx.t(0)]


def _clip(args, attrs):
    x = args[0]
    lo = args[1] if len(args) > 1 and args[1] is not None else None
    hi = args[2] if len(args) > 2 and args[2] is not None else None
    if lo is None and "min" in attrs:
        lo = attrs["min"]
    if hi is None and "max" in attrs:
        hi = attrs["max"]
    out = x
    if lo is not None:
        out = np.maximum(out, np.asarray(lo, x.dtype))
    if hi is not None:
        out = np.minimum(out, np.asarray(hi, x.dtype))
    return [np.asarray(out, x.dtype)]


def _cast_infer(ctx: InferCtx) -> list[TensorType]:
    return [TensorType(onnx_dtype(ctx.a("to")), ctx.t(0).shape)]


def _cast(args, attrs):
    return [np.asarray(args[0]).astype(onnx_dtype(attrs["to"]))]


def _castlike_infer(ctx: InferCtx) -> list[TensorType]:
    return [TensorType(ctx.t(1).dtype, ctx.t(0).shape)]


def _where_infer(ctx: InferCtx) -> list[TensorType]:
    c, a, b = ctx.t(0), ctx.t(1), ctx.t(2)
    if c.dtype != "bool":
        raise ShapeError("Where condition must be bool")
    return [TensorType(a.dtype, broadcast(c.shape, a.shape, b.shape))]


def _dropout_infer(ctx: InferCtx) -> list[TensorType]:
    x = ctx.t(0)
    return [x, TensorType("bool", x.shape)]


def _dropout(args, attrs):
    x = args[0]
    training = len(args) > 2 and args[2] is not None and bool(np.asarray(args[2]))
    ratio = float(args[1]) if len(args) > 1 and args[1] is not None else 0.5
    if training and ratio > 0:
        raise ShapeError("Dropout in training mode is random; only inference mode is supported")
    return [x.copy(), np.ones(x.shape, dtype=bool)]


def _sigmoid(x, at):
    return _special().expit(x)


def _hardsigmoid(x, at):
    return np.clip(at.get("alpha", 0.2) * x + at.get("beta", 0.5), 0, 1)


def _leaky(x, at):
    return np.where(x >= 0, x, x * np.asarray(at.get("alpha", 0.01), x.dtype))


def _elu(x, at):
    return np.where(x > 0, x, at.get("alpha", 1.0) * np.expm1(x))


def _selu(x, at):
    a, g = at.get("alpha", 1.67326319217681884765625), at.get("gamma", 1.05070102214813232421875)
    return g * np.where(x > 0, x, a * np.expm1(x))


def _softplus(x, at):
    return np.logaddexp(np.zeros_like(x), x)


def _hardswish(x, at):
    return x * np.clip(x / 6 + 0.5, 0, 1)


def _is_inf(args, attrs):
    x = args[0]
    pos = np.isposinf(x) if attrs.get("detect_positive", 1) else np.zeros(x.shape, bool)
    neg = np.isneginf(x) if attrs.get("detect_negative", 1) else np.zeros(x.shape, bool)
    return [pos | neg]


def _ident(name: str) -> OpDef:
    return OpDef(
        name, "data", same, lambda args, at: [np.array(args[0], copy=True)], ctor=name.lower()
    )


DEFS: tuple[OpDef, ...] = (
    _binary("Add", np.add, ctor="add"),
    _binary("Sub", np.subtract, ctor="sub"),
    _binary("Mul", np.multiply, ctor="mul"),
    OpDef("Div", "elementwise", _bcast(), _div, per_output_element(1), inputs=(2, 2), ctor="div"),
    OpDef("Pow", "elementwise", _bcast(), _pow, per_output_element(4), inputs=(2, 2), ctor="pow"),
    OpDef("Mod", "elementwise", _bcast(), _mod, per_output_element(1), {"fmod": 0}, (2, 2)),
    _variadic("Max", np.maximum),
    _variadic("Min", np.minimum),
    _variadic("Sum", np.add),
    _binary("Equal", np.equal, "bool"),
    _binary("Less", np.less, "bool"),
    _binary("LessOrEqual", np.less_equal, "bool"),
    _binary("Greater", np.greater, "bool"),
    _binary("GreaterOrEqual", np.greater_equal, "bool"),
    _binary("And", np.logical_and, "bool"),
    _binary("Or", np.logical_or, "bool"),
    _binary("Xor", np.logical_xor, "bool"),
    OpDef("Not", "elementwise", same, lambda a, at: [np.logical_not(a[0])], per_output_element()),
    _unary("Relu", lambda x, at: np.maximum(x, 0), ctor="relu"),
    _unary("LeakyRelu", _leaky, 2, attrs={"alpha": 0.01}),
    _unary("Elu", _elu, 4, attrs={"alpha": 1.0}),
    _unary("Selu", _selu, 5, attrs={"alpha": 1.6732632, "gamma": 1.050701}),
    _unary("Sigmoid", _sigmoid, 4, ctor="sigmoid"),
    _unary("HardSigmoid", _hardsigmoid, 3, attrs={"alpha": 0.2, "beta": 0.5}),
    _unary("HardSwish", _hardswish, 4),
    _unary("Softplus", _softplus, 4),
    _unary("Tanh", lambda x, at: np.tanh(x), 4, ctor="tanh"),
    _unary("Erf", lambda x, at: _special().erf(x), 4, ctor="erf"),
    _unary("Gelu", _gelu, 8, attrs={"approximate": "none"}),
    _unary("Exp", lambda x, at: np.exp(x), 4, "elementwise", ctor="exp"),
    _unary("Log", lambda x, at: np.log(x), 4, "elementwise"),
    _unary("Sqrt", lambda x, at: np.sqrt(x), 4, "elementwise", ctor="sqrt"),
    _unary("Reciprocal", lambda x, at: np.reciprocal(x), 1, "elementwise", ctor="reciprocal"),
    _unary("Neg", lambda x, at: np.negative(x), 1, "elementwise", ctor="neg"),
    _unary("Abs", lambda x, at: np.abs(x), 1, "elementwise"),
    _unary("Floor", lambda x, at: np.floor(x), 1, "elementwise"),
    _unary("Ceil", lambda x, at: np.ceil(x), 1, "elementwise"),
    _unary("Sign", lambda x, at: np.sign(x), 1, "elementwise"),
    _unary("Sin", lambda x, at: np.sin(x), 4, "elementwise"),
    _unary("Cos", lambda x, at: np.cos(x), 4, "elementwise"),
    OpDef("Clip", "activation", _clip_infer, _clip, per_output_element(2), inputs=(1, 3)),
    OpDef("IsNaN", "elementwise", _bcast("bool"), lambda a, at: [np.isnan(a[0])]),
    OpDef(
        "IsInf",
        "elementwise",
        _bcast("bool"),
        _is_inf,
        attrs={"detect_negative": 1, "detect_positive": 1},
    ),
    OpDef("Where", "elementwise", _where_infer, lambda a, at: [np.where(*a)], inputs=(3, 3)),
    OpDef(
        "Cast",
        "data",
        _cast_infer,
        _cast,
        attrs={"to": None, "saturate": 1},
        kind=Kind.ELEMENTWISE,
    ),
    OpDef(
        "CastLike",
        "data",
        _castlike_infer,
        lambda a, at: [np.asarray(a[0]).astype(a[1].dtype)],
        inputs=(2, 2),
        attrs={"saturate": 1},
        kind=Kind.ELEMENTWISE,
    ),
    _ident("Identity"),
    OpDef(
        "Dropout",
        "data",
        _dropout_infer,
        _dropout,
        inputs=(1, 3),
        outputs=(1, 2),
        attrs={"seed": 0},
    ),
)
