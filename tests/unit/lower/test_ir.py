"""LoopProgram IR: check() names the offending node; the printed form is stable."""

from __future__ import annotations

import dataclasses

import pytest

from eqsat.lower.check import check_program
from eqsat.lower.loops import (
    Accumulate,
    Allocate,
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Const,
    If,
    Kernel,
    Let,
    LoopIRError,
    LoopProgram,
    Store,
    Var,
    call,
    loop,
    seq,
)
from eqsat.lower.printer import print_expr, print_program

from .programs import F32, IN, OUT, elementwise, f32, i, j, matmul

A = Buffer("A", (4, 3), F32, IN)
C = Buffer("C", (4,), F32, OUT)


def prog(body, params=(A, C), buffers=(A, C)) -> LoopProgram:
    return LoopProgram("p", buffers, (Kernel("k", params, body),))


def ok_body():
    return loop("i", 4, seq(Store(C, (i,), f32(0)), loop("j", 3, Accumulate(C, (i,), A[i, j]))))


def test_a_well_formed_program_passes():
    check_program(prog(ok_body()))
    check_program(matmul())
    check_program(elementwise())


BAD = {
    "undefined variable 'j'": (
        loop("i", 4, Store(C, (i,), A[i, j])),
        "for i / store C / value: load A / index[1]",
    ),
    "2 indices for rank-1": (loop("i", 4, Store(C, (i, i), f32(0))), "kernel k / for i / store C"),
    "writes to input buffer A": (loop("i", 4, Store(A, (i, i), f32(0))), "store A"),
    "is float64, expected float32": (
        loop("i", 4, Store(C, (i,), Const(1.0, "float64"))),
        "store C / value",
    ),
    "index[0]": (loop("i", 4, Store(C, (f32(1),), f32(0))), "is float32, expected int64"),
    "already bound": (loop("i", 4, loop("i", 3, Store(C, (i,), f32(0)))), "for i / for i"),
    "extents use only sizes": (
        loop("i", 4, loop("j", i, Store(C, (i,), f32(0)))),
        "for i / for j",
    ),
    "unknown intrinsic 'cube'": (loop("i", 4, Store(C, (i,), call("cube", A[i, 0]))), "value"),
    "exp takes 1 arguments": (loop("i", 4, Store(C, (i,), call("exp", f32(1), f32(2)))), "value"),
    "constant 1.5 is not a int64": (loop("i", 4, Store(C, (Const(1.5),), f32(0))), "index[0]"),
    "expected bool": (loop("i", 4, If(i, Store(C, (i,), f32(0)))), "if / cond"),
    "true division of int64": (loop("i", 4, Store(C, (i / 2,), f32(0))), "index[0]"),
    "and of float32": (
        loop("i", 4, Store(C, (i,), BinOp(BinaryOp.AND, f32(1), f32(0)))),
        "store C / value",
    ),
    "let variable 'i' is already bound": (
        loop("i", 4, Let(Var("i"), Const(0), Store(C, (i,), f32(0)))),
        "for i / let i",
    ),
    "only local buffers are allocated": (Allocate(A, Store(C, (0,), f32(0))), "allocate A"),
}


@pytest.mark.parametrize("msg", sorted(BAD))
def test_check_names_the_error_and_its_path(msg):
    body, where = BAD[msg]
    with pytest.raises(LoopIRError) as e:
        check_program(prog(body))
    assert msg in str(e.value) and where in str(e.value), str(e.value)
    assert str(e.value).startswith("kernel k")


def test_check_program_level_errors():
    other = Buffer("Z", (4,), F32, OUT)
    with pytest.raises(LoopIRError, match="param Z: buffer not declared"):
        check_program(prog(ok_body(), params=(A, C, other)))
    with pytest.raises(LoopIRError, match="buffer Z is not a param"):
        check_program(prog(loop("i", 4, Store(other, (i,), f32(0)))))
    wider = Buffer("A", (4, 5), F32, IN)
    with pytest.raises(LoopIRError, match="param A: buffer declared differently"):
        check_program(prog(ok_body(), params=(wider, C)))
    with pytest.raises(LoopIRError, match="buffer C: output never written"):
        check_program(prog(loop("i", 4, Let(Var("t", F32), A[i, 0], seq()))))
    local = Buffer("L", (2,), F32, BufferKind.LOCAL)
    with pytest.raises(LoopIRError, match="buffer L: a local buffer belongs in an Allocate"):
        check_program(prog(ok_body(), buffers=(A, C, local)))
    with pytest.raises(LoopIRError, match="declared twice"):
        check_program(prog(ok_body(), buffers=(A, C, C)))
    with pytest.raises(LoopIRError, match="bad dim 0"):
        check_program(prog(ok_body(), buffers=(A, C, Buffer("T", (0,), F32))))


MATMUL_TEXT = """\
program mm
  input A: float32[64, 32]
  input B: float32[32, 48]
  output C: float32[64, 48]
  kernel mm(A, B, C):
    for i in range(64):
      for j in range(48):
        C[i, j] = float32(0.0)
        for k in range(32):
          C[i, j] += A[i, k] * B[k, j]"""

ELEMENTWISE_TEXT = """\
program ew
  input X: float32[37, 50]
  output Y: float32[37, 50]
  kernel ew(X, Y):
    for i in range(37):
      for j in range(50):
        let v: float32 = select(X[i, j] > float32(0.0), tanh(X[i, j]) * erf(X[i, j]), \
sqrt(abs(X[i, j])) + exp(neg(X[i, j]))):
          Y[i, j] = v + cast(float32, cast(int32, v * float32(4.0))) / float32(8.0)"""


def test_printed_matmul_and_fused_elementwise():
    assert print_program(matmul()) == MATMUL_TEXT
    assert print_program(elementwise()) == ELEMENTWISE_TEXT


def test_printer_keeps_the_tree_unambiguous():
    a, b, c = Var("a"), Var("b"), Var("c")
    assert print_expr(a - (b - c)) == "a - (b - c)"
    assert print_expr((a - b) - c) == "a - b - c"
    assert print_expr((a + b) * c) == "(a + b) * c"
    assert print_expr(a + b * c // 4 % 3) == "a + b * c // 4 % 3"
    assert print_expr(a < b) == "a < b"


def test_programs_compare_and_hash_structurally():
    assert matmul() == matmul() and hash(matmul()) == hash(matmul())
    assert matmul() != matmul(m=65)
    k = matmul().kernels[0]
    assert dataclasses.replace(k, name="other") != k


def test_sizes_are_symbolic_dims():
    X = Buffer("X", ("n", 3), F32, IN)
    Y = Buffer("Y", ("n",), F32, OUT)
    p = LoopProgram(
        "s", (X, Y), (Kernel("s", (X, Y), loop("i", Var("n"), Store(Y, (i,), X[i, 2]))),)
    )
    check_program(p)
    assert p.sizes == ("n",)
    assert "for i in range(n):" in print_program(p)
