"""The tensor-core tile kernel (:mod:`eqsat.lower.gpu_mma`) as LLVM IR for NVPTX.

Consumes an :class:`eqsat.lower.gpu_mma.MmaPlan` and the kernel's
:class:`eqsat.backends.cuda.codegen.CudaEmitter` (block and thread index bound); emits the
kernel body: two ``addrspace(3)`` arrays (A and B, each two buffers of a 64 × 32 tile, rows
padded), the register-staged prefetch of the next K step, fragments read from shared memory
with plain 32-bit loads, ``mma.sync.aligned`` through inline PTX (``ir.InlineAsm``), float32
accumulators (allocas SROA promotes to registers), one CTA barrier per step and the
contraction's epilogue for each accumulator. The layouts and the loop-IR pieces are the plan's;
this module only spells them in IR.

PTX it relies on (sm_80+, PTX ISA 7.0): ``cvt.rn.f16.f32``, ``cvt.rn.bf16.f32``,
``cvt.rna.tf32.f32``; ``mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32`` and
``mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32``. ptxas accepts the result for sm_80 and
sm_90 (tests); that it runs and computes :func:`eqsat.lower.gpu_mma.emulate`'s result is NOT
verified: no GPU was available.
"""

from __future__ import annotations

from llvmlite import ir

from eqsat.backends.llvm.codegen_expr import I64
from eqsat.backends.llvm.emit import F32, loop
from eqsat.lower.contraction import ACC
from eqsat.lower.gpu_base import KSTEP, THREAD, WARP
from eqsat.lower.gpu_mma import (
    A_REGS,
    B_REGS,
    BK,
    BM,
    BN,
    MI,
    NI,
    STAGED,
    MmaPlan,
    a_frag,
    b_frag,
    stage_a,
    stage_b,
    warp_origin,
)
from eqsat.lower.loops import Var

I16, I32 = ir.IntType(16), ir.IntType(32)
SHARED = ir.PointerType(addrspace=3)

# precision -> (PTX of the float32 -> operand conversion, its register constraint, mma types)
_CVT = {
    "fp16": ("cvt.rn.f16.f32 $0, $1;", "=h,f", "m16n8k16.row.col.f32.f16.f16.f32"),
    "bf16": ("cvt.rn.bf16.f32 $0, $1;", "=h,f", "m16n8k16.row.col.f32.bf16.bf16.f32"),
    "tf32": ("cvt.rna.tf32.f32 $0, $1;", "=r,f", "m16n8k8.row.col.f32.tf32.tf32.f32"),
}


def _mma_asm(precision: str) -> ir.InlineAsm:
    regs = lambda first, n: "{" + ", ".join(f"${first + i}" for i in range(n)) + "}"  # noqa: E731
    text = (
        f"mma.sync.aligned.{_CVT[precision][2]} {regs(0, 4)}, {regs(4, A_REGS)}, "
        f"{regs(4 + A_REGS, B_REGS)}, {regs(4 + A_REGS + B_REGS, 4)};"
    )
    constraint = ",".join(["=f"] * 4 + ["r"] * (A_REGS + B_REGS) + ["0", "1", "2", "3"])
    fty = ir.FunctionType(ir.LiteralStructType([F32] * 4), [I32] * (A_REGS + B_REGS) + [F32] * 4)
    return ir.InlineAsm(fty, text, constraint)


