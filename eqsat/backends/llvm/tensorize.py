"""A contraction kernel as packed GEMM on the register-blocked micro-kernel (``tensorize=gemm``).

Consumes a kernel whose root loop the schedule annotated ``tensorize=gemm``, its
:class:`~eqsat.lower.contraction.Contraction` and the kernel function codegen declared
(buffer params, then size params); produces that function's body and its helpers in the same
module:

* ``<k>.pack_a`` / ``<k>.pack_b`` / ``<k>.epi``: the loop-IR statements of
  :mod:`eqsat.backends.llvm.tensorize_plan`, compiled by the ordinary statement emitter;
  each helper (these and ``tasks``) is kept once per distinct body
  (:func:`~eqsat.backends.llvm.codegen_stmt.shared`): kernels of one shape and plan, as a
  transformer's layers are, call the first kernel's (BERT: 105 functions became 69, and the
  module's LLVM time fell from 2.1 to 1.2 s);
* ``<k>.tasks(ctx, lo, hi)``: runs tasks of the kernel, one task = one batch index ×
  MC rows × one column block, until none is left: its own range ``[lo, hi)`` (the pool's
  chunk) in order, then the others' tasks from the far end, each task run by whichever call
  wins its claim flag in ``ctx`` (see "Task order"), so a slower thread runs fewer. The plan
  makes the blocks equal and, for big kernels, their count a multiple of
  4 (``tensorize_plan._split``). Per task: pack the A rows and the B block (skipped when the
  previous task of this thread packed the same ones, or when the operand is a constant weight
  packed once), then for each KC slice, NR panel and MR strip call the micro-kernel (the
  narrowest of the tile's widths, in vectors, that holds the panel's real columns)
  (:func:`eqsat.backends.llvm.microkernel.emit_microkernel`; SSA accumulators, ``llvm.fma``,
  masked edges) into a C workspace, then run the epilogue from the workspace into the output.
  Each call takes its own workspace slot (a counter in ``ctx``), so threads never share one;
* the kernel itself: packs weight operands on the first call (and again whenever the weight
  buffer's address changes) into a module global — at load time in effect, never per
  inference; one global per distinct packed content, which the kernels that pack the same
  weight the same way share (:func:`packed_copy_symbol`: an RNN's step kernels), each at a
  fixed offset of one module-wide arena on transparent huge pages (:func:`_alloc_arena`) —
  then runs the tasks, through ``@eqsat.parallel_for`` (the runtime's pool) when there is
  more than one task and at least ``PARALLEL_FLOP`` of work or ``PARALLEL_BYTES`` of weights
  packed once (the native pool's launch costs a few µs; through the Python pool it was
  14-16 µs and ~100 µs of work was needed to gain from it), else inline. The driver
  allocates the workspace slots of all threads at once (``min(tasks, cores)`` slots, 64-byte
  aligned; a thread past them allocates its own).

Why the driver allocates the workspaces (measured, ResNet's 64×56×64 3×3 conv at 2 threads):
when each task function allocated its own with ``aligned_alloc`` and freed it, the pool
worker's malloc arena (a non-main arena) kept growing and trimming its heap — strace showed an
``mprotect`` of ~1 MB every few calls, ``getrusage`` 17 minor page faults per call (12.6 on
512×7×512) against 0 at 1 thread. Now 0 at both. A fault is a VM exit on this KVM guest, and
it stalls the thread that the other waits for at the end of the call.

Why the exchanged conv's A has its own packer (``_window_pack_a``): see there.

Why convs did not scale to 2 threads (measured on this 2-core VM, the ResNet 3×3 convs): the
task split was not it — per-thread CPU time of 64×56×64 was 908 + 960 µs against 1761 at 1
thread, even shares — but the pool's worker sharing the caller's CPU
(:mod:`~eqsat.backends.llvm.native_pool`, "Apart"), the workers' malloc arena (above) and,
on the exchanged convs, every task repeating the im2col A packing (``_window_pack_a``).

Task order: the tasks used to be taken one at a time from a counter shared by the threads,
so the threads took alternate column blocks (alternate bands of image rows), and which
thread wrote a band changed from call to call. Now each thread runs its own contiguous range
first — the caller the first half, the worker the second: the bands the direct conv's static
halves give its threads too. Measured (SqueezeNet, 2 threads, both orders compiled in one
process, ``kernel_classes_bench.py``-style): each kernel called alone in a loop (its data
stays where its threads left it; min of 100), the first conv (64 × 111 × 111, K = 27, 28
tasks) 273 → 177 µs and 237 → 164 in a second run (1 thread: 414-435), the 1 × 1 expand
convs 16 → 64 on 55 × 55 40-42 → 29 and 42-47 → 30, the rest within noise; the kernels
called in program order (min of 40-60 rounds) the first run gave the conv 503 → 343 µs and
the model's kernels 2276 → 2092 in all (loadavg 4.6-5.8), a second at loadavg 9 noise
(2217 → 2321, the unchanged direct convs moving as much); ResNeXt in program order (min of
15, loadavg 4.4) 8484 → 7355 µs over its kernels, its convs 0.97-1.24× alone. A call
steals only once its own range is done, from the far end of the others' (backwards from
``lo - 1``, wrapping round), so a thread that is late or preempted leaves its range to the
other, as the counter did. A task's results do not depend on the thread that runs it.

Why a workspace for C instead of storing into the output: the output's M and N axes may be
any set of its axes (a convolution's channel and spatial axes, attention's head and query
axes), and the epilogue (bias, BN, residual add, activation) needs the finished sum; the
workspace block is in L2 when the epilogue reads it.
"""

from __future__ import annotations

import hashlib
import weakref

