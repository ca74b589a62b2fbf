"""The generated SGEMM equals numpy on many shapes, packed or not, with epilogues and threads."""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eqsat.backends.llvm.gemm import Gemm, GemmConfig
from eqsat.backends.llvm.microkernel import Epilogue

SHAPES = [(1, 1, 1), (7, 13, 5), (96, 256, 257), (300, 130, 70), (13, 1, 33), (2, 515, 3),
          (64, 64, 64), (50, 300, 17)]


def _mats(m, k, n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((m, k), dtype=np.float32),
            rng.standard_normal((k, n), dtype=np.float32))


def _close(got, want, k):
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.sqrt(k) * 10)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("prepack", [False, True])
def test_gemm_matches_numpy(gemm, shape, prepack):
    m, k, n = shape
    a, b = _mats(m, k, n)
    _close(gemm(a, gemm.pack_b(b) if prepack else b), a @ b, k)


@pytest.mark.parametrize("shape", SHAPES)
def test_bias_relu_two_threads(gemm_bias_relu, shape):
    m, k, n = shape
    a, b = _mats(m, k, n, seed=1)
    bias = np.linspace(-1, 1, n, dtype=np.float32)
    want = np.maximum(a @ b + bias, 0)
    _close(gemm_bias_relu(a, b, bias=bias, threads=2), want, k)
    _close(gemm_bias_relu(a, gemm_bias_relu.pack_b(b), bias=bias, threads=1), want, k)


@pytest.mark.parametrize("shape", SHAPES)
def test_accumulate_small_blocks(gemm_small_blocks, shape):
    m, k, n = shape
    a, b = _mats(m, k, n, seed=2)
    c = np.arange(m * n, dtype=np.float32).reshape(m, n) / (m * n)
    want = c + a @ b
    _close(gemm_small_blocks(a, b, out=c), want, k)


def test_strided_operands(gemm):
    big_a, big_b = _mats(40, 50, 60, seed=3)
    a, b = big_a[3:30, 5:42], big_b[5:42, 7:50]  # row strides 50 and 60
    out_big = np.full((40, 60), 7.0, dtype=np.float32)
    out = out_big[2:29, 4:47]
    gemm(a, b, out=out)
    _close(out, a @ b, 37)
    mask = np.ones_like(out_big, dtype=bool)
    mask[2:29, 4:47] = False
    assert (out_big[mask] == 7.0).all()  # nothing written outside the view


@pytest.mark.parametrize("threads", [1, 2])
def test_small_m_splits_columns(gemm_bias_relu, threads):
    a, b = _mats(3, 70, 1000, seed=4)
    bias = np.zeros(1000, dtype=np.float32)
    _close(gemm_bias_relu(a, b, bias=bias, threads=threads), np.maximum(a @ b, 0), 70)


def test_relu_keeps_nan(gemm_bias_relu):
    a = np.array([[np.nan, 0.0], [1.0, -1.0]], dtype=np.float32)
    b = np.eye(2, dtype=np.float32)
    got = gemm_bias_relu(a, b, bias=np.zeros(2, dtype=np.float32))
    assert np.isnan(got[0, 0]) and np.isnan(got[0, 1])  # nan * 0 = nan, as numpy
    np.testing.assert_array_equal(got[1], [1.0, 0.0])


def test_vector_fn_hook_and_avx2_on_wider_host(caps):
    def double(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
        return b.fadd(x, x)

    width = min(8, caps.vector_width)
    narrow = caps.with_vector_width(width)
    cfg = GemmConfig.for_caps(narrow, epilogue=Epilogue(vector_fn=double, name="x2"),
                              name="g8")
    g = Gemm(cfg, caps=narrow, threads=1, use_cache=False)
    assert g.cfg.vw == width
    a, b = _mats(33, 40, 45, seed=5)
    _close(g(a, b), 2 * (a @ b), 40)


def test_object_cache_gives_same_kernel(caps, tmp_path):
    cfg = GemmConfig.for_caps(caps, name="gcache")
    cold = Gemm(cfg, caps=caps, threads=1, cache_dir=tmp_path)
    warm = Gemm(cfg, caps=caps, threads=1, cache_dir=tmp_path)
    assert not cold.stats.cache_hit and warm.stats.cache_hit
    a, b = _mats(20, 30, 40, seed=6)
    np.testing.assert_array_equal(cold(a, b), warm(a, b))


def test_bad_arguments(gemm, gemm_bias_relu):
    a, b = _mats(4, 5, 6)
    with pytest.raises(ValueError):
        gemm(a, b.T)
    with pytest.raises(ValueError):
        gemm_bias_relu(a, b)  # the bias is fused: it must be passed
    assert gemm(np.zeros((0, 5), np.float32), b).shape == (0, 6)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(1, 70), st.booleans())
def test_hypothesis_shapes(gemm_small_blocks, gemm, m, k, n, small):
    a, b = _mats(m, k, n, seed=m * 10007 + k * 101 + n)
    if small:
        c = np.zeros((m, n), dtype=np.float32)
        _close(gemm_small_blocks(a, b, out=c, threads=2), a @ b, k)
    else:
        _close(gemm(a, b), a @ b, k)
