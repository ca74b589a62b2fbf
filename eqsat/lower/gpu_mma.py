"""The tensor-core tile kernel of a contraction: its layout, as loop IR and as index functions.

Consumes a contraction kernel (:func:`eqsat.lower.contraction.match_contraction`: MatMul, Gemm,
Conv) annotated ``Tensorize(<root loop>, "gpu_mma_<precision>")`` (:func:`mma_annotation`;
precision ``tf32``, ``fp16`` or ``bf16``: :data:`PRECISIONS`); produces the
:class:`MmaPlan` the CUDA backend emits (:mod:`eqsat.backends.cuda.mma`) and the numpy
emulation of what that kernel computes (:func:`emulate`). The interpreter ignores the
annotation, so the program keeps its float32 results; the precision is the annotation's.

The kernel (block tile ``BM × BN`` = 64 × 64, 4 warps of 32 × 32, K steps of ``BK`` = 32):

- each of the 128 threads stages ``BM*BK/128`` = 16 elements of the A tile and 16 of the B tile
  (:func:`stage_a` / :func:`stage_b`: consecutive threads take consecutive K of A and N of B,
  the coalesced directions of a row-major matrix), evaluating the contraction's factor
  expressions (:func:`eqsat.lower.gpu_base.tile_operands`: views, im2col and padding come
  for free, 0 outside the matrices), rounds them to the precision and keeps them in registers;
- double buffering: two shared tiles per operand; step ``kt`` multiplies the tiles in buffer
  ``kt % 2`` while the registers hold step ``kt + 1`` (its global loads are issued before the
  products), then stores them into the other buffer; one barrier per step;
- a warp multiplies its 32 × 32 part as 2 × 4 ``mma.sync`` of m16n8k16 (fp16, bf16) or m16n8k8
  (tf32), fragments read from shared memory per the PTX ISA's fragment layouts
  (:func:`a_frag`, :func:`b_frag`, :func:`acc_cell`), accumulating in float32;
- the epilogue (bias, activation: the contraction's own) runs on each accumulator, guarded to
  the matrix.

Why no ``cp.async``: it copies bytes, but the operands are float32 in the model and must be
rounded to 16 bits on the way (and are general expressions: views, im2col), so the prefetch is
register-staged. Vectorized global loads are not done either (the factor expressions are read
element by element).

The index functions take and return plain operands of ``+ * // %``: Python ints, numpy arrays
(:func:`emulate`) or loop-IR expressions (:class:`MmaPlan`, the backend): one layout, used by
both. The fragment layouts were compared by reading with the PTX ISA's "Matrix Fragments for
mma.m16n8k16 with floating point type" and "... mma.m16n8k8" (.tf32) sections; the tests check
that each covers its tile once. What only a GPU can check: that the hardware agrees, and that
the kernel runs and is fast (benchmarks/gpu_check.sh).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from eqsat.lower.analysis import substitute
from eqsat.lower.contraction import ACC, Contraction, extent_of, match_contraction, tensorized
from eqsat.lower.gpu_base import (
    BLOCK,
    KSTEP,
    MMA_PREFIX,
    THREAD,
    WARP,
    Launch,
    ceil_div,
    mul,
    tile_operands,
)
from eqsat.lower.loops import (
    Accumulate,
    Allocate,
    Buffer,
    BufferKind,
    Const,
    Expr,
    For,
    Kernel,
    Load,
    LoopIRError,
    LoopProgram,
    Stmt,
    Store,
    Var,
    seq,
)

BM = BN = 64  # the block's output tile
BK = 32  # K per step (one shared tile)
WARPS_M = WARPS_N = 2  # warps of the block along M and N
WM, WN = BM // WARPS_M, BN // WARPS_N  # a warp's part: 32 × 32
MI, NI = WM // 16, WN // 8  # its mma tiles (16 × 8 each)
THREADS = WARP * WARPS_M * WARPS_N
STAGED = BM * BK // THREADS  # elements of one operand a thread stages per step
assert BM * BK == BN * BK == STAGED * THREADS
PREFIX = MMA_PREFIX
# precision -> unit roundoff of the operands (0: not rounded); eqsat.verify.precision says what
# each means for the verification gate
PRECISIONS: dict[str, float] = {"fp32": 0.0, "tf32": 2.0**-11, "fp16": 2.0**-11, "bf16": 2.0**-8}
MMA_PRECISIONS = tuple(p for p in PRECISIONS if p != "fp32")


def check_precision(name: str, target: str = "cuda") -> str:
    """``name`` if it is a known precision that ``target`` computes in, else an InputError in
    one line: fp32 everywhere; tf32 / fp16 / bf16 are tensor-core precisions of cuda only.
    The one place that rule lives (``pipeline.compile`` checks before the e-graph runs,
    ``compiled.build`` for API callers)."""
    from eqsat.errors import InputError

    if name not in PRECISIONS:
        raise InputError(f"--precision {name}: one of {', '.join(PRECISIONS)}")
    if name != "fp32" and target != "cuda":
        raise InputError(
            f"--precision {name}: the {target} target computes in fp32 only "
            "(tf32, fp16 and bf16 are tensor-core precisions of --target cuda)"
        )
    return name


@dataclass(frozen=True)
class Shape:
    """An mma instruction's operands at one precision."""

    k: int  # K of one mma (16, or 8 for tf32)
    bits: int  # bits of an element in shared memory and fragments
    pad: int  # elements after each shared row (bank conflicts of the fragment reads)

    @property
    def per_reg(self) -> int:  # elements in one 32-bit fragment register
        return 32 // self.bits

    @property
    def row(self) -> int:  # elements of a shared row
        return BK + self.pad


