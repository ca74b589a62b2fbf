"""A thread pool in generated native code: the launcher compiled kernels call at a parallel loop.

Consumes: a thread count (and a spin time); produces a :class:`NativePool` whose
:attr:`~NativePool.launch` address is what a compiled program's ``@eqsat.parallel_for`` slot
holds: ``launch(chunk, ctx, n)`` runs ``chunk(ctx, lo, hi)`` over ``[0, n)`` in ``threads``
chunks, ``[n*i/T, n*(i+1)/T)``, chunk 0 on the calling thread and chunk ``i`` on worker ``i``.

Why native (measured, Inception's 96-channel 3×3 conv, 1 ms of work): through the Python pool
(``threads.py``, a ctypes callback) 2 threads ran it *slower* than 1 on this shared 2-core VM,
while onnxruntime's pool ran it 1.7× faster. The Python worker has to take the GIL between its
wake-up and its chunk, so a woken worker sleeps again on the GIL's condition variable until the
caller is inside its own chunk — by then a task-counter kernel (``tensorize.py``) has given it
nothing left to do. Here the workers are ``pthread`` s that never touch the interpreter.

Protocol (all state in module globals, one module per pool):

* the caller takes ``busy`` (a compare-exchange; a nested or concurrent launch finds it taken
  and runs its range inline — no deadlock, no interleaving of two launches), publishes
  ``fn, ctx, n``, resets each chunk's ``state`` to free, bumps the generation ``gen`` and wakes
  sleeping workers (``futex``), then runs chunk 0;
* a worker spins on ``gen`` for ``spin`` pause iterations, then sleeps on it (``futex``, with a
  ``sleepers`` count and sequentially consistent accesses on both sides, so no wake-up is
  lost). Seeing a new generation it *claims* its chunk (``state`` free → running) and runs it,
  then marks it done;
* after chunk 0 the caller claims every chunk still free and runs it itself — a worker that has
  not been scheduled yet (another process on its core) costs nothing — and waits only for the
  chunks a worker claimed. A worker that wakes after its chunk was taken finds it claimed and
  goes back to waiting. After ``fork`` no worker exists in the child: the caller runs every
  chunk, so a forked process still computes correctly (serially).

Apart: the caller publishes the CPU it runs on (``sched_getcpu``) with each launch; a worker
that starts its chunk on that same CPU sets its own affinity to the process's CPUs but that
one (``sched_setaffinity``, once; again only if the caller later shows up on its CPU). Why
(measured, ResNet's 128×28×128 3×3 conv, 2 threads, this 2-core VM at loadavg 6-7): the worker
was woken onto the caller's CPU (the scheduler's wake-up placement) and stayed there — each
CPU had as many runnable threads as the other, so nothing moved it — and the two time-shared
one core: 2 threads ran in 1627 µs against 1648 at 1 (min of 20), while onnxruntime's ran
2.0× faster than its 1; with the worker on the other CPU, 895 µs. Last-run CPUs sampled after
300 calls: caller and worker on the same CPU 70 % of the time. Only the launching thread's CPU
is excluded, so with more CPUs than threads a worker still migrates freely.

Workers are created once per thread count and live as long as the process; ``atexit`` stops
them (``quit``) before the interpreter frees the machine code they run. Linux only (the futex
system call, x86-64 and AArch64 numbers); elsewhere :func:`native_pool` returns None and the
runtime uses the Python pool.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import platform
import sys

from eqsat.backends.llvm import jit
from eqsat.backends.llvm.threads import pause_iters_per_us

MAX_THREADS = 256
# A worker spins this long after its chunk before it sleeps: a model's next kernel is usually
# launched within it, so the workers are awake and on a core when it is (onnxruntime's workers
# spin too). Between model runs they sleep. ``EQSAT_SPIN_US`` overrides it.
DEFAULT_SPIN_US = 100.0
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
_FUTEX_WAIT, _FUTEX_WAKE = 128, 129  # the _PRIVATE forms
_LINE = 8  # i64s per 64-byte line: each chunk's state on its own cache line

_IR = r"""
@gen = internal global i32 0, align 64
@fn = internal global ptr null, align 64
@ctx = internal global ptr null
@n = internal global i64 0
@nthreads = internal global i64 1
@spin = internal global i64 0
@sleepers = internal global i32 0, align 64
@busy = internal global i32 0, align 64
@quit = internal global i32 0, align 64
@alive = internal global i32 0, align 64
@state = internal global [STATE_LEN x i64] zeroinitializer, align 64
@caller_cpu = internal global i32 -1, align 64
@ncpus = internal global i64 1
@cpus = internal global [16 x i64] zeroinitializer, align 64

