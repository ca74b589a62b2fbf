"""TensorGraph: the typed, SSA, topologically ordered graph IR of eqsat.

Consumes nothing (it is the hub type); produced by :mod:`eqsat.egraph.onnx_io` from ONNX and by
the extractor from an e-graph, consumed by export, lowering and the interpreter
(:mod:`eqsat.egraph.interpret`).

Design (see docs/architecture.md):
- Values are named by strings (the ONNX names, kept so that export preserves input/output names).
  Every value is defined exactly once: a graph input, a weight (initializer) or one node output.
- ``Node.op`` is the ONNX op type; its ``domain`` is kept. Ops the op table knows have parsed,
  hashable attributes. Any other op is *opaque*: it keeps its serialized ``NodeProto`` and is
  written back unchanged (inner subgraphs of If/Loop included). The outer-scope values an opaque
  node's subgraphs read are listed as extra ``implicit`` inputs so that dead-code removal and
  renaming see them.
- Dims are ``int`` or ``str`` (a symbol such as ``"batch"``); a dtype is a numpy dtype name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from eqsat.egraph.onnx_files import bytes_view

Dim = int | str
Shape = tuple[Dim, ...]


def identical_weights(
    weights: Mapping[str, np.ndarray], keep: Iterable[str] = ()
) -> dict[str, str]:
    """Each weight that holds the same tensor (dtype, shape, values) as another, mapped to the
    one name export stores it under (names in ``keep`` are never mapped away). Only weights that
    share a dtype and shape are compared, and there only where a sample of their bytes agrees
    (:func:`_sample`; a model's weights are mostly of distinct shapes or contents: hardly
    anything is read), then byte for byte."""
    keep = set(keep)
    groups: dict[tuple, list[str]] = {}
    for name in sorted(weights, key=lambda n: (n not in keep, n)):
        w = weights[name]
        groups.setdefault((w.dtype.str, tuple(w.shape)), []).append(name)
    rename: dict[str, str] = {}
    for names in groups.values():
        if len(names) < 2:
            continue
        canon: dict[bytes, list[str]] = {}  # sample → the distinct tensors with it
        for name in names:
            w = weights[name]
            seen = canon.setdefault(_sample(w), [])
            twin = next((c for c in seen if np.array_equal(weights[c], w)), None)
            if twin is not None and name not in keep:
                rename[name] = twin
            elif twin is None:
                seen.append(name)
    return rename


def _sample(w: np.ndarray, window: int = 4096) -> bytes:
    """A few pages of a tensor's bytes (its start, middle and end): tensors that differ there
    are not compared in full, and weights memory-mapped from a file are barely read."""
    b = bytes_view(w)
    mid = max(0, b.nbytes // 2 - window // 2)
    return bytes(b[:window]) + bytes(b[mid : mid + window]) + bytes(b[-window:])


class GraphError(ValueError):
    """A malformed graph: the message names the offending node or value."""


@dataclass(frozen=True)
class TensorType:
    dtype: str
    shape: Shape

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int:
        """Element count; symbolic dims count as 1 (a lower bound used for cost estimates)."""
        n = 1
        for d in self.shape:
            n *= d if isinstance(d, int) else 1
        return n

    def nbytes(self) -> int:
        return self.numel() * np.dtype(self.dtype).itemsize

    def __str__(self) -> str:
        return f"{self.dtype}[{', '.join(str(d) for d in self.shape)}]"


@dataclass(frozen=True)
class ArrayAttr:
    """A tensor-valued attribute (e.g. ConstantOfShape's ``value``), kept hashable."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    @staticmethod
    def of(a: np.ndarray) -> ArrayAttr:
        a = np.ascontiguousarray(a)
        return ArrayAttr(a.dtype.name, tuple(a.shape), a.tobytes())

    def array(self) -> np.ndarray:
        return np.frombuffer(self.data, dtype=self.dtype).reshape(self.shape).copy()


AttrValue = int | float | str | tuple | ArrayAttr


@dataclass(frozen=True)
class Node:
    op: str
    inputs: tuple[str, ...]  # "" marks an omitted optional input
    outputs: tuple[str, ...]
    attrs: tuple[tuple[str, AttrValue], ...] = ()
    domain: str = ""
    name: str = ""
    opaque: bytes | None = None  # serialized NodeProto for ops outside the op table
    implicit: tuple[str, ...] = ()  # outer-scope values read by an opaque node's subgraphs

    @property
    def attr(self) -> dict[str, AttrValue]:
        return dict(self.attrs)

    @property
    def reads(self) -> tuple[str, ...]:
        """Every value this node depends on (explicit inputs, then implicit captures)."""
        return tuple(i for i in self.inputs if i) + self.implicit

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in self.attrs)
        dom = f"{self.domain}." if self.domain else ""
        tag = " opaque" if self.opaque is not None else ""
        ins = ", ".join(i or "_" for i in self.inputs)
        imp = f" captures({', '.join(self.implicit)})" if self.implicit else ""
        return (
            f"{', '.join(self.outputs)} = {dom}{self.op}{tag}"
            f"{'[' + attrs + ']' if attrs else ''}({ins}){imp}"
        )


def make_attrs(d: Mapping[str, AttrValue]) -> tuple[tuple[str, AttrValue], ...]:
    return tuple(sorted(d.items()))


def _fmt_attr(v: AttrValue) -> str:
    if isinstance(v, ArrayAttr):
        return f"array<{v.dtype}{list(v.shape)}>"
    if isinstance(v, float):
        return repr(v)
    return str(v)