from llvmlite import ir

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.codegen_expr import I64, PTR
from eqsat.backends.llvm.codegen_stmt import PARALLEL_FOR, FunctionEmitter, function, shared
from eqsat.backends.llvm.emit import (
    Intrinsics,
    i64,
    load_vec,
    loop,
    masked_load,
    smin,
    splat,
    vec,
)
from eqsat.backends.llvm.microkernel import (
    CACHE_LINE_FLOATS,
    Epilogue,
    emit_microkernel,
    prefetch_lines,
)
from eqsat.backends.llvm.pack import emit_pack_b, pack_panels
from eqsat.backends.llvm.pack_window import emit_window_pack
from eqsat.backends.llvm.plan_choice import chosen_plan
from eqsat.backends.llvm.tensorize_plan import (
    PARALLEL_FLOP,
    FusedEpilogue,
    PiecewiseB,
    PlainB,
    Plan,
    a_lanes,
    edge_vectors,
    epilogue,
    extents,
    fused_epilogue,
    pack_a,
    pack_b,
    packed_bytes,
    piecewise_b,
    plain_b,
    window_a,
    window_b,
)
from eqsat.lower.contraction import ACC, Contraction, const_extent
from eqsat.lower.loops import BinaryOp, Buffer, BufferKind, Const, Kernel, Var

# A GEMM runs on the pool with at least PARALLEL_FLOP of work (tensorize_plan) or at least
# PARALLEL_BYTES of weights packed once (a GEMV streams them: its FLOPs say
# nothing of its time). NasRNN's 512 x 512 GEMVs (0.5 MFLOP, a 1 MiB weight from L3, ~41 µs)
# ran on the calling thread at 2 threads; on both (two column blocks), interleaved with
# onnxruntime, min of 30, loadavg 1.7-2.2: 3.17-3.33 -> 1.84-1.87 ms (ort 1.83-2.0). Under
# loadavg 9-10 the same split measured slower (4.1-4.5 vs 2.3-2.8 ms): the second thread
# was rarely on a core. 1 MiB, not less: a weight that fits L2 runs ~10 µs (~100 GB/s),
# where the launch's few µs eat most of the gain (VGG's 1000 x 256 classifier, 1000 KB,
# stays serial).
PARALLEL_BYTES = 1 << 20
ARENA = "eqsat.pk.arena"  # the module's packed weight copies, one allocation (packed_copy_symbol)
HUGE_PAGE = 2 << 20  # a transparent huge page (x86-64, AArch64 with 4 KiB pages)
MADV_HUGEPAGE = 14
ALIGN = 64
F32_BYTES = 4


def _ws(name: str) -> Buffer:
    return Buffer(name, (1,), "float32", BufferKind.LOCAL)


class _Ctx:
    """What every helper takes: the kernel's buffers and sizes, then its own i64s and ptrs."""

    def __init__(self, module: ir.Module, k: Kernel, sizes: tuple[str, ...], sym: str):
        self.module, self.k, self.sizes, self.sym = module, k, sizes, sym

    def helper(self, suffix: str, ints: list[str], ptrs: list[Buffer], stmt):
        k = self.k
        types = [PTR] * len(k.params) + [I64] * (len(self.sizes) + len(ints)) + [PTR] * len(ptrs)
        fn = function(self.module, f"{self.sym}.{suffix}", types, internal=True)
        bufs = {p.name: a for p, a in zip(k.params + tuple(ptrs), self._ptr_args(fn, ptrs),
                                          strict=True)}
        em = FunctionEmitter(self.module, fn, bufs)
        names = list(self.sizes) + ints
        em.env.update(zip(names, fn.args[len(k.params):len(k.params) + len(names)], strict=True))
        em.stmt(stmt)
        em.finish()
        return shared(self.module, fn)

    def _ptr_args(self, fn, ptrs):
        n = len(self.k.params)
        return list(fn.args[:n]) + list(fn.args[len(fn.args) - len(ptrs):])


