"""ONNX ↔ TensorGraph: ``import_onnx`` (ModelProto → TensorGraph) and ``export_onnx`` (back).

Import sorts nodes topologically, turns initializers and Constant nodes into weights, converts
opsets older than 13 with onnx.version_converter, keeps symbolic dims as symbols (an unnamed
dynamic dim of an input gets a generated symbol), and infers every value's type with the op
table. Values that can be computed at compile time (weights, Shape of static shapes, ...) are
propagated during inference so that Reshape/Slice/Expand shape arguments are known; they stay
nodes here — :mod:`eqsat.egraph.passes` folds them. Where the op table cannot infer a type
(an op outside the table, or a shape argument computed from a symbolic dim) the type comes from
the file's value_info, onnx's shape inference or the node's subgraphs
(:mod:`eqsat.egraph.onnx_types`); if none has it, import fails with a one-line InputError.

Export keeps input/output names and types, opsets, metadata and custom functions, writes each
distinct weight once (identical tensors are deduplicated), and writes opaque nodes back verbatim.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx.helper
import onnx.numpy_helper
from google.protobuf.message import DecodeError

from eqsat.egraph import onnx_files
from eqsat.egraph.const_eval import SYMBOLIC_CONSUMERS, ConstEval
from eqsat.egraph.ir import (
    ArrayAttr,
    GraphError,
    GraphMeta,
    Node,
    TensorGraph,
    TensorType,
    identical_weights,
    make_attrs,
    toposort,
)
from eqsat.egraph.onnx_types import TypeSources, value_type
from eqsat.egraph.opdefs.base import ShapeError
from eqsat.egraph.ops import OPS, infer_node
from eqsat.errors import InputError

MIN_OPSET = 13
EXTERNAL_DATA_THRESHOLD = 1 << 30  # weights above 1 GiB in total go to an external data file


# ------------------------------------------------------------------------------------ loading


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an .onnx file; InputError on anything unreadable.

    Weight bytes are *not* copied into the proto: large embedded initializers become
    external-data references to their bytes in the file itself (:mod:`eqsat.egraph.onnx_files`),
    and external data files are not loaded either (protobuf cannot hold a tensor over 2 GB, even
    in memory). :func:`import_onnx` memory-maps both; ``onnx_files.materialize`` makes a
    self-contained copy for whoever needs one. Here the files are only checked to exist and to
    be long enough.
    """
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{p}: is a directory, not an .onnx file")
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        model = onnx_files.read_skeleton(p, SMALL_TENSOR + 1)
        if model is None:
            model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError, IndexError) as e:
        raise InputError(f"{p}: not a readable ONNX model ({_one_line(e)})") from e
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InputError(f"{p}: not an ONNX model (no graph)")
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc, offset, length = onnx_files.external_ref(t)
            f = p.parent / loc
            # as onnx and onnxruntime do: a data file lies in the model's folder or below it
            if Path(loc).is_absolute() or not f.resolve().is_relative_to(p.parent.resolve()):
                raise InputError(
                    f"{p}: external data {loc!r} of weight {t.name!r} lies outside the "
                    "model's folder"
                )
            if not f.is_file() or f.stat().st_size < offset + length:
                raise InputError(
                    f"{p}: external data {loc!r} of weight {t.name!r} is missing or truncated"
                )
    return model


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


# ------------------------------------------------------------------------------------ import


def _attr_value(a: onnx.AttributeProto):
    v = onnx.helper.get_attribute_value(a)
    if a.type == onnx.AttributeProto.TENSOR:
        return ArrayAttr.of(onnx.numpy_helper.to_array(v))
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return tuple(x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v)
    if a.type == onnx.AttributeProto.FLOAT:
        return float(v)
    return v


_GRAPH_ATTRS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_OPAQUE_ATTRS = _GRAPH_ATTRS + (
    onnx.AttributeProto.SPARSE_TENSOR,
    onnx.AttributeProto.SPARSE_TENSORS,
    onnx.AttributeProto.TENSORS,
    onnx.AttributeProto.TYPE_PROTO,
    onnx.AttributeProto.TYPE_PROTOS,
)


