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
from collections.abc import Callable
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
from eqsat.extract.ilp import certify, ilp_dag
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
# The other way for the e-nodes of a fused kernel (in a lane, eqsat.rules.fusion): they cost
# TIE_BREAK less than priced, so that where the model sees a tie the kernel wins. A kernel costs
# no more than its ops unfused (lowering stores one value, not the root's and the epilogue's),
# but the model prices an unfused value read at two sites as inlined (must_store): ResNeXt's
# residual Add and Relu stayed out of their Conv's store where the Relu's value is read by the
# next Conv and the next residual Add (12 kernels, not 10).

# onnxruntime fuses these activations into the Conv that produces their operand
# (ConvActivationFusion): a cost model that prices the kernels onnxruntime runs
# (``runtime_fusions``) must not charge them there. Measured: a generated rule that pulls Relu
# out of SqueezeNet's concatenations (13 Relu -> 9, each now after a Concat, not a Conv) ran
# 0.976x when the Relu after a Conv was priced as a kernel.
FUSED_AFTER_CONV = ("Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "HardSigmoid")
# ``auto``: the local search, then the ILP from its plan up to this many reachable e-nodes. The
# ILP first tries to prove the plan optimal without its solver (ilp.certify: shrinking with the
# plan's cost as the bound leaves one node per class), which saves the scipy import (1.5-4.5 s of
# wall per compile on this loaded host) where it succeeds; else the solver runs. Where the search
# alone is enough (the compiler's costs) and where it is not (onnxruntime's, NAS-RNN): measured
# in eqsat.pipeline.extractor_for, which picks ``local`` or ``auto``.
AUTO_ILP_MAX_ENODES = 50_000


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
    local search, then the ILP from its plan up to :data:`AUTO_ILP_MAX_ENODES` reachable e-nodes,
    its solver only where shrinking does not prove the plan optimal).
    ``time_limit`` bounds the local search and the ILP together.
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
    lanes = lane_classes(eg, views)
    unstored = unstored_nodes(eg, views, lanes, roots)

    def cost(nid: str) -> float:
        if nid not in priced:
            c = base_cost(nid)
            if nid in original:
                priced[nid] = c
            elif eg.nodes[nid].eclass in lanes:  # a fused kernel's root or epilogue
                priced[nid] = c * (1.0 - TIE_BREAK)
            else:
                priced[nid] = c * (1.0 + margin)
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
        return checked_cost(model, v.op, v.attrs(enc), ins, outs, consts, unstored.get(nid, ""))

    chosen = greedy_dag(eg, roots, cost)
    used, ilp_info, local_info = "greedy", {}, {}
    t_greedy = time.perf_counter()
    times["greedy"] = t_greedy - t2
    if extractor in ("auto", "local"):
        # With fusion terms a second search, from greedy's plan without any ``kernel`` e-node,
        # first without them, then with them; the cheaper result is kept. From greedy's plan,
        # where each MatMul's bias Add is its kernel's epilogue, a merge is a move of two levels
        # (every user drops its kernel *and* takes its slice of the merged MatMul) that no move
        # of the search makes: on NAS-RNN it made 0 moves (3341; the ILP then took 8.5 s to
        # 2189). With the kernels allowed from the plain plan, its first moves take kernels
        # again and it stops at 3341; without them it finds the merges (2014.9, 4 moves) as it
        # does without fusion terms, and the kernels that pay are then single moves.
        kernels = {n for n, v in views.items() if v.kind == "kernel"}
        runs = [(chosen, [cost])]
        if kernels:
            plain = lambda n: math.inf if n in kernels else cost(n)  # noqa: E731
            runs.append((greedy_dag(eg, roots, plain), [plain, cost]))
        for start, costs in runs:
            found = None
            for c in costs:
                left = max(0.0, time_limit - (time.perf_counter() - t_greedy))
                found = local_search(eg, roots, c, found.choice if found else start,
                                     time_limit=left)  # fmt: skip
                local_info["moves"] = local_info.get("moves", 0) + found.moves
                local_info["tries"] = local_info.get("tries", 0) + found.tries
                local_info["time_s"] = round(local_info.get("time_s", 0.0) + found.time, 4)
            local_info.setdefault("start_cost", start.cost)
            if better(found.choice.cost, chosen.cost):
                chosen, used = found.choice, "local"
    res = None
    if extractor == "ilp" or (extractor == "auto" and len(views) <= AUTO_ILP_MAX_ENODES):
        res = certify(eg, roots, cost, chosen) if extractor == "auto" else None
        if res is None:
            left = max(0.0, time_limit - (time.perf_counter() - t_greedy))
            res = ilp_dag(eg, roots, cost, time_limit=left, incumbent=chosen)
    if res is not None:
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
        if res.choice is not None and better(res.choice.cost, chosen.cost):
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


def better(cost: float, than: float) -> bool:
    """Whether an extractor's plan is cheaper than the one in hand by more than float noise
    (two sums of the same plan in another order), so that it replaces it."""
    return cost < than - 1e-9 * abs(than)


