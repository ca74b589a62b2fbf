"""The generated GEMM micro-kernel: an MR × NR tile of C from packed A and B, with an epilogue.

Consumes: the tile (``mr`` rows, ``nr`` = ``nv`` vectors of ``vw`` floats, from
``Capabilities.gemm_tile``), the k-unroll factor and an :class:`Epilogue`.
Produces the internal function
``micro(kc, Ap, Bp, C, ldc, mr, nr, load_c, last, bias)``: ``acc = Ap-strip @ Bp-panel`` over
``kc`` steps (layouts in ``pack.py``), then for every row ``r < mr`` and column ``j < nr``:
``C[r, j] = acc + (load_c ? C[r, j] : 0)``, and where ``last`` the epilogue
(``+ bias[j]``, ReLU, a caller's vector function) on top — fused in the store, before C is
written. ``mr < MR`` / ``nr < NR`` are the edge tiles: packing zero-pads them, so the same
FMAs run and the store is masked (``llvm.masked.store``; no scalar tail loop). The whole tile
takes one branch to unmasked stores. A caller may also emit narrower kernels (fewer vectors,
``ldb`` the packed panel's width) for a panel whose real columns fit them
(``tensorize._call_by_width``), so that padding columns cost no FMAs.

Why this shape (CODEGEN_NOTES, "GEMM"): LLVM's loop vectorizer never register-blocks, so the
accumulators are explicit SSA phis of ``<vw x float>`` (12 on AVX2), each k step broadcasts one
A float per row and loads NR/vw B vectors, and ``llvm.fma.v{vw}f32`` is called directly (GEMM
allows reassociation; LLVM 22 does not contract ``fmul``+``fadd`` by itself). That kernel reached
83/78/78–81 GFLOP/s at n = 256/512/1024 on Zen 3, OpenBLAS's level.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import llvmlite.ir as ir

from eqsat.backends.llvm.emit import (
    F32,
    I32,
    I64,
    PTR,
    Intrinsics,
    gep,
    i64,
    lane_mask,
    load_vec,
    masked_load,
    masked_store,
    splat,
    vec,
)

# With ``prefetch_b`` (a weight packed once, ``Plan.prepack_b``, read from L3 or memory: SwiGLU's
# 64 rows reuse each panel of a 2.8 MB weight only 8 times), the strips of a panel prefetch the
# *next* panel into L2 between them (``llvm.prefetch``, read, locality 1: prefetcht2), each strip
# its share: ``lines`` cache lines per main-loop iteration from the ``pf`` argument on (the
# caller points each strip at its share, :func:`prefetch_lines`). The first strip of a panel then
# finds it in L2 instead of waiting on L3 for ``KC × NR`` floats (48 KB: faster than L3
# delivers them to one core), and the other strips issue no prefetches for lines they already
# hold. Before, every strip prefetched its own panel ``B_PREFETCH_K`` = 16 k steps ahead (to
# L1), which hid little of L3's latency at the first strip and cost the others a load slot per
# line. Measured on this host (AVX-512, 8 × 48 tiles; the weights cold: 4 copies of each GEMM
# called in turn, as a model's weights are; 1 thread, min of 160 calls, interleaved, loadavg
# 4.6-4.8): 64×512×1376 789 → 732 µs, 64×1376×512 825 → 757 µs (the same panel prefetched by
# every strip: 752-761; to L1: 795-817, no gain; no prefetch at all: 817-844).
CACHE_LINE_FLOATS = 16


@dataclass(frozen=True)
class Epilogue:
    """Element-wise work fused into the micro-kernel's final store (after the last KC block).

    ``bias``: add ``bias[j]`` to column j (a length-N float32 vector argument).
    ``relu``: ``max(x, 0)`` keeping NaN (``x > 0 or unordered ? x : 0``), as ONNX Relu.
    ``vector_fn``: a later lowering's hook, ``(builder, <vw x float>) -> <vw x float>``, applied
    last; it must be element-wise (it also runs on masked-off lanes, which are then not stored).
    ``name`` labels the hook in function names so different hooks give different IR.
    """

    bias: bool = False
    relu: bool = False
    vector_fn: Callable[[ir.IRBuilder, ir.Value], ir.Value] | None = None
    name: str = ""
    # ``tile_fn(b, x, r, v, mask, ldc, extras, mr)``: the vector ``v`` of row ``r`` of the tile
    # (``mask``: its lanes in the tile, None when all are), with ``extras`` the function's
    # ``extra`` trailing pointer arguments (operands the caller points at the tile), applied
    # after ``vector_fn`` — ``tensorize.py``'s fused conv/matmul epilogues
    tile_fn: Callable | None = None
    extra: int = 0

    @property
    def empty(self) -> bool:
        return not (self.bias or self.relu or self.vector_fn or self.tile_fn)

    def apply(self, b: ir.IRBuilder, x: ir.Value, bias_v: ir.Value | None) -> ir.Value:
        if self.bias:
            x = b.fadd(x, bias_v)
        if self.relu:
            zero = ir.Constant(x.type, [0.0] * x.type.count)
            x = b.select(b.fcmp_unordered(">", x, zero), x, zero)
        if self.vector_fn is not None:
            x = self.vector_fn(b, x)
        return x


def emit_microkernel(
    module: ir.Module, mr: int, nr: int, vw: int, unroll: int, epilogue: Epilogue,
    name: str = "micro", ldb: int | None = None, prefetch_b: int = 0,
) -> ir.Function:
    """The micro-kernel of an ``mr × nr`` tile; ``ldb``: floats per k step of the packed B
    panel when the panel is wider than the tile (default ``nr``) — a narrower variant for the
    last, partial panel of a wider tile reads only its first ``nr`` columns; ``prefetch_b``:
    cache lines to prefetch into L2 per main-loop iteration, from a last argument ``pf`` on
    (0: none, no ``pf``; for a B packed once, see :data:`CACHE_LINE_FLOATS`'s comment)."""
    assert nr % vw == 0
    nv = nr // vw
    ldb = nr if ldb is None else ldb
    names = ["kc", "Ap", "Bp", "C", "ldc", "mr", "nr", "load_c", "last", "bias"]
    names += [f"e{i}" for i in range(epilogue.extra)] + (["pf"] if prefetch_b else [])
    types = [I64, PTR, PTR, PTR, I64, I64, I64, I64, I64, PTR] + [PTR] * epilogue.extra
    types += [PTR] if prefetch_b else []
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), types), name=name)
    fn.linkage = "internal"
    for arg, n in zip(fn.args, names, strict=True):
        arg.name = n
        if arg.type == PTR:
            arg.add_attribute("noalias")
    kc, ap, bp, c, ldc, mr_rt, nr_rt, load_c, last, bias = fn.args[:10]
    extras = fn.args[10:10 + epilogue.extra]
    pf = fn.args[-1] if prefetch_b else None
    intr = Intrinsics(module)
    fma = intr.fma(vw)
    vt = vec(vw)
    zero = ir.Constant(vt, [0.0] * vw)

    b = ir.IRBuilder(fn.append_basic_block("entry"))
    kmain = b.sub(kc, b.srem(kc, i64(unroll)), name="kmain")
    entry = b.block

    def kloop(tag, start_vals, bound, steps):
        """A k loop carrying (k, pa, pb, accs) as phis; returns the values at its exit."""
        head = b.append_basic_block(f"{tag}.head")
        body = b.append_basic_block(f"{tag}.body")
        done = b.append_basic_block(f"{tag}.done")
        pre = b.block
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(I64, f"{tag}.k")
        pa = b.phi(PTR, f"{tag}.pa")
        pb = b.phi(PTR, f"{tag}.pb")
        accs = [b.phi(vt, f"{tag}.acc{r}_{v}") for r in range(mr) for v in range(nv)]
        for phi, val in zip([k, pa, pb, *accs], start_vals, strict=True):
            phi.add_incoming(val, pre)
        b.cbranch(b.icmp_signed("<", k, bound), body, done)
        b.position_at_end(body)
        cur = list(accs)
        if pf is not None and tag == "main":  # this iteration's lines of the strip's share
            at = gep(b, pf, b.mul(k, i64(prefetch_b * CACHE_LINE_FLOATS // steps)))
            for line in range(prefetch_b):
                b.call(intr.prefetch(), [gep(b, at, line * CACHE_LINE_FLOATS),
                                         ir.Constant(I32, 0), ir.Constant(I32, 1),
                                         ir.Constant(I32, 1)])
        for u in range(steps):
            bv = [load_vec(b, gep(b, pb, u * ldb + v * vw), vw, align=4 * vw) for v in range(nv)]
            for r in range(mr):
                a = splat(b, b.load(gep(b, pa, u * mr + r), typ=F32, align=4), vw)
                for v in range(nv):
                    cur[r * nv + v] = b.call(fma, [a, bv[v], cur[r * nv + v]])
        nk = b.add(k, i64(steps))
        npa = gep(b, pa, steps * mr)
        npb = gep(b, pb, steps * ldb)
        for phi, val in zip([k, pa, pb, *accs], [nk, npa, npb, *cur], strict=True):
            phi.add_incoming(val, b.block)
        b.branch(head)
        b.position_at_end(done)
        return [k, pa, pb, *accs]

    b.position_at_end(entry)
    vals = kloop("main", [i64(0), ap, bp] + [zero] * (mr * nv), kmain, unroll)
    if unroll > 1:
        vals = kloop("rem", vals, kc, 1)
    accs = vals[3:]

    keep_c = b.icmp_signed("!=", load_c, i64(0))
    is_last = b.icmp_signed("!=", last, i64(0))
    full = b.and_(b.icmp_signed("==", mr_rt, i64(mr)), b.icmp_signed("==", nr_rt, i64(nr)))

    def finish(x, cptr, bias_v, mask, r, v):
        old = load_vec(b, cptr, vw) if mask is None else masked_load(b, intr, cptr, mask, vw)
        x = b.fadd(x, b.select(keep_c, old, zero))
        if not epilogue.empty:
            y = epilogue.apply(b, x, bias_v)
            if epilogue.tile_fn is not None:
                y = epilogue.tile_fn(b, y, r, v, mask, ldc, extras, mr_rt)
            x = b.select(is_last, y, x)
        if mask is None:
            b.store(x, cptr, align=4)
        else:
            masked_store(b, intr, x, cptr, mask, vw)

    with b.if_else(full) as (then, otherwise):
        with then:
            bias_vs = [load_vec(b, gep(b, bias, v * vw), vw) if epilogue.bias else None
                       for v in range(nv)]
            for r in range(mr):
                row = gep(b, c, b.mul(i64(r), ldc))
                for v in range(nv):
                    finish(accs[r * nv + v], gep(b, row, v * vw), bias_vs[v], None, r, v)
        with otherwise:
            colmasks = [lane_mask(b, v * vw, nr_rt, vw) for v in range(nv)]
            bias_vs = [masked_load(b, intr, gep(b, bias, v * vw), colmasks[v], vw)
                       if epilogue.bias else None for v in range(nv)]
            for r in range(mr):
                row = gep(b, c, b.mul(i64(r), ldc))
                on = splat(b, b.icmp_signed("<", i64(r), mr_rt), vw)
                for v in range(nv):
                    finish(accs[r * nv + v], gep(b, row, v * vw), bias_vs[v],
                           b.and_(colmasks[v], on), r, v)
    b.ret_void()
    return fn


def prefetch_lines(nr: int, unroll: int, strips: int) -> int:
    """Cache lines per main-loop iteration (``unroll`` k steps) that each of ``strips`` MR strips
    prefetches so that together they cover the next ``KC × nr`` panel (``nr / 16`` lines per k
    step): the strips of SwiGLU's 64 rows (8 of 8 × 48, unroll 2) take 1 line per iteration;
    a GEMV's one strip the whole panel, 6 lines."""
    per_k = -(-nr // CACHE_LINE_FLOATS)
    return max(1, -(-per_k * unroll // max(1, strips)))
