"""The op table is complete (every op has every entry). The layering: test_layering.py."""

import numpy as np
import pytest

from eqsat.egraph.ir import TensorType
from eqsat.egraph.ops import OPS

CATEGORIES = {
    "elementwise",
    "activation",
    "linalg",
    "conv",
    "pool",
    "norm",
    "reduce",
    "shape",
    "data",
}

# The ops the issue requires the table to cover (CNN and transformer inference graphs).
REQUIRED = """MatMul Gemm Conv ConvTranspose Add Sub Mul Div Pow Relu LeakyRelu Sigmoid Tanh Erf
Gelu Softmax LayerNormalization BatchNormalization MaxPool AveragePool GlobalAveragePool Concat
Split Slice Reshape Transpose Flatten Squeeze Unsqueeze Identity Dropout Constant Cast CastLike Sqrt
ReduceMean ReduceSum Expand Gather Where Shape Size ConstantOfShape Range""".split()


def test_required_ops_are_in_the_table():
    assert sorted(set(REQUIRED) - set(OPS)) == []


@pytest.mark.parametrize("name", sorted(OPS))
def test_every_op_has_every_entry(name):
    d = OPS[name]
    assert d.name == name and d.category in CATEGORIES
    assert callable(d.infer) and callable(d.run) and callable(d.flops)
    lo, hi = d.inputs
    assert 0 <= lo and (hi == -1 or hi >= lo)
    assert isinstance(dict(d.attrs), dict)


def test_flops_of_a_matmul():
    mm = OPS["MatMul"]
    a, b, c = TensorType("float32", (4, 8)), TensorType("float32", (8, 16)), None
    c = TensorType("float32", (4, 16))
    assert mm.flops([a, b], [c], {}) == 2 * 4 * 8 * 16
    assert np.issubdtype(
        mm.run([np.ones((4, 8), np.float32), np.ones((8, 16), np.float32)], {})[0].dtype, np.float32
    )
