"""Optimal DAG extraction over a serialized e-graph: an integer program solved by HiGHS.

Consumes a :class:`~eqsat.egraph.serialized.SerializedEGraph`, root e-classes, a cost for each
e-node and optionally an incumbent :class:`~eqsat.extract.greedy.Choice` (the greedy one);
produces an :class:`IlpResult`: a :class:`Choice` of one e-node per e-class the roots need,
acyclic, minimising the DAG cost (each chosen class's node cost counted once however many
parents share it), with the solver's status, bound, gap and model sizes. The node semantics are
greedy_dag's: ``cost`` is >= 0 or ``math.inf`` (excluded), subsumed nodes and nodes with their
own class among their children are excluded, and only classes reachable from the roots count.

The model (``scipy.optimize.milp``, i.e. HiGHS branch and cut): a binary ``x_n`` per candidate
e-node and ``a_c`` per class, ``sum_{n in c} x_n = a_c``, ``a_root = 1``, ``x_n <= a_d`` for
every child class ``d`` of ``n``; minimise ``sum cost(n) x_n``. scipy's milp takes no starting
solution, so an incumbent enters as the row ``sum cost(n) x_n <= incumbent.cost`` and as the
bound that prunes nodes below. Measured on Tensat's BERT e-graph in 30 s: with the row HiGHS
finds a plan of 0.811 (greedy: 0.825), without it its best costs 8.97. Pass the greedy plan.

Acyclicity, in two phases (measured on Tensat's e-graphs, 30 s: cuts alone return no plan on
the cyclic ones, ordering variables alone find none on VGG and a dearer one on ResNet-50):

1. Lazy cycle cuts: solve without acyclicity, walk the selection from the roots and, for every
   strongly connected component of the chosen subgraph, cut a shortest cycle through each of
   its classes; re-solve (at most ``MAX_ROUNDS`` rounds, ``LAZY_SHARE`` of the time). A cut is
   on class *edges*: for a cycle ``c1 -> ... -> ck`` it bounds by ``k - 1`` the sum of every
   ``x_n`` with ``n`` in ``c_i`` and ``c_{i+1}`` among its child classes. Each class adds at most
   1 to that sum, so the cut forbids that class cycle however its edges are realised (a cut on
   the chosen nodes alone lets the solver swap in a sibling with the same child, one round per
   sibling). Cuts hold for every acyclic selection, so each round's optimum is a lower bound and
   an acyclic optimum is the optimum. When the cheap solutions use few cycles this converges in
   a few rounds with the tightest model. Cycles among classes the roots do not reach are ignored:
   dropping those classes keeps the selection feasible at no cost.
2. Ordering variables, when the cuts have not converged: on Tensat's cyclic e-graphs (VGG,
   ResNet-50, BERT) the relaxation keeps finding new cycles (VGG: 50 rounds, 114 cuts, the bound
   still at 1.43 where the best plan costs 4.85) and a round yields no acyclic plan. So the last
   solve adds, for each strongly connected component ``S`` of the candidate class graph (only
   there can a cycle close), a continuous ``t_c`` in ``[0, |S| - 1]`` per class and per class
   edge ``c -> d`` inside ``S``: ``t_c - t_d >= 1 - |S| (1 - sum of the x_n realising it)``, a
   topological order of the chosen classes. Its relaxation is weak (big-M) but every solution
   is acyclic, so a time-limited solve still returns a plan; the cuts found so far stay in it.

The model is shrunk first, each step keeping an optimal solution (counts in the result):

* classes unreachable from the roots and excluded nodes go;
* only classes with a finite acyclic term stay (the least fixpoint: a class lives once one of
  its nodes has all child classes alive), and only nodes whose child classes all live. This is
  stronger than dropping nodes with an empty child class, since it also drops classes whose every
  term runs around a cycle, and it decides exactly, up front, whether a root has an acyclic term
  (``ExtractionError`` otherwise, as greedy_dag);
* a class with a zero-cost childless node is fixed to it: that node adds nothing, needs nothing
  and closes no cycle, so it is never worse than a sibling;
* a node goes when a sibling costs no more and has a subset of its child classes (replacing it
  by the sibling adds no class and no cycle);
* with an incumbent, a node goes when every plan using it costs more than the incumbent: such a
  plan pays for a path from a root to the node's class (each class on it, the cheapest node
  with the next class as a child) plus the node's own sub-DAG, at least its cost plus the
  largest least DAG cost of a child class, and the two share no class in an acyclic plan
  (halves the BERT model);
* classes that the remaining nodes no longer reach from the roots go.

With an incumbent the result's choice is the cheaper of the ILP's and the incumbent's (status
``"incumbent"`` when the incumbent is kept, the ILP's own status in ``ilp_status``); without
one, ``choice`` is None when no acyclic plan was found in time.

When the shrunk model leaves every class one node, that plan is the only one and the solver is
not run (nor scipy imported: 0.26 s of CPU, 0.6-1.5 s of wall on these busy machines). It is the
case on half of the corpus (the CNNs: VGG-19, ResNets, Inception-v3, SqueezeNet), where the
rewrites leave no choice or only ties (``a + b`` and ``b + a``, which dominance pruning merges).
Importing scipy in a thread of the e-graph process while encode or saturate runs gains nothing:
both hold the GIL most of the time (saturation is partly Python), so on PP-OCRv4 rec encode or
saturate grew by at least what extract lost (measured, one run each: extract 0.76-1.03 ->
0.67-0.70 s; encode 0.73 -> 1.36 s with the import beside it, or saturate 2.66 -> 3.03 s).
The milp call itself takes 1-3 ms once scipy is imported.

Extraction's default runs this after :mod:`.local`'s search, from its plan: on Tensat's
e-graphs the search reaches in 0.3-3.6 s lower costs than this model in 60 s (BERT 0.7561
against 0.8115, ResNet-50 4.3858 against 4.3869), and started from them this model improves
none in 10 s. Tried and not kept: ordering variables on the classes with a choice only (a
class with one node passes its edges on; a cycle of the selection must cross a class with a
choice), which shrinks ResNet-50's largest component from 1,875 classes to 55: with it alone
(no lazy rounds) 4.3896 in 5 s and 4.3882 in 15 s (bound 4.3748), better than 4.3969 but short
of the search; VGG unchanged.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from scipy.optimize import OptimizeResult
    from scipy.sparse import csr_array

from eqsat.egraph.serialized import SerializedEGraph
from eqsat.extract.greedy import Choice, ExtractionError, reachable

MAX_ROUNDS = 50  # lazy cycle-cut rounds before the ordered model
LAZY_SHARE = 0.25  # of time_limit for the lazy rounds; the ordered model gets the rest
REL_GAP = 1e-6  # HiGHS stops at this relative gap (its default, 1e-4, shows in the costs)


@dataclass
class IlpResult:
    choice: Choice | None  # the better of ILP and incumbent; None if neither exists
    status: str  # "optimal", "time-limit", "infeasible", "failed" or "incumbent"
    ilp_status: str  # the ILP's own status (equals status unless the incumbent was kept)
    acyclicity: str  # "none needed" (no class cycle in the model), or the last solve's: "cuts"
    # (lazy cycle cuts only) or "order" (with the ordering variables)
    objective: float | None  # ILP objective of the solution the ILP's best plan came from
    bound: float | None  # best lower bound on the optimum over all solves (HiGHS dual bound)
    gap: float | None  # (choice.cost - bound) / choice.cost
    rounds: int  # re-solves after adding cycle cuts
    cuts: int  # cycle cuts added in all
    time: float  # seconds, shrinking and solving
    variables: int  # of the last model
    constraints: int  # rows of the last model
    classes_unreachable: int  # e-graph classes the roots do not reach
    nodes_excluded: int  # subsumed, own class as a child, or infinite cost
    classes_dead: int  # reachable classes with no finite acyclic term
    nodes_dead: int  # nodes with a dead child class
    classes_fixed: int  # classes fixed to a zero-cost leaf
    nodes_fixed: int  # their other nodes, dropped
    nodes_dominated: int
    nodes_bounded: int  # dropped by the incumbent's cost (or left without a child class by it)
    classes_orphaned: int  # live classes no longer reached once nodes were dropped


def ilp_dag(
    eg: SerializedEGraph,
    roots: Iterable[str],
    cost: Callable[[str], float],
    time_limit: float = 10.0,
    incumbent: Choice | None = None,
) -> IlpResult:
    """Choose one e-node per needed class minimising DAG cost exactly (see module doc).

    ``cost(node_id)`` is called at most once per e-node; ``time_limit`` (seconds) bounds the
    whole run. Raises ``ExtractionError`` when a root has no finite-cost acyclic term.
    """
    start = time.perf_counter()
    roots = list(dict.fromkeys(roots))
    upper = incumbent.cost if incumbent is not None else None
    m, forced = _shrunk(eg, roots, cost, incumbent, start)
    if forced is not None:
        return forced
    p = _Program(m, roots, upper)
    ordered = not p.order_rows  # no class cycle in the model: one plain solve
    lazy_end = start + (time_limit if ordered else LAZY_SHARE * time_limit)
    best: Choice | None = None
    status, fun, bound, rounds = "time-limit", None, None, 0
    solved_ordered = False  # whether the last solve had the ordering variables
    while True:
        left = (start + time_limit if ordered else lazy_end) - time.perf_counter()
        if left <= 0:
            if ordered:
                break
            ordered = True
            continue
        res = p.solve(ordered, left)
        solved_ordered = ordered
        dual = getattr(res, "mip_dual_bound", None)
        if dual is not None and math.isfinite(dual):
            bound = dual if bound is None else max(bound, dual)
        if res.x is None:
            if res.status == 2:
                status = "infeasible"
            elif res.status != 1:
                status = "failed"
            if ordered or res.status != 1:
                break
            ordered = True  # the lazy share ran out
            continue
        plan, cycles = p.walk(res.x)
        if plan is not None:
            if best is None or plan.cost < best.cost:
                best, fun = plan, float(res.fun)
            if res.status == 0:
                status = "optimal"
                break
            if ordered:
                break
            ordered = True
            continue
        if res.status != 0 or rounds == MAX_ROUNDS:
            ordered = True
            continue
        rounds += 1
        p.cut(cycles)

    result, final = best, status
    if incumbent is not None and (
        best is None or incumbent.cost < best.cost - 1e-9 * max(1.0, incumbent.cost)
    ):
        result, final = incumbent, "incumbent"
    gap = None
    if result is not None and bound is not None:
        gap = max(0.0, result.cost - bound) / result.cost if result.cost > 0 else 0.0
    return IlpResult(
        choice=result,
        status=final,
        ilp_status=status,
        acyclicity="none needed" if not p.order_rows else "order" if solved_ordered else "cuts",
        objective=fun,
        bound=bound,
        gap=gap,
        rounds=rounds,
        cuts=len(p.cut_ub),
        time=time.perf_counter() - start,
        variables=p.nvar + (len(p.order_ub) if solved_ordered else 0),
        constraints=p.base.shape[0] + len(p.cut_ub) + (len(p.order_rows) if solved_ordered else 0),
        **m.counts,
    )


def certify(
    eg: SerializedEGraph, roots: Iterable[str], cost: Callable[[str], float], incumbent: Choice
) -> IlpResult | None:
    """The ILP's result without its solver (nor scipy): shrinking the model with ``incumbent``'s
    cost as the bound (see the module doc) leaves one node per class, so the plan is proved
    optimal (status ``optimal`` or ``incumbent``, gap 0); None where it leaves a choice."""
    start = time.perf_counter()
    return _shrunk(eg, list(dict.fromkeys(roots)), cost, incumbent, start)[1]


def _shrunk(eg, roots: list[str], cost, incumbent: Choice | None, start: float):
    """The shrunk model, and :func:`_forced`'s result where it leaves one node per class."""
    m = shrink(eg, roots, cost, incumbent.cost if incumbent is not None else None)
    if all(len(ns) == 1 for ns in m.cands.values()):
        return m, _forced(m, roots, incumbent, start)
    return m, None


