"""Graph-level clean-ups on TensorGraph → TensorGraph: constant folding and dead-code removal.

These run before the e-graph (and are the whole optimizer of the foundation stage). Folding uses
:class:`~eqsat.egraph.const_eval.ConstEval`, the same engine import uses for shape arguments.
"""

from __future__ import annotations

from eqsat.egraph.const_eval import ConstEval
from eqsat.egraph.ir import Node, TensorGraph


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
