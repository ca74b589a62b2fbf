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


# Tensat's hand rules (src/rewrites.rs: TASO's axioms), each instantiated with TASO's shapes;
# the three not proved two-sided: no rule (geometry), or a merge made one way (ONE_SIDED)
AXIOMS = [
    (
        "ewadd-is-associative",
        "ewadd(input_1,ewadd(input_2,input_3))==ewadd(ewadd(input_1,input_2),input_3)",
    ),
    ("ewadd-is-commutative", "ewadd(input_1,input_2)==ewadd(input_2,input_1)"),
    (
        "ewmul-is-associative",
        "ewmul(input_1,ewmul(input_2,input_3))==ewmul(ewmul(input_1,input_2),input_3)",
    ),
    ("ewmul-is-commutative", "ewmul(input_1,input_2)==ewmul(input_2,input_1)"),
    (
        "distributivity-0",
        "ewmul(ewadd(input_1,input_2),input_3)==ewadd(ewmul(input_1,input_3),ewmul(input_2,input_3))",
    ),
    (
        "smul-is-associative",
        "smul(smul(input_1,input_20),input_20)==smul(input_1,smul(input_20,input_20))",
    ),
    (
        "distributivity-1",
        "smul(ewadd(input_1,input_2),input_20)==ewadd(smul(input_1,input_20),smul(input_2,input_20))",
    ),
    (
        "operator-commutativity-0",
        "smul(ewmul(input_1,input_2),input_20)==ewmul(input_1,smul(input_2,input_20))",
    ),
    ("transpose-is-its-own-inverse", "transpose(transpose(input_1))==input_1"),
    (
        "operator-commutativity-1",
        "transpose(ewadd(input_1,input_2))==ewadd(transpose(input_1),transpose(input_2))",
    ),
    (
        "operator-commutativity-2",
        "transpose(ewmul(input_1,input_2))==ewmul(transpose(input_1),transpose(input_2))",
    ),
    (
        "operator-commutativity-3",
        "smul(transpose(input_1),input_20)==transpose(smul(input_1,input_20))",
    ),
    (
        "matmul-is-associative",
        "matmul(input_1,matmul(input_4,input_5))==matmul(matmul(input_1,input_4),input_5)",
    ),
    (
        "matmul-is-linear-0",
        "smul(matmul(input_1,input_4),input_20)==matmul(input_1,smul(input_4,input_20))",
    ),
    (
        "matmul-is-linear-1",
        "matmul(input_1,ewadd(input_4,input_5))==ewadd(matmul(input_1,input_4),matmul(input_1,input_5))",
    ),
    (
        "matmul-and-transpose",
        "transpose(matmul(input_1,input_4))==matmul(transpose(input_4),transpose(input_1))",
    ),
    (
        "conv-is-bilinear-0",
        "conv2d(1,1,0,0,smul(input_7,input_20),input_10)==conv2d(1,1,0,0,input_7,smul(input_10,input_20))",
    ),
    (
        "conv-is-bilinear-1",
        "smul(conv2d(1,1,0,0,input_7,input_10),input_20)==conv2d(1,1,0,0,smul(input_7,input_20),input_10)",
    ),
    (
        "conv-is-bilinear-2",
        "conv2d(1,1,0,0,input_7,ewadd(input_10,input_11))==ewadd(conv2d(1,1,0,0,input_7,input_10),conv2d(1,1,0,0,input_7,input_11))",
    ),
    (
        "conv-is-bilinear-3",
        "conv2d(1,1,0,0,ewadd(input_7,input_8),input_10)==ewadd(conv2d(1,1,0,0,input_7,input_10),conv2d(1,1,0,0,input_8,input_10))",
    ),
    (
        "enlarge-convolution-kernel",
        "conv2d(1,1,0,0,input_7,input_13)==conv2d(1,1,0,0,input_7,enlarge(3,3,input_13))",
    ),
    (
        "operator-commutativity-4",
        "conv2d(1,1,0,2,input_7,input_10)==relu(conv2d(1,1,0,0,input_7,input_10))",
    ),
    ("conv-with-2-applies-relu", "relu(transpose(input_1))==transpose(relu(input_1))"),
    (
        "pooling-by-conv.-with-Cpool",
        "poolavg(3,3,1,1,0,input_7)==conv2d(1,1,0,0,input_7,Cpool(3,3))",
    ),
    ("identity-kernel", "conv2d(1,1,0,0,input_7,Iconv(3,3))==input_7"),
    ("identity-matrix", "matmul(input_1,Imatmul)==input_1"),
    ("ewmul-identity", "ewmul(input_7,Iewmul)==input_7"),
    ("split-definition-0", "split_0(split(1,concat(1,input_1,input_2)))==input_1"),
    ("split-definition-1", "split_1(split(0,concat(0,input_4,input_1)))==input_1"),
    (
        "geometry-of-concatenation",
        "concat(0,concat(1,input_1,input_2),concat(1,input_3,input_1))==concat(1,concat(0,input_1,input_3),concat(0,input_2,input_1))",
    ),
    (
        "operator-commutativity-5",
        "concat(0,smul(input_1,input_20),smul(input_2,input_20))==smul(concat(0,input_1,input_2),input_20)",
    ),
    (
        "operator-commutativity-6",
        "concat(0,ewadd(input_1,input_2),ewadd(input_3,input_1))==ewadd(concat(0,input_1,input_3),concat(0,input_2,input_1))",
    ),
    (
        "operator-commutativity-7",
        "concat(0,ewmul(input_1,input_2),ewmul(input_3,input_1))==ewmul(concat(0,input_1,input_3),concat(0,input_2,input_1))",
    ),
    (
        "operator-commutativity-8",
        "concat(1,relu(input_1),relu(input_2))==relu(concat(1,input_1,input_2))",
    ),
    (
        "concatenation-and-transpose",
        "concat(1,transpose(input_4),transpose(input_5))==transpose(concat(0,input_4,input_5))",
    ),
    (
        "concatenation-and-matrix-mul.-0",
        "concat(1,matmul(input_1,input_4),matmul(input_1,input_5))==matmul(input_1,concat(1,input_4,input_5))",
    ),
    (
        "concatenation-and-matrix-mul.-1",
        "matmul(concat(1,input_1,input_2),concat(0,input_4,input_5))==ewadd(matmul(input_1,input_4),matmul(input_2,input_5))",
    ),
    (
        "concatenation-and-conv.-0",
        "concat(0,conv2d(1,1,0,0,input_7,input_10),conv2d(1,1,0,0,input_8,input_10))==conv2d(1,1,0,0,concat(0,input_7,input_8),input_10)",
    ),
    (
        "concatenation-and-conv.-1",
        "concat(1,conv2d(1,1,0,0,input_7,input_10),conv2d(1,1,0,0,input_7,input_11))==conv2d(1,1,0,0,input_7,concat(0,input_10,input_11))",
    ),
    (
        "concatenation-and-conv.-2",
        "conv2d(1,1,0,0,concat(1,input_7,input_8),concat(1,input_10,input_11))==ewadd(conv2d(1,1,0,0,input_7,input_10),conv2d(1,1,0,0,input_8,input_11))",
    ),
    (
        "concatenation-and-pooling-0",
        "concat(1,poolavg(3,3,1,1,0,input_7),poolavg(3,3,1,1,0,input_8))==poolavg(3,3,1,1,0,concat(1,input_7,input_8))",
    ),
    (
        "concatenation-and-pooling-1",
        "concat(0,poolmax(3,3,1,1,0,input_7),poolmax(3,3,1,1,0,input_8))==poolmax(3,3,1,1,0,concat(0,input_7,input_8))",
    ),
    (
        "concatenation-and-pooling-2",
        "concat(1,poolmax(3,3,1,1,0,input_7),poolmax(3,3,1,1,0,input_8))==poolmax(3,3,1,1,0,concat(1,input_7,input_8))",
    ),
]
AXIOMS_NOT_TWO_SIDED = {
    "geometry-of-concatenation",
    "concatenation-and-matrix-mul.-0",
    "concatenation-and-conv.-1",
}


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


