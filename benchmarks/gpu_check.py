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
    args = ap.parse_args()
    cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    if not cuda_ep:
        print("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu): no timing")
    failed = 0
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


if __name__ == "__main__":
    sys.exit(main())
