"""Real exporter output: small models exported by torch 2.13 (TorchScript and dynamo exporters,
symbolic batch dim, external data), made by benchmarks/export_torch_models.py --tiny."""

from pathlib import Path

import onnx
import pytest

from eqsat import pipeline
from eqsat.egraph.onnx_io import import_onnx

DATA = Path(__file__).parents[2] / "data" / "torch"
MODELS = sorted(DATA.glob("*.onnx"))


def test_the_exports_are_there():
    assert {p.stem for p in MODELS} >= {
        "transformer-ts",
        "transformer-dynamo",
        "mobilenetish-ts",
        "mobilenetish-dynamo",
    }


@pytest.mark.parametrize("path", MODELS, ids=[p.stem for p in MODELS])
def test_optimize_torch_export(tmp_path, path):
    out = tmp_path / "opt.onnx"
    result = pipeline.optimize(path, output=out)
    assert result.verdict.ok
    onnx.checker.check_model(str(out), full_check=True)
    before, after = import_onnx(path), import_onnx(out)
    # The interface survives, symbolic batch dims included (dynamo specializes a batch of 1).
    assert [after.types[i] for i in after.inputs] == [before.types[i] for i in before.inputs]
    assert [after.types[o] for o in after.outputs] == [before.types[o] for o in before.outputs]
    assert len(result.model.graph.node) <= len(result.source.graph.node)


def test_symbolic_shape_arithmetic_infers_reshapes():
    g = import_onnx(DATA / "transformer-ts.onnx")
    reshaped = [g.types[n.outputs[0]].shape for n in g.nodes if n.op == "Reshape"]
    assert reshaped and all(len(s) > 0 for s in reshaped)
    # Shapes computed from Shape(x) of the symbolic batch stay symbolic, e.g. "batch*4".
    assert any(any(isinstance(d, str) and "batch" in d for d in s) for s in reshaped)
    folded = pipeline.optimize(DATA / "transformer-ts.onnx").model
    assert sum(n.op_type == "Constant" for n in folded.graph.node) == 0
    assert len(folded.graph.node) < 0.5 * len(
        onnx.load(str(DATA / "transformer-ts.onnx")).graph.node
    )
