"""Default heuristic schedules for every kernel class but contractions (GEMM/Conv are tensorized
elsewhere).

Consumes a LoopProgram as :func:`eqsat.lower.lower.lower` emits it and a
:class:`~eqsat.lower.schedule.ScheduleTarget` (vector width, threads, caches); produces the same
program with each kernel replaced by ``apply(kernel, schedule_kernel(kernel, target))``: the
schedules are ordinary replayable records (``Schedule`` tuples), so they keep results, print
and round-trip like any other. Kernels that already carry a schedule (a non-serial loop or an
annotation, e.g. a tensorized contraction) are left alone, so the order of the two passes in
``eqsat.compiled.build`` does not matter.

Kernels are classified structurally (:func:`classify`), never by op name. Every kernel starts
with a perfect nest of *output* loops; what lies under it (the *point*) decides the class:

- ``elementwise``: no loop under the nest (element-wise and injective kernels, views inlined).
  Vectorize the innermost loop (split by the vector width first when its extent is symbolic).
- ``contraction``: a sum of products of two loads that are each reused across an output loop
  (a loop their index lacks, or reads only as ``i // c``): GEMM, MatMul, Conv, grouped Conv,
  GEMV. Left unscheduled here.
- ``reduction``: one stage of accumulation (ReduceMean/Sum/Max, pools, global average pool,
  depthwise windows, ``sum(x*x)``). A contiguous innermost reduction loop is vectorized
  (reassociation is allowed: ``Accumulate``). With ``UNROLL_WINDOWS`` a small constant window
  (≤ ``WINDOW_MAX`` points) under an output row of ≥ 4 is unrolled and the output's inner axis
  vectorized instead (each lane one output pixel); it is off: measured slower than O3's own
  treatment of the plain nest, which already vectorizes pools (interleaved loads).
- ``multistage``: several loop nests under the point, the last storing the output (Softmax,
  LayerNorm, InstanceNorm with their ``Allocate`` locals): vectorize each stage's inner loop.

No loop that calls an intrinsic the backend emits as a scalar library call
(``ScheduleTarget.scalar_calls``, by name or ``name.dtype``: the LLVM backend lists float64 tanh
and erf; its float32 math is vector arithmetic) is marked vectorized: LLVM could not honour it.

Guards (every class): after its schedule, each kernel's loops are split where the ``Select`` /
``If`` guards in them are decided (:mod:`eqsat.lower.peel`): a padded window's interior and an
inlined concatenation's per-input channel ranges then run without per-element tests.

Parallel (every class, ``threads > 1``): when the estimated work of one call is at least
``PARALLEL_MIN_NS`` (20 µs of estimated work: the native pool's launch costs a few µs and its
workers spin between a model's kernels; with the Python pool's launch, 14-16 µs and a GIL
hand-off, it was 1 ms. Measured at 2 threads, interleaved, this 2-core VM: SqueezeNet 2.36 ->
1.98 ms and BERT 3.32 -> 3.13 ms against the 1 ms / 1e7-FLOP thresholds), the shortest prefix
of the output loops that gives ``4 × threads`` chunks is fused and marked parallel (the
runtime splits it into one contiguous range per thread). The vectorized loop is never fused:
fusion rewrites an index as ``f // n, f % n``, which the vectorizer cannot see through (the
loads would become gathers). Symbolic dims count as 1 in the estimate (fix them at compile
time, ``Options.shapes``, to schedule for a real batch).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from eqsat.lower.analysis import accesses, free_vars, loops, outer_nest, walk
from eqsat.lower.loops import (
    Accumulate,
    BinaryOp,
    BinOp,
    Call,
    Cast,
    Const,
    Expr,
    For,
    Kernel,
    Load,
    LoopKind,
    LoopProgram,
    ReduceOp,
    Select,
    Stmt,
    Store,
    Var,
)
from eqsat.lower.peel import peel_guards
from eqsat.lower.schedule import (
    Fuse,
    Parallel,
    Schedule,
    ScheduleTarget,
    Split,
    Unroll,
    Vectorize,
    apply,
)
from eqsat.lower.transform import ScheduleError

PARALLEL_MIN_NS = 20_000  # estimated ns of one call above which a kernel runs on all threads
# unroll a pool's window and vectorize its output row: off by default, measured slower than
# what LLVM's O3 does with the plain nest (vgg maxpool 0.33 -> 0.69 ms, inception avgpool 2.3 ->
# 3.9 ms, benchmarks/compile_bench.py); the plan stays for a search to try
UNROLL_WINDOWS = False
WINDOW_MAX = 64  # unrolled points per output element (a 7 × 7 window fits, 8 × 8 too)
MIN_VECTOR = 4  # shorter loops are left to LLVM
NS_PER_ACCESS = 0.4  # a 4-byte load or store streamed at ~10 GB/s
# an intrinsic as a scalar libm call (float64 exp, erf); float32 ones are vector arithmetic now,
# ~0.2-0.5 ns an element (codegen_bench section 3), so this overestimates them (kept: unmeasured
# at 2 threads, it only moves the parallel threshold)
NS_PER_CALL = 3.0
CLASSES = ("elementwise", "reduction", "multistage", "contraction", "other")


def _extent(f: For) -> int | None:
    return f.extent.value if isinstance(f.extent, Const) else None


def _operands(value: Expr) -> list[Expr] | None:
    """The factors of a product (through a padding ``select(c, a * b, 0)`` and casts)."""
    while isinstance(value, Select | Cast):
        value = value.a if isinstance(value, Select) else value.value
    if isinstance(value, BinOp) and value.op is BinaryOp.MUL:
        return [value.a, value.b]
    return None


def _plain_vars(e: Expr) -> set[str]:
    """Variables ``e`` reads other than through ``v // c`` (a grouped conv's ``i // g``)."""
    if isinstance(e, BinOp) and e.op is BinaryOp.FLOORDIV and isinstance(e.b, Const):
        return set() if e.b.value > 1 else _plain_vars(e.a)
    if isinstance(e, Load):
        return set().union(*(_plain_vars(i) for i in e.index))
    return free_vars(e) if not isinstance(e, BinOp) else _plain_vars(e.a) | _plain_vars(e.b)


