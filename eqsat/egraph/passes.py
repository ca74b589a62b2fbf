"""Graph-level clean-ups on TensorGraph → TensorGraph: constant folding and dead-code removal.

These run before the e-graph (and are the whole optimizer of the foundation stage). Folding uses
:class:`~eqsat.egraph.const_eval.ConstEval`, the same engine import uses for shape arguments.
"""

from __future__ import annotations

from eqsat.egraph.const_eval import ConstEval
from eqsat.egraph.ir import Node, TensorGraph, TensorType, make_attrs


def fold_constants(graph: TensorGraph, bounded: bool = True) -> TensorGraph:
    """Replace every node whose outputs are compile-time constants by weights. ``bounded``
    refuses results that would grow the model (a huge Expand of a scalar); after extraction the
    weight-only subterms were chosen as free by the cost model, so they are all folded."""
    consts = ConstEval(graph.weights, bounded)
    weights = dict(graph.weights)
    kept: list[Node] = []
    for node in graph.nodes:
        out = consts.visit(node, graph.types)
        if out is None:
            kept.append(node)
            continue
        for name, v in zip(node.outputs, out, strict=False):
            if name:
                weights[name] = v
    if len(kept) == len(graph.nodes):
        return graph
    return eliminate_dead_code(graph.replace(nodes=tuple(kept), weights=weights))


def eliminate_dead_code(graph: TensorGraph) -> TensorGraph:
    """Drop nodes none of whose outputs is used, and unused weights. Inputs are never dropped
    (they are the model's interface)."""
    live = set(graph.outputs)
    kept: list[Node] = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs if o):
            kept.append(node)
            live.update(node.reads)
    kept.reverse()
    weights = {k: v for k, v in graph.weights.items() if k in live}
    keep_names = live | set(graph.inputs) | {o for n in kept for o in n.outputs if o}
    types = {k: v for k, v in graph.types.items() if k in keep_names}
    return graph.replace(nodes=tuple(kept), weights=weights, types=types)


def slices_to_split(graph: TensorGraph) -> TensorGraph:
    """Unit-step one-axis Slices of one value that do not overlap and cover at least half of one
    of its axes become one Split: one kernel instead of one per piece (the gaps become unused
    outputs). This is what horizontal merging leaves behind (a merged matmul sliced back into its
    members); measured on NAS-RNN in onnxruntime, its 40 Slices took 11 % of the run (3.2 µs
    each). The Split takes the place of the first of the Slices, so every consumer still follows
    its producer."""
    import numpy as np

    groups: dict[tuple[str, int], list[tuple[int, int, int]]] = {}
    for k, node in enumerate(graph.nodes):
        piece = _unit_slice(graph, node)
        if piece is not None:
            axis, start, end = piece
            groups.setdefault((node.inputs[0], axis), []).append((start, end, k))
    replace: dict[int, Node | None] = {}
    weights = dict(graph.weights)
    new_types: dict[str, TensorType] = {}
    for (value, axis), pieces in groups.items():
        pieces.sort()
        t = graph.types[value]
        dim = t.shape[axis]
        if len(pieces) < 2 or any(pieces[i][0] < pieces[i - 1][1] for i in range(1, len(pieces))):
            continue  # fewer than two, or overlapping (or a duplicate)
        if 2 * sum(e - s for s, e, _ in pieces) < dim:
            continue  # a Split would copy more than twice what the slices copy
        outs, cuts, at = [], [], 0
        for s, e, k in pieces:
            if s > at:  # a gap: an output nobody reads
                outs.append(_fresh(f"{value}_unused", graph.types, new_types))
                new_types[outs[-1]] = _sliced(t, axis, s - at)
                cuts.append(s - at)
            outs.append(graph.nodes[k].outputs[0])
            cuts.append(e - s)
            at = e
        if at < dim:
            outs.append(_fresh(f"{value}_unused", graph.types, new_types))
            new_types[outs[-1]] = _sliced(t, axis, dim - at)
            cuts.append(dim - at)
        sizes = _fresh(f"{value}_split_sizes", graph.types, new_types)
        weights[sizes] = np.array(cuts, dtype=np.int64)
        new_types[sizes] = TensorType("int64", (len(cuts),))
        split = Node("Split", (value, sizes), tuple(outs), make_attrs({"axis": axis}))
        first = min(k for _, _, k in pieces)
        for _, _, k in pieces:
            replace[k] = split if k == first else None
    if not replace:
        return graph
    nodes = [replace.get(k, n) for k, n in enumerate(graph.nodes)]
    types = {**graph.types, **new_types}
    return graph.replace(
        nodes=tuple(n for n in nodes if n is not None), weights=weights, types=types
    )


def _unit_slice(graph: TensorGraph, node: Node) -> tuple[int, int, int] | None:
    """(axis, start, end) of a Slice with constant one-axis bounds and step 1, clamped to a
    static dimension; None otherwise."""
    if node.op != "Slice" or node.opaque is not None or len(node.outputs) != 1:
        return None
    ins = list(node.inputs) + [""] * (5 - len(node.inputs))
    x, starts, ends, axes, steps = ins[:5]
    vals = []
    for name in (starts, ends, axes, steps):
        w = graph.weights.get(name) if name else None
        if name and (w is None or w.size != 1):
            return None
        vals.append(int(w.reshape(-1)[0]) if w is not None else None)
    b, e, ax, st = vals
    t = graph.types.get(x)
    if t is None or b is None or e is None or st not in (None, 1):
        return None
    ax = 0 if ax is None else ax
    ax = ax + t.rank if ax < 0 else ax
    if not 0 <= ax < t.rank or not isinstance(t.shape[ax], int):
        return None
    d = t.shape[ax]
    b, e = (max(0, min(v + d if v < 0 else v, d)) for v in (b, e))
    return (ax, b, e) if b < e else None


def _fresh(base: str, *taken) -> str:
    name, k = base, 0
    while any(name in t for t in taken):
        k += 1
        name = f"{base}{k}"
    return name


def _sliced(t: TensorType, axis: int, n: int) -> TensorType:
    return TensorType(t.dtype, tuple(n if i == axis else d for i, d in enumerate(t.shape)))