def _free_names(graph: onnx.GraphProto) -> set[str]:
    """Names a subgraph reads from its enclosing scopes."""
    bound = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    free: set[str] = set()
    for n in graph.node:
        free |= {i for i in n.input if i and i not in bound}
        for a in n.attribute:
            for g in _subgraphs(a):
                free |= _free_names(g) - bound
        bound |= set(n.output)
    free |= {o.name for o in graph.output if o.name not in bound}
    return free


def _subgraphs(a: onnx.AttributeProto) -> list[onnx.GraphProto]:
    if a.type == onnx.AttributeProto.GRAPH:
        return [a.g]
    if a.type == onnx.AttributeProto.GRAPHS:
        return list(a.graphs)
    return []


def node_from_proto(n: onnx.NodeProto) -> Node:
    domain = "" if n.domain == "ai.onnx" else n.domain
    known = domain == "" and n.op_type in OPS and n.op_type != "Constant"
    if known and not any(a.type in _OPAQUE_ATTRS or a.ref_attr_name for a in n.attribute):
        attrs = make_attrs({a.name: _attr_value(a) for a in n.attribute})
        return Node(n.op_type, tuple(n.input), tuple(n.output), attrs, domain, n.name)
    implicit: set[str] = set()
    for a in n.attribute:
        for g in _subgraphs(a):
            implicit |= _free_names(g)
    return Node(
        n.op_type,
        tuple(n.input),
        tuple(n.output),
        (),
        n.domain,
        n.name,
        opaque=n.SerializeToString(),
        implicit=tuple(sorted(implicit - set(n.input))),
    )


def constant_value(n: onnx.NodeProto) -> np.ndarray:
    """The value of a Constant node (every attribute form)."""
    if len(n.attribute) != 1:
        raise InputError(f"Constant node {n.name or n.output[0]!r} must have one value attribute")
    a = n.attribute[0]
    if a.name == "value":
        return onnx.numpy_helper.to_array(a.t)
    if a.name == "sparse_value":
        return onnx.numpy_helper.to_array(a.sparse_tensor)
    v = onnx.helper.get_attribute_value(a)
    kinds = {
        "value_float": np.float32,
        "value_floats": np.float32,
        "value_int": np.int64,
        "value_ints": np.int64,
    }
    if a.name in kinds:
        return np.array(v, dtype=kinds[a.name])
    raise InputError(f"Constant node {n.name or n.output[0]!r}: unsupported attribute {a.name}")


def _convert_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
    if opset >= MIN_OPSET:
        return model
    try:
        import onnx.version_converter

        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # the converter raises many kinds of errors
        raise InputError(f"cannot convert opset {opset} to {MIN_OPSET}: {_one_line(e)}") from e


def import_onnx(
    model: onnx.ModelProto | str | os.PathLike, base_dir: str | os.PathLike | None = None
) -> TensorGraph:
    """ONNX model (or path) → checked TensorGraph. InputError on anything eqsat cannot take.

    ``base_dir`` is where a ModelProto's external data files lie (a path brings its own)."""
    if not isinstance(model, onnx.ModelProto):
        base_dir = Path(model).parent
        model = load_model(model)
    base = Path(base_dir) if base_dir is not None else None
    model = _convert_opset(model)
    g = model.graph
    sources = TypeSources(model, infer=weight_bytes(model) <= EXTERNAL_DATA_THRESHOLD)

    weights: dict[str, np.ndarray] = {}
    maps: dict[Path, np.ndarray] = {}
    for t in g.initializer:
        weights[t.name] = onnx_files.read_tensor(t, base, maps)
    for st in g.sparse_initializer:
        weights[st.values.name] = onnx.numpy_helper.to_array(st)

    types: dict[str, TensorType] = {}
    inputs: list[str] = []
    for vi in g.input:
        if vi.name in weights:
            continue  # an initializer listed as input: treated as a constant weight
        t = value_type(vi, "input", fresh_dims=True)
        if t is None:
            raise InputError(f"input {vi.name!r} has no tensor type or rank")
        types[vi.name] = t
        inputs.append(vi.name)

    nodes: list[Node] = []
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            weights[n.output[0]] = constant_value(n)
        else:
            nodes.append(node_from_proto(n))
    for name, w in weights.items():
        if w.dtype == object:
            raise InputError(f"weight {name!r}: string tensors are not supported")
        types[name] = TensorType(w.dtype.name, tuple(w.shape))

    try:
        nodes = toposort(nodes, list(inputs) + list(weights))
    except GraphError as e:
        raise InputError(str(e)) from e

    opset = {o.domain: o.version for o in model.opset_import}.get("", MIN_OPSET)
    consts = ConstEval(weights)
    for node in nodes:
        out_types = _infer_types(node, types, consts, sources, opset)
        for o, t in zip(node.outputs, out_types, strict=False):
            if o:
                types[o] = t
        consts.visit(node, types)

    outputs = tuple(o.name for o in g.output)
    if not outputs:
        raise InputError("the graph has no outputs")
    for o in g.output:
        if o.name not in types:
            raise InputError(f"graph output {o.name!r} is not produced by any node")
    meta = GraphMeta(
        opset_imports=tuple(sorted((o.domain, o.version) for o in model.opset_import)),
        ir_version=model.ir_version,
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        model_version=model.model_version,
        domain=model.domain,
        doc_string=model.doc_string,
        graph_name=g.name or "main",
        graph_doc_string=g.doc_string,
        metadata_props=tuple((p.key, p.value) for p in model.metadata_props),
        functions=tuple(f.SerializeToString() for f in model.functions),
    )
    graph = TensorGraph(tuple(inputs), outputs, tuple(nodes), types, weights, meta)
    try:
        graph.check()
    except GraphError as e:
        raise InputError(str(e)) from e
    return graph


