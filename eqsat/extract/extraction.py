"""Extraction: a :class:`~eqsat.egraph.saturate.Saturation` and a cost model → Extraction.

Consumes a Saturation (its e-graph, roots and the encoding's side tables) and a
:class:`~eqsat.extract.cost.CostModel`; produces an :class:`Extraction` whose ``graph`` is a
TensorGraph again (same inputs, outputs and meta as the encoded one), with its DAG cost.

The steps, each timed: serialize the e-graph to plain Python (:mod:`.serialized`), read every
e-node reachable from the roots as an op (:func:`.decode.view`), type every e-class
(:func:`.decode.class_types`), choose one e-node per class with the greedy DAG extractor
(:mod:`.greedy`; costs from the model, leaves and plumbing free, weight-only typed nodes free
because the fold pass after extraction computes them once at export, untyped nodes excluded), and
decode the choice (:func:`.decode.decode`). By default a local search (:mod:`.local`) and then
the ILP (:mod:`.ilp`) improve on greedy's choice: greedy cannot pick a merge, which pays only
when all its users take it.
This is the only module here that needs all of them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

from eqsat.egraph.classes import class_types, constant_classes, leaf_value, none_classes, view
from eqsat.egraph.ir import TensorGraph, TensorType
from eqsat.egraph.opdefs.base import Kind
from eqsat.egraph.ops import OPS
from eqsat.egraph.saturate import Saturation
from eqsat.egraph.serialized import SerializedEGraph, serialize
from eqsat.extract.cost import AstSize, CostModel, checked_cost, missing_abilities
from eqsat.extract.decode import decode
from eqsat.extract.greedy import greedy_dag, reachable
from eqsat.extract.ilp import ilp_dag
from eqsat.extract.local import local_search
from eqsat.extract.measured import CONST


@dataclass
class Extraction:
    graph: TensorGraph
    cost: float  # DAG cost of the extracted graph under the model
    time: float  # seconds, all steps
    times: dict[str, float] = field(default_factory=dict)  # per step
    enodes: int = 0  # e-nodes reachable from the roots (what the extractor chose among)
    eclasses: int = 0
    extractor: str = "greedy"  # what made the choice: greedy | local | ilp
    ilp: dict = field(default_factory=dict)  # the ILP's status, objective, bound, gap, time
    local: dict = field(default_factory=dict)  # the local search's start cost, moves, time

    def summary(self) -> dict:
        return {
            "cost": self.cost,
            "nodes": len(self.graph.nodes),
            "enodes": self.enodes,
            "eclasses": self.eclasses,
            "time_s": round(self.time, 4),
            "times_s": {k: round(v, 4) for k, v in self.times.items()},
            "extractor": self.extractor,
            **({"local": self.local} if self.local else {}),
            **({"ilp": self.ilp} if self.ilp else {}),
        }


EXTRACTORS = ("auto", "greedy", "local", "ilp")
# Rewritten e-nodes cost this much more (relative) than the e-node the input graph had: where the
# cost model sees a tie, the original wins. A reordered Mul chain that the model prices the same
# can break a fusion pattern onnxruntime looks for (measured: SwiGLU's RMSNorm reassociated by
# mul-associative ran 0.98x), so an alternative must be strictly cheaper to be taken.
TIE_BREAK = 1e-6
# A cost model whose ``noise`` (its relative measurement error) is larger gets that margin
# instead: an alternative must beat the original by more than the model can tell apart.

# onnxruntime fuses these activations into the Conv that produces their operand
# (ConvActivationFusion): a cost model that prices the kernels onnxruntime runs
# (``runtime_fusions``) must not charge them there. Measured: a generated rule that pulls Relu
# out of SqueezeNet's concatenations (13 Relu -> 9, each now after a Concat, not a Conv) ran
# 0.976x when the Relu after a Conv was priced as a kernel.
FUSED_AFTER_CONV = ("Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid")
AUTO_ILP_MAX_ENODES = 50_000  # auto: above this many reachable e-nodes, greedy alone


def extract(
    saturation: Saturation,
    cost_model: CostModel | None = None,
    serialized: SerializedEGraph | None = None,
    extractor: str = "auto",
    time_limit: float = 10.0,
    prefer_rewrites: bool = False,
) -> Extraction:
    """The cheapest graph the e-graph holds under ``cost_model`` (AST size by default).
    ``extractor``: ``greedy`` (greedy DAG), ``local`` (greedy, then the local search),
    ``ilp`` (the ILP, started from greedy's choice and never worse than it) or ``auto`` (the
    local search, then the ILP from its choice up to :data:`AUTO_ILP_MAX_ENODES` reachable
    e-nodes). ``time_limit`` bounds the local search and the ILP together.
    ``serialized`` reuses an earlier serialization.
    ``prefer_rewrites`` cuts to a tenth the cost of every e-node the input graph did not have,
    so that the extracted graph shows what the rules did (rule verification; never optimizing)."""
    if extractor not in EXTRACTORS:
        raise ValueError(f"unknown extractor {extractor!r}; known: {', '.join(EXTRACTORS)}")
    model = cost_model or AstSize()
    missing = missing_abilities(model)
    if missing:
        raise TypeError(
            f"cost model {type(model).__name__} does not declare {', '.join(missing)} "
            "(see eqsat.extract.cost.CostModel; CostModelBase has the defaults)"
        )
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
    original = original_nodes(eg, enc, views)
    values: dict[str, object] = {}  # constant class -> its value where a leaf gives it
    if model.needs_values:
        for nid, v in views.items():
            val = leaf_value(v, enc)
            if val is not None:
                values.setdefault(eg.nodes[nid].eclass, val)

    margin = -0.9 if prefer_rewrites else max(TIE_BREAK, float(model.noise))
    convs = set()
    if model.runtime_fusions:
        convs = {eg.nodes[n].eclass for n, v in views.items() if v.kind == "op" and v.op == "Conv"}

    priced: dict[str, float] = {}  # greedy, the search and the ILP each price the nodes
    epilogue = epilogue_nodes(eg, views, classes)

    def cost(nid: str) -> float:
        if nid not in priced:
            c = base_cost(nid)
            priced[nid] = c if nid in original else c * (1.0 + margin)
        return priced[nid]

    def base_cost(nid: str) -> float:
        v = views[nid]
        if v.kind not in ("op", "generic"):
            return 0.0
        if free(model, v.kind == "op", v.op, [i is None or i in constant for i in v.inputs],
                bool(v.inputs) and v.inputs[0] in convs):  # fmt: skip
            return 0.0
        c = eg.nodes[nid].eclass
        ins = [types.get(i, ()) if i is not None else None for i in v.inputs]  # () = untyped
        typed = all(t is None or isinstance(t, TensorType) for t in ins)
        if c not in types or not typed:
            return math.inf  # cannot be written back without types
        outs = types[c]
        outs = [t for t in outs if t is not None] if isinstance(outs, tuple) else [outs]
        consts = [
            None if i is None or i not in constant else values.get(i, CONST) for i in v.inputs
        ]
        return checked_cost(model, v.op, v.attrs(enc), ins, outs, consts, nid in epilogue)

    chosen = greedy_dag(eg, roots, cost)
    used, ilp_info, local_info = "greedy", {}, {}
    t_greedy = time.perf_counter()
    times["greedy"] = t_greedy - t2
    if extractor in ("auto", "local"):
        found = local_search(eg, roots, cost, chosen, time_limit=time_limit)
        local_info = {
            "start_cost": found.start_cost,
            "moves": found.moves,
            "tries": found.tries,
            "time_s": round(found.time, 4),
        }
        if found.choice.cost < chosen.cost - 1e-9 * abs(chosen.cost):
            chosen, used = found.choice, "local"
    if extractor == "ilp" or (extractor == "auto" and len(views) <= AUTO_ILP_MAX_ENODES):
        left = max(0.0, time_limit - (time.perf_counter() - t_greedy))
        res = ilp_dag(eg, roots, cost, time_limit=left, incumbent=chosen)
        ilp_info = {
            "status": res.status,
            "objective": res.objective,
            "bound": res.bound,
            "gap": res.gap,
            "cut_rounds": res.rounds,
            "variables": res.variables,
            "time_s": round(res.time, 4),
            "greedy_cost": local_info.get("start_cost", chosen.cost),
        }
        if res.choice is not None and res.choice.cost < chosen.cost - 1e-9 * abs(chosen.cost):
            chosen, used = res.choice, "ilp"
    t3 = time.perf_counter()
    times["choose"] = t3 - t2
    model.save()  # the measured model's cache of timed configurations
    graph = decode(eg, enc, chosen.choice, chosen.order, views, types)
    t4 = time.perf_counter()
    times["decode"] = t4 - t3
    return Extraction(
        graph=graph,
        cost=sum(base_cost(n) for n in chosen.choice.values()),  # without the tie-break
        time=t4 - t0,
        times=times,
        enodes=len(views),
        eclasses=len(classes),
        extractor=used,
        ilp=ilp_info,
        local=local_info,
    )


def epilogue_nodes(eg: SerializedEGraph, views: dict, classes) -> set[str]:
    """The element-wise e-nodes over a lane (:mod:`eqsat.rules.fusion`): a kernel's epilogue,
    priced by the model's ``epilogue_cost``. A class is in a lane when it holds ``lane(x)`` or
    a typed op over a class in a lane (a least fixpoint); a class in a lane is only ever read
    by ops in it and by ``kernel``, so the set is the same whatever extraction chooses."""
    lanes = {eg.nodes[n].eclass for n, v in views.items() if v.kind == "lane"}
    if not lanes:
        return set()
    ops = [(n, v) for n, v in views.items() if v.kind == "op"]
    changed = True
    while changed:
        changed = False
        for n, v in ops:
            c = eg.nodes[n].eclass
            if c not in lanes and any(i in lanes for i in v.inputs if i is not None):
                lanes.add(c)
                changed = True
    return {
        n
        for n, v in ops
        if OPS[v.op].kind is Kind.ELEMENTWISE and any(i in lanes for i in v.inputs if i)
    }


def free(model: CostModel, table_op: bool, op: str, constant: list[bool], after_conv: bool):
    """Whether a node costs nothing at run time, the same test for an e-node (extraction) and
    for a node of a graph (:func:`graph_cost`): an op of the table whose inputs are all constant
    (weight-only: computed once at export, by the fold after extraction), or an activation
    onnxruntime fuses into the Conv that produces its operand (``runtime_fusions`` models).
    Priced apart, an unchanged graph's cost fell through extraction (VGG 1.379e4 -> 1.358e4:
    its Relus after Convs were charged before and free after)."""
    if not table_op:
        return False  # an opaque node is charged as it is
    if all(constant):
        return True
    return model.runtime_fusions and op in FUSED_AFTER_CONV and after_conv


def graph_cost(graph: TensorGraph, cost_model: CostModel) -> float:
    """The cost of a graph as it stands, priced node by node exactly as extraction prices the
    e-nodes it chooses (:func:`free`, then the model; constant inputs passed as extraction
    passes them; the epilogues of ``graph.meta.fusion`` by ``epilogue_cost``), so that
    extracting an unchanged graph gives it the same cost, and an extracted graph the cost
    extraction reported."""
    constant = set(graph.weights)
    convs: set[str] = set()
    # the epilogues extraction chose (GraphMeta.fusion): priced as it priced their e-nodes
    epilogue = {v for group in graph.meta.fusion or () for v in group[1:]}
    total = 0.0
    for n in graph.nodes:
        table_op = n.opaque is None
        const_in = [not i or i in constant for i in n.inputs]
        if table_op and all(const_in):
            constant.update(o for o in n.outputs if o)
        if n.op == "Conv" and table_op:
            convs.update(o for o in n.outputs if o)
        after_conv = bool(n.inputs) and n.inputs[0] in convs
        if free(cost_model, table_op, n.op, const_in, after_conv):
            continue
        ins = [graph.types.get(i) if i else None for i in n.inputs]
        outs = [graph.types[o] for o in n.outputs if o]
        consts = [
            None if not i or i not in constant else graph.weights.get(i, CONST) for i in n.inputs
        ]
        fused = bool(n.outputs) and n.outputs[0] in epilogue
        total += checked_cost(cost_model, n.op, n.attr, ins, outs, consts, fused)
    return total


def original_nodes(eg: SerializedEGraph, enc, views) -> set[str]:
    """The e-nodes the input graph had: for each typed node, the e-node of its output's class
    with its op and its inputs' classes; generic nodes are always original (no rule makes one)."""
    out = {nid for nid, v in views.items() if v.kind == "generic"}
    cls = {value: eg.lets[let] for value, let in enc.lets.items() if let in eg.lets}
    for node in enc.graph.nodes:
        if len(node.outputs) != 1 or node.outputs[0] not in cls:
            continue
        c = cls[node.outputs[0]]
        ins = tuple(cls.get(i) if i else None for i in node.inputs)
        for nid in eg.classes.get(c, ()):
            v = views.get(nid)
            if v is not None and v.kind == "op" and v.op == node.op and v.inputs[: len(ins)] == ins:
                out.add(nid)
    return out