@dataclass(frozen=True)
class GraphMeta:
    """What ONNX export must keep that is not part of the computation."""

    opset_imports: tuple[tuple[str, int], ...] = (("", 17),)
    ir_version: int = 8
    producer_name: str = ""
    producer_version: str = ""
    model_version: int = 0
    domain: str = ""
    doc_string: str = ""
    graph_name: str = "main"
    graph_doc_string: str = ""
    metadata_props: tuple[tuple[str, str], ...] = ()
    functions: tuple[bytes, ...] = ()  # serialized FunctionProtos (custom ops), kept verbatim
    # the kernels extraction chose (eqsat.rules.fusion), for lowering to follow: per kernel,
    # its root's value then its epilogue's values (() where it fused none); None where the
    # e-graph held no fusion terms. Never exported: an ONNX model has no kernels.
    fusion: tuple[tuple[str, ...], ...] | None = None

    @property
    def opset(self) -> int:
        return dict(self.opset_imports).get("", dict(self.opset_imports).get("ai.onnx", 1))


@dataclass(frozen=True, eq=False)
class TensorGraph:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    nodes: tuple[Node, ...]
    types: Mapping[str, TensorType]
    weights: Mapping[str, np.ndarray] = field(default_factory=dict)
    meta: GraphMeta = field(default_factory=GraphMeta)

    def replace(self, **changes) -> TensorGraph:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ queries
    def producers(self) -> dict[str, Node]:
        return {o: n for n in self.nodes for o in n.outputs if o}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for n in self.nodes:
            for i in n.reads:
                users.setdefault(i, []).append(n)
        return users

    def op_histogram(self) -> dict[str, int]:
        hist: dict[str, int] = {}
        for n in self.nodes:
            key = f"{n.domain}.{n.op}" if n.domain else n.op
            hist[key] = hist.get(key, 0) + 1
        return dict(sorted(hist.items()))

    def param_count(self) -> int:
        """Parameters as export stores them: identical weights under several names (a folded
        Identity of a shared weight, a legacy export's aliases) count once."""
        twins = identical_weights(self.weights)
        return int(sum(w.size for k, w in self.weights.items() if k not in twins))

    def param_bytes(self) -> int:
        twins = identical_weights(self.weights)
        return int(sum(w.nbytes for k, w in self.weights.items() if k not in twins))

    # ------------------------------------------------------------------ checks
    def check(self) -> None:
        """Raise :class:`GraphError` unless the graph is SSA, topologically ordered and typed."""
        defined: set[str] = set()
        for name in self.inputs:
            if name in defined:
                raise GraphError(f"input {name!r} is declared twice")
            defined.add(name)
        for name in self.weights:
            if name in defined:
                raise GraphError(f"weight {name!r} shadows an input")
            defined.add(name)
        for idx, node in enumerate(self.nodes):
            where = f"node #{idx} ({node.name or node.op}: {', '.join(node.outputs)})"
            for i in node.reads:
                if i not in defined:
                    raise GraphError(f"{where} reads {i!r} before it is defined")
            for o in node.outputs:
                if not o:
                    continue
                if o in defined:
                    raise GraphError(f"{where} redefines {o!r}")
                defined.add(o)
        for name in defined:
            if name not in self.types:
                raise GraphError(f"value {name!r} has no type")
        for name in self.outputs:
            if name not in defined:
                raise GraphError(f"graph output {name!r} is never defined")
        for name, w in self.weights.items():
            t = self.types[name]
            if tuple(w.shape) != t.shape or w.dtype.name != t.dtype:
                raise GraphError(f"weight {name!r} is {w.dtype.name}{list(w.shape)} but typed {t}")

    # ------------------------------------------------------------------ text form
    def to_text(self) -> str:
        """A stable, human-readable form for logs and golden tests."""
        lines = [f"graph {self.meta.graph_name}(opset {self.meta.opset})"]
        for i in self.inputs:
            lines.append(f"  input  {i}: {self.types[i]}")
        for w in sorted(self.weights):
            lines.append(f"  weight {w}: {self.types[w]}")
        for n in self.nodes:
            outs = ", ".join(f"{o}: {self.types[o]}" if o else "_" for o in n.outputs)
            lines.append(f"  {n}  -> {outs}")
        lines.append(f"  return {', '.join(self.outputs)}")
        return "\n".join(lines)

    __str__ = to_text


def toposort(nodes: Iterable[Node], available: Iterable[str]) -> list[Node]:
    """Order nodes so each comes after its producers; raise GraphError on cycles/missing values.

    Stable: among ready nodes the original order is kept (Kahn's algorithm with a heap on the
    original index).
    """
    import heapq

    nodes = list(nodes)
    have = set(available)
    producer: dict[str, int] = {}
    for idx, n in enumerate(nodes):
        for o in n.outputs:
            if o:
                if o in producer or o in have:
                    raise GraphError(f"value {o!r} is defined more than once")
                producer[o] = idx
    waiting = [0] * len(nodes)
    users: dict[int, list[int]] = {}
    for idx, n in enumerate(nodes):
        deps = set()
        for i in n.reads:
            if i in have:
                continue
            if i not in producer:
                raise GraphError(
                    f"node {n.name or n.op!r} reads {i!r}, which no input, weight or node defines"
                )
            deps.add(producer[i])
        waiting[idx] = len(deps)
        for d in deps:
            users.setdefault(d, []).append(idx)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[Node] = []
    while ready:
        idx = heapq.heappop(ready)
        order.append(nodes[idx])
        for u in users.get(idx, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = [nodes[i].name or nodes[i].op for i, w in enumerate(waiting) if w > 0][:5]
        raise GraphError(f"the graph has a cycle (through nodes {', '.join(map(str, stuck))})")
    return order
