"""Chosen e-nodes → TensorGraph, and what each ``Tensor`` e-node means as an ONNX node.

Consumes a :class:`~eqsat.egraph.serialized.SerializedEGraph`, the
:class:`~eqsat.egraph.encode.Encoding` it grew from and a choice of one e-node per e-class;
produces a checked TensorGraph.

- E-nodes are read and e-classes typed by :mod:`eqsat.egraph.classes` (:func:`view`,
  :func:`class_types`), shared with the Python-driven rewrites of ``eqsat.rules``.
- :func:`decode` writes the graph. Graph inputs, outputs, weight names and the values an opaque
  node's subgraphs capture keep their names (an extra Identity gives a second name to a value
  that needs two). Every other value takes an original name of its e-class when it has one,
  else a fresh ``_eq<n>``; any original name denotes the same value, and keeping them keeps
  graphs diffable. Nodes are ordered topologically, preferring the original order. Attributes
  are respelled by :func:`spell_attrs`; weights are copied from the original graph.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence
from dataclasses import replace

import numpy as np

from eqsat.egraph.classes import ClassType, View, is_tuple, leaf_value
from eqsat.egraph.encode import Encoding
from eqsat.egraph.ir import AttrValue, Node, TensorGraph, TensorType, make_attrs
from eqsat.egraph.lang import OpSpec, canonical_attrs, implied
from eqsat.egraph.opdefs.base import ShapeError
from eqsat.egraph.serialized import SerializedEGraph


def spell_attrs(
    spec: OpSpec,
    values: Sequence[AttrValue],
    types: Sequence[TensorType | None],
    hint: tuple[tuple[str, AttrValue], ...] | None = None,
) -> tuple[tuple[str, AttrValue], ...]:
    """ONNX attributes for constructor attribute ``values``: the original spelling ``hint`` when
    it means the same on these input types, else the attributes that differ from their absence."""
    values = tuple(values)
    if hint is not None and canonical_attrs(spec, dict(hint), types) == values:
        return hint
    out: dict[str, AttrValue] = {}
    for a, v in zip(spec.attrs, values, strict=True):
        try:
            imp = implied(spec, a, types)
        except ShapeError:
            imp = None
        if imp is None or imp != v:
            out[a.name] = v
    return make_attrs(out)


class _Names:
    def __init__(self, reserved: set[str]):
        self.taken: set[str] = set()
        self.avoid = set(reserved)
        self.n = 0

    def claim(self, name: str) -> bool:
        if name in self.taken:
            return False
        self.taken.add(name)
        return True

    def fresh(self) -> str:
        while True:
            self.n += 1
            name = f"_eq{self.n}"
            if name not in self.taken and name not in self.avoid:
                self.taken.add(name)
                return name


def decode(
    eg: SerializedEGraph,
    enc: Encoding,
    choice: Mapping[str, str],
    order: Sequence[str],
    views: Mapping[str, View],
    types: Mapping[str, ClassType],
) -> TensorGraph:
    """Write the chosen e-nodes (``order``: children before parents) as a TensorGraph."""
    g = enc.graph
    names = _Names(set(g.types))
    cls_view = {c: views[choice[c]] for c in order}
    # fusion terms (eqsat.rules.fusion) are unfolded: lane(x) is x, and the value e of kernel(e)
    # is written under the kernel class's name; each kernel chosen becomes a group of fusion
    same: dict[str, str] = {}
    for c in order:
        v = cls_view[c]
        if v.kind == "lane":
            same[c] = same.get(v.inputs[0], v.inputs[0])
        elif v.kind == "kernel" and v.inputs[0] not in same:
            same[v.inputs[0]] = c
    name: dict[str, str] = {}
    aliases: dict[str, list[str]] = {}  # class -> extra names (Identity nodes)
    weights: dict[str, np.ndarray] = {}
    for i in g.inputs:
        names.claim(i)
    for c in order:
        v = cls_view[c]
        if v.kind in ("input", "weight"):
            name[c] = v.name
            names.claim(v.name)
        if v.kind == "weight":
            weights[v.name] = g.weights[v.name]

    def pin(c: str, want: str) -> None:
        if name.get(c) == want:
            return
        if c not in name and names.claim(want):
            name[c] = want
        else:
            names.claim(want)
            aliases.setdefault(c, []).append(want)

    for let, o in zip(enc.roots, g.outputs, strict=True):
        pin(eg.lets[let], o)
    for c in order:
        v = cls_view[c]
        if v.kind == "generic":
            for k, cap in zip(v.implicit, enc.generic[v.name].implicit, strict=True):
                pin(k, cap)
    value_of = enc.value_of_let
    originals: dict[str, list[tuple[int, str]]] = {}  # class -> (let number, value name or "")
    for let, c in eg.lets.items():
        if let[:1] in "vn" and let[1:].isdigit():
            originals.setdefault(c, []).append((int(let[1:]), value_of.get(let, "")))
    for c in order:
        v = cls_view[c]
        if c in name or c in same or v.kind in ("none", "other") or is_tuple(v, enc):
            continue  # a lane and a kernel's value are named as what they stand for (below)
        cands = [n for _, n in sorted(originals.get(c, []))]
        if v.kind in ("ints", "scalar"):
            cands.insert(0, enc.const_names.get((v.kind, *v.literal), ""))
        name[c] = next((n for n in cands if n and names.claim(n)), None) or names.fresh()
    for c in order:
        if cls_view[c].kind in ("ints", "scalar"):
            weights[name[c]] = leaf_value(cls_view[c], enc)  # type: ignore[assignment]

    for c in order:  # a lane's class, and a kernel's value: the name of what they stand for
        if c in same:
            name[c] = name[same[c]]

    def ref(c: str | None) -> str:
        return "" if c is None else name[c]

    projections = {(v.inputs[0], v.index): c for c, v in cls_view.items() if v.kind == "output"}
    missing = [name[c] for c in name if c not in types]
    if missing:
        raise ValueError(f"no type is known for the chosen value(s) {missing[:5]}")
    out_types: dict[str, TensorType] = {i: g.types[i] for i in g.inputs}
    out_types.update({name[c]: types[c] for c in name})  # type: ignore[misc]
    nodes: dict[str, Node] = {}
    for c in order:
        v = cls_view[c]
        if v.kind == "op":
            ins = [types[i] if i is not None else None for i in v.inputs]
            hint = enc.spellings.get((v.op, v.values))
            attrs = spell_attrs(v.spec, v.values, ins, hint)  # type: ignore[arg-type]
            inputs = [ref(i) for i in v.inputs]
            while inputs and not inputs[-1]:
                inputs.pop()
            nodes[c] = Node(v.op, tuple(inputs), (name[c],), attrs)
        elif v.kind == "generic":
            orig = enc.generic[v.name]
            if not is_tuple(v, enc):
                outs = (name[c],)
            else:
                outs = tuple(
                    _tuple_output(c, k, o, projections, name, names, out_types, g)
                    for k, o in enumerate(orig.outputs)
                )
            caps = tuple(enc.generic[v.name].implicit)
            ins = tuple(ref(i) for i in v.inputs)
            nodes[c] = Node(
                orig.op, ins, outs, orig.attrs, orig.domain, orig.name, orig.opaque, caps
            )
    ordered = _order(order, cls_view, originals)
    for c, extra in aliases.items():
        for a in extra:
            out_types[a] = types[c]  # type: ignore[assignment]
    body: list[Node] = []
    for c in ordered:
        if c in nodes:
            body.append(nodes[c])
            body.extend(Node("Identity", (name[c],), (a,)) for a in aliases.get(c, ()))
    leaves = [c for c in aliases if c not in nodes]  # an input or weight that is also an output
    body[:0] = [Node("Identity", (name[c],), (a,)) for c in leaves for a in aliases[c]]
    meta = g.meta
    if any(v.kind == "lane" for v in views.values()):  # the e-graph held fusion terms
        meta = replace(g.meta, fusion=_fusion_groups(order, cls_view, name))
    graph = TensorGraph(g.inputs, g.outputs, tuple(body), out_types, weights, meta)
    graph.check()
    return graph


def _in(cls_view, c: str | None) -> str:
    return cls_view[c].kind if c is not None and c in cls_view else ""


def _fusion_groups(order, cls_view, name) -> tuple[tuple[str, ...], ...]:
    """Each chosen ``kernel(e)`` as (its root's value, its epilogue's values...), values in
    ``order`` (children first): what :func:`eqsat.lower.fuse.plan` follows."""
    lanes: set[str] = set()
    for c in order:
        v = cls_view[c]
        if v.kind == "lane" or (v.kind == "op" and any(i in lanes for i in v.inputs if i)):
            lanes.add(c)
    rank = {c: k for k, c in enumerate(order)}
    groups = []
    for c in order:
        if cls_view[c].kind != "kernel":
            continue
        members, stack = set(), [cls_view[c].inputs[0]]
        while stack:
            m = stack.pop()
            if m in members or m not in lanes or cls_view[m].kind != "op":
                continue
            members.add(m)
            stack.extend(i for i in cls_view[m].inputs if i)
        roots = [m for m in members if _in(cls_view, cls_view[m].inputs[0]) == "lane"]
        if len(roots) != 1:
            continue  # not what the fusion rule builds: lowering fuses as it would anyway
        epi = sorted(members - set(roots), key=rank.__getitem__)
        groups.append((name[roots[0]], *(name[m] for m in epi)))
    return tuple(groups)


def _tuple_output(c, k, orig_out, projections, name, names, out_types, g) -> str:
    """The name of output ``k`` of the multi-output node chosen for class ``c``."""
    p = projections.get((c, k))
    if p is not None and p in name:
        return name[p]
    if not orig_out:
        return ""
    out = orig_out if names.claim(orig_out) else names.fresh()
    out_types[out] = g.types[orig_out]
    return out


def _order(order, cls_view, originals) -> list[str]:
    """Kahn's algorithm over the chosen classes, preferring each class's original position;
    a class a rule created goes right after its last input."""
    pos: dict[str, float] = {}
    deps: dict[str, set[str]] = {}
    for c in order:
        v = cls_view[c]
        kids = {k for k in v.inputs + v.implicit if k is not None}
        deps[c] = {k for k in kids if k in cls_view}
        own = [i for i, _ in originals.get(c, [])]
        below = max((pos[k] for k in deps[c]), default=-1.0)
        pos[c] = float(min(own)) if own else below + 0.5
    users: dict[str, list[str]] = {}
    waiting = {c: len(d) for c, d in deps.items()}
    for c, d in deps.items():
        for k in d:
            users.setdefault(k, []).append(c)
    rank = {c: i for i, c in enumerate(order)}
    ready = [(pos[c], rank[c], c) for c in order if waiting[c] == 0]
    heapq.heapify(ready)
    out: list[str] = []
    while ready:
        _, _, c = heapq.heappop(ready)
        out.append(c)
        for u in users.get(c, ()):
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, (pos[u], rank[u], u))
    return out
