"""Extraction benchmark: greedy vs ILP, roofline vs measured costs, on the example models' e-graphs.

    .venv/bin/python benchmarks/extract_bench.py [--examples a,b] [--reps 15] [--save-egraphs DIR]

For every example (default size) the graph is saturated once with the default families plus
``merge-conv`` (so that the e-graph holds every merge), then extracted several ways from that
one e-graph:

    greedy/roofline, ilp/roofline (from greedy's plan), auto/roofline (the default: greedy, the
    local search, the ILP from its plan), greedy/measured, ilp/measured, auto/measured,
    ilp/ast-size, and ilp/merged (MatMul and Conv priced at 100, everything else at 1: a plan
    with every merge)

Printed per plan: the extractor's objective and time, the ILP's status and gap, and the plan's
onnxruntime latency (1 intra-op thread, ORT_ENABLE_ALL, min over interleaved repetitions, with
the original model among them). Identical plans are timed once. Then, per cost model, the
Spearman rank correlation between the cost it predicts for each distinct plan (the original
included) and the measured latency, and the share of plan pairs each model orders like the
measurement (pairs within 2 % of each other are ties): which model orders real plans better.
``--save-egraphs DIR`` writes each saturated e-graph as egraph-serialize JSON (the format of
extraction-gym, with ``root_eclasses``; the node ``cost`` fields are egglog's static costs, not
eqsat's); ``benchmarks/egraphs/`` holds those of the examples.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from eqsat import pipeline
from eqsat.egraph import passes
from eqsat.egraph.encode import encode
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.egraph.saturate import saturate
from eqsat.egraph.serialized import serialize
from eqsat.examples import build_example, example_names
from eqsat.extract.cost import AstSize, OpWeights
from eqsat.extract.extraction import extract
from eqsat.extract.measured import MeasuredCostModel
from eqsat.extract.roofline import RooflineCostModel
from eqsat.rules import schedule
from eqsat.verify.numeric import compare_models, input_specs, random_feeds
from eqsat.verify.timing import interleaved

FAMILIES = (*schedule.DEFAULT_FAMILIES, "merge-conv")


def spearman(a: list[float], b: list[float]) -> float:
    """Rank correlation (average ranks for ties); nan for fewer than 3 points or no spread."""
    if len(a) < 3:
        return float("nan")

    def ranks(x):
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        xs = np.asarray(x)
        for v in set(x):  # ties share their mean rank
            r[xs == v] = r[xs == v].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def concordant_pairs(pred: list[float], real: list[float], tol: float = 0.02) -> tuple[int, int]:
    """(pairs the prediction orders like the measurement, pairs compared): pairs whose measured
    latencies are within ``tol`` of each other are a tie on this machine and are skipped."""
    good = total = 0
    for i in range(len(real)):
        for j in range(i + 1, len(real)):
            if abs(real[i] - real[j]) <= tol * min(real[i], real[j]):
                continue
            total += 1
            good += (pred[i] - pred[j]) * (real[i] - real[j]) > 0
    return good, total


def _key(g) -> tuple:
    return tuple((n.op, n.inputs, n.outputs) for n in g.nodes)


def bench_model(name: str, work: Path, reps: int, save_dir: Path | None, models: dict) -> dict:
    m = build_example(name, "default")
    g = passes.eliminate_dead_code(passes.fold_constants(import_onnx(m)))
    rules = schedule.select(FAMILIES)
    t0 = time.perf_counter()
    sat = saturate(encode(g), schedule.rulesets(rules), rewrites=schedule.rewrites(rules))
    sat_s = time.perf_counter() - t0
    eg = serialize(sat.egraph)
    if save_dir is not None:
        save_dir.mkdir(parents=True, exist_ok=True)
        data = json.loads(sat.egraph._serialize().to_json())
        data["root_eclasses"] = [eg.lets[r] for r in sat.roots]
        (save_dir / f"{name}.json").write_text(json.dumps(data))
    plans = {"original": g}
    rows = []
    merged = OpWeights({"MatMul": 100.0, "Conv": 100.0, "Gemm": 100.0})
    ways = [
        ("greedy", "roofline"),
        ("ilp", "roofline"),
        ("auto", "roofline"),
        ("greedy", "measured"),
        ("ilp", "measured"),
        ("auto", "measured"),
        ("ilp", "ast-size"),
        ("ilp", "merged"),
    ]
    for extractor, model_name in ways:
        model = {**models, "ast-size": AstSize(), "merged": merged}[model_name]
        ex = extract(sat, model, serialized=eg, extractor=extractor, time_limit=10.0)
        plan = passes.fold_constants(ex.graph, bounded=False)
        plan = passes.eliminate_dead_code(passes.slices_to_split(plan))
        label = f"{extractor}/{model_name}"
        plans[label] = plan
        rows.append(
            {
                "plan": label,
                "objective": ex.cost,
                "time_s": ex.times.get("choose", ex.time),
                "ilp": ex.ilp,
                "used": ex.extractor,
                "nodes": len(plan.nodes),
            }
        )
    # time every distinct plan, interleaved with the original
    distinct: dict[tuple, str] = {}
    for label, plan in plans.items():
        distinct.setdefault(_key(plan), label)
    paths, labels = [], []
    for label in distinct.values():
        p = work / f"{name}-{label.replace('/', '-')}.onnx"
        model_proto = export_onnx(plans[label])
        onnx.save_model(model_proto, str(p))
        if label != "original":
            assert compare_models(m, model_proto, seeds=(0,)).ok, f"{name} {label} differs"
        paths.append(p)
        labels.append(label)
    feeds = random_feeds(input_specs(m), seed=0)
    times = interleaved(paths, feeds, 1, reps)
    latency = {lab: min(t) * 1e3 for lab, t in zip(labels, times, strict=True)}
    for r in rows:
        r["ms"] = latency[distinct[_key(plans[r["plan"]])]]
    # predicted cost of every distinct plan under each model vs its latency
    corr, pairs = {}, {}
    measured = [latency[lab] for lab in labels]
    for mname, model in models.items():
        pred = [pipeline.extract_cost(plans[lab], model) for lab in labels]
        corr[mname] = spearman(pred, measured)
        pairs[mname] = concordant_pairs(pred, measured)
    return {
        "model": name,
        "enodes": len(eg.nodes),
        "saturate_s": sat_s,
        "original_ms": latency["original"],
        "rows": rows,
        "distinct": len(labels),
        "spearman": corr,
        "pairs": pairs,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", default=",".join(example_names()))
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--save-egraphs", type=Path, help="write each saturated e-graph as JSON here")
    args = p.parse_args(argv)
    models = {"roofline": RooflineCostModel(), "measured": MeasuredCostModel()}
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [n for n in args.examples.split(",") if n]:
            results.append(bench_model(name, Path(tmp), args.reps, args.save_egraphs, models))
            print(f"done {name}", file=sys.stderr)
    models["measured"].save()
    print(
        "onnxruntime latency: 1 intra-op thread, min of interleaved repetitions; "
        "x = original / plan (> 1: faster)"
    )
    head = (
        f"{'model':11s} {'plan':17s} {'nodes':>5s} {'objective':>10s} {'extract s':>9s} "
        f"{'ILP status (gap)':>22s} {'ms':>8s} {'x':>6s}"
    )
    print(head)
    print("-" * len(head))
    for res in results:
        print(
            f"{res['model']:11s} {'original':17s} {'':5s} {'':10s} {'':9s} {'':22s} "
            f"{res['original_ms']:8.3f} {1.0:6.3f}"
        )
        for r in res["rows"]:
            ilp = r["ilp"]
            gap = ilp.get("gap")
            status = f"{ilp.get('status', '-')} ({100 * gap:.1f}%)" if gap is not None else "-"
            print(
                f"{'':11s} {r['plan']:17s} {r['nodes']:5d} {r['objective']:10.1f} "
                f"{r['time_s']:9.3f} {status:>22s} {r['ms']:8.3f} "
                f"{res['original_ms'] / r['ms']:6.3f}"
            )
    print()
    print("Spearman rank correlation, predicted cost vs measured latency, over distinct plans:")
    for mname in models:
        vals = [r["spearman"][mname] for r in results]
        shown = "  ".join(
            f"{r['model']} {v:+.2f}" if v == v else f"{r['model']} n/a"
            for r, v in zip(results, vals, strict=True)
        )
        finite = [v for v in vals if v == v]
        mean = f"{np.mean(finite):+.2f}" if finite else "n/a"
        good = sum(r["pairs"][mname][0] for r in results)
        total = sum(r["pairs"][mname][1] for r in results)
        print(f"  {mname:9s} mean {mean}   {shown}")
        print(f"  {'':9s} pairs of plans ordered right (all models): {good}/{total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
