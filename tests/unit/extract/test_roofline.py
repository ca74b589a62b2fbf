"""Roofline cost model: constants from a file, costs that order plans sensibly."""

import json

from eqsat.egraph.ir import TensorType
from eqsat.extract.roofline import DEFAULT_FILE, RooflineConstants, RooflineCostModel

F = "float32"


def t(*shape):
    return TensorType(F, shape)


def test_constants_come_from_the_committed_file():
    data = json.loads(DEFAULT_FILE.read_text())
    c = RooflineConstants.load(DEFAULT_FILE)
    assert c.overhead_us == data["overhead_us"] > 0
    assert c.peak_gflops["linalg"] > 0 and c.bandwidth_gbs > 0


def test_costs_order_plans_sensibly():
    m = RooflineCostModel(RooflineConstants.load(DEFAULT_FILE))
    small = m.node_cost("MatMul", {}, [t(128, 256), t(256, 256)], [t(128, 256)])
    big = m.node_cost("MatMul", {}, [t(128, 256), t(256, 768)], [t(128, 768)])
    assert small < big < 3 * small + 1e-9  # one wide matmul beats three narrow ones
    relu = m.node_cost("Relu", {}, [t(128, 256)], [t(128, 256)])
    assert m.c.overhead_us < relu < small
    conv = m.node_cost(
        "Conv", {"pads": (1, 1, 1, 1)}, [t(1, 64, 56, 56), t(64, 64, 3, 3)], [t(1, 64, 56, 56)]
    )
    assert conv > small


def test_calibrate_writes_a_loadable_file(tmp_path):
    from eqsat.extract.roofline import calibrate

    c = calibrate(tmp_path / "c.json")
    assert RooflineConstants.load(tmp_path / "c.json") == c
    assert c.peak_gflops["linalg"] > c.bandwidth_gbs / 10
