"""What a user runs to decide (``eqsat bench``): onnxruntime on the original model, onnxruntime on
the optimized ONNX model, and the compiled model, timed in one process.

Consumes a model (path or ModelProto); produces rows of min / median / spread latencies. The
three runners are interleaved (A, B, C, A, B, C, ...) on the same inputs, so that a noisy,
shared machine slows all of them alike; the minimum is the figure to compare (it was stable to
a few percent under load on 2 cores, DEVELOPERS.md), the spread ((median - min) / min) says how
noisy the run was, and a ratio to the first runner is marked *within noise* when the two spreads
(min to upper quartile) overlap (:func:`eqsat.verify.timing.speedup`). Both onnxruntime
sessions and the compiled model use ``threads`` threads.
"""

from __future__ import annotations

import os

import onnx

from eqsat.verify.numeric import input_specs, random_feeds
from eqsat.verify.timing import interleaved_calls


def ort_session(model: onnx.ModelProto, threads: int, profile: str | None = None):
    """The onnxruntime session every comparison here and in ``benchmarks/`` times: CPU
    provider, ``threads`` intra-op threads, one inter-op thread, warnings off; ``profile``: a
    file prefix for onnxruntime's per-node profiler."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
    so.log_severity_level = 3
    if profile:
        so.enable_profiling, so.profile_file_prefix = True, profile
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _ort(model: onnx.ModelProto, threads: int):
    sess = ort_session(model, threads)
    return lambda feeds: sess.run(None, feeds)


def compare(model: onnx.ModelProto | str | os.PathLike, threads: int = 1, reps: int = 15):
    """The table of ``eqsat bench``: onnxruntime (original), onnxruntime (optimized by eqsat),
    eqsat compiled; each optimized and compiled model went through its verification gate."""
    from eqsat import pipeline

    optimized = pipeline.optimize(model, pipeline.Options())
    source = optimized.source  # self-contained: the sessions below are built from bytes
    compiled = pipeline.compile(
        optimized.model, pipeline.Options(target="llvm", egraph=False, threads=threads)
    ).compiled
    dims = {d: 1 for s in input_specs(source) for d in s.shape if isinstance(d, str)}
    feeds = random_feeds(input_specs(source), 0, dims)
    runners = {
        "onnxruntime, original": _ort(source, threads),
        "onnxruntime, optimized by eqsat": _ort(optimized.model, threads),
        "eqsat compiled (llvm)": compiled.run,
    }
    return interleaved_calls(runners, feeds, reps)
