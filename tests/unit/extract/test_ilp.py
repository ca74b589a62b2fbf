"""The ILP DAG extractor: the optimum where greedy_dag shares too little, cycle cuts and the
ordered fallback, the shrinking steps, the incumbent, and a property test against greedy_dag
and brute force on random small e-graphs with cycles."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from eqsat.egraph.serialized import ENode, SerializedEGraph
from eqsat.extract import ilp
from eqsat.extract.greedy import Choice, ExtractionError, greedy_dag
from eqsat.extract.ilp import ilp_dag


def _eg(
    classes: dict[str, list[tuple[str, tuple[str, ...]]]], subsumed: frozenset[str] = frozenset()
) -> SerializedEGraph:
    """Node ids are class + index; a child class is referenced through its node 0."""
    nodes = {
        f"{c}{i}": ENode(op, tuple(f"{k}0" for k in kids), c, f"{c}{i}" in subsumed)
        for c, ns in classes.items()
        for i, (op, kids) in enumerate(ns)
    }
    by_class = {c: [f"{c}{i}" for i in range(len(ns))] for c, ns in classes.items()}
    return SerializedEGraph(nodes, by_class, {})


def _check_plan(eg: SerializedEGraph, roots: list[str], got: Choice, cost) -> None:
    """A plan: every root and every chosen node's child classes chosen, nothing else, the
    order children before parents (so acyclic), and the cost the DAG cost of the plan."""
    assert set(roots) <= set(got.choice)
    assert sorted(got.order) == sorted(got.choice)
    pos = {c: i for i, c in enumerate(got.order)}
    used = set(roots)
    for c, n in got.choice.items():
        assert eg.nodes[n].eclass == c and not eg.nodes[n].subsumed
        for d in eg.child_classes(n):
            assert d in got.choice and pos[d] < pos[c]
            used.add(d)
    assert used == set(got.choice)
    assert got.cost == pytest.approx(sum(cost(n) for n in got.choice.values()), abs=1e-9)


SHARED = {  # two roots, each a private node (10) or a slice (1) of a shared class M (15)
    "R1": [("p1", ()), ("slice1", ("M",))],
    "R2": [("p2", ()), ("slice2", ("M",))],
    "M": [("m", ())],
}
SHARED_COSTS = {"R10": 10.0, "R11": 1.0, "R20": 10.0, "R21": 1.0, "M0": 15.0}


def test_ilp_shares_a_class_that_greedy_pays_twice_for():
    eg, roots, cost = _eg(SHARED), ["R1", "R2"], SHARED_COSTS.__getitem__
    greedy = greedy_dag(eg, roots, cost)
    assert greedy.choice == {"R1": "R10", "R2": "R20"} and greedy.cost == 20.0
    for incumbent in (None, greedy):
        got = ilp_dag(eg, roots, cost, incumbent=incumbent)
        assert got.status == "optimal" and got.ilp_status == "optimal"
        assert got.choice.choice == {"R1": "R11", "R2": "R21", "M": "M0"}
        assert got.choice.cost == 17.0 and got.objective == pytest.approx(17.0)
        assert got.bound == pytest.approx(17.0) and got.gap == pytest.approx(0.0, abs=1e-6)
        assert got.acyclicity == "none needed" and got.rounds == 0
        _check_plan(eg, roots, got.choice, cost)


def test_incumbent_is_kept_when_the_ilp_finds_nothing_better():
    eg, roots, cost = _eg(SHARED), ["R1", "R2"], SHARED_COSTS.__getitem__
    greedy = greedy_dag(eg, roots, cost)
    got = ilp_dag(eg, roots, cost, time_limit=0.0, incumbent=greedy)
    assert got.status == "incumbent" and got.ilp_status == "time-limit"
    assert got.choice is greedy
    got = ilp_dag(eg, roots, cost, time_limit=0.0)
    assert got.choice is None and got.status == "time-limit"


def test_incumbent_bound_prunes_dear_nodes_but_keeps_an_optimum_at_the_bound():
    # R1 may also be big(Q) for 5, Q a leaf for 20: any plan through big costs 25 or more.
    eg = _eg({**SHARED, "R1": [*SHARED["R1"], ("big", ("Q",))], "Q": [("q", ())]})
    costs = {**SHARED_COSTS, "R12": 5.0, "Q0": 20.0}
    roots = ["R1", "R2"]
    best = ilp_dag(eg, roots, costs.__getitem__)
    assert best.choice.cost == 17.0 and best.nodes_bounded == 0
    # the optimum as incumbent: pruning keeps every node of a plan that costs no more than it
    again = ilp_dag(eg, roots, costs.__getitem__, incumbent=best.choice)
    assert again.status == "optimal" and again.choice.choice == best.choice.choice
    assert (again.nodes_bounded, again.classes_orphaned) == (2, 1)  # big and q (25 each); Q


CYCLE = {"A": [("a", ("B",))], "B": [("gB", ("A",)), ("b", ())]}  # A = a(B), B = gB(A) | b
CYCLE_COSTS = {"A0": 1.0, "B0": 0.0, "B1": 5.0}


def test_a_cycle_is_cut_and_the_leaf_taken():
    eg, cost = _eg(CYCLE), CYCLE_COSTS.__getitem__
    got = ilp_dag(eg, ["A"], cost)
    assert got.status == "optimal" and got.acyclicity == "cuts"
    assert got.rounds == 1 and got.cuts == 1  # the first solve picks a(gB(...)) for 1
    assert got.choice.choice == {"A": "A0", "B": "B1"} and got.choice.cost == 6.0
    assert got.choice.order == ["B", "A"]
    _check_plan(eg, ["A"], got.choice, cost)


def test_ordering_variables_take_over_when_cuts_run_out(monkeypatch):
    monkeypatch.setattr(ilp, "MAX_ROUNDS", 0)
    eg, cost = _eg(CYCLE), CYCLE_COSTS.__getitem__
    got = ilp_dag(eg, ["A"], cost)
    assert got.status == "optimal" and got.acyclicity == "order" and got.cuts == 0
    assert got.choice.choice == {"A": "A0", "B": "B1"} and got.choice.cost == 6.0
    assert got.variables == 3 + 2 + 2  # x per node, a per class, t for A and B
    _check_plan(eg, ["A"], got.choice, cost)


def test_no_acyclic_term_raises():
    with pytest.raises(ExtractionError):
        ilp_dag(_eg({"A": [("a", ("B",))], "B": [("gB", ("A",))]}), ["A"], lambda n: 1.0)
    costs = {**CYCLE_COSTS, "B1": math.inf}  # the leaf excluded by its cost
    with pytest.raises(ExtractionError):
        ilp_dag(_eg(CYCLE), ["A"], costs.__getitem__)


def test_shrinking_counts():
    eg = _eg(
        {
            "R": [("r", ("X", "Y")), ("self", ("R",)), ("dead", ("D",)), ("sub", ())],
            "X": [("x", ("Y",)), ("zero", ())],  # fixed to the free leaf
            "Y": [("y1", ("L",)), ("y2", ("L", "X")), ("y3", ("L",))],  # y2, y3 dominated
            "L": [("l", ())],
            "D": [("d", ("D2",))],
            "D2": [("d2", ("D",))],  # D and D2 only cycle: dead
            "U": [("u", ())],  # unreachable
        },
        subsumed=frozenset({"R3"}),
    )
    costs = {"X1": 0.0, "Y0": 2.0, "Y1": 2.0, "Y2": 3.0}
    got = ilp_dag(eg, ["R"], lambda n: costs.get(n, 1.0))
    assert (got.classes_unreachable, got.nodes_excluded) == (1, 2)  # U; R1 (self), R3
    assert (got.classes_dead, got.nodes_dead) == (2, 3)  # D, D2; R2, D0, D20
    assert (got.classes_fixed, got.nodes_fixed, got.nodes_dominated) == (1, 1, 2)
    assert got.choice.choice == {"R": "R0", "X": "X1", "Y": "Y0", "L": "L0"}
    assert got.choice.cost == 4.0 and got.status == "optimal"


@st.composite
def egraphs(draw) -> tuple[SerializedEGraph, list[str], dict[str, float]]:
    """Up to 6 classes of 1 to 3 nodes with up to 2 children anywhere (so self-loops and
    cycles), integer costs with some infinite, a few subsumed nodes, 1 or 2 roots."""
    names = [f"c{i}" for i in range(draw(st.integers(1, 6)))]
    sizes = {c: draw(st.integers(1, 3)) for c in names}
    nodes: dict[str, ENode] = {}
    costs: dict[str, float] = {}
    for c in names:
        for i in range(sizes[c]):
            kids = draw(st.lists(st.sampled_from(names), max_size=2))
            refs = tuple(f"{k}_{draw(st.integers(0, sizes[k] - 1))}" for k in kids)
            nodes[f"{c}_{i}"] = ENode("op", refs, c, draw(st.integers(0, 9)) == 0)
            cost = draw(st.integers(-3, 20))
            costs[f"{c}_{i}"] = math.inf if cost < 0 else float(cost)
    classes = {c: [f"{c}_{i}" for i in range(sizes[c])] for c in names}
    roots = draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True))
    return SerializedEGraph(nodes, classes, {}), roots, costs


def _brute_force(eg: SerializedEGraph, roots: list[str], costs: dict[str, float]) -> float:
    """The least DAG cost over every choice of a node per class with an acyclic plan."""
    classes = sorted(eg.classes)
    options = [
        [n for n in eg.classes[c] if not eg.nodes[n].subsumed and math.isfinite(costs[n])] or [None]
        for c in classes
    ]
    best = math.inf
    for pick in itertools.product(*options):
        best = min(best, _plan_cost(eg, roots, dict(zip(classes, pick, strict=True)), costs))
    return best


def _plan_cost(
    eg: SerializedEGraph, roots: list[str], choice: dict[str, str | None], costs: dict[str, float]
) -> float:
    """The DAG cost of what ``choice`` makes the roots need; inf if that has a cycle or a class
    without a node."""
    state: dict[str, int] = {}  # 1 = on the path, 2 = done

    def visit(c: str) -> bool:
        if state.get(c) == 2:
            return True
        if state.get(c) == 1 or choice[c] is None:
            return False
        state[c] = 1
        ok = all(visit(d) for d in eg.child_classes(choice[c]))
        state[c] = 2
        return ok

    return sum(costs[choice[c]] for c in state) if all(visit(r) for r in roots) else math.inf


@settings(max_examples=100, deadline=None)
@given(egraphs())
def test_ilp_is_optimal_acyclic_and_no_worse_than_greedy(case):
    eg, roots, costs = case
    calls: list[str] = []

    def cost(nid: str) -> float:
        calls.append(nid)
        return costs[nid]

    optimum = _brute_force(eg, roots, costs)
    try:
        greedy = greedy_dag(eg, roots, costs.__getitem__)
    except ExtractionError:
        assert optimum == math.inf
        with pytest.raises(ExtractionError):
            ilp_dag(eg, roots, cost)
        return
    got = ilp_dag(eg, roots, cost)
    assert len(calls) == len(set(calls))
    assert got.status == "optimal"
    _check_plan(eg, roots, got.choice, costs.__getitem__)
    assert got.choice.cost <= greedy.cost + 1e-9
    assert got.choice.cost == pytest.approx(optimum, abs=1e-9)
    with_incumbent = ilp_dag(eg, roots, costs.__getitem__, incumbent=greedy)
    assert with_incumbent.choice.cost == pytest.approx(optimum, abs=1e-9)
    _check_plan(eg, roots, with_incumbent.choice, costs.__getitem__)


# one choice per class once shrunk: ``b + a`` ties ``a + b`` (dominated: same cost, same kids),
# a subsumed node and an unreachable class go; nothing is left for a solver to decide
FORCED = {
    "R": [("add", ("A", "B")), ("add-swapped", ("B", "A"))],
    "A": [("relu", ("X",)), ("old", ("X",))],
    "B": [("conv", ("X",))],
    "X": [("x", ())],
    "U": [("unused", ("X",))],
}
FORCED_COSTS = {"R0": 1.0, "R1": 1.0, "A0": 2.0, "A1": 5.0, "B0": 3.0, "X0": 0.0, "U0": 9.0}


@pytest.mark.parametrize("with_incumbent", [False, True])
def test_forced_model_is_solved_without_the_solver_as_the_solver_solves_it(
    monkeypatch, with_incumbent
):
    eg, cost = _eg(FORCED, subsumed=frozenset({"A1"})), FORCED_COSTS.__getitem__
    incumbent = greedy_dag(eg, ["R"], cost) if with_incumbent else None
    with monkeypatch.context() as mp:
        mp.setattr(ilp, "_forced", lambda *args: None)  # the solver's answer
        solved = ilp_dag(eg, ["R"], cost, incumbent=incumbent)

    def no_solver(*args, **kwargs):
        raise AssertionError("the solver ran on a forced model")

    monkeypatch.setattr(ilp._Program, "solve", no_solver)
    got = ilp_dag(eg, ["R"], cost, incumbent=incumbent)
    _check_plan(eg, ["R"], got.choice, cost)
    assert got.choice.cost == solved.choice.cost == 6.0
    assert (got.status, got.ilp_status, got.acyclicity) == (
        solved.status, solved.ilp_status, solved.acyclicity
    )  # fmt: skip
    assert (got.variables, got.constraints, got.rounds, got.cuts) == (
        solved.variables, solved.constraints, solved.rounds, solved.cuts
    )  # fmt: skip
    assert got.objective == pytest.approx(solved.objective)
    assert got.bound == pytest.approx(solved.bound) and got.gap == pytest.approx(0.0, abs=1e-12)
    assert got.nodes_dominated == solved.nodes_dominated == 1


def test_a_model_with_a_choice_still_runs_the_solver(monkeypatch):
    calls = []
    solve = ilp._Program.solve
    monkeypatch.setattr(ilp._Program, "solve", lambda self, *a: calls.append(1) or solve(self, *a))
    eg, roots, cost = _eg(SHARED), ["R1", "R2"], SHARED_COSTS.__getitem__
    got = ilp_dag(eg, roots, cost)
    assert calls and got.choice.cost == 17.0  # both slices of the shared class: 1 + 1 + 15


def test_certify_proves_a_plan_the_bound_leaves_alone_and_declines_otherwise():
    """Without the solver: a node whose every plan costs more than the incumbent goes; where one
    plan is left it is proved optimal. In SHARED, a plan with a private node costs at least 10
    (the bound counts the node's own sub-DAG, not the other root's), under the shared plan's 17:
    both ways stay, no proof (the solver is needed)."""
    eg, cost = (
        _eg({"R": [("a", ("L",)), ("b", ())], "L": [("l", ())]}),
        {"R0": 1.0, "R1": 5.0, "L0": 2.0}.__getitem__,
    )
    plan = greedy_dag(eg, ["R"], cost)
    res = ilp.certify(eg, ["R"], cost, plan)
    assert res is not None and res.status == "optimal" and res.gap == 0.0
    assert res.choice.choice == {"R": "R0", "L": "L0"} and res.choice.cost == 3.0
    eg, roots, cost = _eg(SHARED), ["R1", "R2"], SHARED_COSTS.__getitem__
    shared = Choice({"M": "M0", "R1": "R11", "R2": "R21"}, 17.0, ["M", "R1", "R2"])
    assert ilp.certify(eg, roots, cost, shared) is None
