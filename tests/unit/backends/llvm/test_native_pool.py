"""The native thread pool (backends/llvm/native_pool.py): every index of a launch runs exactly
once, on more than one thread when the workers are awake; a launch from inside a chunk (nested)
or from a second Python thread at the same time runs inline, not deadlocked; a forked child
still computes every chunk."""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np
import pytest

from eqsat.backends.llvm import jit
from eqsat.backends.llvm.native_pool import available, native_pool

pytestmark = pytest.mark.skipif(not available(), reason="no native pool on this platform")

_LAUNCH = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)

# chunk(ctx, lo, hi): ctx = {counts: ptr, tids: ptr, launch: ptr, nested: i64}; adds 1 to
# counts[i] for i in [lo, hi), records the thread id per chunk start, and (nested != 0)
# launches a nested range [0, 4) of the same chunk with nested = 0 from inside, else makes
# ``work`` system calls (a chunk long enough for a worker to be scheduled while it runs).
_IR = r"""
declare i64 @syscall(i64, ...)
%ctx = type { ptr, ptr, ptr, i64, i64 }
define void @chunk(ptr %c, i64 %lo, i64 %hi) {
entry:
  %pc = getelementptr %ctx, ptr %c, i32 0, i32 0
  %counts = load ptr, ptr %pc
  %pt = getelementptr %ctx, ptr %c, i32 0, i32 1
  %tids = load ptr, ptr %pt
  %tid = call i64 (i64, ...) @syscall(i64 SYS_GETTID)
  %slot = getelementptr i64, ptr %tids, i64 %lo
  store i64 %tid, ptr %slot
  br label %head
head:
  %i = phi i64 [%lo, %entry], [%i1, %body]
  %more = icmp slt i64 %i, %hi
  br i1 %more, label %body, label %nest
body:
  %p = getelementptr i64, ptr %counts, i64 %i
  %v = atomicrmw add ptr %p, i64 1 seq_cst
  %i1 = add i64 %i, 1
  br label %head
nest:
  %pn = getelementptr %ctx, ptr %c, i32 0, i32 3
  %nested = load i64, ptr %pn
  %yes = icmp ne i64 %nested, 0
  br i1 %yes, label %inner, label %busy
busy:
  %pw = getelementptr %ctx, ptr %c, i32 0, i32 4
  %work = load i64, ptr %pw
  br label %spin
spin:
  %k = phi i64 [0, %busy], [%k1, %spin]
  %k1 = add i64 %k, 1
  %kv = call i64 (i64, ...) @syscall(i64 SYS_GETTID)
  %again = icmp slt i64 %k1, %work
  br i1 %again, label %spin, label %out
inner:
  %pl = getelementptr %ctx, ptr %c, i32 0, i32 2
  %launch = load ptr, ptr %pl
  %c2 = alloca %ctx
  %n0 = getelementptr %ctx, ptr %c2, i32 0, i32 0
  %extra = getelementptr i64, ptr %counts, i64 1000
  store ptr %extra, ptr %n0
  %n1 = getelementptr %ctx, ptr %c2, i32 0, i32 1
  %xt = getelementptr i64, ptr %tids, i64 1000
  store ptr %xt, ptr %n1
  %n2 = getelementptr %ctx, ptr %c2, i32 0, i32 2
  store ptr %launch, ptr %n2
  %n3 = getelementptr %ctx, ptr %c2, i32 0, i32 3
  store i64 0, ptr %n3
  %n4 = getelementptr %ctx, ptr %c2, i32 0, i32 4
  store i64 0, ptr %n4
  call void %launch(ptr @chunk, ptr %c2, i64 4)
  br label %out
out:
  ret void
}
"""


@pytest.fixture(scope="module")
def chunk():
    import platform

    gettid = 186 if platform.machine() in ("x86_64", "AMD64") else 178
    compiled = jit.compile_ir(_IR.replace("SYS_GETTID", str(gettid)), opt=0, use_cache=False)
    yield compiled.address("chunk")


