"""The persistent thread pool: partitions, generated kernels over chunks, errors."""

from __future__ import annotations

import ctypes
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eqsat.backends.llvm import jit
from eqsat.backends.llvm.threads import ThreadPool, shared_pool, split

FILL = """
define void @fill(ptr %out, i64 %scale, i64 %start, i64 %end) {
entry:
  br label %head
head:
  %i = phi i64 [%start, %entry], [%i1, %body]
  %c = icmp slt i64 %i, %end
  br i1 %c, label %body, label %done
body:
  %p = getelementptr i64, ptr %out, i64 %i
  %v = mul i64 %i, %scale
  store i64 %v, ptr %p
  %i1 = add i64 %i, 1
  br label %head
done:
  ret void
}
"""


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 50), st.integers(0, 300), st.integers(1, 5), st.integers(1, 16))
def test_split_partitions(start, length, parts, grain):
    chunks = split(start, start + length, parts, grain)
    assert len(chunks) <= parts
    covered = [i for s, e in chunks for i in range(s, e)]
    assert covered == list(range(start, start + length))
    for s, e in chunks[:-1]:
        assert (e - start) % grain == 0 and e > s


INC = """
define void @inc(ptr %out, i64 %start, i64 %end) {
entry:
  br label %head
head:
  %i = phi i64 [%start, %entry], [%i1, %body]
  %c = icmp slt i64 %i, %end
  br i1 %c, label %body, label %done
body:
  %p = getelementptr i64, ptr %out, i64 %i
  %v = load i64, ptr %p
  %v1 = add i64 %v, 1
  store i64 %v1, ptr %p
  %i1 = add i64 %i, 1
  br label %head
done:
  ret void
}
"""


@pytest.mark.parametrize("spin_us", [0, 30])
def test_every_chunk_runs_once(tmp_path, spin_us):
    """Calls with varying chunk counts (idle workers in some rounds) run each chunk once."""
    inc = jit.compile_ir(INC, cache_dir=tmp_path).function(
        "inc", None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)
    out = np.zeros(64, dtype=np.int64)
    want = np.zeros(64, dtype=np.int64)
    with ThreadPool(3, spin_us=spin_us) as pool:
        for r in range(300):
            end = [1, 2, 3, 64][r % 4]
            pool.parallel_for(inc, (out.ctypes.data,), 0, end)
            want[:end] += 1
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_pool_runs_generated_kernel(tmp_path, threads):
    fill = jit.compile_ir(FILL, cache_dir=tmp_path).function(
        "fill", None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    out = np.full(1000, -1, dtype=np.int64)
    with ThreadPool(threads) as pool:
        for _ in range(20):  # reused: no thread per call
            out[:] = -1
            n = pool.parallel_for(fill, (out.ctypes.data, 3), 0, 1000, grain=8)
            np.testing.assert_array_equal(out, 3 * np.arange(1000))
        assert n == threads
        assert pool.parallel_for(fill, (out.ctypes.data, 3), 5, 5) == 0


def test_thread_args_and_threads_used():
    seen, lock = [], threading.Lock()

    def task(tag, ws, s, e):
        with lock:
            seen.append((tag, ws, s, e, threading.current_thread().name))

    with ThreadPool(2) as pool:
        pool.parallel_for(task, ("t",), 0, 10, thread_args=[("w0",), ("w1",)])
    seen.sort(key=lambda x: x[2])
    assert [x[:4] for x in seen] == [("t", "w0", 0, 5), ("t", "w1", 5, 10)]
    # chunk 1 runs on the worker, or on the caller when the worker had not started it yet
    me = threading.current_thread().name
    assert seen[0][4] == me and (seen[1][4] == me or seen[1][4].startswith("eqsat"))


def test_chunks_stolen_by_the_caller_run_once():
    counts = np.zeros(64, dtype=np.int64)
    lock = threading.Lock()

    def task(s, e):
        with lock:
            counts[s:e] += 1

    with ThreadPool(2) as pool:
        for _ in range(200):  # workers and the caller race for the second chunk
            pool.parallel_for(task, (), 0, 64)
    assert (counts == 200).all()


def test_worker_error_reraised_and_pool_usable():
    def task(s, e):
        if s > 0:
            raise RuntimeError("boom")

    with ThreadPool(2) as pool:
        with pytest.raises(RuntimeError, match="boom"):
            pool.parallel_for(task, (), 0, 10)
        assert pool.parallel_for(lambda s, e: None, (), 0, 10) == 2
    with pytest.raises(RuntimeError):
        pool.parallel_for(lambda s, e: None, (), 0, 10)


def test_shared_pool_is_reused():
    assert shared_pool(2) is shared_pool(2)
