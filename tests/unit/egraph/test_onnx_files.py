"""Weights read in place and written from numpy (eqsat.egraph.onnx_files via onnx_io)."""

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from eqsat import pipeline
from eqsat.egraph import onnx_files, onnx_io
from eqsat.errors import InputError
from eqsat.verify import numeric
from tests.helpers import init, model, vi

DTYPES = ["float32", "float16", "float64", "int8", "int32", "int64", "uint8", "bool"]


def _weights_model(tmp_path, arrays: dict[str, np.ndarray], name="m.onnx"):
    """A model whose outputs are its initializers (Identity each), saved embedded."""
    nodes = [helper.make_node("Identity", [k], [f"{k}_out"]) for k in arrays]
    outs = [
        helper.make_tensor_value_info(
            f"{k}_out", helper.np_dtype_to_tensor_dtype(a.dtype), list(a.shape)
        )
        for k, a in arrays.items()
    ]
    m = model(nodes, [], outs, [init(k, a) for k, a in arrays.items()])
    p = tmp_path / name
    onnx.save_model(m, str(p))
    return m, p


def test_large_weights_are_read_in_place_and_equal_onnx_reading(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        # an odd-sized small tensor first, so that the large ones start at unaligned offsets
        "small": np.arange(3, dtype=np.int16),
        **{f"w_{d}": (rng.standard_normal((33, 17)) * 50).astype(d) for d in DTYPES},
    }
    m, p = _weights_model(tmp_path, arrays)
    skeleton = onnx_io.load_model(p)
    ext = {t.name for t in skeleton.graph.initializer if t.data_location == 1}
    assert ext == {k for k, a in arrays.items() if a.nbytes > onnx_io.SMALL_TENSOR}
    assert ext and "small" not in ext
    assert skeleton.ByteSize() < 4096  # the bytes stayed in the file
    g = onnx_io.import_onnx(p)
    for t in m.graph.initializer:
        want = numpy_helper.to_array(t)
        got = g.weights[t.name]
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    # a self-contained copy is the model onnx itself reads
    full = onnx_files.materialize(skeleton, tmp_path)
    for a, b in zip(full.graph.initializer, m.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def test_typed_data_fields_and_odd_files_are_left_to_onnx(tmp_path):
    t = helper.make_tensor("w", onnx.TensorProto.FLOAT, [600], list(range(600)))  # float_data
    m = model([helper.make_node("Identity", ["w"], ["y"])], [], [vi("y", [600])], [t])
    p = tmp_path / "typed.onnx"
    onnx.save_model(m, str(p))
    skeleton = onnx_io.load_model(p)
    assert skeleton.graph.initializer[0].data_location == onnx.TensorProto.DEFAULT
    np.testing.assert_array_equal(onnx_io.import_onnx(p).weights["w"], np.arange(600))


def test_written_file_is_a_plain_onnx_file_with_the_same_weights(tmp_path):
    rng = np.random.default_rng(1)
    arrays = {f"w{i}": rng.standard_normal((40, 30)).astype(np.float32) for i in range(3)}
    arrays["b"] = np.arange(5, dtype=np.int64)
    _, p = _weights_model(tmp_path, arrays)
    g = onnx_io.import_onnx(p)
    exported = onnx_io.export_onnx(g, inline_weights=False)
    pending = [t.name for t in exported.graph.initializer if t.data_location == 1]
    assert sorted(pending) == ["w0", "w1", "w2"]
    out = tmp_path / "out.onnx"
    assert onnx_io.save_model(exported, out, weights=g.weights) == [out]
    back = onnx.load(str(out))  # onnx's own reader: every byte inline
    onnx.checker.check_model(back, full_check=True)
    assert [t.name for t in back.graph.initializer] == [t.name for t in exported.graph.initializer]
    for t in back.graph.initializer:
        assert t.data_location == onnx.TensorProto.DEFAULT
        np.testing.assert_array_equal(numpy_helper.to_array(t), arrays[t.name])


def test_varint_round_trip():
    for n in (0, 1, 127, 128, 300, 2**31, 2**40 + 5):
        # a one-field message: TensorProto.dims (field 1, varint), as protobuf decodes it
        assert onnx.TensorProto.FromString(b"\x08" + onnx_files.encode_varint(n)).dims == [n]


def test_optimize_reads_and_writes_weights_without_protobuf_copies(tmp_path):
    rng = np.random.default_rng(2)
    w1 = rng.standard_normal((64, 64)).astype(np.float32)
    w2 = rng.standard_normal((64, 64)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    m = model(nodes, [vi("x", [2, 64])], [vi("y", [2, 64])], [init("w1", w1), init("w2", w2)])
    src = tmp_path / "src.onnx"
    onnx.save_model(m, str(src))
    out = tmp_path / "out.onnx"
    result = pipeline.optimize(src, output=out)
    assert result.verdict.ok
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.onnx", "src.onnx"]
    # the run held the weights as views of the source file
    assert all(isinstance(result.original.weights[k], np.memmap) for k in ("w1", "w2"))
    # the public protos are self-contained and equal to what was read and written
    assert not any(t.data_location == 1 for t in result.model.graph.initializer)
    assert numeric.compare_models(result.model, m, rtol=0, atol=0).ok
    assert numeric.compare_models(result.source, out, rtol=0, atol=0).ok


def test_gate_feeds_weights_from_the_files_and_catches_a_changed_weight(tmp_path):
    w = np.random.default_rng(3).standard_normal((64, 64)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    a = model(nodes, [vi("x", [1, 64])], [vi("y", [1, 64])], [init("w", w)])
    b = model(nodes, [vi("x", [1, 64])], [vi("y", [1, 64])], [init("w", w * 1.01)])
    pa, pb = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save_model(a, str(pa))
    onnx.save_model(b, str(pb))
    s = numeric.Session(pa)
    assert s.specs == [numeric.InputSpec("x", "float32", (1, 64))]
    assert set(s.weights) == {"w"}  # fed, not copied into the session
    assert numeric.compare_models(pa, pa, rtol=0, atol=0).ok
    assert not numeric.compare_models(pa, pb).ok


def test_compile_cache_key_covers_the_weight_bytes(tmp_path):
    w = np.ones((64, 64), np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    keys = []
    for k, scale in enumerate((1.0, 2.0)):
        m = model(nodes, [vi("x", [1, 64])], [vi("y", [1, 64])], [init("w", w * scale)])
        d = tmp_path / str(k)
        d.mkdir()
        onnx.save_model(m, str(d / "m.onnx"))  # same name, same layout, other bytes
        keys.append(onnx_files.digest(onnx_io.load_model(d / "m.onnx"), d))
    assert keys[0] != keys[1]


@pytest.mark.parametrize("content", [b"\x3a\xff\xff\xff\x7f", b"\x0b\x00"])
def test_malformed_wire_data_is_an_input_error(tmp_path, content):
    p = tmp_path / "bad.onnx"
    p.write_bytes(content)
    with pytest.raises(onnx_io.InputError):
        onnx_io.load_model(p)


def test_a_written_file_whose_bytes_differ_from_the_graph_is_caught(tmp_path):
    w = np.random.default_rng(4).standard_normal((64, 64)).astype(np.float32)
    _, p = _weights_model(tmp_path, {"w": w})
    skeleton = onnx_io.load_model(p)
    assert onnx_files.differing_weight(skeleton, tmp_path, {"w": w}) is None
    changed = w.copy()
    changed[63, 63] += 1.0  # the last chunk's last element
    assert onnx_files.differing_weight(skeleton, tmp_path, {"w": changed}) == "w"
    assert onnx_files.differing_weight(skeleton, tmp_path, {}) == "w"


def test_gate_probes_sizes_and_takes_input_shapes_with_weights_fed_from_the_file(tmp_path):
    """The gate's size probing (main) runs the shared session whose large weights are inputs
    mapped from the file (corpus): x [b, 64] @ w, reshaped to [64], runs only at b = 1."""
    w = np.random.default_rng(4).standard_normal((64, 64)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["a"]),
        helper.make_node("Reshape", ["a", "shape"], ["y"]),
    ]
    shape = init("shape", np.array([64], np.int64))
    m = model(nodes, [vi("x", ["b", 64])], [vi("y", [64])], [init("w", w), shape])
    src, out = tmp_path / "src.onnx", tmp_path / "out.onnx"
    onnx.save_model(m, str(src))
    assert set(numeric.Session(src).weights) == {"w"}
    result = pipeline.optimize(src, output=out)
    assert result.verdict.ok and result.verdict.dim_values == {"b": 1}
    pinned = pipeline.Options(input_shapes=(("x", (1, 64)),))
    assert pipeline.optimize(src, pinned).verdict.dim_values == {"b": 1}
    v = numeric.compare_models(src, out, input_shapes={"x": (1, 64)})
    assert v.ok and v.dim_values == {"b": 1}
    with pytest.raises(InputError, match="failed to run"):
        numeric.compare_models(src, out, input_shapes={"x": (2, 64)})


def test_identical_weights_sample_then_compare_in_full():
    """ir.identical_weights (export's rule and params_after's) compares a few pages of each
    same-shape tensor, then the whole: a difference outside the pages is still seen."""
    from eqsat.egraph.ir import identical_weights

    a = np.arange(16384, dtype=np.float32)  # 64 KiB: the sampled pages cover a fraction
    near = a.copy()
    near[2500] = -1  # byte 10000: outside the first, middle and last pages
    weights = {"a": a, "a_twin": a.copy(), "near": near, "scalar": np.float32(1), "s2": 1}
    weights = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    assert identical_weights(weights) == {"a_twin": "a", "scalar": "s2"}
    assert identical_weights(weights, keep={"a_twin"}) == {"a": "a_twin", "scalar": "s2"}
