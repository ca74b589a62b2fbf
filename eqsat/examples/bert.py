"""BERT-style transformer encoder stack, shaped like a ``torch.onnx.export`` of BERT.

Input ``input`` is float32 ``[batch, seq, hidden]`` with a symbolic ``batch`` dim (the
embedding lookup is left out); output ``output`` has the same shape. Each post-norm layer is::

    q, k, v = MatMul(x, Wq) + bq, MatMul(x, Wk) + bk, MatMul(x, Wv) + bv   # bias-first Add
    q, v    -> Reshape [0, seq, heads, hd] -> Transpose [0, 2, 1, 3]
    k       -> Reshape [0, seq, heads, hd] -> Transpose [0, 2, 3, 1]
    ctx     = MatMul(Softmax(MatMul(q, k) / sqrt(hd), axis=-1), v)
    ctx     -> Transpose [0, 2, 1, 3] -> Reshape [0, seq, hidden] -> MatMul + Add
    x       = LayerNormalization(ctx + x)
    h       = gelu(MatMul(x, W1) + b1)   # x * 0.5 * (1 + Erf(x / sqrt(2))): Div, Erf, Add, Mul, Mul
    x       = LayerNormalization(MatMul(h, W2) + b2 + x)

The three Q/K/V ``MatMul`` nodes share their left operand: TASO/Tensat merge them into one
wider ``MatMul`` followed by a split, which is their headline BERT rewrite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import onnx

from eqsat.examples._builder import GraphBuilder, check_size, linear


@dataclass(frozen=True)
class BertConfig:
    """Shape parameters of one BERT variant."""

    layers: int
    hidden: int
    heads: int
    seq: int
    ffn: int


CONFIGS = {
    "small": BertConfig(layers=1, hidden=32, heads=2, seq=8, ffn=64),
    "default": BertConfig(layers=2, hidden=256, heads=4, seq=128, ffn=1024),
}


def _layer_norm(b: GraphBuilder, x: str, dim: int, name: str) -> str:
    with b.scope(name):
        scale = b.normal("weight", (dim,), std=0.05, mean=1.0)
        bias = b.normal("bias", (dim,), std=0.02)
        return b.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=1e-5)


def _gelu(b: GraphBuilder, x: str) -> str:
    """Exact GELU exactly as torch (``approximate='none'``) exports it at opset 17."""
    with b.scope("gelu"):
        erf = b.op("Erf", b.op("Div", x, b.const(math.sqrt(2.0))))
        return b.op("Mul", b.op("Mul", x, b.op("Add", erf, b.const(1.0))), b.const(0.5))


def _split_heads(b: GraphBuilder, x: str, cfg: BertConfig, perm: list[int]) -> str:
    hd = cfg.hidden // cfg.heads
    shaped = b.op("Reshape", x, b.ints([0, cfg.seq, cfg.heads, hd]))
    return b.op("Transpose", shaped, perm=perm)


def _attention(b: GraphBuilder, x: str, cfg: BertConfig) -> str:
    h = cfg.hidden
    with b.scope("attention"):
        q = linear(b, x, h, h, "query")
        k = linear(b, x, h, h, "key")
        v = linear(b, x, h, h, "value")
        qh = _split_heads(b, q, cfg, [0, 2, 1, 3])
        kt = _split_heads(b, k, cfg, [0, 2, 3, 1])
        vh = _split_heads(b, v, cfg, [0, 2, 1, 3])
        scores = b.op("Div", b.op("MatMul", qh, kt), b.const(math.sqrt(h // cfg.heads)))
        probs = b.op("Softmax", scores, axis=-1)
        ctx = b.op("Transpose", b.op("MatMul", probs, vh), perm=[0, 2, 1, 3])
        ctx = b.op("Reshape", ctx, b.ints([0, cfg.seq, h]))
        out = linear(b, ctx, h, h, "output")
        return _layer_norm(b, b.op("Add", out, x), h, "norm")


def _feed_forward(b: GraphBuilder, x: str, cfg: BertConfig) -> str:
    with b.scope("ffn"):
        inner = _gelu(b, linear(b, x, cfg.hidden, cfg.ffn, "intermediate"))
        out = linear(b, inner, cfg.ffn, cfg.hidden, "output")
        return _layer_norm(b, b.op("Add", out, x), cfg.hidden, "norm")


def build(size: str = "default", seed: int = 0) -> onnx.ModelProto:
    """Build the BERT encoder example (``size`` is ``"small"`` or ``"default"``)."""
    cfg = CONFIGS[check_size(size)]
    b = GraphBuilder("bert", seed)
    shape = ["batch", cfg.seq, cfg.hidden]
    x = b.input("input", shape)
    for i in range(cfg.layers):
        with b.scope(f"layers.{i}"):
            x = _feed_forward(b, _attention(b, x, cfg), cfg)
    b.output(x, "output", shape)
    doc = (
        f"BERT-style encoder: {cfg.layers} post-norm layer(s), hidden {cfg.hidden}, "
        f"{cfg.heads} heads, seq {cfg.seq}, ffn {cfg.ffn}; symbolic batch. Separate Q/K/V "
        "MatMuls share their input (merge opportunity)."
    )
    return b.finish(doc, size, seed)