def emit_mma(em, plan: MmaPlan) -> None:
    """The body of a tensor-core tile kernel (module doc) into ``em``'s function."""
    b, s = em.b, plan.shape
    elem = I16 if s.bits == 16 else I32
    cvt_text, cvt_con, _ = _CVT[plan.precision]
    cvt = ir.InlineAsm(ir.FunctionType(elem, [F32]), cvt_text, cvt_con)
    mma = _mma_asm(plan.precision)
    for name, e in plan.defs:
        em.env[name] = em.expr(e)
    tiles = {}
    for name, rows in (("a", BM), ("b", BN)):
        arr = ir.ArrayType(elem, 2 * rows * s.row)
        g = ir.GlobalVariable(em.module, arr, f"{em.fn.name}.{name}_tiles", addrspace=3)
        g.linkage, g.align = "internal", 16
        g.initializer = ir.Constant(arr, ir.Undefined)
        g.type = SHARED  # llvmlite types globals; the module uses opaque pointers only
        tiles[name] = (g, rows * s.row)  # the array, one buffer's elements

    def at(name: str, buf: ir.Value, row, col) -> ir.Value:
        g, size = tiles[name]
        off = em.expr(row * s.row + col)
        off = b.add(b.mul(buf, ir.Constant(I64, size)), off)
        return b.gep(g, [off], inbounds=True, source_etype=elem)

    barrier = em.declare("llvm.nvvm.barrier.cta.sync.aligned.all", ir.VoidType(), [I32])
    tid = Var(THREAD)
    lane = tid % WARP
    held = [em.alloca(elem) for _ in range(2 * STAGED)]  # the prefetched step, converted
    accs = [em.alloca(F32) for _ in range(MI * NI * 4)]
    for slot in accs:
        b.store(ir.Constant(F32, 0.0), slot)

    def fetch(step: ir.Value) -> None:  # global loads of a step into the held registers
        em.env[KSTEP] = step
        for i in range(STAGED):
            b.store(b.call(cvt, [em.expr(plan.a_stage(i))]), held[i])
            b.store(b.call(cvt, [em.expr(plan.b_stage(i))]), held[STAGED + i])
        del em.env[KSTEP]

    def put(buf: ir.Value) -> None:  # the held registers into shared buffer ``buf``
        for i in range(STAGED):
            r, k = stage_a(tid, i)
            b.store(b.load(held[i], typ=elem), at("a", buf, r, k))
            k, n = stage_b(tid, i)  # B is stored N × K: a fragment's K pairs are adjacent
            b.store(b.load(held[STAGED + i], typ=elem), at("b", buf, n, k))

    def frag(name: str, buf: ir.Value, row, col) -> ir.Value:  # one 32-bit fragment register
        return b.load(at(name, buf, row, col), typ=I32)

    zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
    fetch(zero)
    put(zero)
    b.call(barrier, [ir.Constant(I32, 0)])
    wr, wc = warp_origin(tid)
    with loop(b, 0, em.expr(plan.steps), name="kt") as kt:
        fetch(b.add(kt, one))  # in flight while this step multiplies (0 past the end)
        cur = b.and_(kt, one)
        for ks in range(BK // s.k):
            fa = []
            for mi in range(MI):
                cells = [a_frag(s, lane, reg, 0) for reg in range(A_REGS)]
                fa.append([frag("a", cur, wr + mi * 16 + r, ks * s.k + k) for r, k in cells])
            for ni in range(NI):
                cells = [b_frag(s, lane, reg, 0) for reg in range(B_REGS)]
                fb = [frag("b", cur, wc + ni * 8 + n, ks * s.k + k) for k, n in cells]
                for mi in range(MI):
                    slots = accs[(mi * NI + ni) * 4 :][:4]
                    c = [b.load(slot, typ=F32) for slot in slots]
                    d = b.call(mma, [*fa[mi], *fb, *c])
                    for j, slot in enumerate(slots):
                        b.store(b.extract_value(d, j), slot)
        put(b.xor(cur, one))
        b.call(barrier, [ir.Constant(I32, 0)])
    for mi in range(MI):
        for ni in range(NI):
            for c in range(4):
                em.env[ACC.name] = b.load(accs[(mi * NI + ni) * 4 + c], typ=F32)
                em.stmt(plan.epilogue(mi, ni, c))
    for name in (*dict(plan.defs), ACC.name):
        del em.env[name]
