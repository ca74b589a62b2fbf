"""Direct NCHW[x]c convolution (lower/conv_direct.py, backends/llvm/direct_conv.py): which convs
the matcher accepts and what it reads off them; every accepted form (stride, padding,
dilation, channel counts not multiples of the block, odd sizes, a batch, fused BN / residual /
ReLU epilogues) compiled ``tensorize=nchwc`` equals interpret() at 1 and 2 threads; the tile
annotation; the default schedule's choice."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.direct_conv import TILE_KEY, tile
from eqsat.backends.llvm.runtime import compile as llvm_compile
from eqsat.lower.contraction import match_contraction, tensorized
from eqsat.lower.conv_direct import match_direct_conv, prefer_direct
from eqsat.lower.interpret import interpret
from eqsat.lower.schedule import Annotate, Tensorize, apply
from eqsat.lower.schedule_gemm import tensorize_contractions

from ..lower.contraction_models import CASES, conv

rng = np.random.default_rng(11)


def _direct(p):
    """(the conv kernel's DirectConv or None, ...) for every contraction kernel of ``p``."""
    return [match_direct_conv(c) for k in p.kernels if (c := match_contraction(k)) is not None]


def _nchwc(p, extra=()):
    kernels = []
    for k in p.kernels:
        c = match_contraction(k)
        if c is not None and match_direct_conv(c) is not None:
            k = apply(k, (Tensorize(k.body.var, "nchwc"), *(Annotate(k.body.var, key, v)
                                                           for key, v in extra)))
        kernels.append(k)
    return dataclasses.replace(p, kernels=tuple(kernels))


def _check(p, weights, threads=1, extra=()):
    t = _nchwc(p, extra)
    assert any(tensorized(k) == "nchwc" for k in t.kernels)
    compiled = llvm_compile(t, threads=threads, use_cache=False)
    feeds = dict(weights)
    for b in p.inputs:
        feeds[b.name] = rng.standard_normal(b.shape).astype(np.float32)
    want, got = interpret(p, feeds), compiled.run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


def test_match_reads_the_attributes():
    (d,) = _direct(conv(ci=8, co=33, hw=17, stride=2, pad=1)[0])
    assert (d.ic, d.oc, d.h, d.wd, d.kh, d.kw, d.oh, d.ow) == (8, 33, 17, 17, 3, 3, 9, 9)
    assert (d.stride, d.pad, d.dilation) == ((2, 2), (1, 1), (1, 1))
    assert d.padded_hw() == (19, 19)
    (d,) = _direct(conv(dilation=2, pad=2, hw=13)[0])
    assert (d.stride, d.pad, d.dilation, d.oh) == ((1, 1), (2, 2), (2, 2), 13)


@pytest.mark.parametrize("name", ["matmul", "attention", "conv_grouped", "concat_conv1x1"])
def test_match_refuses(name):
    """Not a plain conv (no window), grouped, or the input read through a view (a Concat)."""
    assert _direct(CASES[name]()[0]) == [None]


CONVS = {
    "pad_bn_residual": dict(pad=1, bn=True, residual=True),
    "stride2_odd_oc": dict(stride=2, pad=1, hw=17, co=33),
    "dilated": dict(dilation=2, pad=2, hw=13, relu=False),
    "1x1": dict(kernel=1, ci=16, co=7, hw=13),
    "odd_channels_batch": dict(ci=37, co=70, hw=15, pad=1, batch=2),
    "nopad_5x5": dict(ci=20, co=40, hw=11, kernel=5),
    # rows of whole vectors (2 on AVX-512), channels not: the transposing epilogue
    "whole_rows_residual": dict(ci=16, co=40, hw=32, pad=1, bn=True, residual=True),
}


@pytest.mark.parametrize("name", sorted(CONVS))
def test_direct_equals_interpret(name):
    _check(*conv(**CONVS[name]))


@pytest.mark.parametrize("name", ["pad_bn_residual", "odd_channels_batch",
                                  "whole_rows_residual"])
def test_direct_two_threads(name):
    _check(*conv(**CONVS[name]), threads=2)


@pytest.mark.parametrize("spec", ["tw=1,ob=1", "tw=5,ob=2", "tw=7,ob=4"])
def test_tile_annotation(spec):
    """Any tile the registers hold computes the same (tails of columns and channel blocks)."""
    p, w = conv(ci=19, co=70, hw=13, pad=1, bn=True)
    _check(p, w, extra=((TILE_KEY, spec),))


def test_tile_default_and_refusal():
    caps = Capabilities.host()
    (d,) = _direct(conv(ci=8, co=4 * caps.vector_width, hw=9, pad=1)[0])
    ob = 3 if caps.registers >= 32 else 2
    assert tile(d, caps) == (5, ob)  # 9 columns as 5 + 4
    with pytest.raises(ValueError, match="registers"):
        tile(d, caps, "tw=10,ob=4")
    with pytest.raises(ValueError, match="bad"):
        tile(d, caps, "tw=10")


def test_default_schedule_choice():
    """The direct path where it measured faster (a window, >= 16 channels in and out), the
    implicit GEMM for few channels and for 1x1."""
    big = conv(ci=64, co=64, hw=8, pad=1)[0]
    few = conv(ci=3, co=64, hw=8, pad=1)[0]  # an RGB stem
    one = conv(ci=64, co=64, hw=8, kernel=1)[0]
    assert prefer_direct(_direct(big)[0]) and not prefer_direct(_direct(few)[0])
    assert not prefer_direct(_direct(one)[0])
    picks = [tensorized(k) for p in (big, few, one)
             for k in tensorize_contractions(p, min_macs=0).kernels if tensorized(k)]
    assert picks == ["nchwc", "gemm", "gemm"]
