"""Types of values outside the op table, from every source a file has (eqsat.egraph.onnx_types):
its value_info, onnx's shape inference, and control-flow subgraphs (If, Loop, Scan); opaque
nodes typed that way pass through optimize unchanged, with the verification gate running."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eqsat import pipeline
from eqsat.egraph import onnx_types
from eqsat.egraph.ir import TensorType
from eqsat.egraph.onnx_io import import_onnx
from eqsat.errors import InputError
from tests.helpers import init, model, run_ort, vi

B = TensorProto.BOOL
I64 = TensorProto.INT64


@pytest.fixture
def no_onnx_inference(monkeypatch):
    """As for a file onnx's shape inference cannot go through: only the other sources."""
    monkeypatch.setattr(onnx_types, "inferred", lambda m: {})


def _if_model(then_shape=(2, 3), else_shape=(2, 3), declare_output=False):
    then_g = helper.make_graph(
        [helper.make_node("Slice", ["x", "s0", "e0"], ["t"])],
        "then",
        [],
        [vi("t", then_shape)],
        initializer=[init("s0", [0, 0]), init("e0", list(then_shape))],
    )
    else_g = helper.make_graph(
        [helper.make_node("Slice", ["x", "s1", "e1"], ["e"])],
        "else",
        [],
        [vi("e", else_shape)],
        initializer=[init("s1", [0, 0]), init("e1", list(else_shape))],
    )
    nodes = [
        helper.make_node("If", ["c"], ["r"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Relu", ["r"], ["a"]),
        helper.make_node("Neg", ["a"], ["b"]),
        helper.make_node("Neg", ["b"], ["y"]),  # Neg∘Neg: the e-graph removes both
    ]
    out = vi("y", then_shape if declare_output else None)
    return model(nodes, [vi("x", [2, 5]), vi("c", [], B)], [out])


def test_if_output_type_comes_from_its_branches(no_onnx_inference):
    g = import_onnx(_if_model())
    assert g.types["r"] == TensorType("float32", (2, 3)) == g.types["y"]


def test_if_branches_that_disagree_on_a_dim_give_a_symbol(no_onnx_inference):
    g = import_onnx(_if_model(else_shape=(2, 5)))
    assert g.types["r"] == TensorType("float32", (2, "r_d1"))


def test_file_value_info_comes_before_the_subgraphs(no_onnx_inference):
    m = _if_model()
    m.graph.value_info.append(vi("r", ["rows", 3]))
    assert import_onnx(m).types["r"].shape == ("rows", 3)


def test_if_model_is_optimized_with_the_if_kept_and_the_gate_running(no_onnx_inference, tmp_path):
    m = _if_model()
    r = pipeline.optimize(m, output=tmp_path / "o.onnx")
    assert r.verdict is not None and r.verdict.ok
    out = onnx.load(str(tmp_path / "o.onnx"))
    ops = [n.op_type for n in out.graph.node]
    assert ops.count("If") == 1 and "Neg" not in ops  # Neg∘Neg removed around the opaque If
    (kept,) = [n for n in out.graph.node if n.op_type == "If"]
    (orig,) = [n for n in m.graph.node if n.op_type == "If"]
    assert kept.attribute == orig.attribute  # the subgraphs pass through unchanged
    x = np.arange(10, dtype=np.float32).reshape(2, 5) - 4
    for c in (True, False):
        feeds = {"x": x, "c": np.array(c)}
        np.testing.assert_array_equal(run_ort(out, feeds)[0], run_ort(m, feeds)[0])


def _loop_model():
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Add", ["acc_in", "x"], ["acc_out"]),
            helper.make_node("Relu", ["acc_out"], ["scan_out"]),
        ],
        "body",
        [vi("i", [], I64), vi("cond_in", [], B), vi("acc_in", [3])],
        [vi("cond_out", [], B), vi("acc_out", [3]), vi("scan_out", [3])],
    )
    nodes = [
        helper.make_node("Loop", ["n", "", "a0"], ["acc", "scans"], body=body),
        helper.make_node("Neg", ["scans"], ["y"]),
        helper.make_node("Neg", ["acc"], ["z"]),
    ]
    return model(
        nodes, [vi("x", [3]), vi("a0", [3]), vi("n", [], I64)], [vi("y", None), vi("z", None)]
    )


