"""The egglog shape analysis (eqsat/egraph/shapes.py): shapes derived from the leaves alone
agree with the importer's types, rewrites get shapes for the terms they create, and an unsound
rewrite is reported as a conflict while sound ones are not."""

import numpy as np
import pytest
from egglog import eq, rule, ruleset, union, var
from onnx import helper

from eqsat.egraph import shapes as S
from eqsat.egraph.encode import Encoding, encode
from eqsat.egraph.lang import Tensor
from eqsat.egraph.onnx_io import import_onnx
from eqsat.egraph.serialized import serialize
from eqsat.examples import build_example
from eqsat.rules import cleanup
from tests.helpers import init, model, vi


def _f32(*shape):
    return np.ones(shape, np.float32)


def _encode(m) -> Encoding:
    return encode(import_onnx(m))


def _seed_leaves(enc: Encoding) -> None:
    g = enc.graph
    leaves = [*g.inputs, *g.weights]
    enc.egraph.register(
        *[S.has_shape(S.let_ref(enc.lets[v]), S.dims(g.types[v].shape)) for v in leaves]
    )


def _assert_derived(enc: Encoding) -> None:
    """Every node output got exactly its imported type's shape from the rules."""
    g = enc.graph
    for n in g.nodes:
        for o in n.outputs:
            ref = S.let_ref(enc.lets[o])
            assert S.has_dims(enc.egraph, ref, g.types[o].shape), (n.op, o, g.types[o])


def _ref(enc: Encoding, value: str) -> Tensor:
    return S.let_ref(enc.lets[value])


def test_dims_of_a_shape():
    assert str(S.dims(("batch", 3))) == 'Vec[Dim](Dim.sym("batch"), Dim.int(3))'
    assert str(S.dims(())) == "Vec[Dim].empty()"


def test_shapes_derived_from_leaves_match_the_imported_types():
    nodes = [
        helper.make_node("Relu", ["x"], ["r"]),
        helper.make_node("Sigmoid", ["r"], ["s"]),
        helper.make_node("Add", ["s", "bias"], ["b"]),  # [batch, 4, 6] + [6]
        helper.make_node("Mul", ["b", "half"], ["h"]),  # 0-d scalar
        helper.make_node("Sub", ["h", "x"], ["d"]),  # equal shapes
        helper.make_node("Transpose", ["d"], ["t"], perm=[2, 0, 1]),  # [6, batch, 4]
        helper.make_node("Transpose", ["t"], ["t2"], perm=[1, 2, 0]),  # [batch, 4, 6]
        helper.make_node("MatMul", ["t2", "w"], ["m"]),  # [batch, 4, 6] x [6, 5]
        helper.make_node("Softmax", ["m"], ["sm"], axis=-1),
        helper.make_node("LayerNormalization", ["sm", "g", "beta"], ["ln"], axis=-1),
        helper.make_node("Reshape", ["ln", "shp"], ["rs"]),  # [0, 20]
        helper.make_node("Concat", ["p", "q"], ["c0"], axis=0),  # [2,3] ++ [4,3]
        helper.make_node("Concat", ["p", "q2", "p"], ["c1"], axis=1),  # [2,3] ++ [2,5] ++ [2,3]
        helper.make_node("MatMul", ["c1", "w2"], ["mm2"]),  # [2, 11] x [11, 7]
        # as wide as the N-ary merges make them: [2,3] x 8 and x 16 (sizes summed in turn)
        helper.make_node("Concat", ["p", "q", "p", "p", "q", "p", "p", "q"], ["c8"], axis=0),
        helper.make_node("Concat", ["p", "q2"] * 8, ["c16"], axis=1),
    ]
    inits = [
        init("bias", _f32(6)),
        init("half", np.float32(0.5)),
        init("w", _f32(6, 5)),
        init("g", _f32(5)),
        init("beta", _f32(5)),
        init("shp", np.array([0, 20], np.int64)),
        init("w2", _f32(11, 7)),
    ]
    ins = [vi("x", ["batch", 4, 6]), vi("p", [2, 3]), vi("q", [4, 3]), vi("q2", [2, 5])]
    outs = [vi(o, None) for o in ("rs", "c0", "mm2", "c8", "c16")]
    enc = _encode(model(nodes, ins, outs, inits))
    _seed_leaves(enc)
    enc.egraph.run(S.shape_rules().saturate())
    _assert_derived(enc)
    assert S.conflicts(enc.egraph) == []
    # seeding every value on top agrees with what the rules derived
    enc.egraph.register(*S.seed_shapes(enc))
    enc.egraph.run(S.shape_rules().saturate())
    S.check_shapes(enc.egraph)


