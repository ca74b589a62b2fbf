"""A persistent thread pool that splits a kernel's parallel loop over the cores.

Consumes: a ``ctypes`` kernel whose last two arguments are the ``(start, end)`` of the parallel
range it should run (a generated function: see ``gemm.py``'s ``*_rows`` / ``*_cols``), the
other arguments, the range, and a ``grain`` (chunk boundaries fall on multiples of it from
``start`` — the micro-tile, so no chunk splits a tile).
Produces: the calls ``fn(*args, s_i, e_i)`` over a partition of the range, run concurrently: the
calling thread runs the first chunk itself and the pool's workers the others. Exceptions in a
worker are re-raised in the caller.

Why this shape (CODEGEN_NOTES, "Threads"): creating threads per call costs 40–105 µs
(``pthread_create`` from IR) or 43–92 µs (``ThreadPoolExecutor``) at 2 threads, as much as a
256² GEMM half; the workers here are created once and sleep on a lock between calls, and a
``CFUNCTYPE`` call releases the GIL, so the chunks really run in parallel. ``threads=1`` calls
the kernel inline (no lock, no hand-off). No OpenMP: it would need libgomp/libomp on users'
machines. ``benchmarks/gemm_bench.py`` measures the fork/join cost of this pool.
"""

from __future__ import annotations

import atexit
import functools
import threading
from collections.abc import Callable, Sequence


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
    __slots__ = ("go", "done", "task", "error", "thread")

    def __init__(self, pool: ThreadPool, index: int):
        self.go = threading.Lock()
        self.go.acquire()  # held: the worker sleeps until the caller releases it
        self.done = threading.Lock()
        self.done.acquire()
        self.task: tuple | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(
            target=pool._loop, args=(self,), name=f"eqsat-llvm-{index}", daemon=True
        )
        self.thread.start()


class ThreadPool:
    """``threads`` - 1 persistent workers plus the calling thread."""

    def __init__(self, threads: int):
        if threads < 1:
            raise ValueError("threads must be >= 1")
        self.threads = threads
        self._call = threading.Lock()  # one parallel call at a time
        self._closed = False
        self._workers = [_Worker(self, i) for i in range(threads - 1)]

    def _loop(self, w: _Worker) -> None:
        while True:
            w.go.acquire()
            task = w.task
            if task is None:  # close()
                w.done.release()
                return
            fn, args = task
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 — handed to the caller
                w.error = e
            w.done.release()

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
        if len(chunks) <= 1:
            for s, e in chunks:
                fn(*args, *extra[0], s, e)
            return len(chunks)
        if self._closed:
            raise RuntimeError("thread pool is closed")
        args = tuple(args)
        with self._call:
            used = self._workers[: len(chunks) - 1]
            for i, (w, (s, e)) in enumerate(zip(used, chunks[1:], strict=True)):
                w.task = (fn, (*args, *extra[i + 1], s, e))
                w.go.release()
            error = None
            try:
                fn(*args, *extra[0], *chunks[0])
            except BaseException as e:  # noqa: BLE001 — joined first, then re-raised
                error = e
            for w in used:
                w.done.acquire()
                w.task = None
                if w.error is not None and error is None:
                    error, w.error = w.error, None
            if error is not None:
                raise error
        return len(chunks)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._call:
            for w in self._workers:
                w.task = None
                w.go.release()
            for w in self._workers:
                w.done.acquire()
                w.thread.join()

    def __enter__(self) -> ThreadPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@functools.cache
def shared_pool(threads: int | None = None) -> ThreadPool:
    """The process's pool with ``threads`` threads (default: the cores this process may use)."""
    from eqsat.backends.llvm.capabilities import Capabilities

    pool = ThreadPool(threads or Capabilities.host().cores)
    atexit.register(pool.close)
    return pool
