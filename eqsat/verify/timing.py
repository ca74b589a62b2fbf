"""Latency measurement in onnxruntime, the way every eqsat figure is measured.

Consumes models (paths or ModelProtos) and feeds; produces seconds per run for each repetition
of each model. Models alternate every repetition (interleaved), so background load on a shared
machine hits all of them alike; each repetition runs enough inner runs to last >= 20 ms; idle
ORT threads do not spin. Used by the benchmarks and by the verification reports.
"""

from __future__ import annotations

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