def test_small_bert_shapes_all_derived_from_the_leaves():
    enc = _encode(build_example("bert", "small"))
    _seed_leaves(enc)
    enc.egraph.run(S.shape_rules().saturate())
    _assert_derived(enc)
    S.check_shapes(enc.egraph)


def _matmul_chain(x_shape, a_shape, b_shape) -> Encoding:
    nodes = [
        helper.make_node("MatMul", ["x", "a"], ["h"]),
        helper.make_node("MatMul", ["h", "b"], ["y"]),
    ]
    inits = [init("a", _f32(*a_shape)), init("b", _f32(*b_shape))]
    enc = _encode(model(nodes, [vi("x", x_shape)], [vi("y", None)], inits))
    assert len(S.seed_shapes(enc)) == 5
    enc.egraph.register(*S.seed_shapes(enc))
    return enc


def _rewrite(lhs, rhs):
    r = var("r", Tensor)
    return ruleset(rule(eq(r).to(lhs), name="test-rewrite").then(union(r).with_(rhs)))


X, A, B = var("x", Tensor), var("a", Tensor), var("b", Tensor)


@pytest.mark.parametrize("x_shape", [[2, 3], ["batch", 3], ["batch", 8, 3]])
def test_a_rewrite_creates_a_term_whose_shape_is_derived(x_shape):
    enc = _matmul_chain(x_shape, [3, 5], [5, 7])
    assoc = _rewrite(Tensor.matmul(Tensor.matmul(X, A), B), Tensor.matmul(X, Tensor.matmul(A, B)))
    enc.egraph.run((assoc + S.shape_rules()).saturate())
    ab = Tensor.matmul(_ref(enc, "a"), _ref(enc, "b"))
    assert S.has_dims(enc.egraph, ab, (3, 7))
    assert not S.has_dims(enc.egraph, ab, (3, 5))
    new = Tensor.matmul(_ref(enc, "x"), ab)
    assert S.has_dims(enc.egraph, new, (*x_shape[:-1], 7))
    S.check_shapes(enc.egraph)


def test_an_unsound_rewrite_to_an_ill_shaped_term_is_a_conflict():
    # matmul(a, b) -> matmul(b, a) on [2,3] x [3,4]: [3,4] x [2,3] does not fit
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    enc = _encode(model(nodes, [vi("a", [2, 3]), vi("b", [3, 4])], [vi("y", None)]))
    enc.egraph.register(*S.seed_shapes(enc))
    swap = _rewrite(Tensor.matmul(A, B), Tensor.matmul(B, A))
    enc.egraph.run((swap + S.shape_rules()).saturate())
    with pytest.raises(S.ShapeConflict, match="ill_shaped"):
        S.check_shapes(enc.egraph)


def test_an_unsound_rewrite_giving_two_shapes_is_a_conflict():
    # matmul(a, b) -> matmul(b, a) on [2,3] x [3,2]: [2,2] and [3,3] in one e-class
    nodes = [helper.make_node("MatMul", ["a", "b"], ["y"])]
    enc = _encode(model(nodes, [vi("a", [2, 3]), vi("b", [3, 2])], [vi("y", None)]))
    enc.egraph.register(*S.seed_shapes(enc))
    swap = _rewrite(Tensor.matmul(A, B), Tensor.matmul(B, A))
    enc.egraph.run((swap + S.shape_rules()).saturate())
    found = S.conflicts(enc.egraph)
    assert any(c.startswith("shape_conflict") for c in found), found
    with pytest.raises(S.ShapeConflict, match="shape_conflict"):
        S.check_shapes(enc.egraph)


