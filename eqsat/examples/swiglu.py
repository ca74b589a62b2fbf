"""LLaMA-style SwiGLU MLP blocks with RMSNorm, shaped like a ``torch.onnx.export`` at opset 17.

Input ``input`` float32 ``[batch, seq, d]`` with a symbolic ``batch`` dim; output ``output``
has the same shape. Each pre-norm block is::

    n    = w * (x * (1 / Sqrt(ReduceMean(Pow(x, 2), axes=[-1], keepdims=1) + eps)))
    gate = MatMul(n, Wg);  up = MatMul(n, Wu)          # bias-free, sharing n
    x    = x + MatMul(gate * Sigmoid(gate) * up, Wd)    # SiLU exported as Sigmoid + Mul

and a final RMSNorm follows the last block. RMSNorm is spelled the way torch exports
``x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)``: Pow, ReduceMean (``axes`` is an
attribute at opset 17), Add, Sqrt, Div(1, .), Mul, Mul. The gate and up projections read the
same normalised input, so they can be merged into one MatMul with a doubled output width.
"""

from __future__ import annotations

from dataclasses import dataclass

import onnx

from eqsat.examples._builder import GraphBuilder, check_size, linear

EPS = 1e-6


@dataclass(frozen=True)
class SwiGluConfig:
    """Shape parameters of one SwiGLU variant."""

    layers: int
    seq: int
    dim: int
    hidden: int


CONFIGS = {
    "small": SwiGluConfig(layers=1, seq=8, dim=16, hidden=32),
    "default": SwiGluConfig(layers=2, seq=64, dim=512, hidden=1376),
}


def _rms_norm(b: GraphBuilder, x: str, dim: int, name: str) -> str:
    with b.scope(name):
        weight = b.normal("weight", (dim,), std=0.05, mean=1.0)
        var = b.op("ReduceMean", b.op("Pow", x, b.const(2.0)), axes=[-1], keepdims=1)
        rstd = b.op("Div", b.const(1.0), b.op("Sqrt", b.op("Add", var, b.const(EPS))))
        return b.op("Mul", weight, b.op("Mul", x, rstd))


def _mlp(b: GraphBuilder, x: str, cfg: SwiGluConfig) -> str:
    with b.scope("mlp"):
        gate = linear(b, x, cfg.dim, cfg.hidden, "gate_proj", bias=False)
        up = linear(b, x, cfg.dim, cfg.hidden, "up_proj", bias=False)
        with b.scope("act_fn"):
            act = b.op("Mul", gate, b.op("Sigmoid", gate))
        return linear(b, b.op("Mul", act, up), cfg.hidden, cfg.dim, "down_proj", bias=False)


def build(size: str = "default", seed: int = 0) -> onnx.ModelProto:
    """Build the SwiGLU MLP example (``size`` is ``"small"`` or ``"default"``)."""
    cfg = CONFIGS[check_size(size)]
    b = GraphBuilder("swiglu", seed)
    shape = ["batch", cfg.seq, cfg.dim]
    x = b.input("input", shape)
    for i in range(cfg.layers):
        with b.scope(f"layers.{i}"):
            h = _rms_norm(b, x, cfg.dim, "post_attention_layernorm")
            x = b.op("Add", x, _mlp(b, h, cfg))
    x = _rms_norm(b, x, cfg.dim, "norm")
    b.output(x, "output", shape)
    doc = (
        f"LLaMA-style SwiGLU MLP stack: {cfg.layers} pre-RMSNorm block(s), seq {cfg.seq}, "
        f"d {cfg.dim}, hidden {cfg.hidden}, symbolic batch, final RMSNorm; gate/up MatMuls "
        "share their input (merge opportunity)."
    )
    return b.finish(doc, size, seed)
