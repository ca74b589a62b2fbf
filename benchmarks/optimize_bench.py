"""Benchmark ``eqsat optimize``: nodes before/after, optimize time per phase, and onnxruntime
latency of the original vs the optimized model.

    .venv/bin/python benchmarks/optimize_bench.py [MODEL.onnx ...] [--examples a,b] [--reps 15]
        [--rules FAMILIES] [--against FAMILIES]

For every bundled example (default size) and every .onnx file given: both models run in ORT
with ORT_ENABLE_ALL on the same inputs; repetitions are interleaved (original, optimized,
original, ...) so that background load hits both alike; each repetition times enough inner runs
to last >= 20 ms; idle ORT threads do not spin (they would steal the other session's cores).
Reported: the minimum (the stable figure on a shared machine) and the median
per run, and the ratio original ÷ optimized (> 1 means eqsat made it faster), for 1 intra-op
thread and for 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnx
import onnxruntime as ort

from eqsat import pipeline
from eqsat.examples import build_example, example_names
from eqsat.verify.numeric import input_specs, random_feeds
from eqsat.verify.timing import interleaved


def bench_one(
    label: str,
    source,
    workdir: Path,
    reps: int,
    options: pipeline.Options,
    against: pipeline.Options | None = None,
) -> dict:
    """One model's row; with ``against``, the model is also optimized under those options and
    its latency interleaved with the other two (``row["against"]``: its figures)."""
    src = workdir / f"{label}.onnx"
    if isinstance(source, onnx.ModelProto):
        onnx.save_model(source, str(src))
    else:
        src = Path(source)
    out = workdir / f"{label}.opt.onnx"
    t0 = time.perf_counter()
    result = pipeline.optimize(src, options, output=out)
    total = time.perf_counter() - t0
    models = [src, out]
    if against is not None:
        other = workdir / f"{label}.against.onnx"
        t0 = time.perf_counter()
        alt = pipeline.optimize(src, against, output=other)
        alt_s = time.perf_counter() - t0
        models.append(other)
    feeds = random_feeds(input_specs(src), seed=0)
    row = {
        "model": label,
        "nodes": (len(result.source.graph.node), len(result.model.graph.node)),
        "optimize_s": total,
        "phases": result.times,
        "extractor": (result.egraph or {}).get("extraction", {}).get("extractor", "-"),
        "error": (result.egraph or {}).get("error"),
    }
    if against is not None:
        row["against"] = {"nodes": len(alt.model.graph.node), "optimize_s": alt_s}
    for threads in (1, 2):
        a, b, *c = interleaved(models, feeds, threads, reps)
        if c:
            row["against"][f"t{threads}"] = {
                "opt_min_ms": min(c[0]) * 1e3,
                "speedup_min": min(a) / min(c[0]),
                "speedup_med": statistics.median(a) / statistics.median(c[0]),
            }
        row[f"t{threads}"] = {
            "orig_min_ms": min(a) * 1e3,
            "opt_min_ms": min(b) * 1e3,
            "orig_med_ms": statistics.median(a) * 1e3,
            "opt_med_ms": statistics.median(b) * 1e3,
            "speedup_min": min(a) / min(b),
            "speedup_med": statistics.median(a) / statistics.median(b),
        }
    return row


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'model':22s} {'nodes':>11s} {'opt s':>6s} "
        f"{'orig ms':>8s} {'opt ms':>8s} {'x(min,1t)':>9s} {'x(med,1t)':>9s} {'x(min,2t)':>9s}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        t1, t2 = r["t1"], r["t2"]
        nodes = f"{r['nodes'][0]}->{r['nodes'][1]}"
        print(
            f"{r['model']:22s} {nodes:>11s} {r['optimize_s']:6.2f} "
            f"{t1['orig_min_ms']:8.3f} {t1['opt_min_ms']:8.3f} {t1['speedup_min']:9.3f} "
            f"{t1['speedup_med']:9.3f} {t2['speedup_min']:9.3f}"
        )
    print()
    alts = [r for r in rows if "against" in r]
    if alts:
        head = (
            f"{'model':22s} {'nodes':>11s} {'opt s':>6s} {'opt ms':>8s} "
            f"{'x(min,1t)':>9s} {'x(med,1t)':>9s} {'x(min,2t)':>9s}"
        )
        print("the same models optimized with --against's rules (same runs, interleaved):")
        print(head)
        print("-" * len(head))
        for r in alts:
            a = r["against"]
            t1, t2 = a["t1"], a["t2"]
            nodes = f"{r['nodes'][0]}->{a['nodes']}"
            print(
                f"{r['model']:22s} {nodes:>11s} {a['optimize_s']:6.2f} {t1['opt_min_ms']:8.3f} "
                f"{t1['speedup_min']:9.3f} {t1['speedup_med']:9.3f} {t2['speedup_min']:9.3f}"
            )
        print()
    for r in rows:
        phases = "  ".join(f"{k} {v:.3f}" for k, v in r["phases"].items())
        print(f"{r['model']:22s} extractor {r['extractor']}; phases (s): {phases}")
        if r["error"]:
            print(f"{'':22s} e-graph stages failed, folded graph used: {r['error']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="*", help=".onnx files to benchmark besides the examples")
    p.add_argument("--examples", default=",".join(example_names()), help="comma list or ''")
    p.add_argument("--size", default="default", choices=["default", "small"])
    p.add_argument("--reps", type=int, default=15, help="interleaved repetitions (>= 15)")
    p.add_argument("--rules", help="rule families, comma-separated (default: the schedule's)")
    p.add_argument(
        "--against",
        help="rule families to compare with, comma-separated (e.g. generated): each model is "
        "optimized both ways and the three models are timed interleaved in one run",
    )
    p.add_argument("--extractor", default="auto", choices=["auto", "greedy", "ilp"])
    p.add_argument("--cost-model", default="roofline", choices=["roofline", "measured"])
    args = p.parse_args(argv)
    options = pipeline.Options(extractor=args.extractor, cost_model=args.cost_model)
    if args.rules is not None:
        options.rules = tuple(f for f in args.rules.split(",") if f)
    against = None
    if args.against is not None:
        against = dataclasses.replace(options, rules=tuple(f for f in args.against.split(",") if f))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name in [n for n in args.examples.split(",") if n]:
            rows.append(
                bench_one(name, build_example(name, args.size), work, args.reps, options, against)
            )
            print(f"done {name}", file=sys.stderr)
        for m in args.models:
            rows.append(bench_one(Path(m).stem, Path(m), work, args.reps, options, against))
            print(f"done {m}", file=sys.stderr)
    print(
        f"onnxruntime {ort.__version__}, ORT_ENABLE_ALL, {args.reps} interleaved repetitions; "
        "x = original / optimized latency (> 1: faster); rules: "
        + ",".join(options.rules)
        + f"; cost model: {pipeline.cost_model_for(options)}"
        + (f"; against: {','.join(against.rules)}" if against else "")
    )
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
