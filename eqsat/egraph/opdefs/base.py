"""The op-record type and the shape helpers every op family shares.

An :class:`OpDef` is one row of the op table: ONNX mapping and attributes, shape inference,
numpy reference semantics, FLOP counts, its :class:`Kind` (the data-flow pattern lists such as
"the unary element-wise ops" are derived from) and the name of its egglog constructor. Facets
that belong to one later stage live in that stage, in a table keyed by the op's name (the egglog
attribute spec in :mod:`eqsat.egraph.lang`, the shape rules in :mod:`eqsat.egraph.shapes`, the Z3
semantics in :mod:`eqsat.verify.z3_ops`), the way JAX keeps ``primitive -> rule`` tables per
transformation; :mod:`eqsat.coverage` prints which op has which facet. Dims may be symbols
(``str``); helpers here do the little symbolic arithmetic that exported graphs need
(broadcasting, products for Reshape -1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from eqsat.egraph.ir import AttrValue, Dim, Shape, TensorType


class ShapeError(ValueError):
    """Shape inference failed: inputs of incompatible or unsupported shapes/values."""


@dataclass(frozen=True)
class InferCtx:
    """What shape inference may look at: input types, known constant inputs, attributes."""

    types: Sequence[TensorType | None]  # None: omitted optional input
    consts: Sequence[np.ndarray | None]  # value of an input when known at compile time
    attrs: Mapping[str, AttrValue]
    opset: int = 17

    def t(self, i: int) -> TensorType:
        if i >= len(self.types) or self.types[i] is None:
            raise ShapeError(f"input {i} is required")
        return self.types[i]  # type: ignore[return-value]

    def has(self, i: int) -> bool:
        return i < len(self.types) and self.types[i] is not None

    def const(self, i: int, what: str) -> np.ndarray:
        """The constant value of input ``i``; ShapeError if only known at run time."""
        if i >= len(self.consts) or self.consts[i] is None:
            raise ShapeError(f"{what} (input {i}) must be a constant for shape inference")
        return self.consts[i]  # type: ignore[return-value]

    def a(self, name: str, default: AttrValue | None = None):
        return self.attrs.get(name, default)


Infer = Callable[[InferCtx], list[TensorType]]
Run = Callable[[list, Mapping[str, AttrValue]], list[np.ndarray]]
Flops = Callable[[Sequence[TensorType | None], Sequence[TensorType], Mapping[str, AttrValue]], int]


def zero_flops(ins, outs, attrs) -> int:
    return 0


def per_output_element(k: int = 1) -> Flops:
    def flops(ins, outs, attrs) -> int:
        return k * sum(o.numel() for o in outs)

    return flops


class Kind(Enum):
    """How an op's output elements depend on its inputs: what fusion and lowering need, and what
    the derived op lists are read from (TVM calls this the op pattern).

    - ``ELEMENTWISE``: output element ``i`` is a function of input elements at ``i`` only
      (broadcasting included): activations, arithmetic, comparisons, casts;
    - ``INJECTIVE``: each output element is one input element (or a constant), found by index
      arithmetic: transpose, reshape, slice, concat, pad, gather, identity;
    - ``REDUCTION``: output elements combine input elements along some axes: reductions, softmax,
      layer and instance normalization, global pooling;
    - ``COMPLEX``: contractions and windows (matmul, conv, pooling) and anything else a kernel
      of its own computes; element-wise consumers can fuse into its epilogue;
    - ``SOURCE``: values that do not come from input elements (Constant, Shape, Range, ...).
    """

    ELEMENTWISE = "elementwise"
    INJECTIVE = "injective"
    REDUCTION = "reduction"
    COMPLEX = "complex"
    SOURCE = "source"

    @property
    def starts_kernel(self) -> bool:
        """Whether lowering makes a node of this kind the root of a kernel of its own
        (:mod:`eqsat.lower.fuse`, rule 1; the compiler cost model prices by the same test):
        inlined, a reduction would be recomputed per consumer element. The other kinds are
        fused into an epilogue or inlined into their consumers."""
        return self in (Kind.REDUCTION, Kind.COMPLEX)

    @property
    def rereads_inputs(self) -> bool:
        """Whether a node of this kind reads each input element many times (a contraction or
        window): an element-wise producer inlined into it would be recomputed per reuse, so
        lowering stores it (:mod:`eqsat.lower.fuse`, rule 3; the compiler cost model's fusion
        terms price that store by the same test, :func:`eqsat.extract.extraction.must_store`)."""
        return self is Kind.COMPLEX


# The kind an op of each cost category has unless its record says otherwise.
_KIND_OF_CATEGORY = {
    "elementwise": Kind.ELEMENTWISE,
    "activation": Kind.ELEMENTWISE,
    "linalg": Kind.COMPLEX,
    "conv": Kind.COMPLEX,
    "pool": Kind.COMPLEX,
    "norm": Kind.REDUCTION,
    "reduce": Kind.REDUCTION,
    "shape": Kind.INJECTIVE,
    "data": Kind.INJECTIVE,
}
CATEGORIES = tuple(_KIND_OF_CATEGORY)


@dataclass(frozen=True)
class OpDef:
    """One op of the table. ``name`` is the ONNX op type (default domain). ``category`` is the
    cost class the roofline model prices by (a GEMM reaches another peak than a pool);
    ``kind`` the data-flow pattern (:class:`Kind`), by default the category's; ``ctor`` the
    name of the op's typed egglog constructor (``Tensor.<ctor>``), empty when the op is only
    encoded as a generic node."""

    name: str
    category: str  # one of CATEGORIES
    infer: Infer
    run: Run
    flops: Flops = zero_flops
    attrs: Mapping[str, AttrValue | None] = field(default_factory=dict)  # name -> default
    inputs: tuple[int, int] = (1, 1)  # (min, max) arity; max -1 = variadic
    outputs: tuple[int, int] = (1, 1)
    # Outputs computable from input *types* alone (Shape, Size): used by constant folding when
    # the input's value is unknown but its shape is static. None when not applicable.
    static_value: Callable[[InferCtx], list[np.ndarray] | None] | None = None
    doc: str = ""
    kind: Kind | None = None  # None: the category's kind (filled in by __post_init__)
    ctor: str = ""
    # False: never evaluated at compile time, even on constant inputs. DequantizeLinear of a
    # quantized weight is the QDQ form onnxruntime fuses into integer kernels; folding it would
    # store the weight in float (4x the bytes) and lose the integer kernel.
    foldable: bool = True

    def __post_init__(self):
        if self.category not in _KIND_OF_CATEGORY:
            raise ValueError(f"op {self.name}: unknown category {self.category!r}")
        if self.kind is None:
            object.__setattr__(self, "kind", _KIND_OF_CATEGORY[self.category])


# ---------------------------------------------------------------------------- shape helpers


def norm_axis(axis: int, rank: int) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def broadcast(*shapes: Shape) -> Shape:
    """Numpy/ONNX multidirectional broadcasting over int-or-symbol dims."""
    rank = max((len(s) for s in shapes), default=0)
    out: list[Dim] = []
    for k in range(rank):
        dims = [s[len(s) - rank + k] for s in shapes if len(s) - rank + k >= 0]
        dim: Dim = 1
        for d in dims:
            if d == 1 or d == dim:
                continue
            if dim == 1:
                dim = d
            elif isinstance(d, str) and isinstance(dim, int):
                continue  # a symbol meeting a fixed size: the symbol must be that size (or 1)
            elif isinstance(dim, str) and isinstance(d, int):
                dim = d
            else:
                raise ShapeError(f"cannot broadcast shapes {[list(s) for s in shapes]}")
        out.append(dim)
    return tuple(out)


def sym_product(dims: Sequence[Dim]) -> tuple[int, tuple[str, ...]]:
    """(integer factor, sorted symbols) of a product of dims."""
    k, syms = 1, []
    for d in dims:
        if isinstance(d, int):
            k *= d
        else:
            syms.extend(d.split("*"))
    ints = [s for s in syms if s.isdigit()]
    for s in ints:
        k *= int(s)
    return k, tuple(sorted(s for s in syms if not s.isdigit()))


def sym_dim(k: int, syms: Sequence[str]) -> Dim:
    """Inverse of :func:`sym_product`: an int, a symbol, or a product written ``"batch*128"``."""
    if not syms:
        return k
    if k == 1 and len(syms) == 1:
        return syms[0]
    return "*".join(list(syms) + ([str(k)] if k != 1 else []))


def sym_divide(num: Sequence[Dim], den: Sequence[Dim]) -> Dim:
    """product(num) / product(den) where it divides exactly; ShapeError otherwise."""
    kn, sn = sym_product(num)
    kd, sd = sym_product(den)
    rest = list(sn)
    for s in sd:
        if s not in rest:
            raise ShapeError(f"cannot divide {list(num)} by {list(den)}")
        rest.remove(s)
    if kd == 0 or kn % kd:
        raise ShapeError(f"cannot divide {list(num)} by {list(den)}")
    return sym_dim(kn // kd, rest)


def ints(a) -> list[int]:
    """An attribute or constant input as a list of Python ints."""
    return [int(v) for v in np.asarray(a).reshape(-1)]


def shape_arg(a) -> list[Dim]:
    """A shape-valued input as dims: ints, or symbols where the value is only known
    symbolically (see :mod:`eqsat.egraph.const_eval`)."""
    return [v if isinstance(v, str) else int(v) for v in np.asarray(a).reshape(-1)]


def same(ctx: InferCtx) -> list[TensorType]:
    """Output has the type of input 0 (unary element-wise ops)."""
    return [ctx.t(0)]


def opt_input_or_attr(ctx: InferCtx, index: int, attr: str, what: str) -> list[int] | None:
    """Read a list argument that moved from an attribute to an input across opsets."""
    if ctx.has(index):
        return ints(ctx.const(index, what))
    v = ctx.a(attr)
    return None if v is None else [int(x) for x in v]
