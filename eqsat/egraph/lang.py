"""The egglog language of eqsat: one ``Tensor`` sort, its constructors, and the table that maps
each typed constructor to its ONNX op.

Consumes nothing at run time (it defines sorts); :mod:`eqsat.egraph.encode` builds terms of this
language from a TensorGraph and :mod:`eqsat.extract.decode` reads them back. Importing it
registers nothing anywhere: ``Tensor`` only becomes part of an e-graph when terms are added.

Design choices, and why:

- **One sort.** Every value is a ``Tensor``: rules never convert between sorts, and an analysis
  (shape, dtype, constant value) is a function ``Tensor -> ...`` that rules can add later.
- **Typed constructors for the ops rules rewrite** (``Tensor.matmul``, ``Tensor.conv``, ...):
  inputs first, then every attribute as an egglog primitive (``i64``, ``f64``, ``String``,
  ``Vec[i64]``), named as the ONNX attribute. The constructor's declaration below is the only
  place its slots are written: :data:`SPECS` (which op a constructor encodes, its input slots,
  attribute kinds, defaults and canonical forms) is derived from it and from the op table's
  record (``OpDef.ctor`` names the constructor; its arity says which inputs are optional, its
  attribute defaults what an absent attribute means).
- **Attributes are canonical, not as spelled.** ``Conv`` always carries explicit ``group``,
  ``strides``, ``pads``, ``dilations`` and ``kernel_shape`` (``auto_pad`` resolved into pads),
  axes are non-negative, absent attributes take the value their absence means. So a rule
  matches ``strides = [1, 1]`` once, instead of "absent or [1, 1]", and two spellings of one
  computation are one e-node. The encoder keeps the original spelling in a side table keyed by
  (op, canonical attributes); the decoder reuses it when it canonicalizes to the same values on
  the decoded input types (so a spelling is never reused where it would mean something else,
  e.g. ``axis=-1`` on a different rank). Without one it writes only the attributes that differ
  from what their absence implies.
- **Omitted optional inputs** are the leaf ``Tensor.none()`` (Gemm's C, Conv's bias), so one
  constructor covers "with and without bias" and rules can match either.
- **Leaves by name**: ``Tensor.input(name)`` and ``Tensor.weight(name)``. Small literals are
  leaves by *value*, because rules need to see them: ``Tensor.ints(Vec[i64])`` for 1-D int64
  tensors of at most :data:`MAX_INTS` entries (shapes, axes, slice bounds) and
  ``Tensor.scalar(f64, dtype)`` for finite 0-d float tensors (GELU's 0.5, RMSNorm's eps).
  Equal literals are therefore one e-class (exported weights are deduplicated anyway).
- **Everything else is generic**: ``Tensor.node(key, inputs)`` keeps a node's identity; ``key``
  (``"<op>#<index>"``) indexes the encoder's side table holding the original ``Node`` (op,
  attributes, opaque bytes, subgraph captures). Its inputs are the explicit inputs
  (``Tensor.none()`` for omitted ones) followed by the implicit captures. A multi-output node is
  one such term and each output a projection ``Tensor.output(node, i)``. Ops of the table without
  a typed constructor, opaque ops, multi-output nodes and typed ops whose attributes cannot be
  canonicalized (e.g. ``auto_pad=SAME_UPPER`` over symbolic spatial dims) all go this way, so
  the e-graph never loses a node: rules simply do not see inside generic ones.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from egglog import Expr, StringLike, Vec, f64Like, i64, i64Like

from eqsat.egraph.ir import AttrValue, TensorType
from eqsat.egraph.opdefs.base import ShapeError
from eqsat.egraph.opdefs.window import Window
from eqsat.egraph.ops import OPS

MAX_INTS = 64  # 1-D int64 weights up to this length become Tensor.ints leaves


class Tensor(Expr):
    """A tensor value (for a multi-output generic node: the tuple of its outputs)."""

    # ------------------------------------------------------------------ leaves
    @classmethod
    def input(cls, name: StringLike) -> Tensor: ...
    @classmethod
    def weight(cls, name: StringLike) -> Tensor: ...
    @classmethod
    def ints(cls, values: Vec[i64]) -> Tensor: ...
    @classmethod
    def scalar(cls, value: f64Like, dtype: StringLike) -> Tensor: ...
    @classmethod
    def none(cls) -> Tensor: ...

    # ------------------------------------------------------------------ generic nodes
    @classmethod
    def node(cls, key: StringLike, inputs: Vec[Tensor]) -> Tensor: ...
    @classmethod
    def output(cls, node: Tensor, index: i64Like) -> Tensor: ...

    # ------------------------------------------------------------------ fusion terms
    # what the compiler will fuse, as terms (eqsat.rules.fusion says why and how): ``lane(x,
    # k)`` is ``x`` read by kernel ``k`` that will not store what it computes from it (a term
    # over a lane lives in a world of its own: no rule unions it with the stored value, nor with
    # another kernel's), and ``kernel(e)`` is ``e`` stored by one kernel. Both mean their
    # operand: unfolding them is their semantics.
    @classmethod
    def lane(cls, x: Tensor, kernel: StringLike) -> Tensor: ...
    @classmethod
    def kernel(cls, e: Tensor) -> Tensor: ...

    # ------------------------------------------------------------------ typed ops
    @classmethod
    def relu(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def sigmoid(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def tanh(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def erf(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def sqrt(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def exp(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def neg(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def reciprocal(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def identity(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def global_average_pool(cls, x: Tensor) -> Tensor: ...
    @classmethod
    def add(cls, a: Tensor, b: Tensor) -> Tensor: ...
    @classmethod
    def sub(cls, a: Tensor, b: Tensor) -> Tensor: ...
    @classmethod
    def mul(cls, a: Tensor, b: Tensor) -> Tensor: ...
    @classmethod
    def div(cls, a: Tensor, b: Tensor) -> Tensor: ...
    @classmethod
    def pow(cls, a: Tensor, b: Tensor) -> Tensor: ...
    @classmethod
    def matmul(cls, a: Tensor, b: Tensor) -> Tensor: ...
    @classmethod
    def gemm(
        cls,
        a: Tensor,
        b: Tensor,
        c: Tensor,
        alpha: f64Like,
        beta: f64Like,
        transA: i64Like,  # noqa: N803 - parameters are named as the ONNX attributes
        transB: i64Like,  # noqa: N803
    ) -> Tensor: ...
    @classmethod
    def transpose(cls, x: Tensor, perm: Vec[i64]) -> Tensor: ...
    @classmethod
    def reshape(cls, x: Tensor, shape: Tensor, allowzero: i64Like) -> Tensor: ...
    @classmethod
    def concat(cls, inputs: Vec[Tensor], axis: i64Like) -> Tensor: ...
    @classmethod
    def slice(
        cls, x: Tensor, starts: Tensor, ends: Tensor, axes: Tensor, steps: Tensor
    ) -> Tensor: ...
    @classmethod
    def pad(
        cls, x: Tensor, pads: Tensor, value: Tensor, axes: Tensor, mode: StringLike
    ) -> Tensor: ...
    @classmethod
    def softmax(cls, x: Tensor, axis: i64Like) -> Tensor: ...
    @classmethod
    def flatten(cls, x: Tensor, axis: i64Like) -> Tensor: ...
    @classmethod
    def layer_norm(
        cls,
        x: Tensor,
        scale: Tensor,
        bias: Tensor,
        axis: i64Like,
        epsilon: f64Like,
        stash_type: i64Like,
    ) -> Tensor: ...
    @classmethod
    def batch_norm(
        cls,
        x: Tensor,
        scale: Tensor,
        bias: Tensor,
        mean: Tensor,
        var: Tensor,
        epsilon: f64Like,
        momentum: f64Like,
    ) -> Tensor: ...
    @classmethod
    def conv(
        cls,
        x: Tensor,
        w: Tensor,
        b: Tensor,
        group: i64Like,
        strides: Vec[i64],
        pads: Vec[i64],
        dilations: Vec[i64],
        kernel_shape: Vec[i64],
    ) -> Tensor: ...
    @classmethod
    def max_pool(
        cls,
        x: Tensor,
        kernel_shape: Vec[i64],
        strides: Vec[i64],
        pads: Vec[i64],
        dilations: Vec[i64],
        ceil_mode: i64Like,
        storage_order: i64Like,
    ) -> Tensor: ...
    @classmethod
    def average_pool(
        cls,
        x: Tensor,
        kernel_shape: Vec[i64],
        strides: Vec[i64],
        pads: Vec[i64],
        dilations: Vec[i64],
        ceil_mode: i64Like,
        count_include_pad: i64Like,
    ) -> Tensor: ...


# ---------------------------------------------------------------------------- the op table

Types = Sequence[TensorType | None]
REQUIRED = "required"  # an attribute without an implied value: always written


@dataclass(frozen=True)
class AttrSpec:
    """One constructor attribute. ``kind``: int | float | str | ints. ``default``: the value its
    absence means (a constant, a function of the input types, or REQUIRED); None takes the op
    table's default. ``axis``: "axis" normalises into [0, rank), "flatten" into [0, rank]."""

    name: str
    kind: str
    default: object = None
    axis: str = ""


