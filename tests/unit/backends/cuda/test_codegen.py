"""The CUDA backend without a GPU: GPU schedules keep results (the numpy interpreter runs bound
loops serially), kernels become PTX with the NVVM pieces CODEGEN_NOTES lists, ptxas accepts it,
and the CLI writes PTX but no artifact."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from onnx import TensorProto, helper

from eqsat import cli
from eqsat.backends.cuda import NO_GPU
from eqsat.backends.cuda.codegen import compile_program, emit_kernel
from eqsat.backends.cuda.toolchain import (
    ARCHS,
    PtxasReport,
    check_launch,
    libdevice_path,
    ptxas,
    ptxas_path,
)
from eqsat.egraph.onnx_io import import_onnx
from eqsat.errors import InputError
from eqsat.examples import build_example, example_names
from eqsat.lower import gpu_schedule
from eqsat.lower.interpret import interpret
from eqsat.lower.loops import (
    Accumulate,
    Buffer,
    BufferKind,
    Const,
    Kernel,
    LoopIRError,
    LoopKind,
    LoopProgram,
    Store,
    Var,
    call,
    loop,
    seq,
)
from eqsat.lower.lower import lower
from eqsat.lower.schedule import Bind, Split, Tensorize, apply, from_json, to_json
from eqsat.lower.transform import ScheduleError

needs_ptxas = pytest.mark.skipif(ptxas_path() is None, reason="ptxas not found (nvidia-cuda-nvcc)")
needs_libdevice = pytest.mark.skipif(libdevice_path() is None, reason="libdevice.10.bc not found")

X = Buffer("x", ("n", 64), "float32", BufferKind.INPUT)
Y = Buffer("y", ("n", 64), "float32", BufferKind.OUTPUT)
S = Buffer("s", ("n",), "float32", BufferKind.OUTPUT)


def _ew() -> Kernel:
    i, j = Var("i"), Var("j")
    body = loop("i", Var("n"), loop("j", 64, Store(Y, (i, j), call("exp", X[i, j]) + 1.0)))
    return Kernel("ew", (X, Y), body)


def _rowsum(r: int = 64) -> Kernel:
    i, j = Var("i"), Var("j")
    body = loop(
        "i",
        Var("n"),
        seq(Store(S, (i,), Const(0.0, "float32")), loop("j", r, Accumulate(S, (i,), X[i, j]))),
    )
    return Kernel("rowsum", (X, S), body)


def test_bind_is_a_replayable_record_and_refuses_races():
    sched = (Split("i", 128), Bind("i.o", "block"), Bind("i.i", "thread"))
    assert from_json(to_json(sched)) == sched
    k = apply(_ew(), sched)
    assert gpu_schedule.launch(k).block == 128
    with pytest.raises(ScheduleError, match="race on the reduction into s"):
        apply(_rowsum(), (Bind("j", "block"),))
    with pytest.raises(ScheduleError, match="constant in 1..1024"):
        apply(_ew(), (Bind("i", "thread"),))  # symbolic extent
    with pytest.raises(ScheduleError, match="not block or thread"):
        apply(_ew(), (Bind("i", "warp"),))


def test_launch_accepts_only_the_outermost_bound_nest():
    with pytest.raises(LoopIRError, match="not the outermost block loop"):
        gpu_schedule.launch(apply(_ew(), (Bind("j", "thread"),)))
    lau = gpu_schedule.launch(_ew())  # unscheduled: one thread runs everything
    assert (lau.block, lau.block_var, lau.thread_var) == (1, None, None)


def _short_rowsum() -> Kernel:  # rows under a warp long: one thread a row
    return _rowsum(16)


@pytest.mark.parametrize("make", [_ew, _short_rowsum])
def test_default_gpu_schedule_binds_blocks_and_threads_and_keeps_results(make):
    k = make()
    sched = gpu_schedule.schedule_kernel(k)
    assert [p.name for p in sched][-2:] == ["bind", "bind"]
    scheduled = apply(k, sched)
    lau = gpu_schedule.launch(scheduled)
    assert lau.block == 256 and lau.block_var and lau.thread_var
    x = np.random.default_rng(0).standard_normal((300, 64)).astype(np.float32)
    params = {b.name: b for b in k.params}
    out = next(b for b in k.params if b.kind is BufferKind.OUTPUT)
    prog = LoopProgram("p", tuple(params.values()), (k,))
    want = interpret(prog, {"x": x})[out.name]
    got = interpret(LoopProgram("p", prog.buffers, (scheduled,)), {"x": x})[out.name]
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("name", example_names())
def test_gpu_schedules_keep_every_example_models_results(name):
    """Bound loops run serially in the interpreter; a tiled contraction runs as its serial
    reference (the same TilePlan the backend emits, phase by phase)."""
    lowered = lower(import_onnx(build_example(name, "small")))
    prog = gpu_schedule.schedule_program(lowered.program)
    assert all(gpu_schedule.is_gpu_scheduled(k) for k in prog.kernels)
    serial = tuple(_serial(k) for k in prog.kernels)
    rng = np.random.default_rng(1)
    feeds = {
        b.name: rng.standard_normal([2 if isinstance(d, str) else d for d in b.shape]).astype(
            b.dtype
        )
        for b in lowered.program.inputs
    }
    feeds |= lowered.weights
    want = interpret(lowered.program, feeds)
    got = interpret(dataclasses.replace(prog, kernels=serial), feeds)
    for b in lowered.program.outputs:
        np.testing.assert_allclose(got[b.name], want[b.name], rtol=1e-5, atol=1e-5)


def _serial(k: Kernel) -> Kernel:
    """A GPU-scheduled kernel as the interpreter can run it: tiles and warp rows as their
    serial references (the same plan the backend emits), bound loops as they are (serial)."""
    lau = gpu_schedule.launch(k)
    if lau.tile is not None:
        return gpu_schedule.tile_reference(k)
    return gpu_schedule.warp_reference(k) if lau.rows else k


def _onnx(nodes, x_shape, y_shape) -> bytes:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


ROWS = {  # models whose kernels are warp rows: rows of 64 (lane 0 stores, per-lane locals)
    "softmax": ([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [3, 5, 64], [3, 5, 64]),
    "reducemean": (
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[-1], keepdims=0)],
        [3, 5, 64],
        [3, 5],
    ),
    "max-then-exp": (
        [
            helper.make_node("ReduceMax", ["x"], ["m"], axes=[-1], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["d"]),
            helper.make_node("Exp", ["d"], ["y"]),
        ],
        [4, 96],
        [4, 96],
    ),
}


@pytest.mark.parametrize("name", ROWS)
def test_warp_rows_keep_results_and_assemble(name):
    lowered = lower(import_onnx(_onnx(*ROWS[name])))
    prog = gpu_schedule.schedule_program(lowered.program)
    rows = [k for k in prog.kernels if gpu_schedule.launch(k).rows]
    assert rows, [k.name for k in prog.kernels]
    x = np.random.default_rng(2).standard_normal(ROWS[name][1]).astype(np.float32)
    feeds = {lowered.program.inputs[0].name: x} | lowered.weights
    want = interpret(lowered.program, feeds)
    got = interpret(dataclasses.replace(prog, kernels=tuple(map(_serial, prog.kernels))), feeds)
    out = lowered.program.outputs[0].name
    np.testing.assert_allclose(got[out], want[out], rtol=1e-5, atol=1e-6)
    for gk in compile_program(prog):
        if gk.launch.rows:
            assert gk.launch.block == 32
            for arch in ARCHS:
                assert "shfl.sync.bfly" in gk.ptx[arch] and "bar.warp.sync" in gk.ptx[arch]
                if ptxas_path() is not None:
                    (r,) = ptxas(gk.ptx[arch], arch)
                    check_launch(r, 32)


def _matmul(m: int) -> Kernel:
    w = Buffer("w", (64, 64), "float32", BufferKind.WEIGHT)
    v = Buffer("v", (m, 64), "float32", BufferKind.INPUT)
    o = Buffer("o", (m, 64), "float32", BufferKind.OUTPUT)
    i, j = Var("i"), Var("j")
    body = loop("i", m, loop("j", 64, seq(
        Store(o, (i, j), Const(0.0, "float32")),
        loop("r", 64, Accumulate(o, (i, j), v[i, Var("r")] * w[Var("r"), j])),
    )))  # fmt: skip
    return Kernel(f"mm{m}", (v, w, o), body)


def test_small_contractions_are_not_tiled():
    """A matrix-vector product fills 1/16 of a tile: a warp an output (K = 64) instead."""
    gemv = gpu_schedule.schedule_kernel(_matmul(1))
    assert gemv == (Tensorize("i", gpu_schedule.WARP_ROWS),)
    assert gpu_schedule.schedule_kernel(_matmul(64)) == (Tensorize("i", gpu_schedule.GPU_TILE),)


@needs_libdevice
def test_a_kernel_reads_the_nvvm_indices_and_links_only_the_libdevice_it_uses():
    k = apply(_ew(), gpu_schedule.schedule_kernel(_ew()))
    module, _ = emit_kernel(k)
    text = str(module)
    assert 'define ptx_kernel void @"eqsat_ew"(ptr addrspace(1) noalias' in text
    assert "llvm.nvvm.read.ptx.sreg.ctaid.x" in text and "llvm.nvvm.read.ptx.sreg.tid.x" in text
    assert 'declare float @"__nv_expf"' in text
    (gk,) = compile_program(LoopProgram("p", (X, Y), (k,)))
    for arch in ARCHS:
        ptx = gk.ptx[arch]
        assert f".target {arch}" in ptx and ".visible .entry eqsat_ew(" in ptx
        assert "%ctaid.x" in ptx and "%tid.x" in ptx and "ld.global.nc" in ptx
        assert "__nv_" not in ptx  # inlined and internalized: nothing of libdevice is left
        assert len(ptx) < 20_000, len(ptx)  # the whole of libdevice would be ~700 KB


@needs_ptxas
def test_ptxas_report_is_parsed_and_checked_against_the_launch():
    k = apply(_rowsum(), gpu_schedule.schedule_kernel(_rowsum()))
    (gk,) = compile_program(LoopProgram("p", (X, S), (k,)))
    for arch in ARCHS:
        (r,) = ptxas(gk.ptx[arch], arch)
        assert (r.kernel, r.arch) == ("eqsat_rowsum", arch)
        assert 1 <= r.registers <= 255 and r.spill_stores == 0
        check_launch(r, gk.launch.block)
    big = PtxasReport("k", "sm_80", 255, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="255 registers × 512 threads > 65536"):
        check_launch(big, 512)
    with pytest.raises(ValueError, match="shared memory"):
        check_launch(PtxasReport("k", "sm_90", 32, 60_000, 0, 0, 0), 128)
    with pytest.raises(RuntimeError, match="ptxas -arch=sm_80 failed"):
        ptxas(".version 7.0\n.target sm_80\nnot ptx", "sm_80")


@needs_libdevice
def test_compile_target_cuda_emits_ptx_and_no_artifact(tmp_path, capsys):
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Relu", ["t"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])],
    )
    src = tmp_path / "m.onnx"
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    src.write_bytes(model.SerializeToString())
    out = tmp_path / "ptx"
    code = cli.main(["compile", str(src), "--target", "cuda", "--emit", "asm", str(out)])
    text = capsys.readouterr().out.strip()
    assert code == 0
    files = sorted(p.name for p in out.iterdir())
    assert files and all(f.endswith((".sm_80.ptx", ".sm_90.ptx")) for f in files)
    assert len(files) % len(ARCHS) == 0
    first, last = text.splitlines()
    assert first.startswith("precision fp32: float32 throughout (no tensor cores)")
    assert last == f"wrote {len(files)} files into {out}; no artifact written: {NO_GPU}"
    assert not list(tmp_path.glob("*.eqsat"))


def test_an_oversized_local_buffer_is_refused():
    from eqsat.backends.cuda.codegen import LOCAL_LIMIT
    from eqsat.lower.loops import Allocate

    big = Buffer("t", (LOCAL_LIMIT,), "float32", BufferKind.LOCAL)
    i = Var("i")
    body = Allocate(big, loop("i", 4, Store(Y, (i, 0), Const(0.0, "float32"))))
    assert body.body.kind is LoopKind.SERIAL
    with pytest.raises(LoopIRError, match="per GPU thread"):
        emit_kernel(Kernel("big", (Y,), body))


def test_the_runtime_evaluates_grids_and_refuses_without_a_driver():
    import ctypes.util

    from eqsat.backends.cuda import runtime

    k = apply(_ew(), gpu_schedule.schedule_kernel(_ew()))
    grid = gpu_schedule.launch(k).grid  # (n * 64 + 255) // 256
    assert [runtime.grid_size(grid, {"n": n}) for n in (1, 4, 5)] == [1, 1, 2]
    if ctypes.util.find_library("cuda") is not None:
        pytest.skip("a CUDA driver is installed: the refusal is not reachable")
    runtime.device.cache_clear()
    with pytest.raises(InputError, match="cannot run CUDA code here: no CUDA driver"):
        runtime.device()
