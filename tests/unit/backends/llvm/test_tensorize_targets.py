"""Every row of the tensorize-target table, forced, computes a GEMM right where the host has its
CPU features (and skips, naming what is missing, where not): the float32 FMA rows through the
generated SGEMM (each of their tiles), the int8 VNNI rows through :class:`Int8Gemm`, exactly,
for every signedness ONNX allows, with zero points, and with ``vpdpbusd`` in the assembly."""

from __future__ import annotations

import numpy as np
import pytest

from eqsat.backends.llvm import jit, vnni
from eqsat.backends.llvm.gemm import Gemm, GemmConfig
from eqsat.backends.llvm.tensorize_targets import TARGETS, available, select


def _caps_for(host, target):
    missing = target.missing(host)  # the host's features, and lanes beyond its vector width
    if missing:
        pytest.skip(f"{target.name}: host lacks {', '.join(missing)}")
    return host.with_vector_width(target.lanes)


def test_float_selection_reads_the_table(caps):
    t = select(caps, ("float32", "float32"))
    assert t is not None and caps.gemm_tiles() == t.tiles and caps.gemm_tile() == t.tile
    assert all(x.runs_on(caps) for x in available(caps))
    if caps.has("avx512f"):  # the tiles measured on AVX-512 / AVX2 (capabilities docstring)
        assert caps.gemm_tiles() == ((12, 32), (8, 48))
        assert caps.with_vector_width(8).gemm_tiles() == ((6, 16),)


FLOAT = [pytest.param(t, id=t.name) for t in TARGETS if t.emitter == "microkernel"]
INT8 = [pytest.param(t, id=t.name) for t in TARGETS if t.emitter == "vnni"]


@pytest.mark.parametrize("target", FLOAT)
def test_float_target_gemm(caps, target):
    c = _caps_for(caps, target)
    assert select(c, ("float32", "float32")) == target
    rng = np.random.default_rng(1)
    a = rng.standard_normal((37, 45)).astype(np.float32)
    b = rng.standard_normal((45, 70)).astype(np.float32)
    for mr, nr in target.tiles:
        cfg = GemmConfig.for_caps(c, mr=mr, nr=nr, mc=4 * mr, nc=8 * nr, name=f"t{mr}x{nr}")
        g = Gemm(cfg, caps=c, threads=1, use_cache=False)
        np.testing.assert_allclose(g(a, b), a @ b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("target", INT8)
@pytest.mark.parametrize(
    ("adt", "bdt"), [("uint8", "int8"), ("int8", "int8"), ("uint8", "uint8"), ("int8", "uint8")]
)
def test_vnni_target_gemm(caps, target, adt, bdt):
    c = _caps_for(caps, target)
    rng = np.random.default_rng(2)

    def rand(dt, shape):
        info = np.iinfo(dt)
        return rng.integers(info.min, info.max + 1, shape).astype(dt)

    for m, k, n in [(5, 7, 3), (37, 70, 45), (16, 128, 64)]:
        a, b = rand(adt, (m, k)), rand(bdt, (k, n))
        za, zb = rand(adt, (m,)), rand(bdt, (n,))  # per row of A, per column of B
        g = vnni.Int8Gemm(b, zb, target=target, caps=c, use_cache=False)
        want = (a.astype(np.int64) - za[:, None]) @ (b.astype(np.int64) - zb)
        np.testing.assert_array_equal(g(a, za), want.astype(np.int32))
        np.testing.assert_array_equal(
            vnni.Int8Gemm(b, target=target, caps=c, use_cache=False)(a),
            (a.astype(np.int64) @ b.astype(np.int64)).astype(np.int32),
        )


@pytest.mark.parametrize("target", INT8)
def test_vnni_target_emits_vpdpbusd(caps, target):
    c = _caps_for(caps, target)
    asm = jit.assembly(vnni.build_module(target, c), caps=c)
    assert "vpdpbusd" in asm
