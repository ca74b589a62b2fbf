"""interpret(): run a LoopProgram on numpy arrays — the oracle every later step is tested against.

Consumes a LoopProgram (:mod:`eqsat.lower.loops`) and feeds (inputs and weights by name);
produces the output buffers. Semantics are those of sequential C loop nests; ``Accumulate`` may
combine its contributions in any order (so float sums match a sequential run up to rounding).

Strategy: a loop whose iterations cannot interfere runs *vectorized*, all iterations at once,
with its variable bound to an ``arange`` on a new numpy axis (the d-th vectorized loop of a nest
gets shape ``(n,) + (1,) * d``, so arrays built by outer loops broadcast against inner ones by
numpy's trailing alignment). The body's statements then run in order, each over the whole
domain; ``If`` and lazy ``Select`` narrow a boolean mask; ``Accumulate`` reduces the axes its
index does not vary along with ``ufunc.reduce`` and scatters the rest with ``ufunc.at``. A loop
that may interfere runs *serially* (a Python loop, its variable a scalar), its inner loops
still vectorized when they can be.

When is a loop safe to vectorize? Classify each buffer written in its body (analysis.
``written_buffer_conflicts``): a *reduction* (only accumulated, never read) is safe, its order
does not matter; any other written buffer is safe when no element of it is reached from two
points of (current vector domain × this loop) — checked exactly, on the values of every index
tuple the body uses for it, over the grid of the domain, this loop and the inner loops each index
reads. An index that reads memory or a let bound in the body makes the loop serial. This is the
loop-distribution condition: statement-by-statement execution over all points is then
indistinguishable from the sequential order. ``Allocate`` inside a vectorized loop is
privatized: one copy per domain point (extra trailing axes on the local array).

Guards against silent wrong answers: loads and stores are bounds-checked on the active points
(numpy would wrap negative indices), float outputs and temporaries start as NaN (a missing write
or a missing reduction init shows up), and masked-off points read index 0 instead of trapping.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from eqsat.lower.analysis import free_vars, loops, written_buffer_conflicts
from eqsat.lower.check import check_program
from eqsat.lower.intrinsics import INTRINSICS
from eqsat.lower.loops import (
    Accumulate,
    Allocate,
    BinaryOp,
    BinOp,
    Buffer,
    Call,
    Cast,
    Cmp,
    CmpOp,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Let,
    Load,
    LoopIRError,
    LoopProgram,
    Select,
    Seq,
    Stmt,
    Store,
    Var,
    is_float,
)
from eqsat.lower.printer import print_expr

_BIN = {
    BinaryOp.ADD: np.add,
    BinaryOp.SUB: np.subtract,
    BinaryOp.MUL: np.multiply,
    BinaryOp.DIV: np.divide,
    BinaryOp.FLOORDIV: np.floor_divide,
    BinaryOp.MOD: np.mod,
    BinaryOp.MIN: np.minimum,
    BinaryOp.MAX: np.maximum,
    BinaryOp.AND: np.logical_and,
    BinaryOp.OR: np.logical_or,
}
_CMP = {
    CmpOp.LT: np.less,
    CmpOp.LE: np.less_equal,
    CmpOp.EQ: np.equal,
    CmpOp.NE: np.not_equal,
    CmpOp.GT: np.greater,
    CmpOp.GE: np.greater_equal,
}


def interpret(
    program: LoopProgram, feeds: Mapping[str, np.ndarray], sizes: Mapping[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Run ``program``; ``feeds`` holds every input and weight; size params not fixed by the
    feeds' shapes come from ``sizes``."""
    check_program(program)
    env: dict[str, int] = dict(sizes or {})
    bufs: dict[str, np.ndarray] = {}
    for b in program.inputs + program.weights:
        if b.name not in feeds:
            raise LoopIRError(f"program {program.name}: no feed for {b.kind.value} {b.name}")
        bufs[b.name] = b.bind(feeds[b.name], env)
    for b in program.outputs + program.temps:
        bufs[b.name] = _fresh(b, b.sized(env), ())
    with np.errstate(all="ignore"):
        for k in program.kernels:
            _Run(k, bufs, env).stmt(k.body, {n: np.int64(v) for n, v in env.items()}, None)
    return {b.name: bufs[b.name] for b in program.outputs}


def _fresh(b: Buffer, shape: tuple[int, ...], private: tuple[int, ...]) -> np.ndarray:
    fill = np.nan if is_float(b.dtype) else 0
    return np.full(shape + private, fill, dtype=b.dtype)