@dataclass(frozen=True)
class OpSpec:
    """A typed constructor. ``inputs``: one character per input slot, ``t`` required, ``o``
    optional (``Tensor.none()`` when omitted), ``*`` all inputs as one ``Vec[Tensor]``.
    ``fixed``: attributes accepted only at this value (e.g. BatchNormalization training_mode=0).
    ``window``: Conv/pools, whose ``auto_pad`` is resolved into explicit pads."""

    op: str
    ctor: str
    inputs: str
    attrs: tuple[AttrSpec, ...] = ()
    fixed: Mapping[str, AttrValue] = field(default_factory=dict)
    window: bool = False


def _spatial(types: Types) -> int:
    if not types or types[0] is None or types[0].rank < 2:
        raise ShapeError("a window op needs a typed input of rank >= 2")
    return types[0].rank - 2


def _ones(types: Types) -> tuple[int, ...]:
    return (1,) * _spatial(types)


def _zero_pads(types: Types) -> tuple[int, ...]:
    return (0,) * (2 * _spatial(types))


def _conv_kernel(types: Types) -> tuple[int, ...]:
    if len(types) < 2 or types[1] is None or not types[1].is_static:
        raise ShapeError("Conv needs a statically shaped weight")
    return tuple(int(d) for d in types[1].shape[2:])


