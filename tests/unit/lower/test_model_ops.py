"""Small hand-made models of the ops real models refused before (IsNaN/IsInf, ConstantOfShape
of a run-time shape, GatherND, Resize, ConvTranspose): ``eqsat.compile`` (LLVM, e-graph on)
against onnxruntime. Each model mixes its op with its neighbours in the corpus (a Where over
IsNaN, a fill added to its source, a conv after a resize), so fusion and scheduling see them
in context, not alone."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

import eqsat
from eqsat.errors import InputError
from tests.helpers import init, model, run_ort, vi

RNG = np.random.default_rng(7)
I64 = TensorProto.INT64


def _r(*shape) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _nonfinite_mask():
    nodes = [
        helper.make_node("IsNaN", ["x"], ["nan"]),
        helper.make_node("IsInf", ["x"], ["inf"], detect_negative=0),
        helper.make_node("Or", ["nan", "inf"], ["bad"]),
        helper.make_node("Where", ["bad", "zero", "x"], ["clean"]),
        helper.make_node("Mul", ["clean", "two"], ["y"]),
        helper.make_node("Cast", ["inf"], ["z"], to=TensorProto.FLOAT),
    ]
    inits = [init("zero", np.float32(0)), init("two", np.float32(2))]
    m = model(nodes, [vi("x", [3, 4])], [vi("y", [3, 4]), vi("z", [3, 4])], inits)
    x = _r(3, 4)
    x[0, 1], x[1, 2], x[2, 3], x[2, 0] = np.nan, np.inf, -np.inf, np.nan
    return m, {"x": x}


def _fill_of_runtime_shape():
    # a symbolic batch: the shape of x is known only at run time, so the fill is not folded
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node(
            "ConstantOfShape",
            ["s"],
            ["c"],
            value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.5]),
        ),
        helper.make_node("Mul", ["x", "c"], ["y"]),
    ]
    m = model(nodes, [vi("x", ["batch", 5])], [vi("y", ["batch", 5])])
    return m, {"x": _r(3, 5)}


def _gather_nd():
    nodes = [
        helper.make_node("GatherND", ["x", "q"], ["a"]),
        helper.make_node("GatherND", ["x", "p"], ["b"], batch_dims=1),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    p = np.array([[[1], [3]], [[0], [-1]], [[2], [2]]], np.int64)  # x[n, p[n, i, 0], :]
    m = model(
        nodes,
        [vi("x", [3, 4, 5]), vi("q", [2, 2], I64)],
        [vi("a", [2, 5]), vi("y", [3, 2, 5])],
        [init("p", p)],
    )
    return m, {"x": _r(3, 4, 5), "q": np.array([[0, 3], [2, -1]], np.int64)}


def _resize_then_conv():
    w = init("w", _r(4, 3, 3, 3) * 0.2)
    nodes = [
        helper.make_node(
            "Resize", ["x", "", "sc"], ["up"], mode="linear",
            coordinate_transformation_mode="pytorch_half_pixel",
        ),
        helper.make_node(
            "Resize", ["x", "", "sc"], ["near"], mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        ),
        helper.make_node("Add", ["up", "near"], ["s"]),
        helper.make_node("Conv", ["s", "w"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["x", "", "", "sz"], ["z"], mode="cubic"),
    ]  # fmt: skip
    inits = [init("sc", np.array([1, 1, 2, 2], np.float32)), w, init("sz", np.array([1, 3, 5, 9]))]
    m = model(nodes, [vi("x", [1, 3, 6, 7])], [vi("y", [1, 4, 12, 14]), vi("z", [1, 3, 5, 9])],
              inits, opset=19)  # fmt: skip
    return m, {"x": _r(1, 3, 6, 7)}


def _resize_symbolic():
    # a dynamic image size: integer scales make the taps periodic in the output position
    nodes = [
        helper.make_node(
            "Resize", ["x", "", "sc"], ["near"], mode="nearest",
            coordinate_transformation_mode="asymmetric", nearest_mode="floor",
        ),
        helper.make_node("Resize", ["x", "", "sc"], ["lin"], mode="linear"),
        helper.make_node("Resize", ["x", "", "sc3"], ["y3"], mode="cubic"),
        helper.make_node("Add", ["near", "lin"], ["y"]),
    ]  # fmt: skip
    inits = [init("sc", np.array([1, 1, 2, 2], np.float32)),
             init("sc3", np.array([1, 1, 3, 1], np.float32))]  # fmt: skip
    outs = [vi("y", [1, 2, "h2", "w2"]), vi("y3", [1, 2, "h3", "w"])]
    m = model(nodes, [vi("x", [1, 2, "h", "w"])], outs, inits, opset=19)
    return m, {"x": _r(1, 2, 5, 7)}


def _conv_transpose():
    nodes = [
        helper.make_node(
            "ConvTranspose", ["x", "w", "b"], ["t"], group=2, strides=[2, 2],
            pads=[1, 1, 1, 1], output_padding=[1, 1],
        ),
        helper.make_node("Sigmoid", ["t"], ["y"]),
    ]  # fmt: skip
    inits = [init("w", _r(4, 3, 3, 3)), init("b", _r(6))]
    m = model(nodes, [vi("x", [2, 4, "h", 6])], [vi("y", [2, 6, "h2", 12])], inits)
    return m, {"x": _r(2, 4, 5, 6)}  # h symbolic: the guard compares with s * h


MODELS = {
    "isnan_isinf": _nonfinite_mask,
    "constant_of_shape": _fill_of_runtime_shape,
    "gather_nd": _gather_nd,
    "resize": _resize_then_conv,
    "resize_symbolic": _resize_symbolic,
    "conv_transpose": _conv_transpose,
}


@pytest.mark.parametrize("optimize", [True, False], ids=["egraph", "direct"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_compiled_model_matches_onnxruntime(name, optimize):
    m, feeds = MODELS[name]()
    compiled = eqsat.compile(m, optimize=optimize)
    got, want = compiled.run(feeds), run_ort(m, feeds)
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_resize_of_a_symbolic_axis_refuses_align_corners():
    nodes = [helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="linear",
                              coordinate_transformation_mode="align_corners")]  # fmt: skip
    sc = init("sc", np.array([1, 2], np.float32))
    m = model(nodes, [vi("x", [2, "n"])], [vi("y", [2, "n2"])], [sc], opset=19)
    with pytest.raises(InputError, match="Resize: axis 1 has a symbolic size .* not periodic"):
        eqsat.compile(m, optimize=False)