# (class, rule, families, the rule that makes it, the path from the left side's e-class to the
# right side's shape: (op, which operand to follow)..)
ONE_SIDED = [
    (
        "split",
        "matmul(0,input_1,input_4)==split_0(split(1,matmul(0,input_1,concat(1,2,input_4,input_5))))"
        "matmul(0,input_1,input_5)==split_1(split(1,matmul(0,input_1,concat(1,2,input_4,input_5))))",
        DEFAULT,
        "merge-matmul-shared-lhs",
        (("slice", 0), ("matmul", 1), ("concat", None)),
    ),
    pytest.param(
        "concat-matmul",
        "concat(1,matmul(input_1,input_4),matmul(input_1,input_5))=="
        "matmul(input_1,concat(1,input_4,input_5))",
        DEFAULT,
        "merge-matmul-shared-lhs",
        (("matmul", 1), ("concat", None)),
        marks=slow,
    ),
    pytest.param(
        "concat-conv",
        "concat(1,conv2d(1,1,0,0,input_7,input_10),conv2d(1,1,0,0,input_7,input_11))=="
        "conv2d(1,1,0,0,input_7,concat(0,input_10,input_11))",
        (*DEFAULT, "merge-conv"),
        "merge-conv-shared-input",
        (("conv", 1), ("concat", None)),
        marks=slow,
    ),
]


def _reaches(eg, c: str, path) -> bool:
    """Whether e-class ``c`` holds an e-node of the first op of ``path`` whose operand (the
    step's index) reaches the rest."""
    if not path:
        return True
    (op, child), rest = path[0], path[1:]
    for n in eg.classes[c]:
        if eg.nodes[n].op == f"Tensor.{op}":
            if child is None or _reaches(eg, eg.child_classes(n)[child], rest):
                return True
    return False


@pytest.mark.parametrize("cls, text, families, rule, path", ONE_SIDED)
def test_a_shared_operand_merge_is_made_from_its_left_side(cls, text, families, rule, path):
    """Tensat's shared-operand merges (and the multi-pattern rules, class split) run one way:
    from ops of one input to one op of the concatenated weights. With both sides in one graph
    the merge would take the right side's merged op as one more member (one pass merges a group
    once), so this checks the direction Tensat applies: from the left side alone, each output's
    e-class gets the right side's shape, and not without ``rule``."""
    lhs, rhs = _rule(text)
    assert tc.classify(lhs, rhs) == cls
    assert tc.agree(tc.to_onnx(lhs, rhs))
    m = tc.to_onnx(lhs, lhs)  # the left side only
    for disabled, want in (((), True), ((rule,), False)):
        enc, eg = tc.saturated(m, families, disabled)
        outs = [o for o, _ in tc.output_pairs(m)]
        assert all(_reaches(eg, eg.lets[enc.lets[o]], path) for o in outs) is want


@slow
@pytest.mark.parametrize("name, text", AXIOMS, ids=[a[0] for a in AXIOMS])
def test_tasos_axioms(name, text):
    """docs/rules.md's axioms table: each of Tensat's hand rules is proved two-sided with the
    default families, merge-conv and linear, but for the three it lists."""
    lhs, rhs = _rule(text)
    assert tc.agree(tc.to_onnx(lhs, rhs))
    assert tc.check(lhs, rhs, (*LINEAR, "merge-conv")) is (name not in AXIOMS_NOT_TWO_SIDED)


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
