"""Statements of the loop IR as LLVM IR: loops, stores, reductions, branches, buffers, and the
outlining of parallel loops onto the runtime's launcher.

Consumes LoopProgram statements (:mod:`eqsat.lower.loops`) inside a function being built;
produces llvmlite IR through :class:`FunctionEmitter` (expressions come from its base,
:class:`~eqsat.backends.llvm.codegen_expr.ExprEmitter`). Split from
:mod:`eqsat.backends.llvm.codegen` (which documents the statement semantics and builds the
module) so that :mod:`eqsat.backends.llvm.tensorize` can emit its packing and epilogue loops
with the same code as plain kernels, without an import cycle.
"""

from __future__ import annotations

import math
import re
import weakref

import numpy as np
from llvmlite import ir

from eqsat.backends.llvm.codegen_expr import I64, PTR, ExprEmitter, mem_type
from eqsat.lower.analysis import free_vars, walk
from eqsat.lower.loops import (
    Accumulate,
    Allocate,
    BinaryOp,
    BinOp,
    Buffer,
    For,
    If,
    Let,
    Load,
    LoopKind,
    ReduceOp,
    Seq,
    Stmt,
    Store,
    is_float,
)

PARALLEL_FOR = "eqsat.parallel_for"
STACK_LIMIT = 256 * 1024  # bytes of one Allocate kept on the stack
_REDUCE = {
    ReduceOp.SUM: BinaryOp.ADD,
    ReduceOp.PROD: BinaryOp.MUL,
    ReduceOp.MAX: BinaryOp.MAX,
    ReduceOp.MIN: BinaryOp.MIN,
}
_REASSOC = ("reassoc", "contract")


def function(module: ir.Module, name: str, args: list[ir.Type], internal=False) -> ir.Function:
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name)
    fn.attributes.add("nounwind")
    for a in fn.args:
        if a.type == PTR:
            a.add_attribute("noalias")
    if internal:
        fn.linkage = "internal"
    return fn


# per module: canonical body text -> the function first emitted with it (see ``shared``)
_BODIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_MD_REF = re.compile(r"!(\d+)\b")


def shared(module: ir.Module, fn: ir.Function) -> ir.Function:
    """``fn``, or the internal function emitted into ``module`` before it with the same body, in
    which case ``fn`` is dropped from the module. Call it before anything refers to ``fn``.

    Why: a GEMM kernel's helpers (its packers, epilogue and task loop, ``tensorize.py``) depend
    only on the kernel's shapes and plan, and a transformer repeats its shapes: BERT's 18 GEMM
    kernels emitted 72 helpers, most of them copies, and LLVM optimized and compiled each copy
    (1.6 of the module's 2.1 s of LLVM time went to the helpers). Equal means equal printed IR
    with the function's own name blanked and each loop-metadata ID replaced by its hints (the
    IDs are distinct nodes, numbered per loop)."""
    nodes = {md.name: md for md in module.metadata}

    def hint(m: re.Match) -> str:
        md = nodes.get(m.group(1))
        if md is None or not md.operands or md.operands[0] is not md:
            return m.group(0)
        return "!loop(" + ",".join(op.get_reference() for op in md.operands[1:]) + ")"

    key = _MD_REF.sub(hint, str(fn).replace(fn.get_reference(), "@SELF", 1))
    bodies = _BODIES.setdefault(module, {})
    first = bodies.setdefault(key, fn)
    if first is not fn:
        del module.globals[fn.name]
    return first


