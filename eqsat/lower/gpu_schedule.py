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

A reduction or multistage kernel (Softmax, LayerNorm, ReduceMean, pools) may instead carry
``Tensorize(<root loop>, "gpu_warp_rows")`` (:data:`WARP_ROWS`): one warp (a block of 32
threads) per point of the output nest (a row), each statement of the row in a warp role
(:func:`warp_role`): a loop nest ending in one ``Accumulate`` into an element the nest does not
index is *reduced* (lane ``l`` takes the flattened iterations ``l, l + 32, ...`` into a partial,
a butterfly of shuffles gives every lane the total, which is accumulated into the target); a
loop nest storing into a global buffer at an index that names all its loops is *spread* (lane
``l`` takes the same iterations); a store to a global buffer outside such loops runs on lane 0;
local buffers are per lane, written by all lanes alike. A warp barrier follows every global
write, so the lanes see each other's writes. :func:`strided` is the lanes' loop, in loop IR.

Default schedule, per class (:func:`eqsat.lower.default_schedule.classify`, structural):

- at a precision other than fp32 (``--precision``), contractions with float32 output and
  M, N, K >= 32 (:func:`eqsat.lower.gpu_mma.fills_mma`): the tensor-core tile kernel
  (``gpu_mma_<precision>``, :mod:`eqsat.lower.gpu_mma`).
- contractions that :func:`~eqsat.lower.contraction.match_contraction` recognizes and whose
  M × N fills at least a quarter of a tile: the tile.
- reductions, multistage kernels and the other contractions (matrix-vector products) whose
  every statement has a warp role and that reduce or spread at least :data:`WARP` iterations
  per row (else most lanes would idle): warp rows.
- every class with an output nest (element-wise, reduction, multistage, contraction): fuse the
  output loops into one, split it by the block size, bind the outer part to blocks and the
  inner to threads; one thread computes one output element (its whole reduction, its whole
  multistage row). The block size is ``GpuTarget.threads`` (256), or the element count rounded
  up to a warp when that is smaller. When fusing the whole nest is refused (a schedule error:
  iterations that would race), the longest refusable suffix is dropped and tried again.
- no output nest (a scalar kernel): no schedule; it runs as one thread.

