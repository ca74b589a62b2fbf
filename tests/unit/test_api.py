"""The Python API mirrors ``eqsat optimize``."""

import pytest

import eqsat
from eqsat.errors import InputError
from eqsat.examples import build_example


def test_optimize_api_runs_the_pipeline_and_writes_the_file(tmp_path):
    out = tmp_path / "o.onnx"
    result = eqsat.optimize(build_example("nasrnn", "small"), output=out, extractor="ilp")
    assert out.is_file()
    assert result.verdict.ok
    assert result.egraph["extraction"]["extractor"] in ("greedy", "ilp")
    assert result.egraph["saturation"]["matches"]["merge-matmul-shared-rhs"] > 0


def test_optimize_api_rejects_unknown_options():
    with pytest.raises(InputError, match="unknown option"):
        eqsat.optimize(build_example("nasrnn", "small"), iterations=3)
    with pytest.raises(InputError, match="unknown extractor"):
        eqsat.optimize(build_example("nasrnn", "small"), extractor="magic")


def test_where_the_cost_model_sees_a_tie_the_original_graph_is_kept():
    # mul-associative can reorder SwiGLU's RMSNorm at equal modelled cost; that broke an ORT
    # fusion (measured 0.98x), so rewritten e-nodes must be strictly cheaper to be taken.
    m = build_example("swiglu", "small")
    plain = eqsat.optimize(m, rules=("cleanup",)).model
    algebra = eqsat.optimize(m, rules=("cleanup", "algebra")).model
    assert [(n.op_type, list(n.input)) for n in algebra.graph.node] == [
        (n.op_type, list(n.input)) for n in plain.graph.node
    ]


def test_an_unsound_rule_is_caught_by_the_shape_check_and_the_run_falls_back(monkeypatch):
    from egglog import Vec, i64, var
    from onnx import helper

    from eqsat.egraph.lang import Tensor
    from eqsat.rules import schedule
    from eqsat.rules.base import Rule
    from tests.helpers import model, vi

    x = var("x", Tensor)
    wrong = Rule("wrong-transpose", "wrong", Tensor.relu(x), Tensor.transpose(x, Vec[i64](1, 0)))
    monkeypatch.setitem(schedule.FAMILIES, "wrong", lambda: [wrong])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Tanh", ["r"], ["y"])]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])])
    left_out = eqsat.optimize(m, rules=("wrong",))  # not in the proof ledger: not used
    assert left_out.egraph["unproved_left_out"] == ["wrong-transpose"]
    result = eqsat.optimize(m, rules=("wrong",), allow_unproved=True)
    assert "ShapeConflict" in result.egraph["error"]
    assert result.egraph["fallback"] == "folded graph"
    assert [n.op_type for n in result.model.graph.node] == ["Relu", "Tanh"]
    assert result.verdict.ok


def test_the_time_limit_is_hard_a_stuck_rewrite_is_killed(monkeypatch):
    import time

    from eqsat import pipeline
    from eqsat.rules import schedule
    from eqsat.rules.base import PyRule

    def stuck(snapshot):
        time.sleep(3600)  # stands for an egglog iteration that never returns
        return []

    monkeypatch.setitem(
        schedule.FAMILIES, "stuck", lambda: [PyRule("stuck", "stuck", "x => x", stuck)]
    )
    # The soft limits are out of reach, so nothing but the hard limit can end the run, however
    # loaded the machine (with a 0.5 s soft limit the shape analysis could use it up, saturation
    # stopped before the stuck rewrite and the run finished normally). The hard limit is
    # time_limit + extract_time_limit + HARD_LIMIT_GRACE: 2 s.
    soft = 3600.0
    monkeypatch.setattr(pipeline, "HARD_LIMIT_GRACE", 2.0 - 2 * soft)
    result = eqsat.optimize(
        build_example("nasrnn", "small"),
        rules=("stuck",),
        time_limit=soft,
        extract_time_limit=soft,
        allow_unproved=True,
    )
    assert "hard limit of 2 s" in result.egraph["error"]
    assert result.egraph["fallback"] == "folded graph"
    assert result.verdict.ok  # the folded graph, verified
