"""Arithmetic precisions of compiled contractions, and the verification gate's tolerance at each.

Consumes a precision name (``--precision``) and a contraction's reduction length K; produces the
gate's ``(rtol, atol)``; the precisions and their unit roundoffs are
:data:`eqsat.lower.gpu_mma.PRECISIONS` (the GPU scheduler's), the pipeline reads the
tolerances.

``fp32`` computes in float32 as written (the default; the CPU backend's only precision). The
others round the *operands* of a tensor-core product and accumulate in float32 (NVIDIA's
``mma.sync``): ``tf32`` keeps 10 fraction bits (8 exponent bits), ``fp16`` 10 fraction bits
(5 exponent bits: overflow above 65504), ``bf16`` 7 fraction bits (8 exponent bits).

Why the tolerance is what it is. Rounding each operand to nearest with unit roundoff ``u``
(2^-11 for tf32 and fp16, 2^-8 for bf16) gives each product ``a*b`` a relative error of at most
``2u + u²``; the float32 accumulation of K terms adds at most ``K * 2^-24`` relative to the
sum of |products| (Higham's bound, :func:`worst_case`). That bound is rigorous but measures
error against ``Σ|a*b|``, which the gate, comparing element-wise as ``|x - r| <= atol +
rtol*|r|``, does not have. With independent roundings the product errors add like a random
walk: of the order ``2u * sqrt(K)`` times the products' scale, where the result itself is of
the order ``sqrt(K)`` times that scale (zero-mean operands). Hence:

- ``rtol = max(DEFAULT_RTOL, 4 * 2u)``: four standard deviations of the error relative to a
  result of typical size;
- ``atol = max(DEFAULT_ATOL, 4 * 2u * sqrt(K))``: the same error for a result near zero
  (cancellation), assuming products of unit scale, as the gate's random inputs (standard
  normal) give the first contraction of a model; a deeper one whose products are far larger
  than 1 would need more, and the report prints the tolerances so a reader can judge.

``fp32`` keeps the gate's defaults (the operands are not rounded). A test checks both the
rigorous bound and these tolerances on a numpy emulation of the tensor-core tile kernel.
"""

from __future__ import annotations

import math

from eqsat.lower.gpu_mma import PRECISIONS
from eqsat.verify.numeric import DEFAULT_ATOL, DEFAULT_RTOL

ACCUMULATE_U = 2.0**-24  # the float32 accumulator's unit roundoff


def worst_case(precision: str, k: int) -> float:
    """Higham's bound on ``|computed - exact| / Σ|a*b|`` for a K-term product."""
    u = PRECISIONS[precision]
    return 2 * u + u * u + k * ACCUMULATE_U


def tolerance(precision: str, k: int) -> tuple[float, float]:
    """The gate's ``(rtol, atol)`` for contractions of K terms at ``precision`` (module doc)."""
    u = PRECISIONS[precision]
    if u == 0.0:
        return DEFAULT_RTOL, DEFAULT_ATOL
    return max(DEFAULT_RTOL, 8 * u), max(DEFAULT_ATOL, 8 * u * math.sqrt(k))