SHAPES = {"tf32": Shape(8, 32, 4), "fp16": Shape(16, 16, 8), "bf16": Shape(16, 16, 8)}


def mma_annotation(precision: str) -> str:
    return PREFIX + precision


def mma_precision(kernel: Kernel) -> str | None:
    t = tensorized(kernel)
    if t is not None and t.startswith(PREFIX) and t[len(PREFIX) :] in SHAPES:
        return t[len(PREFIX) :]
    return None


def fills_mma(c: Contraction) -> bool:
    """Worth the tensor-core tile: float32 output, M, N and K at least 32 each (symbolic dims
    count as large); smaller products keep the fp32 tile (gpu_tile16)."""
    ext = [extent_of(ax) for ax in (c.m, c.n, c.k)]
    return c.out.dtype == "float32" and all(not isinstance(e, Const) or e.value >= 32 for e in ext)


def shared_bytes(precision: str) -> int:
    """Static shared memory: two buffers of the A and of the B tile."""
    s = SHAPES[precision]
    return 2 * (BM + BN) * s.row * s.bits // 8


# ---- the layout (index functions over ints, numpy arrays or loop-IR expressions) ----


def stage_a(tid, i):
    """(row, k) in the A tile of the ``i``-th element thread ``tid`` stages."""
    e = i * THREADS + tid
    return e // BK, e % BK


def stage_b(tid, i):
    """(k, column) in the B tile of the ``i``-th element thread ``tid`` stages."""
    e = i * THREADS + tid
    return e // BN, e % BN


def warp_origin(tid):
    """(row, column) in the block tile of the part thread ``tid``'s warp multiplies."""
    w = tid // WARP
    return w // WARPS_N * WM, w % WARPS_N * WN


def a_frag(shape: Shape, lane, reg: int, half: int):
    """(row, k) in a 16 × k A fragment of register ``reg`` (element ``half`` of it) of
    ``lane`` (PTX ISA, mma m16n8k16 .f16/.bf16 and m16n8k8 .tf32, row-major A)."""
    g, t = lane // 4, lane % 4
    if shape.bits == 32:
        return g + reg % 2 * 8, t + reg // 2 * 4
    return g + reg % 2 * 8, t * 2 + reg // 2 * 8 + half