def _reversed_perm(types: Types) -> tuple[int, ...]:
    if not types or types[0] is None:
        raise ShapeError("Transpose needs a typed input")
    return tuple(reversed(range(types[0].rank)))


# Attribute values that depend on the input types where the attribute is absent (a window's
# strides, pads and dilations; Conv's kernel shape; Transpose's reversed axes), per op and
# attribute. An attribute of a constructor whose op-table default is None and that has no entry
# here is REQUIRED: it must be written.
_WINDOW_DEFAULTS = {"strides": _ones, "pads": _zero_pads, "dilations": _ones}
_TYPED_DEFAULTS = {("Conv", "kernel_shape"): _conv_kernel, ("Transpose", "perm"): _reversed_perm}
_AXIS_RANGE = {"Flatten": "flatten"}
# Inputs the constructor requires where the op table's arity is lower because it also reads the
# attribute forms of opsets before 10/11/13; those old spellings stay generic nodes.
_MIN_INPUTS = {
    "Reshape": 2,
    "Slice": 3,
    "Pad": 2,
}  # an ``axis`` attribute ranges over [0, rank) elsewhere
# egglog argument sorts of a constructor's attributes -> AttrSpec kinds
_ATTR_KINDS = {("i64",): "int", ("f64",): "float", ("String",): "str", ("Vec", "i64"): "ints"}


def _signature(ctor_name: str) -> list[tuple[str, tuple[str, ...]]]:
    """A ``Tensor`` constructor's parameters as (name, sort path): ``("Vec", "Tensor")``. Read
    from egglog's declarations of the class (egglog is pinned: :mod:`eqsat.egraph.saturate`)."""
    decls = Tensor.__egg_decls__  # type: ignore[attr-defined]
    cls = next(c for i, c in decls._classes.items() if i.name == "Tensor")
    sig = cls.class_methods[ctor_name].signature
    return [
        (name, (t.ident.name, *(a.ident.name for a in t.args)))
        for name, t in zip(sig.arg_names, sig.arg_types, strict=True)
    ]


def _spec(op: str, ctor_name: str) -> OpSpec:
    """The constructor spec of ``op``, derived: input slots from the constructor's ``Tensor``
    parameters and the op's arity (slots past the minimum are optional), attributes from its
    other parameters (named as the ONNX attributes, kinds from their sorts), defaults from the
    op table unless they depend on types, and every op attribute the constructor does not carry
    fixed at its op-table default (a node spelling another value stays generic)."""
    d = OPS[op]
    window = "auto_pad" in d.attrs
    required = _MIN_INPUTS.get(op, d.inputs[0])
    slots, attrs = [], []
    for name, sort in _signature(ctor_name):
        if sort == ("Tensor",):
            slots.append("t" if len(slots) < required else "o")
        elif sort == ("Vec", "Tensor"):
            slots.append("*")
        else:
            if name not in d.attrs:
                raise RuntimeError(f"Tensor.{ctor_name}: {name} is not an attribute of {op}")
            default = _TYPED_DEFAULTS.get((op, name))
            if default is None and window:
                default = _WINDOW_DEFAULTS.get(name)
            if default is None and d.attrs[name] is None:
                default = REQUIRED
            axis = _AXIS_RANGE.get(op, "axis") if name == "axis" else ""
            attrs.append(AttrSpec(name, _ATTR_KINDS[sort], default, axis))
    carried = {a.name for a in attrs} | ({"auto_pad"} if window else set())
    fixed = {k: v for k, v in d.attrs.items() if k not in carried}
    return OpSpec(op, ctor_name, "".join(slots), tuple(attrs), fixed, window)