def _is_contraction(nest: list[For], point: Stmt) -> bool:
    outs = {f.var for f in nest}
    for acc in (n for n in walk(point) if isinstance(n, Accumulate)):
        ops = _operands(acc.value) if acc.op is ReduceOp.SUM else None
        if ops and ops[0] != ops[1] and all(_reused(o, outs) for o in ops):
            return True
    return False


def _reused(operand: Expr, outs: set[str]) -> bool:
    """Each load of ``operand`` (one, or an inlined concat's selection) misses an output loop."""
    loads = [n for n in walk(operand) if isinstance(n, Load)]
    return bool(loads) and all(outs - _plain_vars(x) for x in loads)


def classify(kernel: Kernel) -> str:
    """One of :data:`CLASSES`, from the shape of the kernel's loops (see the module doc)."""
    nest, point = outer_nest(kernel.body)
    inner = list(loops(point))
    if not inner:
        return "elementwise" if nest else "other"
    if _is_contraction(nest, point):
        return "contraction"
    params = {p.name for p in kernel.params}
    writes = [
        n for f in inner for n in walk(f.body) if isinstance(n, Store) and n.buffer.name in params
    ]
    if writes:
        return "multistage"
    if any(isinstance(n, Accumulate) for n in walk(point)):
        return "reduction"
    return "other"


def estimate_ns(stmt: Stmt) -> float:
    """A rough cost of running ``stmt`` once: memory accesses and libm calls, times the trip
    counts of the loops around them (symbolic extents count as 1)."""
    if isinstance(stmt, For):
        n = _extent(stmt)
        return (n if n is not None else 1) * estimate_ns(stmt.body)
    if isinstance(stmt, Store | Accumulate):
        n_acc = len(accesses(stmt))
        calls = sum(isinstance(n, Call) for n in walk(stmt.value))
        return n_acc * NS_PER_ACCESS + calls * NS_PER_CALL
    return sum(estimate_ns(c) for c in _child_stmts(stmt))


def _child_stmts(stmt: Stmt) -> list[Stmt]:
    out = []
    for f in dataclasses.fields(stmt):
        v = getattr(stmt, f.name)
        for x in v if isinstance(v, tuple) else (v,):
            if isinstance(x, Stmt):
                out.append(x)
    return out


def _contiguous_in(loop: For, stmt: Stmt) -> bool:
    """Every load under ``stmt`` that depends on ``loop`` reads it with unit stride in its last
    dim only (so a vector of iterations is one vector load)."""
    v = loop.var
    for a in accesses(stmt):
        deps = [k for k, i in enumerate(a.index) if v in free_vars(i)]
        if not deps:
            continue
        last = a.index[-1]
        if deps != [len(a.index) - 1] or not _unit_stride(last, v):
            return False
    return True


def _unit_stride(e: Expr, v: str) -> bool:
    if isinstance(e, BinOp) and e.op in (BinaryOp.ADD, BinaryOp.SUB):
        a, b = (v in free_vars(e.a)), (v in free_vars(e.b))
        if a and b:
            return False
        return _unit_stride(e.a, v) if a else (e.op is BinaryOp.ADD and _unit_stride(e.b, v))
    return e == Var(v)


