"""The search space: every candidate computes what the unscheduled kernel computes (the
interpreter is the oracle), invalid GEMM plans are refused, and the cost model learns."""

from __future__ import annotations

import random

import numpy as np
import pytest

from eqsat.autoschedule.measure import feeds_for, run_once, standalone
from eqsat.autoschedule.model import BoostedTrees
from eqsat.autoschedule.space import GemmSpace, LoopSpace, space_for
from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.plan_choice import PlanError, plan_from
from eqsat.egraph.onnx_io import import_onnx
from eqsat.lower.interpret import interpret
from eqsat.lower.lower import lower
from tests.unit.autoschedule.models import conv_mlp

SAMPLES = 3


@pytest.fixture(scope="module")
def kernels():
    return lower(import_onnx(conv_mlp())).program.kernels


@pytest.mark.parametrize("threads", [1, 2])
def test_candidates_compute_the_same(kernels, threads):
    caps, rng = Capabilities.host(), random.Random(threads)
    kinds = set()
    for k in kernels:
        space = space_for(k, caps, threads)
        assert space is not None
        kinds.add(space.kind)
        program = standalone(k)
        ref = interpret(program, feeds_for(program))
        cands = [space.default] + [space.sample(rng) for _ in range(SAMPLES)]
        cands += [space.mutate(c, rng) for c in cands[1:3] if c is not None]
        for c in (c for c in cands if c is not None):
            got = run_once(k, c.schedule, threads)
            for name, want in ref.items():
                np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4,
                                           err_msg=f"{k.name} {dict(c.knobs)}")  # fmt: skip
    assert kinds == {"gemm", "loops"}


def test_gemm_space_varies_the_plan_and_refuses_bad_knobs(kernels):
    caps = Capabilities.host()
    space = space_for(kernels[0], caps, 1)
    assert isinstance(space, GemmSpace)
    rng = random.Random(0)
    seen = {c.key for c in (space.sample(rng) for _ in range(30)) if c is not None}
    assert len(seen) > 10  # a space, not a point
    knobs = dict(space.default.knobs)
    with pytest.raises(PlanError):
        plan_from(space.c, caps, knobs | {"mc": knobs["mr"] * 2 + 1})  # not whole strips
    with pytest.raises(PlanError):
        plan_from(space.c, caps, knobs | {"nr": caps.vector_width * 5})  # no such tile
    assert space.candidate(knobs | {"unroll": 3}) is None


def test_loop_space_offers_parallel_granularity_with_threads(kernels):
    caps = Capabilities.host()
    one, two = LoopSpace(kernels[1], caps, 1), LoopSpace(kernels[1], caps, 2)
    assert all(dict(c.knobs)["par"] == 0 for c in one.candidates)
    assert {dict(c.knobs)["par"] for c in two.candidates} > {0}
    assert two.size > one.size


def test_boosted_trees_learn_a_threshold():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 10, (40, 3))
    y = 2.0 * (x[:, 0] > 5) + 0.5 * (x[:, 2] > 2)
    model = BoostedTrees().fit(x, y)
    test = rng.uniform(0, 10, (100, 3))
    want = 2.0 * (test[:, 0] > 5) + 0.5 * (test[:, 2] > 2)
    assert np.corrcoef(model.predict(test), want)[0, 1] > 0.9
    assert np.argsort(model.predict(test))[0] in np.flatnonzero(want == want.min())


def test_gemm_space_offers_the_direct_conv(kernels):
    """The conv's space has the direct blocked-channel region (``direct=1``, a register tile):
    its candidates compute what the kernel computes, mutate within the registers, have the
    GEMM candidates' feature length, and ``valid`` refuses a tile that does not fit."""
    from eqsat.autoschedule.space import valid
    from eqsat.lower.schedule import Annotate, Tensorize
    from eqsat.lower.transform import ScheduleError

    caps, rng = Capabilities.host(), random.Random(1)
    k = kernels[0]
    space = space_for(k, caps, 1)
    assert space.direct is not None
    direct = [c for c in (space.sample(rng) for _ in range(30))
              if c is not None and dict(c.knobs).get("direct")]
    assert len({c.key for c in direct}) > 2
    program = standalone(k)
    ref = interpret(program, feeds_for(program))
    for c in direct[:2] + [space.mutate(direct[0], random.Random(5))]:
        if c is None:
            continue
        assert len(space.features(c)) == len(space.features(space.default))
        got = run_once(k, c.schedule, 1)
        for name, want in ref.items():
            np.testing.assert_allclose(got[name], want, rtol=1e-4, atol=1e-4)
    assert space.candidate({"direct": 1, "tw": 10, "ob": 3}) is None  # 30 accumulators
    root = k.body.var
    with pytest.raises(ValueError):
        valid(k, (Tensorize(root, "nchwc"), Annotate(root, "dconv.tile", "tw=9,ob=4")))
    with pytest.raises(ScheduleError):
        valid(kernels[1], (Tensorize(kernels[1].body.var, "nchwc"),))
