"""The op table: the single source of truth about every op eqsat understands.

One :class:`~eqsat.egraph.opdefs.base.OpDef` per ONNX op type (default domain): attributes with
defaults, arity, shape inference, numpy reference semantics and FLOP counts. The definitions live
in one module per family under :mod:`eqsat.egraph.opdefs`; this module only assembles them, with
no import-time registration. Ops not in the table are *opaque* (kept, passed through).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from eqsat.egraph.ir import Node, TensorType
from eqsat.egraph.opdefs import elementwise, nn, quant, tensor
from eqsat.egraph.opdefs.base import InferCtx, Kind, OpDef, ShapeError, same


def _assemble(*families: Sequence[OpDef]) -> dict[str, OpDef]:
    table: dict[str, OpDef] = {}
    for fam in families:
        for d in fam:
            if d.name in table:
                raise RuntimeError(f"op {d.name} is defined twice")
            table[d.name] = d
    return dict(sorted(table.items()))


OPS: Mapping[str, OpDef] = _assemble(elementwise.DEFS, nn.DEFS, quant.DEFS, tensor.DEFS)


def elementwise_ctors(arity: int) -> tuple[str, ...]:
    """Constructor names of the typed element-wise ops of ``arity`` inputs, in table order (the
    derived lists "the unary ops", "the binary ops" that rules and analyses iterate over)."""
    return tuple(
        d.ctor
        for d in OPS.values()
        if d.ctor and d.kind is Kind.ELEMENTWISE and d.inputs == (arity, arity)
    )


def same_shape_ctors() -> tuple[str, ...]:
    """Constructor names of the typed ops of one input whose output has the input's type."""
    return tuple(d.ctor for d in OPS.values() if d.ctor and d.infer is same)


def is_known(node: Node) -> bool:
    return node.opaque is None and node.domain in ("", "ai.onnx") and node.op in OPS


def op_attrs(node: Node) -> dict:
    """A node's attributes as an op sees them: plus ``_num_outputs`` (Split needs it)."""
    attrs = node.attr
    attrs["_num_outputs"] = len(node.outputs)
    return attrs


def infer_node(
    node: Node,
    types: Sequence[TensorType | None],
    consts: Sequence[np.ndarray | None],
    opset: int = 17,
) -> list[TensorType]:
    """Output types of a known node; raises ShapeError with the node named on failure."""
    d = OPS[node.op]
    lo, hi = d.inputs
    n = len(node.inputs)
    if n < lo or (hi >= 0 and n > hi):
        raise ShapeError(f"{node.op} takes {lo}..{hi if hi >= 0 else 'n'} inputs, got {n}")
    try:
        out = d.infer(InferCtx(types, consts, op_attrs(node), opset))
    except ShapeError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise ShapeError(f"{node.op}: {e}") from e
    return out[: len(node.outputs)]


def run_node(node: Node, args: list[np.ndarray | None]) -> list[np.ndarray]:
    """Evaluate a known node with the numpy reference semantics."""
    return OPS[node.op].run(args, op_attrs(node))


def node_flops(node: Node, ins: Sequence[TensorType | None], outs: Sequence[TensorType]) -> int:
    if not is_known(node):
        return 0
    return int(OPS[node.op].flops(ins, outs, node.attr))


def node_bytes(ins: Sequence[TensorType | None], outs: Sequence[TensorType]) -> int:
    """Bytes moved by one kernel: every input read once, every output written once."""
    return int(sum(t.nbytes() for t in ins if t is not None) + sum(t.nbytes() for t in outs))


__all__ = [
    "OPS",
    "OpDef",
    "InferCtx",
    "Kind",
    "ShapeError",
    "infer_node",
    "run_node",
    "node_flops",
    "elementwise_ctors",
    "same_shape_ctors",
]
