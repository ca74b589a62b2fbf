"""Rules lifted from the generated ones: N-ary merges from multi-output pairs and middle-slice
forms. Each lifted merge is found in the rules file, fires on three members at once (not on
pairs), leaves out an RNN's dependent member, and is proved on its witness; a lift with a wrong
slice axis is refuted; only the middle-slice forms that hold are kept."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import onnx
import pytest
from onnx import helper

from eqsat.egraph import passes
from eqsat.egraph.encode import encode
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.egraph.saturate import saturate
from eqsat.extract.extraction import extract
from eqsat.rules.discover.widen import widen
from eqsat.rules.generated import lift, rulefile
from eqsat.verify.pyrules import verify_pyrule
from eqsat.verify.rules import prove_typed
from tests.helpers import init, model, vi
from tests.unit.rules.test_merge import PreferMerged, _check_both_directions

ENTRIES = rulefile.read()["rules"]
LIFTS = {lf.name: lf for lf in lift.lifts(ENTRIES)}
# every generated rule runs to its fixpoint: the wall-clock limits are out of reach, so how loaded
# the machine is cannot change what fires
GENERATED = {"rules": ("generated",), "time_limit": 3600.0, "extract_time_limit": 3600.0}


def _lift(ctor: str, position: int) -> lift.Lift:
    found = [lf for lf in LIFTS.values() if lf.ctor == ctor and lf.position == position]
    assert found, f"no {ctor} lift over argument {position} in the rules file"
    return found[0]


def _run(m: onnx.ModelProto, rule):
    g = passes.eliminate_dead_code(passes.fold_constants(import_onnx(m)))
    sat = saturate(encode(g), (), rewrites=[rule])
    out = passes.fold_constants(extract(sat, PreferMerged()).graph, bounded=False)
    return sat, export_onnx(out)


def test_the_rules_file_yields_the_matmul_and_conv_merges():
    shared_lhs = _lift("matmul", 1)  # x·w_i: TASO's and Tensat's merge
    assert (shared_lhs.concat_axis, shared_lhs.out_axis) == (1, 1)
    assert [s.split("-")[1] for s in shared_lhs.sources] == ["split", "split"]
    assert (_lift("matmul", 0).concat_axis, _lift("matmul", 0).out_axis) == (0, 0)  # batching
    assert _lift("conv", 1).out_axis == 1  # kernels concatenated: output channels
    # no unary lift: relu(concat(y, z)) pieces share no operand, merging them saves nothing
    assert not [lf for lf in LIFTS.values() if lf.ctor == "relu"]
    assert len({lf.name for lf in LIFTS.values()}) == len(LIFTS)


def test_three_matmuls_of_one_input_become_one_matmul():
    rng = np.random.default_rng(0)
    widths = (2, 5, 3)
    nodes = [helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"]) for i in range(3)]
    nodes += [helper.make_node("Tanh", [f"m{i}"], [f"y{i}"]) for i in range(3)]
    inits = [
        init(f"w{i}", rng.standard_normal((4, n)).astype(np.float32)) for i, n in enumerate(widths)
    ]
    m = model(nodes, [vi("x", [3, 4])], [vi(f"y{i}", None) for i in range(3)], inits)
    rule = lift.pyrule(_lift("matmul", 1))
    sat, out = _run(m, rule)
    assert sat.matches[rule.name] == 3  # one group of three, not three pairs
    assert sorted(n.op_type for n in out.graph.node).count("MatMul") == 1
    _check_both_directions(m, out)


def test_an_rnn_state_is_not_batched_with_the_step_that_computes_it():
    rng = np.random.default_rng(1)
    nodes = [
        helper.make_node("MatMul", ["x0", "w"], ["m0"]),
        helper.make_node("MatMul", ["x1", "w"], ["m1"]),
        helper.make_node("Tanh", ["m0"], ["h"]),
        helper.make_node("MatMul", ["h", "w"], ["m2"]),  # needs m0: batching it would be a cycle
        helper.make_node("Add", ["m1", "m2"], ["y"]),
    ]
    inits = [init("w", rng.standard_normal((4, 4)).astype(np.float32))]
    m = model(nodes, [vi("x0", [2, 4]), vi("x1", [2, 4])], [vi("y", None)], inits)
    rule = lift.pyrule(_lift("matmul", 0))
    sat, out = _run(m, rule)
    assert sat.matches[rule.name] == 2  # x0 and x1; h is left out
    assert sorted(n.op_type for n in out.graph.node).count("MatMul") == 2
    _check_both_directions(m, out)


@pytest.mark.parametrize("name", sorted(LIFTS))
def test_every_lift_merges_its_witness_and_keeps_its_values(name):
    rule = lift.pyrule(LIFTS[name])
    m = rule.witness(2)
    sat, out = _run(m, rule)
    assert sat.matches[rule.name] == 3
    _check_both_directions(m, out)


def test_lifted_merges_are_proved_and_a_wrong_slice_axis_is_refuted():
    good = _lift("matmul", 1)
    assert verify_pyrule(lift.pyrule(good)).result == "proved"
    wrong = replace(_lift("matmul", 0), out_axis=1)
    assert verify_pyrule(lift.pyrule(wrong)).result == "refuted"


def test_middle_slice_forms_are_kept_only_where_they_hold():
    by_name = {e["name"]: e for e in ENTRIES}
    wide = [w for e in ENTRIES if "widened_from" not in e for w in widen(e)]
    assert wide
    kept = [w for w in ENTRIES if "widened_from" in w]
    assert kept and {w["name"] for w in kept} <= {w["name"] for w in wide}
    for w in kept:  # each one's suffix slice is now a middle one: three atoms on that dim
        base = by_name[w["widened_from"]]
        assert (w["lhs"], w["rhs"]) == (base["lhs"], base["rhs"])
        assert any(len(d) == 3 for s in w["shapes"].values() for d in s)

    # concat(x[0:a], x[a:a+b]) = x holds; with x's rows a + b + c the pieces miss the last c
    def piece(lo: str, hi: str) -> str:
        ints = [f"Tensor.ints(Vec[i64]({b}))" for b in (lo, hi, "i64(0)")]
        return f"Tensor.slice(x, {', '.join(ints)}, Tensor.none())"

    lhs = f"Tensor.concat(Vec[Tensor]({piece('i64(0)', 'size_a')}, "
    lhs += f"{piece('size_a', 'size_a + size_b')}), i64(0))"
    entry = {"name": "t", "lhs": lhs, "rhs": "x", "shapes": {"x": [["a", "b"], ["c"]]}}
    assert prove_typed(lhs, "x", entry["shapes"])[0] == "proved"
    (w,) = widen(entry)
    assert w["shapes"]["x"] == [["a", "b", "d"], ["c"]] and w["name"] == "t-mid"
    assert prove_typed(w["lhs"], w["rhs"], w["shapes"])[0] == "refuted"


def test_rules_that_cannot_fire_are_left_out():
    from eqsat.rules import schedule
    from eqsat.rules.base import PyRule, Rule

    every = schedule.select(("generated",))
    kept = schedule.relevant(every, {"matmul", "add", "sigmoid"})
    assert [r for r in every if isinstance(r, PyRule)] == [r for r in kept if isinstance(r, PyRule)]
    egg = [r for r in kept if isinstance(r, Rule)]
    assert 0 < len(egg) < sum(isinstance(r, Rule) for r in every)
    assert not [r for r in egg if "Tensor.conv(" in r.source[0]]  # no convolution to match
    # a rule over concat stays: a merge can make one
    assert [r for r in egg if "Tensor.concat(" in r.source[0]]


@pytest.mark.slow  # 45 s: every generated rule, unfiltered, on NAS-RNN
def test_rules_that_cannot_fire_are_left_out_and_nothing_changes(monkeypatch):
    import eqsat
    from eqsat.examples import build_example
    from eqsat.rules import schedule

    m = build_example("nasrnn", "small")
    filtered = eqsat.optimize(m, **GENERATED)
    monkeypatch.setattr(schedule, "relevant", lambda rules, present: rules)
    full = eqsat.optimize(m, **GENERATED)
    fired = lambda res: {k: n for k, n in res.egraph["saturation"]["matches"].items() if n}  # noqa: E731
    assert fired(filtered) == fired(full)
    assert filtered.egraph["rules"] < full.egraph["rules"]
    assert [n.op_type for n in filtered.model.graph.node] == [
        n.op_type for n in full.model.graph.node
    ]


def test_a_valid_convolutions_input_binds_its_atom_as_the_size_less_the_literals():
    shape = (("a",), ("b",), ("c", "2"), ("3",))
    env: dict[str, int] = {}
    assert lift._bind(shape, (2, 4, 5, 3), env) and env == {"a": 2, "b": 4, "c": 3}
    assert not lift._bind(shape, (2, 4, 2, 3), {})  # c would be 0: proved for sizes >= 1
    assert not lift._bind(shape, (2, 4, 5, 1), {})  # not the literal kernel size
    assert not lift._bind(shape, (2, 4, 5, 3), {"c": 4})  # c bound elsewhere to another size
    assert not lift._bind((("a", "b"),), (5,), {})  # two atoms: no one way to split 5
