"""Index-set splitting of guarded loops (eqsat.lower.peel): padded pools and inlined
concatenations peeled into guard-free interiors; results equal interpret() of the unpeeled
program, interpreted and compiled with the LLVM backend (NaN inputs included)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eqsat.backends.llvm.runtime import compile as llvm_compile
from eqsat.lower.analysis import walk
from eqsat.lower.default_schedule import schedule_program
from eqsat.lower.interpret import interpret
from eqsat.lower.loops import BinaryOp, BinOp, Cmp, CmpOp, Const, For, Select, Var
from eqsat.lower.lower import lower
from eqsat.lower.peel import bounds, decide, peel_guards
from eqsat.lower.schedule import ScheduleTarget

from .test_lower import feeds_of, graph, wt

ONE = ScheduleTarget(vector_width=16, threads=1)


def _pool(op, hw=11, **attrs):
    base = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    return graph({"x": (1, 4, hw, hw)}, {}, [(op, ["x"], ["y"], base | attrs)], ["y"])


def _concat_pool():
    return graph(
        {"a": (1, 3, 10, 10), "b": (1, 5, 10, 10)},
        {"w": wt(8, 1, 1, 1)},
        [
            ("Concat", ["a", "b"], ["c"], {"axis": 1}),
            ("AveragePool", ["c"], ["y"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
        ],
        ["y"],
    )


CASES = {
    "maxpool_pad": lambda: _pool("MaxPool"),
    "maxpool_stride": lambda: _pool("MaxPool", hw=20, strides=[2, 2]),
    "avgpool_pad": lambda: _pool("AveragePool"),
    "avgpool_include_pad": lambda: _pool("AveragePool", count_include_pad=1),
    "avgpool_ceil": lambda: _pool("AveragePool", hw=20, strides=[2, 2], ceil_mode=1),
    "maxpool_5x5_dilated": lambda: _pool(
        "MaxPool", hw=16, kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 1, 2, 3]
    ),
    "concat_avgpool": _concat_pool,
}


def _guards(kernel) -> int:
    return sum(isinstance(n, Select) for n in walk(kernel.body))


@pytest.mark.parametrize("case", sorted(CASES))
def test_peeled_equals_unpeeled(case):
    g = CASES[case]()
    lw = lower(g)
    feeds = dict(lw.weights)
    for v, arr in feeds_of(g, 1).items():
        arr.reshape(-1)[::7] = np.nan  # NaN must propagate through max and sum alike
        feeds[lw.names[v]] = arr
    want = interpret(lw.program, feeds)
    peeled = schedule_program(lw.program, ONE)
    assert peeled != lw.program
    got = interpret(peeled, feeds)
    native = llvm_compile(peeled, threads=1).run(feeds)
    for name, w in want.items():
        np.testing.assert_allclose(got[name], w, rtol=1e-6, atol=1e-6, equal_nan=True)
        np.testing.assert_allclose(native[name], w, rtol=1e-5, atol=1e-6, equal_nan=True)


def test_interior_has_no_guards():
    """The interior copy of a padded pool reads the input without a Select."""
    k = peel_guards(lower(_pool("AveragePool")).program.kernels[0])
    interior = [f for f in walk(k.body) if isinstance(f, For) and f.var == "i3.p1.p1"]
    assert interior and _guards(interior[0]) == 0
    assert interior[0].extent == Const(9)


def test_concat_channels_split():
    k = peel_guards(lower(_concat_pool()).program.kernels[0])
    chans = [f for f in walk(k.body) if isinstance(f, For) and f.var.startswith("i1.p")]
    assert [f.extent for f in chans] == [Const(3), Const(5)]


def test_untouched_without_guards():
    k = lower(graph({"x": (1, 4, 9, 9)}, {}, [("Relu", ["x"], ["y"], {})], ["y"])).program
    assert peel_guards(k.kernels[0]) == k.kernels[0]


def test_bounds_and_decide():
    i, r = Var("i"), Var("r")
    e = BinOp(BinaryOp.ADD, BinOp(BinaryOp.SUB, BinOp(BinaryOp.MUL, i, Const(2)), Const(1)), r)
    rng = {"i": (1, 4), "r": (0, 2)}
    assert bounds(e, rng) == (1, 9)
    assert decide(Cmp(CmpOp.GE, e, Const(0)), rng) is True
    assert decide(Cmp(CmpOp.LT, e, Const(9)), rng) is None
    assert decide(Cmp(CmpOp.LT, e, Const(1)), rng) is False
    assert bounds(BinOp(BinaryOp.FLOORDIV, e, Const(4)), rng) == (0, 2)
    assert bounds(e, {"i": (0, 1)}) is None


def test_parallel_loops_stay_whole():
    lw = lower(_pool("MaxPool", hw=16))
    k = lw.program.kernels[0]
    from eqsat.lower.schedule import Parallel, apply

    par = apply(k, (Parallel("i2"),))
    peeled = peel_guards(par)
    assert any(isinstance(f, For) and f.var == "i2" for f in walk(peeled.body))
    assert dataclasses.replace(peeled, body=par.body) == par
