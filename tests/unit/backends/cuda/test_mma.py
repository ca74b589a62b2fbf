"""The tensor-core tile kernel (eqsat.lower.gpu_mma, eqsat.backends.cuda.mma) without a GPU:
its layouts cover their tiles, its plan keeps every example model's results (the serial
reference in the interpreter, float32), a numpy emulation of what it computes at tf32 / fp16 /
bf16 stays within the gate's per-precision tolerance of float64, the PTX holds the tensor-core
instructions and ptxas accepts it for sm_80 and sm_90 within the launch configuration, and
``--precision`` is honoured on cuda and refused elsewhere. That the kernel runs on a GPU and
computes the emulation's result is NOT checked here (benchmarks/gpu_check.sh would)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from eqsat import cli, pipeline
from eqsat.backends.cuda.codegen import compile_kernel
from eqsat.backends.cuda.toolchain import ARCHS, check_launch, ptxas, ptxas_path
from eqsat.egraph.onnx_io import import_onnx
from eqsat.examples import build_example, example_names
from eqsat.lower import gpu_mma, gpu_schedule
from eqsat.lower.contraction import match_contraction
from eqsat.lower.interpret import interpret
from eqsat.lower.lower import lower
from eqsat.lower.schedule import Tensorize, apply
from eqsat.verify.precision import tolerance, worst_case

needs_ptxas = pytest.mark.skipif(ptxas_path() is None, reason="ptxas not found (nvidia-cuda-nvcc)")
MMA = gpu_mma.MMA_PRECISIONS  # tf32, fp16, bf16


def _gemm(m: int, k: int, n: int, bias_relu: bool = False):
    nodes = [helper.make_node("MatMul", ["a", "b"], ["p" if bias_relu else "y"])]
    inits = []
    if bias_relu:
        bias = np.linspace(-1, 1, n, dtype=np.float32)
        inits = [helper.make_tensor("c", TensorProto.FLOAT, [n], bias)]
        nodes.append(helper.make_node("Add", ["p", "c"], ["q"]))
        nodes.append(helper.make_node("Relu", ["q"], ["y"]))
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], inits,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("precision", MMA)
def test_the_layouts_cover_their_tiles_once(precision):
    s = gpu_mma.SHAPES[precision]
    lane = np.arange(32)[:, None]
    a = [gpu_mma.a_frag(s, lane, r, h) for r in range(gpu_mma.A_REGS) for h in range(s.per_reg)]
    b = [gpu_mma.b_frag(s, lane, r, h) for r in range(gpu_mma.B_REGS) for h in range(s.per_reg)]
    c = [gpu_mma.acc_cell(lane, i) for i in range(4)]
    for cells, shape in ((a, (16, s.k)), (b, (s.k, 8)), (c, (16, 8))):
        count = np.zeros(shape, int)
        for r, q in cells:
            np.add.at(count, (r, q), 1)
        assert (count == 1).all()  # every element of the mma tile in exactly one lane's register
    for r in range(gpu_mma.A_REGS):  # a register's elements are adjacent in K (one 32-bit load)
        lo, hi = gpu_mma.a_frag(s, lane, r, 0), gpu_mma.a_frag(s, lane, r, s.per_reg - 1)
        assert (hi[0] == lo[0]).all() and (hi[1] == lo[1] + s.per_reg - 1).all()
    tid = np.arange(gpu_mma.THREADS)[:, None]
    for stage, shape in ((gpu_mma.stage_a, (gpu_mma.BM, gpu_mma.BK)),
                         (gpu_mma.stage_b, (gpu_mma.BK, gpu_mma.BN))):  # fmt: skip
        count = np.zeros(shape, int)
        np.add.at(count, stage(tid, np.arange(gpu_mma.STAGED)[None, :]), 1)
        assert (count == 1).all()
    origins = {gpu_mma.warp_origin(t) for t in range(0, gpu_mma.THREADS, 32)}
    assert origins == {(r, c) for r in (0, gpu_mma.WM) for c in (0, gpu_mma.WN)}


def test_rounding_is_the_ptx_conversions():
    x = np.float32(1 + 2**-8)  # a tie for bf16: to even (1), fp16 exact
    assert gpu_mma.round_to(np.array([x]), "bf16")[0] == 1.0
    assert gpu_mma.round_to(np.array([1 + 3 * 2**-8], np.float32), "bf16")[0] == 1 + 2**-6
    assert gpu_mma.round_to(np.array([-(1 + 2**-11)], np.float32), "tf32")[0] == -(1 + 2**-10)
    y = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    np.testing.assert_array_equal(gpu_mma.round_to(y, "fp16"), y.astype(np.float16))
    for p, bits in (("bf16", 7), ("tf32", 10)):  # fraction bits kept
        r = gpu_mma.round_to(y, p)
        assert (r.view(np.uint32) & ((1 << (23 - bits)) - 1) == 0).all()
        assert np.abs(r - y).max() <= 2.0 ** -(bits + 1) * np.abs(y).max()


@pytest.mark.parametrize("precision", MMA)
@pytest.mark.parametrize("mkn", [(100, 80, 72), (64, 256, 64)])
def test_the_emulated_kernel_is_within_the_gates_tolerance(precision, mkn):
    """What the kernel computes (tile decomposition, staging, rounded operands, fragments,
    float32 accumulation, edge guards), emulated in numpy, against float64: within Higham's
    bound element-wise and within the tolerance the gate uses at this precision."""
    m, k, n = mkn
    rng = np.random.default_rng(3)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    got = gpu_mma.emulate(a, b, precision)
    exact = a.astype(np.float64) @ b
    err = np.abs(got - exact)
    assert (err <= worst_case(precision, k) * (np.abs(a) @ np.abs(b))).all()
    rtol, atol = tolerance(precision, k)
    np.testing.assert_allclose(got, exact, rtol=rtol, atol=atol)
    # the operands were rounded: the error is that of the precision, not of float32
    assert err.max() > 10 * worst_case("fp32", k) * np.abs(exact).max()
    # and the rounding is all the difference: unrounded operands give float32 accuracy
    ra, rb = gpu_mma.round_to(a, precision), gpu_mma.round_to(b, precision)
    same = gpu_mma.emulate(ra, rb, precision)
    np.testing.assert_array_equal(same, got)


def test_tolerance_follows_precision_and_k():
    assert tolerance("fp32", 4096) == (1e-3, 1e-5)
    assert tolerance("fp16", 64) == (8 * 2**-11, 8 * 2**-11 * 8)
    assert tolerance("bf16", 64)[0] > tolerance("fp16", 64)[0] == tolerance("tf32", 64)[0]
    assert tolerance("fp16", 4096)[1] == 8 * tolerance("fp16", 64)[1]
    assert math.isclose(worst_case("bf16", 1), 2 * 2**-8 + 2**-16 + 2**-24)


def _forced(name: str, precision: str = "fp16"):
    """An example model (small) with every float32 contraction on tensor cores, whatever its
    size (the edges are the guards' to handle)."""
    lowered = lower(import_onnx(build_example(name, "small")))
    kernels = []
    for k in lowered.program.kernels:
        c = match_contraction(k)
        if c is not None and c.out.dtype == "float32":
            k = apply(k, (Tensorize(k.body.var, gpu_mma.mma_annotation(precision)),))
        kernels.append(k)
    return lowered, dataclasses.replace(lowered.program, kernels=tuple(kernels))


SLOW_REFERENCE = {"swiglu", "nasrnn"}  # > 5 s in the interpreter here


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_REFERENCE else n
     for n in example_names()],
)  # fmt: skip
def test_the_mma_plan_keeps_every_example_models_results(name):
    lowered, prog = _forced(name)
    mma = [k for k in prog.kernels if gpu_mma.mma_precision(k)]
    serial = tuple(gpu_mma.mma_reference(k) if k in mma else k for k in prog.kernels)
    rng = np.random.default_rng(1)
    feeds = {
        b.name: rng.standard_normal([2 if isinstance(d, str) else d for d in b.shape]).astype(
            b.dtype
        )
        for b in lowered.program.inputs
    } | lowered.weights
    want = interpret(lowered.program, feeds)
    got = interpret(dataclasses.replace(prog, kernels=serial), feeds)
    for b in lowered.program.outputs:
        np.testing.assert_allclose(got[b.name], want[b.name], rtol=1e-5, atol=1e-5)
    print(f"{name}: {len(mma)} contraction kernels through the mma plan")


