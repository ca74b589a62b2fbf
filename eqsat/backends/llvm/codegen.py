"""LoopProgram → LLVM IR module, built with llvmlite's IR builder (no string templates).

Consumes a checked LoopProgram (:mod:`eqsat.lower.loops`, scheduled or not); produces an
``llvmlite.ir.Module`` that :mod:`eqsat.backends.llvm.runtime` optimizes (O3) and JITs.
Expressions are emitted by :mod:`eqsat.backends.llvm.codegen_expr`.

What the module holds:
- one function ``eqsat.k.<kernel>(ptr noalias <buffer>..., i64 <size>...)`` per kernel: its
  buffer params in order (row-major, element pointers; offsets by Horner's rule over the dims),
  then the kernel's size params (first-appearance order over its params' shapes). ``noalias`` is
  true by construction (each param is a distinct buffer) and lets LLVM vectorize without
  run-time alias checks and promote accumulators to registers.
- ``run(ptr buffers, ptr sizes)``: ``buffers`` is an array of pointers in the program's buffer
  order, ``sizes`` an array of i64 in ``program.sizes`` order; it calls the kernels in order.
- ``@eqsat.parallel_for``: a pointer the runtime sets to its thread-pool launcher
  ``void (ptr chunk, ptr ctx, i64 n)``; null means run parallel loops serially.

Statements, and why:
- ``For``: blocks ``head`` (i64 phi, ``i < n``), ``body``, back edge; O3 rotates it. The kind
  becomes loop metadata on the back edge. VECTORIZED → ``llvm.loop.vectorize.enable``: the
  vectorizer widens the scalar body, if-converts guards and handles tails; an explicit
  ``<8 x float>`` body would redo all of that for every expression kind, and on the
  memory-bound kernels that dominate a hand-written one measured within noise of the metadata
  loop (17.7 vs 17.1 GB/s for relu(a*x+b), benchmarks/codegen_bench.py). UNROLLED →
  ``llvm.loop.unroll.full`` (extents are constants). SERIAL → none (O3 may still vectorize).
  A kernel whose root loop carries ``tensorize=gemm`` (a contraction,
  :mod:`eqsat.lower.contraction`) is emitted by :mod:`eqsat.backends.llvm.tensorize` as packed
  GEMM on the register-blocked micro-kernel; other annotations are ignored.
- PARALLEL (the outermost one; nested parallel loops run serially inside it): the loop is
  outlined into ``<kernel>.par<n>(ptr noalias bufs..., scalars..., i64 start, i64 end)``, the
  loop over ``[start, end)``, plus a trampoline ``(ptr ctx, i64 start, i64 end)`` that unpacks a
  stack struct of those arguments; the kernel calls the launcher with the trampoline, the
  context and the extent.
- ``Accumulate``: load, op, store. Float ops carry ``reassoc contract`` (the IR says the
  reduction may run in any order) and so does a product feeding a sum, so LLVM may form FMAs and
  vectorize the reduction; no other arithmetic gets fast-math flags.
- ``Let`` binds an SSA value; ``If`` branches; ``Allocate`` is an entry-block ``alloca`` (32-byte
  aligned) up to 256 KiB, else ``malloc``/``free`` around the body.
"""

from __future__ import annotations

from llvmlite import ir

from eqsat.backends.llvm.codegen_expr import I64, PTR
from eqsat.backends.llvm.codegen_stmt import PARALLEL_FOR, STACK_LIMIT, FunctionEmitter, function
from eqsat.backends.llvm.tensorize import ARENA, emit_tensorized, in_arena
from eqsat.lower.check import check_program
from eqsat.lower.contraction import match_contraction, tensorized
from eqsat.lower.loops import Kernel, LoopProgram

__all__ = ["ENTRY", "PARALLEL_FOR", "RELEASE", "STACK_LIMIT", "emit", "kernel_sizes",
           "kernel_symbol"]

ENTRY = "run"
RELEASE = "eqsat_release"  # frees what the kernels packed at their first call


def kernel_symbol(k: Kernel) -> str:
    return f"eqsat.k.{k.name}"


def kernel_sizes(k: Kernel) -> tuple[str, ...]:
    return tuple(dict.fromkeys(d for p in k.params for d in p.shape if isinstance(d, str)))


