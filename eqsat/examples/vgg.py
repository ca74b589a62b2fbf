"""VGG-style network: 3x3 conv + Relu stacks with 2x2 max pooling, then a Gemm classifier.

Input ``input`` float32 ``[1, 3, H, W]``; output ``output`` ``[1, classes]`` (logits). The
body follows torchvision's ``make_layers`` (Conv3x3 pads 1 with bias, Relu, MaxPool 2x2/2) and
the head is ``Flatten(axis=1) -> Gemm(transB=1) -> Relu -> Gemm(transB=1)``, exactly how torch
exports ``nn.Linear`` on a 2-D input. VGG is the long-chain, conv-heavy baseline among the
TASO benchmarks: little branching, so gains come from fusing/rewriting conv+activation chains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from eqsat.examples._builder import GraphBuilder, check_size, conv


@dataclass(frozen=True)
class VggConfig:
    """Shape parameters of one VGG variant: conv widths with ``"M"`` marking a max pool."""

    spatial: int
    layers: tuple[int | str, ...]
    fc: tuple[int, ...]  # hidden Gemm widths before the classifier
    classes: int


CONFIGS = {
    "small": VggConfig(spatial=8, layers=(4, 4, "M"), fc=(), classes=10),
    "default": VggConfig(
        spatial=64,
        layers=(64, 64, "M", 128, 128, "M", 256, 256, "M"),
        fc=(256,),
        classes=1000,
    ),
}


def _gemm(b: GraphBuilder, x: str, d_in: int, d_out: int, name: str, gain: float) -> str:
    """``nn.Linear`` on a 2-D input: ``Gemm(x, W[out, in], b, transB=1)``."""
    with b.scope(name):
        w = b.normal("weight", (d_out, d_in), std=math.sqrt(gain / d_in))
        bias = b.normal("bias", (d_out,), std=0.01)
        return b.op("Gemm", x, w, bias, alpha=1.0, beta=1.0, transB=1)


def build(size: str = "default", seed: int = 0) -> onnx.ModelProto:
    """Build the VGG example (``size`` is ``"small"`` or ``"default"``)."""
    cfg = CONFIGS[check_size(size)]
    b = GraphBuilder("vgg", seed)
    x = b.input("input", [1, 3, cfg.spatial, cfg.spatial])
    c, n = 3, cfg.spatial
    with b.scope("features"):
        idx = 0
        for layer in cfg.layers:
            if isinstance(layer, str):
                with b.scope(str(idx)):
                    x = b.op(
                        "MaxPool",
                        x,
                        ceil_mode=0,
                        kernel_shape=[2, 2],
                        pads=[0, 0, 0, 0],
                        strides=[2, 2],
                    )
                n //= 2
                idx += 1
            else:
                x = conv(b, x, c, layer, 3, str(idx), pad=1)
                with b.scope(str(idx + 1)):
                    x = b.op("Relu", x)
                c = layer
                idx += 2
    x = b.op("Flatten", x, axis=1)
    d = c * n * n
    with b.scope("classifier"):
        for i, width in enumerate(cfg.fc):
            x = b.op("Relu", _gemm(b, x, d, width, str(2 * i), gain=2.0))
            d = width
        x = _gemm(b, x, d, cfg.classes, str(2 * len(cfg.fc)), gain=1.0)
    b.output(x, "output", [1, cfg.classes])
    convs = [w for w in cfg.layers if not isinstance(w, str)]
    doc = (
        f"VGG-style: {len(convs)} conv3x3+Relu layers {convs} with 2x2 max pools on "
        f"3x{cfg.spatial}x{cfg.spatial}, then Flatten and Gemm classifier "
        f"{[*cfg.fc, cfg.classes]}."
    )
    return b.finish(doc, size, seed)
