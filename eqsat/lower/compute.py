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

The table is assembled from four families: :mod:`~eqsat.lower.compute_ew` (the scalar-function
table; one shared broadcasting builder), :mod:`~eqsat.lower.compute_views` (injective ops),
:mod:`~eqsat.lower.compute_reduce` (reductions, contractions, windows) and
:mod:`~eqsat.lower.compute_norm` (Softmax and the normalizations). Which family an op falls
in follows its record's ``kind``; a test checks that they agree. :data:`CLAIMED` is derived
from the table: the ops the compiler claims to lower; SOURCE ops (Shape, Constant, Range, ...)
are left unclaimed on purpose because constant folding removes them, and a shape computation
that survives (a symbolic batch) only feeds shape arguments that lowering never reads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from eqsat.egraph.ir import Node, TensorType
from eqsat.egraph.opdefs.base import AttrValue
from eqsat.lower.loops import Expr, ReduceOp, Var

Index = tuple[Expr, ...]


class Unsupported(ValueError):
    """A claimed op used with an attribute variant or input its compute definition lacks."""


@dataclass(frozen=True)
class View:
    """A value as a function of its index: ``at(idx)`` is the element at ``idx``."""

    type: TensorType
    at: Callable[[Index], Expr]

    @property
    def shape(self):
        return self.type.shape

    @property
    def dtype(self) -> str:
        return self.type.dtype


@dataclass(frozen=True)
class Stage:
    """``name = op over vars in extents of body(row, vars, earlier stages)``, per output row.

    ``row`` is the output index with the non-row axes set to ``None``."""

    name: str
    op: ReduceOp
    dtype: str
    vars: tuple[str, ...]
    extents: tuple[Expr, ...]
    body: Callable[[tuple, tuple[Var, ...], Mapping[str, Expr]], Expr]
    init: float | int | bool | None = None  # None: the op's identity

    @property
    def init_value(self):
        return self.op.identity(self.dtype) if self.init is None else self.init


@dataclass(frozen=True)
class Reduction:
    """Output loops over ``rows`` (output axes), the stages in order inside them, then loops
    over the remaining axes storing ``final(idx, stage values)``."""

    out: TensorType
    rows: tuple[int, ...]
    stages: tuple[Stage, ...]
    final: Callable[[Index, Mapping[str, Expr]], Expr]


@dataclass
class Ctx:
    """What a compute definition sees of its node."""

    node: Node
    attrs: dict[str, AttrValue]
    ins: Sequence[View | None]  # None: omitted, or not a data input
    in_types: Sequence[TensorType | None]
    consts: Sequence[np.ndarray | None]  # known values of constant inputs
    out_types: Sequence[TensorType]
    # Registers a weight computed at compile time (e.g. BatchNormalization's folded scale and
    # shift) and returns its view; lowering names, dedups and declares it.
    pack: Callable[[str, np.ndarray], View] | None = None

    def a(self, name: str, default=None):
        v = self.attrs.get(name)
        return default if v is None else v

    def has(self, i: int) -> bool:
        return i < len(self.in_types) and self.in_types[i] is not None

    def x(self, i: int) -> View:
        v = self.ins[i] if i < len(self.ins) else None
        if v is None:
            raise Unsupported(f"{self.node.op}: input {i} is required")
        return v

    def const(self, i: int, what: str) -> np.ndarray:
        v = self.consts[i] if i < len(self.consts) else None
        if v is None:
            raise Unsupported(f"{self.node.op}: {what} (input {i}) must be a constant")
        return v

    @property
    def out(self) -> TensorType:
        return self.out_types[0]


Build = Callable[[Ctx], "list[View] | Reduction"]


@dataclass(frozen=True)
class Compute:
    """One op's compute definition. ``what`` names its family for the coverage matrix;
    ``data`` lists the inputs read element by element (the others are shape-like arguments that
    must be constants, or are not read at all); ``outputs`` how many outputs it computes (any
    further output must be unused)."""

    what: str
    build: Build
    data: tuple[int, ...] | None = None  # None: every input
    outputs: int = 1
    notes: str = field(default="", compare=False)

    def is_data(self, i: int) -> bool:
        return self.data is None or i in self.data


def _assemble() -> dict[str, Compute]:
    from eqsat.lower import compute_ew, compute_norm, compute_reduce, compute_views

    table: dict[str, Compute] = {}
    for fam in (compute_ew.TABLE, compute_views.TABLE, compute_reduce.TABLE, compute_norm.TABLE):
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
