"""Every bundled example model (small size) and the committed torch exports, lowered and
interpreted, equal ``TensorGraph.interpret``; fusion leaves fewer kernels than nodes and the
memory plan is valid. (The numpy interpreter is fast enough at these sizes: the whole file
runs in a few seconds; mobilenetish runs at batch 1.)"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from eqsat.egraph.interpret import interpret as interpret_graph
from eqsat.egraph.onnx_io import import_onnx
from eqsat.egraph.passes import fold_constants
from eqsat.examples import build_example, example_names, random_inputs
from eqsat.lower.check import check_program
from eqsat.lower.lower import lower

TORCH = Path(__file__).parents[2] / "data" / "torch"

# kernels per example (small size): roots with their fused epilogues, plus materialized values
KERNELS = {
    "bert": 11,
    "inception": 9,
    "nasrnn": 32,
    "resnext": 4,
    "squeezenet": 4,
    "swiglu": 7,
    "vgg": 4,
}


def check(graph, feeds, atol=1e-4):
    lowered = lower(graph)
    want, got = interpret_graph(graph, feeds), lowered.run(feeds)
    for o in graph.outputs:
        assert got[o].shape == want[o].shape
        np.testing.assert_allclose(got[o], want[o], rtol=1e-4, atol=atol)
    assert lowered.memory.overlaps() == []
    assert lowered.report.peak_temp_bytes <= lowered.memory.unshared_bytes
    return lowered


@pytest.mark.parametrize("name", example_names())
def test_example_model_lowers_and_matches(name):
    model = build_example(name, size="small")
    graph = import_onnx(model)
    lowered = check(graph, random_inputs(model, dims={"batch": 2}))
    assert len(lowered.program.kernels) == KERNELS[name]
    assert len(lowered.program.kernels) < len(fold_constants(graph).nodes)


@pytest.mark.parametrize("stem", ["transformer-ts", "transformer-dynamo", "mobilenetish-ts"])
def test_torch_export_lowers_and_matches(stem):
    graph = import_onnx(TORCH / f"{stem}.onnx")
    rng = np.random.default_rng(0)
    feeds = {
        i: rng.standard_normal(
            [d if isinstance(d, int) else 1 for d in graph.types[i].shape]
        ).astype(graph.types[i].dtype)
        for i in graph.inputs
    }
    lowered = check(graph, feeds)
    ops = {op for k in lowered.report.kernels for op in k.ops}
    assert "Shape" not in ops  # the shape computation of a symbolic batch is never lowered


@pytest.mark.parametrize("name", example_names())
def test_default_size_example_lowers_with_a_valid_memory_plan(name):
    """Benchmark-sized models are lowered (not interpreted: numpy would take minutes)."""
    lowered = lower(import_onnx(build_example(name)))
    check_program(lowered.program)
    assert lowered.memory.overlaps() == []
    assert 0 < lowered.report.peak_temp_bytes < lowered.memory.unshared_bytes
