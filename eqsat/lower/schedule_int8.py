"""The int8 contraction schedule: MatMulInteger / QLinearMatMul kernels to ``tensorize=igemm``.

Consumes a LoopProgram (as lowering produces it) and whether the target has an int8 dot-product
micro-kernel (the LLVM backend's VNNI rows of ``tensorize_targets``); produces the program with
``Tensorize(<root loop>, "igemm")`` on every kernel :func:`match_int8_gemm` recognizes. The LLVM
backend honours it (:mod:`eqsat.backends.llvm.vnni_kernel`); elsewhere (and in the
interpreter) the annotation is ignored, so the kernel stays the plain loop nest it is.

The recognized form is exactly what :mod:`eqsat.lower.compute_quant` lowers a 2-D integer
matmul to, with constant extents, a constant (weight) B and constant scalar zero points::

    for i0 in range(M): for i1 in range(N):
        acc = 0; for k in range(K): acc += (int32(A[i0, k]) - za) * (int32(B[k, i1]) - zb)
        <epilogue reading acc, storing out[i0, i1]>

where ``acc`` is either ``out[i0, i1]`` itself (MatMulInteger) or a local one-element buffer
(QLinearMatMul's requantizing epilogue). Anything else (batched A, per-row zero points, a
run-time B) is left to the plain loops.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from eqsat.lower.loops import (
    Accumulate,
    Allocate,
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Cast,
    Const,
    Expr,
    For,
    Kernel,
    Load,
    LoopProgram,
    ReduceOp,
    Seq,
    Stmt,
    Store,
    Var,
)
from eqsat.lower.schedule import Tensorize, apply

IGEMM = "igemm"


@dataclass(frozen=True)
class Int8Gemm:
    """``out[i, j] = epilogue(sum_k (A[i, k] - za) * (B[k, j] - zb))``, B a weight."""

    a: Buffer
    b: Buffer
    za: int
    zb: int
    m: int
    n: int
    k: int
    i: str  # the free loop variables
    j: str
    acc: Buffer  # what the epilogue reads the sum from (at index ``acc_index``)
    acc_index: tuple[Expr, ...]
    epilogue: Stmt | None  # None: the sum is stored into out[i, j] as it is (int32)
    out: Buffer


def _operand(e: Expr, index) -> tuple[Buffer, int] | None:
    """``int32(X[index]) [- int32(const)]`` -> (X, const)."""
    z = 0
    if isinstance(e, BinOp) and e.op is BinaryOp.SUB:
        c = e.b.value if isinstance(e.b, Cast) else e.b
        if not isinstance(c, Const) or isinstance(c.value, float):
            return None
        z, e = int(c.value), e.a
    if not (isinstance(e, Cast) and e.dtype == "int32" and isinstance(e.value, Load)):
        return None
    ld = e.value
    if ld.index != index or ld.buffer.dtype not in ("uint8", "int8"):
        return None
    return ld.buffer, z


def _const(e: Expr) -> int | None:
    return e.value if isinstance(e, Const) and isinstance(e.value, int) else None


def match_int8_gemm(kernel: Kernel) -> Int8Gemm | None:
    outer = kernel.body
    if not (isinstance(outer, For) and isinstance(outer.body, For)):
        return None
    inner = outer.body
    m, n = _const(outer.extent), _const(inner.extent)
    i, j = outer.var, inner.var
    body, acc_buf, epi = inner.body, None, None
    if isinstance(body, Allocate):
        acc_buf, body = body.buffer, body.body
    if not (isinstance(body, Seq) and len(body.stmts) in (2, 3)) or m is None or n is None:
        return None
    init, red, *tail = body.stmts
    if not (isinstance(red, For) and isinstance(red.body, Accumulate) and isinstance(init, Store)):
        return None
    acc = red.body
    kk, kext = red.var, _const(red.extent)
    if kext is None or acc.op is not ReduceOp.SUM or acc.buffer.dtype != "int32":
        return None
    if init.buffer != acc.buffer or init.index != acc.index or _const(init.value) != 0:
        return None
    if acc_buf is None:
        if tail or acc.index != (Var(i), Var(j)):
            return None
        out = acc.buffer
    else:
        if acc.buffer != acc_buf or len(tail) != 1 or not isinstance(tail[0], Store):
            return None
        out, epi = tail[0].buffer, tail[0]
        if epi.index != (Var(i), Var(j)):
            return None
    v = acc.value
    if not (isinstance(v, BinOp) and v.op is BinaryOp.MUL):
        return None
    fa, fb = _operand(v.a, (Var(i), Var(kk))), _operand(v.b, (Var(kk), Var(j)))
    if fa is None or fb is None or fb[0].kind is not BufferKind.WEIGHT:
        return None
    if fa[0].shape != (m, kext) or fb[0].shape != (kext, n) or out.shape != (m, n):
        return None
    return Int8Gemm(fa[0], fb[0], fa[1], fb[1], m, n, kext, i, j, acc.buffer, acc.index, epi,
                    out)


def tensorize_int8(program: LoopProgram, available: bool) -> LoopProgram:
    """``program`` with every int8 GEMM kernel annotated ``tensorize=igemm`` (when
    ``available``: the target has an int8 dot-product micro-kernel)."""
    if not available:
        return program
    kernels = []
    for k in program.kernels:
        if match_int8_gemm(k) is not None:
            k = apply(k, (Tensorize(k.body.var, IGEMM),))
        kernels.append(k)
    return dataclasses.replace(program, kernels=tuple(kernels))
