"""Quantized ops in the op table (eqsat.egraph.opdefs.quant): their numpy semantics against
onnxruntime (per tensor, per axis, per channel), DequantizeLinear never folded, and quantized
models — built by hand and by onnxruntime's quantize_dynamic — through optimize (the gate
passing), info and compile (the compiler claims all of them: ``eqsat.lower.compute_quant``;
the compiled results against onnxruntime are in tests/unit/lower/test_quant_compile.py)."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eqsat import cli, pipeline
from eqsat.egraph.interpret import interpret
from eqsat.egraph.onnx_io import import_onnx
from eqsat.egraph.ops import OPS
from eqsat.egraph.passes import fold_constants
from eqsat.examples import build_example
from tests.helpers import init, model, run_ort, vi

QUANTIZED = (
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger",
    "ConvInteger", "QLinearMatMul", "QLinearConv",
)  # fmt: skip
U8, I8 = TensorProto.UINT8, TensorProto.INT8


def test_every_quantized_op_is_in_the_table_and_the_compiler_claims_all():
    from eqsat.lower import compute

    assert set(QUANTIZED) <= set(OPS)
    assert set(QUANTIZED) <= set(compute.CLAIMED)


def _quantized_model(per_channel: bool = True):
    """float → QuantizeLinear → QLinearConv → DequantizeLinear → DynamicQuantizeLinear →
    MatMulInteger → float, with a Neg∘Neg the e-graph removes at the end."""
    rng = np.random.default_rng(0)
    m_ch = 8
    ws = np.linspace(0.005, 0.02, m_ch).astype(np.float32) if per_channel else np.float32(0.01)
    wz = np.full(m_ch, 128, np.uint8) if per_channel else np.uint8(128)
    nodes = [
        helper.make_node("Relu", ["x"], ["xr"]),
        helper.make_node("QuantizeLinear", ["xr", "xs", "xz"], ["xq"]),
        helper.make_node(
            "QLinearConv", ["xq", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["yq"],
            pads=[1, 1, 1, 1],
        ),
        helper.make_node("DequantizeLinear", ["yq", "ys", "yz"], ["y"]),
        helper.make_node("Reshape", ["y", "shape"], ["f"]),
        helper.make_node("DynamicQuantizeLinear", ["f"], ["fq", "fs", "fz"]),
        helper.make_node("MatMulInteger", ["fq", "wm", "fz", "wmz"], ["acc"]),
        helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["accf", "fs"], ["o1"]),
        helper.make_node("Neg", ["o1"], ["o2"]),
        helper.make_node("Neg", ["o2"], ["out"]),
    ]  # fmt: skip
    inits = [
        init("xs", np.float32(0.05)),
        init("xz", np.uint8(10)),
        init("w", rng.integers(0, 256, (m_ch, 4, 3, 3)).astype(np.uint8)),
        init("ws", ws),
        init("wz", wz),
        init("ys", np.float32(0.2)),
        init("yz", np.uint8(5)),
        init("b", rng.integers(-50, 50, m_ch).astype(np.int32)),
        init("shape", np.array([-1, 32], np.int64)),
        init("wm", rng.integers(-127, 128, (32, 16)).astype(np.int8)),
        init("wmz", np.int8(3)),
    ]
    return model(nodes, [vi("x", ["n", 4, 4, 4])], [vi("out", ["rows", 16])], inits)


@pytest.mark.parametrize("per_channel", [True, False])
def test_interpreter_matches_onnxruntime_bit_for_bit(per_channel):
    m = _quantized_model(per_channel)
    g = import_onnx(m)
    assert g.types["out"].shape == ("n*4", 16) and g.types["yq"].dtype == "uint8"
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((2, 4, 4, 4)).astype(np.float32)
        ours = interpret(g, {"x": x})
        np.testing.assert_array_equal(ours["out"], run_ort(m, {"x": x})[0])


def test_dequantize_of_a_weight_is_never_folded_quantize_is():
    nodes = [
        helper.make_node("QuantizeLinear", ["wf", "s", "z"], ["wq"]),
        helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    inits = [
        init("wf", np.arange(12, dtype=np.float32).reshape(3, 4) / 7),
        init("s", np.float32(0.1)),
        init("z", np.int8(0)),
    ]
    g = fold_constants(import_onnx(model(nodes, [vi("x", [2, 3])], [vi("y", None)], inits)))
    assert [n.op for n in g.nodes] == ["DequantizeLinear", "MatMul"]
    assert g.weights["wq"].dtype == np.int8  # the weight stays quantized
    assert fold_constants(g, bounded=False).nodes == g.nodes  # after extraction too


def test_quantized_model_is_optimized_with_the_gate_passing(tmp_path):
    m = _quantized_model()
    r = pipeline.optimize(m, output=tmp_path / "q.onnx")
    assert r.verdict.ok and r.egraph is not None and "error" not in r.egraph
    ops = [n.op_type for n in onnx.load(str(tmp_path / "q.onnx")).graph.node]
    assert "Neg" not in ops  # the float graph around the quantized ops was optimized
    assert {"QLinearConv", "DynamicQuantizeLinear", "MatMulInteger"} <= set(ops)


def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def test_info_and_compile_on_a_quantized_file(capsys, tmp_path):
    path = tmp_path / "q.onnx"
    onnx.save_model(_quantized_model(), str(path))
    code, out, err = _cli(capsys, "info", path, "--json")
    s = json.loads(out)
    assert code == 0 and not err and s["opaque_ops"] == [] and s["flops"] > 0
    assert s["ops"]["QLinearConv"] == 1 and s["nodes"] == 11
    code, _, err = _cli(capsys, "compile", path, "-o", tmp_path / "q.eqsat", "--no-cache")
    assert code == 0, err
    assert (tmp_path / "q.eqsat").exists()


def test_quantize_dynamic_output_is_optimized_and_verified(capsys, tmp_path):
    """A model made the way users make one: onnxruntime's quantize_dynamic (offline)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, q = tmp_path / "bert.onnx", tmp_path / "bert-q.onnx"
    onnx.save_model(build_example("bert", size="small"), str(src))
    quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8)
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    code, out, _ = _cli(capsys, "optimize", q, "-o", tmp_path / "o.onnx", "--json")
    s = json.loads(out)
    assert code == 0 and s["verification"]["ok"] and "error" not in (s["egraph"] or {})
    assert s["nodes_after"] < s["nodes_before"]
    assert s["ops_after"]["MatMulInteger"] == s["ops_before"]["MatMulInteger"]
    code, out, _ = _cli(capsys, "info", q, "--json")
    assert code == 0 and json.loads(out)["opaque_ops"] == []


