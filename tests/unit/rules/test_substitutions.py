"""TASO's and Tensat's substitutions against eqsat's rules: one representative of each class of
docs/rules.md's coverage table, written as in Tensat's rule files, translated to one ONNX model
computing both sides (scripts/tensat_coverage.py), and saturated as ``optimize`` saturates.

For a covered class the test checks three things: onnxruntime computes the same two sides (the
translation keeps the rule true), saturation with the families the table names puts them in one
e-class, and without the rules the table names it does not (so those rules are what covers it).
For a class the table lists as not covered, it checks that the two sides stay apart, so a rule
that closes the gap fails this test until the table says so.

The files themselves are Tensat's, not in this repository: the per-rule counts come from running
the script on them (docs/rules.md says how). Each case saturates a model of a few ops twice, 0.3-2
s; the default run keeps one case of each kind of rule (an egglog algebra rule, a Python-driven
linear rule, a merge with a layout rule, a literal kernel, a gap); the rest are slow.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _script():
    name = "tensat_coverage"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


tc = _script()
DEFAULT = ("cleanup", "algebra", "fold", "merge", "layout")
LINEAR = (*DEFAULT, "linear")
slow = pytest.mark.slow

# (class, a rule of Tensat's files, families, the rules that cover it)
COVERED = [
    # kept in the default run: an egglog algebra rule, a Python-driven linear rule, a literal
    (
        "ew",
        "ewadd(input_3,ewadd(input_1,input_2))==ewadd(input_2,ewadd(input_1,input_3))",
        DEFAULT,
        ("add-associative", "add-commutative"),
    ),
    (
        "conv-linear",
        "conv2d(1,1,0,0,ewadd(input_7,input_8),input_10)=="
        "ewadd(conv2d(1,1,0,0,input_7,input_10),conv2d(1,1,0,0,input_8,input_10))",
        LINEAR,
        ("conv-add-shared-weight",),
    ),
    (
        "cpool",
        "poolavg(3,3,1,1,0,input_7)==conv2d(1,1,0,0,input_7,Cpool(3,3))",
        LINEAR,
        ("avgpool-as-conv",),
    ),
    # slow: the other classes
    pytest.param(
        "concat-matmul",
        "ewadd(matmul(input_1,input_4),matmul(input_2,input_5))=="
        "matmul(concat(1,input_1,input_2),concat(0,input_4,input_5))",
        DEFAULT,
        ("merge-matmul-add",),
        marks=slow,
    ),
    pytest.param(
        "concat-conv",
        "smul(concat(1,input_7,conv2d(1,1,0,0,input_7,input_10)),input_20)=="
        "concat(1,smul(input_7,input_20),conv2d(1,1,0,0,smul(input_7,input_20),input_10))",
        LINEAR,
        ("scalar-mul-through-linear",),
        marks=slow,
    ),
    pytest.param(
        "concat-ew",
        "concat(0,smul(input_7,input_20),smul(input_8,input_20))=="
        "smul(concat(0,input_7,input_8),input_20)",
        LINEAR,
        ("scalar-mul-through-linear",),
        marks=slow,
    ),
    pytest.param(
        "transpose",
        "transpose(ewmul(input_1,smul(input_1,input_20)))=="
        "ewmul(transpose(input_1),smul(transpose(input_1),input_20))",
        LINEAR,
        ("scalar-mul-through-linear",),
        marks=slow,
    ),
    pytest.param(
        "pool",
        "concat(0,poolmax(3,3,1,1,0,input_7),poolmax(3,3,1,1,0,input_8))=="
        "poolmax(3,3,1,1,0,concat(0,input_7,input_8))",
        LINEAR,
        ("pool-concat-distribute",),
        marks=slow,
    ),
    pytest.param(
        "imatmul",
        "ewadd(input_1,matmul(input_1,input_4))==matmul(input_1,ewadd(input_4,Imatmul))",
        LINEAR,
        ("matmul-residual-identity",),
        marks=slow,
    ),
    pytest.param(
        "conv-compose",
        "conv2d(1,1,0,0,ewmul(input_12,ewmul(input_10,input_11)),ewmul(input_12,ewmul(input_10,input_11)))=="
        "conv2d(1,1,0,0,ewmul(input_11,ewmul(input_10,input_12)),ewmul(input_11,ewmul(input_10,input_12)))",
        DEFAULT,
        ("mul-associative", "mul-commutative"),
        marks=slow,
    ),
    pytest.param(
        "ew",
        "ewmul(input_3,ewadd(input_1,input_2))==ewadd(ewmul(input_2,input_3),ewmul(input_1,input_3))",
        DEFAULT,
        ("mul-add-factor",),
        marks=slow,
    ),
    pytest.param(
        "smul",
        "smul(ewmul(input_3,ewmul(input_1,input_2)),input_20)=="
        "ewmul(input_1,ewmul(input_2,smul(input_3,input_20)))",
        DEFAULT,
        ("mul-associative",),
        marks=slow,
    ),
    pytest.param(
        "matmul",
        "matmul(matmul(input_1,input_4),matmul(input_5,input_6))=="
        "matmul(matmul(input_1,matmul(input_4,input_5)),input_6)",
        LINEAR,
        ("matmul-associative-2d",),
        marks=slow,
    ),
    pytest.param(
        "matmul",
        "ewadd(matmul(input_1,input_4),matmul(input_1,input_5))=="
        "matmul(input_1,ewadd(input_4,input_5))",
        LINEAR,
        ("matmul-add-shared-lhs",),
        marks=slow,
    ),
    pytest.param(
        "matmul",
        "smul(matmul(matmul(input_1,input_4),input_5),input_20)=="
        "matmul(smul(input_1,input_20),matmul(input_4,input_5))",
        LINEAR,
        ("scalar-mul-through-linear",),
        marks=slow,
    ),
    pytest.param(
        "conv-linear",
        "conv2d(1,1,0,0,input_7,ewadd(input_16,input_17))=="
        "ewadd(conv2d(1,1,0,0,input_7,input_16),conv2d(1,1,0,0,input_7,input_17))",
        LINEAR,
        ("conv-add-shared-input",),
        marks=slow,
    ),
    pytest.param(
        "enlarge",
        "conv2d(1,1,0,0,input_7,input_16)==conv2d(1,1,0,0,input_7,enlarge(3,3,input_16))",
        LINEAR,
        ("conv-enlarge-kernel",),
        marks=slow,
    ),
    pytest.param(
        "iconv",
        "conv2d(1,1,0,2,conv2d(1,1,0,0,input_7,input_13),Iconv(3,3))=="
        "conv2d(1,1,0,2,input_7,input_13)",
        LINEAR,
        ("conv-identity-elim",),
        marks=slow,
    ),
    pytest.param(
        "iconv",
        "relu(ewadd(input_7,conv2d(1,1,0,0,input_7,input_10)))=="
        "conv2d(1,1,0,2,input_7,ewadd(input_10,Iconv(3,3)))",
        LINEAR,
        ("conv-residual-identity",),
        marks=slow,
    ),
    pytest.param(
        "pool",
        "poolavg(3,3,1,1,0,ewadd(input_7,input_8))=="
        "ewadd(poolavg(3,3,1,1,0,input_7),poolavg(3,3,1,1,0,input_8))",
        LINEAR,
        ("avgpool-as-conv", "conv-add-shared-weight"),
        marks=slow,
    ),
]
# a fused activation is a Relu after the Conv in ONNX: both sides are one graph, no rule needed
BY_CONSTRUCTION = ["relu(conv2d(1,1,0,0,input_7,input_10))==conv2d(1,1,0,2,input_7,input_10)"]
# (class, a rule no family proves, the families tried): the gaps docs/rules.md explains
GAPS = [
    (
        "imatmul",
        "ewadd(input_7,ewmul(input_7,input_8))==ewmul(input_7,ewadd(input_8,Iewmul))",
        LINEAR,
    ),
]


def _rule(text: str):
    """A rule, or a multi-pattern rule: two rules back to back."""
    pairs = tc.split_rules(text)
    return tuple(tc.parse(" & ".join(side)) for side in zip(*pairs, strict=True))


@pytest.mark.parametrize("cls, text, families, covering", COVERED)
def test_a_covered_substitution_is_proved_by_the_rules_the_table_names(
    cls, text, families, covering
):
    lhs, rhs = _rule(text)
    assert tc.classify(lhs, rhs) == cls
    assert tc.agree(tc.to_onnx(lhs, rhs)) and tc.agree(tc.to_onnx(lhs, rhs, True))
    assert tc.check(lhs, rhs, families)
    assert not tc.check(lhs, rhs, families, disabled=covering)


@pytest.mark.parametrize("text", BY_CONSTRUCTION)
def test_a_fused_activation_is_the_same_onnx_graph(text):
    lhs, rhs = _rule(text)
    assert tc.classify(lhs, rhs) == "conv-act"
    assert tc.proved_equal(tc.to_onnx(lhs, rhs), ())  # no rule: one e-class from the start


@pytest.mark.parametrize("cls, text, families", GAPS)
def test_a_gap_in_the_table_is_not_proved(cls, text, families):
    lhs, rhs = _rule(text)
    assert tc.classify(lhs, rhs) == cls
    assert tc.agree(tc.to_onnx(lhs, rhs))
    assert not tc.check(lhs, rhs, (*families, "merge-conv"))


def test_a_multi_pattern_merge_is_made_from_its_left_side():
    """Tensat's multi-pattern rules (class split) run one way: from two ops of one input to one
    op of the concatenated weights, split. With both sides in one graph the merge would take the
    right side's merged matmul as a third member (one pass merges a group once), so this checks
    the direction Tensat applies: from the left side alone, each output's e-class gets a slice of
    one matmul by a concatenation."""
    lhs, rhs = _rule(
        "matmul(0,input_1,input_4)==split_0(split(1,matmul(0,input_1,concat(1,2,input_4,input_5))))"
        "matmul(0,input_1,input_5)==split_1(split(1,matmul(0,input_1,concat(1,2,input_4,input_5))))"
    )
    assert tc.classify(lhs, rhs) == "split"
    assert tc.agree(tc.to_onnx(lhs, rhs))
    m = tc.to_onnx(lhs, lhs)  # the left side only
    enc, eg = tc.saturated(m, DEFAULT)

    def ops_in(c):
        return {eg.nodes[n].op.removeprefix("Tensor."): n for n in eg.classes[c]}

    for out in ("lhs0", "lhs1"):
        piece = ops_in(eg.lets[enc.lets[out]]).get("slice")
        assert piece is not None
        mm = ops_in(eg.child_classes(piece)[0]).get("matmul")
        assert mm is not None and "concat" in ops_in(eg.child_classes(mm)[1])
    enc, eg = tc.saturated(m, DEFAULT, disabled=("merge-matmul-shared-lhs",))
    assert "slice" not in ops_in(eg.lets[enc.lets["lhs0"]])


def test_both_spellings_of_tensat_rules_parse_alike():
    """TASO's ``op(a,b)==..`` back to back, and Tensat's s-expressions one a line."""
    taso = tc.split_rules(
        "matmul(matmul(input_1,input_4),input_5)==matmul(input_1,matmul(input_4,input_5))"
        "concat(1,input_1,input_2)==concat(1,input_1,input_2)"
    )
    tensat = tc.split_rules(
        "(matmul 0 (matmul 0 ?input_1 ?input_4) ?input_5)=>"
        "(matmul 0 ?input_1 (matmul 0 ?input_4 ?input_5))\n"
        "(concat 1 2 ?input_1 ?input_2)=>(concat 1 2 ?input_1 ?input_2)\n"
    )
    assert len(taso) == len(tensat) == 2
    for (a, b), (c, d) in zip(taso, tensat, strict=True):
        assert tc.parse(a) == tc.parse(c) and tc.parse(b) == tc.parse(d)


def test_a_side_that_does_not_type_check_is_refused():
    lhs, rhs = _rule("matmul(input_4,input_1)==matmul(input_4,input_1)")  # [4,4] x [2,4]
    with pytest.raises(ValueError, match="matmul of"):
        tc.to_onnx(lhs, rhs)
