"""Capabilities: detected from llvmlite, cached, with a stable cache key."""

from __future__ import annotations

import os

import pytest

from eqsat.backends.llvm.capabilities import Capabilities


def test_host_detected(caps):
    assert caps.cpu_name
    assert caps.triple.startswith(("x86_64", "aarch64", "arm64"))
    assert caps.vector_width in (4, 8, 16)
    if caps.has("avx512f"):
        assert caps.vector_width == 16
    elif caps.has("avx2"):
        assert caps.vector_width == 8
    assert caps.has_fma == caps.has("fma")
    assert caps.cores == len(os.sched_getaffinity(0))
    assert Capabilities.host() is caps  # cached


def test_key_stable_and_distinct(caps):
    again = Capabilities.detect()
    assert again == caps and again.key() == caps.key()
    assert len(caps.key()) == 32 and int(caps.key(), 16) >= 0
    if caps.vector_width > 4:
        narrow = caps.with_vector_width(caps.vector_width // 2)
        assert narrow.key() != caps.key()
    with pytest.raises(ValueError):
        caps.with_vector_width(2 * caps.vector_width)


@pytest.mark.parametrize("width", [4, 8, 16])
def test_gemm_tile_fits_registers(caps, width):
    if width > caps.vector_width:
        pytest.skip("host vectors are narrower")
    c = caps.with_vector_width(width)
    mr, nr = c.gemm_tile()
    assert nr % width == 0
    assert mr * (nr // width) + nr // width + 1 <= c.registers  # accumulators + B + broadcast
