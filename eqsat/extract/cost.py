"""Cost models for extraction: the cost of one e-node, given its op and its shapes.

Consumes an op name (the ONNX op type), its attributes (as an ONNX node would carry them) and the
TensorTypes of its inputs (None for an omitted optional input) and outputs; produces a
non-negative float. The extractor sums these over the chosen DAG, counting every shared
subterm once.

What is *not* asked of a model: leaves (graph inputs, weights, literals, omitted inputs) and the
plumbing of the e-graph (output projections of multi-output nodes, vectors of inputs) cost
nothing and never reach it. :class:`~eqsat.extract.roofline.RooflineCostModel` (estimated
microseconds on this machine) has this signature; :class:`AstSize` counts nodes (tests, and the
"fewest nodes" objective); :class:`OpWeights` gives each op a fixed weight (tests that need one
rewrite to win over another); :class:`Analytic` is a roofline with fixed constants (FLOPs and
bytes from the op table), shape-dependent like the roofline but the same on every machine, for
golden tests of cost-driven choices.

The protocol states every ability extraction reads, so that none is discovered with ``getattr``
(a misspelt ``noise`` would then silently be 0): ``needs_values`` (the model is also given the
values of constant inputs), ``noise`` (its relative error: a rewrite must beat the original by
more than this), ``runtime_fusions`` (it prices the kernels onnxruntime runs, so activations
fused into a Conv are free), ``save`` (persist what it learned, called once after
extraction), ``epilogue_cost`` (the price of an element-wise e-node inside a fused kernel's
epilogue, :mod:`eqsat.rules.fusion`) and ``inlined_cost`` (one outside any kernel that lowering
inlines into its readers, in an e-graph with those terms). :class:`CostModelBase` gives each
its neutral default,
so a model declares only what it has; a model may also satisfy the protocol without it (it is
structural), but it must then spell every ability out, and
:func:`eqsat.extract.extraction.extract` refuses one that does not (:func:`missing_abilities`)
before any cost is asked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

from eqsat.egraph.ir import AttrValue, Node, TensorType, make_attrs
from eqsat.egraph.ops import node_bytes, node_flops


@runtime_checkable
class CostModel(Protocol):
    """The cost of one node, and the abilities extraction reads (defaults in
    :class:`CostModelBase`)."""

    name: str
    # also give ``node_cost`` the keyword ``consts``: per input None (computed at run time), the
    # array of a constant input whose value is known, or a marker for a constant of unknown value
    needs_values: bool
    # relative error of the model's costs: a rewritten e-node must be cheaper than the original
    # by more than this to be taken (extraction's tie-break is the floor)
    noise: float
    # the model prices what onnxruntime runs: activations it fuses into a Conv cost nothing there
    runtime_fusions: bool

    def node_cost(
        self,
        op: str,
        attrs: Mapping[str, AttrValue],
        ins: Sequence[TensorType | None],
        outs: Sequence[TensorType | None],
    ) -> float:
        """Must be >= 0 (extraction relies on it); ``math.inf`` forbids a node."""
        ...

    def save(self) -> None:
        """Persist what the model learned (the measured model's timings); called once after
        extraction."""
        ...

    def epilogue_cost(
        self,
        op: str,
        attrs: Mapping[str, AttrValue],
        ins: Sequence[TensorType | None],
        outs: Sequence[TensorType | None],
    ) -> float:
        """An element-wise e-node in a kernel's epilogue (over a lane of
        :mod:`eqsat.rules.fusion`); e-graphs without fusion terms never ask it."""
        ...

    def inlined_cost(
        self,
        op: str,
        attrs: Mapping[str, AttrValue],
        ins: Sequence[TensorType | None],
        outs: Sequence[TensorType | None],
    ) -> float:
        """An element-wise e-node outside any fused kernel whose value lowering need not store
        (:func:`eqsat.extract.extraction.unstored_nodes`); e-graphs without fusion terms never
        ask it."""
        ...


ABILITIES = (
    "name",
    "needs_values",
    "noise",
    "runtime_fusions",
    "node_cost",
    "save",
    "epilogue_cost",
    "inlined_cost",
)


def missing_abilities(model: object) -> list[str]:
    """The members of :class:`CostModel` that ``model`` does not declare."""
    declared = set(dir(model))
    return [a for a in ABILITIES if a not in declared]


class CostModelBase:
    """Every ability but ``node_cost`` at its neutral default: subclass, set ``name`` and what
    differs."""

    name = "unnamed"
    needs_values = False
    noise = 0.0
    runtime_fusions = False

    def save(self) -> None:
        """Nothing to persist."""

    def epilogue_cost(self, op, attrs, ins, outs) -> float:
        """A model that knows no fusion prices an epilogue e-node as any other."""
        return self.node_cost(op, attrs, ins, outs)

    def inlined_cost(self, op, attrs, ins, outs) -> float:
        """A model that knows no fusion prices an inlined e-node as any other."""
        return self.node_cost(op, attrs, ins, outs)


class AstSize(CostModelBase):
    """Every node costs 1: extraction then minimises the node count of the DAG."""

    name = "ast-size"

    def node_cost(self, op, attrs, ins, outs) -> float:
        return 1.0


class OpWeights(CostModelBase):
    """A fixed cost per op (``default`` for the others)."""

    name = "op-weights"

    def __init__(self, weights: Mapping[str, float], default: float = 1.0):
        self.weights = dict(weights)
        self.default = default

    def node_cost(self, op, attrs, ins, outs) -> float:
        return self.weights.get(op, self.default)


class Analytic(CostModelBase):
    """``overhead + flops / flops_per_unit + bytes / bytes_per_unit``: kernel launches, compute
    and memory traffic in one machine-independent unit (defaults: 1 per kernel, 1 per 1000
    FLOPs, 1 per 1000 bytes)."""

    name = "analytic"

    def __init__(
        self, overhead: float = 1.0, flops_per_unit: float = 1e3, bytes_per_unit: float = 1e3
    ):
        self.overhead = overhead
        self.flops_per_unit = flops_per_unit
        self.bytes_per_unit = bytes_per_unit

    def node_cost(self, op, attrs, ins, outs) -> float:
        flops = op_flops(op, attrs, ins, outs)
        moved = node_bytes(ins, [t for t in outs if t is not None])
        return self.overhead + flops / self.flops_per_unit + moved / self.bytes_per_unit


def op_flops(op: str, attrs, ins, outs) -> int:
    """FLOPs of one e-node as a cost model sees it (``op``, its attributes and the input and
    output types; the values' names do not matter): what every analytic cost model divides."""
    node = Node(op, tuple("x" for _ in ins), tuple("y" for _ in outs), make_attrs(attrs))
    return node_flops(node, ins, outs)


def checked_cost(model: CostModel, op, attrs, ins, outs, consts=None, unstored="") -> float:
    """``model.node_cost`` with its contract enforced: NaN or negative costs raise. A model
    with ``needs_values`` also gets ``consts`` (see :class:`CostModel` and
    :mod:`eqsat.extract.measured`). ``unstored``: ``"epilogue"`` or ``"inlined"``, the model's
    ``epilogue_cost`` or ``inlined_cost`` instead."""
    if unstored == "epilogue":
        c = float(model.epilogue_cost(op, attrs, ins, outs))
    elif unstored == "inlined":
        c = float(model.inlined_cost(op, attrs, ins, outs))
    elif model.needs_values:
        c = float(model.node_cost(op, attrs, ins, outs, consts=consts))
    else:
        c = float(model.node_cost(op, attrs, ins, outs))
    if math.isnan(c) or c < 0:
        raise ValueError(f"cost model {model.name!r} gave {c} for {op}: costs must be >= 0")
    return c