def emit_tensorized(module: ir.Module, fn: ir.Function, k: Kernel, c: Contraction,
                    sizes: tuple[str, ...]) -> ir.Function:
    caps = Capabilities.host()
    c, plan, logged = chosen_plan(k, c, caps)  # a logged (tuned) plan, else orient's
    sym = fn.name
    cx = _Ctx(module, k, sizes, sym)
    wa, wb, wc = _ws("tz.wa"), _ws("tz.wb"), _ws("tz.wc")
    win_a = None if plan.prepack_a else window_a(c)
    lanes = a_lanes(plan, caps.vector_width)
    if win_a is not None and lanes is not None:
        fa = _window_pack_a(cx, plan, win_a, lanes)
    else:
        fa = cx.helper("pack_a", ["tz.b", "tz.ic", "tz.mc", "tz.K"], [wa], pack_a(c, plan, wa))
    pb_ints = ["tz.b", "tz.o0", "tz.nrows", "tz.w0", "tz.nw", "tz.K"]
    plain = plain_b(c)
    if plain is not None:
        fb = _plain_pack_b(cx, plan, plain, len(pb_ints))
    elif (pw := piecewise_b(c)) is not None:
        fb = _piecewise_pack_b(cx, plan, pw, len(pb_ints))
    elif (win := window_b(c)) is not None:
        fb = _window_pack_b(cx, plan, win, len(pb_ints))
    else:
        fb = cx.helper("pack_b", pb_ints, [wb], pack_b(c, plan, wb))
    fe = cx.helper("epi", ["tz.b", "tz.ic", "tz.mc", "tz.o0", "tz.nrows", "tz.w0", "tz.nw"],
                   [wc], epilogue(c, plan, wc))
    fused = fused_epilogue(c)
    # a weight streamed from L3 / memory per call: the strips prefetch the next panel
    pf = prefetch_lines(plan.nr, plan.unroll, -(-plan.mc // plan.mr)) if plan.prepack_b else 0
    if fused is not None and fused.value != ACC:  # the epilogue in the final store, shared by the
        # kernels whose epilogues have the same form (the operands come as pointer arguments)
        kinds = sorted([(n, "row", s) for n, _, _, s in fused.rows]
                       + [(n, "col", 0) for n, _, _ in fused.cols]
                       + [(n, "like", 0) for n, _, _, _ in fused.likes])
        form = (plan.mr, plan.nr, plan.vw, plan.unroll, str(fused.value), kinds, pf)
        mname = "eqsat.micro.fused." + hashlib.sha1(repr(form).encode()).hexdigest()[:12]
        epi = _fused_epilogue(fused, plan.vw)
    else:
        mname = f"eqsat.micro.{plan.mr}x{plan.nr}x{plan.vw}" + (f"u{plan.unroll}" if logged else "")
        mname += f".pf{pf}" if pf else ""
        epi = Epilogue()
    full = plan.nr // plan.vw  # the tile's vectors; narrower kernels for the edge panels
    edges = edge_vectors(c, plan)
    widths = sorted((set(range(1, full)) if edges is None else edges - {full}) | {full})
    micros = [(nv, module.globals.get(f"{mname}.{nv}") or emit_microkernel(
        module, plan.mr, nv * plan.vw, plan.vw, plan.unroll, epi, name=f"{mname}.{nv}",
        ldb=plan.nr, prefetch_b=pf)) for nv in widths]
    tasks = _emit_tasks(cx, c, plan, fa, fb, fe, micros, fused, pf)
    _emit_driver(cx, fn, c, plan, fa, fb, tasks, need_c=fused is None)
    return fn


def _block_start(b: ir.IRBuilder, pl: PlainB, bi, o0, w0):
    """The flat offset of column block ``(o0, w0)`` of batch ``bi`` in row 0 of a
    :class:`PlainB` matrix: ``off + bi * sb + o0 * W + w0``."""
    return b.add(b.add(b.mul(o0, i64(pl.w)), w0), b.add(b.mul(bi, i64(pl.sb)), i64(pl.off)))


def _plain_pack_b(cx: _Ctx, plan: Plan, pl: PlainB, nints: int) -> ir.Function:
    """``pack_b`` for a :class:`PlainB` operand: the block's columns are the contiguous flat N
    range ``[o0 * W + w0, + nrows * nw)`` of every K row, packed by ``pack.emit_pack_b``."""
    k = cx.k
    types = [PTR] * len(k.params) + [I64] * (len(cx.sizes) + nints) + [PTR]
    fn = function(cx.module, f"{cx.sym}.pack_b", types, internal=True)
    pname = f"eqsat.pack_b.{plan.nr}x{plan.vw}x{plan.kc}"
    packer = cx.module.globals.get(pname) or emit_pack_b(
        cx.module, plan.nr, plan.vw, plan.kc, pname, linkage="internal")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    src = fn.args[[p.name for p in k.params].index(pl.buffer.name)]
    bi, o0, nrows, w0, nw, kdim = fn.args[len(k.params) + len(cx.sizes):-1]
    first = _block_start(b, pl, bi, o0, w0)
    nc = b.mul(nrows, nw)
    npan = b.sdiv(b.add(nc, i64(plan.nr - 1)), i64(plan.nr))
    b.call(packer, [_gep(b, src, first), i64(pl.ldb), kdim, nc, fn.args[-1], i64(0), npan])
    b.ret_void()
    return shared(cx.module, fn)


def _piecewise_pack_b(cx: _Ctx, plan: Plan, pw: PiecewiseB, nints: int) -> ir.Function:
    """``pack_b`` for a :class:`PiecewiseB` operand: per K row, the row pointer of the piece
    that holds it (a select chain); the block's columns are then packed by
    :func:`~eqsat.backends.llvm.pack.pack_panels`, as for one plain matrix."""
    k = cx.k
    types = [PTR] * len(k.params) + [I64] * (len(cx.sizes) + nints) + [PTR]
    fn = function(cx.module, f"{cx.sym}.pack_b", types, internal=True)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    names = [p.name for p in k.params]
    bi, o0, nrows, w0, nw, kdim = fn.args[len(k.params) + len(cx.sizes):-1]
    dst = fn.args[-1]
    bases = []
    for pl in pw.pieces:
        first = _block_start(b, pl, bi, o0, w0)
        bases.append(_gep(b, fn.args[names.index(pl.buffer.name)], first))

    def row_ptr(row):
        ptr = _gep(b, bases[0], b.mul(row, i64(pw.pieces[0].ldb)))
        for base, start, pl in zip(bases[1:], pw.starts[1:], pw.pieces[1:], strict=True):
            mine = _gep(b, base, b.mul(b.sub(row, i64(start)), i64(pl.ldb)))
            ptr = b.select(b.icmp_signed(">=", row, i64(start)), mine, ptr)
        return ptr

    nc = b.mul(nrows, nw)
    pack_panels(b, row_ptr, kdim, nc, dst, i64(0), _ceil(b, nc, plan.nr), nr=plan.nr,
                vw=plan.vw, kcb=plan.kc)
    b.ret_void()
    return shared(cx.module, fn)


def _window_pack_b(cx: _Ctx, plan: Plan, wb, nints: int) -> ir.Function:
    """``pack_b`` for a guarded window read (padded stride-1 convolution): masked vector
    loads per K row and output row (``pack_window.py``)."""
    k = cx.k
    types = [PTR] * len(k.params) + [I64] * (len(cx.sizes) + nints) + [PTR]
    fn = function(cx.module, f"{cx.sym}.pack_b", types, internal=True)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    src = fn.args[[p.name for p in k.params].index(wb.buffer.name)]
    bi, o0, nrows, w0, nw, kdim = fn.args[len(k.params) + len(cx.sizes):-1]
    emit_window_pack(b, wb, src, fn.args[-1], bi, o0, nrows, w0, nw, kdim, nr=plan.nr,
                     vw=plan.vw, kcb=plan.kc, rows_mode=plan.rows_mode)
    b.ret_void()
    return shared(cx.module, fn)


def _window_pack_a(cx: _Ctx, plan: Plan, wa, lanes: int) -> ir.Function:
    """``pack_a`` for an exchanged convolution's im2col (``tensorize_plan.window_a``): rows
    ``[ic, ic + mc)`` are the flat pixels from ``(ic // W, ic % W)``, packed as MR-wide panels
    with masked loads of ``lanes`` floats (the A strips' layout is the B panels' with NR =
    MR). Why: the generic packer evaluated the guarded expression per element, and on the
    exchanged ResNet convs it was the cost the second thread repeated — each task packs its
    rows' A. Measured (CPU time per call from ``/proc/self/task/*/schedstat``, 100 calls,
    this VM at loadavg 5-7): 512×7×512 at 1 thread 2262 → 1937 µs, at 2 threads 875 + 1906
    → 936 + 990 µs (the second thread's repeated pack gone); 256×14×256 at 1 thread 2002 →
    1524 µs."""
    k = cx.k
    types = [PTR] * len(k.params) + [I64] * (len(cx.sizes) + 4) + [PTR]
    fn = function(cx.module, f"{cx.sym}.pack_a", types, internal=True)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    src = fn.args[[p.name for p in k.params].index(wa.buffer.name)]
    bi, ic, mc, kdim = fn.args[len(k.params) + len(cx.sizes):-1]
    o0, start = b.sdiv(ic, i64(wa.width)), b.srem(ic, i64(wa.width))
    emit_window_pack(b, wa, src, fn.args[-1], bi, o0, i64(1), i64(0), i64(wa.width), kdim,
                     nr=plan.mr, vw=lanes, kcb=plan.kc, rows_mode=True, start=start, ncols=mc)
    b.ret_void()
    return shared(cx.module, fn)


def copy_floats(c: Contraction, plan: Plan, side: str) -> int:
    """Floats of the packed copy of weight operand ``side`` (its extents are constants): what
    the driver's packing loop writes, ``_Shape``'s block count times its block size."""
    axes = {"NB": c.batch, "K": c.k} | (
        {"M": c.m} if side == "a" else {"NO": c.n[:-1], "W": c.n[-1:]})
    ext = {n: const_extent(a) for n, a in axes.items()}
    if None in ext.values():
        raise ValueError(f"a packed copy of {side} needs constant extents, not {ext}")
    if side == "a":
        return ext["NB"] * -(-ext["M"] // plan.mc) * ext["K"] * -(-plan.mc // plan.mr) * plan.mr
    njb = -(-ext["NO"] // plan.rows) if plan.rows_mode else ext["NO"] * -(-ext["W"] // plan.ncb)
    return ext["NB"] * njb * ext["K"] * plan.ncpad


class _Shape:
    """The kernel's extents and block counts as i64 values in one function."""

    def __init__(self, em: FunctionEmitter, c: Contraction, plan: Plan):
        b = em.b
        ex = {n: em.expr(e) for n, e in extents(c).items()}
        self.m, self.no, self.w, self.k, self.nb = (ex[n] for n in ("M", "NO", "W", "K", "NB"))
        self.nib = _ceil(b, self.m, plan.mc)
        if plan.rows_mode:
            self.nwb = i64(1)
            self.njb = _ceil(b, self.no, plan.rows)
        else:
            self.nwb = _ceil(b, self.w, plan.ncb)
            self.njb = b.mul(self.no, self.nwb)
        self.mcpad = i64(-(-plan.mc // plan.mr) * plan.mr)
        self.a_block = b.mul(self.k, self.mcpad)  # floats of one packed A row block
        self.b_block = b.mul(self.k, i64(plan.ncpad))

    def col_block(self, b: ir.IRBuilder, plan: Plan, jb):
        """(o0, nrows, w0, nw) of column block ``jb``."""
        if plan.rows_mode:
            o0 = b.mul(jb, i64(plan.rows))
            return o0, smin(b, i64(plan.rows), b.sub(self.no, o0)), i64(0), self.w
        o0 = b.sdiv(jb, self.nwb)
        w0 = b.mul(b.srem(jb, self.nwb), i64(plan.ncb))
        return o0, i64(1), w0, smin(b, i64(plan.ncb), b.sub(self.w, w0))

    def row_block(self, b: ir.IRBuilder, plan: Plan, ib):
        ic = b.mul(ib, i64(plan.mc))
        return ic, smin(b, i64(plan.mc), b.sub(self.m, ic))


def _ceil(b: ir.IRBuilder, x, m: int):
    return b.sdiv(b.add(x, i64(m - 1)), i64(m))


def _roundup(b: ir.IRBuilder, x, m: int):
    return b.mul(_ceil(b, x, m), i64(m))


def _alloc(em: FunctionEmitter, floats) -> ir.Value:
    b = em.b
    fn = em.declare("aligned_alloc", PTR, [I64, I64])
    nbytes = _roundup(b, b.mul(floats, i64(F32_BYTES)), ALIGN)
    return b.call(fn, [i64(ALIGN), nbytes])


def _free(em: FunctionEmitter, p) -> None:
    em.b.call(em.declare("free", ir.VoidType(), [PTR]), [p])


def _gep(b: ir.IRBuilder, p, off):
    return b.gep(p, [off], source_etype=ir.FloatType())




def packed_globals(module: ir.Module, sym: str, side: str):
    """The two internal globals of an operand packed once: the packed copy and the address it
    was packed from (``{sym}.pk.{side}`` and ``.src``), both null at load time; the ones
    already in ``module`` when a kernel before this one declared them (a shared copy)."""
    out = []
    for suffix in ("", ".src"):
        name = f"{sym}.pk.{side}{suffix}"
        g = module.globals.get(name)
        if g is None:
            g = ir.GlobalVariable(module, PTR, name)
            g.linkage = "internal"
            g.initializer = ir.Constant(PTR, None)
        out.append(g)
    return out


# per module: packed copy symbol -> its byte offset in the arena (see ``arena_slot``)
_SLOTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def in_arena(name: str) -> bool:
    """Whether the packed-copy global ``name`` points into the module's arena (``release``
    frees the arena, not the copy)."""
    return name.startswith("eqsat.w.")


def arena_slot(module: ir.Module, sym: str, nbytes: int) -> int:
    """The byte offset of packed copy ``sym`` (``nbytes``) in the module's arena: given out in
    emission order, 64-byte aligned; the arena's size (global ``{ARENA}.bytes``) grows with
    each new copy."""
    slots = _SLOTS.setdefault(module, {})
    if sym not in slots:
        size = module.globals.get(f"{ARENA}.bytes")
        if size is None:
            arena = ir.GlobalVariable(module, PTR, ARENA)
            arena.linkage = "internal"
            arena.initializer = ir.Constant(PTR, None)
            size = ir.GlobalVariable(module, I64, f"{ARENA}.bytes")
            size.linkage = "internal"
            size.initializer = ir.Constant(I64, 0)
            size.global_constant = True
        slots[sym] = size.initializer.constant
        size.initializer = ir.Constant(I64, slots[sym] + -(-nbytes // ALIGN) * ALIGN)
    return slots[sym]


def _arena(em: FunctionEmitter) -> ir.Value:
    """The module's arena, allocated by the first kernel that packs (``_alloc_arena``)."""
    b, module = em.b, em.module
    g = module.globals[ARENA]
    with b.if_then(b.icmp_unsigned("==", b.load(g, typ=PTR), ir.Constant(PTR, None))):
        b.store(b.call(_alloc_arena(module), [b.load(module.globals[f"{ARENA}.bytes"], typ=I64)]),
                g)
    return b.load(g, typ=PTR)


def _alloc_arena(module: ir.Module) -> ir.Function:
    """``eqsat.pk.alloc(bytes)``: the arena, on transparent huge pages where the host has them.

    Why: the copies are read once per inference and streamed from L3 or memory when they do not
    fit in L2 (an RNN's weights), and on 4 KiB pages each 4 KiB of a panel costs a TLB miss
    (a two-level page walk under a hypervisor) and stops the L2 prefetcher at the page edge.
    This host's THP is ``madvise``: memory gets huge pages only when asked for. From 2 MiB of
    copies on, the arena is aligned to and sized in whole huge pages and advised
    (``MADV_HUGEPAGE``) before its first touch; smaller ones stay on ordinary pages (a huge
    page would be mostly empty). Measured, NasRNN (16 copies of 1 MiB), the same copies
    collapsed to huge pages (``MADV_COLLAPSE``) or not, in one process, interleaved with
    onnxruntime, min of 40, loadavg 7.7-8.5: 1 thread 4.9-8.7 -> 3.5-3.7 ms (ort 3.9-5.2),
    2 threads 8.3 -> 6.7 ms, with the e-graph 1 thread 3.3 -> 2.7 ms (ort 8.1: noise); a
    chain of 64 GEMVs over 16 such weights, 57-58 -> 44-45 µs a GEMV (ort 44-48)."""
    name = f"{ARENA}.alloc"
    fn = module.globals.get(name)
    if fn is not None:
        return fn
    fn = ir.Function(module, ir.FunctionType(PTR, [I64]), name)
    fn.attributes.add("nounwind")
    fn.linkage = "internal"
    em = FunctionEmitter(module, fn, {})
    b = em.b
    nbytes = fn.args[0]
    huge = b.icmp_signed(">=", nbytes, i64(HUGE_PAGE))
    align = b.select(huge, i64(HUGE_PAGE), i64(ALIGN))
    size = b.mul(b.sdiv(b.add(nbytes, b.sub(align, i64(1))), align), align)
    p = b.call(em.declare("aligned_alloc", PTR, [I64, I64]), [align, size])
    if "linux" in Capabilities.host().triple:
        madvise = em.declare("madvise", ir.IntType(32), [PTR, I64, ir.IntType(32)])
        with b.if_then(b.and_(huge, b.icmp_unsigned("!=", p, ir.Constant(PTR, None)))):
            b.call(madvise, [p, size, ir.Constant(ir.IntType(32), MADV_HUGEPAGE)])
    em.b.ret(p)
    ir.IRBuilder(em.entry).branch(fn.blocks[1])
    return fn


def packed_copy_symbol(c: Contraction, plan: Plan, side: str) -> str:
    """The name (before ``.pk.{side}``) of the packed copy of ``c``'s weight operand ``side``:
    one per distinct packed content, so the kernels that pack the same weight the same way
    share one copy. The content is a function of what the loop IR of the packing says (the
    weight buffer, its index expressions over the block variables), the plan's blocking and
    the kernel's extents (constants: only weights whose blocks all have constant sizes are
    packed once, ``tensorize_plan._prepackable``); the key is their printed form.

    Why: NasRNN applies each of its 16 weights (512 × 512, 1 MB) once per step, in 80 GEMV
    kernels; each kernel kept its own packed copy, so a run streamed 80 MB of packed weights
    where 16 MB are distinct. Measured (1 thread, loadavg 5.3, each kernel called in model
    order, min of 15): the 80 kernels 6.7-15.3 ms a run, the first 16 (one step, 16 copies)
    five times over 3.8 ms. Each kernel alone, warm in L2, took 9-12 µs; in the model, ~80 µs
    (its copy came from L3 or memory). Whole model, copies per kernel vs shared, interleaved
    with onnxruntime in one process, min of 30, loadavg 4.7-6.7: 1 thread 10.5 -> 3.4 ms (ort
    3.6), 2 threads 10.5 -> 4.3 ms; with the e-graph (6 MatMuls, the 8 MB merged h-weight in 5
    kernels) 1 thread 7.9 -> 2.4 ms (ort 3.7), 2 threads 5.9 -> 2.5 ms (ort 2.4). The original
    weights stay bound (``CompiledProgram.prepare``: a kernel packs again when a weight's
    address changes), but a run reads only their addresses, never their data."""
    dst = _ws("tz.pk")
    stmt = pack_a(c, plan, dst) if side == "a" else pack_b(c, plan, dst)
    ext = sorted((n, repr(e)) for n, e in extents(c).items())
    key = repr((side, stmt, plan, ext))
    return "eqsat.w." + hashlib.sha1(key.encode()).hexdigest()[:16]


def _ctx_layout(cx: _Ctx, plan: Plan):
    """Context struct of the task function: buffers, sizes, prepacked A and B, the call's
    workspace slots and their count (:func:`_slot_floats`), then what the threads share: the
    next workspace slot (a counter) and the tasks' claim flags (one byte per task, zeroed)."""
    return ir.LiteralStructType(
        [PTR] * len(cx.k.params) + [I64] * len(cx.sizes) + [PTR, PTR, PTR, I64, I64, PTR])


CTX_TAIL = 6  # the fields after the sizes (_ctx_layout)


def _slot_floats(b: ir.IRBuilder, sh: _Shape, plan: Plan, need_c: bool):
    """Floats of one thread's workspace slot — its packed A rows, B block and C block (each
    only when the plan needs it, each rounded to 64 bytes) — as ``(offset of B, offset of C,
    slot size)``; None when no workspace is needed."""
    parts = [sh.a_block if not plan.prepack_a else None,
             sh.b_block if not plan.prepack_b else None,
             i64(plan.mc * plan.ncpad) if need_c else None]
    if all(x is None for x in parts):
        return None
    offs, at = [], i64(0)
    for x in parts:
        offs.append(at)
        if x is not None:
            at = b.add(at, _roundup(b, x, ALIGN // F32_BYTES))
    return offs[1], offs[2], at


def _fused_epilogue(fe: FusedEpilogue, vw: int) -> Epilogue:
    """The micro-kernel hook evaluating ``fe.value`` on a tile vector: the operands come as
    trailing pointers (rows, then cols, then likes), each already at the tile's origin."""
    kinds = {}
    for i, (name, _, _, s) in enumerate(fe.rows):
        kinds[name] = ("row", i, s)
    for i, (name, _, _) in enumerate(fe.cols):
        kinds[name] = ("col", len(fe.rows) + i, 0)
    for i, (name, _, _, _) in enumerate(fe.likes):
        kinds[name] = ("like", len(fe.rows) + len(fe.cols) + i, 0)

    def tile_fn(b, x, r, v, mask, ldc, extras, mr_rt):
        intr = Intrinsics(b.module)

        def vload(ptr):
            return load_vec(b, ptr, vw) if mask is None else masked_load(b, intr, ptr, mask, vw)

        def ev(e):
            if e == ACC:
                return x
            if isinstance(e, Const):
                return ir.Constant(vec(vw), [float(e.value)] * vw)
            if isinstance(e, Var):
                kind, i, s = kinds[e.name]
                if kind == "row":  # rows past the tile's edge read its last row (unstored)
                    row = smin(b, i64(r), b.sub(mr_rt, i64(1)))
                    return splat(b, b.load(_gep(b, extras[i], b.mul(row, i64(s))),
                                           typ=ir.FloatType()), vw)
                if kind == "col":
                    return vload(_gep(b, extras[i], i64(v * vw)))
                return vload(_gep(b, extras[i], b.add(b.mul(i64(r), ldc), i64(v * vw))))
            a, y = ev(e.a), ev(e.b)
            simple = {BinaryOp.ADD: b.fadd, BinaryOp.SUB: b.fsub, BinaryOp.MUL: b.fmul,
                      BinaryOp.DIV: b.fdiv}.get(e.op)
            if simple is not None:
                return simple(a, y)
            zero = isinstance(e.b, Const) and e.b.value == 0.0
            if e.op is BinaryOp.MAX and zero:  # ReLU: x > 0 or NaN ? x : 0 (as ONNX Relu)
                return b.select(b.fcmp_unordered(">", a, y), a, y)
            name = "llvm.maximum" if e.op is BinaryOp.MAX else "llvm.minimum"
            t = vec(vw)
            f = b.module.globals.get(f"{name}.v{vw}f32") or ir.Function(
                b.module, ir.FunctionType(t, [t, t]), f"{name}.v{vw}f32")
            return b.call(f, [a, y])

        return ev(fe.value)

    return Epilogue(tile_fn=tile_fn, extra=len(kinds), name="fused")


def _emit_tasks(cx: _Ctx, c: Contraction, plan: Plan, fa, fb, fe, micros,
                fused: FusedEpilogue | None = None, pf: int = 0) -> ir.Function:
    fn = function(cx.module, f"{cx.sym}.tasks", [PTR, I64, I64], internal=True)
    em = FunctionEmitter(cx.module, fn, {})
    b = em.b
    ctx, lo, hi = fn.args  # this call's own tasks (the pool's chunk); then it steals
    st = _ctx_layout(cx, plan)
    zero32 = ir.Constant(ir.IntType(32), 0)
    fields = [b.load(b.gep(ctx, [zero32, ir.Constant(ir.IntType(32), n)], source_etype=st),
                     typ=t) for n, t in enumerate(st.elements)]
    claims = fields[-1]
    np_ = len(cx.k.params)
    tail = len(st.elements) - CTX_TAIL
    bufs, szs = fields[:np_], fields[np_:tail]
    apk, bpk, ws, nslots = fields[tail:tail + 4]
    slot_at = b.gep(ctx, [zero32, ir.Constant(ir.IntType(32), tail + 4)], source_etype=st)
    em.env.update(zip(cx.sizes, szs, strict=True))
    sh = _Shape(em, c, plan)
    common = bufs + szs
    ldc = plan.ncpad
    direct = None if fused is None else fused.out  # the tiles go straight into the output
    # this thread's workspaces: a slot of the caller's allocation (``_emit_driver``), or its
    # own when more threads run than there are slots (a pool wider than the host's cores)
    slots = _slot_floats(b, sh, plan, direct is None)
    alone = None
    if slots is not None:
        boff, coff, per = slots
        slot = b.atomic_rmw("add", slot_at, i64(1), "monotonic")
        alone = b.icmp_signed(">=", slot, nslots)
        wsp = em.alloca(PTR)
        with b.if_else(alone) as (by_itself, shared_slot):
            with by_itself:
                b.store(_alloc(em, per), wsp)
            with shared_slot:
                b.store(_gep(b, ws, b.mul(slot, per)), wsp)
        base = b.load(wsp, typ=PTR)
    aws = None if plan.prepack_a else base
    bws = None if plan.prepack_b else _gep(b, base, boff)
    cws = None if direct is not None else _gep(b, base, coff)
    pnames = [p.name for p in cx.k.params]
    cur_a, cur_b = em.alloca(I64), em.alloca(I64)
    b.store(i64(-1), cur_a)
    b.store(i64(-1), cur_b)
    per_b = b.mul(sh.nib, sh.njb)
    total = b.mul(sh.nb, per_b)
    # Each call runs its own range [lo, hi) of the tasks first, in order, then steals the
    # others' from the far end: backwards from lo - 1, wrapping round to total - 1 (see the
    # module doc, "Task order"). A task runs where its claim flag is won (a byte per task).
    own = b.sub(hi, lo)
    with loop(b, 0, total, name="j") as j:
        back = b.sub(b.sub(lo, i64(1)), b.sub(j, own))
        back = b.select(b.icmp_signed("<", back, i64(0)), b.add(back, total), back)
        t = b.select(b.icmp_signed("<", j, own), b.add(lo, j), back)
        flag = b.gep(claims, [t], source_etype=ir.IntType(8))
        seen = b.load_atomic(flag, "monotonic", 1, typ=ir.IntType(8))
        free = b.icmp_unsigned("==", seen, ir.Constant(ir.IntType(8), 0))
        claim = b.append_basic_block("claim")
        run = b.append_basic_block("run")
        skip = b.append_basic_block("skip")
        b.cbranch(free, claim, skip)
        b.position_at_end(claim)
        won = b.cmpxchg(flag, ir.Constant(ir.IntType(8), 0), ir.Constant(ir.IntType(8), 1),
                        "monotonic", "monotonic")
        b.cbranch(b.extract_value(won, 1), run, skip)
        b.position_at_end(run)
        bi = b.sdiv(t, per_b)
        rest = b.srem(t, per_b)
        if plan.prepack_b:  # A rows outer, column blocks inner: reuse the packed A rows
            ib, jb = b.sdiv(rest, sh.njb), b.srem(rest, sh.njb)
        else:  # column blocks outer: reuse the packed B block
            jb, ib = b.sdiv(rest, sh.nib), b.srem(rest, sh.nib)
        ic, mc = sh.row_block(b, plan, ib)
        o0, nrows, w0, nw = sh.col_block(b, plan, jb)
        nc = b.mul(nrows, nw)
        if direct is not None:  # the output block's first element: row ic, flat column o0·W+w0
            col0 = b.add(b.mul(o0, i64(direct.w)), w0)
            out0 = _gep(b, bufs[pnames.index(direct.buffer.name)],
                        b.add(_block_start(b, direct, bi, o0, w0), b.mul(ic, i64(direct.ldb))))
        akey = b.add(b.mul(bi, sh.nib), ib)
        bkey = b.add(b.mul(bi, sh.njb), jb)
        if plan.prepack_a:
            pa = _gep(b, apk, b.mul(akey, sh.a_block))
        else:
            pa = aws
            with b.if_then(b.icmp_signed("!=", b.load(cur_a, typ=I64), akey)):
                b.call(fa, common + [bi, ic, mc, sh.k, aws])
                b.store(akey, cur_a)
        if plan.prepack_b:
            pb = _gep(b, bpk, b.mul(bkey, sh.b_block))
        else:
            pb = bws
            with b.if_then(b.icmp_signed("!=", b.load(cur_b, typ=I64), bkey)):
                b.call(fb, common + [bi, o0, nrows, w0, nw, sh.k, bws])
                b.store(bkey, cur_b)
        mcpad = _roundup(b, mc, plan.mr)
        ncpad = _roundup(b, nc, plan.nr)
        with loop(b, 0, sh.k, plan.kc, name="pc") as pc:
            kc = smin(b, i64(plan.kc), b.sub(sh.k, pc))
            ap = _gep(b, pa, b.mul(pc, mcpad))
            bp = _gep(b, pb, b.mul(pc, ncpad))
            load_c = b.zext(b.icmp_signed(">", pc, i64(0)), I64)
            last = b.zext(b.icmp_signed(">=", b.add(pc, kc), sh.k), I64)
            with loop(b, 0, nc, plan.nr, name="jr") as jr:
                nrr = smin(b, i64(plan.nr), b.sub(nc, jr))
                bpan = _gep(b, bp, b.mul(jr, kc))
                with loop(b, 0, mc, plan.mr, name="ir") as ir_:
                    mrr = smin(b, i64(plan.mr), b.sub(mc, ir_))
                    if direct is None:
                        cptr, ldc_v = _gep(b, cws, b.add(b.mul(ir_, i64(ldc)), jr)), i64(ldc)
                    else:  # the tile's place in the output itself
                        cptr, ldc_v = _gep(b, out0, b.add(b.mul(ir_, i64(direct.ldb)), jr)), \
                            i64(direct.ldb)
                    extras = [] if fused is None else _tile_operands(
                        b, fused, bufs, pnames, bi, b.add(ic, ir_), b.add(col0, jr))
                    args = [kc, _gep(b, ap, b.mul(ir_, kc)), bpan, cptr, ldc_v, mrr, nrr,
                            load_c, last, ir.Constant(PTR, None), *extras]
                    if pf:  # this strip's share of the next panel (microkernel.prefetch_lines)
                        per_strip = b.mul(b.sdiv(kc, i64(plan.unroll)),
                                          i64(pf * CACHE_LINE_FLOATS))
                        share = b.mul(b.sdiv(ir_, i64(plan.mr)), per_strip)
                        args.append(_gep(b, bpan, b.add(b.mul(kc, i64(plan.nr)), share)))
                    _call_by_width(b, micros, _ceil(b, nrr, plan.vw), args)
        if direct is None:
            b.call(fe, common + [bi, ic, mc, o0, nrows, w0, nw, cws])
        b.branch(skip)
        b.position_at_end(skip)
    if alone is not None:
        with b.if_then(alone):
            _free(em, base)
    em.finish()
    return shared(cx.module, fn)


def _call_by_width(b: ir.IRBuilder, micros, nv, args) -> None:
    """Call the narrowest of ``micros`` (``(vectors, kernel)``, ascending, the tile's full
    width last) that holds the panel's ``nv`` real vectors. Only the widths the plan's blocks
    end with are emitted (``tensorize_plan.edge_vectors``); any other ``nv`` still finds a
    kernel at least as wide (its masks store only the real columns).

    Why: a panel past the block's last column is zero-padded, and the full-width kernel runs
    its FMAs on the padding too. SqueezeNet's 55 × 55 convs take blocks of 7 rows, 385
    columns: 8 panels of 48 and one of 1 column, computed 48 wide (10 % of the work); its
    27 × 27 ones end blocks with 15 columns of a panel. Measured at 1 thread, both builds in
    one process (loadavg 6.5), kernel min of 30, three runs: the 3 × 3 expand convs ran
    1.05-1.13× faster (e.g. 0.370 → 0.329 ms), the first conv 0.90-1.13×."""
    if len(micros) == 1:
        b.call(micros[0][1], args)
        return
    with b.if_else(b.icmp_signed(">", nv, i64(micros[-2][0]))) as (wide, narrow):
        with wide:
            b.call(micros[-1][1], args)
        with narrow:
            _call_by_width(b, micros[:-1], nv, args)


def _tile_operands(b, fe: FusedEpilogue, bufs, pnames, bi, row, col) -> list:
    """The fused epilogue's operands at the tile whose first element is (``row``, ``col``) of
    batch ``bi``: rows, then cols, then likes (``_fused_epilogue``'s order)."""
    out = []
    for _, buf, off, s in fe.rows:
        out.append(_gep(b, bufs[pnames.index(buf.name)], b.add(i64(off), b.mul(row, i64(s)))))
    for _, buf, off in fe.cols:
        out.append(_gep(b, bufs[pnames.index(buf.name)], b.add(i64(off), col)))
    for _, buf, off, sb in fe.likes:
        at = b.add(b.add(i64(off), b.mul(bi, i64(sb))),
                   b.add(b.mul(row, i64(fe.out.ldb)), col))
        out.append(_gep(b, bufs[pnames.index(buf.name)], at))
    return out


def driver_emitter(cx: _Ctx, fn: ir.Function):
    """A kernel driver's arguments named after the kernel's parameters, and its emitter:
    ``(emitter, buffer args, size args)`` (the GEMM driver's and the direct conv's)."""
    k = cx.k
    for arg, p in zip(fn.args, k.params, strict=False):
        arg.name = p.name
    bufs = list(fn.args[:len(k.params)])
    szs = list(fn.args[len(k.params):])
    em = FunctionEmitter(cx.module, fn, dict(zip([p.name for p in k.params], bufs, strict=True)))
    return em, bufs, szs


def _emit_driver(cx: _Ctx, fn: ir.Function, c: Contraction, plan: Plan, fa, fb, tasks,
                 need_c: bool = True):
    em, bufs, szs = driver_emitter(cx, fn)
    em.env.update(zip(cx.sizes, szs, strict=True))
    b = em.b
    sh = _Shape(em, c, plan)
    common = bufs + szs
    packed = {}
    for side, on in (("a", plan.prepack_a), ("b", plan.prepack_b)):
        if not on:
            packed[side] = ir.Constant(PTR, None)
            continue
        sym = packed_copy_symbol(c, plan, side)
        gptr, gsrc = packed_globals(cx.module, sym, side)
        (weight,) = c.loads(side)
        src = bufs[[p.name for p in cx.k.params].index(weight.name)]
        with b.if_then(b.icmp_unsigned("!=", b.load(gsrc, typ=PTR), src)):
            nblocks = b.mul(sh.nb, sh.nib if side == "a" else sh.njb)
            block = sh.a_block if side == "a" else sh.b_block
            off = arena_slot(cx.module, sym, F32_BYTES * copy_floats(c, plan, side))
            dst = b.gep(_arena(em), [i64(off)], source_etype=ir.IntType(8))
            with loop(b, 0, nblocks, name=f"pk{side}") as blk:
                per = sh.nib if side == "a" else sh.njb
                bi, j = b.sdiv(blk, per), b.srem(blk, per)
                out = _gep(b, dst, b.mul(blk, block))
                if side == "a":
                    ic, mc = sh.row_block(b, plan, j)
                    b.call(fa, common + [bi, ic, mc, sh.k, out])
                else:
                    o0, nrows, w0, nw = sh.col_block(b, plan, j)
                    b.call(fb, common + [bi, o0, nrows, w0, nw, sh.k, out])
            b.store(dst, gptr)
            b.store(src, gsrc)
        packed[side] = b.load(gptr, typ=PTR)
    st = _ctx_layout(cx, plan)
    ctx = em.alloca(st)
    zero32 = ir.Constant(ir.IntType(32), 0)
    ntasks = b.mul(sh.nb, b.mul(sh.nib, sh.njb))
    # one allocation per call for every thread's workspaces, by the calling thread: when each
    # task function allocated its own, a pool worker's malloc arena grew and trimmed its heap
    # call after call (strace: an ``mprotect`` of ~1 MB every few calls, ~17 page faults per
    # call at 2 threads against 0 at 1; see the module docstring)
    slots = _slot_floats(b, sh, plan, need_c)
    nslots = smin(b, ntasks, i64(max(1, Capabilities.host().cores)))
    ws = ir.Constant(PTR, None) if slots is None else _alloc(em, b.mul(nslots, slots[2]))
    claims = b.call(em.declare("calloc", PTR, [I64, I64]), [ntasks, i64(1)])
    for n, v in enumerate(common + [packed["a"], packed["b"], ws, nslots, i64(0), claims]):
        b.store(v, b.gep(ctx, [zero32, ir.Constant(ir.IntType(32), n)], source_etype=st))
    streamed = packed_bytes(c, plan.prepack_a, plan.prepack_b)
    flops = b.mul(b.mul(b.mul(sh.nb, sh.m), b.mul(sh.no, sh.w)), b.mul(sh.k, i64(2)))
    launch_t = ir.FunctionType(ir.VoidType(), [PTR, PTR, I64]).as_pointer()
    launch = b.load(cx.module.globals[PARALLEL_FOR], typ=launch_t)
    par = b.and_(b.icmp_unsigned("!=", launch, ir.Constant(launch_t, None)),
                 b.and_(b.icmp_signed(">", ntasks, i64(1)),
                        b.or_(b.icmp_signed(">=", flops, i64(int(PARALLEL_FLOP))),
                              ir.Constant(ir.IntType(1), streamed >= PARALLEL_BYTES))))
    with b.if_else(par) as (threaded, serial):
        with threaded:
            b.call(launch, [tasks, ctx, ntasks])
        with serial:
            b.call(tasks, [ctx, i64(0), ntasks])
    if slots is not None:
        _free(em, ws)
    _free(em, claims)
    em.finish()


# what the direct convolution's emitter (direct_conv.py) shares with this one, by public names
HelperCtx, alloc_aligned, free_aligned, arena = _Ctx, _alloc, _free, _arena
fused_tile_epilogue, tile_operands = _fused_epilogue, _tile_operands