def _forced(
    m: _Model, roots: list[str], incumbent: Choice | None, start: float
) -> IlpResult | None:
    """The result of a model whose classes have one node each, without a solver: that plan,
    optimal (what HiGHS returns for it, with the exact bound: gap 0). None if the plan closed a
    cycle, which shrinking rules out (each kept node's child classes came alive before its
    class in :func:`_live`), so the solver would decide it."""
    chosen = {c: ns[0] for c, ns in m.cands.items()}
    comps = _sccs(roots, lambda c: m.kids[chosen[c]])
    if any(len(s) > 1 for s in comps):
        return None
    order = [s[0] for s in comps]
    plan = {c: chosen[c] for c in order}
    cost = sum(m.costs[n] for n in plan.values())
    result, status = Choice(plan, cost, order), "optimal"
    if incumbent is not None and incumbent.cost < cost - 1e-9 * max(1.0, incumbent.cost):
        result, status = incumbent, "incumbent"  # as ilp_dag decides it
    links = sum(len(m.kids[n]) for n in chosen.values())
    return IlpResult(
        choice=result,
        status=status,
        ilp_status="optimal",
        acyclicity="none needed",
        objective=cost,
        bound=cost,
        gap=max(0.0, result.cost - cost) / result.cost if result.cost > 0 else 0.0,
        rounds=0,
        cuts=0,
        time=time.perf_counter() - start,
        variables=2 * len(chosen),  # an x per node and an a per class, as _Program counts
        constraints=len(chosen) + links + (incumbent is not None),
        **m.counts,
    )


