"""TensorGraph → e-graph → extraction → TensorGraph: exact round trips without rules, a tiny
rewrite that extraction must take, the saturation limits, and the greedy DAG extractor alone."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest
from egglog import rewrite, ruleset
from hypothesis import HealthCheck, given, settings
from onnx import TensorProto, helper

from eqsat.egraph.encode import encode
from eqsat.egraph.ir import TensorGraph, TensorType
from eqsat.egraph.lang import SPECS, Tensor, canonical_attrs
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.egraph.passes import eliminate_dead_code, fold_constants
from eqsat.egraph.saturate import saturate
from eqsat.egraph.serialized import ENode, SerializedEGraph, parse_string
from eqsat.examples import build_example, example_names
from eqsat.extract.cost import Analytic
from eqsat.extract.decode import spell_attrs
from eqsat.extract.extraction import extract
from eqsat.extract.greedy import greedy_dag
from eqsat.extract.roofline import RooflineCostModel
from eqsat.verify.numeric import compare_models
from tests.helpers import init, model, vi
from tests.property.graphs import graphs

TORCH = sorted((Path(__file__).parents[2] / "data" / "torch").glob("*.onnx"))


def canonical_text(g: TensorGraph) -> str:
    """The text form with every value renamed by first appearance, except graph inputs and
    outputs; weights are named by content (equal literals are one e-class, so the decoded graph
    keeps one of a set of identical literal weights)."""
    fixed = set(g.inputs) | set(g.outputs)
    ids: dict[tuple, str] = {}

    def r(n: str) -> str:
        if not n or n in fixed:
            return n
        if n in g.weights:
            w = np.asarray(g.weights[n])
            key: tuple = ("w", w.dtype.name, w.shape, hashlib.sha1(w.tobytes()).hexdigest())
        else:
            key = ("v", n)
        return ids.setdefault(key, f"%{len(ids)}")

    lines = [f"input {i}: {g.types[i]}" for i in g.inputs]
    for n in g.nodes:
        m = dataclasses.replace(
            n,
            inputs=tuple(map(r, n.inputs)),
            outputs=tuple(map(r, n.outputs)),
            implicit=tuple(map(r, n.implicit)),
        )
        lines.append(f"{m} -> {', '.join(str(g.types[o]) for o in n.outputs if o)}")
    lines += sorted({f"weight {r(w)}: {g.types[w]}" for w in g.weights})
    lines.append(f"return {', '.join(f'{o}: {g.types[o]}' for o in g.outputs)}")
    return "\n".join(lines)


def roundtrip(g: TensorGraph, rulesets=(), **limits):
    sat = saturate(encode(g), rulesets, **limits)
    return sat, extract(sat)


def assert_same(g: TensorGraph, d: TensorGraph, numeric: bool = True) -> None:
    assert d.op_histogram() == g.op_histogram()
    assert canonical_text(d) == canonical_text(g)
    assert d.inputs == g.inputs and d.outputs == g.outputs
    if numeric:
        v = compare_models(export_onnx(g), export_onnx(d), rtol=0, atol=0, seeds=(0,))
        assert v.ok, v.reason


SOURCES = [pytest.param(lambda n=n: build_example(n, size="small"), id=n) for n in example_names()]
SOURCES += [pytest.param(lambda p=p: p, id=p.stem) for p in TORCH]


@pytest.mark.parametrize("source", SOURCES)
def test_roundtrip_without_rules_is_exact(source):
    g = fold_constants(import_onnx(source()))
    sat, ex = roundtrip(g)
    assert sat.stop_reason == "no-rules" and sat.iterations == 0
    assert ex.cost == len(g.nodes)  # AST size: every node once
    assert_same(g, ex.graph)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_roundtrip_random_graphs(m):
    g = eliminate_dead_code(import_onnx(m))
    d = roundtrip(g)[1].graph
    assert compare_models(export_onnx(g), export_onnx(d), rtol=0, atol=0, seeds=(0,)).ok
    # equal typed nodes are one e-class; a second graph output naming a merged value is an
    # Identity the decoder adds (decode.py's aliases), not a node of the computation
    computed = [n for n in d.nodes if n.op != "Identity" or n.inputs[0] in g.inputs]
    assert len(computed) <= len(g.nodes)
    if len(d.nodes) == len(g.nodes) and len(computed) == len(d.nodes):
        assert canonical_text(d) == canonical_text(g)


def test_attributes_are_canonical_and_respelled_only_where_they_mean_the_same():
    conv = SPECS["Conv"]
    x, w = TensorType("float32", (1, 4, 8, 8)), TensorType("float32", (6, 4, 3, 3))
    same = canonical_attrs(conv, {"auto_pad": "SAME_UPPER", "strides": (2, 2)}, [x, w])
    explicit = {"pads": (0, 0, 1, 1), "strides": (2, 2), "group": 1, "kernel_shape": (3, 3)}
    assert (
        same == canonical_attrs(conv, explicit, [x, w]) == (1, (2, 2), (0, 0, 1, 1), (1, 1), (3, 3))
    )
    symbolic = TensorType("float32", (1, 4, "h", "w"))  # SAME at stride 2: pads depend on h, w
    assert (
        canonical_attrs(conv, {"auto_pad": "SAME_UPPER", "strides": (2, 2)}, [symbolic, w]) is None
    )
    # Without a spelling only what differs from the attribute's absence is written.
    assert spell_attrs(conv, same, [x, w]) == (("pads", (0, 0, 1, 1)), ("strides", (2, 2)))
    softmax, hint = SPECS["Softmax"], (("axis", -1),)
    rank2, rank3 = TensorType("float32", (2, 3)), TensorType("float32", (2, 3, 4))
    assert canonical_attrs(softmax, dict(hint), [rank2]) == (1,)
    assert spell_attrs(softmax, (1,), [rank2], hint) == hint
    assert spell_attrs(softmax, (1,), [rank3], hint) == (("axis", 1),)  # -1 would mean 2 here
    assert canonical_attrs(SPECS["Concat"], {}, [rank2]) is None  # axis is required


def _hand_model():
    """Everything the examples lack: opaque If capturing an outer value, multi-output nodes
    (Split, 3-output LayerNormalization, MaxPool with indices), an omitted middle input,
    auto_pad over static and symbolic dims, negative axes, an unused input, graph outputs that
    are an input and a weight, attributes spelled with defaults and without."""
    rng = np.random.default_rng(0)

    def f(*s):
        return rng.standard_normal(s).astype(np.float32)

    branch = [
        helper.make_graph([helper.make_node(op, ["sig"], [f"{op}_o"])], op, [], [vi(f"{op}_o", s)])
        for op, s in (("Relu", [2, 4, 8, 8]), ("Neg", [2, 4, 8, 8]))
    ]
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w"], ["c1"], auto_pad="SAME_UPPER", strides=[2, 2]),
        n("Conv", ["xs", "w"], ["c2"], auto_pad="SAME_LOWER", group=1, dilations=[1, 1]),
        n("Split", ["c1", "split"], ["s0", "s1"], axis=1),
        n("LayerNormalization", ["s0", "lns", "lnb"], ["ln", "ln_mean", "ln_inv"], axis=-1),
        n("MaxPool", ["x"], ["mp", "mpi"], kernel_shape=[2, 2]),
        n("Sigmoid", ["x"], ["sig"]),
        n("If", ["cond"], ["ifo"], then_branch=branch[0], else_branch=branch[1]),
        n("Slice", ["x", "st", "en", "", "steps"], ["sl"]),
        n("Flatten", ["mp"], ["fl"], axis=-3),
        n("Gemm", ["fl", "gw"], ["gm"], transB=1, alpha=0.5),
        n("Softmax", ["gm"], ["sm"]),
        n("Relu", ["s1"], ["r1"]),
        n("Sqrt", ["r1"], ["r2"]),
        n("Transpose", ["r2"], ["tr"]),
        n("Concat", ["tr", "tr"], ["cc"], axis=-1),
    ]
    inputs = [vi("x", [2, 4, 8, 8]), vi("xs", ["n", 4, "h", "w"])]
    inputs += [vi("cond", [], TensorProto.BOOL), vi("unused", [3])]
    outs = ["ln_mean", "mp", "mpi", "ifo", "sl", "sm", "cc", "c2", "x", "gwo", "st"]
    weights = {"w": f(6, 4, 3, 3), "split": np.array([2, 4]), "lns": f(4), "lnb": f(4)}
    weights |= {"st": np.array([0, 1]), "en": np.array([2, 7]), "steps": np.array([1, 2])}
    weights |= {"gw": f(5, 196), "gwo": f(3)}
    elem = {"mpi": TensorProto.INT64, "st": TensorProto.INT64}
    return model(
        nodes,
        inputs,
        [vi(o, None, elem.get(o, TensorProto.FLOAT)) for o in outs],
        [init(k, v) for k, v in weights.items()],
    )


def test_roundtrip_generic_nodes_and_spellings():
    g = import_onnx(_hand_model())
    sat, ex = roundtrip(g)
    generic = {k.split("#")[0] for k in sat.encoding.generic}
    assert generic == {"Split", "LayerNormalization", "MaxPool", "If"}
    assert_same(g, ex.graph)
    for cost_model in (Analytic(), RooflineCostModel()):
        other = extract(sat, cost_model)
        assert other.cost > 0 and canonical_text(other.graph) == canonical_text(g)


def test_identical_typed_nodes_are_one_eclass():
    """Hash-consing merges equal typed nodes (common subexpressions); generic ones keep their
    identity."""
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["a"]), n("Relu", ["x"], ["b"]), n("Add", ["a", "b"], ["y"])]
    nodes += [n("Gelu", ["x"], ["c"]), n("Gelu", ["x"], ["d"]), n("Add", ["c", "d"], ["z"])]
    g = import_onnx(model(nodes, [vi("x", [4])], [vi("y", None), vi("z", None)], opset=20))
    d = roundtrip(g)[1].graph
    assert d.op_histogram() == {"Add": 2, "Gelu": 2, "Relu": 1}
    assert compare_models(export_onnx(g), export_onnx(d), rtol=0, atol=0).ok


def test_escaped_names_survive():
    name = 'in "q" \\ \x1b é 😀'
    nodes = [helper.make_node("Relu", [name], ["y"])]
    g = import_onnx(model(nodes, [vi(name, [3])], [vi("y", None)]))
    assert roundtrip(g)[1].graph.inputs == (name,)
    assert parse_string(r'"a\"b\\c\u{1b}\0\'\n"') == "a\"b\\c\x1b\0'\n"


def _relu_chain():
    n = helper.make_node
    nodes = [n("Relu", ["x"], ["r1"]), n("Relu", ["r1"], ["r2"]), n("Relu", ["r2"], ["y"])]
    nodes.append(n("Neg", ["r1"], ["z"]))
    return import_onnx(model(nodes, [vi("x", [2, 3])], [vi("y", None), vi("z", None)]))


def test_rewrite_relu_relu_extracts_the_smaller_graph():
    @ruleset
    def idempotent(x: Tensor):
        yield rewrite(Tensor.relu(Tensor.relu(x))).to(Tensor.relu(x))

    g = _relu_chain()
    sat, ex = roundtrip(g, [idempotent])
    assert sat.stop_reason == "saturated"
    assert sum(sat.matches.values()) >= 2
    assert all("Tensor.relu(Tensor.relu(" in k for k in sat.matches)
    assert ex.graph.op_histogram() == {"Neg": 1, "Relu": 1}
    assert ex.cost == 2
    assert compare_models(export_onnx(g), export_onnx(ex.graph), rtol=0, atol=0).ok


@pytest.mark.parametrize(
    "shapes, reassociated",
    [([[64, 2], [2, 64], [64, 2]], True), ([[2, 64], [64, 2], [2, 64]], False)],
)
def test_shape_dependent_costs_pick_the_cheaper_association(shapes, reassociated):
    """(a b) c = a (b c): the new e-class (b c) is typed by the op table, so a shape-aware model
    sees which association costs 16x fewer FLOPs (node counts tie)."""

    @ruleset
    def assoc(a: Tensor, b: Tensor, c: Tensor):
        yield rewrite(Tensor.matmul(Tensor.matmul(a, b), c)).to(
            Tensor.matmul(a, Tensor.matmul(b, c))
        )

    n = helper.make_node
    nodes = [n("MatMul", ["a", "b"], ["ab"]), n("MatMul", ["ab", "c"], ["y"])]
    inputs = [vi(k, s) for k, s in zip("abc", shapes, strict=True)]
    g = import_onnx(model(nodes, inputs, [vi("y", None)]))
    sat = saturate(encode(g), [assoc])
    for cost_model in (Analytic(), RooflineCostModel()):
        d = extract(sat, cost_model).graph
        first = ("b", "c") if reassociated else ("a", "b")
        assert [nd.inputs[0] for nd in d.nodes] == [first[0], "a" if reassociated else "ab"]
        assert d.nodes[0].inputs == first and d.types["y"] == g.types["y"]
        assert compare_models(export_onnx(g), export_onnx(d)).ok


def test_two_outputs_in_one_eclass_get_an_identity():
    @ruleset
    def idempotent(x: Tensor):
        yield rewrite(Tensor.relu(Tensor.relu(x))).to(Tensor.relu(x))

    n = helper.make_node
    nodes = [n("Relu", ["x"], ["r"]), n("Relu", ["r"], ["y"])]
    g = import_onnx(model(nodes, [vi("x", [3])], [vi("y", None), vi("r", None)]))
    d = roundtrip(g, [idempotent])[1].graph
    assert d.op_histogram() == {"Identity": 1, "Relu": 1} and d.outputs == ("y", "r")
    assert compare_models(export_onnx(g), export_onnx(d), rtol=0, atol=0).ok


def test_limits_stop_a_growing_ruleset_and_extraction_still_finds_the_original():
    @ruleset
    def grow(x: Tensor):  # relu(x) = relu(identity(x)): one more e-node per iteration
        yield rewrite(Tensor.relu(x)).to(Tensor.relu(Tensor.identity(x)))

    g = _relu_chain()
    sat, ex = roundtrip(g, [grow], iter_limit=3)
    assert sat.stop_reason == "iter-limit" and sat.iterations == 3
    assert sat.sizes == sorted(sat.sizes) and sat.sizes[-1] > sat.sizes[0]
    assert_same(g, ex.graph, numeric=False)
    sat, _ = roundtrip(g, [grow], iter_limit=50, node_limit=sat.sizes[1])
    assert sat.stop_reason == "node-limit" and sat.iterations == 2


def test_the_time_limit_is_read_from_the_injected_clock():
    @ruleset
    def grow(x: Tensor):
        yield rewrite(Tensor.relu(x)).to(Tensor.relu(Tensor.identity(x)))

    ticks = iter(range(1000))  # a clock that advances one second each time it is read
    sat = saturate(encode(_relu_chain()), [grow], time_limit=2.5, clock=lambda: next(ticks))
    # read at the start, then after each iteration: 1, 2, 3 > 2.5 seconds
    assert sat.stop_reason == "time-limit" and sat.iterations == 3
    assert sat.time == 4  # and once more for the statistics


def _serialized(classes: dict[str, list[tuple[str, tuple[str, ...]]]]) -> SerializedEGraph:
    """A hand-made e-graph: class -> [(op, child classes)]. Node ids are "<class><i>"; a child
    reference names the child class's first node, as egglog's serialization does."""
    nodes = {
        f"{c}{i}": ENode(op, tuple(f"{k}0" for k in kids), c)
        for c, ns in classes.items()
        for i, (op, kids) in enumerate(ns)
    }
    by_class = {c: [f"{c}{i}" for i in range(len(ns))] for c, ns in classes.items()}
    return SerializedEGraph(nodes, by_class, {})


def test_greedy_dag_counts_shared_subterms_once_and_avoids_cycles():
    # R = g(X, Y) with X = h(S), Y = k(S), S costs 10 (DAG 13, tree 23) or R = m(Z), Z = 12.5 (13.5)
    eg = _serialized(
        {
            "R": [("g", ("X", "Y")), ("m", ("Z",))],
            "X": [("h", ("S",))],
            "Y": [("k", ("S",))],
            "S": [("s", ())],
            "Z": [("z", ())],
        }
    )
    costs = {"S0": 10.0, "Z0": 12.5}  # node ids: class + index
    got = greedy_dag(eg, ["R"], lambda nid: costs.get(nid, 1.0))
    assert eg.nodes[got.choice["R"]].op == "g" and got.cost == 13.0
    assert got.order.index("S") < got.order.index("X") < got.order.index("R")
    # A = f(B); B = g(A) or b (a leaf): the cycle is never chosen.
    eg = _serialized({"A": [("f", ("B",))], "B": [("gB", ("A",)), ("b", ())]})
    got = greedy_dag(eg, ["A"], lambda nid: 1.0)
    assert eg.nodes[got.choice["B"]].op == "b" and got.cost == 2.0
