"""Rules as data: names, the schedule, and each rule alone on a witness graph: it fires, the
result is smaller, and lhs and rhs agree numerically on random inputs (both directions: the
rewritten model is checked against the original and vice versa)."""

import numpy as np
import pytest
from onnx import helper

from eqsat import pipeline
from eqsat.errors import InputError
from eqsat.rules import schedule
from eqsat.rules.base import PyRule
from eqsat.verify.numeric import compare_models
from tests.helpers import model, vi

RULES = schedule.select(("cleanup",))  # one-node witnesses here; the merge family: test_merge


def _witness(rule_name: str):
    """An ONNX model whose graph contains the rule's left-hand side."""
    shape = [2, 3, 4, 5]
    if rule_name == "identity-elim":
        ops = [("Identity", {})]
    elif rule_name == "relu-idempotent":
        ops = [("Relu", {}), ("Relu", {})]
    elif rule_name == "neg-involution":
        ops = [("Neg", {}), ("Neg", {})]
    elif rule_name.startswith("transpose-involution-"):
        perm = [int(c) for c in rule_name.rsplit("-", 1)[1]]
        shape = shape[: len(perm)]
        ops = [("Transpose", {"perm": perm}), ("Transpose", {"perm": perm})]
    else:
        raise KeyError(rule_name)
    nodes, prev = [helper.make_node("Sigmoid", ["x"], ["s"])], "s"
    for k, (op, attrs) in enumerate(ops):
        nodes.append(helper.make_node(op, [prev], [f"t{k}"], **attrs))
        prev = f"t{k}"
    nodes.append(helper.make_node("Tanh", [prev], ["y"]))
    return model(nodes, [vi("x", shape)], [vi("y", None)])


def test_names_are_unique_and_every_rule_has_a_witness():
    """Clean-up rules have a witness here; every Python-driven rule has one in its family's test
    module or carries its own (the merges lifted from generated rules); every egglog rule is
    also evaluated on random inputs (test_rule_semantics)."""
    from tests.unit.rules import test_fold, test_fusion, test_layout, test_linear, test_merge

    every = schedule.select(tuple(schedule.FAMILIES))
    names = [r.name for r in every]
    assert len(names) == len(set(names))
    elsewhere = {
        **test_fold.WITNESSES,
        **test_merge.WITNESSES,
        **test_layout.WITNESSES,
        **test_linear.WITNESSES,
        **test_fusion.WITNESSES,
    }
    for r in every:
        if isinstance(r, PyRule):
            witness = r.witness(2) if r.witness else elsewhere[r.name]()
            assert len(witness.graph.node) >= 1
        elif r.family == "cleanup":
            assert len(_witness(r.name).graph.node) >= 1


@pytest.mark.parametrize("rule", RULES, ids=[r.name for r in RULES])
def test_rule_alone_fires_and_preserves_semantics(rule):
    m = _witness(rule.name)
    others = tuple(r.name for r in RULES if r.name != rule.name)
    opts = pipeline.Options(rules=("cleanup",), disabled_rules=others, seeds=(0, 1))
    result = pipeline.optimize(m, opts)
    sat = result.egraph["saturation"]
    assert sat["matches"].get(rule.name, 0) >= 1
    assert len(result.model.graph.node) < len(m.graph.node)
    assert result.verdict.ok
    back = compare_models(result.model, m, rtol=0, atol=0, seeds=(3,))  # the other direction
    assert back.ok, back.reason


def test_unknown_family_or_rule_is_an_input_error():
    m = _witness("identity-elim")
    with pytest.raises(InputError, match="unknown rule families"):
        pipeline.optimize(m, pipeline.Options(rules=("nope",)))
    with pytest.raises(InputError, match="no rule named"):
        pipeline.optimize(m, pipeline.Options(disabled_rules=("nope",)))


def test_disabled_rule_does_not_fire():
    m = _witness("relu-idempotent")
    opts = pipeline.Options(disabled_rules=("relu-idempotent",))
    result = pipeline.optimize(m, opts)
    assert result.egraph["saturation"]["matches"].get("relu-idempotent", 0) == 0
    assert [n.op_type for n in result.model.graph.node].count("Relu") == 2


def test_optimize_json_reports_egraph_statistics(capsys, tmp_path):
    import json

    import onnx

    from eqsat import cli

    p = tmp_path / "w.onnx"
    onnx.save_model(_witness("neg-involution"), str(p))
    code = cli.main(
        [
            "optimize",
            str(p),
            "-o",
            str(tmp_path / "o.onnx"),
            "--json",
            "--iter-limit",
            "5",
            "--node-limit",
            "1000",
            "--time-limit",
            "3600",
        ]
    )
    s = json.loads(capsys.readouterr().out)
    assert code == 0
    eg = s["egraph"]
    assert eg["saturation"]["stop_reason"] == "saturated"
    assert eg["saturation"]["matches"]["neg-involution"] >= 1
    assert eg["cost_after"] < eg["cost_before"]
    assert np.isfinite(eg["cost_after"])


def test_output_that_rewrites_to_the_input_becomes_an_identity():
    # Found by hypothesis: Transpose(Transpose(x)) as the graph output collapses to x itself.
    nodes = [
        helper.make_node("Transpose", ["x"], ["a"], perm=[1, 0]),
        helper.make_node("Transpose", ["a"], ["y"], perm=[1, 0]),
    ]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])])
    result = pipeline.optimize(m)
    assert [(n.op_type, list(n.input), list(n.output)) for n in result.model.graph.node] == [
        ("Identity", ["x"], ["y"])
    ]
    assert result.verdict.ok