@dataclass
class _Model:
    classes: list[str]  # classes kept, roots first
    cands: dict[str, list[str]]  # kept class -> its kept nodes
    kids: dict[str, tuple[str, ...]]  # kept node -> its distinct child classes
    eclass: dict[str, str]  # kept node -> its class
    costs: dict[str, float]  # kept node -> cost
    counts: dict[str, int]  # IlpResult's shrink counters


class _Program:
    """The integer program over a shrunk model: its rows, the cuts so far, and the ordering
    rows of the second phase; ``walk`` reads a solution back."""

    def __init__(self, m: _Model, roots: list[str], upper: float | None) -> None:
        self.m, self.roots = m, roots
        self.nodes = [n for c in m.classes for n in m.cands[c]]
        col = {n: i for i, n in enumerate(self.nodes)}
        ccol = {c: len(self.nodes) + i for i, c in enumerate(m.classes)}
        self.nvar = len(self.nodes) + len(m.classes)
        rows: list[int] = []
        cols: list[int] = []
        vals: list[float] = []
        for r, c in enumerate(m.classes):  # sum_{n in c} x_n - a_c = 0
            ns = m.cands[c]
            rows += [r] * (len(ns) + 1)
            cols += [col[n] for n in ns] + [ccol[c]]
            vals += [1.0] * len(ns) + [-1.0]
        links = [(n, d) for n in self.nodes for d in m.kids[n]]
        for r, (n, d) in enumerate(links, len(m.classes)):  # x_n - a_d <= 0
            rows += [r, r]
            cols += [col[n], ccol[d]]
            vals += [1.0, -1.0]
        nrows = len(m.classes) + len(links)
        self.objective = np.zeros(self.nvar)
        self.objective[: len(self.nodes)] = [m.costs[n] for n in self.nodes]
        self.lb = [np.zeros(len(m.classes)), np.full(len(links), -np.inf)]
        self.ub = [np.zeros(nrows)]
        if upper is not None:  # sum cost(n) x_n <= the incumbent's cost
            priced = np.flatnonzero(self.objective)
            rows += [nrows] * len(priced)
            cols += priced.tolist()
            vals += self.objective[priced].tolist()
            nrows += 1
            self.lb.append(np.array([-np.inf]))
            self.ub.append(np.array([upper * (1 + 1e-9) + 1e-12]))
        from scipy.sparse import coo_array

        self.base = coo_array((vals, (rows, cols)), shape=(nrows, self.nvar)).tocsr()
        self.lower = np.zeros(self.nvar)
        self.lower[[ccol[c] for c in roots]] = 1.0
        # class edge (c, d) -> columns of the nodes of c with d as a child class
        self.edge_cols: dict[tuple[str, str], list[int]] = {}
        for n, d in links:
            self.edge_cols.setdefault((m.eclass[n], d), []).append(col[n])
        self.cut_rows: list[csr_array] = []
        self.cut_ub: list[float] = []
        self.seen: set[tuple[str, ...]] = set()
        self._ordering()

    def _ordering(self) -> None:
        """Rows ``t_c - t_d - |S| sum x_n >= 1 - |S|`` for the class edges inside each strongly
        connected component ``S`` of the candidate class graph (columns after the x and a)."""
        succ: dict[str, list[str]] = {}
        for c, d in self.edge_cols:
            succ.setdefault(c, []).append(d)
        comps = [s for s in _sccs(self.roots, lambda c: succ.get(c, ())) if len(s) > 1]
        tcol: dict[str, int] = {}
        which: dict[str, int] = {}  # class -> its component
        for k, s in enumerate(comps):
            for c in s:
                tcol[c] = self.nvar + len(tcol)
                which[c] = k
        self.order_ub = np.array([len(comps[which[c]]) - 1.0 for c in tcol])
        self.order_rows: list[tuple[list[int], list[float], float]] = []
        for (c, d), js in self.edge_cols.items():
            if c in which and which[c] == which.get(d):
                k = float(len(comps[which[c]]))
                self.order_rows.append(
                    ([tcol[c], tcol[d], *js], [1.0, -1.0] + [-k] * len(js), 1 - k)
                )

    def solve(self, ordered: bool, time_limit: float) -> OptimizeResult:
        from scipy.optimize import Bounds, LinearConstraint, milp
        from scipy.sparse import coo_array, vstack

        nvar = self.nvar + (len(self.order_ub) if ordered else 0)
        blocks = [_pad(self.base, nvar), *(_pad(r, nvar) for r in self.cut_rows)]
        lb = [*self.lb, np.full(len(self.cut_ub), -np.inf)]
        ub = [*self.ub, np.array(self.cut_ub)]
        objective, lower, upper = self.objective, self.lower, np.ones(self.nvar)
        integrality = np.ones(self.nvar)
        if ordered and self.order_rows:
            rows = [r for r, (cs, _, _) in enumerate(self.order_rows) for _ in cs]
            cols = [c for cs, _, _ in self.order_rows for c in cs]
            vals = [v for _, vs, _ in self.order_rows for v in vs]
            shape = (len(self.order_rows), nvar)
            blocks.append(coo_array((vals, (rows, cols)), shape=shape).tocsr())
            lb.append(np.array([rhs for _, _, rhs in self.order_rows]))
            ub.append(np.full(len(self.order_rows), np.inf))
            extra = len(self.order_ub)
            objective = np.concatenate([objective, np.zeros(extra)])
            lower = np.concatenate([lower, np.zeros(extra)])
            upper = np.concatenate([upper, self.order_ub])
            integrality = np.concatenate([integrality, np.zeros(extra)])
        return milp(
            objective,
            integrality=integrality,
            bounds=Bounds(lower, upper),
            constraints=LinearConstraint(
                vstack(blocks).tocsr(), np.concatenate(lb), np.concatenate(ub)
            ),
            options={"time_limit": time_limit, "mip_rel_gap": REL_GAP},
        )

    def walk(self, x: np.ndarray) -> tuple[Choice | None, list[list[str]]]:
        """The plan the roots need from solution ``x``, or None and the cycles it closes."""
        m = self.m
        picked = np.flatnonzero(x[: len(self.nodes)] > 0.5)
        chosen = {m.eclass[self.nodes[i]]: self.nodes[i] for i in picked}
        comps = _sccs(self.roots, lambda c: m.kids[chosen[c]])
        cycles = [cyc for s in comps if len(s) > 1 for cyc in _cycles(s, chosen, m.kids)]
        if cycles:
            return None, cycles
        order = [s[0] for s in comps]
        plan = {c: chosen[c] for c in order}
        return Choice(plan, sum(m.costs[n] for n in plan.values()), order), []

    def cut(self, cycles: list[list[str]]) -> None:
        for cyc in cycles:
            i = cyc.index(min(cyc))
            key = tuple(cyc[i:] + cyc[:i])
            if key in self.seen:
                continue
            self.seen.add(key)
            edges = zip(cyc, cyc[1:] + cyc[:1], strict=True)
            js = sorted({j for e in edges for j in self.edge_cols[e]})
            from scipy.sparse import csr_array

            self.cut_rows.append(csr_array((np.ones(len(js)), ([0] * len(js), js)), (1, self.nvar)))
            self.cut_ub.append(len(cyc) - 1.0)


