"""Extraction: a :class:`~eqsat.egraph.saturate.Saturation` and a cost model → Extraction.

Consumes a Saturation (its e-graph, roots and the encoding's side tables) and a
:class:`~eqsat.extract.cost.CostModel`; produces an :class:`Extraction` whose ``graph`` is a
TensorGraph again (same inputs, outputs and meta as the encoded one), with its DAG cost.

The steps, each timed: serialize the e-graph to plain Python (:mod:`.serialized`), read every
e-node reachable from the roots as an op (:func:`.decode.view`), type every e-class
(:func:`.decode.class_types`), choose one e-node per class with the greedy DAG extractor
(:mod:`.greedy`; costs from the model, leaves and plumbing free, weight-only typed nodes free
because the fold pass after extraction computes them once at export, untyped nodes excluded), and
decode the choice (:func:`.decode.decode`). This is the only module here that needs all of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from eqsat.egraph.ir import TensorGraph, TensorType
from eqsat.egraph.saturate import Saturation
from eqsat.extract.cost import AstSize, CostModel, checked_cost
from eqsat.extract.decode import class_types, decode, none_classes, view
from eqsat.extract.greedy import greedy_dag, reachable
from eqsat.extract.serialized import SerializedEGraph, serialize


@dataclass
class Extraction:
    graph: TensorGraph
    cost: float  # DAG cost of the extracted graph under the model
    time: float  # seconds, all steps
    times: dict[str, float] = field(default_factory=dict)  # per step
    enodes: int = 0  # e-nodes reachable from the roots (what the extractor chose among)
    eclasses: int = 0

    def summary(self) -> dict:
        return {
            "cost": self.cost,
            "nodes": len(self.graph.nodes),
            "enodes": self.enodes,
            "eclasses": self.eclasses,
            "time_s": round(self.time, 4),
            "times_s": {k: round(v, 4) for k, v in self.times.items()},
        }


def extract(
    saturation: Saturation,
    cost_model: CostModel | None = None,
    serialized: SerializedEGraph | None = None,
) -> Extraction:
    """The cheapest graph the e-graph holds under ``cost_model`` (AST size by default), by
    greedy DAG extraction. ``serialized`` reuses an earlier serialization of the same state."""
    model = cost_model or AstSize()
    enc = saturation.encoding
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    eg = serialized if serialized is not None else serialize(saturation.egraph)
    t1 = time.perf_counter()
    times["serialize"] = t1 - t0
    roots = [eg.lets[r] for r in enc.roots]
    classes = reachable(eg, roots)
    nones = none_classes(eg)
    views = {nid: view(eg, nid, enc, nones) for c in classes for nid in eg.classes[c]}
    types = class_types(eg, enc, views, classes)
    t2 = time.perf_counter()
    times["types"] = t2 - t1

    constant = constant_classes(eg, views, classes)

    def cost(nid: str) -> float:
        v = views[nid]
        if v.kind not in ("op", "generic"):
            return 0.0
        if v.kind == "op" and all(i is None or i in constant for i in v.inputs):
            return 0.0  # weight-only: computed once at export (the fold after extraction)
        c = eg.nodes[nid].eclass
        ins = [types.get(i, ()) if i is not None else None for i in v.inputs]  # () = untyped
        typed = all(t is None or isinstance(t, TensorType) for t in ins)
        if c not in types or not typed:
            return math.inf  # cannot be written back without types
        outs = types[c]
        outs = [t for t in outs if t is not None] if isinstance(outs, tuple) else [outs]
        return checked_cost(model, v.op, v.attrs(enc), ins, outs)

    chosen = greedy_dag(eg, roots, cost)
    t3 = time.perf_counter()
    times["choose"] = t3 - t2
    graph = decode(eg, enc, chosen.choice, chosen.order, views, types)
    t4 = time.perf_counter()
    times["decode"] = t4 - t3
    return Extraction(
        graph=graph,
        cost=chosen.cost,
        time=t4 - t0,
        times=times,
        enodes=len(views),
        eclasses=len(classes),
    )


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
