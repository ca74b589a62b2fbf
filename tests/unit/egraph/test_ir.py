"""TensorGraph: check(), the text form, toposort and interpret()."""

import numpy as np
import pytest

from eqsat.egraph.interpret import interpret
from eqsat.egraph.ir import GraphError, Node, TensorGraph, TensorType, make_attrs, toposort

T = TensorType("float32", (2, 3))


def _graph(nodes, outputs=("y",)):
    types = {"x": T, "a": T, "y": T, "w": T}
    return TensorGraph(("x",), outputs, tuple(nodes), types, {"w": np.ones((2, 3), np.float32)})


def test_check_accepts_valid_graph_and_interprets():
    g = _graph([Node("Add", ("x", "w"), ("a",)), Node("Relu", ("a",), ("y",))])
    g.check()
    x = np.array([[-2, 0, 1], [3, -4, 5]], np.float32)
    (y,) = interpret(g, {"x": x}).values()
    np.testing.assert_array_equal(y, np.maximum(x + 1, 0))


def test_check_rejects_use_before_definition_naming_the_node():
    g = _graph([Node("Relu", ("a",), ("y",), name="late"), Node("Add", ("x", "w"), ("a",))])
    with pytest.raises(GraphError, match="late.*reads 'a' before"):
        g.check()


def test_check_rejects_redefinition_and_undefined_output():
    with pytest.raises(GraphError, match="redefines"):
        _graph([Node("Relu", ("x",), ("y",)), Node("Relu", ("x",), ("y",))]).check()
    with pytest.raises(GraphError, match="never defined"):
        _graph([Node("Relu", ("x",), ("a",))]).check()


def test_check_rejects_mistyped_weight():
    g = _graph([Node("Add", ("x", "w"), ("y",))])
    g = g.replace(weights={"w": np.ones((3, 2), np.float32)})
    with pytest.raises(GraphError, match="weight 'w'"):
        g.check()


def test_text_form_is_stable_and_readable():
    n = Node("Transpose", ("x",), ("y",), make_attrs({"perm": (1, 0)}))
    g = TensorGraph(("x",), ("y",), (n,), {"x": T, "y": TensorType("float32", (3, 2))})
    text = g.to_text()
    assert text == g.to_text()
    assert "y = Transpose[perm=(1, 0)](x)  -> y: float32[3, 2]" in text
    assert "input  x: float32[2, 3]" in text


def test_toposort_orders_stably_and_detects_cycles():
    a = Node("Relu", ("x",), ("a",))
    b = Node("Relu", ("a",), ("b",))
    c = Node("Relu", ("x",), ("c",))
    assert toposort([b, c, a], ["x"]) == [c, a, b]
    loop1 = Node("Relu", ("q",), ("p",), name="n1")
    loop2 = Node("Relu", ("p",), ("q",), name="n2")
    with pytest.raises(GraphError, match="cycle"):
        toposort([loop1, loop2], ["x"])
    with pytest.raises(GraphError, match="reads 'nope'"):
        toposort([Node("Relu", ("nope",), ("z",))], ["x"])
