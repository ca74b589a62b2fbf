"""ONNX ↔ TensorGraph: ``import_onnx`` (ModelProto → TensorGraph) and ``export_onnx`` (back).

Import sorts nodes topologically, turns initializers and Constant nodes into weights, converts
opsets older than 13 with onnx.version_converter, keeps symbolic dims as symbols (an unnamed
dynamic dim of an input gets a generated symbol), and infers every value's type with the op
table. Values that can be computed at compile time (weights, Shape of static shapes, ...) are
propagated during inference so that Reshape/Slice/Expand shape arguments are known; they stay
nodes here — :mod:`eqsat.egraph.passes` folds them. Where the op table cannot infer a type
(an op outside the table, or a shape argument computed from a symbolic dim) the type from ONNX's
own shape inference is used; if there is none either, import fails with a one-line InputError.

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

from eqsat.egraph.const_eval import SYMBOLIC_CONSUMERS, ConstEval
from eqsat.egraph.ir import (
    ArrayAttr,
    GraphError,
    GraphMeta,
    Node,
    TensorGraph,
    TensorType,
    make_attrs,
    toposort,
)
from eqsat.egraph.opdefs.base import ShapeError
from eqsat.egraph.opdefs.elementwise import onnx_dtype
from eqsat.egraph.ops import OPS, infer_node
from eqsat.errors import InputError

MIN_OPSET = 13
EXTERNAL_DATA_THRESHOLD = 1 << 30  # weights above 1 GiB in total go to an external data file


# ------------------------------------------------------------------------------------ loading


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Read an .onnx file; InputError on anything unreadable.

    External weight data is *not* loaded into the proto (protobuf cannot hold a tensor over
    2 GB, even in memory): :func:`import_onnx` reads it from the data files with numpy. Here the
    files are only checked to exist and to be long enough.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as e:
        raise InputError(f"{p}: not a readable ONNX model ({_one_line(e)})") from e
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise InputError(f"{p}: not an ONNX model (no graph)")
    for t in model.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            loc, offset, length = _external_ref(t)
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


def _external_ref(t: onnx.TensorProto) -> tuple[str, int, int]:
    ext = {e.key: e.value for e in t.external_data}
    n = int(np.prod(t.dims, dtype=np.int64))
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return ext.get("location", ""), int(ext.get("offset", 0)), int(ext.get("length", n * itemsize))


def _read_tensor(t: onnx.TensorProto, base_dir: Path | None) -> np.ndarray:
    """A weight as a numpy array; external data is memory-mapped read-only from its file."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        try:
            return onnx.numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:  # the stored data does not fill the declared dims
            dims = [int(d) for d in t.dims]
            raise InputError(f"weight {t.name!r} of shape {dims}: {_one_line(e)}") from e
    if base_dir is None:
        raise InputError(f"weight {t.name!r} is in an external file: load the model from a path")
    loc, offset, _ = _external_ref(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    shape = tuple(int(d) for d in t.dims)
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.zeros(shape, dtype)
    return np.memmap(base_dir / loc, dtype=dtype, mode="r", offset=offset, shape=shape)


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


def _value_type(vi: onnx.ValueInfoProto, what: str, fresh_dims: bool) -> TensorType | None:
    """TensorType of an ONNX value_info; None if the type (or its rank) is unknown."""
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
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.dim_param:
            dims.append(d.dim_param)
        elif fresh_dims:
            dims.append(f"{vi.name}_d{k}")
        else:
            return None
    return TensorType(dtype, tuple(dims))


def _convert_opset(model: onnx.ModelProto) -> onnx.ModelProto:
    opset = {o.domain: o.version for o in model.opset_import}.get("", 0)
    if opset >= MIN_OPSET:
        return model
    try:
        import onnx.version_converter

        return onnx.version_converter.convert_version(model, MIN_OPSET)
    except Exception as e:  # the converter raises many kinds of errors
        raise InputError(f"cannot convert opset {opset} to {MIN_OPSET}: {_one_line(e)}") from e


def _onnx_inferred_types(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    """ONNX's own shape inference, used as a fallback; {} when it cannot run."""
    if weight_bytes(model) > EXTERNAL_DATA_THRESHOLD:
        return {}
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # inference failures are not fatal: our own inference runs first
        return {}
    g = inferred.graph
    return {vi.name: vi for vi in list(g.value_info) + list(g.output)}


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
    onnx_types = _onnx_inferred_types(model)

    weights: dict[str, np.ndarray] = {}
    for t in g.initializer:
        weights[t.name] = _read_tensor(t, base)
    for st in g.sparse_initializer:
        weights[st.values.name] = onnx.numpy_helper.to_array(st)

    types: dict[str, TensorType] = {}
    inputs: list[str] = []
    for vi in g.input:
        if vi.name in weights:
            continue  # an initializer listed as input: treated as a constant weight
        t = _value_type(vi, "input", fresh_dims=True)
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
        out_types = _infer_types(node, types, consts, onnx_types, opset)
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


def _infer_types(node, types, consts, onnx_types, opset) -> list[TensorType]:
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
    fallback = []
    for o in node.outputs:
        vi = onnx_types.get(o) if o else None
        t = _value_type(vi, "value", fresh_dims=True) if vi is not None else None
        if o and t is None:
            if node.opaque is not None:
                raise InputError(
                    f"{label}: op {node.domain + '.' if node.domain else ''}{node.op} is unknown "
                    f"to eqsat and the type of its output {o!r} cannot be inferred"
                )
            raise InputError(f"{label}: cannot infer output types: {reason}")
        fallback.append(t)
    return fallback


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


def _dedup_weights(graph: TensorGraph, keep: set[str]) -> dict[str, str]:
    """Map each weight to a canonical name among identical tensors (names in keep stay)."""
    canon: dict[tuple, str] = {}
    rename: dict[str, str] = {}
    for name in sorted(graph.weights, key=lambda n: (n not in keep, n)):
        w = np.asarray(graph.weights[name])  # not ascontiguousarray: it makes 0-d arrays 1-d
        key = (w.dtype.str, w.shape, hash(w.tobytes()))
        twin = graph.weights.get(canon.get(key, ""))
        same = twin is not None and twin.shape == w.shape and np.array_equal(twin, w)
        if same and name not in keep:
            rename[name] = canon[key]
        else:
            canon.setdefault(key, name)
    return rename


PENDING = "__eqsat_pending__"  # location of external tensors whose bytes save_model writes
SMALL_TENSOR = 1024  # bytes: tensors up to this size stay inline even in external-data models


def _initializer(name: str, w: np.ndarray, external: bool) -> onnx.TensorProto:
    if not external or w.nbytes <= SMALL_TENSOR:
        return onnx.numpy_helper.from_array(np.asarray(w), name)
    t = onnx.TensorProto()
    t.name = name
    t.dims.extend(w.shape)
    t.data_type = onnx.helper.np_dtype_to_tensor_dtype(w.dtype)
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value=PENDING)
    return t


def export_onnx(graph: TensorGraph) -> onnx.ModelProto:
    """TensorGraph → ModelProto that keeps names, types, opsets and metadata.

    When the weights exceed ``EXTERNAL_DATA_THRESHOLD`` the large ones are left out of the proto
    (protobuf cannot hold them) and marked external: :func:`save_model` with ``weights=`` writes
    their bytes. Smaller models are self-contained."""
    keep = set(graph.outputs) | {i for n in graph.nodes for i in n.implicit}
    rename = _dedup_weights(graph, keep)
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
    external = sum(w.nbytes for w in kept.values()) > EXTERNAL_DATA_THRESHOLD
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
    """Write ``model`` to ``path``, plus ``<name>.data`` for external weights: those
    :func:`export_onnx` left pending (their bytes come from ``weights``) or, for a model built
    elsewhere, all large ones when they exceed ``EXTERNAL_DATA_THRESHOLD``. Not atomic by
    itself (the pipeline writes into a temporary directory and renames). Returns the files."""
    p = Path(path)
    pending = [
        t
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
        and any(e.key == "location" and e.value == PENDING for e in t.external_data)
    ]
    data = p.name + ".data"
    if pending:
        if weights is None:
            raise ValueError("this model has pending external weights: pass weights=")
        with open(p.parent / data, "wb") as f:
            for t in pending:
                offset = -(-f.tell() // 4096) * 4096  # page-aligned, so readers can mmap
                f.seek(offset)
                w = np.ascontiguousarray(weights[t.name])
                w.tofile(f)
                del t.external_data[:]
                for k, v in (("location", data), ("offset", offset), ("length", w.nbytes)):
                    t.external_data.add(key=k, value=str(v))
        onnx.save_model(model, str(p))
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
