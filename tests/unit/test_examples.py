"""Tests for the bundled example models in :mod:`eqsat.examples`."""

from __future__ import annotations

import functools

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from eqsat.examples import EXAMPLES, SIZES, build_example, example_names, random_inputs

NAMES = example_names()


@functools.cache
def _small(name: str) -> onnx.ModelProto:
    return build_example(name, "small")


def _run(model: onnx.ModelProto, dims: dict[str, int] | None = None) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, random_inputs(model, dims=dims))


def _declared_shape(vi: onnx.ValueInfoProto, dims: dict[str, int]) -> list[int]:
    return [
        d.dim_value if d.HasField("dim_value") else dims[d.dim_param]
        for d in vi.type.tensor_type.shape.dim
    ]


def test_registry_names() -> None:
    assert NAMES == sorted(EXAMPLES)
    assert set(NAMES) == {"bert", "nasrnn", "resnext", "squeezenet", "inception", "vgg", "swiglu"}
    assert SIZES == ("small", "default")


def test_unknown_name_raises_key_error_listing_names() -> None:
    with pytest.raises(KeyError) as err:
        build_example("no-such-model")
    message = str(err.value)
    assert "no-such-model" in message
    for name in NAMES:
        assert name in message


def test_unknown_size_raises_value_error() -> None:
    with pytest.raises(ValueError, match="small"):
        build_example("bert", size="huge")


@pytest.mark.parametrize("name", NAMES)
def test_small_passes_full_check(name: str) -> None:
    onnx.checker.check_model(_small(name), full_check=True)


@pytest.mark.parametrize("name", NAMES)
def test_small_model_header(name: str) -> None:
    model = _small(name)
    assert model.ir_version == 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    assert model.producer_name == "eqsat-examples"
    assert model.doc_string
    props = {p.key: p.value for p in model.metadata_props}
    assert props["eqsat.example"] == name
    assert props["eqsat.size"] == "small"
    assert model.graph.name == name


@pytest.mark.parametrize("name", NAMES)
def test_small_names_and_ops(name: str) -> None:
    graph = _small(name).graph
    assert graph.input and graph.output
    assert all(vi.name for vi in [*graph.input, *graph.output])
    node_names = [n.name for n in graph.node]
    assert all(node_names) and len(set(node_names)) == len(node_names)
    produced = [o for n in graph.node for o in n.output]
    sources = [*produced, *(i.name for i in graph.input), *(t.name for t in graph.initializer)]
    assert all(sources) and len(set(sources)) == len(sources)
    for node in graph.node:
        assert node.domain == ""
        assert onnx.defs.has(node.op_type), node.op_type
    for t in graph.initializer:
        assert t.data_type == onnx.TensorProto.FLOAT


@pytest.mark.parametrize("name", NAMES)
def test_small_is_small(name: str) -> None:
    params = sum(int(np.prod(t.dims)) for t in _small(name).graph.initializer)
    assert params * 4 < 2_000_000


@pytest.mark.parametrize("name", NAMES)
def test_small_runs_in_ort(name: str) -> None:
    model = _small(name)
    dims = {"batch": 2}  # exercises the symbolic batch dim where a model has one
    outputs = _run(model, dims)
    assert len(outputs) == len(model.graph.output)
    for vi, out in zip(model.graph.output, outputs, strict=True):
        assert list(out.shape) == _declared_shape(vi, dims)
        assert out.dtype == np.float32
        assert np.isfinite(out).all()
        assert 1e-3 < float(np.abs(out).max()) < 100.0, "activations vanished or blew up"


@pytest.mark.parametrize("name", NAMES)
def test_deterministic(name: str) -> None:
    first = build_example(name, "small", seed=0).SerializeToString()
    assert build_example(name, "small", seed=0).SerializeToString() == first
    assert _small(name).SerializeToString() == first
    assert build_example(name, "small", seed=1).SerializeToString() != first


@pytest.mark.parametrize("name", NAMES)
def test_default_builds_checks_and_runs(name: str) -> None:
    model = build_example(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.ByteSize() < 64 * 2**20
    (out, *_) = _run(model)
    assert np.isfinite(out).all()
    assert 1e-3 < float(np.abs(out).max()) < 100.0
