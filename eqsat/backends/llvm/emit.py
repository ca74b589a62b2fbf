"""Small llvmlite IR-builder helpers shared by the kernel generators (pack, micro-kernel, GEMM).

Consumes: an ``llvmlite.ir.IRBuilder`` positioned in a function.
Produces: counted loops whose induction variable is an SSA phi (no allocas, so the IR needs no
``mem2reg`` and the O0–O1 IR pipeline suffices — CODEGEN_NOTES: explicit-vector IR runs at
80–82 GFLOP/s at any IR level, compile time 53–88 ms at O0 vs 158–310 ms at O3), vector splats
and lane masks, and declarations of the intrinsics the kernels call (``llvm.fma.v*f32`` —
FMA contraction is not automatic in LLVM 22 — and ``llvm.masked.load/store`` for column tails).
"""

from __future__ import annotations

from contextlib import contextmanager

import llvmlite.ir as ir

F32 = ir.FloatType()
I1 = ir.IntType(1)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
PTR = ir.PointerType()


def i64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def vec(width: int) -> ir.VectorType:
    return ir.VectorType(F32, width)


@contextmanager
def loop(b: ir.IRBuilder, start, stop, step=1, name: str = "i"):
    """``for (i = start; i < stop; i += step)`` with ``i`` a phi; yields ``i``.

    The body may create blocks; the back edge leaves from wherever the builder ends.
    """
    start = start if isinstance(start, ir.Value) else i64(start)
    stop = stop if isinstance(stop, ir.Value) else i64(stop)
    step = step if isinstance(step, ir.Value) else i64(step)
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, stop), body, done)
    b.position_at_end(body)
    yield i
    i.add_incoming(b.add(i, step, name=f"{name}.next"), b.block)
    b.branch(head)
    b.position_at_end(done)


def smin(b: ir.IRBuilder, x, y, name: str = "") -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y, name=name)


def gep(b: ir.IRBuilder, base, index, name: str = "") -> ir.Value:
    """``base + index`` floats."""
    index = index if isinstance(index, ir.Value) else i64(index)
    return b.gep(base, [index], source_etype=F32, name=name)


def splat(b: ir.IRBuilder, x: ir.Value, width: int, name: str = "") -> ir.Value:
    undef = ir.Constant(ir.VectorType(x.type, width), ir.Undefined)
    v = b.insert_element(undef, x, ir.Constant(I32, 0))
    zero = ir.Constant(ir.VectorType(I32, width), [0] * width)
    return b.shuffle_vector(v, ir.Constant(v.type, ir.Undefined), zero, name=name)


def lane_mask(b: ir.IRBuilder, offset: int, count: ir.Value, width: int) -> ir.Value:
    """``<width x i1>``: lane ``l`` is on iff ``offset + l < count`` (``count`` an i64)."""
    lanes = ir.Constant(ir.VectorType(I64, width), [offset + j for j in range(width)])
    return b.icmp_signed("<", lanes, splat(b, count, width))


class Intrinsics:
    """The intrinsic declarations of one module, created on first use."""

    def __init__(self, module: ir.Module):
        self.module = module

    def _get(self, name: str, ret, args) -> ir.Function:
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, ir.FunctionType(ret, args), name=name)
        return fn

    def fma(self, width: int) -> ir.Function:
        v = vec(width)
        return self._get(f"llvm.fma.v{width}f32", v, [v, v, v])

    def prefetch(self) -> ir.Function:
        """``llvm.prefetch.p0(ptr, rw, locality, cache)``: a hint; it never faults."""
        return self._get("llvm.prefetch.p0", ir.VoidType(), [PTR, I32, I32, I32])

    def masked_load(self, width: int) -> ir.Function:
        v = vec(width)
        m = ir.VectorType(I1, width)
        return self._get(f"llvm.masked.load.v{width}f32.p0", v, [PTR, I32, m, v])

    def masked_gather(self, width: int) -> ir.Function:
        v = vec(width)
        m = ir.VectorType(I1, width)
        ptrs = ir.VectorType(PTR, width)
        return self._get(f"llvm.masked.gather.v{width}f32.v{width}p0", v, [ptrs, I32, m, v])

    def masked_store(self, width: int) -> ir.Function:
        v = vec(width)
        m = ir.VectorType(I1, width)
        return self._get(f"llvm.masked.store.v{width}f32.p0", ir.VoidType(), [v, PTR, I32, m])


def load_vec(b: ir.IRBuilder, ptr, width: int, align: int = 4, name: str = "") -> ir.Value:
    p = b.bitcast(ptr, PTR) if ptr.type != PTR else ptr
    return b.load(p, typ=vec(width), align=align, name=name)


def store_vec(b: ir.IRBuilder, value, ptr, align: int = 4) -> None:
    b.store(value, ptr, align=align)


def masked_load(b, intr: Intrinsics, ptr, mask, width: int, name: str = "") -> ir.Value:
    zero = ir.Constant(vec(width), [0.0] * width)
    return b.call(intr.masked_load(width), [ptr, ir.Constant(I32, 4), mask, zero], name=name)


def masked_store(b, intr: Intrinsics, value, ptr, mask, width: int) -> None:
    b.call(intr.masked_store(width), [value, ptr, ir.Constant(I32, 4), mask])
