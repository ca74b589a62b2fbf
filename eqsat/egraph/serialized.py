"""An egglog e-graph → plain Python: e-classes, e-nodes with op and children, let names.

Consumes an ``egglog.EGraph``; produces a :class:`SerializedEGraph` that holds no egglog
objects, so extractors and the decoder are plain Python over dicts.

egglog 14 serializes to the egraph-serialize JSON format: ``nodes`` maps a node id to ``op``,
``children`` (node ids, not class ids: a child's class is that node's ``eclass``), ``eclass``,
a static ``cost`` and ``subsumed``; ``class_data`` maps a class id to its sort and, when let
names are bound to it, ``let`` ("$v0, $v7"). Primitives are nodes too: an ``i64`` prints as
``"3"``, an ``f64`` as Rust prints it (``"1e-5"``, ``"inf"``, ``"NaN"``), a ``String`` as a
Rust debug literal (``"\\"a\\\\u{1b}\\""``), a ``Vec`` as op ``"Vec"`` whose children are its
elements. This goes through ``EGraph._serialize`` (egglog-python's own path to that JSON, used by
its visualizer), which maps the internal function names back to the Python ones
(``Tensor.relu``); EGGLOG_NOTES measured 0.3 s for 10k nodes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'"}


@dataclass(frozen=True)
class ENode:
    op: str
    children: tuple[str, ...]  # node ids
    eclass: str
    subsumed: bool = False


@dataclass
class SerializedEGraph:
    nodes: dict[str, ENode]
    classes: dict[str, list[str]]  # class id -> its node ids
    sorts: dict[str, str]  # class id -> sort name ("i64", "Vec[i64]", "...lang.Tensor")
    lets: dict[str, str] = field(default_factory=dict)  # let name (no "$") -> class id

    def child_classes(self, nid: str) -> tuple[str, ...]:
        return tuple(self.nodes[c].eclass for c in self.nodes[nid].children)

    def literal(self, nid: str):
        """The Python value of a primitive node: int, float, str, bool or a tuple (a Vec of
        primitives); for a Vec of e-class references, the tuple of their class ids."""
        n = self.nodes[nid]
        sort = self.sorts.get(n.eclass, "")
        if sort.startswith("Vec["):
            kids = [self.nodes[c] for c in n.children]
            if all(self.sorts.get(k.eclass, "") in _PRIMS for k in kids):
                return tuple(self.literal(c) for c in n.children)
            return tuple(k.eclass for k in kids)
        if sort == "i64":
            return int(n.op)
        if sort == "f64":
            return float(n.op)  # Python reads Rust's "inf", "-inf", "NaN", "1e-5"
        if sort == "String":
            return parse_string(n.op)
        if sort == "bool":
            return n.op == "true"
        raise ValueError(f"node {nid} ({n.op}) of sort {sort!r} is not a primitive")


_PRIMS = ("i64", "f64", "String", "bool")


def parse_string(text: str) -> str:
    """A Rust debug string literal (``"a\\"b\\u{1b}"``) → the string."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ValueError(f"not a string literal: {text!r}")
    s, out, i = text[1:-1], [], 0
    while i < len(s):
        c = s[i]
        if c != "\\":
            out.append(c)
            i += 1
            continue
        e = s[i + 1]
        if e == "u":  # \u{1f600}
            end = s.index("}", i)
            out.append(chr(int(s[i + 3 : end], 16)))
            i = end + 1
        elif e in _ESCAPES:
            out.append(_ESCAPES[e])
            i += 2
        else:
            raise ValueError(f"unknown escape \\{e} in {text!r}")
    return "".join(out)


def from_json(data: dict) -> SerializedEGraph:
    nodes: dict[str, ENode] = {}
    classes: dict[str, list[str]] = {}
    for nid, n in data["nodes"].items():
        node = ENode(n["op"], tuple(n["children"]), n["eclass"], bool(n.get("subsumed", False)))
        nodes[nid] = node
        classes.setdefault(node.eclass, []).append(nid)
    sorts: dict[str, str] = {}
    lets: dict[str, str] = {}
    for cid, d in data.get("class_data", {}).items():
        sorts[cid] = d.get("type", "")
        for name in (d.get("let") or "").split(","):
            name = name.strip().lstrip("$")
            if name:
                lets[name] = cid
    return SerializedEGraph(nodes, classes, sorts, lets)


def serialize(egraph) -> SerializedEGraph:
    """The whole e-graph (every function, every row) as a :class:`SerializedEGraph`."""
    return from_json(json.loads(egraph._serialize().to_json()))
