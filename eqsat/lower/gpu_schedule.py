"""Default GPU schedules, and the launch configuration a GPU-scheduled kernel implies.

Consumes a LoopProgram as :func:`eqsat.lower.lower.lower` emits it (unscheduled) and a
:class:`GpuTarget`; produces the same program with each kernel replaced by ``apply(kernel,
schedule)``, where the schedule binds loops to the grid with ``Bind`` records
(:mod:`eqsat.lower.schedule`): ordinary replayable records, so they keep results, print and
round-trip like the CPU schedules. :func:`launch` reads a scheduled kernel back as a grid: what
a GPU backend (:mod:`eqsat.backends.cuda`) needs to emit and launch it.

The shape a GPU backend accepts (checked by :func:`launch`): the kernel body is
``For(GPU_BLOCK) > For(GPU_THREAD) > rest`` (either loop may be missing; a kernel with neither
runs as one thread), and ``rest`` binds no loop. Every thread runs ``rest`` once with the two
loop variables set to its block and thread index; the block loop's extent (an int64 expression
over size params) is the grid, the thread loop's (a constant) the block size.

A contraction (:func:`eqsat.lower.contraction.match_contraction`: MatMul, Gemm, Conv) may
instead carry ``Tensorize(<root loop>, "gpu_tile16")`` (:data:`GPU_TILE`): the backend then
emits a tiled kernel (16 × 16 output tile per block of 256 threads, K in steps of 16 through
two shared-memory tiles, one output element per thread); :func:`launch` gives its grid: the
batch times the M and N tiles. The interpreter ignores the annotation, so the program keeps
its results.

Default schedule, per class (:func:`eqsat.lower.default_schedule.classify`, structural):

- contractions that :func:`~eqsat.lower.contraction.match_contraction` recognizes: the tile.
- every class with an output nest (element-wise, reduction, multistage, contraction): fuse the
  output loops into one, split it by the block size, bind the outer part to blocks and the
  inner to threads; one thread computes one output element (its whole reduction, its whole
  multistage row). The block size is ``GpuTarget.threads`` (256), or the element count rounded
  up to a warp when that is smaller. When fusing the whole nest is refused (a schedule error:
  iterations that would race), the longest refusable suffix is dropped and tried again.
- no output nest (a scalar kernel): no schedule; it runs as one thread.

What this does not do yet (issue 20, step 2): one block per reduction row with a warp-shuffle
or shared-memory tree (reductions run one output element per thread), register blocking,
vectorized loads, double buffering and tensor cores in the GEMM tile.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from eqsat.lower.analysis import loops, substitute
from eqsat.lower.contraction import (
    ACC,
    Contraction,
    extent_of,
    flat_index,
    match_contraction,
    tensorized,
)
from eqsat.lower.default_schedule import classify, outer_nest
from eqsat.lower.loops import (
    Accumulate,
    Allocate,
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Cmp,
    CmpOp,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Load,
    LoopIRError,
    LoopKind,
    LoopProgram,
    Select,
    Stmt,
    Store,
    Var,
    seq,
)
from eqsat.lower.schedule import Bind, Fuse, Schedule, Split, Tensorize, apply
from eqsat.lower.transform import MAX_GPU_THREADS, ScheduleError

WARP = 32
GPU_TILE = "gpu_tile16"  # the tensorize annotation of a contraction's tiled kernel
TILE = 16  # its output tile is TILE × TILE, one thread an element; K steps by TILE
GPU_KINDS = (LoopKind.GPU_BLOCK, LoopKind.GPU_THREAD)


@dataclass(frozen=True)
class GpuTarget:
    """What a GPU scheduler may know of the device (never the backend's name)."""

    threads: int = 256  # threads per block of the default schedules
    max_threads: int = MAX_GPU_THREADS


@dataclass(frozen=True)
class Launch:
    """A GPU-scheduled kernel as a grid: ``grid`` blocks (an int64 expression over size params)
    of ``block`` threads; ``block_var`` / ``thread_var`` are the loop variables bound to the block
    and thread index (None where the kernel has no such loop); ``body`` runs once per thread."""

    grid: Expr
    block: int
    block_var: str | None
    thread_var: str | None
    body: Stmt
    tile: Contraction | None = None  # a GPU_TILE kernel: the contraction the backend tiles


def ceil_div(e: Expr, d: int) -> Expr:
    if isinstance(e, Const):
        return Const(-(-e.value // d))
    return BinOp(BinaryOp.FLOORDIV, BinOp(BinaryOp.ADD, e, Const(d - 1)), Const(d))


def _mul(a: Expr, b: Expr) -> Expr:
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value * b.value)
    return BinOp(BinaryOp.MUL, a, b)


def tile_grid(c: Contraction) -> Expr:
    """Blocks of a GPU_TILE kernel: batch × ceil(M / TILE) × ceil(N / TILE)."""
    tiles = _mul(ceil_div(extent_of(c.m), TILE), ceil_div(extent_of(c.n), TILE))
    return _mul(extent_of(c.batch), tiles)


BLOCK, THREAD, KSTEP = "gpu.block", "gpu.thread", "gpu.kt"  # names no loop of a kernel has
ROW, COL = "gpu.m", "gpu.n"  # the output element of a tile kernel's thread (M and N index)


def _and(*conds: Expr) -> Expr:
    out = conds[0]
    for c in conds[1:]:
        out = BinOp(BinaryOp.AND, out, c)
    return out


@dataclass(frozen=True)
class TilePlan:
    """The loop-IR pieces of a GPU_TILE kernel; the backend adds shared memory and barriers,
    :func:`tile_reference` serial phases. Expressions read ``Var(BLOCK)``, ``Var(THREAD)`` (the
    thread's index in its block, 0..TILE²-1), ``Var(KSTEP)`` (the K step) and the ``defs``.

    - ``defs``: ``ROW``, ``COL`` (the thread's output element) and the batch index, in order.
    - ``a_stage`` / ``b_stage``: the value thread THREAD stages at cell THREAD of the A / B
      tile in step KSTEP (``a[ROW, k0 + tx]``, ``b[k0 + ty, COL]``; 0 outside the matrix).
    - ``a_cell(kk)`` / ``b_cell(kk)``: the cells the thread multiplies at ``kk`` in a step.
    - ``steps``: K steps; ``epilogue``: the output statement, guarded, reading ``ACC``."""

    defs: tuple[tuple[str, Expr], ...]
    a_stage: Expr
    b_stage: Expr
    steps: Expr
    epilogue: Stmt

    @staticmethod
    def a_cell(kk: Expr) -> Expr:
        return Var(THREAD) // TILE * TILE + kk

    @staticmethod
    def b_cell(kk: Expr) -> Expr:
        return kk * TILE + Var(THREAD) % TILE


def tile_plan(c: Contraction) -> TilePlan:
    T = TILE
    M, N, K = extent_of(c.m), extent_of(c.n), extent_of(c.k)
    tn_count, tm_count = ceil_div(N, T), ceil_div(M, T)
    bid, tid, kt = Var(BLOCK), Var(THREAD), Var(KSTEP)
    ty, tx = tid // T, tid % T
    tn, tm = bid % tn_count, (bid // tn_count) % tm_count
    row, col, batch = Var(ROW), Var(COL), Var("gpu.batch")
    defs = ((ROW, tm * T + ty), (COL, tn * T + tx), ("gpu.batch", bid // _mul(tn_count, tm_count)))
    axes = {**flat_index(c.batch, batch), **flat_index(c.m, row), **flat_index(c.n, col)}
    zero = Const(0.0, "float32")

    def stage(e: Expr, k: Expr, inside: Expr) -> Expr:
        e = substitute(e, {**axes, **flat_index(c.k, k)})
        return Select(_and(inside, Cmp(CmpOp.LT, k, K)), e, zero)

    a_stage = stage(c.a, kt * T + tx, Cmp(CmpOp.LT, row, M))
    b_stage = stage(c.b, kt * T + ty, Cmp(CmpOp.LT, col, N))
    define = {v: substitute(e, axes) for v, e in c.define}
    inside = _and(Cmp(CmpOp.LT, row, M), Cmp(CmpOp.LT, col, N))
    epilogue = If(inside, substitute(c.epilogue, define))
    return TilePlan(defs, a_stage, b_stage, ceil_div(K, T), epilogue)


def tile_reference(kernel: Kernel) -> Kernel:
    """A GPU_TILE kernel as serial loop IR that runs everywhere (the interpreter, the CPU
    backend): blocks one after another, and inside a block each phase a barrier ends as a loop
    over the block's threads, with the shared tiles and the accumulators as local buffers. It
    evaluates the same :class:`TilePlan` the backend emits, so the tests check the plan's
    index arithmetic, guards and epilogue against the unscheduled kernel without a GPU."""
    lau = launch(kernel)
    if lau.tile is None:
        raise LoopIRError(f"kernel {kernel.name} is not tensorized={GPU_TILE}")
    plan, T = tile_plan(lau.tile), TILE
    sa, sb, acc = (Buffer(f"gpu.{n}", (T * T,), "float32", BufferKind.LOCAL) for n in "abc")
    threads = iter(range(1_000))

    def each_thread(body: Stmt) -> Stmt:  # one phase: every thread of the block in turn
        t = f"gpu.t{next(threads)}"
        defs = {THREAD: Var(t)}
        for name, e in plan.defs:
            defs[name] = substitute(e, defs)
        return For(t, Const(T * T), substitute(body, defs))

    tid, kk = Var(THREAD), Var("gpu.kk")
    product = Load(sa, (plan.a_cell(kk),)) * Load(sb, (plan.b_cell(kk),))
    step = seq(
        each_thread(seq(Store(sa, (tid,), plan.a_stage), Store(sb, (tid,), plan.b_stage))),
        each_thread(For(kk.name, Const(T), Accumulate(acc, (tid,), product))),
    )
    block = seq(
        each_thread(Store(acc, (tid,), Const(0.0, "float32"))),
        For(KSTEP, plan.steps, step),
        each_thread(substitute(plan.epilogue, {ACC.name: Load(acc, (tid,))})),
    )
    body = For(BLOCK, lau.grid, Allocate(sa, Allocate(sb, Allocate(acc, block))))
    return dataclasses.replace(kernel, body=body)


def _extent(f: For) -> int | None:
    return f.extent.value if isinstance(f.extent, Const) else None


def _block_size(nest: list[For], target: GpuTarget) -> int:
    total = 1
    for f in nest:
        n = _extent(f)
        if n is None:
            return target.threads
        total *= n
    return min(target.threads, -(-total // WARP) * WARP)


def _bind_nest(nest: list[For], threads: int) -> Schedule:
    sched: list = []
    name = nest[0].var
    for f in nest[1:]:
        sched.append(Fuse(name, f.var))
        name = f"{name}.{f.var}.fused"
    return (*sched, Split(name, threads), Bind(f"{name}.o", "block"), Bind(f"{name}.i", "thread"))


def schedule_kernel(kernel: Kernel, target: GpuTarget = GpuTarget()) -> Schedule:
    """The default GPU schedule of one kernel (see the module doc); empty for a kernel without
    an output nest or one none of whose nest prefixes may run in parallel."""
    if classify(kernel) == "other":
        return ()
    if isinstance(kernel.body, For) and match_contraction(kernel) is not None:
        return (Tensorize(kernel.body.var, GPU_TILE),)
    nest, _ = outer_nest(kernel.body)
    for k in range(len(nest), 0, -1):
        sched = _bind_nest(nest[:k], _block_size(nest[:k], target))
        try:
            apply(kernel, sched)
            return sched
        except ScheduleError:
            continue
    return ()


def schedule_program(program: LoopProgram, target: GpuTarget = GpuTarget()) -> LoopProgram:
    """``program`` with the default GPU schedule applied to each kernel."""
    kernels = tuple(apply(k, schedule_kernel(k, target)) for k in program.kernels)
    return dataclasses.replace(program, kernels=kernels)


def launch(kernel: Kernel) -> Launch:
    """The grid of a GPU-scheduled kernel (LoopIRError when its bound loops are not the
    outermost nest the module doc describes)."""
    if tensorized(kernel) == GPU_TILE:
        c = match_contraction(kernel)
        if c is None:
            raise LoopIRError(f"kernel {kernel.name}: tensorize={GPU_TILE}, not a contraction")
        return Launch(tile_grid(c), TILE * TILE, None, None, kernel.body, c)
    body, grid, block = kernel.body, Const(1), 1
    block_var = thread_var = None
    if isinstance(body, For) and body.kind is LoopKind.GPU_BLOCK:
        grid, block_var, body = body.extent, body.var, body.body
    if isinstance(body, For) and body.kind is LoopKind.GPU_THREAD:
        n = _extent(body)
        if n is None or not 1 <= n <= MAX_GPU_THREADS:
            raise LoopIRError(f"kernel {kernel.name}: threads per block must be 1..1024")
        block, thread_var, body = n, body.var, body.body
    for f in loops(body):
        if f.kind in GPU_KINDS:
            raise LoopIRError(
                f"kernel {kernel.name}: loop {f.var} is bound to GPU {f.kind.value}s but is not "
                "the outermost block loop or the thread loop directly inside it"
            )
    return Launch(grid, block, block_var, thread_var, body)


def is_gpu_scheduled(kernel: Kernel) -> bool:
    return tensorized(kernel) == GPU_TILE or any(f.kind in GPU_KINDS for f in loops(kernel.body))
