"""Latency measurement in onnxruntime, the way every eqsat figure is measured.

Consumes models (paths or ModelProtos) and feeds; produces seconds per run for each repetition
of each model. Models alternate every repetition (interleaved), so background load on a shared
machine hits all of them alike; each repetition runs enough inner runs to last >= 20 ms; idle
ORT threads do not spin. Used by the benchmarks and by the verification reports.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import onnx


def session(model: Path | str | onnx.ModelProto, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Two sessions alternate on 2 cores: a spinning idle thread pool of one steals the CPU from
    # the other (measured: identical graphs came out 0.74x apart at 2 threads with spinning).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])


def _inner(sess, feeds) -> int:
    t0 = time.perf_counter()
    sess.run(None, feeds)
    one = max(time.perf_counter() - t0, 1e-6)
    return max(1, int(0.02 / one))


def interleaved(models: list, feeds: dict, threads: int, reps: int) -> list[list[float]]:
    """Per model, the seconds per run of each repetition; models alternate every repetition."""
    sessions = [session(m, threads) for m in models]
    for s in sessions:  # warm-up
        for _ in range(3):
            s.run(None, feeds)
    inner = [_inner(s, feeds) for s in sessions]
    times: list[list[float]] = [[] for _ in sessions]
    for _ in range(reps):
        for k, s in enumerate(sessions):
            t0 = time.perf_counter()
            for _ in range(inner[k]):
                s.run(None, feeds)
            times[k].append((time.perf_counter() - t0) / inner[k])
    return times


def interleaved_calls(runners: dict, feeds: dict, reps: int) -> list[dict]:
    """Time each runner (a callable taking ``feeds``) ``reps`` times, interleaved, after one
    warm-up call each: a row per runner, :func:`spread` and ``spread`` ((median - min) / min),
    and against the first runner ``vs_first`` (:func:`speedup`). For ``eqsat bench`` and the
    whole-model check of ``eqsat tune``."""
    for run in runners.values():
        run(feeds)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(reps):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(feeds)
            times[name].append(time.perf_counter() - t0)
    rows = []
    for name, ts in times.items():
        s = spread(ts)  # min, median, upper quartile, max (ms)
        rows.append({"what": name, **s, "spread": (s["median_ms"] - s["min_ms"]) / s["min_ms"]})
    for r in rows[1:]:  # against the first runner, with the report's noise rule
        r["vs_first"] = speedup(rows[0], r)
    return rows


def spread(seconds: list[float]) -> dict:
    """One model's repetitions in milliseconds: the minimum (the figure eqsat quotes), the
    median, the upper quartile and the maximum, and how many there were."""
    ms = sorted(t * 1e3 for t in seconds)
    q3 = ms[min(len(ms) - 1, (3 * len(ms)) // 4)]
    return {
        "min_ms": ms[0],
        "median_ms": statistics.median(ms),
        "q3_ms": q3,
        "max_ms": ms[-1],
        "reps": len(ms),
    }


def speedup(reference: dict, candidate: dict) -> dict:
    """The reference's minimum over the candidate's (above 1: the candidate is faster), and
    whether that is *within noise*: each model's spread is its repetitions from the minimum to
    the upper quartile (interleaved, so background load hit both alike); when the two spreads
    overlap, the difference is smaller than the repetitions of either model differ among
    themselves, and no speedup (or slowdown) is claimed."""
    ratio = reference["min_ms"] / candidate["min_ms"]
    lo, hi = sorted((reference, candidate), key=lambda s: s["min_ms"])
    overlap = hi["min_ms"] <= lo["q3_ms"]
    return {"speedup": ratio, "within_noise": overlap, "spread": "min to upper quartile"}


def describe(reference: dict, candidate: dict) -> str:
    """The speedup in words, never without its noise: ``1.52x (reference 2.10-2.31 ms,
    candidate 1.38-1.45 ms, min to upper quartile of 10 interleaved repetitions)``, or
    ``within noise`` in place of the factor when the spreads overlap."""
    s = speedup(reference, candidate)
    head = "within noise" if s["within_noise"] else f"{s['speedup']:.2f}x"
    return (
        f"{head} (reference {reference['min_ms']:.3f}-{reference['q3_ms']:.3f} ms, candidate "
        f"{candidate['min_ms']:.3f}-{candidate['q3_ms']:.3f} ms: min to upper quartile of "
        f"{reference['reps']} interleaved repetitions)"
    )