def _infer_types(node, types, consts, sources: TypeSources, opset) -> list[TensorType | None]:
    """The op table's inference; where it has none (an op outside the table) or fails, the
    other sources (:class:`~eqsat.egraph.onnx_types.TypeSources`)."""
    label = f"node {node.name!r} ({node.op})" if node.name else f"{node.op} node"
    reason = ""
    if node.opaque is None:
        ins = [types[i] if i else None for i in node.inputs]
        try:
            get = consts.get_sym if node.op in SYMBOLIC_CONSUMERS else consts.get
            out = infer_node(node, ins, [get(i) for i in node.inputs], opset)
            if len(out) >= len([o for o in node.outputs if o]):
                return out
        except ShapeError as e:
            reason = str(e)
    return sources.node_types(node, types, label, reason)


# ------------------------------------------------------------------------------------ export


def _attr_to_proto(name: str, v) -> onnx.AttributeProto:
    if isinstance(v, ArrayAttr):
        return onnx.helper.make_attribute(name, onnx.numpy_helper.from_array(v.array()))
    if isinstance(v, tuple):
        return onnx.helper.make_attribute(name, list(v))
    return onnx.helper.make_attribute(name, v)


def _tensor_type_proto(name: str, t: TensorType) -> onnx.ValueInfoProto:
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(t.dtype))
    return onnx.helper.make_tensor_value_info(name, elem, list(t.shape))


PENDING = "__eqsat_pending__"  # location of external tensors whose bytes save_model writes
SMALL_TENSOR = 1024  # bytes: tensors up to this size stay inline even in external-data models


def _initializer(name: str, w: np.ndarray, external: bool) -> onnx.TensorProto:
    if not external or w.nbytes <= SMALL_TENSOR or w.dtype.name not in onnx_files.PLAIN_DTYPES:
        return onnx.numpy_helper.from_array(np.asarray(w), name)
    t = onnx.TensorProto()
    t.name = name
    t.dims.extend(w.shape)
    t.data_type = onnx.helper.np_dtype_to_tensor_dtype(w.dtype)
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value=PENDING)
    return t


