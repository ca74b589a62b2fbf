"""Types the op table cannot infer: ONNX value_infos → TensorTypes, from every source a file has.

Consumes an ``onnx.ModelProto`` (and, per node, the types already known); produces
:class:`~eqsat.egraph.ir.TensorType` s for the outputs of nodes the op table does not know (an
op of a custom domain, a control-flow op, an op outside the table) or cannot type (a shape
argument computed from a symbolic dim). :class:`TypeSources` tries, in this order:

1. the file's own ``value_info`` and graph outputs, as written (no inference: a file whose
   inference fails somewhere else still declares what it declares);
2. onnx's shape inference (``data_prop`` on; retried without it, then without the file's
   ``value_info`` — a stale declaration makes onnx refuse the whole model), with dims it cannot
   name kept as fresh symbols;
3. the node's subgraphs: an ``If`` has its branches' output types (merged: a dim the branches
   disagree on becomes a symbol), a ``Loop`` its body's carried values and its scan outputs
   (stacked along a new leading dim), a ``Scan`` its body's state and scan outputs (stacked
   along the scan axis).

Only when none of them gives a type with a known rank is the node refused (InputError, one line,
naming the op and the value). A type with a rank but unknown dims is taken, the dims becoming
symbols: eqsat keeps symbolic dims everywhere, and the verification gate binds them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import onnx
import onnx.shape_inference

from eqsat.egraph.ir import Node, TensorType
from eqsat.egraph.opdefs.elementwise import onnx_dtype
from eqsat.errors import InputError, UntypedValueError


def value_type(
    vi: onnx.ValueInfoProto, what: str, fresh_dims: bool, keep_zero: bool = False
) -> TensorType | None:
    """TensorType of an ONNX value_info; None if the type (or its rank) is unknown. A dim with
    neither a value nor a name becomes the symbol ``<value>_d<k>`` when ``fresh_dims``; a
    stored ``dim_value`` below 1 (Paddle writes -1 for "dynamic") reads as such a symbol too,
    except an explicit 0 on a value that is not a graph input (an empty tensor is legal) or
    with ``keep_zero`` (onnxruntime's reading, which the gate needs: it feeds an input stored
    with a 0 only empty tensors)."""
    tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
    if tt is None or tt.elem_type == 0 or not tt.HasField("shape"):
        return None
    try:
        dtype = onnx_dtype(tt.elem_type)
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{what} {vi.name!r}: unsupported element type {tt.elem_type}") from e
    if dtype == "object":
        raise InputError(f"{what} {vi.name!r}: string tensors are not supported")
    dims: list[int | str] = []
    for k, d in enumerate(tt.shape.dim):
        zero_ok = keep_zero or what != "input"
        if d.HasField("dim_value") and (d.dim_value > 0 or (d.dim_value == 0 and zero_ok)):
            dims.append(int(d.dim_value))
        elif d.dim_param:
            dims.append(d.dim_param)
        elif fresh_dims:
            dims.append(f"{vi.name}_d{k}")
        else:
            return None
    return TensorType(dtype, tuple(dims))


def declared(graph: onnx.GraphProto) -> dict[str, onnx.ValueInfoProto]:
    """The value_infos a graph writes down: its value_info, then its outputs (which win)."""
    return {vi.name: vi for vi in list(graph.value_info) + list(graph.output)}


def inferred(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """onnx's own shape inference; {} when it cannot run."""
    attempts = (
        lambda: onnx.shape_inference.infer_shapes(model, data_prop=True),
        lambda: onnx.shape_inference.infer_shapes(model),
        lambda: onnx.shape_inference.infer_shapes(_without_value_info(model)),
    )
    for attempt in attempts:
        try:
            g = attempt().graph
        except Exception:  # onnx raises several kinds; our own inference and the file come first
            continue
        return declared(g)
    return {}


def _without_value_info(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]
    return m