class FunctionEmitter(ExprEmitter):
    """Emits statements into one function; ``parallel`` is true inside an outlined body."""

    def __init__(self, module: ir.Module, fn: ir.Function, bufs: dict, parallel=False):
        self.module, self.fn, self.bufs = module, fn, dict(bufs)
        self.env: dict[str, ir.Value] = {}
        self.in_parallel = parallel
        self.vector_depth = 0  # vectorized loops around the statement being emitted
        self.bounds: dict[str, int] = {}  # constant iteration counts of the enclosing loops
        self.entry = fn.append_basic_block("entry")
        self.b = ir.IRBuilder(fn.append_basic_block("start"))
        self.n_outlined = 0

    def new_block(self, name: str) -> ir.Block:
        return self.fn.append_basic_block(name)

    def finish(self) -> None:
        self.b.ret_void()
        ir.IRBuilder(self.entry).branch(self.fn.blocks[1])

    def alloca(self, typ: ir.Type, count: int = 1) -> ir.Value:
        eb = ir.IRBuilder(self.entry)
        eb.position_at_start(self.entry)
        slot = eb.alloca(typ, size=ir.Constant(I64, count) if count != 1 else None)
        slot.align = 32
        slot.type = PTR  # llvmlite still types allocas; the module uses opaque pointers only
        return slot

    # ------------------------------------------------------------------ statements
    def stmt(self, s: Stmt) -> None:
        if isinstance(s, Seq):
            for c in s.stmts:
                self.stmt(c)
        elif isinstance(s, For):
            if s.kind is LoopKind.PARALLEL and not self.in_parallel:
                self.parallel(s)
            else:
                self.loop(s.var, ir.Constant(I64, 0), self.expr(s.extent), s.body, s.kind)
        elif isinstance(s, Store):
            self.store(s.buffer, s.index, self.expr(s.value))
        elif isinstance(s, Accumulate):
            self.accumulate(s)
        elif isinstance(s, Let):
            self.env[s.var.name] = self.expr(s.value)
            self.stmt(s.body)
            del self.env[s.var.name]
        elif isinstance(s, If):
            self.branch(s)
        elif isinstance(s, Allocate):
            self.allocate(s)
        else:
            raise TypeError(f"cannot emit {type(s).__name__}")

    def accumulate(self, s: Accumulate) -> None:
        t, v = s.buffer.dtype, s.value
        fmf = _REASSOC if is_float(t) else ()
        if fmf and s.op is ReduceOp.SUM and isinstance(v, BinOp) and v.op is BinaryOp.MUL:
            val = self.b.fmul(self.expr(v.a), self.expr(v.b), flags=list(_REASSOC))
        else:
            val = self.expr(v)
        addr = self.address(s.buffer, s.index)
        old = self.b.load(addr, typ=mem_type(t))
        if fmf and s.op in (ReduceOp.MAX, ReduceOp.MIN) and not self.vector_depth:
            new = self.nan_minmax(s.op, old, val)
        else:
            new = self.binop(_REDUCE[s.op], t, old, val, fmf=fmf)
        self.b.store(new, addr)

    def nan_minmax(self, op: ReduceOp, old: ir.Value, val: ir.Value) -> ir.Value:
        """``max(old, val)`` (``min``) propagating a NaN of either, as ``np.maximum``: the x86
        ``maxps`` pattern (``val > old ? val : old``, which keeps a NaN ``old``) and a fix-up
        for a NaN ``val`` that reads ``val`` only, so it stays off the accumulator's dependency
        chain; ``llvm.maximum`` expands to a longer sequence on x86. Used outside vectorized
        loops only: the loop vectorizer recognizes ``llvm.maximum`` reductions, not this."""
        b = self.b
        m = b.select(b.fcmp_ordered(">" if op is ReduceOp.MAX else "<", val, old), val, old)
        return b.select(b.fcmp_unordered("uno", val, val), val, m)

    def loop(self, var: str, lo, hi, body: Stmt, kind: LoopKind = LoopKind.SERIAL) -> None:
        pre = self.b.block
        head, bb, done = (self.new_block(f"{var}.{s}") for s in ("head", "body", "exit"))
        self.b.branch(head)
        self.b.position_at_end(head)
        iv = self.b.phi(I64, name=var)
        iv.add_incoming(lo, pre)
        self.b.cbranch(self.b.icmp_signed("<", iv, hi), bb, done)
        self.b.position_at_end(bb)
        self.env[var] = iv
        if isinstance(hi, ir.Constant) and isinstance(lo, ir.Constant) and lo.constant == 0:
            self.bounds[var] = hi.constant  # iterations, for ExprEmitter.block_lane
        vec = kind is LoopKind.VECTORIZED
        self.vector_depth += vec
        self.stmt(body)
        self.vector_depth -= vec
        del self.env[var]
        self.bounds.pop(var, None)
        nxt = self.b.add(iv, ir.Constant(I64, 1), flags=["nuw", "nsw"])
        back = self.b.branch(head)
        md = self.loop_metadata(kind)
        if md is not None:
            back.set_metadata("llvm.loop", md)
        iv.add_incoming(nxt, self.b.block)
        self.b.position_at_end(done)

    def loop_metadata(self, kind: LoopKind):
        if kind is LoopKind.VECTORIZED:
            hint = self.module.add_metadata(
                ["llvm.loop.vectorize.enable", ir.Constant(ir.IntType(1), 1)]
            )
        elif kind is LoopKind.UNROLLED:
            hint = self.module.add_metadata(["llvm.loop.unroll.full"])
        else:
            return None
        # a loop ID is a distinct node whose first operand is itself
        md = ir.MDValue(self.module, [], name=str(len(self.module.metadata)))
        md.operands = (md, hint)
        return md

    def branch(self, s: If) -> None:
        cond = self.expr(s.cond)
        then_bb, join = self.new_block("if.then"), self.new_block("if.end")
        else_bb = self.new_block("if.else") if s.orelse is not None else join
        self.b.cbranch(cond, then_bb, else_bb)
        for bb, body in ((then_bb, s.then), (else_bb, s.orelse)):
            if body is not None:
                self.b.position_at_end(bb)
                self.stmt(body)
                self.b.branch(join)
        self.b.position_at_end(join)

    def allocate(self, s: Allocate) -> None:
        buf = s.buffer
        count = math.prod(buf.shape)
        t = mem_type(buf.dtype)
        nbytes = count * np.dtype(buf.dtype).itemsize
        if nbytes <= STACK_LIMIT:
            self.bufs[buf.name] = self.alloca(t, count)
            self.stmt(s.body)
        else:
            malloc = self.declare("malloc", PTR, [I64])
            free = self.declare("free", ir.VoidType(), [PTR])
            p = self.b.call(malloc, [ir.Constant(I64, nbytes)])
            self.bufs[buf.name] = p
            self.stmt(s.body)
            self.b.call(free, [p])
        del self.bufs[buf.name]

    # ------------------------------------------------------------------ parallel loops
    def parallel(self, s: For) -> None:
        used = [n.buffer for n in walk(s.body) if isinstance(n, Load | Store | Accumulate)]
        bufs: list[Buffer] = list(dict.fromkeys(b for b in used if b.name in self.bufs))
        dims = {d for b in bufs for d in b.shape if isinstance(d, str)}
        names = sorted((free_vars(s.body) - {s.var} | dims) & set(self.env))
        scalars = [self.env[n] for n in names]
        types = [PTR] * len(bufs) + [v.type for v in scalars]
        self.n_outlined += 1
        stem = f"{self.fn.name}.par{self.n_outlined}"
        body_fn = function(self.module, stem, types + [I64, I64], internal=True)
        inner = FunctionEmitter(
            self.module,
            body_fn,
            {b.name: a for b, a in zip(bufs, body_fn.args, strict=False)},
            True,
        )
        inner.env.update(zip(names, body_fn.args[len(bufs) :], strict=False))
        labels = [b.name for b in bufs] + names + ["start", "end"]
        for a, label in zip(body_fn.args, labels, strict=True):
            a.name = label
        start, end = body_fn.args[-2:]
        inner.loop(s.var, start, end, s.body)
        inner.finish()
        # the trampoline the launcher calls: unpack the context struct, call the body
        ctx_t = ir.LiteralStructType(types)
        chunk = function(self.module, f"{stem}.chunk", [PTR, I64, I64], internal=True)
        tb = ir.IRBuilder(chunk.append_basic_block("entry"))
        ctx, lo, hi = chunk.args
        zero = ir.Constant(ir.IntType(32), 0)
        fields = [
            tb.load(tb.gep(ctx, [zero, ir.Constant(ir.IntType(32), n)], source_etype=ctx_t), typ=t)
            for n, t in enumerate(types)
        ]
        tb.call(body_fn, fields + [lo, hi])
        tb.ret_void()
        # the call site: fill the context, launch (or run serially without a launcher)
        ctx = self.alloca(ctx_t)
        for n, v in enumerate([self.bufs[b.name] for b in bufs] + scalars):
            self.b.store(
                v, self.b.gep(ctx, [zero, ir.Constant(ir.IntType(32), n)], source_etype=ctx_t)
            )
        n = self.expr(s.extent)
        glob = self.module.globals[PARALLEL_FOR]
        # typed as a pointer to the launcher's function type because llvmlite reads an indirect
        # callee's type from it; it prints ``void (ptr, ptr, i64)*``, which LLVM 22 still
        # parses as an opaque ``ptr``
        launch_t = ir.FunctionType(ir.VoidType(), [PTR, PTR, I64]).as_pointer()
        launch = self.b.load(glob, typ=launch_t)
        with self.b.if_else(self.b.icmp_unsigned("==", launch, ir.Constant(launch_t, None))) as (
            serial,
            threaded,
        ):
            with serial:
                self.b.call(chunk, [ctx, ir.Constant(I64, 0), n])
            with threaded:
                self.b.call(launch, [chunk, ctx, n])
