"""Shared plumbing for the bundled example models.

:class:`GraphBuilder` is a deliberately tiny ONNX graph builder. It hands out unique,
PyTorch-exporter-style names (node ``/layers.0/attn/query/MatMul`` producing value
``/layers.0/attn/query/MatMul_output_0``, parameter ``layers.0.attn.query.weight``), draws
float32 initializers from one seeded ``numpy.random.default_rng(seed)`` in a fixed order (so a
given ``(size, seed)`` always serializes to the same bytes), and finishes a ``ModelProto`` with
opset 17 / IR version 8.

The module-level helpers (:func:`linear`, :func:`conv`, :func:`batch_norm`) emit the node
patterns ``torch.onnx.export`` produces for ``nn.Linear``, ``nn.Conv2d`` and an unfolded
``nn.BatchNorm2d``. Small literal constants (scalars, ``Reshape`` shapes) become ``Constant``
nodes, as they do in real exports; learned weights become initializers.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from eqsat.version import __version__

OPSET = 17
IR_VERSION = 8
PRODUCER = "eqsat-examples"
SIZES = ("small", "default")

Dim = int | str


def check_size(size: str) -> str:
    """Return ``size`` if it is a known size name, else raise ``ValueError``."""
    if size not in SIZES:
        raise ValueError(f"unknown example size {size!r}; expected one of {', '.join(SIZES)}")
    return size


class GraphBuilder:
    """Accumulates nodes, initializers and graph inputs/outputs for one model."""

    def __init__(self, name: str, seed: int = 0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._used: set[str] = set()
        self._scope: list[str] = []

    # -- naming -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, name: str) -> Iterator[None]:
        """Nest node and parameter names under ``name`` (like a torch submodule)."""
        self._scope.append(name)
        try:
            yield
        finally:
            self._scope.pop()

    def _unique(self, base: str) -> str:
        name, i = base, 0
        while name in self._used:
            i += 1
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def _param_name(self, leaf: str) -> str:
        return self._unique(".".join([*self._scope, leaf]))

    # -- graph interface --------------------------------------------------------------------
    def input(self, name: str, shape: Sequence[Dim], elem_type: int = TensorProto.FLOAT) -> str:
        """Declare a graph input; string dims become symbolic (``dim_param``)."""
        name = self._unique(name)
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(
        self, value: str, name: str, shape: Sequence[Dim], elem_type: int = TensorProto.FLOAT
    ) -> str:
        """Expose ``value`` as graph output ``name`` by renaming it where it is produced/used."""
        if name != value:
            name = self._unique(name)
            for node in self.nodes:
                for io in (node.input, node.output):
                    for i, v in enumerate(io):
                        if v == value:
                            io[i] = name
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    # -- initializers -----------------------------------------------------------------------
    def array(self, leaf: str, value: np.ndarray) -> str:
        """Add ``value`` as an initializer named after the current scope plus ``leaf``."""
        name = self._param_name(leaf)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def normal(self, leaf: str, shape: Sequence[int], std: float, mean: float = 0.0) -> str:
        """Add a float32 initializer drawn from N(mean, std**2)."""
        draw = self.rng.standard_normal(tuple(shape), dtype=np.float32)
        return self.array(leaf, (draw * np.float32(std) + np.float32(mean)).astype(np.float32))

    def uniform(self, leaf: str, shape: Sequence[int], low: float, high: float) -> str:
        """Add a float32 initializer drawn from U(low, high)."""
        return self.array(leaf, self.rng.uniform(low, high, tuple(shape)).astype(np.float32))

    # -- nodes ------------------------------------------------------------------------------
    def op(self, op_type: str, *inputs: str, **attrs: object) -> str:
        """Append a single-output node in the default domain and return its output name."""
        node_name = self._unique("/" + "/".join([*self._scope, op_type]))
        out = self._unique(f"{node_name}_output_0")
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=node_name, **attrs))
        return out

    def const(self, value: float | Sequence[int] | np.ndarray, dtype: type = np.float32) -> str:
        """Emit a ``Constant`` node (scalars become 0-d tensors, as torch exports them)."""
        arr = np.asarray(value, dtype=dtype)
        return self.op("Constant", value=numpy_helper.from_array(arr))

    def ints(self, values: Sequence[int]) -> str:
        """Emit an int64 1-D ``Constant`` (``Reshape`` shapes, ``Slice`` bounds, ...)."""
        return self.const(values, dtype=np.int64)

    # -- finishing --------------------------------------------------------------------------
    def finish(self, doc: str, size: str, seed: int) -> onnx.ModelProto:
        """Assemble the ``ModelProto`` (opset 17, IR 8) with provenance metadata."""
        graph = helper.make_graph(
            self.nodes, self.name, self.inputs, self.outputs, initializer=self.initializers
        )
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name=PRODUCER,
            producer_version=__version__,
            ir_version=IR_VERSION,
            doc_string=doc,
        )
        helper.set_model_props(
            model, {"eqsat.example": self.name, "eqsat.size": size, "eqsat.seed": str(seed)}
        )
        return model


# -- torch-export-shaped layer helpers --------------------------------------------------------
def linear(b: GraphBuilder, x: str, d_in: int, d_out: int, name: str, bias: bool = True) -> str:
    """``nn.Linear`` on a >=3-D input: ``MatMul(x, W^T)`` then ``Add(bias, .)`` (bias first)."""
    with b.scope(name):
        w = b.normal("weight", (d_in, d_out), std=1.0 / math.sqrt(d_in))
        y = b.op("MatMul", x, w)
        if bias:
            y = b.op("Add", b.normal("bias", (d_out,), std=0.02), y)
    return y


def conv(
    b: GraphBuilder,
    x: str,
    c_in: int,
    c_out: int,
    k: int,
    name: str,
    *,
    stride: int = 1,
    pad: int = 0,
    group: int = 1,
    bias: bool = True,
    gain: float = 2.0,
) -> str:
    """``nn.Conv2d`` (square kernel); weight std ``sqrt(gain / fan_in)``.

    The default ``gain=2`` (He init) keeps the activation scale through Conv+Relu stacks; a
    smaller gain damps the scale growth that max pooling introduces.
    """
    fan_in = (c_in // group) * k * k
    with b.scope(name):
        w = b.normal("weight", (c_out, c_in // group, k, k), std=math.sqrt(gain / fan_in))
        ins = [x, w]
        if bias:
            ins.append(b.normal("bias", (c_out,), std=0.01))
        return b.op(
            "Conv",
            *ins,
            dilations=[1, 1],
            group=group,
            kernel_shape=[k, k],
            pads=[pad] * 4,
            strides=[stride, stride],
        )


def batch_norm(b: GraphBuilder, x: str, c: int, name: str, gamma: float = 1.0) -> str:
    """Inference-form ``BatchNormalization`` with random stats (positive variance)."""
    with b.scope(name):
        scale = b.uniform("weight", (c,), 0.8 * gamma, 1.2 * gamma)
        shift = b.normal("bias", (c,), std=0.05)
        mean = b.normal("running_mean", (c,), std=0.1)
        var = b.uniform("running_var", (c,), 0.5, 1.5)
        return b.op("BatchNormalization", x, scale, shift, mean, var, epsilon=1e-5, momentum=0.9)


def random_inputs(
    model: onnx.ModelProto, seed: int = 0, dims: Mapping[str, int] | None = None
) -> dict[str, np.ndarray]:
    """Standard-normal float32 feeds for every graph input; symbolic dims default to 1."""
    rng = np.random.default_rng(seed)
    dims = dict(dims or {})
    feeds: dict[str, np.ndarray] = {}
    for vi in model.graph.input:
        shape = [
            d.dim_value if d.HasField("dim_value") else dims.get(d.dim_param, 1)
            for d in vi.type.tensor_type.shape.dim
        ]
        feeds[vi.name] = rng.standard_normal(shape, dtype=np.float32)
    return feeds
