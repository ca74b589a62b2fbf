"""Direct NCHW16c convolution (``tensorize=nchwc``) against the implicit GEMM and onnxruntime.

    python benchmarks/conv_direct_bench.py [--shapes 64x56x64,...] [--models squeezenet,vgg]
                                           [--reps 15] [--threads 1,2]

Each conv is a one-node model (Conv + bias + Relu, the form the models' convs take) compiled
twice by the LLVM backend — every conv kernel annotated ``tensorize=gemm`` (the implicit GEMM)
or ``tensorize=nchwc`` (:mod:`eqsat.backends.llvm.direct_conv`) — and run by onnxruntime;
the three are run round-robin in one process, per thread count, and the table prints GFLOP/s
(min over ``--reps`` rounds) and the ratios. ``--shapes`` are ``CxHWxK`` 3×3 pad-1 stride-1
convs; ``--models`` adds every distinct conv of those example models that the direct path
accepts (``conv_direct.match_direct_conv``). Prints /proc/loadavg: the machine is shared.

``--whole squeezenet,vgg`` instead times whole example models (no e-graph stage, symbolic dims
1, as ``compile_bench.py``): ``compiled.build`` with the default schedule (``direct``: the
convs ``conv_direct.prefer_direct`` picks run ``tensorize=nchwc``) against the same build with
those convs forced back to the implicit GEMM (``gemm``, through ``build``'s tuning hook), and
onnxruntime; ms, min of ``--reps``, interleaved in runs of 5 calls after a pause (as
``compile_bench.bench_model``, whose doc says why). ``rowmajor`` is the default build with every
temp row-major (``build(layouts=False)``: each direct conv transforms its input and output
itself), ``direct`` keeps the temps between direct convs blocked
(:mod:`eqsat.backends.llvm.layout`); ``row/direct`` > 1: the blocked layout is faster.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eqsat import pipeline  # noqa: E402
from eqsat.backends.llvm.runtime import compile as llvm_compile  # noqa: E402
from eqsat.bench import ort_session  # noqa: E402
from eqsat.egraph import onnx_io  # noqa: E402
from eqsat.lower.contraction import match_contraction  # noqa: E402
from eqsat.lower.conv_direct import match_direct_conv  # noqa: E402
from eqsat.lower.lower import lower  # noqa: E402
from eqsat.lower.schedule import Tensorize, apply  # noqa: E402

SHAPES = "64x56x64,128x28x128,256x14x256,512x7x512"


def conv_model(ic, hw, oc, k=3, stride=1, pad=1, dil=1) -> onnx.ModelProto:
    h, w = hw if isinstance(hw, tuple) else (hw, hw)
    rng = np.random.default_rng(0)
    wt = onnx.numpy_helper.from_array(
        (rng.standard_normal((oc, ic, k, k)) * 0.05).astype(np.float32), "w")
    bias = onnx.numpy_helper.from_array(rng.standard_normal(oc).astype(np.float32), "b")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k],
                              strides=[stride] * 2, pads=[pad] * 4, dilations=[dil] * 2),
             helper.make_node("Relu", ["c"], ["y"])]
    oh = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    ow = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    g = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                        [1, ic, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         [1, oc, oh, ow])], [wt, bias])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def model_convs(name: str) -> list[tuple]:
    """The distinct direct-conv shapes of an example model: (ic, (h, w), oc, k, stride, pad,
    dilation), square kernels and equal per-axis attributes only."""
    low = lower(onnx_io.import_onnx(pipeline.example_model(name)))
    out = []
    for k in low.program.kernels:
        c = match_contraction(k)
        d = None if c is None else match_direct_conv(c)
        if d is None or d.kh != d.kw or len(set(d.stride)) > 1 or len(set(d.pad)) > 1 \
                or len(set(d.dilation)) > 1:
            continue
        key = (d.ic, (d.h, d.wd), d.oc, d.kh, d.stride[0], d.pad[0], d.dilation[0])
        if key not in out:
            out.append(key)
    return out


def annotated(program, intrinsic: str):
    kernels = tuple(apply(k, (Tensorize(k.body.var, intrinsic),))
                    if match_contraction(k) is not None else k for k in program.kernels)
    return dataclasses.replace(program, kernels=kernels)


def bench(shape, reps: int, threads: list[int]) -> None:
    model = conv_model(*shape)
    low = lower(onnx_io.import_onnx(model))
    ic, hw, oc, k, s, p, dil = shape
    h, w = hw if isinstance(hw, tuple) else (hw, hw)
    x = np.random.default_rng(1).standard_normal((1, ic, h, w)).astype(np.float32)
    feeds = {"x": x}
    oh = (h + 2 * p - dil * (k - 1) - 1) // s + 1
    ow = (w + 2 * p - dil * (k - 1) - 1) // s + 1
    flop = 2.0 * oc * oh * ow * ic * k * k
    for t in threads:
        sess = ort_session(model, t)
        cands = {"ort": lambda s=sess: s.run(None, feeds)[0]}
        for tag in ("gemm", "nchwc"):
            m = llvm_compile(annotated(low.program, tag), threads=t, use_cache=False)
            full = {**low.weights, **feeds}
            cands[tag] = lambda m=m, f=full: m.run(f)
        want = cands["ort"]()
        for tag in ("gemm", "nchwc"):
            got = next(iter(cands[tag]().values()))
            np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
        times = {n: [] for n in cands}
        for _ in range(reps):
            for n, f in cands.items():
                t0 = time.perf_counter()
                f()
                times[n].append(time.perf_counter() - t0)
        g = {n: flop / min(v) / 1e9 for n, v in times.items()}
        name = f"{ic}x{h}x{w}->{oc} k{k} s{s} p{p} d{dil}"
        print(f"{name:>28} {t:>3} {g['ort']:8.1f} {g['gemm']:8.1f} {g['nchwc']:8.1f}"
              f" {g['nchwc'] / g['gemm']:11.2f} {g['nchwc'] / g['ort']:10.2f}", flush=True)


class _AllGemm:
    """A stand-in tuning log for ``compiled.build``: every conv the default would run direct
    gets ``Tensorize(root, "gemm")`` instead."""

    def choices(self, program, threads):
        from eqsat.lower.schedule_gemm import intrinsic

        return {k.name: (Tensorize(k.body.var, "gemm"),) for k in program.kernels
                if (c := match_contraction(k)) is not None and intrinsic(c) == "nchwc"}


def bench_whole(name: str, reps: int, threads: list[int]) -> None:
    from eqsat.compiled import build

    model = pipeline.example_model(name)
    dims = {d.dim_param for vi in model.graph.input for d in vi.type.tensor_type.shape.dim}
    fixed = pipeline._fix_dims(model, {d: 1 for d in dims if d})
    graph = onnx_io.import_onnx(fixed)
    rng = np.random.default_rng(0)
    init = {i.name for i in model.graph.initializer}
    feeds = {}
    for vi in fixed.graph.input:
        if vi.name not in init:
            shape = [d.dim_value or 1 for d in vi.type.tensor_type.shape.dim]
            feeds[vi.name] = rng.standard_normal(shape).astype(np.float32)
    ndirect = len(_AllGemm().choices(lower(graph).program, 1))
    for t in threads:
        sess = ort_session(model, t)
        cands = {"ort": lambda f, s=sess: s.run(None, f),
                 "gemm": build(graph, threads=t, use_cache=False, tuning=_AllGemm()).run,
                 "rowmajor": build(graph, threads=t, use_cache=False, layouts=False).run,
                 "direct": build(graph, threads=t, use_cache=False).run}
        for f in cands.values():
            f(feeds)
            f(feeds)
        times = {n: [] for n in cands}
        for _ in range(-(-reps // 5)):
            for n, f in cands.items():
                time.sleep(0.05)
                f(feeds)
                for _ in range(5):
                    t0 = time.perf_counter()
                    f(feeds)
                    times[n].append(time.perf_counter() - t0)
        ms = {n: min(v) * 1e3 for n, v in times.items()}
        print(f"{name:>12} {t:>3} {ndirect:>6} {ms['ort']:8.2f} {ms['gemm']:8.2f}"
              f" {ms['rowmajor']:8.2f} {ms['direct']:8.2f} {ms['gemm'] / ms['direct']:11.2f}"
              f" {ms['rowmajor'] / ms['direct']:11.2f} {ms['direct'] / ms['ort']:10.2f}",
              flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default=SHAPES)
    ap.add_argument("--models", default="")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--whole", default="")
    args = ap.parse_args()
    if args.whole:
        print("loadavg", Path("/proc/loadavg").read_text().strip())
        print(f"ms, min of {args.reps} interleaved (one process); direct convs per model")
        print(f"{'model':>12} {'thr':>3} {'direct':>6} {'ort':>8} {'gemm':>8} {'rowmajor':>8}"
              f" {'direct':>8} {'gemm/direct':>11} {'row/direct':>11} {'direct/ort':>10}")
        for name in args.whole.split(","):
            bench_whole(name, args.reps, [int(t) for t in args.threads.split(",")])
        print("loadavg", Path("/proc/loadavg").read_text().strip())
        return
    shapes = [(c, hw, k, 3, 1, 1, 1) for c, hw, k in
              (map(int, s.split("x")) for s in args.shapes.split(",") if s)]
    for name in filter(None, args.models.split(",")):
        shapes += [s for s in model_convs(name) if s not in shapes]
    print("loadavg", Path("/proc/loadavg").read_text().strip())
    print(f"GFLOP/s, min of {args.reps} interleaved rounds (one process)")
    print(f"{'conv':>28} {'thr':>3} {'ort':>8} {'gemm':>8} {'nchwc':>8} {'nchwc/gemm':>11}"
          f" {'nchwc/ort':>10}")
    for shape in shapes:
        bench(shape, args.reps, [int(t) for t in args.threads.split(",")])
    print("loadavg", Path("/proc/loadavg").read_text().strip())


if __name__ == "__main__":
    main()
