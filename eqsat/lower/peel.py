"""Index-set splitting: run a loop's iterations where its guards are decided without them.

Consumes a Kernel (:mod:`eqsat.lower.loops`), scheduled or not; produces an equal kernel (same
results, same stores in the same order) in which each serial loop with a constant extent whose
body tests *guards* — the conditions of ``Select`` and ``If`` — that, for a run of the loop's
iterations, are provably always true (or always false) is replaced by one copy of the loop per
such run, the decided guards folded to constants in that copy. The loop variable of copy ``p``
is ``<var>.p<p>`` and counts from 0 (the body reads ``<var>.p<p> + start``); every name the body
binds gets the same suffix, so names stay unique in the kernel.

Why: window ops read their padding through ``select(0 <= pos < n, x[pos], pad)`` per element and
per window point, and an inlined concatenation reads its parts through ``select(c < 64, a[..],
select(c < 128, b[..], ...))``; the guards are loop-invariant within runs of the output loops
(the interior of a padded pool, the channel range of one concat input), so peeling them leaves
the interior a plain loop of straight loads that LLVM vectorizes and unrolls, and the border
copies small. Nothing here knows the op: a guard atom is any integer comparison, and it is
decided by interval arithmetic over the constant extents of the loops around and inside it.

Limits: only loops with a constant extent of at least ``MIN_EXTENT`` are split (each
iteration is tried), into at most ``MAX_RUNS`` runs, and at most ``MAX_COPIES`` copies of any
statement (the product of the splits around it); parallel loops are left whole (their range is
what the runtime splits).
"""

from __future__ import annotations

import dataclasses

from eqsat.lower.analysis import free_vars, rebuild, substitute, walk
from eqsat.lower.loops import (
    BinaryOp,
    BinOp,
    Cmp,
    CmpOp,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Let,
    LoopKind,
    Node,
    Select,
    Seq,
    Stmt,
    Var,
    is_int,
    seq,
)

MAX_RUNS = 5  # pieces one loop may be split into
MAX_COPIES = 64  # copies of the innermost statements a kernel may end up with
MAX_EXTENT = 4096  # iterations tried one by one
MIN_EXTENT = 8  # shorter loops (a window's points) are left whole: their guards are cheap

Interval = tuple[int, int]  # inclusive


# ------------------------------------------------------------------------------ intervals
def bounds(e: Expr, ranges: dict[str, Interval]) -> Interval | None:
    """Inclusive bounds of an integer expression given variable ranges (None: unknown)."""
    if isinstance(e, Const):
        return (int(e.value), int(e.value)) if is_int(e.dtype) else None
    if isinstance(e, Var):
        return ranges.get(e.name)
    if not isinstance(e, BinOp) or not is_int(e.dtype):
        return None
    a, b = bounds(e.a, ranges), bounds(e.b, ranges)
    if a is None or b is None:
        return None
    if e.op is BinaryOp.ADD:
        return a[0] + b[0], a[1] + b[1]
    if e.op is BinaryOp.SUB:
        return a[0] - b[1], a[1] - b[0]
    if e.op in (BinaryOp.MUL, BinaryOp.MIN, BinaryOp.MAX):
        fn = {BinaryOp.MUL: lambda x, y: x * y, BinaryOp.MIN: min, BinaryOp.MAX: max}[e.op]
        c = [fn(x, y) for x in a for y in b]
        return min(c), max(c)
    if e.op is BinaryOp.FLOORDIV and b[0] == b[1] and b[0] > 0:
        return a[0] // b[0], a[1] // b[0]
    if e.op is BinaryOp.MOD and b[0] == b[1] and b[0] > 0:
        if a[0] // b[0] == a[1] // b[0]:
            return a[0] % b[0], a[1] % b[0]
        return 0, b[0] - 1
    return None


def decide(atom: Cmp, ranges: dict[str, Interval]) -> bool | None:
    """True / False when ``atom`` has that value over all of ``ranges``, else None."""
    if not is_int(atom.a.dtype):
        return None
    a, b = bounds(atom.a, ranges), bounds(atom.b, ranges)
    if a is None or b is None:
        return None
    lo, hi = a[0] - b[1], a[1] - b[0]  # range of a - b
    test = {
        CmpOp.LT: (hi < 0, lo >= 0),
        CmpOp.LE: (hi <= 0, lo > 0),
        CmpOp.GT: (lo > 0, hi <= 0),
        CmpOp.GE: (lo >= 0, hi < 0),
        CmpOp.EQ: (lo == hi == 0, lo > 0 or hi < 0),
        CmpOp.NE: (lo > 0 or hi < 0, lo == hi == 0),
    }[atom.op]
    return True if test[0] else False if test[1] else None


def _atoms(cond: Expr) -> list[Cmp]:
    if isinstance(cond, BinOp) and cond.op in (BinaryOp.AND, BinaryOp.OR):
        return _atoms(cond.a) + _atoms(cond.b)
    return [cond] if isinstance(cond, Cmp) else []


