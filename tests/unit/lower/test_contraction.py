"""Contraction recognition (eqsat.lower.contraction) on lowered graphs of every form, and the
gemm schedule (eqsat.lower.schedule_gemm): annotated kernels still equal the oracle."""

from __future__ import annotations

import numpy as np
import pytest

from eqsat.lower.contraction import const_extent, match_contraction
from eqsat.lower.interpret import interpret
from eqsat.lower.schedule_gemm import tensorize_contractions

from .contraction_models import (
    CASES,
    attention,
    conv,
    force_tensorize,
    gemm_transb,
    matmul,
    softmax_and_pool,
)


def _only(program):
    found = [c for k in program.kernels if (c := match_contraction(k)) is not None]
    assert len(found) == 1
    return found[0]


def _sizes(c):
    return tuple(const_extent(ax) for ax in (c.batch, c.m, c.n, c.k))


def test_matmul_axes():
    c = _only(matmul(17, 33, 13)[0])
    assert _sizes(c) == (1, 17, 33, 13)
    assert {b.name for b in c.loads("a")} == {"x"} and {b.name for b in c.loads("b")} == {"w"}


def test_attention_batched_transposed():
    c = _only(attention(b=2, h=3, s=7, d=5)[0])
    assert _sizes(c) == (6, 7, 7, 5)  # batch = (b, head), K = head dim


def test_gemm_transb():
    c = _only(gemm_transb(9, 17, 33)[0])
    assert _sizes(c) == (1, 9, 17, 33)


@pytest.mark.parametrize("kw, sizes", [
    (dict(kernel=1, ci=16, co=7, hw=13), (1, 7, 169, 16)),
    (dict(pad=1), (1, 12, 81, 72)),
    (dict(stride=2, pad=1, hw=17, co=33), (1, 33, 81, 72)),
    (dict(group=4, pad=1), (4, 3, 81, 18)),  # batch = group, M = channels of a group
    (dict(dilation=2, pad=2, hw=13), (1, 12, 169, 72)),
])
def test_conv_axes(kw, sizes):
    c = _only(conv(**kw)[0])
    assert _sizes(c) == sizes
    assert {b.name for b in c.loads("a")} == {"w"}  # the weights are the A operand


def test_not_contractions():
    p, _ = softmax_and_pool()
    assert all(match_contraction(k) is None for k in p.kernels)
    assert tensorize_contractions(p) == p


def test_default_schedule_thresholds():
    assert tensorize_contractions(matmul(64, 64, 64)[0]) != matmul(64, 64, 64)[0]
    small = attention(b=1, h=1, s=7, d=5)[0]  # N = 7: stays plain loops
    assert tensorize_contractions(small) == small


@pytest.mark.parametrize("name", sorted(CASES))
def test_schedule_keeps_results(name):
    p, weights = CASES[name]()
    t = force_tensorize(p)
    assert t != p
    rng = np.random.default_rng(1)
    feeds = dict(weights)
    for b in p.inputs:
        feeds[b.name] = rng.standard_normal(b.shape).astype(np.float32)
    want, got = interpret(p, feeds), interpret(t, feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
