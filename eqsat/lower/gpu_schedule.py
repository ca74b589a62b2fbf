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

Default schedule, per class (:func:`eqsat.lower.default_schedule.classify`, structural):

- every class with an output nest (element-wise, reduction, multistage, contraction): fuse the
  output loops into one, split it by the block size, bind the outer part to blocks and the
  inner to threads; one thread computes one output element (its whole reduction, its whole
  multistage row). The block size is ``GpuTarget.threads`` (256), or the element count rounded
  up to a warp when that is smaller. When fusing the whole nest is refused (a schedule error:
  iterations that would race), the longest refusable suffix is dropped and tried again.
- no output nest (a scalar kernel): no schedule; it runs as one thread.

What this does not do yet (issue 20, step 2): one block per reduction row with a warp-shuffle
or shared-memory tree, and tiled GEMM/Conv with shared-memory staging. Reductions and
contractions are correct but run one output element per thread.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from eqsat.lower.analysis import loops
from eqsat.lower.default_schedule import classify, outer_nest
from eqsat.lower.loops import (
    Const,
    Expr,
    For,
    Kernel,
    LoopIRError,
    LoopKind,
    LoopProgram,
    Stmt,
)
from eqsat.lower.schedule import Bind, Fuse, Schedule, Split, apply
from eqsat.lower.transform import MAX_GPU_THREADS, ScheduleError

WARP = 32
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
    return any(f.kind in GPU_KINDS for f in loops(kernel.body))
