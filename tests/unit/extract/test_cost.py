"""The CostModel protocol states every ability extraction reads; every model declares them."""

import pytest

from eqsat.egraph.encode import encode
from eqsat.egraph.onnx_io import import_onnx
from eqsat.egraph.saturate import saturate
from eqsat.extract import cost
from eqsat.extract.compiler_cost import CompilerCostModel
from eqsat.extract.extraction import extract
from eqsat.extract.measured import MeasuredCostModel
from eqsat.extract.roofline import RooflineCostModel
from tests.helpers import model, vi

MODELS = (
    cost.AstSize,
    cost.OpWeights,
    cost.Analytic,
    RooflineCostModel,
    MeasuredCostModel,
    CompilerCostModel,
)


def test_the_protocol_lists_every_ability():
    # what isinstance checks (typing.get_protocol_members from Python 3.13)
    assert cost.CostModel.__protocol_attrs__ == set(cost.ABILITIES)


@pytest.mark.parametrize("cls", MODELS, ids=lambda c: c.__name__)
def test_every_model_class_declares_every_ability(cls, tmp_path):
    assert cost.missing_abilities(cls) == []
    args = {MeasuredCostModel: {"cache": tmp_path / "m.json"}, cost.OpWeights: {"weights": {}}}
    m = cls(**args.get(cls, {}))
    assert isinstance(m, cost.CostModel)
    assert isinstance(m.name, str) and m.name != cost.CostModelBase.name
    assert isinstance(m.needs_values, bool) and isinstance(m.runtime_fusions, bool)
    assert m.noise >= 0.0
    assert m.save() is None


def test_what_a_model_declares_is_what_extraction_reads():
    # the models that price onnxruntime's kernels say so; the timed one is noisy and reads values
    assert RooflineCostModel.runtime_fusions and MeasuredCostModel.runtime_fusions
    assert MeasuredCostModel.needs_values and MeasuredCostModel.noise > 0
    assert not (cost.AstSize.needs_values or cost.AstSize.runtime_fusions or cost.AstSize.noise)


def test_a_model_missing_an_ability_is_refused_by_name():
    class Partial:  # duck-typed, without CostModelBase's defaults
        name = "partial"
        noise = 0.0

        def node_cost(self, op, attrs, ins, outs):
            return 1.0

    from onnx import helper

    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    sat = saturate(encode(import_onnx(m)), [], iter_limit=1)
    with pytest.raises(TypeError, match="needs_values, runtime_fusions, save"):
        extract(sat, Partial())
    assert len(extract(sat, cost.AstSize()).graph.nodes) == 1


@pytest.mark.parametrize("name", ["vgg", "squeezenet", "inception"])
def test_an_unchanged_graph_keeps_its_cost_through_extraction(name):
    """Extracting an e-graph no rule touched gives back the graph at the cost the pipeline's
    "cost before" reports: both price a node by one test (extraction.free). Before, the graph's
    Relus after Convs were charged and the extracted ones were free (VGG 1.379e4 -> 1.358e4 in
    the CLI with the same ops)."""
    from eqsat.egraph import passes
    from eqsat.examples import build_example
    from eqsat.extract.extraction import graph_cost
    from eqsat.extract.roofline import DEFAULT_FILE, RooflineConstants

    g = passes.fold_constants(import_onnx(build_example(name, size="small")))
    roofline = RooflineCostModel(RooflineConstants.load(DEFAULT_FILE))
    assert any(n.op == "Relu" for n in g.nodes)  # the fused activations are what differed
    for m in (roofline, cost.AstSize()):
        ex = extract(saturate(encode(g), []), m)
        assert g.op_histogram() == ex.graph.op_histogram()
        assert ex.cost == pytest.approx(graph_cost(g, m), rel=1e-12)
    # and the fused Relus are free in both: the graph costs less than every node charged
    charged = sum(
        cost.checked_cost(roofline, n.op, n.attr, [g.types.get(i) for i in n.inputs],
                          [g.types[o] for o in n.outputs]) for n in g.nodes
    )  # fmt: skip
    assert graph_cost(g, roofline) < charged
