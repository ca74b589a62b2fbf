"""What the e-classes of a serialized e-graph hold: each e-node read as an op, each class typed.

Consumes a :class:`~eqsat.egraph.serialized.SerializedEGraph` and the
:class:`~eqsat.egraph.encode.Encoding` it grew from; produces :class:`View` s (one e-node read as a
leaf, a typed op with canonical attributes, a generic node or an output projection) and a
TensorType per e-class.

- :func:`view` reads one e-node — shared by the Python-driven rewrites of ``eqsat.rules``
  (which look for groups of e-nodes), by costing and by decoding in ``eqsat.extract``.
- :func:`class_types` gives every e-class its TensorType: the type of the original value bound
  in it (its let) when there is one, else inferred with the op table from its children's types
  (new classes made by rules). A multi-output generic node's class has a tuple of types.

It lives in the e-graph layer (not in ``extract``) because rewrites need it too; it was split
out of the decoder when the first Python-driven rewrite (horizontal merging) needed types.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from eqsat.egraph.encode import Encoding
from eqsat.egraph.ir import AttrValue, Node, TensorType, make_attrs
from eqsat.egraph.lang import BY_CTOR, OpSpec
from eqsat.egraph.opdefs.base import ShapeError
from eqsat.egraph.ops import infer_node
from eqsat.egraph.serialized import SerializedEGraph

ClassType = TensorType | tuple[TensorType | None, ...]
# the fusion terms of eqsat.egraph.lang: views of their own kind, typed as their operand
FUSION_TERMS = ("lane", "kernel")


@dataclass(frozen=True)
class View:
    kind: str  # input | weight | ints | scalar | none | op | generic | output | lane | kernel | ..
    op: str = ""  # ONNX op type (op, generic)
    spec: OpSpec | None = None
    values: tuple = ()  # canonical attribute values (op)
    inputs: tuple[str | None, ...] = ()  # input classes, None for an omitted one
    implicit: tuple[str, ...] = ()  # classes a generic node's subgraphs capture
    name: str = ""  # input / weight name; generic key
    literal: tuple = ()  # ints: the values; scalar: (value, dtype)
    index: int = 0  # output projection: which output

    def attrs(self, enc: Encoding) -> dict[str, AttrValue]:
        """Attributes for type inference and cost models (canonical: every one explicit)."""
        if self.kind == "generic":
            return enc.generic[self.name].attr
        assert self.spec is not None
        return dict(zip((a.name for a in self.spec.attrs), self.values, strict=True))


def none_classes(eg: SerializedEGraph) -> set[str]:
    return {n.eclass for n in eg.nodes.values() if n.op == "Tensor.none"}


def view(eg: SerializedEGraph, nid: str, enc: Encoding, nones: set[str]) -> View:
    node = eg.nodes[nid]
    if not node.op.startswith("Tensor."):
        return View("other")
    name, kids = node.op[len("Tensor.") :], node.children
    if name in ("input", "weight"):
        return View(name, name=eg.literal(kids[0]))
    if name == "ints":
        return View("ints", literal=eg.literal(kids[0]))
    if name == "scalar":
        return View("scalar", literal=(eg.literal(kids[0]), eg.literal(kids[1])))
    if name == "none":
        return View("none")
    if name == "output":
        return View("output", inputs=(eg.nodes[kids[0]].eclass,), index=eg.literal(kids[1]))
    if name in FUSION_TERMS:  # lane(x), kernel(e): their operand's value (eqsat.rules.fusion)
        return View(name, inputs=(eg.nodes[kids[0]].eclass,))

    def opt(c: str) -> str | None:
        return None if c in nones else c

    if name == "node":
        key, ins = eg.literal(kids[0]), eg.literal(kids[1])
        orig = enc.generic[key]
        n = len(orig.inputs)
        return View("generic", orig.op, None, (), tuple(map(opt, ins[:n])), ins[n:], key)
    spec = BY_CTOR.get(name)
    if spec is None:
        return View("other")
    if spec.inputs == "*":
        ins, rest = eg.literal(kids[0]), kids[1:]
    else:
        k = len(spec.inputs)
        ins, rest = tuple(opt(eg.nodes[c].eclass) for c in kids[:k]), kids[k:]
    return View("op", spec.op, spec, tuple(eg.literal(c) for c in rest), tuple(ins))


def is_tuple(v: View, enc: Encoding) -> bool:
    """A multi-output generic node: its class is a tuple, its outputs are projections."""
    if v.kind != "generic":
        return False
    outs = enc.generic[v.name].outputs
    return not (len(outs) == 1 and outs[0])


def leaf_type(v: View, enc: Encoding) -> TensorType | None:
    if v.kind in ("input", "weight"):
        return enc.graph.types.get(v.name)
    if v.kind == "ints":
        return TensorType("int64", (len(v.literal),))
    if v.kind == "scalar":
        return TensorType(v.literal[1], ())
    return None


def leaf_value(v: View, enc: Encoding) -> np.ndarray | None:
    if v.kind == "weight":
        return enc.graph.weights.get(v.name)
    if v.kind == "ints":
        return np.array(v.literal, dtype=np.int64)
    if v.kind == "scalar":
        return np.array(v.literal[0], dtype=v.literal[1])
    return None


def class_types(
    eg: SerializedEGraph, enc: Encoding, views: Mapping[str, View], classes: Sequence[str]
) -> dict[str, ClassType]:
    """A type for every class of ``classes`` that has one (see the module docstring)."""
    value_of = enc.value_of_let
    types: dict[str, ClassType] = {}
    for let, c in eg.lets.items():
        if let in value_of and c not in types:
            types[c] = enc.graph.types[value_of[let]]
    consts: dict[str, np.ndarray] = {}
    for c in classes:
        for nid in eg.classes[c]:
            val = leaf_value(views[nid], enc)
            if val is not None:
                consts.setdefault(c, val)
    parents: dict[str, list[str]] = {}
    todo: list[str] = []
    wanted = set(classes)
    for c in classes:
        for nid in eg.classes[c]:
            if views[nid].kind != "other":
                todo.append(nid)
                # a Concat's inputs sit in a Vec[Tensor] child: its view names them, so it is
                # retried when one of them gets its type (a concatenation of new classes, e.g.
                # of folded weights, stayed untyped, and an e-node over it cost infinity)
                kids = {*eg.child_classes(nid), *(i for i in views[nid].inputs if i)}
                for k in kids:
                    parents.setdefault(k, []).append(nid)
    while todo:
        nid = todo.pop()
        c = eg.nodes[nid].eclass
        if c in types or c not in wanted:
            continue
        t = _node_type(views[nid], enc, types, consts)
        if t is not None:
            types[c] = t
            todo.extend(parents.get(c, ()))
    return types


def _node_type(v: View, enc: Encoding, types, consts) -> ClassType | None:
    if v.kind in ("input", "weight", "ints", "scalar"):
        return leaf_type(v, enc)
    if v.kind == "generic":
        orig = enc.generic[v.name]
        outs = tuple(enc.graph.types.get(o) if o else None for o in orig.outputs)
        return outs[0] if len(outs) == 1 else outs
    if v.kind in FUSION_TERMS:
        return types.get(v.inputs[0])
    if v.kind == "output":
        tup = types.get(v.inputs[0])
        return tup[v.index] if isinstance(tup, tuple) and v.index < len(tup) else None
    if v.kind != "op" or any(c is not None and c not in types for c in v.inputs):
        return None
    ins = [types[c] if c is not None else None for c in v.inputs]
    if any(isinstance(t, tuple) for t in ins):
        return None
    node = Node(v.op, tuple(c or "" for c in v.inputs), ("y",), make_attrs(v.attrs(enc)))
    try:
        out = infer_node(node, ins, [consts.get(c) if c else None for c in v.inputs])
    except ShapeError:
        return None
    return out[0] if out else None


def constant_classes(eg: SerializedEGraph, views: dict, classes) -> set[str]:
    """E-classes whose value is known at compile time: weight and literal leaves, and typed ops
    all of whose inputs are such classes (a least fixpoint). Generic nodes never count: an opaque
    op may be random or stateful."""
    constant = {
        eg.nodes[nid].eclass
        for nid, v in views.items()
        if v.kind in ("weight", "ints", "scalar", "none")
    }
    changed = True
    while changed:
        changed = False
        for c in classes:
            if c in constant:
                continue
            for nid in eg.classes[c]:
                v = views.get(nid)
                if (
                    v is not None
                    and v.kind == "op"
                    and all(i is None or i in constant for i in v.inputs)
                ):
                    constant.add(c)
                    changed = True
                    break
    return constant


@dataclass
class Snapshot:
    """One serialized state of an encoding's e-graph, read for rewrites driven from Python: every
    e-node's :class:`View`, every e-class's type, the constant (weight-only) classes, and
    :meth:`term`, which names an e-class as an egglog term so that actions can refer to it."""

    eg: SerializedEGraph
    enc: Encoding
    views: dict[str, View]
    types: dict[str, ClassType]
    constant: set[str]
    lets_of: dict[str, list[str]]  # class -> its let names, in graph order
    _terms: dict[str, object] = field(default_factory=dict)

    @staticmethod
    def take(enc: Encoding) -> Snapshot:
        from eqsat.egraph.serialized import serialize

        eg = serialize(enc.egraph)
        nones = none_classes(eg)
        classes = [c for c, s in eg.sorts.items() if s.endswith("Tensor")]
        views = {nid: view(eg, nid, enc, nones) for c in classes for nid in eg.classes[c]}
        types = class_types(eg, enc, views, classes)
        lets_of: dict[str, list[str]] = {}
        for name, c in sorted(eg.lets.items(), key=lambda kv: _let_number(kv[0])):
            lets_of.setdefault(c, []).append(name)
        return Snapshot(eg, enc, views, types, constant_classes(eg, views, classes), lets_of)

    def nodes(self, c: str) -> list[tuple[str, View]]:
        """The unsubsumed e-nodes of class ``c`` with their views."""
        eg = self.eg
        return [
            (n, self.views[n])
            for n in eg.classes.get(c, ())
            if n in self.views and not eg.nodes[n].subsumed
        ]

    def ops(self, op: str) -> list[tuple[str, View]]:
        """(class, view) of every unsubsumed typed e-node of ONNX op ``op``, in a deterministic
        order (graph order of the class, then inputs and attributes)."""
        out = [
            (self.eg.nodes[n].eclass, v)
            for n, v in self.views.items()
            if v.kind == "op" and v.op == op and not self.eg.nodes[n].subsumed
        ]
        out.sort(key=lambda cv: (self.order(cv[0]), cv[1].inputs, cv[1].values))
        return out

    def tensor_type(self, c: str | None) -> TensorType | None:
        """The class's type when it is a single tensor's (None for tuples and untyped)."""
        t = self.types.get(c) if c is not None else None
        return t if isinstance(t, TensorType) else None

    def order(self, c: str) -> tuple[int, str]:
        """A deterministic sort key: graph order of the class's first original value."""
        lets = self.lets_of.get(c)
        return (_let_number(lets[0]), c) if lets else (1 << 62, c)

    def term(self, c: str, depth: int = 3):
        """An egglog ``Tensor`` term denoting class ``c``: its let when it has one, else a leaf or
        a typed op over terms of its children, at most ``depth`` ops deep; None if there is
        none (e.g. only generic nodes without a let)."""
        if c in self._terms:
            return self._terms[c]
        from egglog import String, Vec, f64

        from eqsat.egraph.encode import ints_vec, let_ref, prim
        from eqsat.egraph.lang import Tensor, ctor

        out = None
        if c in self.lets_of:
            out = let_ref(self.lets_of[c][0])
        for _, v in self.nodes(c):
            if out is not None:
                break
            if v.kind == "input":
                out = Tensor.input(v.name)
            elif v.kind == "weight":
                out = Tensor.weight(v.name)
            elif v.kind == "ints":
                out = Tensor.ints(ints_vec(v.literal))
            elif v.kind == "scalar":
                out = Tensor.scalar(f64(v.literal[0]), String(v.literal[1]))
            elif v.kind == "none":
                out = Tensor.none()
            elif v.kind == "op" and depth > 0 and v.spec is not None:
                kids = [Tensor.none() if k is None else self.term(k, depth - 1) for k in v.inputs]
                if any(k is None for k in kids):
                    continue
                attrs = [prim(a.kind, x) for a, x in zip(v.spec.attrs, v.values, strict=True)]
                args = [Vec[Tensor](*kids)] if v.spec.inputs == "*" else kids
                out = ctor(v.spec.ctor)(*args, *attrs)
        if out is not None:
            self._terms[c] = out
        return out

    def reaches(self, sources: Iterable[str], targets: set[str]) -> set[str]:
        """The ``targets`` reachable downward from ``sources`` through any unsubsumed e-node
        (constant classes are not entered: nothing non-constant lies below them)."""
        seen: set[str] = set()
        stack = list(sources)
        hit: set[str] = set()
        while stack:
            c = stack.pop()
            if c in seen or c in self.constant:
                continue
            seen.add(c)
            if c in targets:
                hit.add(c)
            for n in self.eg.classes.get(c, ()):  # every sort: a Vec[Tensor] leads on
                if not self.eg.nodes[n].subsumed:
                    stack.extend(self.eg.child_classes(n))
        return hit


def _let_number(name: str) -> int:
    digits = name.lstrip("vn")
    return int(digits) if digits.isdigit() else 1 << 61
