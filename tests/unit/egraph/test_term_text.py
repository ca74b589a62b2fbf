"""The parser of printed terms (eqsat.egraph.term_text): every rule side parses, the fold
computes what Python's eval computed, and anything that is not a printed term is refused."""

import ast
import json
from pathlib import Path

import pytest

import eqsat
from eqsat.egraph.term_text import ADD, Term, Var, calls, evaluate, parse, walk

RULES_FILE = Path(eqsat.__file__).parent / "rules" / "generated" / "rules.json"


def test_a_printed_term_becomes_a_tree():
    t = parse("Tensor.matmul(x, Tensor.transpose(y, Vec[i64](i64(1), i64(-2))))")
    perm = Term("Vec[i64]", (Term("i64", (1,)), Term("i64", (-2,))))
    assert t == Term("Tensor.matmul", (Var("x"), Term("Tensor.transpose", (Var("y"), perm))))
    assert t.ctor == "matmul" and perm.ctor is None
    assert [c.ctor for c in calls(t)] == ["matmul", "transpose"]
    assert parse('Tensor.scalar(f64(1.0), String("float32"))').args == (
        Term("f64", (1.0,)),
        Term("String", ("float32",)),
    )
    assert parse("Vec[i64](size_a + size_b)").args == (Term(ADD, (Var("size_a"), Var("size_b"))),)


@pytest.mark.parametrize(
    "text",
    [
        "__import__('os').system('true')",
        "Tensor.add(x, y).foo",
        "x.y(z)",
        "Tensor.add(x, y=z)",
        "Tensor.add(*xs)",
        "Vec[i64][0]",
        "lambda: 0",
        "x - y",
        "i64(True)",
        "Tensor.add(x,",
    ],
)
def test_anything_else_is_a_one_line_value_error(text):
    with pytest.raises(ValueError, match="not a printed term") as e:
        parse(text)
    assert "\n" not in str(e.value)


class _Record:
    """A namespace whose constructors record their calls, in order."""

    def __init__(self):
        self.log = []

    def __getattr__(self, name):
        return lambda *args: self.log.append((name, args)) or (name, args)


def test_the_fold_resolves_heads_as_python_does_and_calls_in_pythons_order():
    text = "Tensor.add(Tensor.relu(x), Tensor.concat(Vec[Tensor](x, y), i64(size_a + 1)))"
    results = []
    for run in (lambda ns: evaluate(parse(text), ns), lambda ns: eval(text, ns)):  # noqa: S307
        rec = _Record()
        ns = {"Tensor": rec, "Vec": {rec: lambda *xs: xs}, "i64": int, "x": 1, "y": 2, "size_a": 3}
        results.append((run(ns), rec.log))
    assert results[0] == results[1]
    with pytest.raises(NameError, match="'z'"):
        evaluate(parse("Tensor.relu(z)"), {"Tensor": _Record()})


def test_every_rule_side_of_the_rules_file_parses_and_walks_like_ast():
    entries = json.loads(RULES_FILE.read_text())["rules"]
    assert entries
    for e in entries[:200]:
        for text in (e["lhs"], e["rhs"]):
            ours = [c.ctor for c in calls(parse(text))]
            theirs = [
                n.func.attr
                for n in ast.walk(ast.parse(text, mode="eval"))
                if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            ]
            assert ours == theirs
            assert sum(isinstance(n, Var) for n in walk(parse(text))) >= 1
