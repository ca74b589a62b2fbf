"""The measured cost model: kernels timed in onnxruntime once, cached per machine."""

import numpy as np

from eqsat.egraph.ir import TensorType
from eqsat.extract.measured import CONST, MeasuredCostModel
from eqsat.extract.roofline import RooflineCostModel

F = "float32"


def T(*shape, dtype=F):
    return TensorType(dtype, tuple(shape))


def test_a_bigger_matmul_costs_more_and_the_cache_is_reused(tmp_path):
    path = tmp_path / "m.json"
    m = MeasuredCostModel(cache=path)
    small = m.node_cost("MatMul", {}, [T(8, 64), T(64, 64)], [T(8, 64)], [None, CONST])
    big = m.node_cost("MatMul", {}, [T(256, 512), T(512, 512)], [T(256, 512)], [None, CONST])
    assert 0 <= small < big
    assert m.measured == 2
    m.save()
    again = MeasuredCostModel(cache=path)
    assert again.node_cost("MatMul", {}, [T(8, 64), T(64, 64)], [T(8, 64)], [None, CONST]) == small
    assert again.measured == 0  # read from the cache, not timed again


def test_small_integer_constants_are_part_of_the_configuration(tmp_path):
    m = MeasuredCostModel(cache=tmp_path / "m.json")
    ints = TensorType("int64", (1,))

    def slice_cost(end):
        consts = [None, np.array([0]), np.array([end]), np.array([1])]
        return m.node_cost("Slice", {}, [T(64, 4096), ints, ints, ints], [T(64, end)], consts)

    slice_cost(8)
    slice_cost(4096)
    assert m.measured == 2  # two bounds, two configurations
    assert len(m.table) == 2


def test_what_cannot_be_built_falls_back_to_the_roofline(tmp_path):
    m = MeasuredCostModel(cache=tmp_path / "m.json")
    ins = [T(100, 16), T(5, dtype="int64")]  # Gather indices of unknown value
    cost = m.node_cost("Gather", {"axis": 0}, ins, [T(5, 16)], [None, None])
    assert cost == RooflineCostModel().node_cost("Gather", {"axis": 0}, ins, [T(5, 16)])
    assert list(m.table.values()) == [None]  # the fallback is remembered, not retried


def test_a_damaged_cache_is_rebuilt(tmp_path):
    path = tmp_path / "m.json"
    path.write_text("{not json")
    m = MeasuredCostModel(cache=path)
    assert m.node_cost("Relu", {}, [T(4, 4)], [T(4, 4)], [None]) >= 0
    m.save()
    assert MeasuredCostModel(cache=path).table  # valid JSON again


def test_optimize_with_the_measured_model_writes_its_cache(tmp_path, monkeypatch):
    import eqsat
    from eqsat.examples import build_example

    monkeypatch.setenv("EQSAT_CACHE_DIR", str(tmp_path))
    result = eqsat.optimize(build_example("nasrnn", "small"), cost_model="measured")
    assert result.verdict.ok
    assert result.egraph["cost_model"] == "measured"
    assert list(tmp_path.glob("measured-*.json"))