declare i64 @syscall(i64, ...)
declare i32 @pthread_create(ptr, ptr, ptr, ptr)
declare i32 @sched_yield()
declare i32 @sched_getcpu()
declare i32 @sched_getaffinity(i32, i64, ptr)
declare i32 @sched_setaffinity(i32, i64, ptr)
PAUSE_DECL

; a worker that finds itself on the CPU the launching thread ran on moves off it: its
; affinity becomes the process's CPUs but that one (see the module doc, "Apart")
define internal void @keep_apart() {
entry:
  %mask = alloca [16 x i64], align 8
  %cc = load atomic i32, ptr @caller_cpu monotonic, align 4
  %me = call i32 @sched_getcpu()
  %same = icmp eq i32 %me, %cc
  %lo = icmp sge i32 %cc, 0
  %hi = icmp slt i32 %cc, 1024
  %n = load i64, ptr @ncpus
  %many = icmp sgt i64 %n, 1
  %a = and i1 %same, %lo
  %b = and i1 %hi, %many
  %go = and i1 %a, %b
  br i1 %go, label %move, label %out
move:
  call void @llvm.memcpy.p0.p0.i64(ptr %mask, ptr @cpus, i64 128, i1 false)
  %w = lshr i32 %cc, 6
  %bt = and i32 %cc, 63
  %wz = zext i32 %w to i64
  %bz = zext i32 %bt to i64
  %p = getelementptr i64, ptr %mask, i64 %wz
  %v = load i64, ptr %p
  %bit = shl i64 1, %bz
  %nb = xor i64 %bit, -1
  %v2 = and i64 %v, %nb
  store i64 %v2, ptr %p
  %r = call i32 @sched_setaffinity(i32 0, i64 128, ptr %mask)
  br label %out
out:
  ret void
}

declare void @llvm.memcpy.p0.p0.i64(ptr, ptr, i64, i1)

define internal void @pause() alwaysinline {
  PAUSE_CALL
  ret void
}

define internal ptr @slot(i64 %i) alwaysinline {
  %o = mul i64 %i, LINE
  %p = getelementptr i64, ptr @state, i64 %o
  ret ptr %p
}

; chunk i of the published range: [n*i/T, n*(i+1)/T)
define internal void @run_chunk(i64 %i) {
  %f = load ptr, ptr @fn
  %c = load ptr, ptr @ctx
  %n = load i64, ptr @n
  %t = load i64, ptr @nthreads
  %a = mul i64 %n, %i
  %lo = sdiv i64 %a, %t
  %i1 = add i64 %i, 1
  %b = mul i64 %n, %i1
  %hi = sdiv i64 %b, %t
  call void %f(ptr %c, i64 %lo, i64 %hi)
  ret void
}

define internal i1 @claim(i64 %i) {
  %p = call ptr @slot(i64 %i)
  %r = cmpxchg ptr %p, i64 0, i64 1 acq_rel acquire
  %ok = extractvalue { i64, i1 } %r, 1
  ret i1 %ok
}

define internal void @done(i64 %i) {
  %p = call ptr @slot(i64 %i)
  store atomic i64 2, ptr %p release, align 8
  ret void
}