def test_loop_output_types_come_from_its_body(no_onnx_inference, tmp_path):
    m = _loop_model()
    g = import_onnx(m)
    assert g.types["acc"] == TensorType("float32", (3,))
    assert g.types["scans"] == TensorType("float32", ("scans_d0", 3))
    r = pipeline.optimize(m, pipeline.Options(egraph=False), output=tmp_path / "o.onnx")
    assert r.verdict.ok and [n.op_type for n in r.model.graph.node].count("Loop") == 1


def test_scan_output_types_come_from_its_body(no_onnx_inference):
    body = helper.make_graph(
        [
            helper.make_node("Add", ["s_in", "row"], ["s_out"]),
            helper.make_node("Identity", ["s_out"], ["col"]),
        ],
        "body",
        [vi("s_in", [4]), vi("row", [4])],
        [vi("s_out", [4]), vi("col", [4])],
    )
    nodes = [
        helper.make_node(
            "Scan", ["s0", "xs"], ["s", "cols"], body=body, num_scan_inputs=1,
            scan_output_axes=[1],
        ),
    ]  # fmt: skip
    m = model(nodes, [vi("s0", [4]), vi("xs", ["t", 4])], [vi("s", None), vi("cols", None)])
    g = import_onnx(m)
    assert g.types["s"] == TensorType("float32", (4,))
    assert g.types["cols"] == TensorType("float32", (4, "t"))


def _custom(declared: bool):
    """com.microsoft's Gelu: onnxruntime runs it, onnx has no schema for it."""
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Gelu", ["a"], ["b"], domain="com.microsoft"),
        helper.make_node("Add", ["b", "w"], ["y"]),
    ]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", None)], [init("w", np.ones(3, np.float32))])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    if declared:
        m.graph.value_info.append(vi("b", ["n", 3]))
    return m


def test_custom_domain_op_typed_by_value_info_passes_through_the_gate(tmp_path):
    m = _custom(declared=True)
    assert import_onnx(m).types["y"] == TensorType("float32", ("n", 3))
    r = pipeline.optimize(m, pipeline.Options(egraph=False), output=tmp_path / "o.onnx")
    assert r.verdict.ok
    out = onnx.load(str(tmp_path / "o.onnx"))
    (kept,) = [n for n in out.graph.node if n.domain == "com.microsoft"]
    assert (kept.op_type, list(kept.input), list(kept.output)) == ("Gelu", ["a"], ["b"])


def test_untyped_custom_op_is_refused_naming_op_and_value():
    with pytest.raises(InputError, match=r"com\.microsoft\.Gelu is unknown.*'b'"):
        import_onnx(_custom(declared=False))


def test_negative_and_zero_input_dims_read_as_symbols():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 3])], [vi("y", None)])
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = -1
    dims[1].dim_value = 0
    g = import_onnx(m)
    assert g.types["x"].shape == ("x_d0", "x_d1")


def test_onnx_inference_that_raises_is_retried_then_left_to_the_other_sources(monkeypatch):
    """onnx refuses some real files outright (its data propagation, a stale declaration): the
    retries without data_prop and without the file's value_info, then the other sources."""
    real = onnx.shape_inference.infer_shapes
    calls = []

    def picky(m, *args, **kw):
        calls.append(kw.get("data_prop", False))
        if kw.get("data_prop"):
            raise onnx.shape_inference.InferenceError("simulated data propagation failure")
        return real(m, *args, **kw)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", picky)
    m = _if_model()
    assert "r" in onnx_types.inferred(m) and calls == [True, False]

    def broken(m, *args, **kw):
        raise onnx.shape_inference.InferenceError("simulated")

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", broken)
    assert onnx_types.inferred(m) == {}
    custom = _custom(declared=True)
    assert import_onnx(custom).types["b"] == TensorType("float32", ("n", 3))  # declared
    assert import_onnx(m).types["r"] == TensorType("float32", (2, 3))  # the branches
