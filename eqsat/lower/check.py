"""Well-formedness of a LoopProgram: raise :class:`LoopIRError` with the offending node's path.

Consumes a LoopProgram or a Kernel (:mod:`eqsat.lower.loops`); produces nothing but the error.
A path reads like ``kernel mm / for i / for j / seq[1] / store C / index[0]``: the kernel, then
each loop by name, then the field that leads to the node.

What is checked, and why each rule exists:
- buffers: unique names, known dtypes, dims positive ints or size-param names; kernels use only
  declared buffers (the same record, so a param cannot silently disagree on shape or dtype);
  LOCAL buffers live only in ``Allocate``, program buffers never do.
- writes: never to an input or a weight (the backend passes them as read-only, ``noalias``).
- scopes: each variable is a size param, an enclosing loop or an enclosing let; loop and let
  names are unique in a kernel (schedule primitives address loops by name, and substitution
  relies on no shadowing).
- extents: int64 and loop-invariant (constants and size params only): nests stay rectangular.
- types: index expressions int64, ranks match, operands of one op share a dtype, conditions are
  bool, intrinsics get their arity and domain, constants fit their dtype.
"""

from __future__ import annotations

from eqsat.lower.analysis import free_vars
from eqsat.lower.intrinsics import INTRINSICS
from eqsat.lower.loops import (
    DTYPES,
    INDEX,
    Accumulate,
    Allocate,
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Call,
    Cast,
    Cmp,
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
    is_int,
)


def check_program(prog: LoopProgram) -> None:
    declared: dict[str, Buffer] = {}
    for b in prog.buffers:
        where = f"program {prog.name} / buffer {b.name}"
        if b.name in declared:
            raise LoopIRError(f"{where}: declared twice")
        if b.kind is BufferKind.LOCAL:
            raise LoopIRError(f"{where}: a local buffer belongs in an Allocate, not the program")
        _check_buffer(b, where)
        declared[b.name] = b
    if not prog.outputs:
        raise LoopIRError(f"program {prog.name}: no output buffer")
    names: set[str] = set()
    written: set[str] = set()
    for k in prog.kernels:
        if k.name in names:
            raise LoopIRError(f"program {prog.name} / kernel {k.name}: defined twice")
        names.add(k.name)
        for p in k.params:
            if declared.get(p.name) != p:
                what = "not declared" if p.name not in declared else "declared differently"
                raise LoopIRError(f"kernel {k.name} / param {p.name}: buffer {what} in program")
        _Checker(k).run()
        written |= _stored(k.body)
    for b in prog.outputs:
        if b.name not in written:
            raise LoopIRError(f"program {prog.name} / buffer {b.name}: output never written")


def check_kernel(k: Kernel) -> None:
    _Checker(k).run()


def _stored(s: Stmt) -> set[str]:
    from eqsat.lower.analysis import walk

    return {n.buffer.name for n in walk(s) if isinstance(n, Store | Accumulate)}


def _check_buffer(b: Buffer, where: str) -> None:
    if b.dtype not in DTYPES:
        raise LoopIRError(f"{where}: unknown dtype {b.dtype!r}")
    for d in b.shape:
        if not (isinstance(d, str) and d.isidentifier() or isinstance(d, int) and d > 0):
            raise LoopIRError(f"{where}: bad dim {d!r} (a positive int or a size-param name)")
    if b.blocked and not (b.rank == 4 and isinstance(b.shape[1], int)
                          and b.shape[1] % b.blocked == 0 and b.kind is BufferKind.TEMP):
        raise LoopIRError(f"{where}: blocked by {b.blocked}, but not a temp of rank 4 whose dim 1"
                          " it divides")


