"""The blocking of a tensorized contraction and its packing and epilogue loops, as loop IR.

Consumes a :class:`~eqsat.lower.contraction.Contraction` and the host
:class:`~eqsat.backends.llvm.capabilities.Capabilities`; produces a :class:`Plan` (micro-tile,
KC / MC, column blocks, which operand is a constant weight packed once) and three loop-IR
statements that :mod:`eqsat.backends.llvm.tensorize` compiles, each into its own function, with
the ordinary statement emitter (:mod:`eqsat.backends.llvm.codegen_stmt`):

* :func:`pack_a`: rows ``[ic, ic+mc)`` of A, all of K, into the micro-kernel's MR-row strips per
  KC slice (``pack.py``'s layout; slice ``pc`` at ``pc * mcpad``), rows past ``mc`` zero;
* :func:`pack_b`: one column block of B, all of K, into NR-column panels per KC slice (slice
  ``pc`` at ``pc * ncpad``), columns past the block zero;
* :func:`plain_b`: whether B is a row-major ``K × N`` matrix read in place (then the backend
  packs it with vector copies instead of :func:`pack_b`'s evaluated expression);
* :func:`window_b`: whether B is such a read under a bounds guard whose innermost N axis
  reads consecutive floats (a padded stride-1 convolution's im2col): then the backend packs
  it with masked vector loads (``pack_window.py``); :func:`window_a` the same for A (an
  exchanged convolution's im2col, rows = pixels);
* :func:`epilogue`: the kernel's epilogue statement per element of the block, the accumulated
  value read from the C workspace.

Both packers *evaluate the factor expressions* with the axis variables bound to the packed
element's row / column / depth, so views (transposes, reshapes, concatenations) and im2col with
its padding guards need nothing special; a lazy ``Select`` keeps reads past an edge from
happening. The variables the statements read that no loop binds are the size params and the
``tz.*`` block parameters (:data:`BLOCK_VARS`), passed as function arguments.

Column blocks follow the output's innermost N axis (extent W) so that the epilogue writes, and
usually reads, consecutive addresses and vectorizes: with W ≤ ``NC_MAX`` a block is a run of
whole rows of it (``rows`` mode: ``nw = W``, ``w0 = 0``); otherwise a block is a piece of one
row (``split`` mode: ``nrows = 1``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from math import gcd

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.lower.analysis import substitute, walk
from eqsat.lower.contraction import ACC, Contraction, const_extent, extent_of, flat_index
from eqsat.lower.loops import (
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Call,
    Cmp,
    CmpOp,
    Const,
    Expr,
    For,
    Let,
    Load,
    LoopKind,
    Select,
    Stmt,
    Store,
    Var,
    minimum,
)

KC = 256
SWAP_BELOW = 0.8  # orient(): exchange the operands when less of the tile's work is real
SWAP_GAIN = 1.05  # ... and the exchange makes this much more of it real
SWAP_MIN_N = 128  # ... and M, the exchanged N, shares the (element-wise) A packing this widely
NC_MAX = 256
# from here on the blocks are split for threads (TASK_MULTIPLE tasks). 1e7, not 4e7: BERT's
# 128 x 256 x 256 projections (1.7e7 FLOP, ~0.1 ms) ran as one task, the second thread idle.
# This and the symbolic-M hint of _plan_for together, 2 threads, interleaved, this 2-core VM
# at loadavg 5-7 (noisy): BERT 3.30 -> 2.31 ms, NasRNN 2.99 -> 1.70 ms (the hint alone: 3.30
# -> 3.21 and 2.99 -> 2.51); at 1 thread (CPU time) 0.95-0.96x
SPLIT_FLOP = 1e7
# a kernel of this much work with more than one task runs on the pool (tensorize's driver;
# ~5-10 µs of one thread: the native pool's launch costs a few µs); from here on its blocks
# are balanced for the threads too (``_split``), though not split further (see ``_plan_for``)
PARALLEL_FLOP = 1e6
SPLIT_BYTES = 2 << 20  # ... and from here on of weights packed once (a GEMV: memory bound)
TASK_MULTIPLE = 4  # 1, 2 and 4 threads get equal shares of the tasks
B_WS_BYTES = 2 << 20  # the K × NC block of B a thread packs stays under this
MAX_WINDOW_STRIDE = 4  # conv strides; a transposed read (stride = a row) keeps the generic packer
BLOCK_VARS = ("tz.b", "tz.ic", "tz.mc", "tz.o0", "tz.nrows", "tz.w0", "tz.nw", "tz.K")
V = {n: Var(n) for n in BLOCK_VARS}
ZERO = Const(0.0, "float32")


@dataclass(frozen=True)
class Plan:
    mr: int
    nr: int
    vw: int
    unroll: int
    kc: int
    mc: int  # rows of a task (a multiple of mr)
    rows_mode: bool  # column blocks of whole rows of the innermost N axis (else pieces of one)
    ncb: int  # columns of a full column block (rows * W, or the piece)
    rows: int  # rows of the innermost N axis per block (rows mode)
    prepack_a: bool
    prepack_b: bool

    @property
    def ncpad(self) -> int:
        return -(-self.ncb // self.nr) * self.nr


def _round(x: int, m: int) -> int:
    return -(-x // m) * m


def _prepackable(c: Contraction, side: str) -> bool:
    """A weight-only operand whose blocks all have constant sizes: packed once."""
    bufs = c.loads(side)
    if len(bufs) != 1 or next(iter(bufs)).kind is not BufferKind.WEIGHT:
        return False
    axes = c.batch + (c.m if side == "a" else c.n) + c.k
    return const_extent(axes) is not None


def choose_plan(c: Contraction, caps: Capabilities) -> Plan:
    """The blocking of ``c``: for each micro-tile the host offers (``Capabilities.gemm_tiles``,
    first the default), the plan of :func:`_plan_for`; the one whose padded rows and columns
    waste least of the micro-kernel's work (:func:`padded_share`), the first on a tie.

    Why more than one tile (AVX-512): 12 × 32 and 8 × 48 both keep 24 accumulators and ran at
    the same 222-228 GFLOP/s on L1-resident panels here, but 64, 128 and 256 output channels
    are whole strips of 8 and not of 12 (12.5 % of 12 × 32's work on zero rows at 64). A
    symbolic M counts as a batch of one here: SwiGLU's batch × 64 rows took 12 × 32 (6 strips
    for 64 rows) and now take 8 × 48 (its GEMMs, 1 thread, interleaved: 0.72-0.82× the time)."""
    tiles = caps.gemm_tiles()
    best, best_share = None, -1.0
    for mr, nr in tiles:
        plan = _plan_for(c, caps, mr, nr)
        share = padded_share(c, plan, hint=True)
        if share is None:
            return plan if best is None else best
        if share > best_share + 1e-9:
            best, best_share = plan, share
    return best


def _plan_for(c: Contraction, caps: Capabilities, mr: int, nr: int) -> Plan:
    vw = caps.vector_width
    unroll = 2 if vw >= 16 else 4
    m, k = const_extent(c.m), const_extent(c.k)
    # a symbolic M (BERT's and SwiGLU's batch x seq) is blocked for a batch of one: unknown, its
    # blocks were MC = 192 rows, and BERT's FFN output GEMM (0.4 ms) ran as one task
    mh = m if m is not None else _hint_extent(c.m)
    if m is not None and m < mr:
        mr = max(1, m)
    elif m is not None:
        mr = _pick_mr(m, mr)
    w = const_extent(c.n[-1:]) if c.n else 1
    n = const_extent(c.n)
    if n is not None and n <= vw:
        nr = vw
    mc = mr * max(1, 192 // mr)
    if mh is not None:
        mc = min(mc, _round(mh, mr))
    pa, pb = _prepackable(c, "a"), _prepackable(c, "b")
    big = mh is not None and (2 * mh * (n or 1) * (k or 1) >= SPLIT_FLOP
                             or packed_bytes(c, pa, pb) >= SPLIT_BYTES)
    nc_max = NC_MAX
    if not pb and k is not None:  # a thread's packed K × NC block of B
        nc_max = max(nr, min(2 * NC_MAX, B_WS_BYTES // (4 * k) // nr * nr))
    if w is not None and w <= nc_max:
        no = const_extent(c.n[:-1])
        rows = max(1, nc_max // w)
        if no is not None and mh is not None:
            # launched on the pool anyway (more than one block): an even task count. Measured
            # (SqueezeNet's 6 MFLOP 1×1 convs on 55×55: 7 blocks of 8 rows, a 4 : 3 share of
            # them at 2 threads, now 8 of 7; per-thread CPU time in the report of this change)
            fl = 2 * mh * (n or 1) * (k or 1)
            several = -(-mh // mc) * -(-no // min(rows, no)) > 1
            even = big or (fl >= PARALLEL_FLOP and several)
            mc, rows = _split(mh, mr, mc, no, min(rows, no), even, pb, w, 2 * nr)
            parts = _row_parts(-(-mh // mc) * -(-no // rows), w, nr) if big else 1
            if parts > 1:  # too few blocks of whole rows for the threads: pieces of rows
                return Plan(mr, nr, vw, unroll, KC, mc, False, _round(-(-w // parts), nr), 1,
                            pa, pb)
        elif no is not None:
            rows = min(rows, no)
        return Plan(mr, nr, vw, unroll, KC, mc, True, rows * w, rows, pa, pb)
    if w is not None and mh is not None:  # balanced pieces of a row (the last one not tiny)
        nc_max = _round(-(-w // -(-w // nc_max)), nr)
        njb = -(-w // nc_max) * (const_extent(c.n[:-1]) or 1)
        # a weight packed once with fewer row pieces than TASK_MULTIPLE: row blocks too (the
        # tasks run row block by row block, so each of 2 threads runs one with all its
        # pieces). SwiGLU's down projection (64 x 1376 x 512: pieces of 288 + 224 columns, a
        # 6 : 5 share of the panels) ran as 2 row blocks x 2 pieces, in the whole model at 2
        # threads, each kernel timed in sequence, min of 300, interleaved (loadavg 7.2-7.5):
        # 363 -> 309 and 369 -> 303 µs; at 1 thread 529 -> 515 and 533 -> 535 (each thread
        # reads all of the weight now, which the next-panel prefetch hides). Its 1376-wide
        # gate / up (6 pieces) stay one row block: 2 of them ran 350 -> 405 µs (cold weights,
        # min of 120; each thread streams all of the weight).
        mc = _split(mh, mr, mc, njb, 1, big and pb and njb < TASK_MULTIPLE)[0]
    return Plan(mr, nr, vw, unroll, KC, mc, False, nc_max, 1, pa, pb)


def _hint_extent(axes) -> int | None:
    """The extent of ``axes`` with each symbolic dim counted as 1 (the schedulers' convention,
    ``default_schedule.estimate_ns``: a batch of one unless ``Options.shapes`` fixes it)."""
    n = 1
    for _, e in axes:
        if isinstance(e, Const):
            n *= e.value
        elif not isinstance(e, Var):
            return None
    return n


def packed_bytes(c: Contraction, pa: bool, pb: bool) -> int:
    """Bytes of the operands packed once (weights): what a call streams from memory."""
    total = 0
    for on, axes in ((pa, c.m), (pb, c.n)):
        if on:
            total += 4 * const_extent(c.batch + axes + c.k)
    return total


def _row_parts(tasks: int, w: int, nr: int) -> int:
    """Pieces to cut each row of the innermost N axis into when ``tasks`` blocks of whole rows
    are fewer than ``TASK_MULTIPLE`` (a GEMV: one row block, one row): the fewest that make
    the task count a multiple of it, each piece at least one NR panel (1: none).

    Why: VGG's first classifier layer (1 × 16384 by a 16 MB weight, 8 MFLOP, under
    ``SPLIT_FLOP``) was one task; its weight streams from memory, and 2 threads stream it
    faster. Measured (a warm Gemm + ReLU, min of 100, loadavg 3.0): 2 threads 0.70 → 0.38 ms,
    onnxruntime 0.385 ms; 1 thread unchanged (0.68 ms, onnxruntime 0.66)."""
    if tasks >= TASK_MULTIPLE:
        return 1
    parts = TASK_MULTIPLE // gcd(tasks, TASK_MULTIPLE)
    while parts > 1 and _round(-(-w // parts), nr) * (parts - 1) >= w:
        parts //= 2  # a piece would be empty: w has fewer panels than parts
    return parts


def _pick_mr(m: int, mr: int) -> int:
    """``mr``, unless it pads ``m`` rows by over a quarter: then the strip height in
    ``[2/3 mr, mr]`` that pads them least (the tallest on a tie). Measured at 1 thread on
    SqueezeNet's convs: 8 × 32 strips did 0.82× the work per second of 12 × 32 ones, so 64 and
    128 channels stay at 12 (12.5 % and 3 % padding, 8-12 % faster than exact strips of 8),
    while 16 channels run as 2 strips of 8 rather than 2 of 12."""
    if _round(m, mr) <= 1.25 * m:
        return mr
    return min(range(mr, -(-2 * mr // 3) - 1, -1), key=lambda r: _round(m, r))


def padded_share(c: Contraction, plan: Plan, hint: bool = False) -> float | None:
    """The share of the micro-kernel's work that is real: ``M·N`` over the rows and columns
    it computes, with every row block rounded up to MR strips and every column block to NR
    panels (None when an extent is not a constant; with ``hint``, a symbolic M counts its
    symbolic dims as 1, as ``_plan_for`` blocks it)."""
    m, no, w = const_extent(c.m), const_extent(c.n[:-1]), const_extent(c.n[-1:])
    if m is None and hint:
        m = _hint_extent(c.m)
    if None in (m, no, w) or 0 in (m, no, w):
        return None
    rows = sum(_round(min(plan.mc, m - i), plan.mr) for i in range(0, m, plan.mc))
    if plan.rows_mode:
        cols = sum(_round(min(plan.rows, no - o) * w, plan.nr) for o in range(0, no, plan.rows))
    else:
        cols = no * sum(_round(min(plan.ncb, w - j), plan.nr) for j in range(0, w, plan.ncb))
    return m * no * w / (rows * cols)


def edge_vectors(c: Contraction, plan: Plan) -> set[int] | None:
    """The widths, in vectors, of the partial last panels of ``c``'s column blocks (None when
    an extent is not a constant: any width may occur)."""
    no, w = const_extent(c.n[:-1]) if c.n else 1, const_extent(c.n[-1:]) if c.n else 1
    if no is None or w is None:
        return None
    if plan.rows_mode:
        cols = {plan.rows * w, (no - (-(-no // plan.rows) - 1) * plan.rows) * w}
    else:
        cols = {plan.ncb, w - (-(-w // plan.ncb) - 1) * plan.ncb}
    return {-(-(n % plan.nr) // plan.vw) for n in cols if n % plan.nr}


def swapped(c: Contraction) -> Contraction:
    """``c`` with its operands exchanged: ``C^T = B^T A^T`` (M and N, ``a`` and ``b``)."""
    return replace(c, m=c.n, n=c.m, a=c.b, b=c.a)


def orient(c: Contraction, caps: Capabilities) -> tuple[Contraction, Plan]:
    """The orientation to run ``c`` in and its plan: exchanged when padding wastes over
    ``1 - SWAP_BELOW`` of the micro-kernel's work and the exchange wastes less.

    Why: the micro-tile is MR rows × NR (2 vectors) columns, and the columns are the output's
    innermost axis; a conv on a 14×14 or 7×7 image has column blocks of 98 or 49 — 23 % of
    the work on padding lanes — and a conv with 16 output channels pads M to 24. Exchanged,
    the channels are the vector axis and the pixels the rows (measured on the ResNet 3×3
    convs at 1 thread: 14×14×256 117 → 135 GFLOP/s, 7×7×512 121 → 134). Not for the others:
    56×56×64, 84 % real, ran 105 → 99 GFLOP/s exchanged; SqueezeNet's 1×1 squeeze convs
    (16 channels, 55×55) ran 0.10 → 0.16 ms and 0.30 → 0.33 ms, their A packing shared by one
    16-wide panel only (hence ``SWAP_MIN_N``). Those were measured when the exchanged A (the
    im2col) was packed element by element; it is now packed with masked loads (``window_a``),
    and the thresholds still hold: exchanged / default thread CPU time at 1 thread, min of 40
    (loadavg 7): 64×56×64 1.13, 16×55×64 1.26, 32×27×128 1.08, 128×28×128 0.95 (noise level:
    the same plan measured 0.95-1.0 against itself)."""
    plan = choose_plan(c, caps)
    if not c.m:
        return c, plan
    share = padded_share(c, plan)
    if share is None or share >= SWAP_BELOW or const_extent(c.m) < SWAP_MIN_N:
        return c, plan
    sc = swapped(c)
    splan = choose_plan(sc, caps)
    sshare = padded_share(sc, splan)
    if sshare is not None and sshare > share * SWAP_GAIN:
        return sc, splan
    return c, plan


def _split(m: int, mr: int, mc: int, no: int, rows: int, big: bool, prefer_m: bool = False,
           w: int = 1, min_cols: int = 0) -> tuple[int, int]:
    """Balanced blocks: ``(mc, rows)`` so that the row blocks (MR strips) and the column blocks
    (``rows`` of the outer N extent ``no``) are as equal as they can be; for a ``big``
    contraction, the task count ``row blocks × column blocks`` a multiple of ``TASK_MULTIPLE``
    (every thread count dividing it gets equal shares), splitting N first (a column block's
    packed B is not shared between tasks; a row block's split would pack it again), or M
    first when B is a weight packed once (``prefer_m``: then A is the operand packed per task)."""
    strips = -(-m // mr)
    nib0, njb0 = -(-m // mc), -(-no // rows)
    best = (-(-strips // nib0) * mr, -(-no // njb0))
    if not big:
        return best
    best_key = None
    for nib in range(nib0, min(strips, nib0 + TASK_MULTIPLE) + 1):
        for njb in range(njb0, min(no, njb0 * TASK_MULTIPLE) + 1):
            mcb, rb = -(-strips // nib) * mr, -(-no // njb)
            if not (_even(strips, nib) and _even(no, njb)):
                continue  # the last block would be short: threads would wait for the others
            if njb > njb0 and rb * w < min_cols:
                break  # blocks narrower than the micro-tiles would mostly compute padding
            tasks = nib * njb
            key = (tasks % TASK_MULTIPLE != 0, njb if prefer_m else nib, tasks)
            if best_key is None or key < best_key:
                best_key, best = key, (mcb, rb)
    return best


def _even(n: int, parts: int) -> bool:
    """``n`` in ``parts`` blocks of ``ceil(n / parts)``: the last one at most one shorter."""
    size = -(-n // parts)
    return n - (parts - 1) * size >= size - 1


# ------------------------------------------------------------------------------ loop IR
def _ceil(x: Expr, m: int) -> Expr:
    return BinOp(BinaryOp.FLOORDIV, BinOp(BinaryOp.ADD, x, Const(m - 1)), Const(m))


def _roundup(x: Expr, m: int) -> Expr:
    return BinOp(BinaryOp.MUL, _ceil(x, m), Const(m))


def _axes_env(c: Contraction, row: Expr | None, o: Expr | None, w: Expr | None,
              kk: Expr | None) -> dict[str, Expr]:
    env = dict(flat_index(c.batch, V["tz.b"]))
    if row is not None:
        env.update(flat_index(c.m, BinOp(BinaryOp.ADD, V["tz.ic"], row)))
    if o is not None and c.n:
        env.update(flat_index(c.n[:-1], BinOp(BinaryOp.ADD, V["tz.o0"], o)))
        env[c.n[-1][0]] = BinOp(BinaryOp.ADD, V["tz.w0"], w)
    if kk is not None:
        env.update(flat_index(c.k, kk))
    return env


def _slices(plan: Plan, body_of) -> Stmt:
    """``for pcs in ceil(K / KC)``, the slice's depth ``kcur`` handed to ``body_of``."""
    pcs = Var("tz.pcs")
    kcur = minimum(Const(plan.kc), BinOp(BinaryOp.SUB, V["tz.K"], pcs * Const(plan.kc)))
    return For("tz.pcs", _ceil(V["tz.K"], plan.kc), body_of(pcs, kcur))


def pack_a(c: Contraction, plan: Plan, dst: Buffer) -> Stmt:
    mr = plan.mr
    s, kk, r = Var("tz.s"), Var("tz.kk"), Var("tz.r")
    mcpad = _roundup(V["tz.mc"], mr)

    def body(pcs, kcur):
        row = s * Const(mr) + r
        kabs = pcs * Const(plan.kc) + kk
        val = substitute(c.a, _axes_env(c, row, None, None, kabs))
        at = pcs * Const(plan.kc) * mcpad + s * kcur * Const(mr) + kk * Const(mr) + r
        store = Store(dst, (at,), Select(row < V["tz.mc"], val, ZERO))
        inner = For("tz.r", Const(mr), store, LoopKind.UNROLLED)
        return For("tz.s", _ceil(V["tz.mc"], mr), For("tz.kk", kcur, inner))

    return _slices(plan, body)


def _block_cols(plan: Plan) -> Expr:
    return V["tz.nrows"] * V["tz.nw"]


def _fix_rows(c: Contraction, plan: Plan, s: Stmt) -> Stmt:
    """In rows mode a block is whole rows: ``tz.w0 = 0`` and ``tz.nw = W``, substituted so the
    column's ``// nw`` / ``% nw`` divide by the (usually constant) extent, not an argument
    (a vector ``sdiv`` by a run-time value is scalarized into one ``idiv`` per lane)."""
    if not plan.rows_mode:
        return s
    return substitute(s, {"tz.w0": Const(0), "tz.nw": extent_of(c.n[-1:])})


def _col_ow(plan: Plan, col: Expr) -> tuple[Expr, Expr]:
    if plan.rows_mode:
        return BinOp(BinaryOp.FLOORDIV, col, V["tz.nw"]), BinOp(BinaryOp.MOD, col, V["tz.nw"])
    return Const(0), col


def pack_b(c: Contraction, plan: Plan, dst: Buffer) -> Stmt:
    nr = plan.nr
    p, kk, j = Var("tz.p"), Var("tz.kk"), Var("tz.j")
    nc = _block_cols(plan)
    ncpad = _roundup(nc, nr)

    def body(pcs, kcur):
        col = p * Const(nr) + j
        o, w = _col_ow(plan, col)
        kabs = pcs * Const(plan.kc) + kk
        val = substitute(c.b, _axes_env(c, None, o, w, kabs))
        at = pcs * Const(plan.kc) * ncpad + p * kcur * Const(nr) + kk * Const(nr) + j
        store = Store(dst, (at,), Select(col < nc, val, ZERO))
        inner = For("tz.j", Const(nr), store, LoopKind.VECTORIZED)
        return For("tz.p", _ceil(nc, nr), For("tz.kk", kcur, inner))

    return _fix_rows(c, plan, _slices(plan, body))


def epilogue(c: Contraction, plan: Plan, cws: Buffer) -> Stmt:
    r, o, w = Var("tz.r"), Var("tz.o"), Var("tz.w")
    col = o * V["tz.nw"] + w
    env = _axes_env(c, r, o, w, None)
    define = {v: substitute(e, env) for v, e in c.define}
    acc = Load(cws, (r * Const(plan.ncpad) + col,))
    stmt = substitute(substitute(c.epilogue, {ACC.name: acc}), define)
    # a libm call (float64 tanh, erf: Capabilities.scalar_calls) does not vectorize: no hint
    # then (LLVM would warn on every kernel); float32 math is vector arithmetic (vmath)
    scalar = set(Capabilities.host().scalar_calls)
    calls = {(x.intrinsic, f"{x.intrinsic}.{x.dtype}") for x in walk(stmt) if isinstance(x, Call)}
    kind = LoopKind.SERIAL if any(scalar & set(c) for c in calls) else LoopKind.VECTORIZED
    inner = For("tz.w", V["tz.nw"], stmt, kind)
    return _fix_rows(c, plan, For("tz.r", V["tz.mc"], For("tz.o", V["tz.nrows"], inner)))


@dataclass(frozen=True)
class PlainB:
    """B read in place as a row-major ``K × N`` matrix: ``b = buffer[off + tz.b * sb + k * ldb +
    n]`` for the flat K index ``k`` and flat N index ``n`` (a 1×1 stride-1 convolution's NCHW
    activation, a MatMul's right operand). Its column blocks are then contiguous runs of each
    of its K rows and pack with vector loads (``pack.emit_pack_b``), no per-element index
    arithmetic."""

    buffer: Buffer
    off: int
    sb: int
    ldb: int
    w: int  # the extent of the innermost N axis (the flat N index of (o, w) is o * w + w)


def _affine(e: Expr) -> dict[str, int] | None:
    """``e`` as ``{var: coefficient, "": constant}``, or None when it is not affine."""
    if isinstance(e, Const) and isinstance(e.value, int):
        return {"": e.value}
    if isinstance(e, Var):
        return {e.name: 1}
    if isinstance(e, BinOp) and e.op in (BinaryOp.ADD, BinaryOp.SUB, BinaryOp.MUL):
        x, y = _affine(e.a), _affine(e.b)
        if x is None or y is None:
            return None
        if e.op is BinaryOp.MUL:
            if set(x) <= {""}:
                x, y = y, x
            if not set(y) <= {""}:
                return None
            return {v: k * y.get("", 0) for v, k in x.items()}
        sign = -1 if e.op is BinaryOp.SUB else 1
        out = dict(x)
        for v, k in y.items():
            out[v] = out.get(v, 0) + sign * k
        return out
    return None


def _strides(axes, outer_free: bool = False) -> dict[str, int] | None:
    """Row-major strides of ``axes`` (None unless every extent is a constant; with
    ``outer_free`` the outermost may be symbolic — a symbolic batch: no stride depends on it)."""
    out, stride = {}, 1
    for i, (name, ext) in enumerate(reversed(axes)):
        out[name] = stride
        if isinstance(ext, Const):
            stride *= ext.value
        elif not (outer_free and i == len(axes) - 1):
            return None
    return out


def plain_b(c: Contraction) -> PlainB | None:
    """The :class:`PlainB` form of ``c.b``, or None (guards, views that are not affine, ...)."""
    return _affine_b(c.b, c)


def _flat_address(load: Load) -> dict[str, int] | None:
    """A load's row-major element offset as {loop var: coefficient, "": constant}, or None
    when an index is not affine or a dim other than the outermost is symbolic."""
    flat: dict[str, int] = {"": 0}
    stride = 1
    shape = load.buffer.shape
    for i, (ix, dim) in enumerate(zip(reversed(load.index), reversed(shape), strict=True)):
        aff = _affine(ix)
        if aff is None:
            return None
        for v, k in aff.items():
            flat[v] = flat.get(v, 0) + k * stride
        if isinstance(dim, int):
            stride *= dim
        elif i != len(shape) - 1:
            return None
    return flat


def _affine_b(e: Expr, c: Contraction, outer_free: bool = False) -> PlainB | None:
    """``e`` as ``buffer[off + b * sb + k * ldb + n]`` over the flat batch, K and N indices of
    ``c`` (``outer_free``: the buffer's outermost dim and the outermost batch / K axis may be
    symbolic — the output of a model with a symbolic batch)."""
    if not isinstance(e, Load) or not all(isinstance(d, int) for d in e.buffer.shape[
            1 if outer_free else 0:]):
        return None
    flat = _flat_address(e)
    if flat is None:
        return None
    ns = _strides(c.n)
    ks, bs = _strides(c.k, outer_free), _strides(c.batch, outer_free)
    if ns is None or ks is None or bs is None or not c.n:
        return None
    ext = {n: x.value if isinstance(x, Const) else None for n, x in c.n + c.k + c.batch}
    if any(v and v not in ext for v in flat):
        return None

    def scale(strides):
        """The common factor of the axes' coefficients over their row-major strides."""
        f = None
        for v, st in strides.items():
            if ext[v] == 1:
                continue
            k = flat.get(v, 0)
            if k % st or (f is not None and k != f * st):
                return None
            f = k // st
        return 0 if f is None else f

    if scale(ns) != 1:
        return None
    ldb, sb = scale(ks), scale(bs)
    if ldb is None or sb is None or flat[""] < 0:
        return None
    return PlainB(e.buffer, flat[""], sb, ldb, ext[c.n[-1][0]])


@dataclass(frozen=True)
class FusedEpilogue:
    """An epilogue the micro-kernel applies in its final store, straight into the output
    (``out``, a row-major ``M × N`` matrix: ``out[off + b * sb + m * ldb + n]`` for the flat M
    and N indices): ``value`` over :data:`ACC` and the operands (:data:`ACC` alone for a bare
    store), each a variable ``ep.<i>`` that is

    * ``rows[i] = (buffer, off, s)``: ``buffer[off + s * m]`` for the flat row ``m`` (a conv's
      per-channel bias, BN scale and shift), one broadcast per tile row;
    * ``cols[i] = (buffer, off)``: ``buffer[off + n]`` for the flat column ``n`` (a MatMul's
      bias), one vector per tile vector;
    * ``likes[i] = (buffer, off, sb)``: laid out as the output (a residual add), read at the
      tile's own offsets.

    Why: the C workspace and its epilogue pass were 16 % of a 1×1 conv's time (a bare store:
    a copy), and nearly every conv and MatMul has an epilogue (bias, ReLU, residual)."""

    out: PlainB
    value: Expr
    rows: tuple[tuple[str, Buffer, int, int], ...]
    cols: tuple[tuple[str, Buffer, int], ...]
    likes: tuple[tuple[str, Buffer, int, int], ...]


FUSED_OPS = (BinaryOp.ADD, BinaryOp.SUB, BinaryOp.MUL, BinaryOp.DIV, BinaryOp.MAX,
             BinaryOp.MIN)


def fused_epilogue(c: Contraction) -> FusedEpilogue | None:
    """The :class:`FusedEpilogue` of ``c``, or None (a call, a cast, a guard, an operand
    read another way, an output that is not a plain matrix)."""
    e, env = c.epilogue, {}
    while isinstance(e, Let):
        env[e.var.name] = substitute(e.value, env)
        e = e.body
    if not (isinstance(e, Store) and c.m and e.buffer.dtype == "float32"):
        return None
    define = dict(c.define)
    idx = tuple(substitute(i, define) for i in e.index)
    out = _affine_b(Load(e.buffer, idx), replace(c, k=c.m), outer_free=True)
    if out is None:
        return None
    ms, ns = _strides(c.m, outer_free=True), _strides(c.n)
    if ms is None or ns is None:
        return None
    ext = {n: x.value for n, x in c.m + c.n + c.batch if isinstance(x, Const)}
    rows, cols, likes = [], [], []

    def operand(load: Load) -> Expr | None:
        if load.buffer.dtype != "float32" or not all(isinstance(d, int)
                                                      for d in load.buffer.shape[1:]):
            return None
        ld = Load(load.buffer, tuple(substitute(i, define) for i in load.index))
        flat = _flat_address(ld)
        if flat is None:
            return None
        used = {v for v, k in flat.items() if v and k and ext.get(v, 2) != 1}
        name = f"ep.{len(rows) + len(cols) + len(likes)}"
        if used <= set(ms):
            scales = {flat.get(v, 0) // ms[v] for v in used if flat.get(v, 0) % ms[v] == 0}
            if len(scales) <= 1 and all(flat.get(v, 0) % ms[v] == 0 for v in used):
                rows.append((name, ld.buffer, flat[""], scales.pop() if scales else 0))
                return Var(name, "float32")
            return None
        if used <= set(ns):
            if all(flat.get(v, 0) == ns[v] for v in used):
                cols.append((name, ld.buffer, flat[""]))
                return Var(name, "float32")
            return None
        like = _affine_b(ld, replace(c, k=c.m), outer_free=True)
        if like is not None and (like.ldb, like.sb, like.w) == (out.ldb, out.sb, out.w):
            likes.append((name, ld.buffer, like.off, like.sb))
            return Var(name, "float32")
        return None

    def walk_value(x: Expr) -> Expr | None:
        if x == ACC or (isinstance(x, Const) and isinstance(x.value, float)):
            return x
        if isinstance(x, Var) and x.name in env:
            return walk_value(env[x.name])
        if isinstance(x, Load):
            return operand(x)
        if isinstance(x, BinOp) and x.op in FUSED_OPS:
            a, b = walk_value(x.a), walk_value(x.b)
            return None if a is None or b is None else BinOp(x.op, a, b)
        return None

    value = walk_value(substitute(e.value, env))
    if value is None:
        return None
    return FusedEpilogue(out, value, tuple(rows), tuple(cols), tuple(likes))


@dataclass(frozen=True)
class PiecewiseB:
    """B = ``Select(v < t, e1, e2)`` (nested) over ``v``, the outermost K axis, each leaf a
    :class:`PlainB` — a channel concatenation feeding a 1×1 convolution: K row ``k`` of piece
    ``i`` (``starts[i] <= k < starts[i + 1]``) is row ``k - starts[i]`` of ``pieces[i]``, so
    the packer picks one row pointer per K row and copies vectors, as for one PlainB (the
    generic packer evaluated the Select per element: SqueezeNet's fire modules read a concat
    in their squeeze conv, which then ran 2-3× slower than onnxruntime's)."""

    starts: tuple[int, ...]  # flat K row of each piece's first row
    pieces: tuple[PlainB, ...]


def _threshold(cond: Expr, v: str) -> tuple[int, bool] | None:
    """``cond`` as ``v < t`` (``(t, True)``) or ``v >= t`` (``(t, False)``), else None."""
    bounds = _bounds(cond)
    if bounds is None or len(bounds[0]) + len(bounds[1]) != 1:
        return None
    (f,) = bounds[0] + bounds[1]
    if {x for x in f if x} != {v} or f[v] != 1:
        return None
    return -f.get("", 0), bool(bounds[1])


def piecewise_b(c: Contraction) -> PiecewiseB | None:
    """The :class:`PiecewiseB` form of ``c.b``, or None."""
    if not c.k or not isinstance(c.b, Select):
        return None
    v, ext = c.k[0]
    inner = const_extent(c.k[1:]) if c.k[1:] else 1
    if not isinstance(ext, Const) or inner is None:
        return None

    def go(e: Expr, lo: int, hi: int):
        if isinstance(e, Select):
            th = _threshold(e.cond, v)
            if th is None:
                return None
            t, below = th
            first, second = (e.a, e.b) if below else (e.b, e.a)  # k < t, then k >= t
            if t <= lo:
                return go(second, lo, hi)
            if t >= hi:
                return go(first, lo, hi)
            left, right = go(first, lo, t), go(second, t, hi)
            return None if left is None or right is None else left + right
        leaf = substitute(e, {v: BinOp(BinaryOp.ADD, Var(v), Const(lo))})
        pl = plain_b(replace(c, b=leaf))
        return None if pl is None else [(lo * inner, pl)]

    found = go(c.b, 0, ext.value)
    if not found or len(found) < 2:
        return None
    return PiecewiseB(tuple(s for s, _ in found), tuple(p for _, p in found))


@dataclass(frozen=True)
class WindowB:
    """B = ``Select(guard, buffer[flat], 0)`` (or an unguarded ``buffer[flat]``) with ``flat``
    affine in the axes, the innermost N axis ``w`` at a coefficient ``stride`` >= 1 (floats
    ``stride`` apart along it), and ``guard`` a conjunction of ``affine >= bound`` /
    ``affine < bound`` in which ``w`` has coefficient 0 or ``stride`` — a padded
    convolution's im2col (``x[n, c, s*h + kh - p, s*w + kw - p]`` inside the image). Per K
    row and vector of a panel, the lanes of one output row read floats ``stride`` apart and
    the guard bounds them to a lane range: one masked load (stride 1) or masked gather per
    row the vector touches (``pack_window.py``), zero outside — what the Select gives."""

    buffer: Buffer
    addr: dict[str, int]  # flat element offset: {var: coefficient, "": constant}
    lower: tuple[dict[str, int], ...]  # each affine form >= 0
    upper: tuple[dict[str, int], ...]  # each affine form < 0
    batch: tuple[tuple[str, int], ...]
    outer: tuple[tuple[str, int], ...]  # the N axes but the innermost
    k: tuple[tuple[str, int], ...]
    w: str
    width: int  # the extent of w
    stride: int = 1  # w's coefficient in the address (and in the guards that have it)


def _conjuncts(e: Expr) -> list[Expr]:
    if isinstance(e, BinOp) and e.op is BinaryOp.AND:
        return _conjuncts(e.a) + _conjuncts(e.b)
    return [e]


def _bounds(e: Expr) -> tuple[list, list] | None:
    """``e`` as conjuncts ``f >= 0`` (lower) and ``f < 0`` (upper), f affine; else None."""
    lower, upper = [], []
    for x in _conjuncts(e):
        if not isinstance(x, Cmp):
            return None
        a, b = _affine(x.a), _affine(x.b)
        if a is None or b is None:
            return None
        d = dict(a)  # a - b
        for v, k in b.items():
            d[v] = d.get(v, 0) - k
        if x.op is CmpOp.GE:
            lower.append(d)
        elif x.op is CmpOp.GT:  # a - b > 0  <=>  a - b - 1 >= 0
            lower.append({**d, "": d.get("", 0) - 1})
        elif x.op is CmpOp.LT:
            upper.append(d)
        elif x.op is CmpOp.LE:  # a - b <= 0  <=>  a - b - 1 < 0
            upper.append({**d, "": d.get("", 0) - 1})
        else:
            return None
    return lower, upper


def window_b(c: Contraction) -> WindowB | None:
    """The :class:`WindowB` form of ``c.b``, or None."""
    e = c.b
    if isinstance(e, Load):  # an unguarded read (an unpadded or strided conv): no bounds
        load, bounds = e, ([], [])
    elif isinstance(e, Select) and isinstance(e.b, Const) and e.b.value == 0 and isinstance(
            e.a, Load):
        load, bounds = e.a, _bounds(e.cond)
        if bounds is None:
            return None
    else:
        return None
    if not (load.buffer.dtype == "float32" and c.n
            and all(isinstance(d, int) for d in load.buffer.shape)):
        return None
    axes = c.batch + c.n + c.k
    if any(not isinstance(x, Const) for _, x in axes):
        return None
    flat = _flat_address(load)
    if flat is None:
        return None
    names = {n for n, _ in axes}
    w = c.n[-1][0]
    for f in [flat, *bounds[0], *bounds[1]]:
        if any(v and v not in names for v in f):
            return None
    stride = flat.get(w, 0)
    if not 1 <= stride <= MAX_WINDOW_STRIDE or any(
            f.get(w, 0) not in (0, stride) for f in bounds[0] + bounds[1]):
        return None
    ext = tuple((n, x.value) for n, x in axes)
    nb, nn = len(c.batch), len(c.n)
    return WindowB(load.buffer, flat, tuple(bounds[0]), tuple(bounds[1]), ext[:nb],
                   ext[nb:nb + nn - 1], ext[nb + nn:], w, ext[nb + nn - 1][1], stride)


def window_a(c: Contraction) -> WindowB | None:
    """The :class:`WindowB` form of ``c.a`` with the M axes as its columns — the im2col of an
    exchanged convolution (``swapped``), whose rows are output pixels: per K row, an MR strip
    of consecutive pixels reads consecutive floats, as a panel of B does (None otherwise)."""
    return window_b(replace(c, n=c.m, b=c.a)) if c.m else None


def a_lanes(plan: Plan, vw: int) -> int | None:
    """The lanes of the vectors that pack an MR strip by :func:`window_a`: the largest power of
    two dividing MR, at most ``vw``; None under 4 (the generic packer then)."""
    lanes = min(plan.mr & -plan.mr, vw)
    return lanes if lanes >= 4 else None


def extents(c: Contraction) -> dict[str, Expr]:
    """M, the outer N extent (NO), W, K and the batch count NB as expressions over sizes."""
    return {
        "M": extent_of(c.m),
        "NO": extent_of(c.n[:-1]),
        "W": extent_of(c.n[-1:]),
        "K": extent_of(c.k),
        "NB": extent_of(c.batch),
    }
