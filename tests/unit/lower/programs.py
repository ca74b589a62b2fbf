"""Small LoopPrograms shared by the lower tests (built by hand, as lowering will build them)."""

from __future__ import annotations

import numpy as np

from eqsat.lower.loops import (
    Accumulate,
    Buffer,
    BufferKind,
    Cast,
    Const,
    Kernel,
    Let,
    LoopProgram,
    ReduceOp,
    Select,
    Store,
    Var,
    call,
    loop,
    maximum,
    seq,
)

IN, OUT, TEMP = BufferKind.INPUT, BufferKind.OUTPUT, BufferKind.TEMP
F32 = "float32"
i, j, k = Var("i"), Var("j"), Var("k")


def f32(x: float) -> Const:
    return Const(float(x), F32)


def matmul(m: int = 64, n: int = 48, kk: int = 32, split_init: bool = False) -> LoopProgram:
    """C = A @ B. ``split_init``: the zero init is its own nest (as TVM's decompose_reduction
    leaves it), so the reduction nest is perfectly nested and can be reordered."""
    A = Buffer("A", (m, kk), F32, IN)
    B = Buffer("B", (kk, n), F32, IN)
    C = Buffer("C", (m, n), F32, OUT)
    acc = loop("k", kk, Accumulate(C, (i, j), A[i, k] * B[k, j]))
    if split_init:
        init = loop("i0", m, loop("j0", n, Store(C, (Var("i0"), Var("j0")), f32(0))))
        body = seq(init, loop("i", m, loop("j", n, acc)))
    else:
        body = loop("i", m, loop("j", n, seq(Store(C, (i, j), f32(0)), acc)))
    return LoopProgram("mm", (A, B, C), (Kernel("mm", (A, B, C), body),))


def elementwise(m: int = 37, n: int = 50) -> LoopProgram:
    """y = select(x > 0, tanh(x) * erf(x), sqrt(|x|) + exp(-x)), then a round trip through int32."""
    X = Buffer("X", (m, n), F32, IN)
    Y = Buffer("Y", (m, n), F32, OUT)
    x = X[i, j]
    pos = call("tanh", x) * call("erf", x)
    neg = call("sqrt", call("abs", x)) + call("exp", call("neg", x))
    v = Var("v", F32)
    out = v + Cast(F32, Cast("int32", v * f32(4))) / f32(8)
    body = loop("i", m, loop("j", n, Let(v, Select(x > f32(0), pos, neg), Store(Y, (i, j), out))))
    return LoopProgram("ew", (X, Y), (Kernel("ew", (X, Y), body),))


def elementwise_ref(x: np.ndarray) -> np.ndarray:
    import scipy.special

    v = np.where(x > 0, np.tanh(x) * scipy.special.erf(x), np.sqrt(np.abs(x)) + np.exp(-x))
    v = v.astype(np.float32)
    return v + (v * 4).astype(np.int32).astype(np.float32) / 8


def reduce_rows(op: ReduceOp, m: int = 30, n: int = 70) -> LoopProgram:
    """R[i] = op over j of X[i, j], with its init."""
    X = Buffer("X", (m, n), F32, IN)
    R = Buffer("R", (m,), F32, OUT)
    body = loop(
        "i",
        m,
        seq(Store(R, (i,), f32(op.identity(F32))), loop("j", n, Accumulate(R, (i,), X[i, j], op))),
    )
    return LoopProgram("reduce", (X, R), (Kernel("reduce", (X, R), body),))


def softmax(m: int = 20, n: int = 33) -> LoopProgram:
    """Softmax over the last axis as 3 nests: row max, exp and row sum, divide."""
    X = Buffer("X", (m, n), F32, IN)
    M = Buffer("M", (m,), F32, TEMP)
    E = Buffer("E", (m, n), F32, TEMP)
    S = Buffer("S", (m,), F32, TEMP)
    Y = Buffer("Y", (m, n), F32, OUT)
    j1, j2, j3 = Var("j1"), Var("j2"), Var("j3")
    nest1 = loop(
        "i1",
        m,
        seq(
            Store(M, (Var("i1"),), f32(-np.inf)),
            loop("j1", n, Accumulate(M, (Var("i1"),), X[Var("i1"), j1], ReduceOp.MAX)),
        ),
    )
    e = call("exp", X[i, j2] - M[i])
    nest2 = loop(
        "i",
        m,
        seq(
            Store(S, (i,), f32(0)),
            loop("j2", n, seq(Store(E, (i, j2), e), Accumulate(S, (i,), E[i, j2]))),
        ),
    )
    nest3 = loop("i3", m, loop("j3", n, Store(Y, (Var("i3"), j3), E[Var("i3"), j3] / S[Var("i3")])))
    bufs = (X, M, E, S, Y)
    return LoopProgram("softmax", bufs, (Kernel("softmax", bufs, seq(nest1, nest2, nest3)),))


def transpose(m: int = 6, n: int = 10) -> LoopProgram:
    """Y = X^T by index arithmetic: one loop over the flat index f of X, Y[f % n, f // n] =
    X[f // n, f % n]."""
    X = Buffer("X", (m, n), F32, IN)
    Y = Buffer("Y", (n, m), F32, OUT)
    f = Var("f")
    body = loop("f", m * n, Store(Y, (f % n, f // n), X[f // n, f % n]))
    return LoopProgram("transpose", (X, Y), (Kernel("transpose", (X, Y), body),))


def relu_max(m: int = 8) -> LoopProgram:
    X = Buffer("X", (m,), F32, IN)
    Y = Buffer("Y", (m,), F32, OUT)
    body = loop("i", m, Store(Y, (i,), maximum(X[i], f32(0))))
    return LoopProgram("relu", (X, Y), (Kernel("relu", (X, Y), body),))
