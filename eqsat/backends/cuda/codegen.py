"""GPU-scheduled kernels → LLVM IR modules for ``nvptx64-nvidia-cuda`` → PTX.

Consumes a checked, GPU-scheduled LoopProgram (:mod:`eqsat.lower.gpu_schedule`: each kernel's
bound loops are its outermost nest); produces one :class:`GpuKernel` per kernel: its llvmlite
module (as generated), its launch configuration and its PTX per architecture
(:data:`eqsat.backends.cuda.toolchain.ARCHS`).

One module per kernel, so each kernel's PTX stands alone (``--emit asm`` writes a file a kernel)
and libdevice is linked only into the kernels that call a math function.

What a kernel is (CODEGEN_NOTES, "NVPTX"):
- ``define ptx_kernel void @<symbol>(ptr addrspace(1) noalias <buffer>..., i64 <size>...)``:
  buffers in the kernel's param order (global memory; O3 infers ``readonly`` for a buffer the
  kernel never writes — llvmlite cannot spell it — and with ``noalias`` its loads become
  ``ld.global.nc``), then the
  size params in first-appearance order (:func:`eqsat.backends.llvm.codegen.kernel_sizes`, the
  CPU backend's order). The symbol is the kernel name with everything but ``[A-Za-z0-9_]``
  replaced (PTX identifiers have no dots).
- the block loop's variable is ``ctaid.x`` and the thread loop's ``tid.x``
  (``@llvm.nvvm.read.ptx.sreg.*``, zero-extended to the int64 index type); the rest of the body
  is emitted by the CPU backend's statement and expression emitters
  (:class:`eqsat.backends.llvm.codegen_stmt.FunctionEmitter`), which are target-neutral but for
  math calls and allocation, overridden here:
- math: an intrinsic with a ``libdevice`` name in the intrinsic table
  (:mod:`eqsat.lower.intrinsics`) calls ``__nv_<name>f`` (float32) or ``__nv_<name>`` (float64);
  float16 math runs in float32 (the shared emitter widens it); the others (floor, fabs, fma,
  min/max) are LLVM intrinsics NVPTX lowers itself.
- ``Allocate``: an ``alloca`` (per-thread local memory), refused above :data:`LOCAL_LIMIT`.
- parallel loops (a CPU schedule) run serially; none appear under the GPU schedules.
- a ``tensorize=gpu_tile16`` contraction: :func:`_emit_tile` (shared memory is two
  ``addrspace(3)`` globals, the barrier ``@llvm.nvvm.barrier.cta.sync.aligned.all(i32 0)``).
- a ``tensorize=gpu_mma_<precision>`` contraction: the tensor-core tile kernel
  (:mod:`eqsat.backends.cuda.mma`).

Then (:func:`to_ptx`): libdevice is linked in when a ``__nv_`` function is declared, every
function but the kernel becomes internal (2.06 s / 693 KB of PTX → 245 ms / 1.8 KB in the
notes), the module is optimized at O3 for sm_80 and emitted for each architecture.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir

from eqsat.backends.cuda.mma import emit_mma
from eqsat.backends.cuda.toolchain import ARCHS, TRIPLE, libdevice_bitcode, target_machine
from eqsat.backends.llvm.codegen import kernel_sizes
from eqsat.backends.llvm.codegen_expr import I64
from eqsat.backends.llvm.codegen_stmt import FunctionEmitter
from eqsat.backends.llvm.emit import F32, loop
from eqsat.lower.analysis import outer_nest
from eqsat.lower.check import check_program
from eqsat.lower.contraction import ACC, flat_index
from eqsat.lower.gpu_mma import mma_plan, mma_precision
from eqsat.lower.gpu_schedule import (
    BLOCK,
    KSTEP,
    LANE,
    THREAD,
    TILE,
    WARP,
    Launch,
    TilePlan,
    launch,
    strided,
    tile_plan,
    warp_role,
)
from eqsat.lower.intrinsics import INTRINSICS
from eqsat.lower.loops import (
    Accumulate,
    Allocate,
    Buffer,
    BufferKind,
    Const,
    For,
    If,
    Kernel,
    Let,
    LoopIRError,
    LoopProgram,
    Seq,
    Stmt,
    Store,
    Var,
    seq,
)

GLOBAL = ir.PointerType(addrspace=1)
SHARED = ir.PointerType(addrspace=3)
I32 = ir.IntType(32)
LOCAL_LIMIT = 16 * 1024  # bytes of one Allocate per thread (local memory)
OPT_ARCH = "sm_80"  # the IR is optimized once, for the oldest architecture, and emitted for each


def kernel_symbol(k: Kernel) -> str:
    return "eqsat_" + re.sub(r"[^A-Za-z0-9_]", "_", k.name)


@dataclass
class GpuKernel:
    kernel: Kernel
    symbol: str
    launch: Launch
    sizes: tuple[str, ...]
    ir: str  # the module as generated (before linking and optimization)
    ptx: dict[str, str] = field(default_factory=dict)  # arch -> PTX


class CudaEmitter(FunctionEmitter):
    """The CPU backend's statement emitter with the GPU's math and local buffers, and the
    warp roles of a warp-rows kernel (``self.lane`` set; :func:`eqsat.lower.gpu_schedule.
    warp_role`)."""

    lane: ir.Value | None = None
    plain = False  # inside a lane's own loop: statements are emitted as they are

    def stmt(self, s: Stmt) -> None:
        if self.lane is None or self.plain or isinstance(s, Seq | Allocate | Let | If):
            return super().stmt(s)  # (the nested statements come back here)
        role = warp_role(s)
        if role == "all":
            super().stmt(s)
        elif role == "lane0":
            self.on_lane0(s)
            self.syncwarp()
        elif role == "spread":
            self.lanes(strided(*outer_nest(s)))
            self.syncwarp()
        elif role == "reduce":
            self.warp_reduce(s)
        else:
            raise LoopIRError(f"{type(s).__name__} has no warp role")

    def lanes(self, s: Stmt) -> None:
        self.plain = True
        super().stmt(s)
        self.plain = False

    def on_lane0(self, s: Stmt) -> None:
        with self.b.if_then(self.b.icmp_unsigned("==", self.lane, ir.Constant(I64, 0))):
            self.lanes(s)

    def syncwarp(self) -> None:
        fn = self.declare("llvm.nvvm.bar.warp.sync", ir.VoidType(), [I32])
        self.b.call(fn, [ir.Constant(I32, -1)])

    def warp_reduce(self, s: For) -> None:
        """Each lane's partial over its strided iterations, a butterfly of shuffles (every lane
        ends with the total), then the accumulation into the target (lane 0's for a global
        one)."""
        nest, acc = outer_nest(s)
        part = Buffer("gpu.part", (1,), "float32", BufferKind.LOCAL)
        self.bufs[part.name] = self.alloca(F32)
        init = Store(part, (Const(0),), Const(acc.op.identity("float32"), "float32"))
        self.lanes(seq(init, strided(nest, Accumulate(part, (Const(0),), acc.value, acc.op))))
        shfl = self.declare("llvm.nvvm.shfl.sync.bfly.f32", F32, [I32, F32, I32, I32])
        lanes = [ir.Constant(I32, v) for v in (-1, WARP - 1)]
        for offset in (16, 8, 4, 2, 1):
            v = self.b.load(self.bufs[part.name], typ=F32)
            self.env["gpu.other"] = self.b.call(
                shfl, [lanes[0], v, ir.Constant(I32, offset), lanes[1]]
            )
            self.lanes(Accumulate(part, (Const(0),), Var("gpu.other", "float32"), acc.op))
        self.env["gpu.total"] = self.b.load(self.bufs[part.name], typ=F32)
        final = Accumulate(acc.buffer, acc.index, Var("gpu.total", "float32"), acc.op)
        if acc.buffer.kind is BufferKind.LOCAL:
            self.lanes(final)
        else:
            self.on_lane0(final)
            self.syncwarp()
        del self.env["gpu.other"], self.env["gpu.total"], self.bufs[part.name]

    def call(self, name: str, t: str, args: list[ir.Value]) -> ir.Value:
        lib = INTRINSICS[name].libdevice if name in INTRINSICS else None
        if lib is not None and t in ("float32", "float64"):
            fname = f"__nv_{lib}{'f' if t == 'float32' else ''}"
            return self.b.call(self.declare(fname, args[0].type, [a.type for a in args]), args)
        return super().call(name, t, args)

    def allocate(self, s: Allocate) -> None:
        nbytes = math.prod(s.buffer.shape) * np.dtype(s.buffer.dtype).itemsize
        if nbytes > LOCAL_LIMIT:
            raise LoopIRError(
                f"local buffer {s.buffer.name}: {nbytes} B per GPU thread > {LOCAL_LIMIT}"
            )
        super().allocate(s)


def _emit_tile(em: CudaEmitter, plan: TilePlan) -> None:
    """A GPU_TILE kernel (:class:`eqsat.lower.gpu_schedule.TilePlan`): each thread stages one
    cell of the A and of the B tile into shared memory (two ``addrspace(3)`` arrays), barrier,
    accumulates its row × column of the tiles (an FMA chain), barrier, for each K step; then
    the guarded epilogue. The plan's loop-IR expressions go through the shared emitter."""
    b, T = em.b, TILE
    for name, e in plan.defs:
        em.env[name] = em.expr(e)
    arr = ir.ArrayType(F32, T * T)
    shared = []
    for name in ("a", "b"):
        g = ir.GlobalVariable(em.module, arr, f"{em.fn.name}.{name}_tile", addrspace=3)
        g.linkage, g.align = "internal", 16
        g.initializer = ir.Constant(arr, ir.Undefined)
        g.type = SHARED  # llvmlite types globals; the module uses opaque pointers only
        shared.append(g)
    sa, sb = shared
    zero = ir.Constant(I32, 0)

    def cell(g, i: ir.Value) -> ir.Value:
        return b.gep(g, [zero, i], inbounds=True, source_etype=arr)

    barrier = em.declare("llvm.nvvm.barrier.cta.sync.aligned.all", ir.VoidType(), [I32])
    mine = em.env[THREAD]
    acc = em.alloca(F32)
    b.store(ir.Constant(F32, 0.0), acc)
    with loop(b, 0, em.expr(plan.steps), name="kt") as kt:
        em.env[KSTEP] = kt
        b.store(em.expr(plan.a_stage), cell(sa, mine))
        b.store(em.expr(plan.b_stage), cell(sb, mine))
        b.call(barrier, [zero])
        total = b.load(acc, typ=F32)
        for kk in range(T):
            x = b.load(cell(sa, em.expr(plan.a_cell(Const(kk)))), typ=F32)
            y = b.load(cell(sb, em.expr(plan.b_cell(Const(kk)))), typ=F32)
            total = b.fadd(total, b.fmul(x, y, flags=["contract"]), flags=["contract"])
        b.store(total, acc)
        b.call(barrier, [zero])
        del em.env[KSTEP]
    em.env[ACC.name] = b.load(acc, typ=F32)
    em.stmt(plan.epilogue)
    for name in (*dict(plan.defs), ACC.name):
        del em.env[name]


