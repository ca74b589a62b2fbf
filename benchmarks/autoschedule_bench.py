"""Tuned against default schedules on single kernels: the auto-scheduler's search
(:mod:`eqsat.autoschedule`) on real layer shapes, then the default and the best logged
schedule re-timed interleaved in one process.

    python benchmarks/autoschedule_bench.py [--kernels conv56,conv14,bert_qkv] [--trials 32]
        [--threads 1] [--reps 30]

Per kernel: the tuning time and trials (a fresh log in a temporary folder), then default and
tuned run round by round (A, B, A, B, ...: ``kernel_classes_bench.interleaved``), min and
median ms and GFLOP/s. Timing (CODEGEN_NOTES): the VM is shared and noisy; compare the ratio
within one run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_classes_bench import interleaved  # noqa: E402

from eqsat.autoschedule import log as tlog  # noqa: E402
from eqsat.autoschedule.measure import compiled_call  # noqa: E402
from eqsat.autoschedule.search import Tuner  # noqa: E402
from eqsat.egraph.onnx_io import import_onnx  # noqa: E402
from eqsat.lower.lower import lower  # noqa: E402
from eqsat.lower.schedule import from_json  # noqa: E402

# name: (input shape, weight shape, op); ResNet-50's 3×3 convs at 56×56×64 and 14×14×256, BERT
# base's QKV projection and FFN up-projection at 128 tokens
KERNELS = {
    "conv56": ((1, 64, 56, 56), (64, 64, 3, 3), "Conv"),
    "conv14": ((1, 256, 14, 14), (256, 256, 3, 3), "Conv"),
    "bert_qkv": ((128, 768), (768, 768), "MatMul"),
    "bert_ffn": ((128, 768), (768, 3072), "MatMul"),
}


def model(name: str):
    xs, ws, op = KERNELS[name]
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal(ws).astype(np.float32),
                                "w")  # fmt: skip
    attrs = {"pads": [1, 1, 1, 1]} if op == "Conv" else {}
    out = (xs[0], ws[0], xs[2], xs[3]) if op == "Conv" else (xs[0], ws[1])
    nodes = [helper.make_node(op, ["x", "w"], ["y0"], **attrs),
             helper.make_node("Relu", ["y0"], ["y"])]  # fmt: skip
    g = helper.make_graph(
        nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xs))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out))], [w],
    )  # fmt: skip
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kernels", default="conv56,conv14,bert_qkv")
    ap.add_argument("--trials", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    print(f"{args.threads} thread(s), {args.trials} trials a kernel, min/median of {args.reps} "
          "interleaved rounds")  # fmt: skip
    print(f"{'kernel':10} {'tune s':>7} {'trials':>6} {'fail':>4} {'default ms':>16} "
          f"{'tuned ms':>16} {'GFLOP/s def':>11} {'tuned':>6} {'ratio':>6}  best knobs")
    for name in args.kernels.split(","):
        program = lower(import_onnx(model(name))).program
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "t.jsonl"
            t0 = time.perf_counter()
            report = Tuner(program, args.threads, path).run(args.trials)
            tune_s = time.perf_counter() - t0
            recs = tlog.read(path)
        (task,) = [t for t in report.tasks if t.space.kind == "gemm"]
        best = min((r for r in recs if r.ok and r.sig == task.sig), key=lambda r: r.seconds)
        calls = {"default": compiled_call(task.kernel, None, args.threads),
                 "tuned": compiled_call(task.kernel, from_json(best.schedule), args.threads)}
        times = interleaved(calls, args.reps)
        gf = {k: task.space.work / (v[0] * 1e-3) / 1e9 for k, v in times.items()}
        fmt = "{0:7.3f} / {1:7.3f}"
        knobs = "default" if best.default else ",".join(f"{k}={v}" for k, v in best.knobs.items())
        print(f"{name:10} {tune_s:7.1f} {report.trials:6d} {sum(not r.ok for r in recs):4d} "
              f"{fmt.format(*times['default']):>16} {fmt.format(*times['tuned']):>16} "
              f"{gf['default']:11.1f} {gf['tuned']:6.1f} "
              f"{times['default'][0] / times['tuned'][0]:6.2f}  {knobs}", flush=True)


if __name__ == "__main__":
    main()
