"""Inception-v3-style modules (the ``Mixed_5b``/``InceptionA`` shape, 5x5 branch as 3x3).

Input ``input`` float32 ``[1, C, H, W]``; output ``output``. Each module has four branches
whose results are concatenated on the channel axis::

    b1 = Relu(Conv1x1(x))
    b2 = Relu(Conv3x3(Relu(Conv1x1(x))))
    b3 = Relu(Conv3x3(Relu(Conv3x3(Relu(Conv1x1(x))))))
    b4 = Relu(Conv1x1(AveragePool3x3(x, stride 1, pads 1, count_include_pad=0)))
    out = Concat(b1, b2, b3, b4, axis=1)

Convs carry biases (the form torch exports once each BasicConv2d's BatchNorm is folded). The
three 1x1 convs of branches 1-3 read the same input, so they can be merged into one wider
1x1 conv and split, the Inception rewrite reported by TASO and Tensat.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from eqsat.examples._builder import GraphBuilder, check_size, conv


@dataclass(frozen=True)
class InceptionModule:
    """Channel counts of one module: b1, b2 (reduce, out), b3 (reduce, out), pool proj."""

    b1: int
    b2: tuple[int, int]
    b3: tuple[int, int]
    pool: int

    @property
    def out_channels(self) -> int:
        return self.b1 + self.b2[1] + self.b3[1] + self.pool


@dataclass(frozen=True)
class InceptionConfig:
    """Shape parameters of one Inception variant."""

    in_channels: int
    spatial: int
    modules: tuple[InceptionModule, ...]


CONFIGS = {
    "small": InceptionConfig(
        in_channels=8, spatial=8, modules=(InceptionModule(4, (4, 4), (4, 6), 2),)
    ),
    "default": InceptionConfig(
        in_channels=192,
        spatial=35,
        modules=(
            InceptionModule(64, (48, 64), (64, 96), 32),
            InceptionModule(64, (48, 64), (64, 96), 64),
        ),
    ),
}


def _conv_relu(b: GraphBuilder, x: str, c_in: int, c_out: int, k: int, name: str) -> str:
    return b.op("Relu", conv(b, x, c_in, c_out, k, name, pad=k // 2))


def _module(b: GraphBuilder, x: str, c_in: int, m: InceptionModule) -> str:
    y1 = _conv_relu(b, x, c_in, m.b1, 1, "branch1x1")
    y2 = _conv_relu(b, x, c_in, m.b2[0], 1, "branch3x3_1")
    y2 = _conv_relu(b, y2, m.b2[0], m.b2[1], 3, "branch3x3_2")
    y3 = _conv_relu(b, x, c_in, m.b3[0], 1, "branch3x3dbl_1")
    y3 = _conv_relu(b, y3, m.b3[0], m.b3[1], 3, "branch3x3dbl_2")
    y3 = _conv_relu(b, y3, m.b3[1], m.b3[1], 3, "branch3x3dbl_3")
    with b.scope("branch_pool"):
        pooled = b.op(
            "AveragePool",
            x,
            ceil_mode=0,
            count_include_pad=0,
            kernel_shape=[3, 3],
            pads=[1, 1, 1, 1],
            strides=[1, 1],
        )
    y4 = _conv_relu(b, pooled, c_in, m.pool, 1, "branch_pool")
    return b.op("Concat", y1, y2, y3, y4, axis=1)


def build(size: str = "default", seed: int = 0) -> onnx.ModelProto:
    """Build the Inception example (``size`` is ``"small"`` or ``"default"``)."""
    cfg = CONFIGS[check_size(size)]
    b = GraphBuilder("inception", seed)
    x = b.input("input", [1, cfg.in_channels, cfg.spatial, cfg.spatial])
    c = cfg.in_channels
    for i, m in enumerate(cfg.modules):
        with b.scope(f"Mixed_{i}"):
            x = _module(b, x, c, m)
        c = m.out_channels
    b.output(x, "output", [1, c, cfg.spatial, cfg.spatial])
    doc = (
        f"Inception-v3-style: {len(cfg.modules)} module(s) on {cfg.in_channels}x{cfg.spatial}"
        f"x{cfg.spatial}; four branches (1x1, 1x1-3x3, 1x1-3x3-3x3, avgpool-1x1) concatenated; "
        "the branch 1x1 convs share their input (merge opportunity)."
    )
    return b.finish(doc, size, seed)
