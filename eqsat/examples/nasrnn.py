"""NAS-RNN cell unrolled over time, after the ``nasrnn`` benchmark of TASO and Tensat.

Inputs are one tensor per step, ``x_0 .. x_{T-1}`` (float32 ``[batch, hidden]``, the way TASO's
``examples/nasrnn.py`` feeds them; no Slice/Split plumbing), plus the initial state ``h0``.
The output ``output`` is the final state ``h_T``.

Every step computes eight gates ``t[i] = MatMul(x_t, Wx[i]) + MatMul(h, Wh[i])``: the eight
x-side MatMuls share ``x_t`` and the eight h-side MatMuls share ``h``, so each group can be
merged into one wide MatMul (TASO's main win on this model). The gates are combined with the
NASCell tree of TASO's ``nas_node``, reproduced exactly::

    m0 = Relu(t0) + Sigmoid(t3)          m1 = Sigmoid(t1) + Tanh(t2)
    m2 = Sigmoid(t4) * Tanh(t5)          m3 = Sigmoid(t6) * Relu(t7)
    m4 = Sigmoid(m1) + Tanh(m2)          m5 = Tanh(m0) * Tanh(m3)
    h' = Tanh(Tanh(m4) * Tanh(m5))

Unlike TASO (which draws fresh weights at every step) the 16 weight matrices are shared
across steps, as in any real RNN export; this also keeps the default model at 16 MB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from eqsat.examples._builder import GraphBuilder, check_size


@dataclass(frozen=True)
class NasRnnConfig:
    """Shape parameters of one NAS-RNN variant."""

    steps: int
    hidden: int
    batch: int


CONFIGS = {
    "small": NasRnnConfig(steps=2, hidden=16, batch=1),
    "default": NasRnnConfig(steps=5, hidden=512, batch=1),
}
GATES = 8


def _nas_node(b: GraphBuilder, x: str, h: str, wx: list[str], wh: list[str]) -> str:
    t = [b.op("Add", b.op("MatMul", x, wx[i]), b.op("MatMul", h, wh[i])) for i in range(GATES)]
    m0 = b.op("Add", b.op("Relu", t[0]), b.op("Sigmoid", t[3]))
    m1 = b.op("Add", b.op("Sigmoid", t[1]), b.op("Tanh", t[2]))
    m2 = b.op("Mul", b.op("Sigmoid", t[4]), b.op("Tanh", t[5]))
    m3 = b.op("Mul", b.op("Sigmoid", t[6]), b.op("Relu", t[7]))
    m4 = b.op("Add", b.op("Sigmoid", m1), b.op("Tanh", m2))
    m5 = b.op("Mul", b.op("Tanh", m0), b.op("Tanh", m3))
    m6 = b.op("Mul", b.op("Tanh", m4), b.op("Tanh", m5))
    return b.op("Tanh", m6)


def build(size: str = "default", seed: int = 0) -> onnx.ModelProto:
    """Build the unrolled NAS-RNN example (``size`` is ``"small"`` or ``"default"``)."""
    cfg = CONFIGS[check_size(size)]
    b = GraphBuilder("nasrnn", seed)
    shape = [cfg.batch, cfg.hidden]
    xs = [b.input(f"x_{t}", shape) for t in range(cfg.steps)]
    h = b.input("h0", shape)
    # Xavier-like: with x ~ N(0, 1) and |h| < 1 every gate pre-activation stays O(1).
    std = 1.0 / math.sqrt(cfg.hidden)
    wx: list[str] = []
    wh: list[str] = []
    with b.scope("cell"):
        for i in range(GATES):
            with b.scope(f"gate{i}"):
                wx.append(b.normal("weight_x", (cfg.hidden, cfg.hidden), std))
                wh.append(b.normal("weight_h", (cfg.hidden, cfg.hidden), std))
    for t, x in enumerate(xs):
        with b.scope(f"step.{t}"):
            h = _nas_node(b, x, h, wx, wh)
    b.output(h, "output", shape)
    doc = (
        f"NAS-RNN (TASO nasrnn cell) unrolled over {cfg.steps} steps, hidden {cfg.hidden}, "
        f"batch {cfg.batch}; per step 8 x-MatMuls share x_t and 8 h-MatMuls share h "
        "(merge opportunities). Weights shared across steps."
    )
    return b.finish(doc, size, seed)