def _sreg(em: CudaEmitter, name: str) -> ir.Value:
    fn = em.declare(f"llvm.nvvm.read.ptx.sreg.{name}", I32, [])
    return em.b.zext(em.b.call(fn, []), I64, name=name.replace(".", "_"))


def emit_kernel(k: Kernel) -> tuple[ir.Module, GpuKernel]:
    """The LLVM module of one GPU-scheduled kernel (LoopIRError when it is not one)."""
    lau = launch(k)
    sizes = kernel_sizes(k)
    symbol = kernel_symbol(k)
    module = ir.Module(name=k.name)
    module.triple = TRIPLE
    fn = ir.Function(
        module, ir.FunctionType(ir.VoidType(), [GLOBAL] * len(k.params) + [I64] * len(sizes)),
        symbol,
    )  # fmt: skip
    fn.calling_convention = "ptx_kernel"
    fn.attributes.add("nounwind")
    for a, p in zip(fn.args, k.params, strict=False):
        a.name = p.name
        a.add_attribute("noalias")
    for a, s in zip(fn.args[len(k.params) :], sizes, strict=True):
        a.name = s
    em = CudaEmitter(module, fn, {p.name: a for p, a in zip(k.params, fn.args, strict=False)}, True)
    em.env.update(zip(sizes, fn.args[len(k.params) :], strict=True))
    if lau.block_var is not None or lau.tile is not None or lau.rows:
        em.env[lau.block_var or BLOCK] = _sreg(em, "ctaid.x")
    if lau.tile is not None:
        em.env[THREAD] = _sreg(em, "tid.x")
    if lau.rows:
        for name, e in flat_index(lau.rows, Var(BLOCK)).items():
            em.env[name] = em.expr(e)
        em.lane = _sreg(em, "tid.x")
        em.env[LANE] = em.lane
    if lau.thread_var is not None:
        em.env[lau.thread_var] = _sreg(em, "tid.x")
    if mma_precision(k) is not None:
        emit_mma(em, mma_plan(k))
    elif lau.tile is not None:
        _emit_tile(em, tile_plan(lau.tile))
    else:
        em.stmt(lau.body)
    em.finish()
    return module, GpuKernel(k, symbol, lau, sizes, str(module))


