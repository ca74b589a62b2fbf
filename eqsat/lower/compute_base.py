"""The types of the lowering facet: what a compute definition receives and returns.

Consumes nothing; :mod:`eqsat.lower.compute` (the table keyed by op name) and its four families
(``compute_ew``, ``compute_views``, ``compute_reduce``, ``compute_norm``) build on these types,
which live apart from the table so that the families can import them without importing the
table that imports them (an import cycle). The shared scalar helpers of the reduction families
(accumulation dtype, casts, element counts) are here too, public.
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


# a build returns one view per named output, or a reduction (one output), or one reduction per
# named output (LayerNormalization with its statistics: each becomes its own kernel)
Build = Callable[[Ctx], "list[View] | Reduction | list[Reduction]"]


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
