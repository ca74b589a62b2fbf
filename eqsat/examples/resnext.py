"""ResNeXt-50-style bottleneck blocks (32x4d cardinality), with unfolded BatchNormalization.

Input ``input`` float32 ``[1, C, H, W]``; output ``output``. Each block is the torchvision
``Bottleneck`` with ``groups > 1``::

    y = BN(Conv1x1(x))   -> Relu
    y = BN(Conv3x3(y, group=groups, pads=1)) -> Relu
    y = BN(Conv1x1(y))
    s = BN(Conv1x1(x))   if the channel count changes (first block), else x
    out = Relu(y + s)

Convs are bias-free and every BatchNormalization is kept as its own inference-form node
(5 inputs, epsilon 1e-5, random positive running variance): folding BN into the preceding
Conv, and fusing the projection shortcut, is left to the optimizer. Grouped convolutions are
where TASO/Tensat report their ResNeXt speedups (e.g. enlarging/merging grouped convs).
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from eqsat.examples._builder import GraphBuilder, batch_norm, check_size, conv


@dataclass(frozen=True)
class ResNeXtConfig:
    """Shape parameters of one ResNeXt variant."""

    blocks: int
    in_channels: int
    spatial: int
    width: int
    groups: int
    out_channels: int


CONFIGS = {
    "small": ResNeXtConfig(blocks=1, in_channels=8, spatial=8, width=8, groups=4, out_channels=16),
    "default": ResNeXtConfig(
        blocks=3, in_channels=64, spatial=56, width=128, groups=32, out_channels=256
    ),
}


def _block(b: GraphBuilder, x: str, c_in: int, cfg: ResNeXtConfig) -> str:
    w, c_out = cfg.width, cfg.out_channels
    y = b.op("Relu", batch_norm(b, conv(b, x, c_in, w, 1, "conv1", bias=False), w, "bn1"))
    y = conv(b, y, w, w, 3, "conv2", pad=1, group=cfg.groups, bias=False)
    y = b.op("Relu", batch_norm(b, y, w, "bn2"))
    # A smaller BN scale on the residual branch keeps the sum from growing block by block.
    y = batch_norm(b, conv(b, y, w, c_out, 1, "conv3", bias=False), c_out, "bn3", gamma=0.5)
    shortcut = x
    if c_in != c_out:
        with b.scope("downsample"):
            shortcut = conv(b, x, c_in, c_out, 1, "0", bias=False)
            shortcut = batch_norm(b, shortcut, c_out, "1", gamma=0.5)
    return b.op("Relu", b.op("Add", y, shortcut))


def build(size: str = "default", seed: int = 0) -> onnx.ModelProto:
    """Build the ResNeXt example (``size`` is ``"small"`` or ``"default"``)."""
    cfg = CONFIGS[check_size(size)]
    b = GraphBuilder("resnext", seed)
    x = b.input("input", [1, cfg.in_channels, cfg.spatial, cfg.spatial])
    c = cfg.in_channels
    for i in range(cfg.blocks):
        with b.scope(f"layer1.{i}"):
            x = _block(b, x, c, cfg)
        c = cfg.out_channels
    b.output(x, "output", [1, c, cfg.spatial, cfg.spatial])
    doc = (
        f"ResNeXt bottleneck stack: {cfg.blocks} block(s) on {cfg.in_channels}x{cfg.spatial}"
        f"x{cfg.spatial}, width {cfg.width}, {cfg.groups} groups, {cfg.out_channels} out "
        "channels; Conv->BatchNormalization->Relu with unfolded BN and a projection shortcut."
    )
    return b.finish(doc, size, seed)