def b_frag(shape: Shape, lane, reg: int, half: int):
    """(k, column) in a k × 8 B fragment (column-major B)."""
    g, t = lane // 4, lane % 4
    if shape.bits == 32:
        return t + reg * 4, g
    return t * 2 + reg * 8 + half, g


def acc_cell(lane, c: int):
    """(row, column) in the 16 × 8 float32 accumulator of its element ``c`` (0..3)."""
    g, t = lane // 4, lane % 4
    return g + c // 2 * 8, t * 2 + c % 2


A_REGS, B_REGS = 4, 2  # 32-bit fragment registers of A and B (every precision)


# ---- the plan in loop IR ----

TM, TN, BATCH = "gpu.tm", "gpu.tn", "gpu.batch"  # the block's tile (M, N) and batch index


@dataclass(frozen=True)
class MmaPlan:
    """The loop-IR pieces of a tensor-core tile kernel; expressions read ``Var(BLOCK)``,
    ``Var(THREAD)``, ``Var(KSTEP)`` and the ``defs``; the backend adds the shared tiles,
    fragments, ``mma.sync`` and the barrier."""

    precision: str
    contraction: Contraction
    defs: tuple[tuple[str, Expr], ...]  # TM, TN, BATCH from the block index
    steps: Expr  # K steps

    @property
    def shape(self) -> Shape:
        return SHAPES[self.precision]

    def _parts(self, row: Expr, col: Expr):
        return tile_operands(self.contraction, row, col, Var(BATCH))

    def a_stage(self, i: int) -> Expr:
        """The value thread THREAD stages as its ``i``-th A element in step KSTEP (float32)."""
        r, k = stage_a(Var(THREAD), i)
        a_at, _, _ = self._parts(Var(TM) * BM + r, Const(0))
        return a_at(Var(KSTEP) * BK + k)

    def b_stage(self, i: int) -> Expr:
        k, n = stage_b(Var(THREAD), i)
        _, b_at, _ = self._parts(Const(0), Var(TN) * BN + n)
        return b_at(Var(KSTEP) * BK + k)

    def epilogue(self, mi: int, ni: int, c: int) -> Stmt:
        """The output statement of accumulator element ``c`` of mma tile (mi, ni) of thread
        THREAD, reading ``ACC`` (guarded)."""
        wr, wc = warp_origin(Var(THREAD))
        r, n = acc_cell(Var(THREAD) % WARP, c)
        row = Var(TM) * BM + wr + mi * 16 + r
        col = Var(TN) * BN + wc + ni * 8 + n
        return self._parts(row, col)[2]


def mma_ks(program: LoopProgram) -> list[int | None]:
    """K of each tensor-core kernel of ``program`` (None where it is a run-time size)."""
    out = []
    for k in program.kernels:
        if mma_precision(k) is not None:
            K = extent_of(mma_plan(k).contraction.k)
            out.append(K.value if isinstance(K, Const) else None)
    return out


def mma_grid(c: Contraction) -> Expr:
    """Blocks: batch × ceil(M / BM) × ceil(N / BN)."""
    tiles = mul(ceil_div(extent_of(c.m), BM), ceil_div(extent_of(c.n), BN))
    return mul(extent_of(c.batch), tiles)


