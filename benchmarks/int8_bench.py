"""int8 GEMM benchmark: eqsat's VNNI kernel (``vpdpbusd``) against onnxruntime, fp32 for scale.

    .venv/bin/python benchmarks/int8_bench.py [--reps 15] [--sizes 256,512,1024] [--compiled]

Per n (an n×n×n product, one thread everywhere), interleaved in one process, min and median of
``--reps`` repetitions, in GOPS (2·n³ multiply-adds per second, int8 or float alike):

    vnni raw        ``Int8Gemm.raw``: u8 A × packed s8 B -> int32 (the micro-kernel loop only)
    vnni MatMulInt  ``Int8Gemm(a, a_zero_point=3)``: MatMulInteger with zero points (B's 5):
                    the raw product plus the numpy compensation terms (row sums of A)
    ort MatMulInt   onnxruntime MatMulInteger, B and both zero points initializers
    ort QLinearMM   onnxruntime QLinearMatMul (u8 × s8 -> u8, requantized)
    eqsat fp32      eqsat's packed SGEMM (``gemm.Gemm``, B packed once)
    ort fp32        onnxruntime MatMul float32
    eqsat compiled  (``--compiled``) the MatMulInteger model through ``eqsat.pipeline.compile``
                    (``tensorize=igemm``: B packed once, A in place, the VNNI loops, the
                    epilogue over an int32 workspace; plain loops on a host without VNNI)

The host's VNNI target (``tensorize_targets.select``) is printed; without one the VNNI rows are
skipped. The machine is shared: ``/proc/loadavg`` is printed before and after.

Measured 2026-12-07 (Xeon with avx512_vnni and amx_int8, 1 thread, min of 15, loadavg 2.5-3.9),
GOPS at n = 256 / 512 / 1024:

    vnni raw         373 / 546 / 563     ort MatMulInt   421 / 1112 / 1147
    vnni MatMulInt   188 / 419 / 510     ort QLinearMM   429 /  903 /  914
    eqsat compiled   219 / 449 / 437     eqsat fp32      119 /  153 /  156  (ort fp32 140-159)

One 512-bit ``vpdpbusd`` is 64 multiply-adds; onnxruntime's 1.1 TOPS at 512-1024 is above what
that instruction gives one core here, which suggests its AMX kernels (not checked). The compiled
MatMulInteger was 2.6 GOPS at n = 256 as plain loops.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy is imported

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from gemm_bench import interleave  # noqa: E402 - the same round-robin timing as the fp32 bench
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from eqsat.backends.llvm.capabilities import Capabilities  # noqa: E402
from eqsat.backends.llvm.gemm import Gemm, GemmConfig  # noqa: E402
from eqsat.backends.llvm.tensorize_targets import select  # noqa: E402
from eqsat.backends.llvm.vnni import Int8Gemm  # noqa: E402
from eqsat.bench import ort_session  # noqa: E402


def _model(node, inputs, output, inits):
    g = helper.make_graph([node], "g", inputs, [output],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m




def models(a_shape, b, bf):
    u8 = lambda n: helper.make_tensor_value_info(n, TensorProto.UINT8, None)  # noqa: E731
    a_in = helper.make_tensor_value_info("a", TensorProto.UINT8, list(a_shape))
    mmi = _model(helper.make_node("MatMulInteger", ["a", "b", "az", "bz"], ["y"]), [a_in],
                 helper.make_tensor_value_info("y", TensorProto.INT32, None),
                 {"b": b, "az": np.uint8(3), "bz": np.int8(5)})
    qmm = _model(helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                                  ["y"]), [a_in], u8("y"),
                 {"as": np.float32(0.02), "az": np.uint8(3), "b": b, "bs": np.float32(0.01),
                  "bz": np.int8(5), "ys": np.float32(2.0), "yz": np.uint8(128)})
    f_in = helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape))
    mmf = _model(helper.make_node("MatMul", ["a", "b"], ["y"]), [f_in],
                 helper.make_tensor_value_info("y", TensorProto.FLOAT, None), {"b": bf})
    return mmi, qmm, mmf


def bench_size(n, rng, caps, target, fgemm, args) -> None:
    a = rng.integers(0, 256, (n, n)).astype(np.uint8)
    b = rng.integers(-128, 128, (n, n)).astype(np.int8)
    af, bf = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    mmi, qmm, mmf = models(a.shape, b, bf)
    s_mmi, s_qmm, s_mmf = ort_session(mmi, 1), ort_session(qmm, 1), ort_session(mmf, 1)
    want = s_mmi.run(None, {"a": a})[0]
    cands = {}
    if target is not None:
        g = Int8Gemm(b, np.int8(5), target=target, caps=caps)
        assert np.array_equal(g(a, np.uint8(3)), want), "VNNI result differs from onnxruntime"
        cands["vnni raw"] = lambda: g.raw(a)
        cands["vnni MatMulInt"] = lambda: g(a, np.uint8(3))
    cands["ort MatMulInt"] = lambda: s_mmi.run(None, {"a": a})
    cands["ort QLinearMM"] = lambda: s_qmm.run(None, {"a": a})
    pb = fgemm.pack_b(bf)
    cands["eqsat fp32"] = lambda: fgemm(af, pb)
    cands["ort fp32"] = lambda: s_mmf.run(None, {"a": af})
    if args.compiled:
        from eqsat.pipeline import Options, compile

        c = compile(mmi, Options(target="llvm", egraph=False, verify=False,
                                 threads=1)).compiled
        assert np.array_equal(c.run({"a": a})[0], want)
        cands["eqsat compiled"] = lambda: c.run({"a": a})
    res = interleave(cands, args.reps)
    ops = 2.0 * n ** 3
    print(f"n = {n}")
    for k, (lo, med) in res.items():
        print(f"  {k:15s} {ops / lo / 1e9:8.1f} GOPS (min {lo * 1e3:8.3f} ms, "
              f"median {med * 1e3:8.3f} ms)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--sizes", default="256,512,1024")
    ap.add_argument("--compiled", action="store_true")
    args = ap.parse_args()
    caps = Capabilities.host()
    target = select(caps, ("uint8", "int8"))
    print(f"loadavg {open('/proc/loadavg').read().strip()}")
    print(f"cpu {caps.cpu_name}, VNNI target: {target.name if target else 'none'}, "
          f"onnxruntime {ort.__version__}, 1 thread, min / median of {args.reps}")
    fgemm = Gemm(GemmConfig.for_caps(caps), caps=caps, threads=1, use_cache=False)
    rng = np.random.default_rng(0)
    for n in [int(s) for s in args.sizes.split(",")]:
        bench_size(n, rng, caps, target, fgemm, args)
    print(f"loadavg {open('/proc/loadavg').read().strip()}")


if __name__ == "__main__":
    main()
