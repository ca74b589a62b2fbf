"""The GPU half of issue 20, as one script: run eqsat's CUDA code on a GPU, check it against
onnxruntime and time it against onnxruntime's CUDA provider. NOT RUN YET: written on a machine
without a GPU (and eqsat's CUDA runtime, :mod:`eqsat.backends.cuda.runtime`, is untested).
``benchmarks/gpu_check.sh`` calls it; run it on a machine with an NVIDIA GPU (sm_80 or newer),
its driver, and onnxruntime-gpu.

    .venv/bin/python benchmarks/gpu_check.py [--models bert,vgg] [--size default] [--reps 20]

For each example model (symbolic dims fixed to 1): ``pipeline.compile(target="cuda")`` without
the e-graph stage (the backend is what is checked), random inputs, eqsat's outputs on the GPU
against onnxruntime's on the CPU (max abs error, pass/fail at ``--atol``/``--rtol``), then the
median of ``--reps`` interleaved runs of each: eqsat (host arrays in and out, as ``run``
takes them) and onnxruntime with ``CUDAExecutionProvider`` (host arrays too). Exit 1 when an
output differs. One line per model.

Then (``--gemm N``, default 4096; 0 skips it) the tensor-core kernel (``--precision fp16``,
:mod:`eqsat.lower.gpu_mma`) on an N³ MatMul: its result against float64 within the gate's
fp16 tolerance (:func:`eqsat.verify.precision.tolerance`), then the kernel alone (inputs
already on the device, ``--reps`` launches, synchronized) against cuBLAS through torch (else
cupy, imported lazily; skipped with a message when neither is installed) with fp16 operands and
float32 accumulation. eqsat's kernel reads the model's float32 operands and rounds them itself
(twice cuBLAS's bytes in): the issue's target is eqsat >= 0.8x cuBLAS's throughput.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np


def main() -> int:
    import onnxruntime as ort

    from eqsat import pipeline
    from eqsat.examples import example_names
    from eqsat.verify.numeric import InputSpec, random_feeds

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(example_names()))
    ap.add_argument("--size", default="default")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--atol", type=float, default=1e-3)
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--gemm", type=int, default=4096, help="N of the fp16 N^3 GEMM; 0: none")
    args = ap.parse_args()
    failed = 0 if args.gemm == 0 else gemm_check(args.gemm, args.reps)
    cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    if not cuda_ep:
        print("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu): no timing")
    for name in args.models.split(","):
        model = pipeline.example_model(name, args.size)
        dims = {d.dim_param: 1 for i in model.graph.input
                for d in i.type.tensor_type.shape.dim if d.dim_param}  # fmt: skip
        opts = pipeline.Options(target="cuda", egraph=False, shapes=tuple(dims.items()))
        t0 = time.perf_counter()
        compiled = pipeline.compile(model, opts).compiled
        t_compile = time.perf_counter() - t0
        feeds = random_feeds(
            [InputSpec(p.name, p.dtype, p.shape) for p in compiled.inputs], 0, dims
        )
        ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = ref.run(None, feeds)
        got = compiled.run(feeds)
        errs = [
            float(np.max(np.abs(g - w))) if g.size else 0.0 for g, w in zip(got, want, strict=True)
        ]
        ok = all(
            np.allclose(g, w, atol=args.atol, rtol=args.rtol)
            for g, w in zip(got, want, strict=True)
        )
        failed += not ok
        verdict = "ok" if ok else "FAIL"
        line = f"{name}: compile {t_compile:.1f} s, max abs error {max(errs):.3g} {verdict}"
        if cuda_ep:
            gpu = ort.InferenceSession(
                model.SerializeToString(), providers=["CUDAExecutionProvider"]
            )
            gpu.run(None, feeds), compiled.run(feeds)  # warm up both
            ours, theirs = [], []
            for _ in range(args.reps):
                t = time.perf_counter()
                compiled.run(feeds)
                ours.append(time.perf_counter() - t)
                t = time.perf_counter()
                gpu.run(None, feeds)
                theirs.append(time.perf_counter() - t)
            a, b = statistics.median(ours) * 1e3, statistics.median(theirs) * 1e3
            line += f"; eqsat {a:.3f} ms, onnxruntime CUDA {b:.3f} ms (ratio {a / b:.2f})"
        print(line, flush=True)
    return 1 if failed else 0


def _matmul_model(n: int):
    from onnx import TensorProto, helper

    info = [helper.make_tensor_value_info(v, TensorProto.FLOAT, [n, n]) for v in "aby"]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "g", info[:2],
                              info[2:])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def gemm_check(n: int, reps: int) -> int:
    """The fp16 tensor-core GEMM: correct within the gate's tolerance, then timed against
    cuBLAS (module doc). 1 when the result is wrong."""
    import ctypes

    from eqsat import pipeline
    from eqsat.backends.cuda.runtime import Session
    from eqsat.verify.precision import tolerance

    opts = pipeline.Options(target="cuda", egraph=False, precision="fp16", verify=False)
    t0 = time.perf_counter()
    compiled = pipeline.compile(_matmul_model(n), opts).compiled
    t_compile = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in "ab")
    (got,) = compiled.run({"a": a, "b": b})
    exact = a.astype(np.float64) @ b
    rtol, atol = tolerance("fp16", n)
    ok = bool(np.allclose(got, exact, rtol=rtol, atol=atol))
    err = float(np.max(np.abs(got - exact)))
    print(f"gemm fp16 {n}^3: compile {t_compile:.1f} s, max abs error {err:.3g} (gate: rtol "
          f"{rtol:.3g}, atol {atol:.3g}) {'ok' if ok else 'FAIL'}", flush=True)  # fmt: skip
    session = Session(compiled.executable, {})
    dev, lib = session.dev, session.dev.lib
    ports = {p.name: p.buffer for p in compiled.inputs + compiled.outputs}
    ptrs = {ports["a"]: dev.alloc(a.nbytes), ports["b"]: dev.alloc(b.nbytes)}
    ptrs[ports["y"]] = dev.alloc(a.nbytes)
    dev.upload(ptrs[ports["a"]], a)
    dev.upload(ptrs[ports["b"]], b)
    stream = ctypes.c_void_p()  # the default stream
    session.launch(ptrs, {}, stream)
    dev.check(lib.cuCtxSynchronize(), "synchronize")
    t = time.perf_counter()
    for _ in range(reps):
        session.launch(ptrs, {}, stream)
    dev.check(lib.cuCtxSynchronize(), "synchronize")
    ours = (time.perf_counter() - t) / reps
    flops = 2.0 * n**3
    line = f"gemm fp16 {n}^3: eqsat {ours * 1e3:.3f} ms ({flops / ours / 1e12:.1f} TFLOP/s)"
    theirs = _cublas_seconds(a, b, reps)
    if theirs is None:
        line += "; cuBLAS not timed (neither torch nor cupy is installed)"
    else:
        line += (f", cuBLAS {theirs * 1e3:.3f} ms ({flops / theirs / 1e12:.1f} TFLOP/s): eqsat at "
                 f"{theirs / ours:.2f}x cuBLAS (target >= 0.8x)")  # fmt: skip
    print(line, flush=True)
    for p in ptrs.values():
        dev.free(p)
    return 0 if ok else 1


def _cublas_seconds(a: np.ndarray, b: np.ndarray, reps: int) -> float | None:
    """Seconds per fp16 GEMM through cuBLAS (torch, else cupy), float32 accumulation."""
    try:
        import torch

        torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
        x, y = (torch.from_numpy(v).to("cuda", torch.float16) for v in (a, b))
        run, sync = (lambda: torch.matmul(x, y)), torch.cuda.synchronize
    except ImportError:
        try:
            import cupy
        except ImportError:
            return None
        x, y = (cupy.asarray(v, dtype=cupy.float16) for v in (a, b))
        run, sync = (lambda: cupy.matmul(x, y)), cupy.cuda.Device().synchronize
    run()
    sync()
    t = time.perf_counter()
    for _ in range(reps):
        run()
    sync()
    return (time.perf_counter() - t) / reps


if __name__ == "__main__":
    sys.exit(main())