def _pad(a: csr_array, ncols: int) -> csr_array:
    """``a`` with zero columns appended up to ``ncols``."""
    from scipy.sparse import csr_array

    return csr_array((a.data, a.indices, a.indptr), shape=(a.shape[0], ncols))


def shrink(
    eg: SerializedEGraph, roots: list[str], cost: Callable[[str], float], upper: float | None
) -> _Model:
    """The shrunk model (module doc): the classes and candidate nodes a plan costing no more
    than ``upper`` (None: any plan) may use, keeping an optimal one. Also the candidates of
    :mod:`.local`'s search. Raises ``ExtractionError`` when a root has no acyclic term."""
    classes = reachable(eg, roots)
    counts = {"classes_unreachable": len(set(eg.classes) - set(classes)), "nodes_excluded": 0}
    kids: dict[str, tuple[str, ...]] = {}
    costs: dict[str, float] = {}
    eclass: dict[str, str] = {}
    cands: dict[str, list[str]] = {c: [] for c in classes}
    for c in classes:
        for n in eg.classes.get(c, ()):
            ks = tuple(dict.fromkeys(eg.child_classes(n)))
            if eg.nodes[n].subsumed or c in ks or math.isinf(own := cost(n)):
                counts["nodes_excluded"] += 1
                continue
            kids[n], costs[n], eclass[n] = ks, own, c
            cands[c].append(n)

    cands, counts["nodes_dead"] = _live(cands, kids, eclass)
    dead_roots = [c for c in roots if c not in cands]
    if dead_roots:
        raise ExtractionError(f"no finite-cost acyclic term for e-class(es) {dead_roots[:5]}")
    counts["classes_dead"] = len(classes) - len(cands)
    live_classes = len(cands)

    counts.update(classes_fixed=0, nodes_fixed=0, nodes_dominated=0, nodes_bounded=0)
    for c, ns in cands.items():
        leaf = next((n for n in ns if not kids[n] and costs[n] == 0.0), None)
        if leaf is not None:
            counts["classes_fixed"] += 1
            counts["nodes_fixed"] += len(ns) - 1
            cands[c] = [leaf]
            continue
        kept: list[tuple[frozenset[str], str]] = []
        for n in sorted(ns, key=lambda n: (costs[n], len(kids[n]))):
            ks = frozenset(kids[n])
            if any(k <= ks for k, _ in kept):  # kept ones cost no more: sorted by cost
                counts["nodes_dominated"] += 1
            else:
                kept.append((ks, n))
        cands[c] = [n for _, n in kept]

    if upper is not None:
        beyond = _beyond(roots, cands, kids, costs, eclass, upper)
        pruned = {c: [n for n in ns if n not in beyond] for c, ns in cands.items()}
        pruned, consequence = _live(pruned, kids, eclass)
        if all(c in pruned for c in roots):  # else the incumbent undercuts every plan: ignore it
            cands = pruned
            counts["nodes_bounded"] = len(beyond) + consequence

    keep = dict.fromkeys(roots)
    stack = list(roots)
    while stack:
        for n in cands[stack.pop()]:
            for d in kids[n]:
                if d not in keep:
                    keep[d] = None
                    stack.append(d)
    counts["classes_orphaned"] = live_classes - len(keep)
    nodes = [n for c in keep for n in cands[c]]
    return _Model(
        list(keep),
        {c: cands[c] for c in keep},
        {n: kids[n] for n in nodes},
        {n: eclass[n] for n in nodes},
        {n: costs[n] for n in nodes},
        counts,
    )


