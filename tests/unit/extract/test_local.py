"""The local search after greedy_dag: it takes a merge that greedy cannot (every user of a
shared class switching at once), and on random e-graphs with cycles its plan covers the roots,
is acyclic, costs what it says and never more than greedy's."""

from __future__ import annotations

import pytest
from hypothesis import given, settings

from eqsat.extract.greedy import Choice, ExtractionError, greedy_dag
from eqsat.extract.local import local_search
from tests.unit.extract.test_ilp import (
    SHARED,
    SHARED_COSTS,
    _brute_force,
    _check_plan,
    _eg,
    egraphs,
)

# three users of a merge M (9): each pays 5 privately or 1 + 9 through M alone, so greedy pays
# 15 and no single user gains by switching; all three through M pay 3 + 9 = 12
MERGE = {
    "R1": [("p1", ()), ("s1", ("M",))],
    "R2": [("p2", ()), ("s2", ("M",))],
    "R3": [("p3", ()), ("s3", ("M",))],
    "M": [("m", ("X",))],
    "X": [("x", ())],
}
MERGE_COSTS = {"R10": 5.0, "R11": 1.0, "R20": 5.0, "R21": 1.0, "R30": 5.0, "R31": 1.0}
MERGE_COSTS.update({"M0": 9.0, "X0": 0.0})


@pytest.mark.parametrize(
    ("classes", "costs", "roots", "greedy_cost", "best"),
    [
        (SHARED, SHARED_COSTS, ["R1", "R2"], 20.0, 17.0),
        (MERGE, MERGE_COSTS, ["R1", "R2", "R3"], 15.0, 12.0),
    ],
)
def test_local_search_takes_the_merge_greedy_cannot(classes, costs, roots, greedy_cost, best):
    eg, cost = _eg(classes), costs.__getitem__
    greedy = greedy_dag(eg, roots, cost)
    assert greedy.cost == greedy_cost
    got = local_search(eg, roots, cost, greedy)
    assert got.choice.cost == best and got.start_cost == greedy_cost and got.moves >= 1
    _check_plan(eg, roots, got.choice, cost)


# the reverse: two roots slice a wide op W (10) that neither needs alone (each has its own for
# 3, of inputs of its own); from the plan through W, one root leaving saves nothing (the other
# still needs W), and the two own nodes share no child (no shared-child move joins them)
WIDE = {
    "R1": [("slice1", ("W",)), ("own1", ("Y1",))],
    "R2": [("slice2", ("W",)), ("own2", ("Y2",))],
    "W": [("wide", ("X",))],
    "X": [("x", ())],
    "Y1": [("y1", ())],
    "Y2": [("y2", ())],
}
WIDE_COSTS = {"R10": 0.0, "R11": 3.0, "R20": 0.0, "R21": 3.0, "W0": 10.0}
WIDE_COSTS.update({"X0": 0.0, "Y10": 0.0, "Y20": 0.0})


def test_local_search_leaves_a_shared_class_all_users_at_once():
    eg, roots, cost = _eg(WIDE), ["R1", "R2"], WIDE_COSTS.__getitem__
    start = Choice({"X": "X0", "W": "W0", "R1": "R10", "R2": "R20"}, 10.0, ["X", "W", "R1", "R2"])
    _check_plan(eg, roots, start, cost)
    got = local_search(eg, roots, cost, start)
    assert got.choice.choice == {"Y1": "Y10", "Y2": "Y20", "R1": "R11", "R2": "R21"}
    assert got.choice.cost == 6.0
    _check_plan(eg, roots, got.choice, cost)


def test_a_start_through_a_dominated_node_is_read_through_its_dominator():
    # r1(A, B) costs what r2(A) costs: shrinking drops r1, and with it B, which only r1 reaches
    eg = _eg({"R": [("r1", ("A", "B")), ("r2", ("A",))], "A": [("a", ())], "B": [("b", ())]})
    cost = {"R0": 1.0, "R1": 1.0, "A0": 1.0, "B0": 1.0}.__getitem__
    start = Choice({"R": "R0", "A": "A0", "B": "B0"}, 3.0, ["A", "B", "R"])
    got = local_search(eg, ["R"], cost, start, max_rounds=0)
    assert got.choice.choice == {"A": "A0", "R": "R1"} and got.choice.cost == 2.0
    _check_plan(eg, ["R"], got.choice, cost)


def test_no_rounds_keeps_the_start():
    eg, roots, cost = _eg(SHARED), ["R1", "R2"], SHARED_COSTS.__getitem__
    greedy = greedy_dag(eg, roots, cost)
    got = local_search(eg, roots, cost, greedy, max_rounds=0)
    assert got.choice.cost == greedy.cost and got.tries == 0


@settings(max_examples=150, deadline=None)
@given(egraphs())
def test_local_search_is_acyclic_and_never_worse_than_greedy(case):
    eg, roots, costs = case
    try:
        greedy = greedy_dag(eg, roots, costs.__getitem__)
    except ExtractionError:
        return
    got = local_search(eg, roots, costs.__getitem__, greedy)
    _check_plan(eg, roots, got.choice, costs.__getitem__)
    assert got.choice.cost <= greedy.cost + 1e-9
    assert got.choice.cost >= _brute_force(eg, roots, costs) - 1e-9


def test_nasrnn_gates_merge_with_the_local_search_alone():
    # test_merge's end-to-end case under the default cost model, the ILP left out: the search
    # alone takes the eight gates' merged MatMuls that greedy cannot
    from collections import Counter

    from eqsat import pipeline
    from eqsat.examples import build_example

    m = build_example("nasrnn", "small")
    result = pipeline.optimize(m, pipeline.Options(extractor="local"))
    summary = result.egraph["extraction"]
    assert summary["extractor"] == "local" and summary["local"]["moves"] >= 1
    assert summary["cost"] < summary["local"]["start_cost"]
    after = Counter(n.op_type for n in result.model.graph.node)
    assert after["MatMul"] <= 4 and result.verdict.ok
