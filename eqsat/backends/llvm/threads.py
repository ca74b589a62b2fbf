"""A persistent thread pool that splits a kernel's parallel loop over the cores.

Consumes: a ``ctypes`` kernel whose last two arguments are the ``(start, end)`` of the parallel
range it should run (a generated function: see ``gemm.py``'s ``*_rows`` / ``*_cols``), the
other arguments, optional per-thread arguments (a private workspace), the range, and a
``grain`` (chunk boundaries fall on multiples of it from ``start``: the micro-tile).
Produces: the calls ``fn(*args, *thread_args[i], s_i, e_i)`` over a partition of the range,
run concurrently: the calling thread runs chunk 0 and the workers the others; a chunk whose
worker has not started it when the caller is done with its own runs on the caller (each chunk
is claimed by a lock before it runs): on a machine where another process holds a core, waiting
for the worker to be scheduled cost a time slice per parallel loop (inception at 2 threads ran
2.2x slower than at 1, measured). Exceptions in a worker are re-raised in the caller.

Why this shape (CODEGEN_NOTES, "Threads"): creating threads per call costs 40–105 µs
(``pthread_create`` from IR) or 43–92 µs (``ThreadPoolExecutor``) at 2 threads, as much as a
256² GEMM half. The workers here are created once; between calls a worker may first **spin** on
a generation counter inside a tiny generated function (``pause`` loop, GIL released) for
``spin_us`` (default ``$EQSAT_SPIN_US`` or 0), then sleeps on a lock; the caller waits for the
workers by spinning (``sched_yield`` every 64 pauses). Measured on this shared 2-core VM with two
foreign processes at 100 %: an empty kernel's fork/join cost 12–13 µs with ``spin_us=0``,
35–65 µs with 50 and 100–220 µs with 200 (a spinning worker takes our own half-core from the
caller), so spinning is opt-in; on a quiet machine it saves the futex wake-up. A ``CFUNCTYPE``
call releases the GIL, so chunks really run in parallel. ``threads=1`` calls the
kernel inline. No OpenMP: it would need libgomp/libomp on users' machines.
``benchmarks/gemm_bench.py`` measures the fork/join cost.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import os
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from eqsat.backends.llvm import jit
from eqsat.backends.llvm.capabilities import Capabilities

_SPIN_IR = """
declare i32 @sched_yield()

