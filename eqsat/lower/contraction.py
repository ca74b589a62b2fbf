"""Contraction analysis: recognize a lowered kernel that is a (batched) matrix product.

Consumes a :class:`~eqsat.lower.loops.Kernel` as :func:`eqsat.lower.lower.lower` builds a
single-stage reduction (free loops ``F`` around ``out[F] = 0; for R: out[F] += L1 * L2``, then
optionally ``out[F] = epilogue(out[F])`` under ``Let`` s); produces a :class:`Contraction` (or
None): the free axes classified as batch (both factors read them), M (only ``a`` reads them)
and N (only ``b`` does), the reduction axes K, the two factor expressions ``a`` (over batch, M
and K variables) and ``b`` (over batch, N and K), and the epilogue statement with the
accumulated value as the variable :data:`ACC`. MatMul (batched, transposed and reshaped
operands through views), Gemm and Conv (any stride, padding, dilation; ``Select`` guards of
padded reads go to the factor that can evaluate them) all take this form.

Why here, at the LoopProgram level: the backend packs ``a`` and ``b`` by *evaluating* these
expressions (so transposes, reshapes, concatenations and im2col come for free in the packer)
and runs its register-blocked micro-kernel on the packed panels; the schedule
(:mod:`eqsat.lower.schedule_gemm`) decides which kernels go that way. No ``backends`` import.

Grouped convolutions read the input at ``co // mg * cg + rc``: the output channel is then read
by both factors, which would make it a batch axis with M = 1. :func:`match_contraction` splits
such an axis ``v`` into ``v.g`` (the group, batch) and ``v.m`` (the channel in its group, M)
when one factor reads it only as ``v // c`` with ``c`` dividing its extent.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from eqsat.lower.analysis import free_vars, outer_nest, rebuild, substitute, walk
from eqsat.lower.loops import (
    Accumulate,
    BinaryOp,
    BinOp,
    Buffer,
    Const,
    Expr,
    For,
    Kernel,
    Let,
    Load,
    Node,
    ReduceOp,
    Select,
    Seq,
    Stmt,
    Store,
    Var,
)

ACC = Var("acc.value", "float32")  # the accumulated value inside Contraction.epilogue
Axis = tuple[str, Expr]  # (variable name, extent)


@dataclass(frozen=True)
class Contraction:
    """``out[F] = epilogue(sum over K of a * b)``, F = batch ∪ M ∪ N (after group splits).

    ``define`` maps each original free variable to an expression over the axis variables (the
    identity except for split group axes); ``epilogue`` is a statement over the original free
    variables (``Let`` s, then ``Store(out, index, value)``) whose ``value`` reads :data:`ACC`.
    """

    out: Buffer
    free: tuple[Axis, ...]  # the original free loops, outermost first
    batch: tuple[Axis, ...]
    m: tuple[Axis, ...]
    n: tuple[Axis, ...]
    k: tuple[Axis, ...]
    a: Expr
    b: Expr
    define: tuple[tuple[str, Expr], ...]
    epilogue: Stmt

    def loads(self, which: str) -> set[Buffer]:
        e = self.a if which == "a" else self.b
        return {n.buffer for n in walk(e) if isinstance(n, Load)}


def _factors(v: Expr) -> tuple[list[Expr], Expr, Expr] | None:
    """``select(g1, select(g2, x * y, 0), 0)`` -> ([g1, g2], x, y)."""
    guards = []
    while isinstance(v, Select):
        if not (isinstance(v.b, Const) and v.b.value == 0):
            return None
        guards.append(v.cond)
        v = v.a
    if isinstance(v, BinOp) and v.op is BinaryOp.MUL:
        return guards, v.a, v.b
    return None


def _reads(e: Node, buf: Buffer) -> list[Load]:
    return [n for n in walk(e) if isinstance(n, Load) and n.buffer == buf]


def _epilogue(tail: list[Stmt], out: Buffer, idx: tuple[Expr, ...]) -> Stmt | None:
    """The tail after the reduction, with ``out[idx]`` read as ACC; None if not of the form."""
    if not tail:
        return Store(out, idx, ACC)
    if len(tail) != 1:
        return None
    s, lets = tail[0], []
    while isinstance(s, Let):
        lets.append(s)
        s = s.body
    if not (isinstance(s, Store) and s.buffer == out and s.index == idx):
        return None
    if any(ld.index != idx for ld in _reads(tail[0], out)):
        return None
    return _replace_load(tail[0], out, ACC)


def _replace_load(node: Node, buf: Buffer, value: Expr) -> Node:
    if isinstance(node, Load) and node.buffer == buf:
        return value
    return rebuild(node, lambda c: _replace_load(c, buf, value))


def _group_split(f: Expr, v: str) -> int | None:
    """``c`` when ``f`` reads ``v`` only as ``v // c`` (``c`` a constant > 1), else None."""
    divs = set()

    def visit(e: Node, under: bool) -> bool:
        if isinstance(e, BinOp) and e.op is BinaryOp.FLOORDIV and e.a == Var(v):
            if isinstance(e.b, Const) and isinstance(e.b.value, int) and e.b.value > 1:
                divs.add(e.b.value)
                return True
            return False
        if isinstance(e, Var) and e.name == v:
            return False
        return all(visit(c, under) for c in _kids(e))

    ok = visit(f, False)
    return divs.pop() if ok and len(divs) == 1 else None


def _kids(e: Node):
    for fld in dataclasses.fields(e):
        x = getattr(e, fld.name)
        if isinstance(x, Expr | Stmt):
            yield x
        elif isinstance(x, tuple):
            yield from (y for y in x if isinstance(y, Expr | Stmt))


