"""SqueezeNet-1.1-style network: a strided stem followed by fire modules.

Input ``input`` float32 ``[1, 3, H, W]`` (small: ``[1, 8, 8, 8]`` with no stem); output
``output`` is the last fire module's feature map. A fire module is::

    s = Relu(Conv1x1(x))                        # squeeze
    y = Concat(Relu(Conv1x1(s)), Relu(Conv3x3(s, pads=1)), axis=1)   # two expand branches

All convs carry a bias input, as torchvision's SqueezeNet exports them; the stem and squeeze
convs use a halved init gain to offset the scale growth of the ceil-mode max pools. The two
expand convs read the same tensor, so the 1x1 kernel can be zero-padded to 3x3 and both merged
into one conv whose output is already the concatenation: the TASO/Tensat SqueezeNet rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from eqsat.examples._builder import GraphBuilder, check_size, conv


@dataclass(frozen=True)
class SqueezeNetConfig:
    """Shape parameters of one SqueezeNet variant.

    ``fires`` lists ``(squeeze, expand1x1, expand3x3)`` channel counts; ``"M"`` marks a
    3x3/2 ceil-mode MaxPool between fire modules.
    """

    in_channels: int
    spatial: int
    stem: int  # stem conv output channels; 0 means no stem
    fires: tuple[tuple[int, int, int] | str, ...]


CONFIGS = {
    "small": SqueezeNetConfig(in_channels=8, spatial=8, stem=0, fires=((4, 8, 8),)),
    "default": SqueezeNetConfig(
        in_channels=3,
        spatial=224,
        stem=64,
        fires=((16, 64, 64), (16, 64, 64), "M", (32, 128, 128), (32, 128, 128)),
    ),
}


def _max_pool(b: GraphBuilder, x: str) -> str:
    return b.op("MaxPool", x, ceil_mode=1, kernel_shape=[3, 3], pads=[0, 0, 0, 0], strides=[2, 2])


def _pool_out(n: int) -> int:
    return -(-(n - 3) // 2) + 1  # ceil_mode=1, kernel 3, stride 2, no padding


def _fire(b: GraphBuilder, x: str, c_in: int, sq: int, e1: int, e3: int) -> str:
    s = b.op("Relu", conv(b, x, c_in, sq, 1, "squeeze", gain=1.0))
    y1 = b.op("Relu", conv(b, s, sq, e1, 1, "expand1x1"))
    y3 = b.op("Relu", conv(b, s, sq, e3, 3, "expand3x3", pad=1))
    return b.op("Concat", y1, y3, axis=1)


def build(size: str = "default", seed: int = 0) -> onnx.ModelProto:
    """Build the SqueezeNet example (``size`` is ``"small"`` or ``"default"``)."""
    cfg = CONFIGS[check_size(size)]
    b = GraphBuilder("squeezenet", seed)
    x = b.input("input", [1, cfg.in_channels, cfg.spatial, cfg.spatial])
    c, n, idx = cfg.in_channels, cfg.spatial, 0
    with b.scope("features"):
        if cfg.stem:
            x = b.op("Relu", conv(b, x, c, cfg.stem, 3, "0", stride=2, gain=1.0))
            c, n = cfg.stem, (n - 3) // 2 + 1
            x, n, idx = _max_pool(b, x), _pool_out(n), 3
        for fire in cfg.fires:
            if isinstance(fire, str):
                x, n = _max_pool(b, x), _pool_out(n)
            else:
                with b.scope(str(idx)):
                    x = _fire(b, x, c, *fire)
                c = fire[1] + fire[2]
            idx += 1
    b.output(x, "output", [1, c, n, n])
    n_fire = sum(not isinstance(f, str) for f in cfg.fires)
    doc = (
        f"SqueezeNet-1.1-style: {'stem conv+maxpool, ' if cfg.stem else ''}{n_fire} fire "
        f"module(s) on {cfg.in_channels}x{cfg.spatial}x{cfg.spatial}; expand1x1/expand3x3 "
        "share the squeeze output (merge opportunity)."
    )
    return b.finish(doc, size, seed)
