"""Default heuristic schedules: every kernel class scheduled equals interpret() of the unscheduled
kernel (every op case of test_compute, non-dividing sizes, symbolic dims); the schedules chosen
for representative kernels; the bundled example models compiled with them pass the gate."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eqsat import pipeline
from eqsat.lower import default_schedule
from eqsat.lower.analysis import loops
from eqsat.lower.default_schedule import classify, schedule_kernel, schedule_program
from eqsat.lower.loops import LoopKind
from eqsat.lower.lower import lower
from eqsat.lower.schedule import (
    Parallel,
    ScheduleTarget,
    Split,
    Unroll,
    Vectorize,
    apply,
    from_json,
    to_json,
)

from .test_compute import CASES, single
from .test_lower import feeds_of, graph, wt

AVX512_2T = ScheduleTarget(vector_width=16, threads=2)
ONE_THREAD = ScheduleTarget(vector_width=8, threads=1)


@pytest.fixture
def always_parallel(monkeypatch):
    """Parallel wherever legal, whatever the size, and the window plan on: the small shapes of
    the tests exercise every part of the schedules."""
    monkeypatch.setattr(default_schedule, "PARALLEL_MIN_NS", 0)
    monkeypatch.setattr(default_schedule, "UNROLL_WINDOWS", True)


def run_both(lowered, feeds, target=AVX512_2T):
    """Interpret the program unscheduled and scheduled; assert equal; return the scheduled."""
    scheduled = dataclasses.replace(lowered, program=schedule_program(lowered.program, target))
    want, got = lowered.run(feeds), scheduled.run(feeds)
    for name, ref in want.items():
        if ref.dtype.kind == "f":
            np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-5)
        else:
            np.testing.assert_array_equal(got[name], ref)
    return scheduled.program


def kinds(kernel) -> dict[str, LoopKind]:
    return {f.var: f.kind for f in loops(kernel.body)}


PARAMS = [
    pytest.param(op, i, id=f"{op}-{i}") for op in sorted(CASES) for i in range(len(CASES[op]))
]


@pytest.mark.parametrize(("op", "case"), PARAMS)
def test_every_op_scheduled_equals_unscheduled(op, case, always_parallel):
    inputs, attrs = CASES[op][case]
    g, feeds = single(op, inputs, attrs)
    run_both(lower(g), feeds)


SYMBOLIC = {
    "relu": ([("Relu", ["x"], ["y"], {})], (("batch", 7, 13),)),
    "bias-gelu": (
        [("Add", ["x", "b"], ["s"], {}), ("Gelu", ["s"], ["y"], {})],
        (("batch", 5, 19),),
    ),
    "softmax": ([("Softmax", ["x"], ["y"], {"axis": -1})], (("batch", 3, 21),)),
    "layernorm": ([("LayerNormalization", ["x", "g", "b"], ["y"], {})], (("batch", 6, 19),)),
    "reducemean-last": ([("ReduceMean", ["x"], ["y"], {"axes": (-1,)})], (("batch", 5, 23),)),
    "reducesum-mid": ([("ReduceSum", ["x"], ["y"], {"axes": (1,)})], (("batch", 9, 6, 7),)),
    "maxpool": (
        [("MaxPool", ["x"], ["y"], {"kernel_shape": (3, 3), "strides": (2, 2)})],
        (("batch", 3, 13, 11),),
    ),
    "avgpool-pad": (
        [("AveragePool", ["x"], ["y"], {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)})],
        (("batch", 3, 9, 10),),
    ),
    "global-avgpool": ([("GlobalAveragePool", ["x"], ["y"], {})], (("batch", 4, 7, 9),)),
    "depthwise": (
        [("Conv", ["x", "dw"], ["y"], {"group": 4, "pads": (1, 1, 1, 1)})],
        (("batch", 4, 9, 11),),
    ),
    "flat-symbolic": ([("Sigmoid", ["x"], ["y"], {})], (("n",),)),
}
WEIGHTS = {"b": wt(19), "g": wt(19), "dw": wt(4, 1, 3, 3)}


def symbolic_graph(name: str):
    nodes, shapes = SYMBOLIC[name]
    used = {i for _, ins, _, _ in nodes for i in ins}
    return graph(
        {"x": shapes[0]},
        {k: v for k, v in WEIGHTS.items() if k in used},
        nodes,
        [nodes[-1][2][0]],
    )


@pytest.mark.parametrize("name", sorted(SYMBOLIC))
@pytest.mark.parametrize("target", [AVX512_2T, ONE_THREAD], ids=["avx512-2t", "avx2-1t"])
def test_symbolic_and_non_dividing_shapes(name, target, always_parallel):
    g = symbolic_graph(name)
    lowered = lower(g)
    for batch in (1, 3):
        program = run_both(lowered, feeds_of(g, batch), target)
    assert all(classify(k) != "contraction" for k in program.kernels)
    assert any(f.kind is not LoopKind.SERIAL for k in program.kernels for f in loops(k.body))


def first_kernel(nodes, inputs, weights=None):
    g = graph(inputs, weights or {}, nodes, [nodes[-1][2][0]])
    return lower(g).program.kernels[0]


def test_big_elementwise_is_parallel_and_vectorized():
    k = first_kernel([("Relu", ["x"], ["y"], {})], {"x": (16, 256, 512)})
    assert classify(k) == "elementwise"
    s = schedule_kernel(k, AVX512_2T)
    assert Vectorize("i2") in s and isinstance(s[-1], Parallel)
    assert s[-1].loop == "i0"  # 16 rows, 8 per thread: enough chunks
    # one thread: vectorized, never parallel
    assert schedule_kernel(k, ONE_THREAD) == (Vectorize("i2"),)


def test_tiny_elementwise_is_not_parallel():
    k = first_kernel([("Relu", ["x"], ["y"], {})], {"x": (4, 64)})
    assert schedule_kernel(k, AVX512_2T) == (Vectorize("i1"),)


def test_symbolic_inner_dim_is_split_by_the_vector_width():
    k = first_kernel([("Relu", ["x"], ["y"], {})], {"x": ("n",)})
    assert schedule_kernel(k, AVX512_2T) == (Split("i0", 16), Vectorize("i0.i"))


def test_pool_window_plan(monkeypatch):
    pool = ("MaxPool", ["x"], ["y"], {"kernel_shape": (3, 3), "strides": (2, 2)})
    k = first_kernel([pool], {"x": (1, 64, 111, 111)})
    assert classify(k) == "reduction"
    # by default the nest is left to O3 (measured faster); parallel: 64 x 55 x 55 x 9 loads
    assert isinstance(schedule_kernel(k, AVX512_2T)[-1], Parallel)
    assert schedule_kernel(k, ONE_THREAD) == ()
    monkeypatch.setattr(default_schedule, "UNROLL_WINDOWS", True)
    s = schedule_kernel(k, AVX512_2T)
    assert s[:3] == (Unroll("r0"), Unroll("r1"), Vectorize("i3"))


def test_row_reduction_vectorizes_the_reduction_loop():
    k = first_kernel([("ReduceMean", ["x"], ["y"], {"axes": (-1,)})], {"x": (4, 8, 512)})
    assert classify(k) == "reduction"
    assert Vectorize("r2") in schedule_kernel(k, ONE_THREAD)


def test_softmax_and_layernorm_vectorize_every_stage():
    for node, weights in (
        (("Softmax", ["x"], ["y"], {"axis": -1}), {}),
        (("LayerNormalization", ["x", "g", "b"], ["y"], {}), {"g": wt(768), "b": wt(768)}),
    ):
        k = first_kernel([node], {"x": (4, 128, 768)}, weights)
        assert classify(k) == "multistage"
        s = schedule_kernel(k, AVX512_2T)
        stages = [f for f in loops(k.body) if f.var not in ("i0", "i1")]
        assert {Vectorize(f.var) for f in stages} <= set(s)
        assert isinstance(s[-1], Parallel)


def test_contractions_are_left_to_the_tensorizer_but_depthwise_is_not():
    conv = first_kernel(
        [("Conv", ["x", "w"], ["y"], {})], {"x": (1, 8, 9, 9)}, {"w": wt(4, 8, 3, 3)}
    )
    mm = first_kernel([("MatMul", ["x", "w"], ["y"], {})], {"x": (3, 8)}, {"w": wt(8, 5)})
    grouped = first_kernel(
        [("Conv", ["x", "w"], ["y"], {"group": 4})], {"x": (1, 8, 9, 9)}, {"w": wt(8, 2, 3, 3)}
    )
    for k in (conv, mm, grouped):
        assert classify(k) == "contraction" and schedule_kernel(k, AVX512_2T) == ()
    dw = first_kernel(
        [("Conv", ["x", "w"], ["y"], {"group": 8})], {"x": (1, 8, 32, 32)}, {"w": wt(8, 1, 3, 3)}
    )
    assert classify(dw) == "reduction"
    # sum(x * x) over a row is a reduction too (one operand, no reuse)
    ss = first_kernel([("ReduceSumSquare", ["x"], ["y"], {"axes": (-1,)})], {"x": (4, 64)})
    assert classify(ss) == "reduction"


def test_scheduled_kernels_are_left_alone_and_schedules_replay(always_parallel):
    k = first_kernel([("Relu", ["x"], ["y"], {})], {"x": (6, 40)})
    s = schedule_kernel(k, AVX512_2T)
    assert from_json(to_json(s)) == s and apply(k, from_json(to_json(s))) == apply(k, s)
    marked = apply(k, (Vectorize("i1"),))
    program = dataclasses.replace(lower(graph({"x": (6, 40)}, {}, [("Relu", ["x"], ["y"], {})],
                                              ["y"])).program, kernels=(marked,))  # fmt: skip
    assert schedule_program(program, AVX512_2T).kernels == (marked,)


@pytest.mark.parametrize("name", ["bert", "squeezenet", "resnext", "inception", "vgg", "nasrnn",
                                  "swiglu"])  # fmt: skip
def test_example_models_compile_and_pass_the_gate(name, always_parallel, tmp_path, monkeypatch):
    monkeypatch.setenv("EQSAT_CACHE_DIR", str(tmp_path))
    model = pipeline.example_model(name, size="small")
    options = pipeline.Options(target="llvm", threads=2)
    result = pipeline.compile(model, options)
    assert result.verdict is not None and result.verdict.ok, result.verdict
    kernels = result.compiled.program.kernels
    assert any(f.kind is not LoopKind.SERIAL for k in kernels for f in loops(k.body)) or all(
        classify(k) == "contraction" for k in kernels
    )