def _guards(body: Stmt, var: str) -> list[Cmp]:
    """The integer comparison atoms of the guards under ``body`` that read ``var``."""
    out: dict[Cmp, None] = {}
    for n in walk(body):
        if isinstance(n, Select | If):
            for a in _atoms(n.cond):
                if var in free_vars(a) and is_int(a.a.dtype):
                    out[a] = None
    return list(out)


def _inner_ranges(body: Stmt) -> dict[str, Interval]:
    """Ranges of the constant-extent loops under ``body``."""
    return {
        f.var: (0, f.extent.value - 1)
        for f in walk(body)
        if isinstance(f, For) and isinstance(f.extent, Const) and f.extent.value > 0
    }


# ------------------------------------------------------------------------------ folding
def fold(node: Node, known: dict[Cmp, bool]) -> Node:
    """``node`` with the atoms in ``known`` replaced by constants and guards simplified."""
    if isinstance(node, Cmp) and node in known:
        return Const(known[node], "bool")
    node = rebuild(node, lambda c: fold(c, known))
    if isinstance(node, BinOp) and node.op in (BinaryOp.AND, BinaryOp.OR):
        neutral = node.op is BinaryOp.AND
        for x, y in ((node.a, node.b), (node.b, node.a)):
            if isinstance(x, Const):
                return y if bool(x.value) == neutral else x
    if isinstance(node, Select) and isinstance(node.cond, Const):
        return node.a if node.cond.value else node.b
    if isinstance(node, If) and isinstance(node.cond, Const):
        if node.cond.value:
            return node.then
        return node.orelse if node.orelse is not None else Seq(())
    return node


def _rename(body: Stmt, suffix: str) -> Stmt:
    """``body`` with every loop and let name it binds suffixed (names stay unique)."""
    names = {n.var for n in walk(body) if isinstance(n, For)}
    names |= {n.var.name for n in walk(body) if isinstance(n, Let)}
    env = {v: Var(f"{v}{suffix}") for v in names}

    def go(n: Node) -> Node:
        n = rebuild(n, go)
        if isinstance(n, For) and n.var in env:
            return dataclasses.replace(n, var=f"{n.var}{suffix}")
        if isinstance(n, Let) and n.var.name in env:
            return dataclasses.replace(n, var=Var(f"{n.var.name}{suffix}", n.var.dtype))
        return n

    return go(substitute(body, env)) if names else body


# ------------------------------------------------------------------------------ the pass
def _runs(f: For, outer: dict[str, Interval]) -> list[tuple[int, int, dict[Cmp, bool]]] | None:
    n = f.extent.value
    atoms = _guards(f.body, f.var)
    if not atoms or n > MAX_EXTENT:
        return None
    inner = _inner_ranges(f.body)
    runs: list[tuple[int, int, dict[Cmp, bool]]] = []
    for i in range(n):
        ranges = {**outer, **inner, f.var: (i, i)}
        known = {}
        for a in atoms:
            d = decide(a, ranges)
            if d is not None:
                known[a] = d
        if runs and runs[-1][2] == known:
            runs[-1] = (runs[-1][0], i + 1, known)
        else:
            runs.append((i, i + 1, known))
        if len(runs) > MAX_RUNS:
            return None
    if len(runs) < 2 and not runs[0][2]:
        return None
    return runs


def _peel(s: Stmt, outer: dict[str, Interval], copies: int) -> Stmt:
    """``copies``: how many copies of ``s`` the splits around it already made."""
    if isinstance(s, For):
        splittable = (
            isinstance(s.extent, Const)
            and s.kind is not LoopKind.PARALLEL
            and not s.annotations
            and s.extent.value >= MIN_EXTENT
        )
        runs = _runs(s, outer) if splittable else None
        if runs is not None and copies * len(runs) <= MAX_COPIES:
            copies *= len(runs)
            pieces = []
            for p, (lo, hi, known) in enumerate(runs):
                var = f"{s.var}.p{p}"
                at = BinOp(BinaryOp.ADD, Var(var), Const(lo)) if lo else Var(var)
                body = _rename(substitute(fold(s.body, known), {s.var: at}), f".p{p}")
                inner = {**outer, var: (0, hi - lo - 1)}
                piece = For(var, Const(hi - lo), body, s.kind, s.annotations)
                pieces.append(dataclasses.replace(piece, body=_peel(piece.body, inner, copies)))
            return seq(*pieces)
        rng = {s.var: (0, s.extent.value - 1)} if isinstance(s.extent, Const) else {}
        return dataclasses.replace(s, body=_peel(s.body, {**outer, **rng}, copies))
    if isinstance(s, Let):
        return dataclasses.replace(s, body=_peel(s.body, outer, copies))
    return rebuild(s, lambda c: _peel(c, outer, copies) if isinstance(c, Stmt) else c)


def peel_guards(kernel: Kernel) -> Kernel:
    """``kernel`` with its guarded loops split by the runs where their guards are decided."""
    if not any(isinstance(n, Select | If) for n in walk(kernel.body)):
        return kernel
    body = _peel(kernel.body, {}, 1)
    return kernel if body == kernel.body else dataclasses.replace(kernel, body=body)
