"""The quantized ops compiled (LLVM, the real ``pipeline.compile`` path) against onnxruntime on
small models built with onnx.helper: bit for bit for the integer outputs (quantizing rounds half
to even and saturates, the contractions accumulate in int32, the QLinear ops requantize), and
onnxruntime's own ``quantize_dynamic`` BERT end to end. The ONNX backend node tests of the same
ops run in tests/conformance (compile harness)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eqsat.pipeline import Options, compile
from tests.helpers import init, model, run_ort, vi
from tests.unit.egraph.test_ops_quant import _quantized_model

U8, I8, I32 = TensorProto.UINT8, TensorProto.INT8, TensorProto.INT32
RNG = np.random.default_rng(7)


def _compiled(m: onnx.ModelProto):
    return compile(m, Options(target="llvm", egraph=False, verify=False, threads=1)).compiled


def _same(m: onnx.ModelProto, feeds: dict) -> None:
    got = _compiled(m).run(feeds)
    want = run_ort(m, feeds)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)


def _u8(*shape):
    return RNG.integers(0, 256, shape).astype(np.uint8)


def _i8(*shape):
    return RNG.integers(-128, 128, shape).astype(np.int8)


@pytest.mark.parametrize("per_channel", [True, False])
def test_quantized_pipeline_model_bit_for_bit(per_channel):
    """QuantizeLinear → QLinearConv → DequantizeLinear → DynamicQuantizeLinear →
    MatMulInteger, as onnxruntime computes it."""
    m = _quantized_model(per_channel)
    c = _compiled(m)
    for seed in range(2):
        x = np.random.default_rng(seed).standard_normal((2, 4, 4, 4)).astype(np.float32)
        np.testing.assert_array_equal(c.run({"x": x})[0], run_ort(m, {"x": x})[0])


@pytest.mark.parametrize("zp_type", [U8, I8])
def test_quantize_rounds_half_to_even_and_saturates(zp_type):
    x = np.array([[-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 1e6, -1e6, 0.49999997, 254.5, -127.5]],
                 np.float32)
    zp = np.uint8(3) if zp_type == U8 else np.int8(-3)
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])],
              [vi("x", x.shape)], [vi("y", x.shape, zp_type)],
              [init("s", np.float32(1.0)), init("z", zp)], opset=13)
    _same(m, {"x": x})
    x = RNG.uniform(-300, 300, (3, 4, 5)).astype(np.float32)
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"], axis=1),
               helper.make_node("DequantizeLinear", ["y", "s", "z"], ["d"], axis=1)],
              [vi("x", x.shape)], [vi("d", x.shape)],
              [init("s", np.float32([0.5, 1.3, 2.0, 0.7])),
               init("z", np.array([0, 5, 100, 9], zp.dtype))], opset=13)
    _same(m, {"x": x})


# onnxruntime's MatMulInteger kernels take a uint8 A; int8 x int8 is QLinearMatMul's below
@pytest.mark.parametrize(("a_type", "b_type"), [(U8, I8), (U8, U8)])
def test_matmul_integer_and_qlinear_matmul(a_type, b_type):
    mk = {U8: _u8, I8: _i8}
    a, b = mk[a_type](5, 20), mk[b_type](20, 7)
    az = np.array(11, a.dtype)
    bz = np.array(3, b.dtype)
    m = model([helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])],
              [vi("a", a.shape, a_type)], [vi("y", None, I32)],
              [init("b", b), init("az", az), init("bz", bz)], opset=13)
    _same(m, {"a": a})
    m = model([helper.make_node("QLinearMatMul",
                                ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])],
              [vi("a", a.shape, a_type)], [vi("y", None, a_type)],
              [init("as", np.float32(0.03)), init("az", az), init("b", b),
               init("bs", np.float32(0.02)), init("bz", bz), init("ys", np.float32(0.09)),
               init("yz", np.array(7, a.dtype))], opset=13)
    _same(m, {"a": a})


def test_qlinear_matmul_int8_per_column_scales():
    a, b = _i8(6, 16), _i8(16, 5)
    m = model([helper.make_node("QLinearMatMul",
                                ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])],
              [vi("a", a.shape, I8)], [vi("y", None, I8)],
              [init("as", np.float32(0.05)), init("az", np.int8(-2)), init("b", b),
               init("bs", np.linspace(0.01, 0.05, 5).astype(np.float32)),
               init("bz", np.zeros(5, np.int8)), init("ys", np.float32(0.4)),
               init("yz", np.int8(1))], opset=21)
    _same(m, {"a": a})


def test_conv_integer_and_qlinear_conv():
    x, w = _u8(1, 3, 7, 7), _i8(4, 3, 3, 3)
    m = model([helper.make_node("ConvInteger", ["x", "w", "xz"], ["y"], pads=[1, 1, 1, 1])],
              [vi("x", x.shape, U8)], [vi("y", None, I32)],
              [init("w", w), init("xz", np.uint8(100))], opset=13)
    _same(m, {"x": x})
    m = model([helper.make_node("QLinearConv",
                                ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "b"], ["y"],
                                pads=[1, 1, 1, 1], strides=[2, 2])],
              [vi("x", x.shape, U8)], [vi("y", None, U8)],
              [init("xs", np.float32(0.02)), init("xz", np.uint8(128)), init("w", w),
               init("ws", np.float32([0.01, 0.02, 0.03, 0.04])), init("wz", np.zeros(4, np.int8)),
               init("ys", np.float32(0.05)), init("yz", np.uint8(120)),
               init("b", np.array([-300, 0, 50, 1000], np.int32))], opset=13)
    _same(m, {"x": x})


def test_dynamic_quantize_linear():
    x = RNG.standard_normal((4, 9)).astype(np.float32) * 3
    m = model([helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])],
              [vi("x", x.shape)], [vi("y", x.shape, U8), vi("s", []), vi("z", [], U8)],
              opset=13)
    _same(m, {"x": x})


@pytest.mark.slow
def test_quantize_dynamic_bert_compiles_and_matches_onnxruntime(tmp_path):
    """A model made the way users make one: onnxruntime's quantize_dynamic (int8 weights,
    DynamicQuantizeLinear + MatMulInteger per linear layer), compiled end to end."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from eqsat.examples import build_example

    src, q = tmp_path / "bert.onnx", tmp_path / "bert-q.onnx"
    onnx.save_model(build_example("bert", size="small"), str(src))
    quantize_dynamic(str(src), str(q), weight_type=QuantType.QInt8)
    m = onnx.load(str(q))
    x = RNG.standard_normal((2, 8, 32)).astype(np.float32)
    got = _compiled(m).run({"input": x})[0]
    np.testing.assert_allclose(got, run_ort(m, {"input": x})[0], rtol=1e-5, atol=1e-5)


