"""Element-wise compute definitions: one scalar function per op, one shared builder.

Consumes a :class:`~eqsat.lower.compute.Ctx` of an ELEMENTWISE op; produces its output
:class:`~eqsat.lower.compute.View`. :data:`SCALAR` maps each op to a function of the input
*elements* (already loaded at the broadcast index) to the output element, so adding an op is one
row; :func:`_elementwise` does the broadcasting for all of them (an input dim of 1 facing a
larger output dim is read at index 0). The formulas follow the op table's numpy references
(``eqsat.egraph.opdefs.elementwise``), e.g. integer Div truncates, Softplus is written in its
overflow-free form, and Pow by a constant 2 or 0.5 becomes a multiply or a square root.

BatchNormalization (inference) is element-wise over channel-aligned parameters, not numpy
broadcasting, so it has its own builder; with constant parameters its scale and shift are
folded into two packed per-channel weights at compile time (``y = x * a[c] + b[c]``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from eqsat.lower.compute_base import Compute, Ctx, Unsupported, View
from eqsat.lower.indexing import broadcast_index
from eqsat.lower.loops import (
    BinaryOp,
    BinOp,
    Cast,
    Cmp,
    CmpOp,
    Const,
    Expr,
    Select,
    call,
    is_float,
    maximum,
    minimum,
)

Scalar = Callable[[list, Ctx], Expr]


def k(value, dtype: str) -> Const:
    """A constant of ``dtype`` (Python float for floats, int for ints)."""
    if dtype == "bool":
        return Const(bool(value), dtype)
    return Const(float(value) if is_float(dtype) else int(value), dtype)


def _unary(name: str) -> Scalar:
    return lambda a, c: call(name, a[0])


def _bin(op: BinaryOp) -> Scalar:
    return lambda a, c: BinOp(op, a[0], a[1])


def _cmp(op: CmpOp) -> Scalar:
    return lambda a, c: Cmp(op, a[0], a[1])


def _fold(op: BinaryOp) -> Scalar:
    def fn(a, c):
        out = a[0]
        for x in a[1:]:
            out = BinOp(op, out, x)
        return out

    return fn


def _div(a, c) -> Expr:
    x, y = a
    if is_float(x.dtype):
        return x / y
    q, r = BinOp(BinaryOp.FLOORDIV, x, y), BinOp(BinaryOp.MOD, x, y)
    zero = k(0, x.dtype)
    fix = BinOp(BinaryOp.AND, Cmp(CmpOp.NE, r, zero), Cmp(CmpOp.NE, x < zero, y < zero))
    return Select(fix, q + k(1, x.dtype), q)  # truncation toward zero, as C and ONNX


def _pow(a, c) -> Expr:
    x, y = a
    if isinstance(y, Const) and is_float(x.dtype):
        if y.value == 2:
            return x * x
        if y.value == 1:
            return x
        if y.value == 0.5:
            return call("sqrt", x)
    if not is_float(x.dtype):
        if not is_float(y.dtype):  # numpy wraps on overflow; a float pow would not
            raise Unsupported("Pow of integers")
        # numpy promotes an integer base and a float exponent to float64, then casts back
        f = Cast("float64", x)
        return Cast(x.dtype, call("pow", f, y if y.dtype == "float64" else Cast("float64", y)))
    if y.dtype != x.dtype:
        y = Cast(x.dtype, y)
    return call("pow", x, y)


def _mod(a, c) -> Expr:
    x, y = a
    if not c.a("fmod", 0):
        return BinOp(BinaryOp.MOD, x, y)
    if is_float(x.dtype):  # C fmod: the dividend's sign on the floor modulo of magnitudes
        m = BinOp(BinaryOp.MOD, call("abs", x), call("abs", y))  # exact: both are >= 0
        return Select(x < k(0, x.dtype), call("neg", m), m)
    r, zero = BinOp(BinaryOp.MOD, x, y), k(0, x.dtype)
    fix = BinOp(BinaryOp.AND, Cmp(CmpOp.NE, r, zero), Cmp(CmpOp.NE, x < zero, y < zero))
    return Select(fix, r - y, r)  # C remainder: the dividend's sign


def _sign(a, c) -> Expr:
    x = a[0]
    t = x.dtype
    return Select(x > k(0, t), k(1, t), Select(x < k(0, t), k(-1, t), k(0, t)))


def _clip(a, c) -> Expr:
    x, t = a[0], a[0].dtype
    lo = a[1] if len(a) > 1 and a[1] is not None else c.a("min")
    hi = a[2] if len(a) > 2 and a[2] is not None else c.a("max")
    if lo is not None:
        x = maximum(x, lo if isinstance(lo, Expr) else k(lo, t))
    if hi is not None:
        x = minimum(x, hi if isinstance(hi, Expr) else k(hi, t))
    return x


def _expm1(x: Expr) -> Expr:
    return call("exp", x) - k(1, x.dtype)


def _gelu(a, c) -> Expr:
    x, t = a[0], a[0].dtype
    if c.a("approximate", "none") == "tanh":
        inner = k(np.sqrt(2.0 / np.pi), t) * (x + k(0.044715, t) * (x * x * x))
        return k(0.5, t) * x * (k(1, t) + call("tanh", inner))
    return k(0.5, t) * x * (k(1, t) + call("erf", x / k(np.sqrt(2.0), t)))


def _softplus(a, c) -> Expr:
    x, t = a[0], a[0].dtype  # log(1 + e^x) = max(x, 0) + log(1 + e^-|x|): no overflow
    return maximum(x, k(0, t)) + call("log", k(1, t) + call("exp", call("neg", call("abs", x))))


def _cast(a, c) -> Expr:
    return Cast(c.out.dtype, a[0])


def _is_inf(a, c) -> Expr:
    x, t = a[0], a[0].dtype  # the infinities compare equal to themselves, NaN to nothing
    tests = [
        Cmp(CmpOp.EQ, x, k(s * np.inf, t))
        for s, attr in ((1, "detect_positive"), (-1, "detect_negative"))
        if c.a(attr, 1)
    ]
    if not tests:
        return Const(False, "bool")
    return tests[0] if len(tests) == 1 else BinOp(BinaryOp.OR, tests[0], tests[1])


def _neg(a, c) -> Expr:
    return call("neg", a[0])


SCALAR: dict[str, Scalar] = {
    "Abs": _unary("abs"),
    "Add": _bin(BinaryOp.ADD),
    "And": _bin(BinaryOp.AND),
    "Cast": _cast,
    "CastLike": lambda a, c: Cast(c.out.dtype, a[0]),
    "Ceil": _unary("ceil"),
    "Clip": _clip,
    "Cos": _unary("cos"),
    "Div": _div,
    "Elu": lambda a, c: Select(
        a[0] > k(0, a[0].dtype), a[0], k(c.a("alpha", 1.0), a[0].dtype) * _expm1(a[0])
    ),
    "Equal": _cmp(CmpOp.EQ),
    "Erf": _unary("erf"),
    "Exp": _unary("exp"),
    "Floor": _unary("floor"),
    "Gelu": _gelu,
    "Greater": _cmp(CmpOp.GT),
    "GreaterOrEqual": _cmp(CmpOp.GE),
    "HardSigmoid": lambda a, c: minimum(
        maximum(
            k(c.a("alpha", 0.2), a[0].dtype) * a[0] + k(c.a("beta", 0.5), a[0].dtype),
            k(0, a[0].dtype),
        ),
        k(1, a[0].dtype),
    ),
    "HardSwish": lambda a, c: (
        a[0]
        * minimum(
            maximum(a[0] / k(6, a[0].dtype) + k(0.5, a[0].dtype), k(0, a[0].dtype)),
            k(1, a[0].dtype),
        )
    ),
    "IsInf": _is_inf,
    "IsNaN": lambda a, c: Cmp(CmpOp.NE, a[0], a[0]),  # unordered: true for NaN only
    "LeakyRelu": lambda a, c: Select(
        a[0] >= k(0, a[0].dtype), a[0], a[0] * k(c.a("alpha", 0.01), a[0].dtype)
    ),
    "Less": _cmp(CmpOp.LT),
    "LessOrEqual": _cmp(CmpOp.LE),
    "Log": _unary("log"),
    "Max": _fold(BinaryOp.MAX),
    "Min": _fold(BinaryOp.MIN),
    "Mod": _mod,
    "Mul": _bin(BinaryOp.MUL),
    "Neg": _neg,
    "Not": _unary("not"),
    "Or": _bin(BinaryOp.OR),
    "Pow": _pow,
    "Reciprocal": lambda a, c: k(1, a[0].dtype) / a[0],
    "Relu": lambda a, c: maximum(a[0], k(0, a[0].dtype)),
    "Selu": lambda a, c: (
        k(c.a("gamma", 1.05070102214813232421875), a[0].dtype)
        * Select(
            a[0] > k(0, a[0].dtype),
            a[0],
            k(c.a("alpha", 1.67326319217681884765625), a[0].dtype) * _expm1(a[0]),
        )
    ),
    "Sigmoid": _unary("sigmoid"),
    "Sign": _sign,
    "Sin": _unary("sin"),
    "Softplus": _softplus,
    "Sqrt": _unary("sqrt"),
    "Sub": _bin(BinaryOp.SUB),
    "Sum": _fold(BinaryOp.ADD),
    "Tanh": _unary("tanh"),
    "Where": lambda a, c: Select(a[0], a[1], a[2]),
    "Xor": _cmp(CmpOp.NE),
}


def _elementwise(fn: Scalar):
    def build(ctx: Ctx) -> list[View]:
        out = ctx.out
        views = [ctx.ins[i] if i < len(ctx.ins) else None for i in range(len(ctx.in_types))]

        def at(idx):
            args = [
                None if v is None else v.at(broadcast_index(idx, v.shape, out.shape)) for v in views
            ]
            return fn(args, ctx)

        return [View(out, at)]

    return build


def _batch_norm(ctx: Ctx) -> list[View]:
    if ctx.a("training_mode", 0):
        raise Unsupported("BatchNormalization in training mode")
    x, t = ctx.x(0), ctx.out.dtype
    eps = float(ctx.a("epsilon", 1e-5))
    params = [ctx.consts[i] if i < len(ctx.consts) else None for i in (1, 2, 3, 4)]
    if ctx.pack is not None and all(p is not None for p in params):
        scale, bias, mean, var = (np.asarray(p, np.float64) for p in params)
        a = scale / np.sqrt(var + eps)
        base = ctx.node.outputs[0]
        av = ctx.pack(f"{base}.scale", a.astype(t))
        bv = ctx.pack(f"{base}.shift", (bias - mean * a).astype(t))
        return [View(ctx.out, lambda idx: x.at(idx) * av.at((idx[1],)) + bv.at((idx[1],)))]
    scale, bias, mean, var = (ctx.x(i) for i in (1, 2, 3, 4))

    def at(idx):
        c = (idx[1],)
        inv = k(1, t) / call("sqrt", var.at(c) + k(eps, t))
        return (x.at(idx) - mean.at(c)) * inv * scale.at(c) + bias.at(c)

    return [View(ctx.out, at)]


TABLE: dict[str, Compute] = {
    name: Compute("element-wise", _elementwise(fn)) for name, fn in SCALAR.items()
}
# CastLike reads only its second input's dtype (the output type carries it), never its values
TABLE["CastLike"] = Compute("element-wise", _elementwise(SCALAR["CastLike"]), data=(0,))
TABLE["BatchNormalization"] = Compute("element-wise (per channel)", _batch_norm)