def _specs() -> dict[str, OpSpec]:
    return {op: _spec(op, d.ctor) for op, d in OPS.items() if d.ctor}


SPECS: Mapping[str, OpSpec] = _specs()
BY_CTOR: Mapping[str, OpSpec] = {s.ctor: s for s in SPECS.values()}


def ctor(name: str) -> Callable[..., Tensor]:
    """The ``Tensor`` constructor called ``name`` (e.g. ``"conv"``)."""
    return getattr(Tensor, name)


# ---------------------------------------------------------------------------- attributes


def _check_kind(kind: str, v: object) -> AttrValue:
    if kind == "int" and isinstance(v, int) and not isinstance(v, bool):
        return v
    if kind == "float" and isinstance(v, float | int) and not isinstance(v, bool):
        return float(v)
    if kind == "str" and isinstance(v, str):
        return v
    if kind == "ints" and isinstance(v, tuple | list) and all(isinstance(x, int) for x in v):
        return tuple(int(x) for x in v)
    raise ShapeError(f"attribute value {v!r} is not of kind {kind}")


def implied(spec: OpSpec, a: AttrSpec, types: Types) -> AttrValue | None:
    """The value attribute ``a`` has when absent (None: it has none and must be written)."""
    d = a.default
    if d is REQUIRED:
        return None
    if callable(d):
        return d(types)
    v = OPS[spec.op].attrs.get(a.name) if d is None else d
    if v is None:
        return None
    return _normalise_axis(a, _check_kind(a.kind, v), types)


def _normalise_axis(a: AttrSpec, v: AttrValue, types: Types) -> AttrValue:
    if not a.axis:
        return v
    if not types or types[0] is None:
        raise ShapeError("axis normalisation needs a typed input")
    r = types[0].rank
    hi = r + 1 if a.axis == "flatten" else r
    if not -r <= int(v) < hi:
        raise ShapeError(f"axis {v} out of range for rank {r}")
    return int(v) + r if int(v) < 0 else int(v)


def canonical_attrs(
    spec: OpSpec, attrs: Mapping[str, AttrValue], types: Types
) -> tuple[AttrValue, ...] | None:
    """The constructor's attribute values for a node spelled ``attrs`` with input ``types``, in
    ``spec.attrs`` order; None when they cannot be canonicalised (encode it as generic)."""
    known = (
        {a.name for a in spec.attrs} | set(spec.fixed) | ({"auto_pad"} if spec.window else set())
    )
    if set(attrs) - known:
        return None
    if any(attrs[k] != v for k, v in spec.fixed.items() if k in attrs):
        return None
    try:
        out: dict[str, AttrValue] = {}
        for a in spec.attrs:
            given = attrs.get(a.name)
            if given is not None and not (given == () and callable(a.default)):  # () = absent
                out[a.name] = _normalise_axis(a, _check_kind(a.kind, given), types)
            else:
                v = implied(spec, a, types)
                if v is None:
                    return None
                out[a.name] = v
        if spec.window and not _resolve_auto_pad(out, str(attrs.get("auto_pad", "NOTSET")), types):
            return None
    except ShapeError:
        return None
    return tuple(out[a.name] for a in spec.attrs)


def _resolve_auto_pad(out: dict[str, AttrValue], auto_pad: str, types: Types) -> bool:
    """Replace ``pads`` by what ``auto_pad`` means; False where that depends on unknown sizes."""
    if auto_pad == "NOTSET":
        return True
    if auto_pad == "VALID":
        out["pads"] = _zero_pads(types)
        return True
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER") or out.get("ceil_mode", 0):
        return False
    kernel = out["kernel_shape"]
    win = Window.of({**out, "auto_pad": auto_pad, "pads": None}, kernel)  # type: ignore[arg-type]
    spatial = types[0].shape[2:]  # type: ignore[union-attr]
    if all(isinstance(d, int) for d in spatial):
        _, begins, ends = win.resolve([int(d) for d in spatial])
    elif all(s == 1 for s in win.strides):  # SAME at stride 1 pads extent - 1 whatever the size
        totals = [win.extent(i) - 1 for i in range(win.nd)]
        small, big = [t // 2 for t in totals], [t - t // 2 for t in totals]
        begins, ends = (small, big) if auto_pad == "SAME_UPPER" else (big, small)
    else:
        return False
    out["pads"] = tuple(begins) + tuple(ends)
    return True