def _live(
    cands: dict[str, list[str]], kids: dict[str, tuple[str, ...]], eclass: dict[str, str]
) -> tuple[dict[str, list[str]], int]:
    """``cands`` cut to the classes with a finite acyclic term (the least fixpoint: a class lives
    once one of its nodes has all child classes alive) and their nodes whose child classes all
    live; and how many nodes that dropped."""
    pending = {n: len(kids[n]) for ns in cands.values() for n in ns}
    parents: dict[str, list[str]] = {}
    for n in pending:
        for d in kids[n]:
            parents.setdefault(d, []).append(n)
    alive: set[str] = set()
    work = [n for n, k in pending.items() if k == 0]
    while work:
        c = eclass[work.pop()]
        if c in alive:
            continue
        alive.add(c)
        for p in parents.get(c, ()):
            pending[p] -= 1
            if pending[p] == 0:
                work.append(p)
    live = {c: [n for n in ns if pending[n] == 0] for c, ns in cands.items() if c in alive}
    return live, len(pending) - sum(map(len, live.values()))


def _beyond(
    roots: list[str],
    cands: dict[str, list[str]],
    kids: dict[str, tuple[str, ...]],
    costs: dict[str, float],
    eclass: dict[str, str],
    upper: float,
) -> set[str]:
    """Nodes every plan through which costs more than ``upper`` (see module doc): the cheapest
    root path to the node's class plus its cost plus its dearest child's least DAG cost."""
    least: dict[str, float] = {}  # class -> least DAG cost of a term: Knuth's Dijkstra, with max
    pending = {n: len(kids[n]) for ns in cands.values() for n in ns}
    parents: dict[str, list[str]] = {}
    for n in pending:
        for d in kids[n]:
            parents.setdefault(d, []).append(n)
    heap = [(costs[n], n) for n, k in pending.items() if k == 0]
    heapq.heapify(heap)
    while heap:
        v, n = heapq.heappop(heap)
        if eclass[n] in least:
            continue
        least[eclass[n]] = v
        for p in parents.get(eclass[n], ()):
            pending[p] -= 1
            if pending[p] == 0:
                heapq.heappush(heap, (costs[p] + max(least[d] for d in kids[p]), p))
    path: dict[str, float] = {}  # class -> cheapest path from a root (Dijkstra)
    frontier = [(0.0, r) for r in roots]
    while frontier:
        v, c = heapq.heappop(frontier)
        if c in path:
            continue
        path[c] = v
        for n in cands[c]:
            for d in kids[n]:
                if d not in path:
                    heapq.heappush(frontier, (v + costs[n], d))
    limit = upper * (1 + 1e-9) + 1e-12
    return {
        n
        for c, ns in cands.items()
        if c in path
        for n in ns
        if path[c] + costs[n] + max((least[d] for d in kids[n]), default=0.0) > limit
    }


