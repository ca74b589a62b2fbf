"""Direct convolution in a blocked channel layout (NCHW[x]c) — the ``tensorize=nchwc`` kernels.

Consumes a kernel whose root loop the schedule annotated ``tensorize=nchwc``, its
:class:`~eqsat.lower.conv_direct.DirectConv` and the kernel function codegen declared; produces
that function's body and its helpers in the same module. The block ``B`` is the host's vector
width (``Capabilities.vector_width``: 16 floats on AVX-512, 8 on AVX2):

* ``<k>.pack_w`` (loop IR): the weight ``[OC, IC, KH, KW]`` into
  ``[OC/(OB·B)][IC/B][KH][KW][B ic][OB·B oc]`` (OB: the tile's channel blocks, fewer in the
  last group), channels past OC / IC zero, so that one step of the micro-kernel reads OB·B
  consecutive floats; run on the first call (and again when the weight buffer's address
  changes) into the module global ``<k>.pk.b``, which ``release()`` frees as it frees the
  implicit GEMM's packed weights;
* ``<k>.to_nchwc`` (loop IR): one (image, input-channel block) of the NCHW input into a
  zero-padded ``[N][IC/B][Hp][Wp][B]`` workspace: the padding rows / columns and the channels
  past IC are zeros, so the micro-kernel reads no guard. ``Hp`` / ``Wp`` are the rows and
  columns the output reads (``DirectConv.padded_hw``). An input the layout pass blocked
  (``Buffer.blocked``, :mod:`eqsat.backends.llvm.layout`) is copied in whole ``B``-float
  vectors instead of transposed;
* ``eqsat.dconv.*``: the micro-kernel: ``TW`` output columns of one output row × ``OB``
  output-channel blocks, ``TW·OB`` ``<B x float>`` accumulators as SSA phis over one loop of
  (input-channel block, kernel row, kernel column), the block's ``B`` input channels
  unrolled: per step ``OB`` weight vectors and ``TW`` broadcast input scalars (read in place
  from the blocked copy: stride and dilation are constant offsets), ``TW·OB`` ``llvm.fma``;
  it stores the tile into a per-task row workspace ``[OB][OW][B]``. The kernel column is a
  loop, not unrolled: unrolled, a stride-1 conv reads input column ``r + kw`` for every
  ``(r, kw)``, LLVM merged those loads and kept the broadcasts live across the body, and
  spilled them (a stack store per broadcast in the 64×56×56 conv's inner loop);
* ``<k>.epi``: the kernel's own epilogue (bias, BatchNorm, residual, activation: whatever
  :class:`~eqsat.lower.contraction.Contraction` carries) from the row workspace into the
  output: into a blocked output (``_blocked_epi``) vector by vector as it is; into an NCHW
  output whose rows are whole vectors, when it is the GEMM's fused-epilogue form, through an
  in-register transpose (``_fused_epi``); else as loop IR, one output channel × the output
  row per inner (vectorized) loop;
* ``<k>.tasks`` / ``<k>.ptasks`` / ``<k>.xtasks``: conv tasks = (image, channel-block group,
  output-row block) — ``tasks`` runs them in that order (serial: a group's weights stay in
  cache over its rows), ``ptasks`` in (image, row block, group) order for the pool's static
  chunks (see "Threads") — and copy tasks (image, input-channel block), the pool's static
  ranges; launched through ``@eqsat.parallel_for`` when there are several and at least
  ``tensorize.PARALLEL_FLOP`` of work.

Threads (issue 17, measured on SqueezeNet's 3×3 expand convs, 2 threads, quiet machine,
loadavg 0.9, one process, the two orders compiled side by side, min of 300 calls): the tasks
were (image, group, row) taken one by one from a counter shared by the threads, so the two
threads took alternate rows and each read the whole input (and wrote rows interleaved with the
other's); the 16→64 55×55 conv ran 261 µs at 2 threads against 354 at 1 (1.36×). With each
thread a contiguous band of rows (all groups of a row block together; the pool's static halves
of (image, row block, group)) it runs 206 µs (1.72×); 32→128 27×27: 204 → 171 µs. At 1 thread
that order was 2-4 % slower on Inception's convs (groups' weights cycled per row), so the
serial call keeps the group-outer order.

Why: the implicit GEMM packs a window of the input for every column block (``pack_window.py``);
the direct form reads the blocked input in place with broadcasts, which is how onnxruntime's
MLAS (NCHWc, 16-channel blocks on AVX-512) runs 3×3 convs. The NCHW ↔ NCHW16c transforms are
done inside the conv kernels (the input copy, the epilogue writing NCHW) at the layout
boundaries only: between direct convs (and the pools between them) the temps stay blocked
(:mod:`eqsat.backends.llvm.layout`).

The register tile (:func:`tile`): ``OB = min(3, OC/B)`` channel blocks and ``TW`` columns so
that ``TW·OB`` stays ≤ 24 accumulators (of 32 registers, beside the OB weight vectors): 3 × 8,
2 × 12, 1 × 14, the row's columns cut into tiles of equal width (a 9-wide row as 5 + 4: a
1-column tail tile has 3 accumulators, too few to hide the FMA latency); a ``dconv.tile``
annotation (``tw=..,ob=..``, up to 28 accumulators, the auto-scheduler's knob) overrides it.
"""

