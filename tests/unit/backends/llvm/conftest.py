"""Shared fixtures: compiled GEMMs are module-scoped (each compile is ~0.1-0.3 s) and never use
the user's object cache (``use_cache=False`` or a temporary folder)."""

from __future__ import annotations

import pytest

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.gemm import Gemm, GemmConfig
from eqsat.backends.llvm.microkernel import Epilogue


@pytest.fixture(scope="session")
def caps() -> Capabilities:
    return Capabilities.host()


@pytest.fixture(scope="session")
def gemm(caps) -> Gemm:
    return Gemm(GemmConfig.for_caps(caps), caps=caps, threads=1, use_cache=False)


@pytest.fixture(scope="session")
def gemm_bias_relu(caps) -> Gemm:
    cfg = GemmConfig.for_caps(caps, epilogue=Epilogue(bias=True, relu=True), name="gbr")
    return Gemm(cfg, caps=caps, threads=2, use_cache=False, min_parallel_flop=0)


@pytest.fixture(scope="session")
def gemm_small_blocks(caps) -> Gemm:
    """Tiny KC/MC/NC so that the small test shapes cross every blocking loop, accumulating."""
    mr, nr = caps.gemm_tile()
    cfg = GemmConfig.for_caps(caps, kc=5, mc=2 * mr, nc=2 * nr, accumulate=True, name="gsb")
    return Gemm(cfg, caps=caps, threads=2, use_cache=False, min_parallel_flop=0)