define ptr @eqsat_pool_worker(ptr %arg) {
entry:
  %i = ptrtoint ptr %arg to i64
  %g0 = load atomic i32, ptr @gen acquire, align 4
  br label %top
top:
  %seen = phi i32 [%g0, %entry], [%seen, %slept], [%g, %work], [%g, %try], [%g, %ran]
  %q = load atomic i32, ptr @quit acquire, align 4
  %stop = icmp ne i32 %q, 0
  br i1 %stop, label %exit, label %spin.head
spin.head:
  %k = phi i64 [0, %top], [%k1, %spin.body]
  %g = load atomic i32, ptr @gen acquire, align 4
  %new = icmp ne i32 %g, %seen
  br i1 %new, label %work, label %spin.more
spin.more:
  %lim = load i64, ptr @spin
  %more = icmp slt i64 %k, %lim
  br i1 %more, label %spin.body, label %sleep
spin.body:
  call void @pause()
  %k1 = add i64 %k, 1
  br label %spin.head
sleep:
  %s0 = atomicrmw add ptr @sleepers, i32 1 seq_cst
  %g2 = load atomic i32, ptr @gen seq_cst, align 4
  %q2 = load atomic i32, ptr @quit seq_cst, align 4
  %same = icmp eq i32 %g2, %seen
  %live = icmp eq i32 %q2, 0
  %wait = and i1 %same, %live
  br i1 %wait, label %futex, label %woke
futex:
  %sx = zext i32 %seen to i64
  %r = call i64 (i64, ...) @syscall(i64 SYS_FUTEX, ptr @gen, i64 FUTEX_WAIT, i64 %sx, ptr null)
  br label %woke
woke:
  %s1 = atomicrmw sub ptr @sleepers, i32 1 seq_cst
  br label %slept
slept:
  br label %top
work:
  %t = load i64, ptr @nthreads
  %mine = icmp slt i64 %i, %t
  br i1 %mine, label %apart, label %top
apart:
  call void @keep_apart()
  br label %try
try:
  %ok = call i1 @claim(i64 %i)
  br i1 %ok, label %run, label %top
run:
  call void @run_chunk(i64 %i)
  call void @done(i64 %i)
  br label %ran
ran:
  br label %top
exit:
  %a = atomicrmw sub ptr @alive, i32 1 seq_cst
  ret ptr null
}

define void @eqsat_pool_launch(ptr %f, ptr %c, i64 %n) {
entry:
  %t = load i64, ptr @nthreads
  %r = cmpxchg ptr @busy, i32 0, i32 1 acquire monotonic
  %free = extractvalue { i32, i1 } %r, 1
  %many = icmp sgt i64 %t, 1
  %go = and i1 %free, %many
  br i1 %go, label %publish, label %inline
inline:
  call void %f(ptr %c, i64 0, i64 %n)
  br i1 %free, label %release, label %out
publish:
  store ptr %f, ptr @fn
  store ptr %c, ptr @ctx
  store i64 %n, ptr @n
  br label %reset.head
reset.head:
  %i = phi i64 [1, %publish], [%i1, %reset.body]
  %rmore = icmp slt i64 %i, %t
  br i1 %rmore, label %reset.body, label %bump
reset.body:
  %p = call ptr @slot(i64 %i)
  store atomic i64 0, ptr %p seq_cst, align 8
  %i1 = add i64 %i, 1
  br label %reset.head
bump:
  %cpu = call i32 @sched_getcpu()
  store atomic i32 %cpu, ptr @caller_cpu monotonic, align 4
  %g = atomicrmw add ptr @gen, i32 1 seq_cst
  %sl = load atomic i32, ptr @sleepers seq_cst, align 4
  %any = icmp sgt i32 %sl, 0
  br i1 %any, label %wake, label %mine
wake:
  %w = call i64 (i64, ...) @syscall(i64 SYS_FUTEX, ptr @gen, i64 FUTEX_WAKE, i64 2147483647)
  br label %mine
mine:
  %hi0 = sdiv i64 %n, %t
  call void %f(ptr %c, i64 0, i64 %hi0)
  br label %join.head
join.head:
  %j = phi i64 [1, %mine], [%j1, %join.next]
  %jmore = icmp slt i64 %j, %t
  br i1 %jmore, label %join.try, label %release
join.try:
  %ok = call i1 @claim(i64 %j)
  br i1 %ok, label %steal, label %wait.head
steal:
  call void @run_chunk(i64 %j)
  call void @done(i64 %j)
  br label %join.next
wait.head:
  %k = phi i64 [0, %join.try], [%k1, %wait.body], [%k1, %yield]
  %pj = call ptr @slot(i64 %j)
  %st = load atomic i64, ptr %pj acquire, align 8
  %fin = icmp eq i64 %st, 2
  br i1 %fin, label %join.next, label %wait.body
wait.body:
  call void @pause()
  %k1 = add i64 %k, 1
  %low = and i64 %k1, 63
  %y = icmp eq i64 %low, 0
  br i1 %y, label %yield, label %wait.head
yield:
  %yr = call i32 @sched_yield()
  br label %wait.head
join.next:
  %j1 = add i64 %j, 1
  br label %join.head
release:
  store atomic i32 0, ptr @busy release, align 4
  br label %out
out:
  ret void
}

