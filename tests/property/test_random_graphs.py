"""Hypothesis-generated small ONNX graphs: import → export is identical in onnxruntime, the
interpreter agrees with onnxruntime, and folding + dead-code removal preserve semantics."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from eqsat import pipeline
from eqsat.egraph import passes
from eqsat.egraph.interpret import interpret
from eqsat.egraph.onnx_io import export_onnx, import_onnx
from eqsat.verify.numeric import compare_models, input_specs, random_feeds
from tests.helpers import init, model, run_ort

UNARY = ["Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Erf"]
BINARY = ["Add", "Sub", "Mul"]


@st.composite
def graphs(draw):
    batch = draw(st.sampled_from([2, "N"]))
    width = draw(st.integers(1, 4))
    values = [("x", (batch, width))]
    nodes, inits = [], []
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def fresh(prefix):
        return f"{prefix}{len(nodes)}_{len(inits)}"

    def weight(shape):
        name = fresh("w")
        inits.append(init(name, rng.standard_normal(shape).astype(np.float32)))
        return name

    for _ in range(draw(st.integers(1, 8))):
        src, shape = draw(st.sampled_from(values))
        kind = draw(
            st.sampled_from(
                [
                    "unary",
                    "binary",
                    "weight",
                    "matmul",
                    "transpose",
                    "concat",
                    "softmax",
                    "reduce",
                    "reshape",
                ]
            )
        )
        out = fresh("v")
        if kind == "unary":
            nodes.append(helper.make_node(draw(st.sampled_from(UNARY)), [src], [out]))
        elif kind == "binary":
            same = [v for v, s in values if s == shape]
            other = draw(st.sampled_from(same))
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), [src, other], [out]))
        elif kind == "weight":
            w = weight((shape[-1],) if isinstance(shape[-1], int) else (1,))
            nodes.append(helper.make_node(draw(st.sampled_from(BINARY)), [w, src], [out]))
        elif kind == "matmul" and isinstance(shape[-1], int):
            k = draw(st.integers(1, 4))
            nodes.append(helper.make_node("MatMul", [src, weight((shape[-1], k))], [out]))
            shape = shape[:-1] + (k,)
        elif kind == "transpose":
            nodes.append(helper.make_node("Transpose", [src], [out], perm=[1, 0]))
            shape = shape[::-1]
        elif kind == "concat":
            axis = draw(st.sampled_from([a for a in (0, 1) if isinstance(shape[a], int)] or [1]))
            if not isinstance(shape[axis], int):
                continue
            nodes.append(helper.make_node("Concat", [src, src], [out], axis=axis))
            shape = tuple(d * 2 if i == axis else d for i, d in enumerate(shape))
        elif kind == "softmax":
            nodes.append(helper.make_node("Softmax", [src], [out], axis=-1))
        elif kind == "reduce":
            axes = weight((1,))
            inits[-1] = init(axes, np.array([1], np.int64))
            nodes.append(helper.make_node("ReduceSum", [src, axes], [out], keepdims=1))
            shape = (shape[0], 1)
        elif kind == "reshape" and isinstance(shape[1], int) and isinstance(shape[0], int):
            s = weight((2,))
            inits[-1] = init(s, np.array([shape[1], shape[0]], np.int64))
            nodes.append(helper.make_node("Reshape", [src, s], [out]))
            shape = (shape[1], shape[0])
        else:
            continue
        values.append((out, shape))
        if draw(st.booleans()):  # dead branches for DCE
            nodes.append(helper.make_node("Relu", [out], [fresh("dead")]))
    if not nodes:
        nodes.append(helper.make_node("Relu", ["x"], ["v_only"]))
        values.append(("v_only", (batch, width)))
    outs = [values[-1]]
    return model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outs],
        inits,
    )


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