def test_the_default_schedule_uses_tensor_cores_only_off_fp32_and_when_large():
    prog = lower(import_onnx(_gemm(128, 96, 64))).program
    small = lower(import_onnx(_gemm(16, 96, 64))).program
    (k,) = [k for k in prog.kernels if match_contraction(k)]
    (s,) = [k for k in small.kernels if match_contraction(k)]
    for p in MMA:
        assert gpu_schedule.schedule_kernel(k, precision=p) == (
            Tensorize(k.body.var, f"gpu_mma_{p}"),
        )
        assert gpu_schedule.schedule_kernel(s, precision=p) == (
            Tensorize(s.body.var, gpu_schedule.GPU_TILE),
        )
    assert gpu_schedule.schedule_kernel(k) == (Tensorize(k.body.var, gpu_schedule.GPU_TILE),)
    lau = gpu_schedule.launch(apply(k, gpu_schedule.schedule_kernel(k, precision="bf16")))
    assert lau.block == gpu_mma.THREADS and lau.grid.value == 2  # 128 / 64 × 64 / 64


def _mma_kernels(model, precision):
    prog = gpu_schedule.schedule_program(lower(import_onnx(model)).program, precision=precision)
    return [compile_kernel(k) for k in prog.kernels if gpu_mma.mma_precision(k)]