; start T - 1 workers (the caller is the T-th thread); returns how many started
define i64 @eqsat_pool_start(i64 %t, i64 %spin, i64 %ncpus) {
entry:
  store i64 %spin, ptr @spin
  store i64 %ncpus, ptr @ncpus
  %got = call i32 @sched_getaffinity(i32 0, i64 128, ptr @cpus)
  %tid = alloca i64
  br label %head
head:
  %i = phi i64 [1, %entry], [%i1, %next]
  %started = phi i64 [1, %entry], [%s1, %next]
  %more = icmp slt i64 %i, %t
  br i1 %more, label %body, label %done
body:
  %arg = inttoptr i64 %i to ptr
  %a = atomicrmw add ptr @alive, i32 1 seq_cst
  %rc = call i32 @pthread_create(ptr %tid, ptr null, ptr @eqsat_pool_worker, ptr %arg)
  %ok = icmp eq i32 %rc, 0
  br i1 %ok, label %next, label %failed
failed:
  %b = atomicrmw sub ptr @alive, i32 1 seq_cst
  br label %done
next:
  %i1 = add i64 %i, 1
  %s1 = add i64 %started, 1
  br label %head
done:
  %count = phi i64 [%started, %head], [%started, %failed]
  store i64 %count, ptr @nthreads
  ret i64 %count
}

; ask the workers to leave and wait until they have (at exit, before the code is freed)
define void @eqsat_pool_stop() {
entry:
  store atomic i32 1, ptr @quit seq_cst, align 4
  %g = atomicrmw add ptr @gen, i32 1 seq_cst
  %w = call i64 (i64, ...) @syscall(i64 SYS_FUTEX, ptr @gen, i64 FUTEX_WAKE, i64 2147483647)
  br label %head
head:
  %a = load atomic i32, ptr @alive acquire, align 4
  %none = icmp eq i32 %a, 0
  br i1 %none, label %out, label %body
body:
  %y = call i32 @sched_yield()
  br label %head
out:
  ret void
}
"""


class NativePool:
    """``threads`` - 1 native workers plus the calling thread; see the module doc."""

    def __init__(self, threads: int, spin_us: float):
        machine = platform.machine()
        x86 = machine in ("x86_64", "AMD64")
        text = (_IR.replace("STATE_LEN", str(MAX_THREADS * _LINE)).replace("LINE", str(_LINE))
                .replace("SYS_FUTEX", str(_SYS_FUTEX["x86_64" if x86 else machine]))
                .replace("FUTEX_WAIT", str(_FUTEX_WAIT)).replace("FUTEX_WAKE", str(_FUTEX_WAKE))
                .replace("PAUSE_DECL", "declare void @llvm.x86.sse2.pause()" if x86 else "")
                .replace("PAUSE_CALL", "call void @llvm.x86.sse2.pause()" if x86 else ""))
        self.compiled = jit.compile_ir(text, opt=1)
        start = self.compiled.function("eqsat_pool_start", ctypes.c_int64, ctypes.c_int64,
                                       ctypes.c_int64, ctypes.c_int64)
        self._stop = self.compiled.function("eqsat_pool_stop", None)
        self.launch = self.compiled.address("eqsat_pool_launch")
        self.threads = int(start(min(threads, MAX_THREADS), _spin_iters(spin_us),
                                 len(os.sched_getaffinity(0))))
        self._stopped = False

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._stop()


def _spin_iters(spin_us: float) -> int:
    """``pause`` iterations in ``spin_us`` µs (calibrated with the Python pool's spin loop)."""
    return int(spin_us * pause_iters_per_us()) if spin_us > 0 else 0


def available() -> bool:
    machine = platform.machine()
    return sys.platform.startswith("linux") and (machine in _SYS_FUTEX or machine == "AMD64")


@functools.cache
def native_pool(threads: int) -> NativePool | None:
    """The process's native pool with ``threads`` threads, or None where there is none (not
    Linux on x86-64 / AArch64, ``EQSAT_NATIVE_POOL=0``, or no thread could be started)."""
    if threads <= 1 or not available() or os.environ.get("EQSAT_NATIVE_POOL", "1") == "0":
        return None
    spin = float(os.environ.get("EQSAT_SPIN_US", str(DEFAULT_SPIN_US)))
    pool = NativePool(threads, spin)
    atexit.register(pool.stop)
    if pool.threads <= 1:
        return None
    return pool
