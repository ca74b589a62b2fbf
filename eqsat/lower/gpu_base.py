"""What the GPU schedules share: the grid's names, :class:`Launch`, and a contraction's parts
at one output element.

Consumes loop-IR expressions and :class:`~eqsat.lower.contraction.Contraction` s; produces
expressions. :mod:`eqsat.lower.gpu_schedule` (the default schedules, the fp32 tile, warp rows)
and :mod:`eqsat.lower.gpu_mma` (the tensor-core tile) both build on it.
"""

from __future__ import annotations

from dataclasses import dataclass

from eqsat.lower.analysis import substitute
from eqsat.lower.contraction import Contraction, extent_of, flat_index
from eqsat.lower.loops import BinaryOp, BinOp, Cmp, CmpOp, Const, Expr, If, Select, Stmt

WARP = 32
MMA_PREFIX = "gpu_mma_"  # + precision: the tensor-core tile kernel (eqsat.lower.gpu_mma)
BLOCK, THREAD, KSTEP = "gpu.block", "gpu.thread", "gpu.kt"  # names no loop of a kernel has
ROW, COL = "gpu.m", "gpu.n"  # the output element of a tile kernel's thread (M and N index)


@dataclass(frozen=True)
class Launch:
    """A GPU-scheduled kernel as a grid: ``grid`` blocks (an int64 expression over size params)
    of ``block`` threads; ``block_var`` / ``thread_var`` are the loop variables bound to the block
    and thread index (None where the kernel has no such loop); ``body`` runs once per thread."""

    grid: Expr
    block: int
    block_var: str | None
    thread_var: str | None
    body: Stmt
    tile: Contraction | None = None  # a tile kernel (fp32 or mma): the contraction it tiles
    rows: tuple[tuple[str, Expr], ...] = ()  # a WARP_ROWS kernel: the output nest (a row each)


def ceil_div(e: Expr, d: int) -> Expr:
    if isinstance(e, Const):
        return Const(-(-e.value // d))
    return BinOp(BinaryOp.FLOORDIV, BinOp(BinaryOp.ADD, e, Const(d - 1)), Const(d))


def mul(a: Expr, b: Expr) -> Expr:
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value * b.value)
    return BinOp(BinaryOp.MUL, a, b)


def and_(*conds: Expr) -> Expr:
    out = conds[0]
    for c in conds[1:]:
        out = BinOp(BinaryOp.AND, out, c)
    return out


def tile_operands(c: Contraction, row: Expr, col: Expr, batch: Expr):
    """The pieces of ``c`` at output element (``row``, ``col``) of ``batch`` (M and N index):
    ``a(k)`` / ``b(k)``, the factors at reduction index ``k`` (0 outside the matrices), and the
    epilogue, guarded to the matrix. Shared by the tile kernels
    (:func:`eqsat.lower.gpu_schedule.tile_plan`, :mod:`eqsat.lower.gpu_mma`)."""
    M, N, K = extent_of(c.m), extent_of(c.n), extent_of(c.k)
    axes = {**flat_index(c.batch, batch), **flat_index(c.m, row), **flat_index(c.n, col)}
    zero = Const(0.0, "float32")

    def stage(e: Expr, inside: Expr):
        def at(k: Expr) -> Expr:
            value = substitute(e, {**axes, **flat_index(c.k, k)})
            return Select(and_(inside, Cmp(CmpOp.LT, k, K)), value, zero)

        return at

    define = {v: substitute(e, axes) for v, e in c.define}
    inside = and_(Cmp(CmpOp.LT, row, M), Cmp(CmpOp.LT, col, N))
    epilogue = If(inside, substitute(c.epilogue, define))
    return stage(c.a, Cmp(CmpOp.LT, row, M)), stage(c.b, Cmp(CmpOp.LT, col, N)), epilogue
