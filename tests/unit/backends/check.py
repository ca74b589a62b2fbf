"""Shared by the backend tests: compile with the LLVM backend, run, compare with interpret()."""

from __future__ import annotations

import numpy as np

from eqsat.backends.llvm.runtime import compile
from eqsat.lower.interpret import interpret
from eqsat.lower.loops import LoopProgram

rng = np.random.default_rng(11)


def random_feeds(p: LoopProgram, sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    sizes = sizes or {}
    out = {}
    for b in p.inputs + p.weights:
        shape = tuple(sizes[d] if isinstance(d, str) else d for d in b.shape)
        out[b.name] = rng.standard_normal(shape).astype(b.dtype)
    return out


def check(p: LoopProgram, feeds=None, sizes=None, threads=1, rtol=1e-5, atol=1e-6):
    """LLVM results equal interpret()'s; returns the compiled program and its results."""
    feeds = random_feeds(p, sizes) if feeds is None else feeds
    compiled = compile(p, threads=threads)
    got = compiled.run(feeds, sizes)
    want = interpret(p, feeds, sizes)
    assert set(got) == set(want)
    for name, w in want.items():
        assert got[name].dtype == w.dtype and got[name].shape == w.shape
        np.testing.assert_allclose(got[name], w, rtol=rtol, atol=atol, equal_nan=True)
    return compiled, got