def _replace_div(e: Node, v: str, c: int, g: Var) -> Node:
    if isinstance(e, BinOp) and e.op is BinaryOp.FLOORDIV and e.a == Var(v) and e.b == Const(c):
        return g
    return rebuild(e, lambda x: _replace_div(x, v, c, g))


def match_contraction(kernel: Kernel) -> Contraction | None:
    """The contraction form of ``kernel`` (float32 sum of products), or None."""
    free_loops, body = outer_nest(kernel.body)
    if not free_loops or not isinstance(body, Seq) or len(body.stmts) < 2:
        return None
    init, red, *tail = body.stmts
    fv = [f.var for f in free_loops]
    idx = tuple(Var(v) for v in fv)
    if not (isinstance(init, Store) and init.index == idx and init.buffer.dtype == "float32"):
        return None
    out = init.buffer
    if not (isinstance(init.value, Const) and init.value.value == 0):
        return None
    k_loops, acc = outer_nest(red)
    if not k_loops or not isinstance(acc, Accumulate):
        return None
    if acc.buffer != out or acc.index != idx or acc.op is not ReduceOp.SUM:
        return None
    loop_vars = set(fv) | {f.var for f in k_loops}
    if any(free_vars(f.extent) & loop_vars for f in free_loops + k_loops):
        return None
    parts = _factors(acc.value)
    epi = _epilogue(tail, out, idx)
    if parts is None or epi is None or free_vars(epi) & {f.var for f in k_loops}:
        return None
    guards, f1, f2 = parts
    if f1.dtype != "float32" or f2.dtype != "float32" or _reads(acc.value, out):
        return None
    extents = {f.var: f.extent for f in free_loops}
    define: dict[str, Expr] = {v: Var(v) for v in fv}
    axes = [(v, extents[v]) for v in fv]

    def uses(e: Expr) -> set[str]:
        return free_vars(e) & {name for name, _ in axes}

    # split group axes read by both factors, one of them only as ``v // c``
    for v in fv:
        if v not in uses(f1) or v not in uses(f2) or not isinstance(extents[v], Const):
            continue
        for which in (0, 1):
            fx = (f1, f2)[which]
            c = _group_split(fx, v)
            if c is None or extents[v].value % c:
                continue
            g, m = Var(f"{v}.g"), Var(f"{v}.m")
            fx = _replace_div(fx, v, c, g)
            whole = BinOp(BinaryOp.ADD, BinOp(BinaryOp.MUL, g, Const(c)), m)
            fy = substitute((f2, f1)[which], {v: whole})
            f1, f2 = (fx, fy) if which == 0 else (fy, fx)
            guards = [substitute(gd, {v: whole}) for gd in guards]
            define[v] = whole
            at = [n for n, _ in axes].index(v)
            axes[at:at + 1] = [(g.name, Const(extents[v].value // c)), (m.name, Const(c))]
            break
    # each guard goes to the factor that reads all the free axes it reads
    u1, u2 = uses(f1), uses(f2)
    for gd in guards:
        ug = uses(gd)
        if ug <= u2:
            f2 = Select(gd, f2, Const(0.0, "float32"))
        elif ug <= u1:
            f1 = Select(gd, f1, Const(0.0, "float32"))
        else:
            return None
    u1, u2 = uses(f1), uses(f2)
    # the output's innermost axis on the N side (the epilogue then writes along it)
    last = axes[-1][0]
    if last in u1 and last not in u2 or not u2 - u1 and u1 - u2:
        f1, f2, u1, u2 = f2, f1, u2, u1
    batch = tuple(ax for ax in axes if ax[0] in u1 and ax[0] in u2 or ax[0] not in u1 | u2)
    m = tuple(ax for ax in axes if ax[0] in u1 and ax[0] not in u2)
    n = tuple(ax for ax in axes if ax[0] in u2 and ax[0] not in u1)
    k = tuple((f.var, f.extent) for f in k_loops)
    return Contraction(out, tuple((v, extents[v]) for v in fv), batch, m, n, k, f1, f2,
                       tuple(define.items()), epi)


def tensorized(kernel: Kernel) -> str | None:
    """The ``tensorize`` annotation of the kernel's root loop, if any."""
    if isinstance(kernel.body, For):
        return dict(kernel.body.annotations).get("tensorize")
    return None


def flat_index(axes: tuple[Axis, ...], flat: Expr) -> dict[str, Expr]:
    """Row-major decomposition of ``flat`` over ``axes``: variable name -> expression."""
    out: dict[str, Expr] = {}
    stride: Expr | None = None
    for i, (name, ext) in enumerate(reversed(axes)):
        q = flat if stride is None else BinOp(BinaryOp.FLOORDIV, flat, stride)
        out[name] = q if i == len(axes) - 1 else BinOp(BinaryOp.MOD, q, ext)
        stride = ext if stride is None else BinOp(BinaryOp.MUL, stride, ext)
    return out


def extent_of(axes: tuple[Axis, ...]) -> Expr:
    """The product of the axes' extents (constants folded)."""
    out: Expr = Const(1)
    for _, e in axes:
        if isinstance(out, Const) and isinstance(e, Const):
            out = Const(out.value * e.value)
        elif isinstance(out, Const) and out.value == 1:
            out = e
        else:
            out = BinOp(BinaryOp.MUL, out, e)
    return out


def const_extent(axes: tuple[Axis, ...]) -> int | None:
    e = extent_of(axes)
    return e.value if isinstance(e, Const) else None