def _sccs(roots: list[str], succ: Callable[[str], Iterable[str]]) -> list[list[str]]:
    """Strongly connected components of the graph reachable from ``roots`` (Tarjan, iterative),
    each component after every component it reaches."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    for r in roots:
        if r in index:
            continue
        index[r] = low[r] = len(index)
        stack.append(r)
        on_stack.add(r)
        work = [(r, iter(succ(r)))]
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is None:
                work.pop()
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(comp)
            elif w not in index:
                index[w] = low[w] = len(index)
                stack.append(w)
                on_stack.add(w)
                work.append((w, iter(succ(w))))
            elif w in on_stack:
                low[v] = min(low[v], index[w])
    return out


def _cycles(
    comp: list[str], chosen: dict[str, str], kids: dict[str, tuple[str, ...]]
) -> list[list[str]]:
    """A shortest cycle through each class of a strongly connected component of the selection
    (breadth-first inside the component), as class lists in cycle order."""
    inside = set(comp)
    out = []
    for s in comp:
        prev: dict[str, str] = {}
        queue = deque([s])
        while queue and s not in prev:
            v = queue.popleft()
            for w in kids[chosen[v]]:
                if w in inside and w not in prev:
                    prev[w] = v
                    queue.append(w)
        cyc = [s]
        while prev[cyc[-1]] != s:
            cyc.append(prev[cyc[-1]])
        out.append(cyc[::-1])
    return out
