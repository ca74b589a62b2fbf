"""Regression tests for the bugs the ONNX backend node tests found through ``eqsat compile``
(tests/conformance/compile_harness.py): each case lowered and run both by the interpreter and
by the LLVM backend, against the op table's numpy semantics; and the clean refusals (training
Dropout, unsupported dtypes, empty tensors) as one-line LoweringErrors naming the node."""

from __future__ import annotations

import numpy as np
import pytest

from eqsat.compiled import build
from eqsat.egraph.interpret import interpret as interpret_graph
from eqsat.egraph.ir import Node, TensorGraph, TensorType, make_attrs
from eqsat.egraph.ops import infer_node
from eqsat.lower.loops import ReduceOp
from eqsat.lower.lower import LoweringError, lower

RNG = np.random.default_rng(7)


def graph(feeds: dict, weights: dict, nodes: list[tuple], outputs: list[str]) -> TensorGraph:
    """``nodes``: (op, inputs, outputs, attrs); input types from the feeds' arrays."""
    types = {k: TensorType(v.dtype.name, v.shape) for k, v in (feeds | weights).items()}
    built = []
    for op, ins, outs, attrs in nodes:
        n = Node(op, tuple(ins), tuple(outs), make_attrs(attrs), name=outs[0])
        consts = [weights.get(i) for i in ins]
        for o, t in zip(outs, infer_node(n, [types.get(i) for i in ins], consts), strict=False):
            if o:
                types[o] = t
        built.append(n)
    g = TensorGraph(tuple(feeds), tuple(outputs), tuple(built), types, weights)
    g.check()
    return g


def check(g: TensorGraph, feeds: dict) -> None:
    """The interpreter and the LLVM code both equal the op table's reference."""
    want = interpret_graph(g, feeds)
    got_ref = lower(g).run(feeds)
    model = build(g, "llvm", threads=1, use_cache=False)
    got_llvm = dict(zip(model.output_names, model.run(feeds), strict=True))
    for o in g.outputs:
        for got in (got_ref[o], got_llvm[o]):
            assert got.dtype == want[o].dtype and got.shape == want[o].shape, o
            np.testing.assert_allclose(got, want[o], rtol=1e-6, atol=1e-6)


