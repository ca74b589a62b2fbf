"""The op coverage matrix: every op has every facet its stages need, derived lists come from the
op table, and a missing facet is reported by name."""

import json

import pytest

from eqsat.cli import main
from eqsat.egraph import shapes
from eqsat.egraph.lang import SPECS, Tensor
from eqsat.egraph.opdefs.base import Kind, OpDef, same
from eqsat.egraph.ops import OPS, elementwise_ctors
from eqsat.rules import algebra
from eqsat.verify import coverage, generic, z3_ops


@pytest.fixture
def fresh_matrix():
    coverage.matrix.cache_clear()
    yield
    coverage.matrix.cache_clear()


def test_no_gaps():
    assert coverage.gaps() == []


def test_every_op_has_a_kind_and_every_facet_column():
    rows = coverage.matrix()
    assert set(rows) == set(OPS)
    for name, row in rows.items():
        assert isinstance(OPS[name].kind, Kind)
        assert set(row) == set(coverage.FACETS)
        assert row["infer"] and row["run"] and row["cost"]


def test_a_rule_over_an_op_without_z3_semantics_is_a_gap(fresh_matrix, monkeypatch):
    monkeypatch.delitem(z3_ops.POINTWISE, "Relu")
    found = coverage.gaps(["Tensor.relu(x)"])
    assert "Relu: a rule uses Tensor.relu but it has no Z3 semantics" in found


def test_a_constructor_no_table_op_has_is_a_gap():
    assert coverage.gaps(["Tensor.frobnicate(x)"]) == [
        "a rule uses Tensor.frobnicate, which no op of the table has"
    ]


def test_a_typed_op_without_a_shape_rule_needs_a_reason(fresh_matrix, monkeypatch):
    monkeypatch.delitem(coverage.UNSHAPED, "gemm")
    assert "Gemm: Tensor.gemm has no egglog shape rule and no UNSHAPED reason" in coverage.gaps()


def test_an_unknown_category_fails_when_the_record_is_made():
    with pytest.raises(ValueError, match="unknown category"):
        OpDef("Frob", "magic", same, lambda args, attrs: args)


def test_derived_op_lists():
    unary = {d.ctor for d in OPS.values() if d.ctor and d.kind is Kind.ELEMENTWISE}
    unary &= {d.ctor for d in OPS.values() if d.inputs == (1, 1)}
    assert set(algebra.UNARY) == unary == set(elementwise_ctors(1))
    assert set(algebra.UNARY) == {
        "relu", "sigmoid", "tanh", "erf", "sqrt", "exp", "neg", "reciprocal"
    }  # fmt: skip
    assert set(shapes.BINARY) == {"add", "sub", "mul", "div", "pow"}
    assert set(shapes.UNARY) == set(algebra.UNARY) | {"identity"}
    assert set(generic.UNINTERPRETED) == {"sigmoid", "tanh", "erf", "exp", "sqrt"}
    assert set(generic.BINARY) == {"add", "sub", "mul", "div"}
    assert "Transpose" in z3_ops.STRUCTURAL and "MatMul" not in z3_ops.STRUCTURAL


def test_specs_are_derived_from_the_record_and_the_constructor():
    assert {s.ctor for s in SPECS.values()} == {d.ctor for d in OPS.values() if d.ctor}
    for s in SPECS.values():
        assert callable(getattr(Tensor, s.ctor))
        assert all(a.name in OPS[s.op].attrs for a in s.attrs)
    gemm = SPECS["Gemm"]
    assert gemm.inputs == "tto"
    assert [a.name for a in gemm.attrs] == ["alpha", "beta", "transA", "transB"]
    assert [a.kind for a in gemm.attrs] == ["float", "float", "int", "int"]
    assert SPECS["Concat"].inputs == "*" and SPECS["Slice"].inputs == "tttoo"
    assert SPECS["BatchNormalization"].fixed == {"training_mode": 0}
    assert SPECS["Conv"].window and not SPECS["Gemm"].window


def test_every_discovery_op_stands_for_a_typed_op():
    from eqsat.rules.discover import exprs

    for op in exprs.OPS:
        if op in exprs.SPLITS:
            continue
        name = exprs.as_op(op, (op,), {}, None)[0]
        assert name in SPECS, op


def test_shape_rule_coverage_is_read_off_the_rules():
    covered = shapes.shaped_ctors()
    assert {"relu", "matmul", "conv", "concat", "slice", "transpose"} <= covered
    assert not covered & set(coverage.UNSHAPED)


def test_cli_ops(capsys):
    assert main(["ops", "--gaps"]) == 0
    assert "no gaps" in capsys.readouterr().out
    assert main(["ops", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows["MatMul"]["egglog"] == "Tensor.matmul" and rows["MatMul"]["kind"] == "complex"


def test_discovery_typing_agrees_with_the_op_table():
    """Discovery types expressions by unification over symbolic dim sums (its own analysis, for
    the most general typing); at concrete sizes it must give the op table's output shape."""
    from eqsat.egraph.ir import TensorType
    from eqsat.egraph.opdefs.base import InferCtx
    from eqsat.rules.discover import exprs

    checked = 0
    for op in exprs.OPS:
        kids = [("x",)] if op in exprs.UNARY else [("x",), ("y",)]
        if op in exprs.RANK4_OPS:
            kids = [("X",)] if op in exprs.UNARY else [("X",), ("Y",)]
        e = (op, *kids)
        shapes_ = exprs.typing(e)
        if shapes_ is None:
            continue
        name, attrs, literals = exprs.as_op(op, e, shapes_)
        args = [exprs.evaluate(k, shapes_, mod=False) for k in kids]
        args += [exprs.evaluate(("c",), shapes_, mod=False)] if op == "smul" else []
        types = [TensorType("float64", a.shape) for a in args]
        types += [TensorType("int64", lit.shape) for lit in literals]
        consts = [None] * len(args) + list(literals)
        (out,) = OPS[name].infer(InferCtx(types, consts, attrs))[:1]
        assert out.shape == exprs.concrete(exprs.shape_of(e, shapes_)), op
        checked += 1
    assert checked == len(exprs.OPS)


def test_lowering_column_reads_the_compute_table():
    from eqsat.lower.compute import CLAIMED

    rows = coverage.matrix()
    assert rows["MatMul"]["lowering"] == "gemm" and rows["Conv"]["lowering"] == "conv"
    assert rows["Relu"]["lowering"] == "element-wise" and rows["Transpose"]["lowering"] == "view"
    assert rows["Softmax"]["lowering"] == "softmax" and rows["Shape"]["lowering"] == ""
    assert {op for op, r in rows.items() if r["lowering"]} == CLAIMED
    assert coverage.lowering_required() <= CLAIMED


def test_an_example_op_without_a_compute_definition_is_a_gap(fresh_matrix, monkeypatch):
    from eqsat.lower import compute

    assert "Relu" in coverage.example_ops()
    monkeypatch.delitem(compute.COMPUTE, "Relu")
    found = coverage.gaps([])
    assert "Relu: claimed by lowering but has no compute definition" in found
    assert "Relu: used by the example models but has no compute definition (lowering)" in found


def test_a_compute_definition_of_the_wrong_family_is_a_gap(monkeypatch):
    from eqsat.lower import compute

    monkeypatch.setitem(compute.COMPUTE, "Relu", compute.COMPUTE["Transpose"])
    assert coverage.lowering_gaps() == [
        "Relu: a view compute definition for an op of kind elementwise"
    ]
