"""Types of e-classes that rules made (no let gives them one): inferred from their children,
a Concat's included (its inputs sit in a Vec[Tensor] child)."""

from egglog import Vec, i64
from onnx import helper

from eqsat.egraph.classes import class_types, none_classes, view
from eqsat.egraph.encode import encode, let_ref
from eqsat.egraph.ir import TensorType
from eqsat.egraph.lang import Tensor
from eqsat.egraph.onnx_io import import_onnx
from eqsat.egraph.serialized import serialize
from tests.helpers import model, vi


def test_a_concatenation_of_new_classes_is_typed_whatever_the_order():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2, 3])], [vi("y", None)])
    enc = encode(import_onnx(m))
    x = let_ref(enc.lets["x"])
    parts = [Tensor.neg(Tensor.sigmoid(Tensor.exp(x))), Tensor.tanh(Tensor.neg(x))]
    enc.egraph.register(Tensor.concat(Vec[Tensor](*parts), i64(0)))
    eg = serialize(enc.egraph)
    nones = none_classes(eg)
    classes = [c for c, s in eg.sorts.items() if s.endswith("Tensor")]
    views = {nid: view(eg, nid, enc, nones) for c in classes for nid in eg.classes[c]}
    cat = next(eg.nodes[n].eclass for n, v in views.items() if v.op == "Concat")
    # the worklist pops from the end: the Concat first, before any of its inputs has a type
    for order in (sorted(classes, key=lambda c: c == cat), sorted(classes, key=lambda c: c != cat)):
        types = class_types(eg, enc, views, order)
        assert types.get(cat) == TensorType("float32", (4, 3))