def _vnni_host() -> bool:
    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.backends.llvm.tensorize_targets import select

    return select(Capabilities.host(), ("uint8", "int8")) is not None


@pytest.mark.parametrize(("a_type", "b_type", "shape"), [
    (U8, I8, (64, 128, 32)), (U8, U8, (37, 70, 45)), (I8, I8, (5, 9, 70)),
])  # fmt: skip
def test_int8_gemm_kernels_are_tensorized_onto_vnni(a_type, b_type, shape):
    """A 2-D MatMulInteger / QLinearMatMul with a weight B is scheduled ``tensorize=igemm``
    (the VNNI micro-kernel) where the host has VNNI, and still equals onnxruntime bit for bit:
    edges (M, N not tile multiples, K not a multiple of 4), an int8 A, a uint8 B."""
    if not _vnni_host():
        pytest.skip("the host has no VNNI (avx512vnni / avxvnni): the int8 GEMM stays plain loops")
    from eqsat.egraph.onnx_io import import_onnx
    from eqsat.lower.contraction import tensorized
    from eqsat.lower.lower import lower
    from eqsat.lower.schedule_int8 import match_int8_gemm, tensorize_int8

    m_, k_, n_ = shape
    mk = {U8: _u8, I8: _i8}
    a, b = mk[a_type](m_, k_), mk[b_type](k_, n_)
    zero = {U8: np.uint8, I8: np.int8}
    mmi = model([helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"])],
                [vi("a", a.shape, a_type)], [vi("y", None, I32)],
                [init("b", b), init("az", zero[a_type](9)), init("bz", zero[b_type](4))],
                opset=13)
    qmm = model([helper.make_node("QLinearMatMul",
                                  ["a", "as", "az", "b", "bs", "bz", "ys", "yz"], ["y"])],
                [vi("a", a.shape, a_type)], [vi("y", None, a_type)],
                [init("as", np.float32(0.03)), init("az", zero[a_type](9)), init("b", b),
                 init("bs", np.float32(0.02)), init("bz", zero[b_type](4)),
                 init("ys", np.float32(0.5)), init("yz", zero[a_type](3))], opset=13)
    for m in (mmi, qmm):
        program = lower(import_onnx(m)).program
        assert [match_int8_gemm(k) is not None for k in program.kernels] == [True]
        scheduled = tensorize_int8(program, True).kernels
        assert [tensorized(k) for k in scheduled] == ["igemm"]
        if (a_type, m) != (I8, mmi):  # onnxruntime's MatMulInteger takes a uint8 A only
            _same(m, {"a": a})
    want = (a.astype(np.int64) - 9) @ (b.astype(np.int64) - 4)
    np.testing.assert_array_equal(_compiled(mmi).run({"a": a})[0], want.astype(np.int32))
