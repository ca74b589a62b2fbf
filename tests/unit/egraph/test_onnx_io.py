"""ONNX import/export: round trips in onnxruntime, sorting, opsets, symbols, opaque ops,
external data, weight dedup, metadata, and the one-line errors for bad models."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eqsat.egraph import onnx_io
from eqsat.egraph.interpret import interpret
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.errors import InputError
from eqsat.examples import build_example, example_names
from eqsat.verify.numeric import compare_models
from tests.helpers import init, model, run_ort, vi


@pytest.mark.parametrize("name", example_names())
def test_every_example_round_trips_equal_in_ort(name):
    m = build_example(name, size="small")
    g = import_onnx(m)
    g.check()
    out = export_onnx(g)
    onnx.checker.check_model(out, full_check=True)
    verdict = compare_models(m, out, rtol=0, atol=0)  # no rewrite: bit-identical
    assert verdict.ok, verdict.reason
    assert [i.name for i in out.graph.input] == [i.name for i in m.graph.input]
    assert [o.name for o in out.graph.output] == [o.name for o in m.graph.output]
    assert out.opset_import == m.opset_import


@pytest.mark.parametrize("name", example_names())
def test_interpreter_matches_ort_on_examples(name):
    m = build_example(name, size="small")
    g = import_onnx(m)
    rng = np.random.default_rng(0)
    feeds = {}
    for i in g.inputs:
        shape = [d if isinstance(d, int) else 2 for d in g.types[i].shape]
        feeds[i] = rng.standard_normal(shape).astype(g.types[i].dtype)
    ours = interpret(g, feeds)
    theirs = run_ort(m, feeds)
    for (name_, a), b in zip(ours.items(), theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name_)


def test_symbolic_batch_dim_is_kept():
    m = build_example("bert", size="small")
    g = import_onnx(m)
    (x,) = g.inputs
    assert g.types[x].shape[0] == "batch"
    out = export_onnx(g)
    assert out.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    assert out.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "batch"


def _chain(order=(0, 1, 2)):
    nodes = [
        helper.make_node("Relu", ["x"], ["a"], name="n0"),
        helper.make_node("Neg", ["a"], ["b"], name="n1"),
        helper.make_node("Add", ["a", "b"], ["y"], name="n2"),
    ]
    return model([nodes[i] for i in order], [vi("x", [2, 3])], [vi("y", [2, 3])])


def test_nodes_in_any_order_are_sorted():
    g = import_onnx(_chain((2, 0, 1)))
    assert [n.name for n in g.nodes] == ["n0", "n1", "n2"]


def test_cycle_is_an_input_error():
    nodes = [
        helper.make_node("Relu", ["b"], ["a"]),
        helper.make_node("Relu", ["a"], ["b"]),
        helper.make_node("Add", ["x", "a"], ["y"]),
    ]
    with pytest.raises(InputError, match="cycle"):
        import_onnx(model(nodes, [vi("x", [2])], [vi("y", [2])]))


def test_missing_input_is_an_input_error():
    nodes = [helper.make_node("Add", ["x", "ghost"], ["y"])]
    with pytest.raises(InputError, match="ghost"):
        import_onnx(model(nodes, [vi("x", [2])], [vi("y", [2])]))


def test_constant_nodes_become_weights_and_old_opsets_convert():
    nodes = [
        helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Unsqueeze", ["c"], ["c2"], axes=[0]),  # opset 11: axes attribute
        helper.make_node("Add", ["x", "c2"], ["y"]),
    ]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], opset=11)
    g = import_onnx(m)
    assert g.meta.opset == 13
    assert "c" in g.weights and g.weights["c"].dtype == np.float32
    x = np.zeros((2, 3), np.float32)
    np.testing.assert_array_equal(interpret(g, {"x": x})["y"], np.tile([1, 2, 3], (2, 1)))
    assert compare_models(m, export_onnx(g)).ok


def test_unknown_custom_op_with_declared_type_passes_through():
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Frobnicate", ["a"], ["b"], domain="com.example", gain=2.0),
        helper.make_node("Relu", ["b"], ["y"]),
    ]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    m.graph.value_info.append(vi("b", [2, 3]))
    g = import_onnx(m)
    (opaque,) = [n for n in g.nodes if n.opaque is not None]
    assert opaque.domain == "com.example" and g.types["b"].shape == (2, 3)
    out = export_onnx(g)
    p = out.graph.node[1]
    assert (p.op_type, p.domain, p.attribute[0].f) == ("Frobnicate", "com.example", 2.0)
    assert ("com.example", 1) in {(o.domain, o.version) for o in out.opset_import}


def test_unknown_op_without_shape_is_an_input_error():
    nodes = [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", None)])
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(InputError, match="Frobnicate is unknown to eqsat"):
        import_onnx(m)


def test_if_with_subgraph_capturing_outer_values_passes_through():
    then_g = helper.make_graph(
        [helper.make_node("Add", ["a", "w"], ["t"])], "then", [], [vi("t", [2])]
    )
    else_g = helper.make_graph(
        [helper.make_node("Sub", ["a", "w"], ["e"])], "else", [], [vi("e", [2])]
    )
    nodes = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("If", ["cond"], ["r"], then_branch=then_g, else_branch=else_g),
        helper.make_node("Neg", ["r"], ["y"]),
    ]
    m = model(
        nodes,
        [vi("x", [2]), vi("cond", [], TensorProto.BOOL)],
        [vi("y", [2])],
        [init("w", np.array([1.0, 2.0], np.float32))],
    )
    g = import_onnx(m)
    (if_node,) = [n for n in g.nodes if n.op == "If"]
    assert set(if_node.implicit) == {"a", "w"}
    out = export_onnx(g)
    onnx.checker.check_model(out, full_check=True)
    for c in (True, False):
        feeds = {"x": np.array([-1.0, 3.0], np.float32), "cond": np.array(c)}
        np.testing.assert_array_equal(run_ort(m, feeds)[0], run_ort(out, feeds)[0])


def test_identical_weights_are_stored_once():
    w = np.arange(6, dtype=np.float32).reshape(2, 3)
    nodes = [
        helper.make_node("Add", ["x", "w1"], ["a"]),
        helper.make_node("Add", ["a", "w2"], ["y"]),
    ]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], [init("w1", w), init("w2", w.copy())])
    out = export_onnx(import_onnx(m))
    assert len(out.graph.initializer) == 1
    assert compare_models(m, out, rtol=0, atol=0).ok


def test_scalar_and_one_element_weights_are_not_merged():
    nodes = [
        helper.make_node("Gather", ["x", "i0"], ["a"], axis=0),  # scalar index: drops the axis
        helper.make_node("Gather", ["x", "i1"], ["b"], axis=0),  # [1] index: keeps it
        helper.make_node("Add", ["a", "b"], ["y"]),
    ]
    inits = [init("i0", np.array(0, np.int64)), init("i1", np.array([0], np.int64))]
    m = model(nodes, [vi("x", [2, 3])], [vi("y", [1, 3])], inits)
    out = export_onnx(import_onnx(m))
    assert len(out.graph.initializer) == 2
    onnx.checker.check_model(out, full_check=True)
    assert compare_models(m, out, rtol=0, atol=0).ok


def test_metadata_and_names_are_kept():
    m = _chain()
    m.producer_name, m.producer_version, m.doc_string = "me", "1.2", "a doc"
    m.model_version = 7
    m.metadata_props.add(key="author", value="eqsat tests")
    out = export_onnx(import_onnx(m))
    assert (out.producer_name, out.producer_version, out.doc_string) == ("me", "1.2", "a doc")
    assert out.model_version == 7 and out.ir_version == m.ir_version
    assert {p.key: p.value for p in out.metadata_props} == {"author": "eqsat tests"}


def test_external_data_is_read_and_written(tmp_path, monkeypatch):
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    m = model(nodes, [vi("x", [1, 64])], [vi("y", [1, 64])], [init("w", w)])
    src = tmp_path / "src.onnx"
    onnx.save_model(m, str(src), save_as_external_data=True, location="src.bin", size_threshold=0)
    assert (tmp_path / "src.bin").exists()
    g = import_onnx(src)
    np.testing.assert_array_equal(g.weights["w"], w)
    monkeypatch.setattr(onnx_io, "EXTERNAL_DATA_THRESHOLD", 1000)
    dst = tmp_path / "out" / "dst.onnx"
    dst.parent.mkdir()
    exported = export_onnx(g)
    assert exported.graph.initializer[0].data_location == onnx.TensorProto.EXTERNAL
    assert not exported.graph.initializer[0].raw_data  # never held inline
    files = onnx_io.save_model(exported, dst, weights=g.weights)
    assert [f.name for f in files] == ["dst.onnx", "dst.onnx.data"]
    assert (dst.parent / "dst.onnx.data").stat().st_size >= w.nbytes
    assert compare_models(src, dst, rtol=0, atol=0).ok


def test_truncated_external_data_is_an_input_error(tmp_path):
    w = np.ones((64, 64), np.float32)
    m = model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", [1, 64])],
        [vi("y", [1, 64])],
        [init("w", w)],
    )
    src = tmp_path / "src.onnx"
    onnx.save_model(m, str(src), save_as_external_data=True, location="src.bin", size_threshold=0)
    (tmp_path / "src.bin").write_bytes(b"\0" * 100)
    with pytest.raises(InputError, match="missing or truncated"):
        import_onnx(src)


@pytest.mark.parametrize(
    "content", [b"", b"not an onnx model at all\n", None], ids=["empty", "text", "truncated"]
)
def test_unreadable_files_are_input_errors(tmp_path, content):
    p = tmp_path / "bad.onnx"
    if content is None:
        content = build_example("vgg", size="small").SerializeToString()[:500]
    p.write_bytes(content)
    with pytest.raises(InputError, match="bad.onnx"):
        import_onnx(p)
