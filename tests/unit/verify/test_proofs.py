"""Rule proofs with Z3 and the proof ledger: claims hold for the rules as written, wrong rules
are refuted, and the optimize gate refuses what a wrong rule would produce."""

import json

import pytest
from egglog import Vec, i64, var
from onnx import helper

from eqsat import cli, pipeline
from eqsat.egraph.lang import Tensor
from eqsat.errors import VerificationError
from eqsat.rules import schedule
from eqsat.rules.base import Rule
from eqsat.verify import ledger as led
from eqsat.verify import rules as rv
from tests.helpers import model, vi

EVERY = schedule.select(tuple(schedule.FAMILIES))
x, a, b = var("x", Tensor), var("a", Tensor), var("b", Tensor)


def test_every_claimed_proof_is_in_the_ledger_for_the_rule_as_written():
    ledger = led.load_ledger()
    claimed = [r for r in EVERY if r.proof != "unproved"]
    assert claimed, "no rule claims a proof"
    stale = [r.name for r in claimed if not led.holds(r, ledger)]
    assert stale == [], f"re-run `eqsat rules verify --write-ledger` for {stale}"


def test_every_rule_claims_a_bounded_proof():
    assert all(r.proof == "bounded" for r in EVERY)


def test_editing_a_python_rule_module_drops_the_proofs_of_its_rules(monkeypatch):
    import inspect

    from eqsat.rules import layout

    r = next(r for r in EVERY if r.name == "reshape-noop")
    assert led.holds(r, led.load_ledger())
    real = inspect.getsource
    monkeypatch.setattr(
        inspect, "getsource", lambda o: real(o) + ("# edited" if o is layout else "")
    )
    assert not led.holds(r, led.load_ledger())


def test_a_wrong_python_rule_is_refuted():
    """transpose-compose with the permutations composed the wrong way round."""
    from eqsat.egraph.encode import ints_vec
    from eqsat.rules.base import PyRule

    def wrong_compose(s):
        unions = []
        for c, outer in s.ops("Transpose"):
            for _, inner in s.nodes(outer.inputs[0]):
                if inner.kind == "op" and inner.op == "Transpose":
                    (p,), (q,) = outer.values, inner.values
                    r = tuple(p[i] for i in q)  # should be q[p[i]]
                    unions.append(
                        (s.term(c), Tensor.transpose(s.term(inner.inputs[0]), ints_vec(r)))
                    )
        return unions

    wrong = PyRule("transpose-compose", "layout", "T_p(T_q(x)) => T_(p o q)(x)", wrong_compose)
    v = rv.verify(wrong)
    assert v.result == "refuted", v


def test_editing_a_rule_drops_its_proof():
    r = next(r for r in EVERY if r.name == "add-commutative")
    edited = Rule(r.name, r.family, Tensor.add(a, b), Tensor.add(a, b), proof="bounded")
    assert led.holds(r, led.load_ledger()) and not led.holds(edited, led.load_ledger())


@pytest.mark.parametrize(
    "wrong",
    [
        Rule(
            "wrong-perm",
            "t",
            Tensor.transpose(Tensor.transpose(x, Vec[i64](1, 2, 0)), Vec[i64](1, 2, 0)),
            x,
        ),
        Rule("wrong-relu", "t", Tensor.relu(x), x),
        Rule("wrong-sub", "t", Tensor.sub(a, b), Tensor.sub(b, a)),
        Rule("wrong-matmul", "t", Tensor.matmul(a, b), Tensor.matmul(b, a)),
    ],
    ids=lambda r: r.name,
)
def test_wrong_rules_are_refuted(wrong):
    v = rv.verify_rule(wrong)
    assert v.result == "refuted", v
    assert "instance" in v.detail or "ill-typed" in v.detail


@pytest.mark.parametrize("name", ["add-associative", "matmul-transpose-2d", "relu-slice-commute"])
def test_rules_are_proved(name):
    v = rv.verify_rule(next(r for r in EVERY if r.name == name))
    assert v.result == "proved" and v.instances >= 10


def test_the_gate_refuses_what_a_wrong_rule_produces(monkeypatch):
    # relu(relu(x)) => neg(x): shape-preserving, cheaper, wrong. Shapes agree, so only the
    # numeric gate can stop it — and it must.
    wrong = Rule(
        "wrong-relu-neg", "wrong", Tensor.relu(Tensor.relu(x)), Tensor.neg(x), subsume=True
    )
    assert rv.verify_rule(wrong).result == "refuted"
    monkeypatch.setitem(schedule.FAMILIES, "wrong", lambda: [wrong])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])])
    with pytest.raises(VerificationError, match="verification failed"):
        pipeline.optimize(m, pipeline.Options(rules=("wrong",), isolate=False, allow_unproved=True))


def test_rules_cli_lists_and_verifies(capsys):
    assert cli.main(["rules", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(EVERY)
    assert {r["ledger"] for r in rows} == {"proved"}
    assert cli.main(["rules", "verify", "add-commutative", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["result"] == "proved"
    assert cli.main(["rules", "verify", "merge-matmul-shared-lhs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["result"] == "proved"
    assert cli.main(["rules", "verify", "no-such-rule"]) == 2


def test_shape_generic_proofs_where_the_ops_allow():
    from eqsat.verify import generic

    by = {r.name: r for r in EVERY}
    assert generic.prove(by["add-associative"]) == (
        "proved",
        "generic: every size, ranks 1-6, operands of one shape",
    )
    assert generic.prove(by["relu-transpose-commute"])[0] == "proved"
    assert generic.prove(by["matmul-transpose-2d"])[0] == "unsupported"  # a sum over a size
    wrong = Rule(
        "wrong-perm",
        "t",
        Tensor.transpose(Tensor.transpose(x, Vec[i64](1, 2, 0)), Vec[i64](1, 2, 0)),
        x,
    )
    assert generic.prove(wrong)[0] == "refuted"
    ledger = led.load_ledger()
    assert sum(bool(e.get("generic")) for e in ledger.values()) >= 50


@pytest.mark.slow
def test_every_rule_is_proved_now():
    verdicts = [rv.verify(r) for r in EVERY]
    assert [v.name for v in verdicts if v.result != "proved"] == []
