"""Generated packing routines: A into MR-row strips, B into NR-column panels.

Consumes: a :class:`~eqsat.backends.llvm.gemm.GemmConfig`-like tile (``mr``, ``nr``, ``vw``,
``kc``) and an ``llvmlite.ir.Module`` to add functions to.
Produces two internal functions (their layouts are the micro-kernel's contract):

* ``pack_a(A, lda, mc, kc, Ap)``: the ``mc × kc`` block at ``A`` (row stride ``lda``) as
  ``ceil(mc/MR)`` strips; strip ``s`` holds ``Ap[s*kc*MR + k*MR + r] = A[s*MR + r, k]``, rows past
  ``mc`` zero — so the micro-kernel reads one broadcast per row and k from consecutive floats.
* ``pack_b(B, ldb, K, N, Bp, p0, p1)``: panels ``p0 ≤ p < p1`` of the whole ``K × N`` B, for
  every KC block: ``Bp[pc*Npad + p*kc*NR + k*NR + j] = B[pc + k, p*NR + j]`` (``Npad`` = N rounded
  up to NR, columns past N zero, ``kc`` the block's depth). A panel of one KC block is contiguous
  and read with two aligned vector loads per k. Exported (``<name>_pack_b``) so that constant
  weights are packed once, at compile time, by this same generated code.

Why: CODEGEN_NOTES — B packed in 16-column panels reached 67 GFLOP/s at 512 but ~40 at 1024;
packing A too (six rows 4 KiB apart alias in L1 otherwise) lifted it to 78–81, OpenBLAS's level.
"""

from __future__ import annotations

import llvmlite.ir as ir

from eqsat.backends.llvm.emit import (
    F32,
    I64,
    PTR,
    Intrinsics,
    gep,
    i64,
    lane_mask,
    load_vec,
    loop,
    masked_load,
    smin,
)


def _fn(module: ir.Module, name: str, nargs: int, names: list[str], linkage="internal"):
    types = [PTR if n in ("A", "Ap", "B", "Bp") else I64 for n in names]
    assert len(types) == nargs
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), types), name=name)
    fn.linkage = linkage
    for arg, n in zip(fn.args, names, strict=True):
        arg.name = n
        if arg.type == PTR:
            arg.add_attribute("noalias")
    return fn, ir.IRBuilder(fn.append_basic_block("entry"))


def emit_pack_a(module: ir.Module, mr: int, name: str = "pack_a") -> ir.Function:
    fn, b = _fn(module, name, 5, ["A", "lda", "mc", "kc", "Ap"])
    a, lda, mc, kc, ap = fn.args
    zero = ir.Constant(F32, 0.0)
    nfull = b.sdiv(mc, i64(mr), name="nfull")

    def strip(s, rows_valid):
        """Pack strip ``s``; ``rows_valid`` None = all MR rows, else the i64 count."""
        dst0 = gep(b, ap, b.mul(s, b.mul(kc, i64(mr))))
        rowptrs = []
        for r in range(mr):
            row = b.add(b.mul(s, i64(mr)), i64(r))
            if rows_valid is not None:  # clamp to a valid row; the value is zeroed below
                row = smin(b, row, b.sub(mc, i64(1)))
            rowptrs.append(gep(b, a, b.mul(row, lda)))
        with loop(b, 0, kc, name="k") as k:
            dst = gep(b, dst0, b.mul(k, i64(mr)))
            for r in range(mr):
                v = b.load(gep(b, rowptrs[r], k), typ=F32, align=4)
                if rows_valid is not None:
                    v = b.select(b.icmp_signed("<", i64(r), rows_valid), v, zero)
                b.store(v, gep(b, dst, r), align=4)

    with loop(b, 0, nfull, name="s") as s:
        strip(s, None)
    rem = b.sub(mc, b.mul(nfull, i64(mr)), name="rem")
    with b.if_then(b.icmp_signed(">", rem, i64(0))):
        strip(nfull, rem)
    b.ret_void()
    return fn


def emit_pack_b(
    module: ir.Module, nr: int, vw: int, kcb: int, name: str, linkage: str = "external"
) -> ir.Function:
    fn, b = _fn(module, name, 7, ["B", "ldb", "K", "N", "Bp", "p0", "p1"], linkage)
    bsrc, ldb, kdim, ndim, bp, p0, p1 = fn.args
    pack_panels(b, lambda row: gep(b, bsrc, b.mul(row, ldb)), kdim, ndim, bp, p0, p1,
                nr=nr, vw=vw, kcb=kcb)
    b.ret_void()
    return fn


def pack_panels(b: ir.IRBuilder, row_ptr, kdim, ndim, bp, p0, p1, *, nr: int, vw: int,
                kcb: int) -> None:
    """Panels ``p0 ≤ p < p1`` of a ``K × N`` B whose row ``k`` starts at ``row_ptr(k)`` (an i64
    → pointer emitter: a strided matrix, or pieces of several buffers), in ``emit_pack_b``'s
    layout; whole panels with plain vector loads, the last one masked."""
    intr = Intrinsics(b.module)
    nv = nr // vw
    npad = b.mul(b.sdiv(b.add(ndim, i64(nr - 1)), i64(nr)), i64(nr), name="npad")
    with loop(b, p0, p1, name="p") as p:
        col = b.mul(p, i64(nr), name="col")
        ncols = b.sub(ndim, col, name="ncols")
        full = b.icmp_signed(">=", ncols, i64(nr))
        masks = [lane_mask(b, v * vw, ncols, vw) for v in range(nv)]
        with loop(b, 0, kdim, kcb, name="pc") as pc:
            kc = smin(b, i64(kcb), b.sub(kdim, pc), name="kc")
            dst0 = gep(b, bp, b.add(b.mul(pc, npad), b.mul(p, b.mul(kc, i64(nr)))))
            with b.if_else(full) as (then, otherwise):
                for masked in (False, True):
                    with otherwise if masked else then:
                        with loop(b, 0, kc, name="k") as k:
                            src = gep(b, row_ptr(b.add(pc, k)), col)
                            dst = gep(b, dst0, b.mul(k, i64(nr)))
                            for v in range(nv):
                                s = gep(b, src, v * vw)
                                x = (masked_load(b, intr, s, masks[v], vw) if masked
                                     else load_vec(b, s, vw))
                                b.store(x, gep(b, dst, v * vw), align=4 * vw)
