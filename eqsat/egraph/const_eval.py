"""Compile-time evaluation of values: the engine behind shape-argument inference and folding.

Consumes nodes of a TensorGraph in topological order; produces the numpy value of every value
that does not depend on a graph input (weights, arithmetic on weights, Shape of a statically
shaped tensor, ...). Import uses it to know Reshape/Slice arguments; the folding pass uses the
same engine to replace such nodes by weights, so the two can never disagree.

Shape values of tensors with symbolic dims are tracked too, *symbolically*: ``Shape(x)`` of
``x: [batch, 32, 128]`` is the object array ``["batch", 32, 128]``, and the shape arithmetic
exporters emit around it (Gather, Slice, Concat, Unsqueeze, Squeeze, Cast, Mul, Div, Add, Sub)
is carried out on such arrays, so that ``Reshape(y, Concat(Shape(x)[0:1], [4, 32]))`` infers as
``[batch, 4, 32]``. A symbolic result whose elements are all ints is an ordinary constant (and
folds); symbolic values are only ever handed to the ops in ``SYMBOLIC_CONSUMERS``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from eqsat.egraph.ir import Node, TensorType
from eqsat.egraph.opdefs.base import InferCtx, Kind, ShapeError, sym_dim, sym_divide, sym_product
from eqsat.egraph.opdefs.shape_ops import shape_range, sym_add
from eqsat.egraph.ops import OPS, is_known, op_attrs, run_node

# A folded value may not grow the model without bound (Expand/Tile/ConstantOfShape of a huge
# shape): it is kept only if it is small or no larger than the constant inputs it replaces.
SMALL_BYTES = 1 << 16


# Ops that move shape values around unchanged (the injective ops of one output, from the op
# table): their numpy semantics work on object arrays.
_STRUCTURAL = {d.name for d in OPS.values() if d.kind is Kind.INJECTIVE and d.outputs == (1, 1)}
_INT_TYPES = {6, 7}  # ONNX INT32, INT64: a Cast to these keeps a shape value
SYMBOLIC_CONSUMERS = {"Reshape", "Expand"}


def _sym_sub(a, b):
    if isinstance(b, int):
        return sym_add(a, -b)
    if a == b:
        return 0
    raise ShapeError(f"cannot subtract {b} from {a}")


_ARITH = {
    "Mul": lambda a, b: sym_dim(*sym_product([a, b])),
    "Div": lambda a, b: sym_divide([a], [b]),
    "Add": sym_add,
    "Sub": _sym_sub,
}


class ConstEval:
    def __init__(self, values: Mapping[str, np.ndarray], bounded: bool = True):
        self.values: dict[str, np.ndarray] = dict(values)
        self.bounded = bounded  # False: fold whatever the size (a plan chose these subterms)
        self.symbolic: dict[str, np.ndarray] = {}  # object arrays of ints and symbols

    def get(self, name: str) -> np.ndarray | None:
        return self.values.get(name) if name else None

    def get_sym(self, name: str) -> np.ndarray | None:
        """The concrete value, else the symbolic one, else None."""
        if not name:
            return None
        v = self.values.get(name)
        return v if v is not None else self.symbolic.get(name)

    def visit(self, node: Node, types: Mapping[str, TensorType]) -> list[np.ndarray] | None:
        """Evaluate ``node`` if its outputs are compile-time constants; record and return them."""
        out = self._evaluate(node, types)
        if out is None:
            self._symbolic(node, types)
            return None
        for name, v in zip(node.outputs, out, strict=False):
            if name:
                self.values[name] = v
        return out

    def _evaluate(self, node: Node, types: Mapping[str, TensorType]) -> list[np.ndarray] | None:
        if not is_known(node):
            return None
        d = OPS[node.op]
        if not d.foldable:
            return None
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
            if self.bounded and sum(v.nbytes for v in out) > max(SMALL_BYTES, in_bytes):
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

    def _symbolic(self, node: Node, types: Mapping[str, TensorType]) -> None:
        """Track shape values that contain symbols; promote all-int results to constants."""
        if not is_known(node) or len(node.outputs) != 1 or not node.outputs[0]:
            return
        out = node.outputs[0]
        t = types.get(out)
        if t is None or t.dtype not in ("int64", "int32") or t.rank > 1:
            return
        try:
            value = self._symbolic_value(node, types)
        except (ShapeError, ValueError, TypeError, IndexError, KeyError):
            return
        if value is None:
            return
        value = np.asarray(value, dtype=object)
        if tuple(value.shape) != t.shape:
            return
        if all(isinstance(v, int | np.integer) for v in value.reshape(-1)):
            self.values[out] = value.astype(t.dtype)  # e.g. Shape(x)[1] with x: [batch, 128]
        else:
            self.symbolic[out] = value

    def _symbolic_value(self, node: Node, types: Mapping[str, TensorType]):
        attrs = op_attrs(node)
        if node.op == "Shape":
            x = types.get(node.inputs[0])
            if x is None:
                return None
            dims = list(x.shape)[shape_range(x.rank, attrs)]
            return np.array(dims, dtype=object)
        args = [self.get_sym(i) for i in node.inputs]
        if any(a is None for i, a in zip(node.inputs, args, strict=True) if i):
            return None
        if not any(a is not None and a.dtype == object for a in args):
            return None  # nothing symbolic here (the concrete path already declined)
        if node.op in _STRUCTURAL:
            args = [a.astype(object) if a is not None and a.dtype != object else a for a in args]
            if node.op != "Concat":
                args = [args[0]] + [a.astype(np.int64) if a is not None else None for a in args[1:]]
            return run_node(node, args)[0]
        if node.op == "Cast" and attrs.get("to") in _INT_TYPES:
            return args[0]
        if node.op in _ARITH:
            fn = np.frompyfunc(lambda a, b: _ARITH[node.op](_py(a), _py(b)), 2, 1)
            return fn(args[0].astype(object), args[1].astype(object))
        return None


def _py(v):
    return v if isinstance(v, str) else int(v)
