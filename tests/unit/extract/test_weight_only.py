"""Weight-only subterms cost nothing in extraction and are computed once after it.

A test-only rule, matmul associativity, rewrites (x·A)·B into x·(A·B). A·B involves only weights,
so the plan that computes it at export is cheaper; the fold after extraction turns it into one
weight, and the optimized model runs one MatMul instead of two.
"""

import numpy as np
from egglog import var
from onnx import helper

from eqsat import pipeline
from eqsat.egraph import passes
from eqsat.egraph.encode import encode
from eqsat.egraph.lang import Tensor
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.egraph.saturate import saturate
from eqsat.extract.cost import AstSize
from eqsat.extract.extraction import extract
from eqsat.rules.base import Rule
from eqsat.rules.schedule import rulesets
from eqsat.verify.numeric import compare_models
from tests.helpers import init, model, vi

ASSOC = Rule(
    "matmul-assoc-test",
    "test",
    Tensor.matmul(Tensor.matmul(var("x", Tensor), var("a", Tensor)), var("b", Tensor)),
    Tensor.matmul(var("x", Tensor), Tensor.matmul(var("a", Tensor), var("b", Tensor))),
    fp_exact=False,
)


def _two_linear_layers():
    rng = np.random.default_rng(0)
    nodes = [
        helper.make_node("MatMul", ["x", "A"], ["h"]),
        helper.make_node("MatMul", ["h", "B"], ["y"]),
    ]
    inits = [
        init("A", rng.standard_normal((16, 32)).astype(np.float32)),
        init("B", rng.standard_normal((32, 8)).astype(np.float32)),
    ]
    return model(nodes, [vi("x", ["n", 16])], [vi("y", ["n", 8])], inits)


def test_weight_only_subterm_is_free_and_folded():
    m = _two_linear_layers()
    g = import_onnx(m)
    sat = saturate(encode(g), rulesets([ASSOC]), iter_limit=5)
    assert sat.matches["matmul-assoc-test"] >= 1
    ex = extract(sat, AstSize())
    assert ex.cost == 1.0  # x·(A·B): one costed MatMul, A·B free
    folded = passes.fold_constants(ex.graph, bounded=False)
    assert [n.op for n in folded.nodes] == ["MatMul"]
    (w,) = [folded.weights[i] for i in folded.nodes[0].inputs if i in folded.weights]
    assert w.shape == (16, 8)
    assert compare_models(m, export_onnx(folded), rtol=1e-4, atol=1e-5).ok


def test_without_the_rule_nothing_changes_and_the_pipeline_folds_after_extraction():
    m = _two_linear_layers()
    result = pipeline.optimize(m)
    assert [n.op_type for n in result.model.graph.node] == ["MatMul", "MatMul"]
    assert "fold" in result.times and result.verdict.ok