def f32(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def test_a_scalar_input_feeds_the_llvm_code():
    """np.ascontiguousarray made a 0-d feed 1-d: every scalar input (Clip's min, a scalar bias)
    failed in the LLVM runtime with 'rank 1, buffer min: float32[]'."""
    feeds = {"x": f32(3, 4), "lo": np.array(-0.5, np.float32)}
    check(graph(feeds, {}, [("Clip", ["x", "lo"], ["y"], {})], ["y"]), feeds)


def test_castlike_reads_only_the_dtype_of_its_second_input():
    """CastLike broadcast its ``like`` input into its output index: a scalar cast like a larger
    tensor (every expanded function test's CastLike(Alpha, X)) crashed with an IndexError."""
    feeds = {"x": f32(3, 4)}
    weights = {"alpha": np.array(0.5, np.float64)}
    nodes = [("CastLike", ["alpha", "x"], ["a"], {}), ("Mul", ["a", "x"], ["y"], {})]
    check(graph(feeds, weights, nodes, ["y"]), feeds)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
def test_bool_max_and_min_are_any_and_all(op):
    """ReduceMax/Min of bool: the identity was np.iinfo('bool') (a crash), and the IR does not
    accumulate into bools: they accumulate 0/1 as uint8."""
    feeds = {"x": RNG.integers(0, 2, (3, 4)).astype(bool)}
    weights = {"axes": np.array([1])}
    check(graph(feeds, weights, [(op, ["x", "axes"], ["y"], {"keepdims": 0})], ["y"]), feeds)


def test_integer_max_starts_at_the_dtype_minimum():
    """The max identity of an integer dtype was -iinfo.max: for uint8 that is -255, which does
    not fit (and for signed types it misses iinfo.min)."""
    assert ReduceOp.MAX.identity("uint8") == 0
    assert ReduceOp.MAX.identity("int8") == -128
    assert ReduceOp.MIN.identity("uint8") == 255
    feeds = {"x": np.array([[0, 0, 0], [3, 0, 1]], np.uint8)}
    check(graph(feeds, {}, [("ReduceMax", ["x"], ["y"], {"keepdims": 0})], ["y"]), feeds)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_space_to_depth_modes(mode):
    """SpaceToDepth ignored ``mode`` (opset 28 added CRD): CRD came out in DCR order."""
    feeds = {"x": f32(1, 2, 4, 6)}
    nodes = [("SpaceToDepth", ["x"], ["y"], {"blocksize": 2, "mode": mode})]
    check(graph(feeds, {}, nodes, ["y"]), feeds)


@pytest.mark.parametrize("mode", ["constant", "edge", "reflect", "wrap"])
def test_pad_at_the_end_of_an_axis_only(mode):
    """An axis padded only at its end read past it (edge/reflect took the unpadded path when
    the begin pad was 0); wrap mode was refused."""
    feeds = {"x": f32(3, 4)}
    weights = {"pads": np.array([0, 2, 2, 1])}
    nodes = [("Pad", ["x", "pads"], ["y"], {"mode": mode})]
    check(graph(feeds, weights, nodes, ["y"]), feeds)


def test_reflect_pad_wider_than_its_axis_is_refused():
    weights = {"pads": np.array([0, 4, 0, 0])}
    g = graph(
        {"x": f32(3, 4)}, weights, [("Pad", ["x", "pads"], ["y"], {"mode": "reflect"})], ["y"]
    )
    with pytest.raises(LoweringError, match="^Pad y: Pad mode reflect with a pad not smaller"):
        lower(g)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_mod_fmod_follows_the_dividends_sign(dtype):
    """Mod with fmod=1 of floats was refused; it is the floor modulo of the magnitudes with the
    dividend's sign (exact)."""
    feeds = {
        "a": np.array([-4.3, 7.2, 5.0, -4.0, 7.5, -0.5], dtype),
        "b": np.array([2.1, -3.4, 8.0, -2.0, 3.0, 0.25], dtype),
    }
    if dtype == "int32":
        feeds = {
            "a": np.array([-4, 7, 5, -4, 7, 9], dtype),
            "b": np.array([2, -3, 8, -2, 3, 4], dtype),
        }
    check(graph(feeds, {}, [("Mod", ["a", "b"], ["y"], {"fmod": 1})], ["y"]), feeds)


def test_pow_of_an_integer_by_a_float():
    """numpy computes int ** float in float64 and the op casts back; it was refused."""
    feeds = {"x": np.array([1, 2, 3, -2], np.int64), "y": np.array([2, 3.5, 0.5, 3], np.float32)}
    check(graph(feeds, {}, [("Pow", ["x", "y"], ["z"], {})], ["z"]), feeds)


def test_dropout_inference_mask_and_training_refusal():
    """Dropout's mask output (all True in inference) is computed; training mode with a nonzero
    ratio was silently the identity: it is refused."""
    feeds = {"x": f32(3, 4)}
    weights = {"r": np.array(0.5, np.float32), "t": np.array(False)}
    nodes = [("Dropout", ["x", "r", "t"], ["y", "m"], {})]
    check(graph(feeds, weights, nodes, ["y", "m"]), feeds)
    weights["t"] = np.array(True)
    g = graph(feeds, weights, nodes, ["y"])
    with pytest.raises(LoweringError, match=r"^Dropout y: Dropout in training mode \(ratio 0.5\)"):
        lower(g)
    weights["r"] = np.array(0.0, np.float32)  # training with ratio 0: the identity
    check(graph(feeds, weights, nodes, ["y", "m"]), feeds)


@pytest.mark.parametrize("outputs", [["y", "mean", "inv"], ["y", "", "inv"], ["mean"]])
def test_layer_normalization_statistics_outputs(outputs):
    """LayerNormalization's Mean and InvStdDev outputs were refused ('output Mean is used')."""
    feeds = {"x": f32(2, 3, 4)}
    weights = {"s": f32(3, 4), "b": f32(3, 4)}
    outs = ["y", *outputs[1:]] if outputs[0] == "y" else ["y", "mean", "inv"]
    nodes = [("LayerNormalization", ["x", "s", "b"], outs, {"axis": 1})]
    check(graph(feeds, weights, nodes, [o for o in outputs if o]), feeds)


def test_a_consumer_of_a_statistic_is_not_fused_into_the_normalized_value():
    """A node reading both Y and Mean must run after Mean's own kernel, not in Y's epilogue."""
    feeds = {"x": f32(2, 3, 4)}
    weights = {"s": f32(4)}
    nodes = [
        ("LayerNormalization", ["x", "s"], ["y", "mean"], {"axis": -1}),
        ("Add", ["y", "mean"], ["z"], {}),
    ]
    check(graph(feeds, weights, nodes, ["z"]), feeds)


def test_unsupported_dtypes_and_empty_tensors_are_refused():
    g = graph({"x": np.zeros((2, 3), np.uint32)}, {}, [("Neg", ["x"], ["y"], {})], ["y"])
    with pytest.raises(LoweringError, match="^input: x has dtype uint32, which the compiler"):
        lower(g)
    weights = {"starts": np.array([5]), "ends": np.array([9]), "axes": np.array([1])}
    nodes = [("Slice", ["x", "starts", "ends", "axes"], ["y"], {})]
    g = graph({"x": f32(2, 3)}, weights, nodes, ["y"])
    with pytest.raises(LoweringError, match=r"^Slice y: y is an empty tensor float32\[2, 0\]"):
        lower(g)
