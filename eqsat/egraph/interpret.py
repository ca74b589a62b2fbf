"""The numpy interpreter of :class:`~eqsat.egraph.ir.TensorGraph`: the graph's reference
semantics.

Consumes a TensorGraph and numpy feeds (one array per graph input); produces the graph's
outputs, evaluated node by node with the op table's reference semantics
(:func:`eqsat.egraph.ops.run_node`).

It is a module of its own, not a method of the IR, because it reads the op table and the op
table reads the IR (an op's shape inference takes ``TensorType`` s): as a method of
``TensorGraph`` it had to import :mod:`eqsat.egraph.ops` inside the function, an import cycle
``ir -> ops -> ir``. Here the IR stays the hub that imports no other eqsat module.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from eqsat.egraph.ir import GraphError, TensorGraph
from eqsat.egraph.ops import OPS, run_node


def interpret(graph: TensorGraph, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run ``graph`` on numpy arrays with the op table's reference semantics: its outputs by
    name. GraphError for a missing feed or an op without reference semantics (opaque)."""
    env: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        if name not in feeds:
            raise GraphError(f"missing value for graph input {name!r}")
        env[name] = np.asarray(feeds[name])
    env.update(graph.weights)
    for node in graph.nodes:
        if node.opaque is not None or node.op not in OPS:
            raise GraphError(f"cannot interpret opaque op {node.op!r} ({node.name})")
        args = [env[i] if i else None for i in node.inputs]
        for o, v in zip(node.outputs, run_node(node, args), strict=False):
            if o:
                env[o] = v
    return {o: env[o] for o in graph.outputs}
