"""Schedule primitives keep results (against interpret()), replay deterministically, round-trip
through JSON, and refuse what they cannot do legally."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eqsat.lower.analysis import loops
from eqsat.lower.check import check_program
from eqsat.lower.interpret import interpret
from eqsat.lower.loops import Buffer, For, Kernel, LoopKind, LoopProgram, Store, loop, seq
from eqsat.lower.printer import print_kernel, to_text
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
    from_json,
    to_json,
)
from eqsat.lower.transform import ScheduleError

from .programs import F32, IN, OUT, elementwise, i, j, matmul, softmax

rng = np.random.default_rng(3)


def scheduled(p: LoopProgram, schedule) -> LoopProgram:
    """``p`` with ``schedule`` applied to its kernel, after checking the results are unchanged."""
    q = dataclasses.replace(p, kernels=(apply(p.kernels[0], tuple(schedule)),))
    check_program(q)
    feeds = {b.name: rng.standard_normal(b.shape).astype(b.dtype) for b in p.inputs}
    want, got = interpret(p, feeds), interpret(q, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5)
    return q


def kinds(p: LoopProgram) -> dict[str, LoopKind]:
    return {f.var: f.kind for f in loops(p.kernels[0].body)}


@pytest.mark.parametrize("factor", [1, 3, 5, 16, 64, 100])
def test_split_with_dividing_and_non_dividing_factors(factor):
    q = scheduled(matmul(), [Split("i", factor), Split("k", factor)])
    assert {"i.o", "i.i", "k.o", "k.i"} <= set(kinds(q))
    assert ("if " in to_text(q)) == (64 % factor != 0 or 32 % factor != 0)
    scheduled(elementwise(), [Split("j", factor), Split("j.o", 2)])


def test_reorder_fuse_and_loop_kinds():
    mm = matmul(split_init=True)
    q = scheduled(mm, [Split("j", 5), Reorder(("k", "j.i", "i")), Fuse("k", "j.o")])
    assert "for k.j.o.fused in range(320):" in to_text(q)
    q = scheduled(mm, [Reorder(("i", "k", "j")), Parallel("i"), Unroll("k"), Vectorize("j")])
    assert kinds(q) == {
        "i0": LoopKind.SERIAL,
        "j0": LoopKind.SERIAL,
        "i": LoopKind.PARALLEL,
        "k": LoopKind.UNROLLED,
        "j": LoopKind.VECTORIZED,
    }
    q = scheduled(elementwise(), [Fuse("i", "j"), Split("i.j.fused", 8), Vectorize("i.j.fused.i")])
    assert "for i.j.fused.i in vectorized(8):" in to_text(q)
    assert "if i.j.fused.o * 8 + i.j.fused.i < 1850:" in to_text(q)


def test_tensorize_annotates_the_micro_kernel_nest():
    gemm = [
        Split("i", 6),
        Split("j", 16),
        Reorder(("i.o", "j.o", "k", "i.i", "j.i")),
        Tensorize("k", "fma_6x16"),
    ]
    q = scheduled(matmul(split_init=True), gemm)
    assert "for k in range(32) [tensorize=fma_6x16]:" in to_text(q)


def test_cache_write_and_pack_stage_tiles_locally():
    gemm = [
        Split("i", 6),  # 64 = 10 * 6 + 4: the tile sticks out; copies are guarded
        Split("j", 16),
        Reorder(("i.o", "j.o", "k", "i.i", "j.i")),
        CacheWrite("C", "j.o"),
        Pack("B", "j.o"),
        Vectorize("j.i"),
        Unroll("i.i"),
        Parallel("i.o"),
    ]
    q = scheduled(matmul(split_init=True), gemm)
    text = to_text(q)
    assert "allocate C.local: float32[6, 16]:" in text
    assert "allocate B.pack: float32[32, 16]:" in text
    assert "C.local[i.i, j.i] += A[i.o * 6 + i.i, k] * B.pack[k, j.i]" in text
    # a cache_write around a whole reduction with its init in the same nest
    scheduled(matmul(), [Split("j", 8), CacheWrite("C", "j.o")])


def test_compute_at_fuses_softmax_into_one_row_loop():
    q = scheduled(softmax(), [ComputeAt("i1", "i"), ComputeAt("i", "i3")])
    body = q.kernels[0].body
    assert isinstance(body, For) and body.var == "i3"
    assert [f.var for f in loops(body)] == ["i3", "j1", "j2", "j3"]


@pytest.mark.parametrize(
    "program, schedule, msg",
    [
        (matmul(split_init=True), [Parallel("k")], "race on the reduction into C"),
        (matmul(), [Vectorize("i")], "only an innermost loop is vectorized"),
        (matmul(), [Reorder(("i", "k"))], "not perfectly nested"),
        (matmul(), [Fuse("i", "k")], "k is not directly inside i"),
        (matmul(), [Split("i", 0)], "not a positive int"),
        (matmul(), [Split("x", 2)], "no loop named 'x'"),
        (matmul(), [Split("i", 2), Split("i.o", 2), Split("i", 2)], "no loop named 'i'"),
        (matmul(), [CacheWrite("A", "i")], "no write to A"),
        (matmul(), [Pack("C", "i")], "writes to C"),
        (matmul(), [Tensorize("k", "not a name")], "bad intrinsic name"),
        (softmax(), [ComputeAt("i1", "j2")], "not perfectly nested"),
        (softmax(), [Split("i", 4), ComputeAt("i1", "i.o")], "extents differ"),
    ],
)
def test_illegal_or_impossible_schedules_raise(program, schedule, msg):
    with pytest.raises(ScheduleError, match=msg):
        apply(program.kernels[0], tuple(schedule))


def test_reorder_refuses_when_iterations_conflict():
    X, T, Y = Buffer("X", (4, 4), F32, IN), Buffer("T", (4, 4), F32), Buffer("Y", (4, 4), F32, OUT)
    body = loop(
        "i",
        4,
        loop("j", 4, seq(Store(T, (j, i), X[i, j]), Store(Y, (i, j), T[i, j]))),
    )
    with pytest.raises(ScheduleError, match="T is accessed at different indices"):
        apply(Kernel("t", (X, T, Y), body), (Reorder(("j", "i")),))


GEMM = (
    Split("i", 6),
    Split("j", 16),
    Reorder(("i.o", "j.o", "k", "i.i", "j.i")),
    CacheWrite("C", "j.o"),
    Pack("B", "j.o"),
    Vectorize("j.i"),
    Unroll("i.i"),
    Parallel("i.o"),
    Tensorize("k", "fma_6x16"),
    ComputeAt("i0", "i.o"),
)


def test_schedules_round_trip():
    k = matmul(split_init=True).kernels[0]
    with pytest.raises(ScheduleError, match="extents differ"):
        apply(k, GEMM)
    sched = GEMM[:-1] + (Fuse("i0", "j0"),)
    assert from_json(to_json(sched)) == sched
    once, twice = apply(k, sched), apply(k, from_json(to_json(sched)))
    assert once == twice and to_text(once) == to_text(twice)
    assert '"primitive":"reorder","loops":["i.o","j.o","k","i.i","j.i"]' in to_json(sched)


PRIMS = ["split", "reorder", "fuse", "vectorize", "parallel", "unroll", "tensorize", "cache"]


@settings(max_examples=30, deadline=None)
@given(st.data())
def test_random_schedules_preserve_matmul(data):
    p = matmul(12, 10, 9, split_init=data.draw(st.booleans()))
    k0 = k = p.kernels[0]
    done = []
    for _ in range(data.draw(st.integers(1, 6))):
        names = [f.var for f in loops(k.body)]
        what, name = data.draw(st.sampled_from(PRIMS)), data.draw(st.sampled_from(names))
        if what == "split":
            prim = Split(name, data.draw(st.integers(1, 7)))
        elif what == "reorder":
            prim = Reorder(tuple(data.draw(st.permutations(names))[: data.draw(st.integers(2, 3))]))
        elif what == "fuse":
            f = next(f for f in loops(k.body) if f.var == name)
            prim = Fuse(name, f.body.var if isinstance(f.body, For) else name)
        elif what == "tensorize":
            prim = Tensorize(name, "fma")
        elif what == "cache":
            prim = data.draw(st.sampled_from([CacheWrite, Pack]))(
                data.draw(st.sampled_from("ABC")), name
            )
        else:
            prim = {"vectorize": Vectorize, "parallel": Parallel, "unroll": Unroll}[what](name)
        try:
            k = apply(k, (prim,))
        except ScheduleError:
            continue
        done.append(prim)
    assert apply(k0, tuple(done)) == k  # the trace replays to the same kernel
    scheduled(p, done)


@pytest.mark.parametrize(
    "schedule",
    [
        [Reorder(("j", "i"))],
        [Parallel("i"), Vectorize("j")],
        [Unroll("j")],
        [Split("j", 16), Tensorize("j.i", "vexp")],
        [Split("j", 16), CacheWrite("Y", "j.o")],
        [Split("i", 4), Split("j", 16), Reorder(("i.o", "j.o", "i.i")), Pack("X", "j.o")],
    ],
    ids=["reorder", "parallel", "unroll", "tensorize", "cache_write", "pack"],
)
def test_each_primitive_keeps_the_elementwise_kernel(schedule):
    q = scheduled(elementwise(), schedule)
    assert q != elementwise()


def test_split_of_a_symbolic_extent_is_guarded():
    from eqsat.lower.loops import Var

    X = Buffer("X", ("n",), F32, IN)
    Y = Buffer("Y", ("n",), F32, OUT)
    p = LoopProgram("s", (X, Y), (Kernel("s", (X, Y), loop("i", Var("n"), Store(Y, (i,), X[i]))),))
    k = apply(p.kernels[0], (Split("i", 4), Vectorize("i.i")))
    assert "for i.o in range((n + 3) // 4):" in print_kernel(
        k
    ) and "if i.o * 4 + i.i < n:" in print_kernel(k)
    q = dataclasses.replace(p, kernels=(k,))
    for n in (1, 4, 7):
        x = rng.standard_normal(n).astype(np.float32)
        np.testing.assert_array_equal(interpret(q, {"X": x})["Y"], x)