def unstored_nodes(
    eg: SerializedEGraph, views: dict, lanes: set[str], roots
) -> dict[str, str]:
    """The element-wise e-nodes that lowering does not store, in an e-graph that holds fusion
    terms (:mod:`eqsat.rules.fusion`; none otherwise), each with where it runs: ``epilogue``
    (over a lane: priced by the model's ``epilogue_cost``) or ``inlined`` (outside any lane,
    a value that lowering need not store whatever the plan, :func:`must_store`, so it inlines
    it into its readers: ``inlined_cost``). The others are stored by a kernel of their own, a
    memory pass (the model's ``node_cost``).

    Why not every element-wise e-node outside a lane as a pass: lowering inlines one read once
    into its consumer. Priced as a pass, NAS-RNN's plan moved its Adds and activations above
    the Slices of the merged MatMuls (one pass over the wide value instead of one per slice),
    where lowering must store each (read by several Slices): 21 kernels, not 11, 0.88x (1
    thread, min of 15, load 5-6). ``lanes``: :func:`lane_classes`."""
    if not lanes:
        return {}
    epilogue = {
        n: "epilogue"
        for n, v in views.items()
        if v.kind == "op"
        and OPS[v.op].kind is Kind.ELEMENTWISE
        and any(i in lanes for i in v.inputs if i)
    }
    readers: dict[str, list[tuple[Kind | None, str]]] = {}
    for n, v in views.items():
        if v.kind in ("op", "generic", "lane", "kernel", "output"):
            how = OPS[v.op].kind if v.kind == "op" else None
            how = Kind.INJECTIVE if v.kind in ("lane", "output") else how  # read as its operand
            for i in v.inputs:
                if i is not None:
                    readers.setdefault(i, []).append((how, eg.nodes[n].eclass))
    stored = must_store(lambda c: readers.get(c, ()), set(roots))
    inlined = {
        n: "inlined"
        for n, v in views.items()
        if v.kind == "op"
        and OPS[v.op].kind is Kind.ELEMENTWISE
        and eg.nodes[n].eclass not in lanes
        and not stored(eg.nodes[n].eclass)
    }
    return epilogue | inlined


def must_store(reads, outputs) -> Callable[[str], bool]:
    """Whether lowering stores an element-wise value whatever else the plan holds, the part of
    :mod:`eqsat.lower.fuse`'s rule 3 that one value decides: it is a graph output, or every site
    that reads it re-reads its inputs (:attr:`Kind.rereads_inputs`: a MatMul or Conv operand),
    views followed to their own readers. ``reads(v)``: per reader of ``v``, its kind (None: not
    an op of the table) and the value it makes; in an e-graph the readers are every e-node over
    the class, so where the plan reads it, it reads it so. What it leaves out: a value read at
    two sites is stored too, which depends on the plan; priced inlined, it is underpriced."""
    memo: dict[str, bool] = {}

    def stored(v: str) -> bool:
        if v not in memo:
            memo[v] = True  # a cycle of views: neutral in the all() below
            memo[v] = v in outputs or all(
                stored(out) if how is Kind.INJECTIVE else how is not None and how.rereads_inputs
                for how, out in reads(v)
            )
        return memo[v]

    return stored


def lane_classes(eg: SerializedEGraph, views: dict) -> set[str]:
    """The classes in a lane (:mod:`eqsat.rules.fusion`): those that hold ``lane(x)`` or a
    typed op over a class in a lane (a least fixpoint). A class in a lane is only ever read by
    ops in it and by ``kernel``, so the set is the same whatever extraction chooses; empty in
    an e-graph without fusion terms."""
    lanes = {eg.nodes[n].eclass for n, v in views.items() if v.kind == "lane"}
    ops = [(n, v) for n, v in views.items() if v.kind == "op"]
    changed = bool(lanes)
    while changed:
        changed = False
        for n, v in ops:
            c = eg.nodes[n].eclass
            if c not in lanes and any(i in lanes for i in v.inputs if i is not None):
                lanes.add(c)
                changed = True
    return lanes


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


def graph_cost(
    graph: TensorGraph, cost_model: CostModel, fusion_terms: bool | None = None
) -> float:
    """The cost of a graph as it stands, priced node by node exactly as extraction prices the
    e-nodes it chooses (:func:`free`, then the model; constant inputs passed as extraction
    passes them; with ``fusion_terms``, by default where ``graph.meta.fusion`` records the
    kernels extraction chose, the epilogues by ``epilogue_cost`` and the element-wise values
    lowering inlines by ``inlined_cost``, :func:`unstored_nodes`), so that extracting an
    unchanged graph gives it the same cost, and an extracted graph the cost extraction reported
    (the e-graph's readers of a value are a superset of the graph's: where the plan alone reads
    it so that it must be stored, extraction priced it inlined, and this prices it higher)."""
    constant = set(graph.weights)
    convs: set[str] = set()
    # the epilogues extraction chose (GraphMeta.fusion): priced as it priced their e-nodes
    unstored = {v: "epilogue" for group in graph.meta.fusion or () for v in group[1:]}
    if graph.meta.fusion is not None if fusion_terms is None else fusion_terms:
        readers: dict[str, list[tuple[Kind | None, str]]] = {}
        for n in graph.nodes:
            how = OPS[n.op].kind if n.opaque is None and n.op in OPS else None
            for i in n.inputs:
                for o in n.outputs if i else ():
                    if o:
                        readers.setdefault(i, []).append((how, o))
        stored = must_store(lambda v: readers.get(v, ()), set(graph.outputs))
        unstored |= {
            n.outputs[0]: "inlined"
            for n in graph.nodes
            if n.opaque is None
            and n.op in OPS
            and OPS[n.op].kind is Kind.ELEMENTWISE
            and n.outputs[0] not in unstored
            and not stored(n.outputs[0])
        }
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
        where = unstored.get(n.outputs[0], "") if n.outputs else ""
        total += checked_cost(cost_model, n.op, n.attr, ins, outs, consts, where)
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
