"""The fuzzer: random graphs (opaque ops, symbolic dims, multi-output nodes, shared subterms)
through ``optimize`` and through the LLVM compiler, each checked against onnxruntime.

``make fuzz`` runs it with ``EQSAT_FUZZ_EXAMPLES=2000``; the default test run draws a few. Per
graph:

- ``optimize`` (the e-graph stage in process: the child process only makes its time limit
  hard) must pass its own gate without falling back from the e-graph stage, and the optimized
  model must agree with the original in onnxruntime at other sizes of the symbolic dims than
  the gate's (a rewrite must not hold only at the gate's size);
- the original model is compiled (``pipeline.compile``, no e-graph, one thread, with its gate)
  and so is the optimized one (the e-graph's output; two threads), each checked against
  onnxruntime on the original at those sizes; a graph that keeps an op the compiler does not claim
  (:data:`eqsat.lower.compute.CLAIMED`: the opaque ops) must be refused with an InputError
  (exit 2) that says so, never crash — one whose unclaimed ops are all dead compiles.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from hypothesis import HealthCheck, given, note, settings

from eqsat import pipeline
from eqsat.compiled import build
from eqsat.egraph.onnx_io import import_onnx
from eqsat.errors import InputError
from eqsat.lower.compute import CLAIMED
from eqsat.verify.numeric import input_specs, random_feeds
from tests.property.graphs import graphs

EXAMPLES = int(os.environ.get("EQSAT_FUZZ_EXAMPLES", "4"))
SIZES = ({"N": 1, "W": 3}, {"N": 3, "W": 1}, {"N": 5, "W": 4})  # the gate binds every dim to 2


def _session(m: onnx.ModelProto):
    """One thread: ORT's default pool spins a thread per core, which on a loaded machine costs
    more than these tiny graphs take to run."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def _check(cases, run, what: str) -> None:
    """``run(feeds)`` against the reference outputs of each (sizes, feeds, outputs) case."""
    for dims, feeds, want in cases:
        for i, (a, b) in enumerate(zip(run(feeds), want, strict=True)):
            np.testing.assert_allclose(
                np.asarray(a), b, rtol=1e-4, atol=1e-5, err_msg=f"{what}: output {i} at {dims}"
            )


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(graphs(opaque=True, max_nodes=12, symbolic_width=True))
def test_fuzz_optimize_and_compile(m):
    note(onnx.helper.printable_graph(m.graph))
    reference = _session(m)
    cases = []
    for k, dims in enumerate(SIZES):
        feeds = random_feeds(input_specs(m), 10 + k, dims)
        cases.append((dims, feeds, reference.run(None, feeds)))

    result = pipeline.optimize(m, pipeline.Options(seeds=(0,), isolate=False))
    assert result.verdict.ok
    assert "error" not in (result.egraph or {}), result.egraph
    optimized = result.model
    note(onnx.helper.printable_graph(optimized.graph))
    after = _session(optimized)
    _check(cases, lambda feeds: after.run(None, feeds), "optimized")

    options = pipeline.Options(target="llvm", egraph=False, threads=1, cache=False, seeds=(0,))
    try:
        compiled = pipeline.compile(m, options)  # its gate: against onnxruntime
    except InputError as e:  # only for an op the compiler does not claim, still there
        left = {n.op_type for n in m.graph.node} - CLAIMED
        assert left and "no compute definition" in str(e), e
    else:
        assert compiled.verdict.ok
        _check(cases, compiled.compiled.run, "compiled")
    if {n.op_type for n in optimized.graph.node} <= CLAIMED:
        two = build(import_onnx(optimized), "llvm", threads=2)
        _check(cases, two.run, "optimized, compiled, 2 threads")