def test_qdq_model_from_quantize_static_keeps_its_int8_weights(tmp_path):
    """onnxruntime's QDQ format (DequantizeLinear of int8 weights feeding float Conv/Gemm, which
    onnxruntime fuses into integer kernels): the weights stay int8 through optimize."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    m = build_example("vgg", size="small")
    x = m.graph.input[0]
    shape = [d.dim_value or 1 for d in x.type.tensor_type.shape.dim]

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(0)
            self.feeds = iter([{x.name: rng.standard_normal(shape).astype(np.float32)}] * 2)

        def get_next(self):
            return next(self.feeds, None)

    src, q = tmp_path / "vgg.onnx", tmp_path / "vgg-qdq.onnx"
    onnx.save_model(m, str(src))
    quantize_static(
        str(src), str(q), Reader(), quant_format=QuantFormat.QDQ, weight_type=QuantType.QInt8
    )
    r = pipeline.optimize(q, output=tmp_path / "o.onnx")
    s = r.to_json()
    dq_ops = s["ops_after"]["DequantizeLinear"]
    assert r.verdict.ok and dq_ops == s["ops_before"]["DequantizeLinear"] > 0
    out = onnx.load(str(tmp_path / "o.onnx"))
    conv_w = {n.input[1] for n in out.graph.node if n.op_type == "Conv"}
    dq = {n.output[0]: n.input[0] for n in out.graph.node if n.op_type == "DequantizeLinear"}
    inits = {t.name: t for t in out.graph.initializer}
    assert conv_w and all(inits[dq[w]].data_type == TensorProto.INT8 for w in conv_w)