class TypeSources:
    """The types of one model's values that do not come from the op table (see the module
    docstring for the order)."""

    def __init__(self, model: onnx.ModelProto, infer: bool = True):
        """``infer`` False: no onnx shape inference (a model over 2 GB: protobuf cannot
        serialize it for onnx's C++ inference)."""
        self.declared = declared(model.graph)
        self._model = model
        self._inferred: dict[str, onnx.ValueInfoProto] | None = None if infer else {}

    @property
    def inferred(self) -> dict[str, onnx.ValueInfoProto]:
        if self._inferred is None:  # onnx's inference runs only when a node needs it
            self._inferred = inferred(self._model)
        return self._inferred

    def node_types(
        self, node: Node, types: Mapping[str, TensorType], label: str, reason: str
    ) -> list[TensorType | None]:
        """A type for every named output of ``node``; InputError when one has none."""
        from_subgraphs: list[TensorType | None] | None = None
        out: list[TensorType | None] = []
        for k, o in enumerate(node.outputs):
            if not o:
                out.append(None)
                continue
            t = self._declared_or_inferred(o)
            if t is None:
                if from_subgraphs is None:
                    from_subgraphs = subgraph_types(node, types)
                t = from_subgraphs[k] if k < len(from_subgraphs) else None
            if t is None:
                if node.opaque is not None:
                    op = f"{node.domain + '.' if node.domain else ''}{node.op}"
                    raise UntypedValueError(
                        f"{label}: op {op} is unknown to eqsat and the type of its output {o!r} "
                        "cannot be inferred (the file declares none, onnx's shape inference "
                        "finds none)"
                    )
                raise UntypedValueError(f"{label}: cannot infer output types: {reason}")
            out.append(t)
        return out

    def _declared_or_inferred(self, name: str) -> TensorType | None:
        for source in (self.declared, self.inferred):
            vi = source.get(name)
            t = value_type(vi, "value", fresh_dims=True) if vi is not None else None
            if t is not None:
                return t
        return None


# ----------------------------------------------------------------------------- subgraphs


def subgraph_types(node: Node, types: Mapping[str, TensorType]) -> list[TensorType | None]:
    """Output types of a control-flow node from its subgraphs (None where they do not say)."""
    if node.opaque is None or node.domain not in ("", "ai.onnx"):
        return []
    p = onnx.NodeProto()
    p.ParseFromString(node.opaque)
    graphs = {a.name: a.g for a in p.attribute if a.type == onnx.AttributeProto.GRAPH}
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in p.attribute}
    names = list(node.outputs)
    if node.op == "If" and {"then_branch", "else_branch"} <= set(graphs):
        a = _outputs(graphs["then_branch"])
        b = _outputs(graphs["else_branch"])
        return [_merge(x, y, o) for x, y, o in zip(a, b, names, strict=False)]
    if node.op == "Loop" and "body" in graphs:
        body = _outputs(graphs["body"])[1:]  # body outputs: cond, carried..., scan outputs...
        n_carried = max(len(node.inputs) - 2, 0)
        out = list(body[:n_carried])
        for t, o in zip(body[n_carried:], names[n_carried:], strict=False):
            out.append(None if t is None else TensorType(t.dtype, (f"{o}_d0", *t.shape)))
        return out
    if node.op == "Scan" and "body" in graphs:
        m = int(attrs.get("num_scan_inputs", 0))
        n_state = len(node.inputs) - m
        body = _outputs(graphs["body"])
        out = list(body[:n_state])
        scans = [i for i in node.inputs[n_state:] if i]
        in_axes = list(attrs.get("scan_input_axes") or [0] * len(scans))
        first = types.get(scans[0]) if scans else None
        length = None
        if first is not None and in_axes and -first.rank <= in_axes[0] < first.rank:
            length = first.shape[in_axes[0]]
        out_axes = list(attrs.get("scan_output_axes") or [])
        for j, (t, o) in enumerate(zip(body[n_state:], names[n_state:], strict=False)):
            if t is None:
                out.append(None)
                continue
            axis = out_axes[j] if j < len(out_axes) else 0
            axis = axis + t.rank + 1 if axis < 0 else axis
            dims = list(t.shape)
            dims.insert(min(max(axis, 0), len(dims)), length if length is not None else f"{o}_d0")
            out.append(TensorType(t.dtype, tuple(dims)))
        return out
    return []


def _outputs(g: onnx.GraphProto) -> list[TensorType | None]:
    """A subgraph's output types: declared with the output, else in its value_info."""
    vis = declared(g)
    out = []
    for o in g.output:
        t = value_type(o, "value", fresh_dims=True)
        if t is None and o.name in vis:
            t = value_type(vis[o.name], "value", fresh_dims=True)
        out.append(t)
    return out


def _merge(a: TensorType | None, b: TensorType | None, name: str) -> TensorType | None:
    """The type of a value that is ``a`` or ``b`` (If): equal dims stay, others become
    symbols; None when the dtypes or the ranks differ."""
    if a is None or b is None:
        return a or b
    if a.dtype != b.dtype or a.rank != b.rank:
        return None
    dims: Sequence[int | str] = [
        x if x == y else f"{name}_d{k}"
        for k, (x, y) in enumerate(zip(a.shape, b.shape, strict=True))
    ]
    return TensorType(a.dtype, tuple(dims))