def _points(stmt: Stmt) -> int:
    """How many statements one run of ``stmt`` executes (constant extents only)."""
    if isinstance(stmt, For):
        return (_extent(stmt) or WINDOW_MAX + 1) * _points(stmt.body)
    if isinstance(stmt, Store | Accumulate):
        return 1
    return sum(_points(c) for c in _child_stmts(stmt))


def vector_plan(cls: str, nest: list[For], point: Stmt, target: ScheduleTarget):
    """(schedule, loops left for parallel): the vectorization part of a kernel's schedule."""
    calls = {n for n in walk(point) if isinstance(n, Call)}
    names = {n.intrinsic for n in calls} | {f"{n.intrinsic}.{n.dtype}" for n in calls}
    if names & set(target.scalar_calls):  # the backend calls libm there: LLVM cannot widen it
        return (), nest
    if cls == "elementwise":
        last = nest[-1]
        n = _extent(last)
        if n is None:
            split = Split(last.var, target.vector_width)
            return (split, Vectorize(f"{last.var}.i")), nest[:-1]
        return ((Vectorize(last.var),) if n >= MIN_VECTOR else ()), nest[:-1]
    if cls == "multistage":
        sched = []
        for f in loops(point):
            n = _extent(f)
            if not any(True for _ in loops(f.body)) and n is not None and n >= MIN_VECTOR:
                sched.append(Vectorize(f.var))
        return tuple(sched), nest
    if cls == "reduction":
        inner = list(loops(point))
        row = _extent(nest[-1]) if nest else None
        if UNROLL_WINDOWS and _points(point) <= WINDOW_MAX and row and row >= MIN_VECTOR:
            return tuple(Unroll(f.var) for f in inner) + (Vectorize(nest[-1].var),), nest[:-1]
        innermost = [f for f in inner if not any(True for _ in loops(f.body))]
        if len(innermost) == 1:
            f = innermost[0]
            n = _extent(f)
            if n is not None and n >= MIN_VECTOR and _contiguous_in(f, f.body):
                return (Vectorize(f.var),), nest
        return (), nest
    return (), []


def parallel_plan(candidates: list[For], target: ScheduleTarget, per_thread: int = 4) -> Schedule:
    """Fuse the shortest prefix of ``candidates`` with ``per_thread × threads`` iterations,
    mark it."""
    if not candidates:
        return ()
    want, prod, k = per_thread * target.threads, 1, 0
    while k < len(candidates) and prod < want:
        prod *= _extent(candidates[k]) or 1
        k += 1
    if prod < 2:
        return ()
    sched: list = []
    name = candidates[0].var
    for f in candidates[1:k]:
        sched.append(Fuse(name, f.var))
        name = f"{name}.{f.var}.fused"
    return (*sched, Parallel(name))


def schedule_kernel(kernel: Kernel, target: ScheduleTarget) -> Schedule:
    """The default schedule of one kernel (empty for contractions and unknown shapes)."""
    cls = classify(kernel)
    if cls in ("contraction", "other"):
        return ()
    nest, point = outer_nest(kernel.body)
    vec, candidates = vector_plan(cls, nest, point, target)
    par: Schedule = ()
    if target.threads > 1 and estimate_ns(kernel.body) >= PARALLEL_MIN_NS:
        par = parallel_plan(candidates, target)
    for sched in ((*vec, *par), vec, par):
        try:
            apply(kernel, sched)
            return sched
        except ScheduleError:  # a heuristic that does not fit this kernel: drop that part
            continue
    return ()


def is_scheduled(kernel: Kernel) -> bool:
    return any(f.kind is not LoopKind.SERIAL or f.annotations for f in loops(kernel.body))


def schedule_program(
    program: LoopProgram, target: ScheduleTarget, chosen: Mapping[str, Schedule] | None = None
) -> LoopProgram:
    """``program`` with the default schedule applied to each kernel not scheduled yet, then its
    guarded loops peeled (:func:`eqsat.lower.peel.peel_guards`). ``chosen``: schedules by
    kernel name (a tuning log's, :mod:`eqsat.autoschedule`) used instead of the default."""
    chosen = chosen or {}

    def schedule(k: Kernel) -> Schedule:
        return chosen[k.name] if k.name in chosen else schedule_kernel(k, target)

    kernels = tuple(
        k if is_scheduled(k) else peel_guards(apply(k, schedule(k))) for k in program.kernels
    )
    return dataclasses.replace(program, kernels=kernels)
