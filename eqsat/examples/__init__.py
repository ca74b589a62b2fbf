"""Bundled example models: the architectures on which TASO and Tensat report speedups.

Every model is built in-process with ``onnx.helper`` (no torch, no downloads), laid out the
way ``torch.onnx.export`` would emit it (opset 17, IR version 8, torch-style node/value names,
bias-first ``Add`` after ``MatMul``, ``Constant`` nodes for literals), because the optimizer
must cope with exported graphs and its rewrites target exactly these patterns:

``bert``
    BERT encoder layers. Separate Q/K/V ``MatMul`` s share one input (merge into one wide
    MatMul + split), plus Reshape/Transpose head plumbing, Softmax attention, LayerNorm and
    exact GELU spelled as Div/Erf/Add/Mul. Symbolic ``batch`` dim.
``nasrnn``
    The NAS-RNN cell of TASO's ``nasrnn`` benchmark unrolled over time: per step 8 gates whose
    x-side and h-side MatMuls share an operand (merge opportunities), combined with a
    Sigmoid/Tanh/Relu/Add/Mul tree.
``resnext``
    ResNeXt-50 (32x4d) bottleneck blocks: grouped 3x3 convs, unfolded BatchNormalization,
    projection and identity shortcuts (BN folding, conv fusion).
``squeezenet``
    SqueezeNet-1.1 fire modules: parallel 1x1/3x3 expand convs on one input, concatenated
    (merge into a single padded conv).
``inception``
    Inception-v3 modules: four branches whose 1x1 convs share the input (merge), with an
    AveragePool branch and channel Concat.
``vgg``
    A VGG conv3x3+Relu/MaxPool chain with a Flatten + Gemm head: the long, unbranched baseline.
``swiglu``
    LLaMA-style SwiGLU MLP blocks with RMSNorm written out op-by-op; gate and up projections
    share their input (merge). Symbolic ``batch`` dim.

Each builder takes ``size`` (``"small"``: tiny, for unit tests; ``"default"``: benchmark
sized) and ``seed``; the same arguments always give a byte-identical serialized model.
"""

from __future__ import annotations

from collections.abc import Callable

import onnx

from eqsat.examples import bert, inception, nasrnn, resnext, squeezenet, swiglu, vgg
from eqsat.examples._builder import SIZES, random_inputs

__all__ = ["EXAMPLES", "SIZES", "build_example", "example_names", "random_inputs"]

EXAMPLES: dict[str, Callable[..., onnx.ModelProto]] = {
    "bert": bert.build,
    "nasrnn": nasrnn.build,
    "resnext": resnext.build,
    "squeezenet": squeezenet.build,
    "inception": inception.build,
    "vgg": vgg.build,
    "swiglu": swiglu.build,
}


def example_names() -> list[str]:
    """Names accepted by :func:`build_example`, sorted."""
    return sorted(EXAMPLES)


def build_example(name: str, size: str = "default", seed: int = 0) -> onnx.ModelProto:
    """Build the bundled example ``name`` at ``size`` (``"small"``/``"default"``).

    Raises ``KeyError`` (listing the valid names) for an unknown ``name`` and ``ValueError``
    for an unknown ``size``.
    """
    try:
        builder = EXAMPLES[name]
    except KeyError:
        raise KeyError(
            f"unknown example model {name!r}; available: {', '.join(example_names())}"
        ) from None
    return builder(size=size, seed=seed)