def emit(program: LoopProgram) -> ir.Module:
    """The LLVM module of ``program`` (checked first): kernels, parallel bodies, ``run``."""
    check_program(program)
    module = ir.Module(name=program.name)
    launcher = ir.GlobalVariable(module, PTR, PARALLEL_FOR)
    launcher.initializer = ir.Constant(PTR, None)
    kernels = [_emit_kernel(module, k) for k in program.kernels]
    run = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR]), ENTRY)
    run.attributes.add("nounwind")
    b = ir.IRBuilder(run.append_basic_block("entry"))
    bufs, sizes = run.args
    ptrs = {
        buf.name: b.load(b.gep(bufs, [ir.Constant(I64, n)], source_etype=PTR), typ=PTR)
        for n, buf in enumerate(program.buffers)
    }
    dims = {
        s: b.load(b.gep(sizes, [ir.Constant(I64, n)], source_etype=I64), typ=I64)
        for n, s in enumerate(program.sizes)
    }
    for k, fn in zip(program.kernels, kernels, strict=True):
        b.call(fn, [ptrs[p.name] for p in k.params] + [dims[s] for s in kernel_sizes(k)])
    b.ret_void()
    _emit_release(module)
    return module


def _emit_release(module: ir.Module) -> None:
    """``release()``: free the weights the tensorized kernels packed on their first call (module
    globals ``….pk.a`` / ``….pk.b``, or the arena that holds them, ``tensorize.ARENA``) and
    forget their sources, so that the
    runtime can give the memory back when a program is dropped (it would leak otherwise: the
    globals live in the machine code, which Python does not see)."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), []), RELEASE)
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    free = None
    for g in list(module.global_values):
        if not isinstance(g, ir.GlobalVariable):
            continue
        copy = g.name.endswith((".pk.a", ".pk.b"))
        if g.name == ARENA or (copy and not in_arena(g.name)):  # a copy in the arena: freed
            if free is None:  # with it
                free = module.globals.get("free") or ir.Function(
                    module, ir.FunctionType(ir.VoidType(), [PTR]), "free")
            b.call(free, [b.load(g, typ=PTR)])
        if g.name == ARENA or copy:
            b.store(ir.Constant(PTR, None), g)
        if copy:
            b.store(ir.Constant(PTR, None), module.globals[f"{g.name}.src"])
    b.ret_void()


def _emit_kernel(module: ir.Module, k: Kernel) -> ir.Function:
    sizes = kernel_sizes(k)
    fn = function(module, kernel_symbol(k), [PTR] * len(k.params) + [I64] * len(sizes))
    if tensorized(k) in ("gemm", "igemm") and any(p.blocked for p in k.params):
        # their packers compute row-major addresses themselves (layout.py blocks no such temp)
        raise ValueError(f"kernel {k.name}: tensorize={tensorized(k)} with a blocked buffer")
    if tensorized(k) == "gemm":
        c = match_contraction(k)
        if c is None:
            raise ValueError(f"kernel {k.name}: tensorize=gemm, but it is not a contraction")
        return emit_tensorized(module, fn, k, c, sizes)
    if tensorized(k) == "nchwc":  # a direct convolution in blocked channels (direct_conv.py)
        from eqsat.backends.llvm.direct_conv import emit_direct_conv
        from eqsat.lower.conv_direct import match_direct_conv

        c = match_contraction(k)
        d = None if c is None else match_direct_conv(c)
        if d is None:
            raise ValueError(f"kernel {k.name}: tensorize=nchwc, but it is not a direct conv")
        return emit_direct_conv(module, fn, k, d, sizes)
    if tensorized(k) == "igemm":  # an int8 GEMM on the VNNI micro-kernel (schedule_int8)
        from eqsat.backends.llvm.vnni_kernel import emit_int8_kernel

        return emit_int8_kernel(module, fn, k, sizes)
    for arg, p in zip(fn.args, k.params, strict=False):
        arg.name = p.name
    env = {s: a for s, a in zip(sizes, fn.args[len(k.params) :], strict=True)}
    for a, s in zip(fn.args[len(k.params) :], sizes, strict=True):
        a.name = s
    em = FunctionEmitter(module, fn, {p.name: a for p, a in zip(k.params, fn.args, strict=False)})
    em.env.update(env)
    em.stmt(k.body)
    em.finish()
    return fn