INSTRUCTION = {
    "fp16": ("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32", "cvt.rn.f16.f32", 16),
    "bf16": ("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32", "cvt.rn.bf16.f32", 16),
    "tf32": ("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32", "cvt.rna.tf32.f32", 32),
}


def _check_ptx(gk, precision: str, all_used: bool = True) -> None:
    """The instructions, ptxas's verdict and resources. ``all_used``: every mma tile's result
    reaches the output (else LLVM drops the dead ones: M = 4 never stores rows 16..31)."""
    mma, cvt, count = INSTRUCTION[precision]
    for arch in ARCHS:
        ptx = gk.ptx[arch]
        n = ptx.count(mma)  # 2 x 4 mma tiles per warp, per mma K in a step of 32
        assert n == count if all_used else 1 <= n <= count
        assert cvt in ptx and "bar.sync" in ptx and "ld.shared" in ptx and "st.shared" in ptx
        if ptxas_path() is not None:
            (r,) = ptxas(ptx, arch)
            check_launch(r, gk.launch.block)
            assert r.shared_bytes == gpu_mma.shared_bytes(precision)
            assert r.spill_stores == r.spill_loads == 0


@pytest.mark.parametrize("precision", MMA)
def test_gemm_4096_cubed_on_tensor_cores_assembles(precision):
    (gk,) = _mma_kernels(_gemm(4096, 4096, 4096), precision)
    assert gk.launch.block == 128 and gk.launch.grid.value == 64 * 64
    _check_ptx(gk, precision)


FAST_ASSEMBLY = {"squeezenet", "resnext"}  # convs, grouped convs: ~1 s each quiet, 7-8 s loaded


@needs_ptxas
@pytest.mark.parametrize(
    "name",
    [n if n in FAST_ASSEMBLY else pytest.param(n, marks=pytest.mark.slow)
     for n in example_names()],
)  # fmt: skip
def test_every_example_contraction_on_tensor_cores_assembles(name):
    _, prog = _forced(name, "fp16")
    mma = [k for k in prog.kernels if gpu_mma.mma_precision(k)]
    if not mma:
        pytest.skip(f"{name} has no float32 contraction")
    for k in mma:
        _check_ptx(compile_kernel(k), "fp16", all_used=False)


def test_gemm_with_bias_and_relu_fuses_its_epilogue_on_tensor_cores():
    (gk,) = _mma_kernels(_gemm(128, 64, 96, bias_relu=True), "fp16")
    _check_ptx(gk, "fp16")
    assert gk.ptx["sm_80"].count("max.NaN.f32") == 32  # the relu of each accumulator


def test_precision_is_refused_off_cuda_and_printed_on_cuda(tmp_path, capsys):
    src = tmp_path / "g.onnx"
    src.write_bytes(_gemm(128, 64, 96).SerializeToString())
    assert cli.main(["compile", str(src), "--precision", "fp16", "--no-optimize"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "computes in fp32 only" in err
    from eqsat.compiled import build
    from eqsat.errors import InputError

    with pytest.raises(InputError) as api:  # the API path says the same, from the same rule
        build(import_onnx(_gemm(128, 64, 96)), "llvm", precision="fp16")
    assert err.endswith(str(api.value))
    assert cli.main(["compile", str(src), "--precision", "fp8"]) == 2
    assert "--precision fp8: one of fp32, tf32, fp16, bf16" in capsys.readouterr().err
    out = tmp_path / "ptx"
    argv = ["compile", str(src), "--target", "cuda", "--precision", "bf16", "--emit", "asm"]
    assert cli.main([*argv, str(out), "--no-optimize"]) == 0
    text = capsys.readouterr().out
    rtol, atol = tolerance("bf16", 64)
    assert "precision bf16: 1 contraction kernels on tensor cores, K up to 64" in text
    assert f"rtol {rtol:.3g}, atol {atol:.3g} (not run: no GPU)" in text
    opts = pipeline.Options(target="cuda", precision="tf32", rtol=0.5)
    prog = gpu_schedule.schedule_program(
        lower(import_onnx(_gemm(128, 256, 96))).program, precision="tf32"
    )
    assert pipeline.gate_tolerance(opts, prog) == (0.5, tolerance("tf32", 256)[1])