def to_ptx(text: str, symbol: str, archs=tuple(ARCHS)) -> dict[str, str]:
    """Link libdevice (when used), internalize all but ``symbol``, optimize (O3), emit PTX."""
    mod = llvm.parse_assembly(text)
    tm = target_machine(OPT_ARCH)
    mod.triple, mod.data_layout = TRIPLE, str(tm.target_data)
    if any(f.is_declaration and f.name.startswith("__nv_") for f in mod.functions):
        lib = llvm.parse_bitcode(libdevice_bitcode())
        lib.triple, lib.data_layout = mod.triple, mod.data_layout
        mod.link_in(lib)
    for f in mod.functions:
        if not f.is_declaration and f.name != symbol:
            f.linkage = "internal"
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return {arch: target_machine(arch).emit_assembly(mod) for arch in archs}


def compile_kernel(k: Kernel, archs=tuple(ARCHS)) -> GpuKernel:
    """PTX for one GPU-scheduled kernel (of a checked program)."""
    _, gk = emit_kernel(k)
    gk.ptx = to_ptx(gk.ir, gk.symbol, archs)
    return gk


def compile_program(program: LoopProgram, archs=tuple(ARCHS)) -> list[GpuKernel]:
    """PTX for every kernel of a GPU-scheduled ``program`` (checked first)."""
    check_program(program)
    return [compile_kernel(k, archs) for k in program.kernels]