class _Checker:
    def __init__(self, k: Kernel):
        self.k = k
        self.sizes = {d for p in k.params for d in p.shape if isinstance(d, str)}
        self.bufs: dict[str, Buffer] = {}
        self.scope: dict[str, str] = {s: INDEX for s in self.sizes}  # var name -> dtype
        self.bound: set[str] = set()  # every loop / let name so far: unique per kernel
        self.path: list[str] = [f"kernel {k.name}"]

    def fail(self, msg: str, *more: str):
        raise LoopIRError(f"{' / '.join(self.path + list(more))}: {msg}")

    def run(self) -> None:
        for p in self.k.params:
            if p.name in self.bufs:
                self.fail(f"param {p.name} listed twice")
            if p.kind is BufferKind.LOCAL:
                self.fail(f"param {p.name} is a local buffer")
            _check_buffer(p, f"kernel {self.k.name} / param {p.name}")
            self.bufs[p.name] = p
        self.stmt(self.k.body, "body")

    def bind(self, name: str, dtype: str, what: str) -> None:
        if name in self.bound or name in self.sizes:
            self.fail(f"{what} {name!r} is already bound in this kernel")
        self.bound.add(name)
        self.scope[name] = dtype

    # ------------------------------------------------------------------ statements
    def stmt(self, s: Stmt, field: str) -> None:
        self.path.append(field)
        try:
            self._stmt(s)
        finally:
            self.path.pop()

    def label(self, text: str) -> None:
        """Name the current node in the path (keeping the field unless it is just "body")."""
        field = self.path[-1]
        self.path[-1] = text if field == "body" else f"{field}: {text}"

    def _stmt(self, s: Stmt) -> None:
        if isinstance(s, For):
            self.label(f"for {s.var}")
            self.expr(s.extent, "extent", want=INDEX)
            loopy = free_vars(s.extent) - self.sizes
            if loopy:
                self.fail(f"extent reads {sorted(loopy)}: extents use only sizes and constants")
            self.bind(s.var, INDEX, "loop variable")
            self.stmt(s.body, "body")
            del self.scope[s.var]
        elif isinstance(s, Seq):
            for i, c in enumerate(s.stmts):
                self.stmt(c, f"seq[{i}]")
        elif isinstance(s, Store | Accumulate):
            kind = "store" if isinstance(s, Store) else "accumulate"
            self.label(f"{kind} {s.buffer.name}")
            b = self.buffer(s.buffer)
            if not b.writable:
                self.fail(f"writes to {b.kind.value} buffer {b.name}")
            self.index(b, s.index)
            self.expr(s.value, "value", want=b.dtype)
            if isinstance(s, Accumulate) and b.dtype == "bool":
                self.fail("accumulates into a bool buffer")
        elif isinstance(s, Let):
            self.label(f"let {s.var.name}")
            self.expr(s.value, "value", want=s.var.dtype)
            self.bind(s.var.name, s.var.dtype, "let variable")
            self.stmt(s.body, "body")
            del self.scope[s.var.name]
        elif isinstance(s, If):
            self.label("if")
            self.expr(s.cond, "cond", want="bool")
            self.stmt(s.then, "then")
            if s.orelse is not None:
                self.stmt(s.orelse, "else")
        elif isinstance(s, Allocate):
            b = s.buffer
            self.label(f"allocate {b.name}")
            if b.kind is not BufferKind.LOCAL:
                self.fail(f"allocates a {b.kind.value} buffer (only local buffers are allocated)")
            if b.name in self.bufs:
                self.fail(f"buffer {b.name} already exists")
            _check_buffer(b, " / ".join(self.path))
            if any(isinstance(d, str) for d in b.shape):
                self.fail("a local buffer has a static shape")
            self.bufs[b.name] = b
            self.stmt(s.body, "body")
            del self.bufs[b.name]
        else:
            self.fail(f"not a statement: {type(s).__name__}")

    def buffer(self, b: Buffer) -> Buffer:
        known = self.bufs.get(b.name)
        if known is None:
            self.fail(f"buffer {b.name} is not a param nor allocated here")
        if known != b:
            self.fail(f"buffer {b.name} does not match its declaration {known}")
        return known

    def index(self, b: Buffer, index: tuple[Expr, ...]) -> None:
        if len(index) != b.rank:
            self.fail(f"{len(index)} indices for rank-{b.rank} buffer {b.name}")
        for i, e in enumerate(index):
            self.expr(e, f"index[{i}]", want=INDEX)

    # ------------------------------------------------------------------ expressions
    def expr(self, e: Expr, field: str, want: str | None = None) -> None:
        self.path.append(field)
        try:
            self._expr(e)
            if want is not None and e.dtype != want:
                self.fail(f"is {e.dtype}, expected {want}")
        finally:
            self.path.pop()

    def _expr(self, e: Expr) -> None:
        if isinstance(e, Const):
            ok = {"bool": bool, "int": int, "uint": int, "float": (int, float)}
            known = e.dtype in DTYPES
            py = next(t for p, t in ok.items() if e.dtype.startswith(p)) if known else None
            if py is None or not isinstance(e.value, py) or (py is int and type(e.value) is bool):
                self.fail(f"constant {e.value!r} is not a {e.dtype}")
        elif isinstance(e, Var):
            if e.name not in self.scope:
                self.fail(f"undefined variable {e.name!r}")
            if self.scope[e.name] != e.dtype:
                self.fail(f"variable {e.name!r} used as {e.dtype}, bound as {self.scope[e.name]}")
        elif isinstance(e, Load):
            self.path[-1] += f": load {e.buffer.name}"
            self.index(self.buffer(e.buffer), e.index)
        elif isinstance(e, BinOp):
            self.expr(e.a, "a")
            self.expr(e.b, "b", want=e.a.dtype)
            t = e.dtype
            if e.op in (BinaryOp.AND, BinaryOp.OR) and t != "bool":
                self.fail(f"{e.op.value} of {t} (bools only)")
            if e.op not in (BinaryOp.AND, BinaryOp.OR) and t == "bool":
                self.fail(f"{e.op.value} of bools")
            if e.op is BinaryOp.DIV and not is_float(t):
                self.fail(f"true division of {t}: use // for integers")
        elif isinstance(e, Cmp):
            self.expr(e.a, "a")
            self.expr(e.b, "b", want=e.a.dtype)
        elif isinstance(e, Select):
            self.expr(e.cond, "cond", want="bool")
            self.expr(e.a, "a")
            self.expr(e.b, "b", want=e.a.dtype)
        elif isinstance(e, Cast):
            if e.dtype not in DTYPES:
                self.fail(f"cast to unknown dtype {e.dtype!r}")
            self.expr(e.value, "value")
        elif isinstance(e, Call):
            fn = INTRINSICS.get(e.intrinsic)
            if fn is None:
                self.fail(f"unknown intrinsic {e.intrinsic!r}")
            if len(e.args) != fn.arity:
                self.fail(f"{e.intrinsic} takes {fn.arity} arguments, got {len(e.args)}")
            for i, a in enumerate(e.args):
                self.expr(a, f"arg[{i}]", want=None if i == 0 else e.args[0].dtype)
            t = e.dtype
            ok = {"float": is_float(t), "numeric": is_float(t) or is_int(t), "bool": t == "bool"}
            if not ok[fn.domain]:
                self.fail(f"{e.intrinsic} of {t} (needs {fn.domain})")
        else:
            self.fail(f"not an expression: {type(e).__name__}")
