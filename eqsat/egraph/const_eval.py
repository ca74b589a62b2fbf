"""Compile-time evaluation of values: the engine behind shape-argument inference and folding.

Consumes nodes of a TensorGraph in topological order; produces the numpy value of every value
that does not depend on a graph input (weights, arithmetic on weights, Shape of a statically
shaped tensor, ...). Import uses it to know Reshape/Slice arguments; the folding pass uses the
same engine to replace such nodes by weights, so the two can never disagree.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from eqsat.egraph.ir import Node, TensorType
from eqsat.egraph.opdefs.base import InferCtx
from eqsat.egraph.ops import OPS, is_known, op_attrs, run_node

# A folded value may not grow the model without bound (Expand/Tile/ConstantOfShape of a huge
# shape): it is kept only if it is small or no larger than the constant inputs it replaces.
SMALL_BYTES = 1 << 16


class ConstEval:
    def __init__(self, values: Mapping[str, np.ndarray]):
        self.values: dict[str, np.ndarray] = dict(values)

    def get(self, name: str) -> np.ndarray | None:
        return self.values.get(name) if name else None

    def visit(self, node: Node, types: Mapping[str, TensorType]) -> list[np.ndarray] | None:
        """Evaluate ``node`` if its outputs are compile-time constants; record and return them."""
        out = self._evaluate(node, types)
        if out is None:
            return None
        for name, v in zip(node.outputs, out, strict=False):
            if name:
                self.values[name] = v
        return out

    def _evaluate(self, node: Node, types: Mapping[str, TensorType]) -> list[np.ndarray] | None:
        if not is_known(node):
            return None
        d = OPS[node.op]
        args = [self.get(i) for i in node.inputs]
        present = [a for i, a in zip(node.inputs, args, strict=True) if i]
        out = None
        if all(a is not None for a in present):
            try:
                with np.errstate(all="ignore"):
                    out = [np.asarray(v) for v in run_node(node, args)]
            except Exception:  # an op that cannot run on these values is simply not folded
                return None
            in_bytes = sum(a.nbytes for a in present)
            if sum(v.nbytes for v in out) > max(SMALL_BYTES, in_bytes):
                return None
        elif d.static_value is not None:
            ins = [types.get(i) if i else None for i in node.inputs]
            ctx = InferCtx(ins, args, op_attrs(node))
            try:
                out = d.static_value(ctx)
            except Exception:
                return None
        if out is None:
            return None
        # Keep only values that agree with the inferred types (a mismatch would be a table bug;
        # refusing to fold keeps it from silently changing the model).
        for name, v in zip(node.outputs, out, strict=False):
            t = types.get(name) if name else None
            if t is not None and (v.dtype.name != t.dtype or tuple(v.shape) != t.shape):
                return None
        return out
