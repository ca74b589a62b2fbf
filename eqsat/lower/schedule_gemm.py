"""The default schedule of contraction kernels: tensorize them onto the GEMM micro-kernel.

Consumes a LoopProgram (as :func:`eqsat.lower.lower.lower` produces it, or already scheduled);
produces the same program with ``Tensorize(<root loop>, "gemm")`` applied (the primitive of
:mod:`eqsat.lower.schedule`; ``"nchwc"`` instead for a convolution the direct blocked-channel
path runs faster, :func:`intrinsic`) to every kernel that :func:`eqsat.lower.contraction.
match_contraction` recognizes and that is worth it: :func:`worth_gemm`. The LLVM backend
honours the annotation (:mod:`eqsat.backends.llvm.tensorize`); a kernel without it compiles as
plain loops, and the interpreter ignores it (so the scheduled program still equals the oracle).

Why these thresholds: packing and the micro-kernel's fixed costs need some reuse. Every
product with ``N ≥ 8`` and ``K ≥ 4`` and at least 2^15 multiply-adds goes to the GEMM, M = 1
included (the micro-kernel then has one row: a matrix-vector product over packed panels, which
keeps the weights in the vector-friendly panel layout); a reduction of ``x * x`` (RMS norm,
M = N = 1) stays a plain loop. Unknown (symbolic) extents count as 64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from eqsat.lower.contraction import Contraction, const_extent, match_contraction
from eqsat.lower.conv_direct import match_direct_conv, prefer_direct
from eqsat.lower.loops import For, LoopProgram
from eqsat.lower.schedule import Schedule, Tensorize, apply

MIN_MACS = 1 << 15
UNKNOWN = 64


def _size(axes) -> int:
    n = const_extent(axes)
    return UNKNOWN if n is None else n


def worth_gemm(c: Contraction, min_macs: int = MIN_MACS) -> bool:
    m, n, k, nb = _size(c.m), _size(c.n), _size(c.k), _size(c.batch)
    return n >= 8 and k >= 4 and m * n * k * nb >= min_macs


def intrinsic(c: Contraction) -> str:
    """``nchwc`` (the direct convolution in blocked channels) where ``conv_direct.prefer_direct``
    measured it faster, else ``gemm``."""
    d = match_direct_conv(c)
    return "nchwc" if d is not None and prefer_direct(d) else "gemm"


def tensorize_contractions(
    program: LoopProgram, min_macs: int = MIN_MACS, chosen: Mapping[str, Schedule] | None = None
) -> LoopProgram:
    """``program`` with every worthwhile contraction kernel annotated ``tensorize=gemm``
    (``min_macs=0``: every contraction, as the tests do on small models). ``chosen``: schedules
    by kernel name (a tuning log's, :mod:`eqsat.autoschedule`) replayed instead, for the
    contractions it names."""
    kernels = []
    for k in program.kernels:
        c = match_contraction(k)
        if chosen and k.name in chosen and c is not None:
            k = apply(k, chosen[k.name])
        elif c is not None and isinstance(k.body, For) and worth_gemm(c, min_macs):
            k = apply(k, (Tensorize(k.body.var, intrinsic(c)),))
        kernels.append(k)
    return dataclasses.replace(program, kernels=tuple(kernels))
