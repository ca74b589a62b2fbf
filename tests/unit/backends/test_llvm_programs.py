"""The LLVM backend equals interpret() on the example programs, plain and scheduled, and emits
the IR the design promises (noalias params, loop metadata, fast-math only on reductions)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eqsat.backends import ref
from eqsat.backends.llvm.codegen import emit
from eqsat.lower.loops import LoopProgram, ReduceOp
from eqsat.lower.schedule import (
    CacheWrite,
    ComputeAt,
    Fuse,
    Pack,
    Parallel,
    Reorder,
    Split,
    Tensorize,
    Unroll,
    Vectorize,
    apply,
)

from ..lower.programs import elementwise, matmul, reduce_rows, relu_max, softmax, transpose
from .check import check, random_feeds

PROGRAMS = {
    "matmul": matmul,
    "matmul_split_init": lambda: matmul(split_init=True),
    "elementwise": elementwise,
    "softmax": softmax,
    "transpose": transpose,
    "relu_max": relu_max,
    **{f"reduce_{op.name.lower()}": (lambda op=op: reduce_rows(op)) for op in ReduceOp},
}


def scheduled(p: LoopProgram, schedule) -> LoopProgram:
    return dataclasses.replace(p, kernels=(apply(p.kernels[0], tuple(schedule)),))


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_example_programs_match_interpret(name):
    check(PROGRAMS[name]())


@pytest.mark.parametrize("name", ["matmul", "softmax", "elementwise"])
def test_ref_backend_runs_the_interpreter(name):
    p = PROGRAMS[name]()
    feeds = random_feeds(p)
    got = ref.compile(p).run(feeds)
    _, want = check(p, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)


GEMM = [
    Split("i", 6),  # 64 = 10 * 6 + 4: guarded tails in the copies
    Split("j", 16),
    Reorder(("i.o", "j.o", "k", "i.i", "j.i")),
    CacheWrite("C", "j.o"),
    Pack("B", "j.o"),
    Vectorize("j.i"),
    Unroll("i.i"),
    Parallel("i.o"),
]

MATMUL_SCHEDULES = {
    "split_non_dividing": [Split("i", 5), Split("k", 7)],
    "reorder_ikj_vectorize": [Reorder(("i", "k", "j")), Parallel("i"), Unroll("k"), Vectorize("j")],
    "fuse_split": [Split("j", 5), Reorder(("k", "j.i", "i")), Fuse("k", "j.o")],
    "gemm_tiles": GEMM,
    "gemm_tensorize_annotation": GEMM[:3] + [Tensorize("k", "fma_6x16")],
    "cache_write_whole_reduction": [Split("j", 8), CacheWrite("C", "j.o")],
}


@pytest.mark.parametrize("name", sorted(MATMUL_SCHEDULES))
def test_scheduled_matmul_matches_interpret(name):
    split_init = name != "cache_write_whole_reduction"
    check(scheduled(matmul(split_init=split_init), MATMUL_SCHEDULES[name]), rtol=1e-4, atol=1e-5)


EW_SCHEDULES = {
    "reorder": [Reorder(("j", "i"))],
    "parallel_vectorize": [Parallel("i"), Vectorize("j")],
    "unroll": [Unroll("j")],
    "fuse_split_vectorize": [Fuse("i", "j"), Split("i.j.fused", 8), Vectorize("i.j.fused.i")],
    "cache_write": [Split("j", 16), CacheWrite("Y", "j.o")],
    "pack": [Split("i", 4), Split("j", 16), Reorder(("i.o", "j.o", "i.i")), Pack("X", "j.o")],
}


@pytest.mark.parametrize("name", sorted(EW_SCHEDULES))
def test_scheduled_elementwise_matches_interpret(name):
    check(scheduled(elementwise(), EW_SCHEDULES[name]), rtol=1e-5, atol=1e-6)


def test_scheduled_softmax_and_reductions():
    check(scheduled(softmax(), [ComputeAt("i1", "i"), ComputeAt("i", "i3")]))
    check(scheduled(softmax(), [Split("j2", 8), Vectorize("j2.i"), Parallel("i3")]), threads=2)
    for op in ReduceOp:
        check(scheduled(reduce_rows(op), [Split("j", 8), Vectorize("j.i"), Parallel("i")]))


def test_parallel_gemm_on_two_threads_equals_serial():
    p = scheduled(matmul(60, 40, 30, split_init=True), GEMM)
    feeds = random_feeds(p)
    serial, one = check(p, feeds, threads=1, rtol=1e-4, atol=1e-5)
    threaded, two = check(p, feeds, threads=2, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(one["C"], two["C"])  # same arithmetic per element
    if threaded.pool_kind == "python":
        assert len(threaded.launcher._chunks) == 1  # the launcher ran the outlined loop
    else:  # the native pool's launcher is in the module's slot (test_native_pool.py)
        assert threaded.pool_kind == "native"
    assert serial.pool_kind is None and not serial.launcher._chunks  # threads=1: no launcher


def test_ir_shape():
    text = str(emit(scheduled(matmul(split_init=True), GEMM)))
    assert 'define void @"eqsat.k.mm"(ptr noalias %"A", ptr noalias %"B", ptr noalias %"C")' in text
    assert 'define void @"run"(ptr' in text
    assert "llvm.loop.vectorize.enable" in text and "llvm.loop.unroll.full" in text
    assert '@"eqsat.k.mm.par1"' in text and '@"eqsat.k.mm.par1.chunk"' in text
    assert "alloca float, i64 96, align 32" in text  # C.local: 6 x 16 on the stack
    # fast-math flags on the reduction (and the product feeding it), nowhere else
    fast = [line for line in text.splitlines() if "reassoc" in line]
    assert fast and all(" fadd " in s or " fmul " in s for s in fast)
    assert "reassoc" not in str(emit(elementwise())) + str(emit(transpose()))


def test_select_is_a_select_when_its_arms_are_safe():
    text = str(emit(elementwise()))  # both arms read only X[i, j], which the condition reads
    assert " select " in text and "sel.a" not in text  # no branch


def test_an_error_in_the_parallel_launcher_is_raised_not_dropped(monkeypatch):
    """The Python launcher's error (the native one runs no Python) reaches the caller."""
    import eqsat.backends.llvm.runtime as runtime

    monkeypatch.setattr(runtime, "native_pool", lambda threads: None)
    p = scheduled(matmul(12, 16, 8, split_init=True), GEMM)
    compiled, _ = check(p, threads=2, rtol=1e-4, atol=1e-5)

    class Failing:
        def parallel_for(self, *args):
            raise ValueError("boom")

    compiled.launcher.pool = Failing()
    with pytest.raises(RuntimeError, match="parallel loop failed"):
        compiled.run(random_feeds(p))


def test_parallel_gemm_through_the_python_pool(monkeypatch):
    """Where there is no native pool the launcher is the ctypes callback into threads.py."""
    import eqsat.backends.llvm.runtime as runtime

    monkeypatch.setattr(runtime, "native_pool", lambda threads: None)
    p = scheduled(matmul(60, 40, 30, split_init=True), GEMM)
    feeds = random_feeds(p)
    _, one = check(p, feeds, threads=1, rtol=1e-4, atol=1e-5)
    threaded, two = check(p, feeds, threads=2, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(one["C"], two["C"])
    assert threaded.pool_kind == "python" and len(threaded.launcher._chunks) == 1
