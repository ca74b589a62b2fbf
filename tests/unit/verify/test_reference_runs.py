"""The gate's reference side run ahead (numeric.ReferenceRuns.prefetch, which the pipeline
runs in a thread while the e-graph child works): the same verdict as computed on demand, and
a reference that fails fails at the same point with the same error."""

import numpy as np
import pytest
from onnx import helper

from eqsat import pipeline
from eqsat.errors import InputError
from eqsat.examples import build_example
from eqsat.verify import numeric
from tests.helpers import init, model, vi


def _relu_chain():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    return model(nodes, [vi("x", ["n", 4])], [vi("y", ["n", 4])])


def _runs_only_at_15():
    """An input of symbolic length that Reshape to [3, 5] accepts only at 15: none of the
    sizes the gate tries."""
    nodes = [helper.make_node("Reshape", ["x", "s"], ["y"])]
    return model(nodes, [vi("x", ["n"])], [vi("y", [3, 5])], [init("s", np.array([3, 5]))])


def _prefetched(m, **kw) -> numeric.ReferenceRuns:
    runs = numeric.ReferenceRuns(m, numeric.DEFAULT_SEEDS, **kw)
    runs.prefetch()
    return runs


def test_prefetched_reference_gives_the_verdict_computed_on_demand():
    m = _relu_chain()
    on_demand = numeric.compare_models(m, m)
    ahead = numeric.compare_models(_prefetched(m), m)
    assert on_demand.ok and ahead == on_demand
    assert ahead.dim_values == {"n": 2}


@pytest.mark.parametrize(
    "m, kw, message",
    [
        (_runs_only_at_15(), {}, "pass the shape it runs with: --input-shape x=<n>"),
        (_relu_chain(), {"input_shapes": {"x": (2, 5)}}, "dim 1 is 4 in the model, not 5"),
    ],
)
def test_prefetched_reference_fails_where_and_as_on_demand(m, kw, message):
    with pytest.raises(InputError, match=message) as on_demand:
        numeric.compare_models(m, m, **kw)
    runs = _prefetched(m, **kw)  # the failure is kept, not raised here
    with pytest.raises(InputError) as ahead:
        numeric.compare_models(runs, m, **kw)
    assert str(ahead.value) == str(on_demand.value)


def test_a_reference_of_other_seeds_is_refused():
    with pytest.raises(ValueError, match="seeds"):
        numeric.compare_models(_prefetched(_relu_chain()), _relu_chain(), seeds=(7,))


def test_pipeline_runs_the_reference_ahead_only_beside_the_child():
    m = build_example("vgg", "small")
    forked = pipeline.optimize(m, pipeline.Options())
    inline = pipeline.optimize(m, pipeline.Options(isolate=False))
    assert "verify-ahead" in forked.times and "verify-ahead" not in inline.times
    assert forked.verdict.ok and forked.verdict == inline.verdict
