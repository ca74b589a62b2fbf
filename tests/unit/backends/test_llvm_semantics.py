"""Expression semantics of the LLVM backend against interpret() (numpy): each intrinsic on edge
values, casts, floor division and modulo, lazy Select, symbolic sizes, random expression trees."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eqsat.backends.llvm.codegen import emit
from eqsat.lower.intrinsics import INTRINSICS
from eqsat.lower.loops import (
    Accumulate,
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Cast,
    Cmp,
    CmpOp,
    Const,
    Expr,
    Kernel,
    LoopProgram,
    Select,
    Store,
    Var,
    call,
    loop,
    maximum,
    minimum,
    seq,
)

from .check import check

IN, OUT = BufferKind.INPUT, BufferKind.OUTPUT
i, k = Var("i"), Var("k")

EDGES = np.array(
    [0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-30, -1e-30, 1e-3, 3.0, -3.0, 9.0, -9.0, 20.0, -20.0,
     88.0, -88.0, 100.0, -100.0, 1e30, -1e30, np.inf, -np.inf, np.nan],
    dtype=np.float32,
)  # fmt: skip


def unary(n: int | str, dtype: str, out_dtype: str, f) -> LoopProgram:
    """Y[i] = f(X[i]) (and of W[i] for a second operand)."""
    X, W = Buffer("X", (n,), dtype, IN), Buffer("W", (n,), dtype, IN)
    Y = Buffer("Y", (n,), out_dtype, OUT)
    extent = Var(n) if isinstance(n, str) else n
    body = loop("i", extent, Store(Y, (i,), f(X[i], W[i])))
    return LoopProgram("u", (X, W, Y), (Kernel("u", (X, W, Y), body),))


FLOAT_INTRINSICS = sorted(n for n, f in INTRINSICS.items() if f.domain != "bool")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", FLOAT_INTRINSICS)
def test_intrinsic_on_edge_values(name, dtype):
    arity = INTRINSICS[name].arity
    x = EDGES.astype(dtype)
    if arity == 1:
        feeds = {"X": x, "W": x}
    else:  # every pair of edge values
        feeds = {"X": np.repeat(x, len(x)), "W": np.tile(x, len(x))}
    args = {1: lambda a, b: (a,), 2: lambda a, b: (a, b), 3: lambda a, b: (a, b, a)}[arity]
    p = unary(len(feeds["X"]), dtype, dtype, lambda a, b: call(name, *args(a, b)))
    check(p, feeds, rtol=2e-6 if dtype == "float32" else 1e-12, atol=0)


def test_int_intrinsics_and_bool_not():
    x = np.array([0, 1, -1, 127, -128, 5, -7], dtype=np.int8)
    check(unary(len(x), "int8", "int8", lambda a, b: call("abs", a)), {"X": x, "W": x})
    check(unary(len(x), "int8", "int8", lambda a, b: call("neg", a)), {"X": x, "W": x})
    u = np.array([0, 1, 200, 255], dtype=np.uint8)
    check(unary(len(u), "uint8", "uint8", lambda a, b: call("abs", a)), {"X": u, "W": u})
    bits = np.array([True, False, True])
    check(unary(3, "bool", "bool", lambda a, b: BinOp(BinaryOp.OR, call("not", a), b)),
          {"X": bits, "W": bits[::-1].copy()})  # fmt: skip


@pytest.mark.parametrize(
    "src, dst",
    [("float32", d) for d in ("int32", "int8", "int64", "uint8", "float64", "float16", "bool")]
    + [("int32", "float32"), ("uint8", "float32"), ("int64", "int16"), ("int8", "int64")]
    + [("uint8", "int32"), ("bool", "float32"), ("bool", "int32"), ("float64", "float32")]
    + [("int32", "bool"), ("float16", "float32")],
)
def test_casts(src, dst):
    x = np.array([0.0, -0.0, 1.0, -1.0, 2.7, -2.7, 100.25, -100.75, 126.0, 3.0], np.float64)
    if src.startswith("uint"):
        x = np.abs(x)
    if src == "float32" and dst == "bool":
        x = np.append(x, np.nan)
    x = x.astype(src)
    check(unary(len(x), src, dst, lambda a, b: Cast(dst, a)), {"X": x, "W": x}, atol=0)


@pytest.mark.parametrize("dtype", ["int64", "int32", "int8", "uint8"])
def test_floor_division_and_modulo(dtype):
    vals = [-7, -6, -1, 0, 1, 5, 6, 7, 100, -100, 13, -13]
    d = [3, -3, 1, -1, 0, 7, -7, 2, -2]
    if dtype == "uint8":
        vals, d = [abs(v) for v in vals], [abs(v) for v in d]
    a = np.repeat(np.array(vals, dtype), len(d))
    b = np.tile(np.array(d, dtype), len(vals))
    for op in (BinaryOp.FLOORDIV, BinaryOp.MOD):
        check(unary(len(a), dtype, dtype, lambda x, y, op=op: BinOp(op, x, y)), {"X": a, "W": b})


def test_negative_index_arithmetic_with_constant_divisors():
    """Y[i] = X[(i - 5) // 3 + 2] + X[(i - 5) % 3]: floor semantics keep the reads in bounds."""
    X = Buffer("X", (4,), "float32", IN)
    Y = Buffer("Y", (9,), "float32", OUT)
    j = i - Const(5)
    body = loop("i", 9, Store(Y, (i,), X[j // Const(3) + Const(2)] + X[j % Const(3)]))
    check(LoopProgram("idx", (X, Y), (Kernel("idx", (X, Y), body),)))


def test_float_floor_division_modulo_min_max_compares():
    x = np.array([7.5, -7.5, 0.0, -0.0, 3.0, -3.0, 1e-8, np.nan, np.inf, 2.0], np.float32)
    a, b = np.repeat(x, len(x)), np.tile(x, len(x))
    feeds = {"X": a, "W": b}
    for op in (BinaryOp.FLOORDIV, BinaryOp.MOD, BinaryOp.MIN, BinaryOp.MAX, BinaryOp.DIV):
        check(unary(len(a), "float32", "float32", lambda p, q, op=op: BinOp(op, p, q)), feeds)
    for cmp in CmpOp:  # ordered compares, != unordered (NaN != NaN), like numpy
        check(unary(len(a), "float32", "bool", lambda p, q, c=cmp: Cmp(c, p, q)), feeds, atol=0)


def test_lazy_select_guards_an_out_of_bounds_read():
    """A padded 1-D convolution Y[i] = sum_k select(0 <= i + k - 1 < n, X[i + k - 1], 0) * W[k],
    and a read 2**40 elements out of bounds behind a data-dependent condition that never holds:
    emitted unguarded it would fault."""
    n = 50
    X, W = Buffer("X", (n,), "float32", IN), Buffer("W", (3,), "float32", IN)
    M = Buffer("M", (n,), "float32", IN)
    Y, Z = Buffer("Y", (n,), "float32", OUT), Buffer("Z", (n,), "float32", OUT)
    t = i + k - Const(1)
    inside = BinOp(BinaryOp.AND, t >= Const(0), t < Const(n))
    conv = seq(
        Store(Y, (i,), Const(0.0, "float32")),
        loop("k", 3, Accumulate(Y, (i,), Select(inside, X[t], Const(0.0, "float32")) * W[k])),
    )
    far = Select(M[i] > Const(0.0, "float32"), X[i + Const(2**40)], X[i] * Const(2.0, "float32"))
    body = seq(loop("i", n, conv), loop("i2", n, Store(Z, (Var("i2"),), _at(far, "i2"))))
    bufs = (X, W, M, Y, Z)
    p = LoopProgram("pad", bufs, (Kernel("pad", bufs, body),))
    feeds = {"X": np.arange(n, dtype=np.float32), "W": np.array([1, 2, 3], np.float32)}
    feeds["M"] = -np.ones(n, np.float32)
    _, got = check(p, feeds)
    assert got["Y"][0] == 0 * 1 + 0 * 2 + 1 * 3 and got["Y"][-1] == 48 + 49 * 2
    assert "sel.a" in str(emit(p))  # the guarded arms are branches, not a select


def _at(e: Expr, var: str) -> Expr:
    from eqsat.lower.analysis import substitute

    return substitute(e, {"i": Var(var)})


def test_symbolic_sizes():
    X = Buffer("X", ("m", "n"), "float32", IN)
    R = Buffer("R", ("m",), "float32", OUT)
    Y = Buffer("Y", ("r",), "int64", OUT)  # a size no feed fixes: bound by ``sizes``
    j = Var("j")
    body = seq(
        loop("i", Var("m"), seq(
            Store(R, (i,), Const(0.0, "float32")),
            loop("j", Var("n"), Accumulate(R, (i,), X[i, j] * X[i, j])),
        )),
        loop("t", Var("r"), Store(Y, (Var("t"),), Var("t") * Var("r") - Var("m"))),
    )  # fmt: skip
    p = LoopProgram("sym", (X, R, Y), (Kernel("sym", (X, R, Y), body),))
    for m, n, r in ((1, 1, 1), (3, 17, 4), (8, 33, 2)):
        check(p, sizes={"m": m, "n": n, "r": r}, rtol=1e-5)


# ------------------------------------------------------------------ random expression trees
LEAF = st.sampled_from(["x", "w", "c"])
UNARY = ["exp", "tanh", "sigmoid", "abs", "neg", "sqrtabs", "log1pabs", "erf", "sin", "floor"]
BINARY = ["+", "-", "*", "/1+", "min", "max", "select"]


def trees():
    return st.recursive(
        LEAF,
        lambda sub: st.one_of(
            st.tuples(st.sampled_from(UNARY), sub),
            st.tuples(st.sampled_from(BINARY), sub, sub),
        ),
        max_leaves=6,
    )


def build(t, x: Expr, w: Expr) -> Expr:
    f32 = lambda v: Const(float(v), "float32")  # noqa: E731
    if t == "x":
        return x
    if t == "w":
        return w
    if t == "c":
        return f32(0.75)
    a = build(t[1], x, w)
    if len(t) == 2:
        if t[0] == "sqrtabs":
            return call("sqrt", call("abs", a))
        if t[0] == "log1pabs":
            return call("log", call("abs", a) + f32(1))
        return call(t[0], a)
    b = build(t[2], x, w)
    ops = {"+": BinaryOp.ADD, "-": BinaryOp.SUB, "*": BinaryOp.MUL}
    if t[0] in ops:
        return BinOp(ops[t[0]], a, b)
    if t[0] == "/1+":
        return a / (call("abs", b) + f32(1))
    if t[0] == "select":
        return Select(a > b, a, b * f32(0.5))
    return minimum(a, b) if t[0] == "min" else maximum(a, b)


@settings(max_examples=30, deadline=None)
@given(trees())
def test_random_elementwise_trees(tree):
    p = unary(64, "float32", "float32", lambda x, w: build(tree, x, w))
    x = np.linspace(-4, 4, 64, dtype=np.float32)
    check(p, {"X": x, "W": x[::-1] * np.float32(0.7)}, rtol=1e-4, atol=1e-5)


def test_large_local_buffer_goes_to_the_heap():
    """A 256 x 300 float32 local (300 KiB) is malloc'ed, not a stack alloca."""
    from eqsat.lower.loops import Allocate

    X, Y = Buffer("X", (256, 300), "float32", IN), Buffer("Y", (256, 300), "float32", OUT)
    T = Buffer("T", (256, 300), "float32", BufferKind.LOCAL)
    r, c = Var("r"), Var("c")
    two = Const(2.0, "float32")
    copy_in = loop("r", 256, loop("c", 300, Store(T, (r, c), X[r, c] * two)))
    copy_out = loop("r2", 256, loop("c2", 300, Store(Y, (Var("r2"), Var("c2")),
                                                     T[Var("r2"), Var("c2")] + two)))  # fmt: skip
    body = Allocate(T, seq(copy_in, copy_out))
    p = LoopProgram("heap", (X, Y), (Kernel("heap", (X, Y), body),))
    check(p)
    assert 'call ptr @"malloc"' in str(emit(p)) and "alloca float" not in str(emit(p))


@pytest.mark.parametrize("vectorized", [False, True])
@pytest.mark.parametrize("op", ["max", "min"])
def test_minmax_accumulate_propagates_nan(op, vectorized):
    """A float max/min reduction keeps a NaN wherever it occurs in the row (first, middle,
    last, every element, none) and whatever the accumulator held: the scalar ``maxps`` form
    with its NaN fix-up outside vectorized loops, ``llvm.maximum`` inside them."""
    from eqsat.lower.loops import ReduceOp
    from eqsat.lower.schedule import Vectorize, apply

    from ..lower.programs import reduce_rows

    rop = ReduceOp.MAX if op == "max" else ReduceOp.MIN
    p = reduce_rows(rop, m=6, n=33)
    if vectorized:
        (kern,) = p.kernels
        p = LoopProgram(p.name, p.buffers, (apply(kern, (Vectorize("j"),)),))
    x = np.random.default_rng(3).standard_normal((6, 33)).astype(np.float32)
    x[0, 0] = x[1, 16] = x[2, 32] = np.nan
    x[3, :] = np.nan
    x[4, :] = np.inf if op == "max" else -np.inf
    _, got = check(p, {"X": x})
    ref = (np.maximum if op == "max" else np.minimum).reduce(x, axis=1)
    np.testing.assert_array_equal(np.isnan(got["R"]), np.isnan(ref))
    assert np.isnan(got["R"][:4]).all()
