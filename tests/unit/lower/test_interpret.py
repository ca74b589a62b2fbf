"""interpret() equals numpy on matmul, reductions, softmax, element-wise chains, transposes."""

from __future__ import annotations

import numpy as np
import pytest

from eqsat.lower.interpret import interpret
from eqsat.lower.loops import (
    Accumulate,
    Buffer,
    Kernel,
    LoopIRError,
    LoopProgram,
    ReduceOp,
    Select,
    Store,
    Var,
    loop,
    seq,
)

from .programs import (
    F32,
    IN,
    OUT,
    elementwise,
    elementwise_ref,
    f32,
    i,
    j,
    matmul,
    reduce_rows,
    relu_max,
    softmax,
    transpose,
)

rng = np.random.default_rng(7)


def randn(*shape) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("split_init", [False, True])
def test_matmul(split_init):
    a, b = randn(64, 32), randn(32, 48)
    out = interpret(matmul(split_init=split_init), {"A": a, "B": b})
    np.testing.assert_allclose(out["C"], a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "op, ref",
    [(ReduceOp.SUM, np.sum), (ReduceOp.MAX, np.max), (ReduceOp.MIN, np.min), (ReduceOp.PROD, None)],
)
def test_reduction_along_an_axis_with_its_init(op, ref):
    x = randn(30, 70)
    if ref is None:  # keep the product finite
        x, ref = 1 + x / 100, np.prod
    out = interpret(reduce_rows(op), {"X": x})["R"]
    np.testing.assert_allclose(out, ref(x, axis=1), rtol=1e-5)


def test_softmax_over_the_last_axis_as_three_nests():
    x = randn(20, 33) * 5
    e = np.exp(x - x.max(axis=1, keepdims=True))
    out = interpret(softmax(), {"X": x})["Y"]
    np.testing.assert_allclose(out, e / e.sum(axis=1, keepdims=True), rtol=1e-5, atol=1e-7)


def test_elementwise_chain_with_intrinsics_select_and_casts():
    x = randn(37, 50) * 2
    out = interpret(elementwise(), {"X": x})["Y"]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, elementwise_ref(x), rtol=1e-5, atol=1e-6)


def test_transpose_as_index_arithmetic():
    x = randn(6, 10)
    np.testing.assert_array_equal(interpret(transpose(), {"X": x})["Y"], x.T)


def test_min_max_and_symbolic_sizes():
    x = randn(8)
    np.testing.assert_array_equal(interpret(relu_max(), {"X": x})["Y"], np.maximum(x, 0))
    X = Buffer("X", ("n", 3), F32, IN)
    Y = Buffer("Y", ("n",), F32, OUT)
    body = loop("i", Var("n"), Store(Y, (i,), X[i, 2] * f32(2)))
    p = LoopProgram("s", (X, Y), (Kernel("s", (X, Y), body),))
    for n in (1, 5):
        x = randn(n, 3)
        np.testing.assert_array_equal(interpret(p, {"X": x})["Y"], x[:, 2] * 2)


def test_a_loop_carried_dependence_runs_serially_and_right():
    """Prefix sum: iteration i reads what i - 1 wrote, so the loop must not be vectorized."""
    X = Buffer("X", (50,), F32, IN)
    Y = Buffer("Y", (50,), F32, OUT)
    prev = Select(i > 0, Y[i - 1], f32(0))  # lazy: Y[-1] is never read
    p = LoopProgram(
        "scan", (X, Y), (Kernel("scan", (X, Y), loop("i", 50, Store(Y, (i,), prev + X[i]))),)
    )
    x = randn(50)
    np.testing.assert_allclose(interpret(p, {"X": x})["Y"], np.cumsum(x), rtol=1e-5, atol=1e-5)


def test_plain_store_reduction_and_transposed_temp_in_one_nest():
    """C[i, j] = C[i, j] + ... is a read-modify-write, not an Accumulate: the k loop is serial.
    T written at [j, i] and read at [i, j] in the same nest: the outer loop is serial."""
    a, b = randn(5, 4), randn(4, 6)
    A, B = Buffer("A", (5, 4), F32, IN), Buffer("B", (4, 6), F32, IN)
    C = Buffer("C", (5, 6), F32, OUT)
    k = Var("k")
    body = loop(
        "i",
        5,
        loop(
            "j",
            6,
            seq(
                Store(C, (i, j), f32(0)),
                loop("k", 4, Store(C, (i, j), C[i, j] + A[i, k] * B[k, j])),
            ),
        ),
    )
    p = LoopProgram("mm", (A, B, C), (Kernel("mm", (A, B, C), body),))
    np.testing.assert_allclose(interpret(p, {"A": a, "B": b})["C"], a @ b, rtol=1e-5, atol=1e-6)

    X, T = Buffer("X", (4, 4), F32, IN), Buffer("T", (4, 4), F32)
    Y = Buffer("Y", (4, 4), F32, OUT)
    # row i of Y reads T[i, :], which rows < i wrote: the sequential answer is lower-triangular
    body = loop(
        "i",
        4,
        seq(
            loop("j", 4, Store(T, (j, i), X[i, j])),
            loop("j2", 4, Store(Y, (i, Var("j2")), T[i, Var("j2")])),
        ),
    )
    p = LoopProgram("t", (X, T, Y), (Kernel("t", (X, T, Y), body),))
    x = randn(4, 4)
    y = interpret(p, {"X": x})["Y"]
    np.testing.assert_array_equal(np.tril(y), np.tril(x.T))
    assert np.isnan(np.triu(y, 1)[np.triu_indices(4, 1)]).all()


def test_out_of_bounds_and_missing_init_are_caught():
    X = Buffer("X", (4,), F32, IN)
    Y = Buffer("Y", (4,), F32, OUT)
    p = LoopProgram("o", (X, Y), (Kernel("o", (X, Y), loop("i", 4, Store(Y, (i,), X[i + 1]))),))
    with pytest.raises(LoopIRError, match=r"load X\[i \+ 1\] out of bounds"):
        interpret(p, {"X": randn(4)})
    R = Buffer("R", (1,), F32, OUT)
    p = LoopProgram("r", (X, R), (Kernel("r", (X, R), loop("i", 4, Accumulate(R, (0,), X[i]))),))
    assert np.isnan(interpret(p, {"X": randn(4)})["R"]).all()
    with pytest.raises(LoopIRError, match="no feed for input X"):
        interpret(p, {})
    with pytest.raises(LoopIRError, match="does not fit"):
        interpret(p, {"X": randn(5)})
