"""The lowering facet of the op table: one compute definition per op, keyed by the op's name.

Consumes a TensorGraph node (its op record's attributes with defaults, its input *views*, input
types and the values of constant inputs); produces, per output, either

- a :class:`View`: ``out[idx] = at(idx)``, an expression over loads of the inputs at index
  expressions (element-wise ops, and the injective ops as pure index arithmetic: transposes,
  reshapes, slices, concats, broadcasts, gathers), or
- a :class:`Reduction`: stages that reduce into scalars per output *row* (loops over ``rows``),
  then a final per-element value (MatMul/Gemm/Conv/pools are one stage; Softmax and
  LayerNormalization several stages in one kernel).

This is TVM's tensor-expression idea: a view is a ``compute`` lambda, so inlining a producer
into its consumer (``compute_inline``) is just calling the producer's ``at`` with the
consumer's index expressions; :mod:`eqsat.lower.lower` decides which values become buffers.

The table is assembled from six families: :mod:`~eqsat.lower.compute_ew` (the scalar-function
table; one shared broadcasting builder), :mod:`~eqsat.lower.compute_views` (injective ops),
:mod:`~eqsat.lower.compute_reduce` (reductions, contractions, windows),
:mod:`~eqsat.lower.compute_norm` (Softmax and the normalizations) and
:mod:`~eqsat.lower.compute_quant` (the quantized ops of ``opdefs.quant``) and
:mod:`~eqsat.lower.compute_resize` (Resize's weighted taps). Which family an op falls
in follows its record's ``kind``; a test checks that they agree. :data:`CLAIMED` is derived
from the table: the ops the compiler claims to lower; SOURCE ops (Shape, Constant, Range, ...)
are left unclaimed on purpose because constant folding removes them, and a shape computation
that survives (a symbolic batch) only feeds shape arguments that lowering never reads; the
exceptions are ConstantOfShape and Range ("fills": their values are data, e.g. an anchor grid,
while their shape may be computed at run time from a symbolic image size).
"""

from __future__ import annotations

from collections.abc import Mapping

from eqsat.lower import (
    compute_ew,
    compute_norm,
    compute_quant,
    compute_reduce,
    compute_resize,
    compute_views,
)
from eqsat.lower.compute_base import (
    Compute,
    Ctx,
    Reduction,
    Stage,
    Unsupported,
    View,
)

__all__ = ["COMPUTE", "CLAIMED", "Compute", "Ctx", "Reduction", "Stage", "Unsupported", "View"]


def _assemble() -> dict[str, Compute]:
    table: dict[str, Compute] = {}
    families = (
        compute_ew.TABLE,
        compute_views.TABLE,
        compute_reduce.TABLE,
        compute_norm.TABLE,
        compute_quant.TABLE,
        compute_resize.TABLE,
    )
    for fam in families:
        for name, c in fam.items():
            if name in table:
                raise RuntimeError(f"op {name} has two compute definitions")
            table[name] = c
    return dict(sorted(table.items()))


COMPUTE: Mapping[str, Compute] = _assemble()
CLAIMED: frozenset[str] = frozenset(COMPUTE)


def describe(op: str) -> str:
    """What lowering has for ``op`` ("" when nothing), for the coverage matrix."""
    c = COMPUTE.get(op)
    return "" if c is None else c.what