from __future__ import annotations

import dataclasses
import hashlib

from llvmlite import ir

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.codegen_expr import I64, PTR
from eqsat.backends.llvm.codegen_stmt import PARALLEL_FOR, FunctionEmitter, function, shared
from eqsat.backends.llvm.emit import (
    F32,
    Intrinsics,
    gep,
    i64,
    load_vec,
    loop,
    smin,
    splat,
    store_vec,
    vec,
)
from eqsat.backends.llvm.layout import blocked_epilogue, epilogue_form
from eqsat.backends.llvm.tensorize import (
    F32_BYTES,
    PARALLEL_FLOP,
    HelperCtx,
    alloc_aligned,
    arena,
    arena_slot,
    driver_emitter,
    free_aligned,
    fused_tile_epilogue,
    packed_globals,
    tile_operands,
)
from eqsat.backends.llvm.tensorize_plan import FusedEpilogue
from eqsat.lower.analysis import substitute
from eqsat.lower.contraction import ACC
from eqsat.lower.conv_direct import DirectConv
from eqsat.lower.loops import (
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Const,
    For,
    Kernel,
    Load,
    LoopKind,
    Select,
    Store,
    Var,
    minimum,
)

TILE_KEY = "dconv.tile"
# the default tile: OB = 3 channel blocks × up to 8 columns (24 accumulators, 3/4 of AVX-512's
# 32 registers; the OB weight vectors beside them, the broadcast is the FMA's memory operand).
# Measured at 1 thread, one process, interleaved, loadavg 8-10 (noisy), GFLOP/s of 8 × 3
# against 7 × 4 and 6 × 4: 64×32×32→128 142 / 89 / 100, 128×32→128 138 / 102 / 119, 64×56→64
# 163 / 153 / 153, 256×14→256 150 / 147 / 130, 128×28→128 150 / 158 / 152 (the implicit GEMM
# 125, 119, 154, 94, 115 in the same runs). With 16 registers (AVX2, not measured) the same
# share: 2 blocks × up to 6 columns.
MAX_TW = 14
# a task's block: output rows sharing each slice of the weights, so that a slice is read from
# L2 once per ROW_COLUMNS output columns rather than once per row (a 7×7 image's row is 7);
# the slices are whole input-channel blocks of at least SLICE_TAPS taps (3×3: one block, 27 KB
# of weights at OB = 3, in L1)
ROW_COLUMNS = 64
SLICE_TAPS = 9
ZERO = Const(0.0, "float32")


def _budget(registers: int) -> tuple[int, int, int]:
    """(default OB, default accumulators, most accumulators an annotation may ask for)."""
    return (3 if registers >= 32 else 2), registers * 3 // 4, registers - 4