def mma_plan(kernel: Kernel) -> MmaPlan:
    precision = mma_precision(kernel)
    c = match_contraction(kernel)
    if precision is None or c is None:
        raise LoopIRError(f"kernel {kernel.name} is not a tensor-core ({PREFIX}*) contraction")
    tn_count, tm_count = ceil_div(extent_of(c.n), BN), ceil_div(extent_of(c.m), BM)
    bid = Var(BLOCK)
    defs = ((TN, bid % tn_count), (TM, bid // tn_count % tm_count),
            (BATCH, bid // mul(tn_count, tm_count)))  # fmt: skip
    return MmaPlan(precision, c, defs, ceil_div(extent_of(c.k), BK))


def mma_launch(kernel: Kernel) -> Launch:
    plan = mma_plan(kernel)
    return Launch(mma_grid(plan.contraction), THREADS, None, None, kernel.body, plan.contraction)


def mma_reference(kernel: Kernel) -> Kernel:
    """A tensor-core kernel as serial loop IR the interpreter runs, at float32 (no rounding):
    blocks one after another; in a block, per K step, the threads in turn stage their
    elements (:meth:`MmaPlan.a_stage`, the expressions the backend emits) into local tiles,
    then each thread accumulates its accumulators' cells (:func:`acc_cell` of its warp's part)
    over the step's K, as the mma tiles do; then each thread's guarded epilogue. It checks the
    plan's staging, guards, accumulator placement and epilogue against the unscheduled kernel;
    the fragment layouts and the rounding are :func:`emulate`'s to check."""
    plan = mma_plan(kernel)
    f32, local = "float32", BufferKind.LOCAL
    sa, sb = (Buffer(f"gpu.s{n}", (r * BK,), f32, local) for n, r in (("a", BM), ("b", BN)))
    acc = Buffer("gpu.acc", (THREADS * MI * NI * 4,), f32, local)
    names = iter(range(1_000))
    defs = {name: e for name, e in plan.defs}

    def each_thread(body) -> Stmt:  # one phase: every thread in turn (a loop named uniquely)
        t = f"gpu.t{next(names)}"
        return For(t, Const(THREADS), substitute(substitute(body, {THREAD: Var(t)}), defs))

    def cells(body) -> Stmt:  # every accumulator element of the thread
        mi, ni, c = (Var(f"gpu.{v}{next(names)}") for v in ("mi", "ni", "c"))
        inner = body(mi, ni, c, (Var(THREAD) * MI * NI + mi * NI + ni) * 4 + c)
        return For(mi.name, Const(MI), For(ni.name, Const(NI), For(c.name, Const(4), inner)))

    i, kk = Var("gpu.i"), Var("gpu.kk")
    ar, ak = stage_a(Var(THREAD), i)
    bk, bn = stage_b(Var(THREAD), i)
    stage = For(i.name, Const(STAGED), seq(
        Store(sa, (ar * BK + ak,), plan.a_stage(i)), Store(sb, (bn * BK + bk,), plan.b_stage(i))
    ))  # fmt: skip
    wr, wc = warp_origin(Var(THREAD))

    def product(mi, ni, c, at):
        r, n = acc_cell(Var(THREAD) % WARP, c)
        x = Load(sa, ((wr + mi * 16 + r) * BK + kk,))
        y = Load(sb, ((wc + ni * 8 + n) * BK + kk,))
        return For(kk.name, Const(BK), Accumulate(acc, (at,), x * y))

    def epilogue(mi, ni, c, at):
        return substitute(plan.epilogue(mi, ni, c), {ACC.name: Load(acc, (at,))})

    zero = each_thread(cells(lambda mi, ni, c, at: Store(acc, (at,), Const(0.0, f32))))
    steps = For(KSTEP, plan.steps, seq(each_thread(stage), each_thread(cells(product))))
    block = seq(zero, steps, each_thread(cells(epilogue)))
    body = For(BLOCK, mma_grid(plan.contraction), Allocate(sa, Allocate(sb, Allocate(acc, block))))
    return dataclasses.replace(kernel, body=body)


# ---- numpy emulation of the kernel ----


def round_to(x: np.ndarray, precision: str) -> np.ndarray:
    """float32 ``x`` rounded as the kernel rounds its operands, as float32: fp16 and bf16 to
    nearest even (``cvt.rn``), tf32 to nearest with ties away from zero (``cvt.rna``)."""
    x = np.asarray(x, np.float32)
    if precision == "fp16":
        return x.astype(np.float16).astype(np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    drop = 16 if precision == "bf16" else 13  # fraction bits dropped: 23 - 7, 23 - 10
    half = np.uint64(1 << (drop - 1))
    if precision == "bf16":  # ties to even
        bits = bits + half - 1 + ((bits >> np.uint64(drop)) & np.uint64(1))
    else:
        bits = bits + half
    bits = (bits >> np.uint64(drop)) << np.uint64(drop)
    return (bits & np.uint64(0xFFFFFFFF)).astype(np.uint32).view(np.float32)


def emulate(a: np.ndarray, b: np.ndarray, precision: str) -> np.ndarray:
    """``a @ b`` (float32, M × K and K × N) as the tensor-core kernel computes it: blocks,
    K steps, staging by thread (each tile cell written exactly once, checked), operands
    rounded, mma tiles assembled lane by lane from the fragment layout, float32 accumulation
    per mma, the guarded epilogue (a plain store). Checks the index math and the rounding,
    not the GPU."""
    M, K = a.shape
    N = b.shape[1]
    s, out = SHAPES[precision], np.full((M, N), np.nan, np.float32)
    tid, lane = np.arange(THREADS)[:, None], np.arange(WARP)
    for tm in range(-(-M // BM)):
        for tn in range(-(-N // BN)):
            acc = np.zeros((THREADS, MI, NI, 4), np.float32)
            for kt in range(-(-K // BK)):
                sa = _staged(a, tid, stage_a, tm * BM, kt * BK, precision)
                sb = _staged(b.T, tid, _stage_b_nk, tn * BN, kt * BK, precision)
                for w in range(THREADS // WARP):
                    wr, wc = warp_origin(w * WARP)
                    for ks in range(BK // s.k):
                        for mi in range(MI):
                            fa = np.zeros((16, s.k), np.float32)
                            for reg in range(A_REGS):
                                for h in range(s.per_reg):
                                    r, k = a_frag(s, lane, reg, h)
                                    fa[r, k] = sa[wr + mi * 16 + r, ks * s.k + k]
                            for ni in range(NI):
                                fb = np.zeros((s.k, 8), np.float32)
                                for reg in range(B_REGS):
                                    for h in range(s.per_reg):
                                        k, n = b_frag(s, lane, reg, h)
                                        fb[k, n] = sb[wc + ni * 8 + n, ks * s.k + k]
                                d = (fa.astype(np.float64) @ fb).astype(np.float32)
                                for c in range(4):
                                    r, n = acc_cell(lane, c)
                                    acc[w * WARP + lane, mi, ni, c] += d[r, n]
            for c in range(4):
                r, n = acc_cell(tid[:, 0] % WARP, c)
                wr, wc = warp_origin(tid[:, 0])
                for mi in range(MI):
                    for ni in range(NI):
                        row = tm * BM + wr + mi * 16 + r
                        col = tn * BN + wc + ni * 8 + n
                        ok = (row < M) & (col < N)
                        out[row[ok], col[ok]] = acc[ok, mi, ni, c]
    return out


def _stage_b_nk(tid, i):
    k, n = stage_b(tid, i)
    return n, k


def _staged(x: np.ndarray, tid, cell, r0: int, k0: int, precision: str) -> np.ndarray:
    """The shared tile (rows × BK, as stored: rows of ``Shape.row``) of ``x`` (rows × K) the
    threads stage at (r0, k0); B is staged transposed (N × K: a B fragment's K pairs are
    adjacent)."""
    rows, K = x.shape
    s = SHAPES[precision]
    r, k = cell(tid, np.arange(STAGED)[None, :])
    gr, gk = r0 + r, k0 + k
    ok = (gr < rows) & (gk < K)
    val = np.where(ok, x[np.minimum(gr, rows - 1), np.minimum(gk, K - 1)], 0)
    tile, count = np.zeros((BM, s.row), np.float32), np.zeros((BM, BK), np.int64)
    tile[r, k] = round_to(val, precision)
    np.add.at(count, (r, k), 1)
    if not (count == 1).all():
        raise AssertionError("the threads' staging does not cover the tile once")
    return tile