def export_onnx(graph: TensorGraph, inline_weights: bool = True) -> onnx.ModelProto:
    """TensorGraph → ModelProto that keeps names, types, opsets and metadata.

    When the weights exceed ``EXTERNAL_DATA_THRESHOLD``, or ``inline_weights`` is False, the
    large ones are left out of the proto (protobuf cannot hold more than 2 GB; copying them in
    costs time and memory) and marked external: :func:`save_model` with ``weights=`` writes
    their bytes (streamed into the file, or into a data file past the threshold). Otherwise the
    model is self-contained."""
    keep = set(graph.outputs) | {i for n in graph.nodes for i in n.implicit}
    rename = identical_weights(graph.weights, keep)
    r = lambda name: rename.get(name, name)  # noqa: E731

    nodes = []
    for n in graph.nodes:
        if n.opaque is not None:
            p = onnx.NodeProto()
            p.ParseFromString(n.opaque)
            del p.input[:]
            p.input.extend(r(i) for i in n.inputs)
            del p.output[:]
            p.output.extend(n.outputs)
            nodes.append(p)
            continue
        p = onnx.helper.make_node(
            n.op, [r(i) for i in n.inputs], list(n.outputs), name=n.name or None, domain=n.domain
        )
        p.attribute.extend(_attr_to_proto(k, v) for k, v in n.attrs)
        nodes.append(p)

    used = {r(i) for n in graph.nodes for i in n.reads} | set(graph.outputs)
    kept = {k: w for k, w in graph.weights.items() if k in used and k not in rename}
    external = not inline_weights or sum(w.nbytes for w in kept.values()) > EXTERNAL_DATA_THRESHOLD
    inits = [_initializer(name, w, external) for name, w in kept.items()]
    g = onnx.helper.make_graph(
        nodes,
        graph.meta.graph_name,
        [_tensor_type_proto(i, graph.types[i]) for i in graph.inputs],
        [_tensor_type_proto(o, graph.types[o]) for o in graph.outputs],
        initializer=inits,
        doc_string=graph.meta.graph_doc_string or None,
    )
    m = graph.meta
    model = onnx.helper.make_model(
        g,
        opset_imports=[onnx.helper.make_opsetid(d, v) for d, v in m.opset_imports],
        ir_version=m.ir_version,
        producer_name=m.producer_name,
        producer_version=m.producer_version,
        model_version=m.model_version,
        domain=m.domain,
        doc_string=m.doc_string,
    )
    for k, v in m.metadata_props:
        model.metadata_props.add(key=k, value=v)
    for fb in m.functions:
        f = onnx.FunctionProto()
        f.ParseFromString(fb)
        model.functions.append(f)
    return model


def weight_bytes(model: onnx.ModelProto) -> int:
    """Bytes of the initializers held in memory (raw_data; ByteSize() is unsafe past 2 GB)."""
    return sum(len(t.raw_data) or t.ByteSize() for t in model.graph.initializer)


def save_model(
    model: onnx.ModelProto,
    path: str | os.PathLike,
    weights: Mapping[str, np.ndarray] | None = None,
) -> list[Path]:
    """Write ``model`` to ``path``. Weights :func:`export_onnx` left pending get their bytes
    from ``weights``: streamed into the file itself (:func:`onnx_files.write_inline`), or into
    ``<name>.data`` when they exceed ``EXTERNAL_DATA_THRESHOLD``; a model built elsewhere whose
    weights exceed it is also split. Not atomic by itself (the pipeline writes into a temporary
    directory and renames). Returns the files."""
    p = Path(path)
    pending = [
        t
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        and any(e.key == "location" and e.value == PENDING for e in t.external_data)
    ]
    data = p.name + ".data"
    if pending and weights is None:
        raise ValueError("this model has pending external weights: pass weights=")
    size = sum(np.asarray(weights[t.name]).nbytes for t in pending) if pending else 0
    if pending and size + weight_bytes(model) <= EXTERNAL_DATA_THRESHOLD:
        onnx_files.write_inline(model, p, weights, {t.name for t in pending})
        return [p]
    if pending:
        model_out = onnx.ModelProto()
        model_out.CopyFrom(model)
        pending = [t for t in model_out.graph.initializer if t.name in {u.name for u in pending}]
        with open(p.parent / data, "wb") as f:
            for t in pending:
                offset = -(-f.tell() // 4096) * 4096  # page-aligned, so readers can mmap
                f.seek(offset)
                w = np.ascontiguousarray(weights[t.name])
                w.tofile(f)
                del t.external_data[:]
                for k, v in (("location", data), ("offset", offset), ("length", w.nbytes)):
                    t.external_data.add(key=k, value=str(v))
        onnx.save_model(model_out, str(p))
        return [p, p.parent / data]
    if weight_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        onnx.save_model(
            model,
            str(p),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data,
            size_threshold=SMALL_TENSOR,
        )
        return [p, p.parent / data]
    onnx.save_model(model, str(p))
    return [p]


def value_names(nodes: Iterable[Node]) -> set[str]:
    return {o for n in nodes for o in n.outputs if o}