What this does not do yet (issue 20, step 2): a block of several warps per row (a shared-memory
tree) for long rows, register blocking and vectorized loads in the fp32 tile (double buffering
and tensor cores are in the gpu_mma kernel, at tf32, fp16 and bf16 only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from eqsat.lower.analysis import free_vars, loops, outer_nest, rebuild, substitute
from eqsat.lower.contraction import (
    ACC,
    Contraction,
    extent_of,
    flat_index,
    match_contraction,
    tensorized,
)
from eqsat.lower.default_schedule import classify
from eqsat.lower.gpu_base import (
    BLOCK,
    COL,
    KSTEP,
    MMA_PREFIX,
    ROW,
    THREAD,
    WARP,
    Launch,
    ceil_div,
    mul,
    tile_operands,
)
from eqsat.lower.gpu_mma import fills_mma, mma_annotation, mma_launch
from eqsat.lower.loops import (
    Accumulate,
    Allocate,
    Buffer,
    BufferKind,
    Cmp,
    CmpOp,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Let,
    Load,
    LoopIRError,
    LoopKind,
    LoopProgram,
    Seq,
    Stmt,
    Store,
    Var,
    seq,
)
from eqsat.lower.schedule import Bind, Fuse, Schedule, Split, Tensorize, apply
from eqsat.lower.transform import MAX_GPU_THREADS, ScheduleError

WARP_ROWS = "gpu_warp_rows"  # the tensorize annotation of a warp-per-row kernel
LANE, STEP = "gpu.lane", "gpu.jj"  # a warp-rows thread's lane and its strided loop's variable
GPU_TILE = "gpu_tile16"  # the tensorize annotation of a contraction's tiled kernel
TILE = 16  # its output tile is TILE × TILE, one thread an element; K steps by TILE
GPU_KINDS = (LoopKind.GPU_BLOCK, LoopKind.GPU_THREAD)


@dataclass(frozen=True)
class GpuTarget:
    """What a GPU scheduler may know of the device (never the backend's name)."""

    threads: int = 256  # threads per block of the default schedules
    max_threads: int = MAX_GPU_THREADS


def tile_grid(c: Contraction) -> Expr:
    """Blocks of a GPU_TILE kernel: batch × ceil(M / TILE) × ceil(N / TILE)."""
    tiles = mul(ceil_div(extent_of(c.m), TILE), ceil_div(extent_of(c.n), TILE))
    return mul(extent_of(c.batch), tiles)


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
    defs = ((ROW, tm * T + ty), (COL, tn * T + tx), ("gpu.batch", bid // mul(tn_count, tm_count)))
    a_at, b_at, epilogue = tile_operands(c, row, col, batch)
    return TilePlan(defs, a_at(kt * T + tx), b_at(kt * T + ty), ceil_div(K, T), epilogue)


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


def _uses_only(e: Expr, names: set[str]) -> bool:
    return not (free_vars(e) - names)


def warp_role(s: Stmt) -> str | None:
    """The role of a statement of a warp-rows kernel's row (module doc): ``all`` (a write to a
    local buffer), ``lane0`` (a write to a global buffer), ``reduce``, ``spread``, ``nested``
    (``Seq``, ``Allocate``, ``Let``, ``If``: their parts have roles), or None (no warp role:
    the kernel is not run as warp rows)."""
    if isinstance(s, Store | Accumulate):
        return "all" if s.buffer.kind is BufferKind.LOCAL else "lane0"
    if isinstance(s, Seq | Allocate | Let | If):
        return "nested"
    if not isinstance(s, For):
        return None
    nest, body = outer_nest(s)
    names = {f.var for f in nest}
    if any(free_vars(f.extent) & names for f in nest):
        return None
    if isinstance(body, Accumulate) and body.buffer.dtype == "float32":
        if not any(free_vars(i) & names for i in body.index):
            return "reduce"
    if isinstance(body, Store) and body.buffer.kind is not BufferKind.LOCAL:
        if names <= {i.name for i in body.index if isinstance(i, Var)}:
            return "spread"
    return None


def _warp_work(s: Stmt) -> int | None:
    """The most iterations one reduced or spread nest of ``s`` has (None: a statement without
    a warp role; symbolic extents count as :data:`WARP`)."""
    role = warp_role(s)
    if role is None:
        return None
    if role in ("reduce", "spread"):
        n = extent_of(tuple((f.var, f.extent) for f in outer_nest(s)[0]))
        return n.value if isinstance(n, Const) else WARP
    if role == "nested":
        parts = [getattr(s, f.name) for f in dataclasses.fields(s)]
        kids = [k for p in parts for k in (p if isinstance(p, tuple) else (p,))]
        works = [_warp_work(k) for k in kids if isinstance(k, Stmt)]
        return None if None in works else max(works, default=0)
    return 0


def strided(chain: list[For], body: Stmt) -> Stmt:
    """The loop nest ``chain`` around ``body`` as lane ``Var(LANE)`` of a warp runs it: the
    flattened iterations ``j = jj * WARP + lane`` below their count."""
    axes = tuple((f.var, f.extent) for f in chain)
    n = extent_of(axes)
    j = Var(STEP) * WARP + Var(LANE)
    return For(
        STEP, ceil_div(n, WARP), If(Cmp(CmpOp.LT, j, n), substitute(body, flat_index(axes, j)))
    )


def warp_reference(kernel: Kernel) -> Kernel:
    """A WARP_ROWS kernel as serial loop IR (the interpreter runs it): rows one after another,
    each statement as its role runs it, the warp's lanes one after another — a spread nest as
    the 32 lanes' strided loops, a reduced nest as 32 partials (strided loops) then their
    combination into the target (in lane order, where the GPU's butterfly pairs them), the
    rest once (lanes compute local values alike). It checks the lanes' partition of the
    iterations (:func:`strided`) against the unscheduled kernel without a GPU."""
    lau = launch(kernel)
    if not lau.rows:
        raise LoopIRError(f"kernel {kernel.name} is not tensorized={WARP_ROWS}")
    count = iter(range(1_000_000))

    def lanes(body: Stmt) -> Stmt:  # every lane in turn; loop names unique in the kernel
        n = next(count)
        body = rebuild(body, lambda c: _renamed(c, n) if isinstance(c, For) else c)
        if isinstance(body, For):
            body = _renamed(body, n)
        return For(f"gpu.lane{n}", Const(WARP), substitute(body, {LANE: Var(f"gpu.lane{n}")}))

    def rewrite(s: Stmt) -> Stmt:
        role = warp_role(s)
        if role == "nested":
            return rebuild(s, lambda c: rewrite(c) if isinstance(c, Stmt) else c)
        if role == "spread":
            return lanes(strided(*outer_nest(s)))
        if role == "reduce":
            nest, acc = outer_nest(s)
            n = next(count)
            part = Buffer(f"gpu.part{n}", (WARP,), "float32", BufferKind.LOCAL)
            init = Store(part, (Var(LANE),), Const(acc.op.identity("float32"), "float32"))
            body = strided(nest, Accumulate(part, (Var(LANE),), acc.value, acc.op))
            each = Accumulate(acc.buffer, acc.index, Load(part, (Var(f"gpu.l{n}"),)), acc.op)
            return Allocate(part, seq(lanes(seq(init, body)), For(f"gpu.l{n}", Const(WARP), each)))
        return s

    body = For(BLOCK, lau.grid, substitute(rewrite(lau.body), flat_index(lau.rows, Var(BLOCK))))
    return dataclasses.replace(kernel, body=body)


def _renamed(s: For, n: int) -> For:
    """:func:`strided`'s loop with its variable made unique (``gpu.jj<n>``); others as they are."""
    if s.var != STEP:
        return s
    return dataclasses.replace(
        s, var=f"{STEP}{n}", body=substitute(s.body, {STEP: Var(f"{STEP}{n}")})
    )


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


def _fills_tiles(c: Contraction) -> bool:
    """Worth a tile: M and N (symbolic dims count as TILE) at least a quarter of its side, so
    that a matrix-vector product or a sum of squares (RMS norm: M = N = 1) is a warp row."""
    m, n = (extent_of(ax) for ax in (c.m, c.n))
    return all((e.value if isinstance(e, Const) else TILE) * 4 >= TILE for e in (m, n))


def schedule_kernel(
    kernel: Kernel, target: GpuTarget = GpuTarget(), precision: str = "fp32"
) -> Schedule:
    """The default GPU schedule of one kernel (see the module doc); empty for a kernel without
    an output nest or one none of whose nest prefixes may run in parallel. ``precision`` other
    than fp32 puts the contractions large enough for it on tensor cores."""
    if classify(kernel) == "other":
        return ()
    c = match_contraction(kernel) if isinstance(kernel.body, For) else None
    if c is not None and precision != "fp32":
        if fills_mma(c):
            return (Tensorize(kernel.body.var, mma_annotation(precision)),)
    if c is not None and _fills_tiles(c):
        return (Tensorize(kernel.body.var, GPU_TILE),)
    nest, point = outer_nest(kernel.body)
    if nest and classify(kernel) in ("reduction", "multistage", "contraction"):
        work = _warp_work(point)
        if work is not None and work >= WARP:
            return (Tensorize(kernel.body.var, WARP_ROWS),)
    for k in range(len(nest), 0, -1):
        sched = _bind_nest(nest[:k], _block_size(nest[:k], target))
        try:
            apply(kernel, sched)
            return sched
        except ScheduleError:
            continue
    return ()


def schedule_program(
    program: LoopProgram, target: GpuTarget = GpuTarget(), precision: str = "fp32"
) -> LoopProgram:
    """``program`` with the default GPU schedule applied to each kernel."""
    kernels = tuple(apply(k, schedule_kernel(k, target, precision)) for k in program.kernels)
    return dataclasses.replace(program, kernels=kernels)


def launch(kernel: Kernel) -> Launch:
    """The grid of a GPU-scheduled kernel (LoopIRError when its bound loops are not the
    outermost nest the module doc describes)."""
    if (tensorized(kernel) or "").startswith(MMA_PREFIX):
        return mma_launch(kernel)
    if tensorized(kernel) == GPU_TILE:
        c = match_contraction(kernel)
        if c is None:
            raise LoopIRError(f"kernel {kernel.name}: tensorize={GPU_TILE}, not a contraction")
        return Launch(tile_grid(c), TILE * TILE, None, None, kernel.body, c)
    if tensorized(kernel) == WARP_ROWS:
        nest, point = outer_nest(kernel.body)
        if _warp_work(point) is None:
            raise LoopIRError(f"kernel {kernel.name}: tensorize={WARP_ROWS}, no warp roles")
        rows = tuple((f.var, f.extent) for f in nest)
        return Launch(extent_of(rows), WARP, None, None, point, rows=rows)
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
    t = tensorized(kernel) or ""
    return (
        t in (GPU_TILE, WARP_ROWS)
        or t.startswith(MMA_PREFIX)
        or any(f.kind in GPU_KINDS for f in loops(kernel.body))
    )