def tile(d: DirectConv, caps: Capabilities, annotated: str | None = None) -> tuple[int, int]:
    """``(TW, OB)``: output columns × output-channel blocks of the register tile."""
    ocb = -(-d.oc // caps.vector_width)
    dob, dacc, most_acc = _budget(caps.registers)
    if annotated is not None:
        try:
            kv = dict(p.split("=", 1) for p in annotated.split(","))
            tw, ob = int(kv["tw"]), int(kv["ob"])
        except (KeyError, ValueError):
            raise ValueError(f"bad {TILE_KEY} annotation {annotated!r}") from None
        if not (1 <= ob <= 4 and 1 <= tw and tw * ob <= most_acc):
            raise ValueError(f"{TILE_KEY} {annotated!r}: does not fit the registers")
        return min(tw, d.ow), min(ob, ocb)
    ob = min(dob, ocb)
    most = min(MAX_TW, dacc // ob)
    return -(-d.ow // -(-d.ow // most)), ob  # equal tiles: 9 columns as 5 + 4, not 8 + 1


def max_accumulators(caps: Capabilities) -> int:
    """The most accumulators a ``dconv.tile`` annotation may ask for on ``caps``."""
    return _budget(caps.registers)[2]


def _and(a, b):
    return BinOp(BinaryOp.AND, a, b)


def _pack_w(d: DirectConv, vw: int, ob: int, dst: Buffer):
    """The weight in groups of ``ob`` output-channel blocks (the last group may have fewer,
    ``obg``): group ``g`` at ``g * ob * IC/B * KH * KW * B * B``, inside it
    ``[icb][kh][kw][i][obg * B]`` — one tap's ``i``-th input channel of all the tile's output
    channels contiguous (0 past OC / IC)."""
    v = {n: Var(f"dc.{n}") for n in ("ocb", "icb", "kh", "kw", "i", "o")}
    icb, ocb = -(-d.ic // vw), -(-d.oc // vw)
    g, jj = v["ocb"] // ob, v["ocb"] % ob
    obg = minimum(Const(ob), Const(ocb) - g * ob)
    oc, ic = v["ocb"] * vw + v["o"], v["icb"] * vw + v["i"]
    step = ((v["icb"] * d.kh + v["kh"]) * d.kw + v["kw"]) * vw + v["i"]
    at = g * (ob * icb * d.kh * d.kw * vw * vw) + step * (obg * vw) + jj * vw + v["o"]
    val = Select(_and(oc < d.oc, ic < d.ic), Load(d.w, (oc, ic, v["kh"], v["kw"])), ZERO)
    body = For("dc.o", Const(vw), Store(dst, (at,), val), LoopKind.VECTORIZED)
    for name, ext in (("i", vw), ("kw", d.kw), ("kh", d.kh), ("icb", icb), ("ocb", ocb)):
        body = For(f"dc.{name}", Const(ext), body)
    return body


def _to_nchwc(d: DirectConv, vw: int, dst: Buffer):
    """One (``dc.n``, ``dc.icb``) block of the input into the zero-padded blocked copy; from a
    blocked input (``Buffer.blocked``, :mod:`~eqsat.backends.llvm.layout`) read through a flat
    view of it, so that the copy's inner loop is a contiguous vector, not a transpose."""
    hp, wp = d.padded_hw()
    n, icb = Var("dc.n"), Var("dc.icb")
    r, q, i = Var("dc.r"), Var("dc.q"), Var("dc.i")
    ih, iw, ic = r - d.pad[0], q - d.pad[1], icb * vw + i
    ok = _and(_and(_and(ih >= 0, ih < d.h), _and(iw >= 0, iw < d.wd)), ic < d.ic)
    at = (((n * -(-d.ic // vw) + icb) * hp + r) * wp + q) * vw + i
    if d.x.blocked:
        if d.x.blocked != vw:
            raise ValueError(f"input {d.x.name} blocked by {d.x.blocked}, the conv by {vw}")
        flat = Buffer(d.x.name, (d.n * d.ic * d.h * d.wd,), "float32", d.x.kind)
        src = Load(flat, (((((n * (d.ic // vw) + icb) * d.h + ih) * d.wd + iw) * vw + i),))
    else:
        src = Load(d.x, (n, ic, ih, iw))
    store = Store(dst, (at,), Select(ok, src, ZERO))
    return For("dc.r", Const(hp), For("dc.q", Const(wp), For("dc.i", Const(vw), store,
                                                                 LoopKind.VECTORIZED)))


def _epilogue(d: DirectConv, vw: int, ob: int, ws: Buffer):
    """The contraction's epilogue for output row ``dc.oh`` of image ``dc.n``, channels
    ``[dc.oc0, dc.oc0 + OB*B)`` (those below OC), the sums read from the row workspace."""
    nv, ocv, ohv, owv = d.names
    j, ow = Var("dc.j"), Var("dc.ow")
    env = {nv: Var("dc.n"), ocv: Var("dc.oc0") + j, ohv: Var("dc.oh"), owv: ow}
    acc = Load(ws, ((j // vw) * (d.ow * vw) + ow * vw + j % vw,))
    define = {name: substitute(e, env) for name, e in d.c.define}
    stmt = substitute(substitute(d.c.epilogue, {ACC.name: acc}), define)
    nch = minimum(Const(ob * vw), Const(d.oc) - Var("dc.oc0"))
    return For("dc.j", nch, For("dc.ow", Const(d.ow), stmt, LoopKind.VECTORIZED))


def transpose(b: ir.IRBuilder, rows: list, vw: int) -> list:
    """The ``vw × vw`` transpose of ``rows`` (``vw`` vectors of ``vw`` floats, ``vw`` a power of
    two): log2(vw) rounds of perfect shuffles — row ``2i`` / ``2i + 1`` of a round interleave
    the low / high halves of rows ``i`` and ``i + vw/2`` of the previous one (64 two-source
    permutes, ``vpermt2ps``, for 16 × 16)."""
    h = vw // 2
    i32 = ir.VectorType(ir.IntType(32), vw)
    lo = ir.Constant(i32, [j for i in range(h) for j in (i, i + vw)])
    hi = ir.Constant(i32, [j for i in range(h, vw) for j in (i, i + vw)])
    for _ in range(vw.bit_length() - 1):
        rows = [b.shuffle_vector(rows[i], rows[i + h], m) for i in range(h) for m in (lo, hi)]
    return rows


def _epi_function(cx: HelperCtx):
    """The ``<k>.epi`` function both native epilogues define (the loop-IR epilogue's
    arguments: the kernel's buffers, its sizes, ``n, oh, oc0``, the row workspace): ``(fn, an
    IR builder at its entry, the buffer arguments, the workspace, (n, oh, oc0), the buffers'
    names)``."""
    k = cx.k
    types = [PTR] * len(k.params) + [I64] * (len(cx.sizes) + 3) + [PTR]
    fn = function(cx.module, f"{cx.sym}.epi", types, internal=True)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    np_ = len(k.params)
    nums = fn.args[np_ + len(cx.sizes):np_ + len(cx.sizes) + 3]
    return fn, b, list(fn.args[:np_]), fn.args[-1], tuple(nums), [p.name for p in k.params]


def _fused_epi(cx: HelperCtx, d: DirectConv, vw: int, ob: int, fe: FusedEpilogue) -> ir.Function:
    """``<k>.epi`` when the epilogue is a :class:`~eqsat.backends.llvm.tensorize_plan.
    FusedEpilogue` (bias, BatchNorm, residual, ReLU: the GEMM micro-kernel's fused store) over
    an NCHW output whose rows are whole vectors (``B`` divides ``OW``): per channel block of
    the row workspace ``[OB][OW][B]`` and ``B`` output columns, the ``B`` column vectors (``B``
    channels each) transposed in registers into ``B`` channel rows of ``B`` columns, the
    epilogue applied to each as the GEMM applies it to a tile row (rows = output channels,
    vectors along the output row) and stored into the output row. Same arguments as the
    loop-IR epilogue.

    Why (measured, issue 18, a conv + bias + ReLU alone, 1 thread, min of 30, loadavg 5.5):
    the loop-IR epilogue reads the workspace with stride ``B``; where ``OW`` is a constant LLVM
    unrolls fully (32), it vectorized the channel loop instead, with gathers and scatters —
    the epilogue of 64×32×32→128 took 0.51 of its 1.38 ms, of 128×32×32→128 0.52 of 2.22 ms
    (VGG's 32×32 convs were slower direct than as the implicit GEMM). Why only whole vectors:
    with a masked tail group (a first version) SqueezeNet's 55/27/13-wide expand convs measured
    the same alone (transposed / loop IR 0.97-1.01, 1 and 2 threads, min of 300) but the whole
    model slower at 2 threads (in one process, min of 60, loadavg 2.6: 1.98 vs 1.84 ms; 1
    thread 3.09 vs 3.03), so rows with a tail keep the loop-IR epilogue."""
    fn, b, bufs, ws, (n, oh, oc0), pnames = _epi_function(cx)
    epi = fused_tile_epilogue(fe, vw)
    out = bufs[pnames.index(fe.out.buffer.name)]
    ldc = i64(fe.out.ldb)
    nch = smin(b, i64(ob * vw), b.sub(i64(d.oc), oc0))

    def group(jb: int, c0):
        """Columns ``[c0, c0 + B)`` of channel block ``jb``."""
        row0 = b.add(oc0, i64(jb * vw))
        col = b.add(b.mul(oh, i64(d.ow)), c0)  # the flat column in image n
        at = gep(b, ws, b.add(i64(jb * d.ow * vw), b.mul(c0, i64(vw))))
        chans = transpose(b, [load_vec(b, gep(b, at, t * vw), vw) for t in range(vw)], vw)
        extras = tile_operands(b, fe, bufs, pnames, n, row0, col)
        left = b.sub(nch, i64(jb * vw))
        dst = gep(b, out, b.add(b.add(i64(fe.out.off), b.mul(n, i64(fe.out.sb))),
                                b.add(b.mul(row0, ldc), col)))
        for r in range(vw):
            val = epi.tile_fn(b, chans[r], r, 0, None, ldc, extras, left)
            ptr = gep(b, dst, r * fe.out.ldb)
            if d.oc % vw:  # the last block's channels past OC are not stored
                with b.if_then(b.icmp_signed("<", i64(r), left)):
                    store_vec(b, val, ptr)
            else:
                store_vec(b, val, ptr)

    if d.ow % vw:
        raise ValueError(f"{cx.sym}: the transposing epilogue needs rows of whole vectors")
    for jb in range(ob):
        with b.if_then(b.icmp_signed("<", i64(jb * vw), nch)):
            with loop(b, 0, d.ow, vw, name=f"c{jb}") as c0:
                group(jb, c0)
    b.ret_void()
    return shared(cx.module, fn)


def _blocked_epi(cx: HelperCtx, d: DirectConv, vw: int, ob: int,
                 fe: FusedEpilogue) -> ir.Function:
    """``<k>.epi`` into a blocked output (``Buffer.blocked``, :mod:`~eqsat.backends.llvm.
    layout`): each ``B``-channel vector of the row workspace ``[OB][OW][B]`` is already the
    output's ``[n][oc/B][oh][ow][B]`` vector, so the epilogue is applied to it as the GEMM's
    fused epilogue applies it to a tile vector — the per-channel operands (bias, BN) are then
    vectors of ``B`` channels, the GEMM's per-column kind (``layout.blocked_epilogue`` admits
    only those) — and stored contiguously: no transpose. Same arguments as the loop-IR
    epilogue."""
    fn, b, bufs, ws, (n, oh, oc0), pnames = _epi_function(cx)
    swapped = dataclasses.replace(fe, rows=(), cols=tuple((name, buf, off)
                                                         for name, buf, off, _ in fe.rows))
    epi = fused_tile_epilogue(swapped, vw)
    out = bufs[pnames.index(d.c.out.name)]
    ocb = d.oc // vw
    for jb in range(ob):
        with b.if_then(b.icmp_signed("<", b.add(oc0, i64(jb * vw)), i64(d.oc))):
            oc = b.add(oc0, i64(jb * vw))
            extras = [gep(b, bufs[pnames.index(buf.name)], b.add(i64(off), oc))
                      for _, buf, off in swapped.cols]
            blk = b.add(b.mul(n, i64(ocb)), b.udiv(oc, i64(vw)))
            row = gep(b, out, b.mul(b.add(b.mul(blk, i64(d.oh)), oh), i64(d.ow * vw)))
            with loop(b, 0, d.ow, name=f"w{jb}") as w:
                x = load_vec(b, gep(b, ws, b.add(i64(jb * d.ow * vw), b.mul(w, i64(vw)))), vw)
                val = epi.tile_fn(b, x, 0, 0, None, i64(0), extras, i64(1))
                store_vec(b, val, gep(b, row, b.mul(w, i64(vw))))
    b.ret_void()
    return shared(cx.module, fn)


def emit_microkernel(module: ir.Module, d: DirectConv, vw: int, tw: int, ob: int) -> ir.Function:
    """``dconv(xp, wp, op, q0, q1, keep)``: the ``tw × ob`` tile over the taps ``[q0, q1)`` of
    (input-channel block, kernel row, kernel column); ``xp`` at the window's top-left input
    element of the tile's first column (channel block 0), ``wp`` at the packed weights of its
    group, ``op`` at the tile's place in the row workspace ``[OB][OW][B]``, whose sums it adds
    to where ``keep`` (a later slice of the input channels)."""
    hp, wp_ = d.padded_hw()
    icb = -(-d.ic // vw)
    sh, sw = d.stride
    dh, dw = d.dilation
    form = (vw, tw, ob, icb, d.kh, d.kw, hp, wp_, sh, sw, dh, dw, d.ow, -(-d.oc // vw))
    name = "eqsat.dconv." + hashlib.sha1(repr(form).encode()).hexdigest()[:12]
    if name in module.globals:
        return module.globals[name]
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, PTR, PTR, I64, I64, I64]),
                     name=name)
    fn.linkage = "internal"
    for a, n in zip(fn.args, ("xp", "wp", "op", "q0", "q1", "keep"), strict=True):
        a.name = n
        if a.type == PTR:
            a.add_attribute("noalias")
    xp, wpp, op, q0, q1, keep = fn.args
    fma = Intrinsics(module).fma(vw)
    vt = vec(vw)
    zero = ir.Constant(vt, [0.0] * vw)
    x_icb, x_row = hp * wp_ * vw, wp_ * vw  # floats per channel block / padded row
    w_tap = vw * ob * vw  # floats per tap of the tile's group (``_pack_w``)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    on = b.icmp_signed("!=", keep, i64(0))
    init = [b.select(on, load_vec(b, gep(b, op, j * d.ow * vw + r * vw), vw, align=4 * vw), zero)
            for r in range(tw) for j in range(ob)]
    pre = b.block
    head, body, done = (fn.append_basic_block(s) for s in ("head", "body", "done"))
    b.branch(head)
    b.position_at_end(head)
    q = b.phi(I64, "q")
    q.add_incoming(q0, pre)
    accs = [b.phi(vt, f"acc{r}_{j}") for r in range(tw) for j in range(ob)]
    for a, v in zip(accs, init, strict=True):
        a.add_incoming(v, pre)
    taps = d.kh * d.kw
    b.cbranch(b.icmp_signed("<", q, q1), body, done)
    b.position_at_end(body)
    cb, tap = b.udiv(q, i64(taps)), b.urem(q, i64(taps))
    kh, kw = b.udiv(tap, i64(d.kw)), b.urem(tap, i64(d.kw))
    xoff = b.add(b.mul(cb, i64(x_icb)), b.add(b.mul(kh, i64(dh * x_row)), b.mul(kw, i64(dw * vw))))
    xtap = gep(b, xp, xoff)
    wtap = gep(b, wpp, b.mul(q, i64(w_tap)))  # taps are [icb][kh][kw] in the packed weight
    cur = list(accs)
    for i in range(vw):
        wv = [load_vec(b, gep(b, wtap, (i * ob + j) * vw), vw, align=4 * vw) for j in range(ob)]
        for r in range(tw):
            xs = splat(b, b.load(gep(b, xtap, r * sw * vw + i), typ=F32), vw)
            for j in range(ob):
                cur[r * ob + j] = b.call(fma, [xs, wv[j], cur[r * ob + j]])
    for phi, val in zip([q, *accs], [b.add(q, i64(1)), *cur], strict=True):
        phi.add_incoming(val, b.block)
    b.branch(head)
    b.position_at_end(done)
    for r in range(tw):
        for j in range(ob):
            b.store(accs[r * ob + j], gep(b, op, j * d.ow * vw + r * vw), align=4 * vw)
    b.ret_void()
    return fn


def blocking(d: DirectConv) -> tuple[int, int]:
    """``(rows, chunk)``: output rows per task and input-channel blocks per weight slice."""
    return max(1, min(d.oh, ROW_COLUMNS // d.ow)), max(1, SLICE_TAPS // (d.kh * d.kw))


def _row_tiles(b: ir.IRBuilder, d: DirectConv, vw: int, micro, tw: int, ob: int, last, x0, xws,
               w0, orow, qs) -> None:
    """The micro-kernel calls of one output row: the full ``tw``-column tiles, then the tail;
    with the tile's ``ob`` channel blocks, or the last group's fewer (``last``)."""
    obs = sorted({ob, -(-d.oc // vw) % ob or ob})
    full, step = d.ow - d.ow % tw, d.stride[1] * vw
    for o in obs:
        if len(obs) > 1:
            blk = b.append_basic_block(f"ob{o}")
            after = b.append_basic_block(f"ob{o}.done")
            b.cbranch(last if o != ob else b.not_(last), blk, after)
            b.position_at_end(blk)
        with loop(b, 0, full, tw, name=f"c{o}") as c0:
            xc = gep(b, xws, b.add(x0, b.mul(c0, i64(step))))
            b.call(micro[tw, o], [xc, w0, gep(b, orow, b.mul(c0, i64(vw))), *qs])
        if d.ow % tw:
            xc = gep(b, xws, b.add(x0, i64(full * step)))
            b.call(micro[d.ow % tw, o], [xc, w0, gep(b, orow, full * vw), *qs])
        if len(obs) > 1:
            b.branch(after)
            b.position_at_end(after)


def emit_direct_conv(module: ir.Module, fn: ir.Function, k: Kernel, d: DirectConv,
                     sizes: tuple[str, ...]) -> ir.Function:
    caps = Capabilities.host()
    vw = caps.vector_width
    ann = dict(k.body.annotations).get(TILE_KEY) if isinstance(k.body, For) else None
    tw, ob = tile(d, caps, ann)
    sym = fn.name
    cx = HelperCtx(module, k, sizes, sym)
    hp, wp = d.padded_hw()
    icb, ocb = -(-d.ic // vw), -(-d.oc // vw)
    ocg = -(-ocb // ob)
    rows, chunk = blocking(d)
    nrb, taps = -(-d.oh // rows), d.kh * d.kw
    ws_w = Buffer("dc.wpk", (1,), "float32", BufferKind.LOCAL)
    ws_x = Buffer("dc.xws", (1,), "float32", BufferKind.LOCAL)
    ws_o = Buffer("dc.ows", (1,), "float32", BufferKind.LOCAL)
    fpack = cx.helper("pack_w", [], [ws_w], _pack_w(d, vw, ob, ws_w))
    fx = cx.helper("to_nchwc", ["dc.n", "dc.icb"], [ws_x], _to_nchwc(d, vw, ws_x))
    if d.c.out.blocked:  # the layout pass chose it (layout.py), so the form is admitted
        fb = blocked_epilogue(d)
        if fb is None or d.c.out.blocked != vw:
            raise ValueError(f"kernel {k.name}: a blocked output this epilogue cannot store")
        fe = _blocked_epi(cx, d, vw, ob, fb)
    elif d.ow % vw == 0 and (fused := epilogue_form(d)) is not None:
        fe = _fused_epi(cx, d, vw, ob, fused)
    else:
        fe = cx.helper("epi", ["dc.n", "dc.oh", "dc.oc0"], [ws_o], _epilogue(d, vw, ob, ws_o))
    micro = {}
    for t in {tw, d.ow % tw or tw}:
        for o in {ob, ocb % ob or ob}:
            micro[t, o] = emit_microkernel(module, d, vw, t, o)
    nparams = len(k.params)
    # buffers, sizes, the blocked input copy, the packed weight
    st = ir.LiteralStructType([PTR] * nparams + [I64] * len(sizes) + [PTR, PTR])

    def task_fn(suffix: str, per_task):
        tf = function(module, f"{sym}.{suffix}", [PTR, I64, I64], internal=True)
        em = FunctionEmitter(module, tf, {})
        b = em.b
        z = ir.Constant(ir.IntType(32), 0)
        ptrs = [b.gep(tf.args[0], [z, ir.Constant(ir.IntType(32), n)], source_etype=st)
                for n in range(len(st.elements))]
        fields = [b.load(p, typ=t) for p, t in zip(ptrs, st.elements, strict=True)]
        per_task(em, fields[:-2], *fields[-2:], tf.args[1], tf.args[2])
        em.finish()
        return shared(module, tf)

    def xtask(em, common, xws, wpk, lo, hi):
        b = em.b
        with loop(b, lo, hi, name="t") as t:
            b.call(fx, common + [b.udiv(t, i64(icb)), b.urem(t, i64(icb)), xws])

    def ctask(em, common, xws, wpk, lo, hi, rows_outer):
        # tasks [lo, hi) of (image, row block, group) when rows_outer (the pool's chunks: each
        # thread a contiguous band of rows, every group of it), else of (image, group, row
        # block) (serial: a group's weights stay in cache over its rows); see "Threads" above
        b = em.b
        ows = alloc_aligned(em, i64(rows * ob * d.ow * vw))

        def one(n, g, oh0):
            nrows = smin(b, i64(rows), b.sub(i64(d.oh), oh0))
            w0 = gep(b, wpk, b.mul(g, i64(ob * icb * taps * vw * vw)))
            last = b.icmp_signed("==", g, i64(ocg - 1))
            with loop(b, 0, icb, chunk, name="cb") as c:
                q0 = b.mul(c, i64(taps))
                q1 = b.mul(smin(b, b.add(c, i64(chunk)), i64(icb)), i64(taps))
                keep = b.zext(b.icmp_signed(">", c, i64(0)), I64)
                with loop(b, 0, nrows, name="r") as r:
                    oh = b.add(oh0, r)
                    x0 = b.add(b.mul(n, i64(icb * hp * wp * vw)),
                               b.mul(oh, i64(d.stride[0] * wp * vw)))
                    orow = gep(b, ows, b.mul(r, i64(ob * d.ow * vw)))
                    _row_tiles(b, d, vw, micro, tw, ob, last, x0, xws, w0, orow, (q0, q1, keep))
            with loop(b, 0, nrows, name="e") as r:
                orow = gep(b, ows, b.mul(r, i64(ob * d.ow * vw)))
                b.call(fe, common + [n, b.add(oh0, r), b.mul(g, i64(ob * vw)), orow])

        with loop(b, lo, hi, name="t") as t:
            n, rest = b.udiv(t, i64(ocg * nrb)), b.urem(t, i64(ocg * nrb))
            if rows_outer:
                one(n, b.urem(rest, i64(ocg)), b.mul(b.udiv(rest, i64(ocg)), i64(rows)))
            else:
                one(n, b.udiv(rest, i64(nrb)), b.mul(b.urem(rest, i64(nrb)), i64(rows)))
        free_aligned(em, ows)

    xt = task_fn("xtasks", xtask)
    ct = task_fn("tasks", lambda *a: ctask(*a, rows_outer=False))
    pt = task_fn("ptasks", lambda *a: ctask(*a, rows_outer=True))
    _emit_driver(cx, fn, d, vw, st, fpack, xt, (pt, ct), ocg * nrb, ob)
    return fn


def packed_symbol(d: DirectConv, vw: int, ob: int) -> str:
    """The name (before ``.pk.b``) of the packed weight copy: a slot of the module's arena of
    packed weights (``tensorize.arena_slot``, on transparent huge pages from 2 MiB), keyed by
    what ``_pack_w`` writes, so that kernels packing one weight the same way share it."""
    key = repr(("nchwc", _pack_w(d, vw, ob, Buffer("dc.wpk", (1,), "float32", BufferKind.LOCAL))))
    return "eqsat.w." + hashlib.sha1(key.encode()).hexdigest()[:16]


def _emit_driver(cx: HelperCtx, fn, d: DirectConv, vw: int, st, fpack, xt, ct, per_image: int,
                 ob: int):
    k = cx.k
    em, bufs, szs = driver_emitter(cx, fn)
    b = em.b
    icb, ocb = -(-d.ic // vw), -(-d.oc // vw)
    hp, wp = d.padded_hw()
    sym = packed_symbol(d, vw, ob)
    gptr, gsrc = packed_globals(cx.module, sym, "b")
    src = bufs[[p.name for p in k.params].index(d.w.name)]
    with b.if_then(b.icmp_unsigned("!=", b.load(gsrc, typ=PTR), src)):
        off = arena_slot(cx.module, sym, F32_BYTES * ocb * icb * d.kh * d.kw * vw * vw)
        dst = b.gep(arena(em), [i64(off)], source_etype=ir.IntType(8))
        b.call(fpack, bufs + szs + [dst])
        b.store(dst, gptr)
        b.store(src, gsrc)
    xws = alloc_aligned(em, i64(d.n * icb * hp * wp * vw))
    ctx = em.alloca(st)
    z = ir.Constant(ir.IntType(32), 0)
    for n, v in enumerate(bufs + szs + [xws, b.load(gptr, typ=PTR)]):
        b.store(v, b.gep(ctx, [z, ir.Constant(ir.IntType(32), n)], source_etype=st))
    launch_t = ir.FunctionType(ir.VoidType(), [PTR, PTR, I64]).as_pointer()
    launch = b.load(cx.module.globals[PARALLEL_FOR], typ=launch_t)
    par = b.and_(b.icmp_unsigned("!=", launch, ir.Constant(launch_t, None)),
                 ir.Constant(ir.IntType(1), d.flops >= PARALLEL_FLOP))
    for (ptasks, tasks), count in (((xt, xt), d.n * icb), (ct, d.n * per_image)):
        if count > 1:
            with b.if_else(par) as (threaded, serial):
                with threaded:
                    b.call(launch, [ptasks, ctx, i64(count)])
                with serial:
                    b.call(tasks, [ctx, i64(0), i64(count)])
        else:
            b.call(tasks, [ctx, i64(0), i64(count)])
    free_aligned(em, xws)
    em.finish()

