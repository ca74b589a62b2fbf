"""Compiled models against onnxruntime by kernel class: plain vs default-scheduled latency,
per-kernel-class time, compile time (benchmarks/compile_bench.py has the headline table).

    python benchmarks/kernel_classes_bench.py [--models bert,vgg] [--size default] [--reps 15]
                                              [--top N] [--busy CALLS] [--in-order]

Sections (one script; add rows to a section rather than a new script):

1. **Latency** per example model (``eqsat.pipeline.example_model``): onnxruntime at 1 and 2
   intra-op threads, the compiled model unscheduled (``plain``, what ``lower`` emits) and with
   the default heuristic schedules (``sched``, :mod:`eqsat.lower.default_schedule`) at 1 and 2
   threads (``sched`` tensorizes contractions first, as ``eqsat.compiled.build`` does). All
   candidates interleaved round by round in one process; min (and median) of
   ``--reps`` rounds, in ms.
2. **Per kernel class**: each kernel of the compiled model run alone (its native function,
   called through ctypes on pre-bound buffers), min of ``--reps``, summed by the class
   ``default_schedule.classify`` gives it; beside it onnxruntime's own per-node times (its
   profiler, min per node over the runs) split into contraction ops (Conv, MatMul, Gemm and
   their fused forms) and the rest. The ``rest`` columns are the ones this scheduler answers for.
3. **Compile time**: ``pipeline.compile`` cold (empty object cache) and cached, per model.
4. **Thread busy** (``--busy CALLS``): each ``sched-2t`` kernel called CALLS times in a row:
   wall µs per call (p0 / p50 / p99) and, per thread, µs on a CPU and µs runnable but waiting
   for one (``/proc/self/task/*/schedstat``), to tell a serial part or imbalance (the worker's
   ``run`` far below the caller's, no ``wait``) from a worker that had no CPU (``wait``).
   Measured (issue 17, SqueezeNet, while another process kept one core ~90 % busy, loadavg
   1.3-1.6): the pool's worker waited 300-700 µs per call of a 250-600 µs conv, p99 8 ms
   against p50 0.3 ms — a worker preempted inside a task it took makes the caller wait a
   scheduler slice; 2-thread figures taken with another process on a core are not the
   kernels' scaling.
5. **In program order** (``--in-order``): each ``sched`` kernel at 1 and 2 threads, every
   round calling the kernels in program order so that each reads what the ones before it
   wrote, where they wrote it (min µs of ``--reps`` rounds, and the speed-up), beside
   onnxruntime's nodes from its profiler at 1 and 2 intra-op threads. Section 2 runs a
   kernel alone, its data staying in the caches of the threads that last touched it, which
   hides how its split between the threads fits that of its neighbours; this table found
   the GEMM tasks' alternating row bands (``tensorize.py``, "Task order").

Timing (CODEGEN_NOTES): the VM is shared and noisy; compare ratios from one run, not numbers
across runs. Symbolic dims are bound to 1 (``--batch``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eqsat import pipeline  # noqa: E402
from eqsat.backends.llvm import runtime  # noqa: E402
from eqsat.bench import ort_session  # noqa: E402
from eqsat.compiled import schedule_llvm  # noqa: E402
from eqsat.lower.default_schedule import classify  # noqa: E402
from eqsat.lower.lower import lower  # noqa: E402
from eqsat.verify import numeric  # noqa: E402

MODELS = ("bert", "squeezenet", "resnext", "inception", "vgg", "nasrnn", "swiglu")
CONTRACTION_OPS = ("Conv", "MatMul", "Gemm", "FusedConv", "FusedMatMul", "FusedGemm", "QLinear")


def interleaved(cands: dict, reps: int) -> dict[str, tuple[float, float]]:
    """``{name: (min ms, median ms)}``; each round runs every candidate once, in turn."""
    times: dict[str, list[float]] = {k: [] for k in cands}
    for f in cands.values():
        f()  # warm up: page faults, lazy init
    for _ in range(reps):
        for k, f in cands.items():
            t = time.perf_counter()
            f()
            times[k].append((time.perf_counter() - t) * 1e3)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


# ---------------------------------------------------------------------------------- section 1
def build_variants(graph, feeds_by_graph, threads=(1, 2), plain=True):
    """The compiled program plain and scheduled, at each thread count, bound to feeds."""
    lowered = lower(graph)
    env = {}
    feeds = dict(lowered.weights)
    types = graph.types
    for v in graph.inputs:
        a = feeds_by_graph[v]
        feeds[lowered.names[v]] = a
        for d, n in zip(types[v].shape, a.shape, strict=True):
            if isinstance(d, str):
                env[d] = n
    from eqsat.lower.indexing import size_values

    env.update(size_values(lowered.products, env))
    out = {}
    for label, prog in (("plain", lowered.program), ("sched", None))[0 if plain else 1 :]:
        for t in threads:
            # sched: what compiled.build does (tensorize, blocked layouts between direct
            # convs, then the default schedules)
            p = prog if prog is not None else schedule_llvm(lowered.program, t)
            cp = runtime.compile(p, threads=t)
            arrays, dims = cp.bind(feeds, env)
            out[f"{label}-{t}t"] = (cp, arrays, dims)
    return out


def kernel_times(cp, arrays, dims, reps: int) -> dict[str, float]:
    """Min ms of each kernel of a compiled program, run alone on the bound arrays."""
    return {k: v[0] for k, v in interleaved(cp.kernel_calls(arrays, dims), reps).items()}


def _schedstat() -> dict[str, tuple[int, int]]:
    """``{thread id: (ns on a CPU, ns runnable but waiting for one)}`` of this process."""
    out = {}
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/schedstat") as f:
                run, wait = f.read().split()[:2]
        except OSError:  # the thread has exited
            continue
        out[t] = (int(run), int(wait))
    return out


def thread_busy(cp, arrays, dims, calls: int) -> list[tuple]:
    """Section 4: per kernel, ``calls`` back-to-back calls: wall µs per call (p0, p50, p99)
    and, of the two busiest threads, µs per call on a CPU and runnable-but-waiting (the
    kernel's ``/proc/self/task/*/schedstat`` deltas). A spinning thread counts as on a CPU, so
    ``run`` is an upper bound of the work; ``wait`` is time a thread (the pool's worker) had
    work or a spin to do and no CPU — another process on its core, or the caller on it."""
    rows = []
    for name, f in cp.kernel_calls(arrays, dims).items():
        for _ in range(max(3, calls // 10)):
            f()
        s0, ts = _schedstat(), []
        for _ in range(calls):
            t = time.perf_counter_ns()
            f()
            ts.append((time.perf_counter_ns() - t) / 1e3)
        s1 = _schedstat()
        per = sorted(((s1[t][0] - s0.get(t, (0, 0))[0]) / calls / 1e3,
                      (s1[t][1] - s0.get(t, (0, 0))[1]) / calls / 1e3) for t in s1)[::-1][:2]
        ts.sort()
        rows.append((name, ts[0], ts[len(ts) // 2], ts[min(len(ts) - 1, len(ts) * 99 // 100)],
                     per))
    return rows


def ort_node_mins(model, feeds, reps: int, threads: int = 1) -> dict[str, tuple[str, float]]:
    """onnxruntime's profiler at ``threads`` intra-op threads: ``{node: (op, min ms)}`` over
    ``reps`` runs (the first, warm-up run left out), in execution order."""
    with tempfile.TemporaryDirectory() as d:
        s = ort_session(model, threads, profile=os.path.join(d, "ort"))
        for _ in range(reps + 1):
            s.run(None, feeds)
        events = json.loads(Path(s.end_profiling()).read_text())
    per_node: dict[str, list[float]] = {}
    op_of: dict[str, str] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node.setdefault(e["name"], []).append(e["dur"] / 1e3)
            op_of[e["name"]] = e.get("args", {}).get("op_name", "")
    return {n: (op_of[n], min(v[1:] or v)) for n, v in per_node.items()}


def ort_node_times(model, feeds, reps: int) -> dict[str, float]:
    """onnxruntime's per-node mins at 1 thread (:func:`ort_node_mins`), summed by category."""
    out = {"contraction": 0.0, "rest": 0.0}
    for op, ms in ort_node_mins(model, feeds, reps).values():
        out["contraction" if op.startswith(CONTRACTION_OPS) else "rest"] += ms
    return out


def kernels_in_order(variants: dict, labels: tuple[str, ...], reps: int) -> dict:
    """Section 5: ``{label: {kernel: min ms}}``, each round calling every kernel of each
    variant in program order, so that a kernel reads what the kernels before it wrote, where
    they wrote it: in the caches of the core (or cores) that ran them. Section 2 calls each
    kernel alone, over and over, so its input and output stay in the caches of the threads
    that last touched them; at 2 threads that hid how a kernel's split between the threads
    fits the split of the kernels around it (tensorize.py, "Task order")."""
    calls = {lb: variants[lb][0].kernel_calls(*variants[lb][1:]) for lb in labels}
    times = {lb: {k: [] for k in calls[lb]} for lb in labels}
    for _ in range(reps + 1):  # the first round warms up
        for lb in labels:
            for k, f in calls[lb].items():
                t = time.perf_counter()
                f()
                times[lb][k].append((time.perf_counter() - t) * 1e3)
    return {lb: {k: min(v[1:]) for k, v in t.items()} for lb, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--size", default="default")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--no-compile-time", action="store_true")
    ap.add_argument("--no-plain", action="store_true", help="skip the unscheduled variants")
    ap.add_argument("--top", type=int, default=0, help="list the N slowest sched-1t kernels")
    ap.add_argument("--busy", type=int, default=0, metavar="CALLS",
                    help="section 4: per-thread busy / run-queue wait of each sched-2t kernel")
    ap.add_argument("--in-order", action="store_true",
                    help="section 5: each kernel at 1 and 2 threads called in program order, "
                         "beside onnxruntime's per-node profile at 1 and 2 threads")
    args = ap.parse_args()
    rows1, rows2, rows3, top, busy, order = [], [], [], [], [], []
    for name in args.models.split(","):
        model = pipeline.example_model(name, size=args.size)
        opts = pipeline.Options(target="llvm", threads=1, verify=False)
        if not args.no_compile_time:
            with tempfile.TemporaryDirectory() as d:
                os.environ["EQSAT_CACHE_DIR"] = d
                t = time.perf_counter()
                res = pipeline.compile(model, opts)
                cold = time.perf_counter() - t
                t = time.perf_counter()
                pipeline.compile(model, opts)
                warm = time.perf_counter() - t
                del os.environ["EQSAT_CACHE_DIR"]
            rows3.append((name, cold, warm))
        else:
            res = pipeline.compile(model, opts)
        specs = numeric.input_specs(model)
        dims = {d: args.batch for s in specs for d in s.shape if isinstance(d, str)}
        feeds = numeric.random_feeds(specs, 0, dims)
        variants = build_variants(res.graph, feeds, plain=not args.no_plain)
        s1, s2 = ort_session(model, 1), ort_session(model, 2)
        cands = {
            "ort-1t": lambda s1=s1, feeds=feeds: s1.run(None, feeds),
            "ort-2t": lambda s2=s2, feeds=feeds: s2.run(None, feeds),
        }
        for k, (cp, arrays, d) in variants.items():
            cands[k] = lambda cp=cp, arrays=arrays, d=d: cp.call(arrays, d)
        rows1.append((name, interleaved(cands, args.reps)))
        ort = ort_node_times(model, feeds, args.reps)
        by_class = {}
        for label in ("plain-1t", "sched-1t", "sched-2t"):
            if label not in variants:
                continue
            cp, arrays, d = variants[label]
            kt = kernel_times(cp, arrays, d, args.reps)
            if label == "sched-1t" and args.top:
                top.append((name, sorted(kt.items(), key=lambda kv: -kv[1])[: args.top], cp))
            acc: dict[str, float] = {}
            for k in cp.program.kernels:
                c = classify(k)
                acc[c] = acc.get(c, 0.0) + kt[k.name]
            by_class[label] = acc
        rows2.append((name, ort, by_class))
        if args.busy:
            busy.append((name, thread_busy(*variants["sched-2t"], args.busy)))
        if args.in_order:
            kinds = {k.name: classify(k) for k in variants["sched-1t"][0].program.kernels}
            ours = kernels_in_order(variants, ("sched-1t", "sched-2t"), args.reps)
            theirs = [ort_node_mins(model, feeds, args.reps, t) for t in (1, 2)]
            order.append((name, kinds, ours, theirs))
        print(f"[{name} done]", file=sys.stderr, flush=True)
    report(rows1, rows2, rows3)
    for name, kts, cp in top:
        kinds = {k.name: classify(k) for k in cp.program.kernels}
        print(f"\n## {name}: the {len(kts)} slowest kernels (sched-1t), ms")
        for kname, ms in kts:
            print(f"| {kname} | {kinds[kname]} | {ms:.3f} |")
    for name, rows in busy:
        with open("/proc/loadavg") as f:
            load = f.read().split()[:3]
        print(f"\n## 4. {name} sched-2t, each kernel {args.busy} calls in a row, µs per call "
              f"(loadavg {' '.join(load)})")
        print("| kernel | p0 | p50 | p99 | thread A run / wait | thread B run / wait |")
        print("|---|---|---|---|---|---|")
        for kname, p0, p50, p99, per in rows:
            cells = [f"{r:.0f} / {w:.0f}" for r, w in per] + ["-"] * (2 - len(per))
            print(f"| {kname} | {p0:.0f} | {p50:.0f} | {p99:.0f} | " + " | ".join(cells) + " |")
    for name, kinds, ours, theirs in order:
        report_in_order(name, kinds, ours, theirs)


def report_in_order(name, kinds, ours, theirs) -> None:
    """Section 5's two tables: eqsat's kernels and onnxruntime's nodes, each in execution
    order, µs at 1 and 2 threads and the speed-up, with their sums."""
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    one, two = ours["sched-1t"], ours["sched-2t"]
    print(f"\n## 5. {name}: kernels called in program order, min µs (loadavg {load})")
    print("| kernel | class | 1t | 2t | 1t/2t |\n|---|---|---|---|---|")
    for k in one:
        print(f"| {k} | {kinds[k]} | {1e3 * one[k]:.0f} | {1e3 * two[k]:.0f} "
              f"| {one[k] / two[k]:.2f} |")  # fmt: skip
    s1, s2 = sum(one.values()), sum(two.values())
    print(f"| sum | | {1e3 * s1:.0f} | {1e3 * s2:.0f} | {s1 / s2:.2f} |")
    print(f"\n## 5. {name}: onnxruntime's nodes (its profiler), min µs")
    print("| node | op | 1t | 2t | 1t/2t |\n|---|---|---|---|---|")
    o1, o2 = theirs
    for n, (op, ms) in o1.items():
        ms2 = o2.get(n, (op, float("nan")))[1]
        print(f"| {n.removesuffix('_kernel_time')} | {op} | {1e3 * ms:.0f} | {1e3 * ms2:.0f} "
              f"| {ms / ms2:.2f} |")  # fmt: skip
    s1, s2 = (sum(ms for _, ms in o.values()) for o in theirs)
    print(f"| sum | | {1e3 * s1:.0f} | {1e3 * s2:.0f} | {s1 / s2:.2f} |")


def report(rows1, rows2, rows3) -> None:
    print("\n## 1. Latency, ms (min / median of the rounds)")
    cols = list(rows1[0][1]) if rows1 else []
    print("| model | " + " | ".join(cols) + " | plain-1t/ort-1t | sched-1t/ort-1t |")
    print("|---" * (len(cols) + 3) + "|")
    for name, r in rows1:
        cells = [f"{r[c][0]:.3f} / {r[c][1]:.3f}" for c in cols]
        ratios = [
            f"{r[c][0] / r['ort-1t'][0]:.2f}x" if c in r else "-" for c in ("plain-1t", "sched-1t")
        ]
        print(f"| {name} | " + " | ".join(cells + ratios) + " |")
    print("\n## 2. Per kernel class, ms (sum of per-kernel mins, each kernel run alone)")
    classes = sorted({c for _, _, b in rows2 for acc in b.values() for c in acc})
    print("| model | variant | " + " | ".join(classes) + " | non-contraction | ort rest-1t |")
    print("|---" * (len(classes) + 4) + "|")
    for name, ort, by_class in rows2:
        for label, acc in by_class.items():
            rest = sum(v for c, v in acc.items() if c != "contraction")
            cells = [f"{acc.get(c, 0.0):.3f}" for c in classes]
            print(f"| {name} | {label} | " + " | ".join(cells)
                  + f" | {rest:.3f} | {ort['rest']:.3f} |")  # fmt: skip
        print(f"| {name} | ort contraction-1t | {ort['contraction']:.3f} |")
    if rows3:
        print("\n## 3. pipeline.compile, s (verify off; e-graph stages included)")
        print("| model | cold | cached |\n|---|---|---|")
        for name, cold, warm in rows3:
            print(f"| {name} | {cold:.2f} | {warm:.2f} |")


if __name__ == "__main__":
    main()