; Spin until *flag >= target or max_iters pauses (max_iters < 0: forever, yielding the CPU
; every 64 pauses); returns the last value read.
define i64 @eqsat_spin_until_ge(ptr %flag, i64 %target, i64 %max_iters) {
entry:
  %bounded = icmp sge i64 %max_iters, 0
  br label %head
head:
  %i = phi i64 [0, %entry], [%i1, %wait], [%i1, %do_yield]
  %v = load atomic i64, ptr %flag acquire, align 8
  %ok = icmp sge i64 %v, %target
  %out = icmp sge i64 %i, %max_iters
  %stop = and i1 %bounded, %out
  %leave = or i1 %ok, %stop
  br i1 %leave, label %done, label %wait
wait:
  PAUSE
  %i1 = add i64 %i, 1
  %low = and i64 %i1, 63
  %y = icmp eq i64 %low, 0
  %unbounded = xor i1 %bounded, true
  %doy = and i1 %y, %unbounded
  br i1 %doy, label %do_yield, label %head
do_yield:
  %r = call i32 @sched_yield()
  br label %head
done:
  ret i64 %v
}
"""


@functools.cache
def _spin_fn():
    x86 = Capabilities.host().triple.startswith(("x86_64", "i686"))
    text = _SPIN_IR.replace("PAUSE", "call void @llvm.x86.sse2.pause()" if x86 else "")
    if x86:
        text = "declare void @llvm.x86.sse2.pause()\n" + text
    compiled = jit.compile_ir(text, opt=1, use_cache=False)  # ~10 ms; keeps tests off ~/.cache
    return compiled.function("eqsat_spin_until_ge", ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_int64, ctypes.c_int64)


def _pause_iters_per_us(spin) -> float:
    """Calibrate: ``pause`` costs ~10 cycles on Zen 3 and ~140 on recent Intel cores."""
    flag = np.zeros(1, dtype=np.int64)
    n = 20000
    t = time.perf_counter()
    spin(flag.ctypes.data, 1, n)
    return n / max((time.perf_counter() - t) * 1e6, 1e-3)


@functools.cache
def pause_iters_per_us() -> float:
    """``pause`` iterations per µs on this CPU (measured once per process)."""
    return _pause_iters_per_us(_spin_fn())


def split(start: int, end: int, parts: int, grain: int = 1) -> list[tuple[int, int]]:
    """``[start, end)`` in at most ``parts`` non-empty chunks of whole grains, sizes balanced."""
    n = end - start
    if n <= 0:
        return []
    grains = -(-n // grain)
    parts = max(1, min(parts, grains))
    out, lo = [], start
    for i in range(parts):
        g = grains // parts + (1 if i < grains % parts else 0)
        hi = min(end, lo + g * grain)
        out.append((lo, hi))
        lo = hi
    return out


class _Worker:
    __slots__ = ("index", "go", "mutex", "sleeping", "task", "error", "thread")

    def __init__(self, index: int):
        self.index = index
        self.go = threading.Lock()
        self.go.acquire()  # held: a sleeping worker blocks on it until the caller releases it
        self.mutex = threading.Lock()  # guards ``sleeping`` against lost wake-ups
        self.sleeping = False
        # (generation, work, claim): work (fn, args), () = nothing this round, None = exit;
        # claim: a lock whoever runs the work takes first (the worker, or the caller stealing
        # a chunk the worker has not started)
        self.task: tuple = (0, (), None)
        self.error: BaseException | None = None
        self.thread: threading.Thread | None = None


class ThreadPool:
    """``threads`` - 1 persistent workers plus the calling thread; one call at a time."""

    def __init__(self, threads: int, spin_us: float | None = None):
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = threads
        self._call = threading.Lock()
        self._closed = False
        self._workers: list[_Worker] = []
        if threads == 1:
            return
        self._spin = _spin_fn()
        if spin_us is None:
            spin_us = float(os.environ.get("EQSAT_SPIN_US", "0"))
        self._spin_iters = int(spin_us * _pause_iters_per_us(self._spin)) if spin_us > 0 else 0
        # slot 0: the generation (bumped per call); slot 1 + i: the last one worker i finished
        self._state = np.zeros(threads, dtype=np.int64)
        self._gen = 0
        for i in range(threads - 1):
            w = _Worker(i)
            w.thread = threading.Thread(target=self._loop, args=(w,), daemon=True,
                                        name=f"eqsat-llvm-{i}")
            self._workers.append(w)
            w.thread.start()

    def _loop(self, w: _Worker) -> None:
        state, seen = self._state, 0
        gen_ptr = state.ctypes.data
        while True:
            gen = self._spin(gen_ptr, seen + 1, self._spin_iters)  # GIL released
            if gen <= seen:
                with w.mutex:
                    gen = int(state[0])
                    w.sleeping = gen <= seen
                if gen <= seen:
                    w.go.acquire()
                    gen = int(state[0])
            # The task is published before the generation is bumped, so it may be newer than
            # ``gen``: run each generation's task once, and count it as seen.
            tgen, work, claim = w.task
            if tgen > seen:
                if work and claim.acquire(blocking=False):
                    fn, args = work
                    try:
                        fn(*args)
                    except BaseException as e:  # noqa: BLE001 — handed to the caller
                        w.error = e
                elif work is None:
                    state[1 + w.index] = tgen
                    return
            seen = max(gen, tgen)
            state[1 + w.index] = seen

    def _publish(self, tasks: list) -> int:
        """Hand ``tasks`` (one per worker) out as a new generation; returns it."""
        self._gen += 1
        for w, t in zip(self._workers, tasks, strict=True):
            w.task = (self._gen, t, threading.Lock())
        self._state[0] = self._gen
        for w in self._workers:
            with w.mutex:
                if w.sleeping:
                    w.sleeping = False
                    w.go.release()
        return self._gen

    def _join(self, gen: int, workers: Sequence[_Worker]) -> None:
        base = self._state.ctypes.data
        for w in workers:
            self._spin(base + 8 * (1 + w.index), gen, -1)

    def parallel_for(
        self,
        fn: Callable,
        args: Sequence,
        start: int,
        end: int,
        grain: int = 1,
        threads: int | None = None,
        thread_args: Sequence[tuple] | None = None,
    ) -> int:
        """Run ``fn(*args, *thread_args[i], s_i, e_i)`` over chunks ``i`` of ``[start, end)``.

        ``thread_args`` (one tuple per thread, e.g. a private workspace) defaults to nothing;
        returns the number of chunks run.
        """
        n = min(self.threads, threads or self.threads)
        if thread_args is not None:
            n = min(n, len(thread_args))
        chunks = split(start, end, n, grain)
        extra = list(thread_args) if thread_args is not None else [()] * len(chunks)
        args = tuple(args)
        if len(chunks) <= 1:
            for s, e in chunks:
                fn(*args, *extra[0], s, e)
            return len(chunks)
        if self._closed:
            raise RuntimeError("thread pool is closed")
        with self._call:
            tasks: list = [()] * len(self._workers)
            for i, (s, e) in enumerate(chunks[1:]):
                tasks[i] = (fn, (*args, *extra[i + 1], s, e))
            gen = self._publish(tasks)
            error = None
            try:
                fn(*args, *extra[0], *chunks[0])
            except BaseException as e:  # noqa: BLE001 — joined first, then re-raised
                error = e
            # A chunk whose worker has not started it yet (asleep, or its core busy with
            # another process) runs here instead of waiting for the worker to be scheduled.
            running = []
            for w, t in zip(self._workers, tasks, strict=True):
                if not t:
                    continue
                if not w.task[2].acquire(blocking=False):
                    running.append(w)
                    continue
                try:
                    t[0](*t[1])
                except BaseException as e:  # noqa: BLE001 — joined first, then re-raised
                    error = error or e
            self._join(gen, running)
            for w in self._workers:
                if w.error is not None:
                    error, w.error = error or w.error, None
            if error is not None:
                raise error
        return len(chunks)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._workers:
            return
        with self._call:
            self._join(self._publish([None] * len(self._workers)), self._workers)
            for w in self._workers:
                w.thread.join()

    def __enter__(self) -> ThreadPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@functools.cache
def shared_pool(threads: int | None = None) -> ThreadPool:
    """The process's pool with ``threads`` threads (default: the cores this process may use)."""
    pool = ThreadPool(threads or Capabilities.host().cores)
    atexit.register(pool.close)
    return pool
