"""Hypothesis-generated small ONNX graphs: import → export is identical in onnxruntime, the
interpreter agrees with onnxruntime, and folding + dead-code removal preserve semantics."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from eqsat import pipeline
from eqsat.egraph import passes
from eqsat.egraph.interpret import interpret
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.verify.numeric import compare_models, input_specs, random_feeds
from tests.helpers import run_ort
from tests.property.graphs import graphs


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_round_trip_interpret_and_fold(m):
    g = import_onnx(m)
    g.check()
    assert compare_models(m, export_onnx(g), rtol=0, atol=0, seeds=(0,)).ok
    feeds = random_feeds(input_specs(m), 0)
    ours = list(interpret(g, feeds).values())
    for a, b in zip(ours, run_ort(m, feeds), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    folded = passes.fold_constants(passes.eliminate_dead_code(g))
    folded.check()
    assert compare_models(m, export_onnx(folded), seeds=(0, 1)).ok


@pytest.mark.slow  # 15 s: 30 graphs through the whole pipeline; the fast form is below
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_optimize_end_to_end_preserves_semantics(m):
    _optimize_preserves_semantics(m)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_optimize_end_to_end_preserves_semantics_on_a_few_graphs(m):
    _optimize_preserves_semantics(m)


def _optimize_preserves_semantics(m):
    result = pipeline.optimize(m, pipeline.Options(seeds=(0, 1)))
    assert result.verdict.ok
    result.graph.check()
    assert len(result.model.graph.node) <= len(m.graph.node)


def _compiles_like_onnxruntime(m) -> None:
    """The compiled model (llvm, no e-graph) against onnxruntime: the pipeline's gate raises
    VerificationError when they differ; a symbolic batch is bound to two sizes."""
    from eqsat.compiled import build
    from eqsat.egraph.onnx_io import import_onnx as imp

    options = pipeline.Options(target="llvm", egraph=False, threads=1, cache=False)
    compiled = pipeline.compile(m, options)
    assert compiled.verdict.ok
    again = build(imp(m), "llvm", threads=2)
    for n in (1, 3):
        feeds = random_feeds(input_specs(m), n, {"N": n})
        for a, b in zip(again.run(feeds), run_ort(m, feeds), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_compiled_graphs_match_onnxruntime(m):
    _compiles_like_onnxruntime(m)


@pytest.mark.slow  # the same with more graphs
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_compiled_graphs_match_onnxruntime_many(m):
    _compiles_like_onnxruntime(m)