class _Ctx(ctypes.Structure):
    _fields_ = [("counts", ctypes.c_void_p), ("tids", ctypes.c_void_p),
                ("launch", ctypes.c_void_p), ("nested", ctypes.c_int64),
                ("work", ctypes.c_int64)]


def _launch(pool, chunk, n, nested=False, work=0):
    counts = np.zeros(n + 1100, np.int64)
    tids = np.zeros(n + 1100, np.int64)
    ctx = _Ctx(counts.ctypes.data, tids.ctypes.data, pool.launch, int(nested), work)
    _LAUNCH(pool.launch)(chunk, ctypes.addressof(ctx), n)
    return counts, tids


@pytest.mark.parametrize("n", [0, 1, 2, 3, 7, 1000])
def test_every_index_once(chunk, n):
    pool = native_pool(2)
    for _ in range(20):
        counts, _ = _launch(pool, chunk, n)
        assert (counts[:n] == 1).all() and counts[n:].sum() == 0


def test_workers_take_chunks(chunk):
    """A worker (another thread id) runs chunks: the pool is parallel. On a loaded machine a
    worker may not be scheduled before the caller takes its chunk, so launches repeat until
    one is seen (a bounded count, no clock)."""
    pool = native_pool(2)
    for _ in range(2000):
        _, tids = _launch(pool, chunk, 2, work=200)
        if tids[1] != tids[0]:
            return
    pytest.fail("no chunk ran on a worker in 2000 launches")


def test_nested_launch_runs_inline(chunk):
    pool = native_pool(2)
    for _ in range(20):
        counts, _ = _launch(pool, chunk, 2, nested=True)
        assert (counts[:2] == 1).all()
        # each of the 2 chunks launched [0, 4) again from inside: inline, so each index twice
        assert (counts[1000:1004] == 2).all()


def test_concurrent_callers(chunk):
    pool = native_pool(2)
    errors = []

    def work():
        for _ in range(100):
            counts, _ = _launch(pool, chunk, 64)
            if not (counts[:64] == 1).all():
                errors.append(counts[:64].copy())

    ts = [threading.Thread(target=work) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_forked_child_runs_every_chunk(chunk):
    pool = native_pool(2)
    _launch(pool, chunk, 8)  # the workers exist in the parent
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        ok = all((_launch(pool, chunk, 8)[0][:8] == 1).all() for _ in range(5))
        os.write(w, b"1" if ok else b"0")
        os._exit(0)
    os.close(w)
    got = os.read(r, 1)
    os.waitpid(pid, 0)
    assert got == b"1"


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one CPU")
def test_worker_moves_off_the_callers_cpu(chunk):
    """A worker that starts a launch's chunk on the CPU the launching thread runs on moves off
    it (its affinity: the process's CPUs but that one), so that the two do not time-share one
    core. Made deterministic: the caller and the new pool's worker are both pinned to one CPU
    first; launches repeat (a bounded count, no clock) until the worker has looked."""
    from eqsat.backends.llvm.native_pool import DEFAULT_SPIN_US, NativePool

    allowed = os.sched_getaffinity(0)
    cpu = min(allowed)
    before = set(os.listdir("/proc/self/task"))
    pool = NativePool(2, DEFAULT_SPIN_US)
    try:
        (worker,) = {int(t) for t in set(os.listdir("/proc/self/task")) - before}
        os.sched_setaffinity(0, {cpu})
        os.sched_setaffinity(worker, {cpu})
        for _ in range(2000):
            counts, _ = _launch(pool, chunk, 2, work=50)
            assert (counts[:2] == 1).all()
            if os.sched_getaffinity(worker) != {cpu}:
                break
        assert os.sched_getaffinity(worker) == allowed - {cpu}
    finally:
        os.sched_setaffinity(0, allowed)
        pool.stop()