def test_an_unsound_elementwise_rewrite_is_a_conflict():
    # add(x, y) -> add(x, w) where w does not broadcast against x
    nodes = [
        helper.make_node("Add", ["x", "y"], ["s"]),
        helper.make_node("Relu", ["w"], ["z"]),
    ]
    ins = [vi("x", [2, 3]), vi("y", [2, 3]), vi("w", [2, 4])]
    enc = _encode(model(nodes, ins, [vi("s", None), vi("z", None)]))
    enc.egraph.register(*S.seed_shapes(enc))
    bad = _rewrite(Tensor.add(X, Tensor.input("y")), Tensor.add(X, Tensor.input("w")))
    enc.egraph.run((bad + S.shape_rules()).saturate())
    with pytest.raises(S.ShapeConflict, match="ill_shaped"):
        S.check_shapes(enc.egraph)


def test_the_cleanup_rules_cause_no_conflict():
    nodes = [
        helper.make_node("Identity", ["x"], ["i"]),
        helper.make_node("Relu", ["i"], ["r1"]),
        helper.make_node("Relu", ["r1"], ["r2"]),
        helper.make_node("Neg", ["r2"], ["n1"]),
        helper.make_node("Neg", ["n1"], ["n2"]),
        helper.make_node("Transpose", ["n2"], ["t1"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["t1"], ["t2"], perm=[1, 0, 2]),
        helper.make_node("Transpose", ["t2"], ["t3"], perm=[2, 1, 0]),
        helper.make_node("Transpose", ["t3"], ["y"], perm=[2, 1, 0]),
    ]
    enc = _encode(model(nodes, [vi("x", ["batch", 3, 4])], [vi("y", None)]))
    enc.egraph.register(*S.seed_shapes(enc))
    rules = ruleset(*[r.egglog() for r in cleanup.rules()])
    report = enc.egraph.run((rules + S.shape_rules()).saturate())
    assert sum(report.num_matches_per_rule.values()) > 0
    S.check_shapes(enc.egraph)
    # the cleanups collapsed the chain: the output's e-class now holds relu(x)
    enc.egraph.check(eq(_ref(enc, "y")).to(Tensor.relu(_ref(enc, "x"))))


def test_two_shapes_seeded_for_one_value_are_caught():
    enc = _encode(model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", None)]))
    enc.egraph.register(*S.seed_shapes(enc), S.has_shape(_ref(enc, "y"), S.dims([3])))
    enc.egraph.run(S.shape_rules().saturate())
    with pytest.raises(S.ShapeConflict):
        S.check_shapes(enc.egraph)


@pytest.mark.parametrize("name", ["bert", "squeezenet"])
def test_seed_gives_the_egraph_registering_seed_shapes_gives(name):
    """seed converts one command per distinct shape and builds the others from it: the e-graph
    it leaves is the one ``register(*seed_shapes(enc))`` leaves (every node, class and let;
    egglog may spell a repeated subterm as a reference instead, which denotes the same node)."""
    theirs = _encode(build_example(name, "small"))
    actions = S.seed_shapes(theirs)
    theirs.egraph.register(*actions)
    enc = _encode(build_example(name, "small"))
    shapes = {enc.graph.types[v].shape for v in enc.lets if v in enc.graph.types}
    assert len(shapes) < len(actions)  # some commands are built from a template
    assert S.seed(enc) == len(actions)
    mine, want = serialize(enc.egraph), serialize(theirs.egraph)
    assert (mine.nodes, mine.classes, mine.lets) == (want.nodes, want.classes, want.lets)
    for v in enc.lets:
        if v in enc.graph.types:
            assert S.has_dims(enc.egraph, _ref(enc, v), enc.graph.types[v].shape)