class _Run:
    def __init__(self, kernel: Kernel, bufs: dict[str, np.ndarray], sizes: Mapping[str, int]):
        self.kernel = kernel
        self.bufs = bufs
        self.sizes = set(sizes)
        self.shape: list[int] = []  # the vector domain, numpy order (innermost loop first)
        self.private: dict[str, tuple[np.ndarray, ...]] = {}  # local buffer -> its domain grid

    def fail(self, msg: str):
        raise LoopIRError(f"kernel {self.kernel.name}: {msg}")

    # ------------------------------------------------------------------ statements
    def stmt(self, s: Stmt, env: dict, mask) -> None:
        if isinstance(s, Seq):
            for c in s.stmts:
                self.stmt(c, env, mask)
        elif isinstance(s, For):
            self.loop(s, env, mask)
        elif isinstance(s, Store):
            idx, val, m, _ = self.target(s, env, mask)
            if m is not None:
                idx, val = tuple(i[m] for i in idx), val[m]
            self.bufs[s.buffer.name][idx] = val
        elif isinstance(s, Accumulate):
            self.accumulate(s, env, mask)
        elif isinstance(s, Let):
            self.stmt(s.body, env | {s.var.name: self.expr(s.value, env, mask)}, mask)
        elif isinstance(s, If):
            c = self.expr(s.cond, env, mask)
            for branch, cond in ((s.then, c), (s.orelse, np.logical_not(c))):
                m = cond if mask is None else mask & cond
                if branch is not None and np.any(m):
                    self.stmt(branch, env, None if np.ndim(m) == 0 else m)
        elif isinstance(s, Allocate):
            b = s.buffer
            n = len(self.shape)
            grid = tuple(
                np.arange(k).reshape((k,) + (1,) * (n - 1 - p)) for p, k in enumerate(self.shape)
            )
            self.bufs[b.name] = _fresh(b, b.sized({}), tuple(self.shape))
            self.private[b.name] = grid
            try:
                self.stmt(s.body, env, mask)
            finally:
                del self.bufs[b.name], self.private[b.name]
        else:
            self.fail(f"cannot run {type(s).__name__}")

    def target(self, s: Store | Accumulate, env, mask):
        """Index arrays, value and mask of a write, broadcast over the whole vector domain, and
        the axes along which the index varies (before broadcasting)."""
        raw = self.index(s.buffer, s.index, env, mask, "store")
        val = np.asarray(self.expr(s.value, env, mask), dtype=s.buffer.dtype)
        parts = [*raw, val] + ([mask] if mask is not None else [])
        shape = np.broadcast_shapes(tuple(self.shape), *(np.shape(p) for p in parts))
        nd = len(shape)
        varying = {nd - i.ndim + a for i in raw for a, k in enumerate(i.shape) if k > 1}
        idx = tuple(np.broadcast_to(i, shape) for i in raw)
        m = None if mask is None else np.broadcast_to(mask, shape)
        return idx, np.broadcast_to(val, shape), m, varying

    def accumulate(self, s: Accumulate, env, mask) -> None:
        idx, val, m, varying = self.target(s, env, mask)
        ufunc = s.op.ufunc
        if m is not None:
            val = np.where(m, val, np.asarray(s.op.identity(s.buffer.dtype), s.buffer.dtype))
        nd = val.ndim
        axes = tuple(a for a in range(nd) if a not in varying and val.shape[a] > 1)
        if axes:  # contributions to one element along these axes: reduce them first
            val = ufunc.reduce(val, axis=axes, keepdims=True, dtype=s.buffer.dtype)
            first = tuple(slice(0, 1) if a in axes else slice(None) for a in range(nd))
            idx = tuple(i[first] for i in idx)
            if m is not None:
                m = m.any(axis=axes, keepdims=True)
        if m is not None:
            idx, val = tuple(i[m] for i in idx), val[m]
        buf = self.bufs[s.buffer.name]
        if not idx:  # a 0-d buffer (a full reduction): ufunc.at cannot index it
            buf[()] = ufunc.reduce(np.append(buf.reshape(-1), np.reshape(val, -1)), dtype=buf.dtype)
            return
        ufunc.at(buf, idx, val)

    def loop(self, s: For, env: dict, mask) -> None:
        n = int(self.expr(s.extent, env, None))
        if n <= 0:
            return
        if self.vectorizable(s, env, n):
            d = len(self.shape)
            self.shape.insert(0, n)
            try:
                self.stmt(s.body, env | {s.var: np.arange(n).reshape((n,) + (1,) * d)}, mask)
            finally:
                self.shape.pop(0)
        else:
            for t in range(n):
                self.stmt(s.body, env | {s.var: np.int64(t)}, mask)

    def vectorizable(self, s: For, env: dict, n: int) -> bool:
        inner = {f.var: f.extent for f in loops(s.body)}
        for buf, (how, indices) in written_buffer_conflicts(s.body).items():
            if how == "reduction":
                continue
            for index in indices:
                names = set().union(*(free_vars(i) for i in index))
                if names - set(env) - set(inner) - {s.var} or any(map(_reads_memory, index)):
                    return False
            if not self.disjoint(s, env, n, buf, indices, inner):
                return False
        return True

    def disjoint(self, s: For, env, n, buf, indices, inner) -> bool:
        """No element of ``buf`` is reached from two points of (vector domain × this loop)."""
        d = len(self.shape)
        outer = (n, *self.shape)
        points = np.arange(int(np.prod(outer))).reshape(outer)
        found = []  # per index tuple: (components, point), flattened
        for index in indices:
            grid = env | {s.var: np.arange(n).reshape((n,) + (1,) * d)}
            used = sorted(set().union(*(free_vars(i) for i in index)) & set(inner))
            for k, v in enumerate(used):
                m = int(self.expr(inner[v], env, None))
                grid[v] = np.arange(m).reshape((m,) + (1,) * (d + 1 + k))
            comps = [np.asarray(self.expr(i, grid, None)) for i in index]
            comps += self.private.get(buf.name, ())  # a privatized local: one copy per point
            shape = np.broadcast_shapes(outer, *(c.shape for c in comps))
            found.append([np.broadcast_to(c, shape).ravel() for c in [*comps, points]])
        cols = [np.concatenate(col) for col in zip(*found, strict=True)]
        key = np.zeros(cols[0].shape, dtype=np.int64)
        for c in cols[:-1]:  # exact mixed-radix code of the element: no aliasing
            key = key * (int(c.max() - c.min()) + 1) + (c - c.min())
        pairs = np.unique(np.stack([key, cols[-1]]), axis=1)
        return len(np.unique(pairs[0])) == pairs.shape[1]

    # ------------------------------------------------------------------ expressions
    def index(self, b: Buffer, index, env, mask, what: str) -> tuple:
        comps = []
        for e, dim in zip(index, self.bufs[b.name].shape, strict=False):
            c = np.asarray(self.expr(e, env, mask))
            if mask is not None:
                c = np.where(mask, c, 0)
            if c.size and (c.min() < 0 or c.max() >= dim):
                where = ", ".join(print_expr(i) for i in index)
                self.fail(f"{what} {b.name}[{where}] out of bounds ({c.min()}..{c.max()} vs {dim})")
            comps.append(c)
        return tuple(comps) + self.private.get(b.name, ())

    def expr(self, e: Expr, env: dict, mask):
        if isinstance(e, Const):
            return np.asarray(e.value, dtype=e.dtype)
        if isinstance(e, Var):
            return env[e.name]
        if isinstance(e, Load):
            return self.bufs[e.buffer.name][self.index(e.buffer, e.index, env, mask, "load")]
        if isinstance(e, BinOp):
            return _BIN[e.op](self.expr(e.a, env, mask), self.expr(e.b, env, mask))
        if isinstance(e, Cmp):
            return _CMP[e.op](self.expr(e.a, env, mask), self.expr(e.b, env, mask))
        if isinstance(e, Select):
            c = self.expr(e.cond, env, mask)
            if np.ndim(c) == 0:
                return self.expr(e.a if c else e.b, env, mask)
            arms = []
            for arm, cond in ((e.a, c), (e.b, np.logical_not(c))):
                m = cond if mask is None else mask & cond
                arms.append(self.expr(arm, env, m) if m.any() else np.zeros((), arm.dtype))
            return np.where(c, *arms)
        if isinstance(e, Cast):
            return np.asarray(self.expr(e.value, env, mask)).astype(e.dtype)
        if isinstance(e, Call):
            args = [np.asarray(self.expr(a, env, mask)) for a in e.args]
            return np.asarray(INTRINSICS[e.intrinsic].numpy(*args), dtype=e.dtype)
        self.fail(f"cannot evaluate {type(e).__name__}")


def _accesses_of(body: Stmt, buf: Buffer):
    from eqsat.lower.analysis import accesses

    return [a for a in accesses(body) if a.buffer == buf]


def _reads_memory(e: Expr) -> bool:
    from eqsat.lower.analysis import walk

    return any(isinstance(n, Load) for n in walk(e))
