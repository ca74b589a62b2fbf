"""Small ONNX graphs of every contraction form, lowered: shared by the contraction tests (lower)
and the tensorized-codegen tests (backends)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from eqsat.egraph import onnx_io
from eqsat.lower.loops import LoopProgram
from eqsat.lower.lower import lower

rng = np.random.default_rng(5)
F = TensorProto.FLOAT


def _w(name: str, shape) -> onnx.TensorProto:
    a = rng.standard_normal(shape).astype(np.float32)
    return onnx.numpy_helper.from_array(a, name)


def build(nodes, inputs, output, out_shape, inits=()) -> tuple[LoopProgram, dict]:
    """(program, weights): the lowered graph and its weight values."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(output, F, out_shape)], list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    low = lower(onnx_io.import_onnx(model))
    return low.program, low.weights


def matmul(m, n, k, weight=True, epilogue=None):
    """Y = X[m,k] @ W[k,n] (+ bias, relu, residual add)."""
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"])]
    inputs = [("x", [m, k])] + ([] if weight else [("w", [k, n])])
    inits = [_w("w", [k, n])] if weight else []
    last = "y0"
    if epilogue in ("bias", "bias_relu"):
        inits.append(_w("bias", [n]))
        nodes.append(helper.make_node("Add", [last, "bias"], ["y1"]))
        last = "y1"
    if epilogue == "bias_relu":
        nodes.append(helper.make_node("Relu", [last], ["y2"]))
        last = "y2"
    if epilogue == "residual":
        inputs.append(("r", [m, n]))
        nodes.append(helper.make_node("Add", [last, "r"], ["y3"]))
        last = "y3"
    return build(nodes, inputs, last, [m, n], inits)


def attention(b=2, h=2, s=7, d=5):
    """scores = (Q reshaped to heads) @ (K reshaped, transposed) / sqrt(d): BERT's form."""
    shape = helper.make_tensor("shape", TensorProto.INT64, [4], [b, s, h, d])
    nodes = [
        helper.make_node("Reshape", ["q", "shape"], ["q4"]),
        helper.make_node("Reshape", ["k", "shape"], ["k4"]),
        helper.make_node("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        helper.make_node("MatMul", ["qt", "kt"], ["s0"]),
        helper.make_node("Div", ["s0", "scale"], ["y"]),
    ]
    scale = onnx.numpy_helper.from_array(np.array(np.sqrt(d), np.float32), "scale")
    return build(nodes, [("q", [b, s, h * d]), ("k", [b, s, h * d])], "y", [b, h, s, s],
                 [shape, scale])


def gemm_transb(m=9, n=17, k=33):
    nodes = [helper.make_node("Gemm", ["x", "w", "c"], ["y"], transB=1, alpha=0.5)]
    return build(nodes, [("x", [m, k])], "y", [m, n], [_w("w", [n, k]), _w("c", [n])])


def conv(ci=8, co=12, hw=9, kernel=3, stride=1, pad=0, group=1, dilation=1, bn=False,
         residual=False, relu=True, batch=1):
    oh = (hw + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "bias"], ["c0"], kernel_shape=[kernel] * 2,
                              strides=[stride] * 2, pads=[pad] * 4, group=group,
                              dilations=[dilation] * 2)]
    inits = [_w("w", [co, ci // group, kernel, kernel]), _w("bias", [co])]
    inputs = [("x", [batch, ci, hw, hw])]
    last = "c0"
    if bn:
        inits += [_w("g", [co]), _w("beta", [co]), _w("mean", [co]),
                  onnx.numpy_helper.from_array(rng.uniform(0.5, 2, co).astype(np.float32), "var")]
        nodes.append(helper.make_node("BatchNormalization", [last, "g", "beta", "mean", "var"],
                                      ["c1"]))
        last = "c1"
    if residual:
        inputs.append(("r", [batch, co, oh, oh]))
        nodes.append(helper.make_node("Add", [last, "r"], ["c2"]))
        last = "c2"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["c3"]))
        last = "c3"
    return build(nodes, inputs, last, [batch, co, oh, oh], inits)


def concat_conv(parts=(5, 3, 9), co=7, hw=9, kernel=1, batch=1):
    """A channel Concat of inputs (each through a Relu) read by a conv: SqueezeNet's fire
    modules feed their concat to the next 1×1 squeeze conv."""
    names = [f"x{i}" for i in range(len(parts))]
    nodes = [helper.make_node("Relu", [n], [f"r{n}"]) for n in names]
    nodes.append(helper.make_node("Concat", [f"r{n}" for n in names], ["cat"], axis=1))
    nodes.append(helper.make_node("Conv", ["cat", "w"], ["y"], kernel_shape=[kernel] * 2))
    oh = hw - kernel + 1
    inputs = [(n, [batch, c, hw, hw]) for n, c in zip(names, parts, strict=True)]
    return build(nodes, inputs, "y", [batch, co, oh, oh], [_w("w", [co, sum(parts), kernel,
                                                                     kernel])])


def softmax_and_pool():
    """Not contractions: a softmax and a max pool."""
    nodes = [helper.make_node("Softmax", ["x"], ["s"], axis=-1),
             helper.make_node("MaxPool", ["s"], ["y"], kernel_shape=[2, 2])]
    return build(nodes, [("x", [1, 3, 8, 8])], "y", [1, 3, 7, 7])


CASES = {
    "matmul": lambda: matmul(17, 33, 13),
    "matmul_inputs": lambda: matmul(7, 13, 17, weight=False),
    "matmul_bias_relu": lambda: matmul(33, 17, 7, epilogue="bias_relu"),
    "matmul_residual": lambda: matmul(13, 40, 300, epilogue="residual"),
    "gemv": lambda: matmul(1, 33, 17, epilogue="bias"),
    "attention": attention,
    "gemm_transb": gemm_transb,
    "conv1x1": lambda: conv(kernel=1, ci=16, co=7, hw=13),
    "conv3x3_pad": lambda: conv(pad=1, bn=True, residual=True),
    "conv_stride2": lambda: conv(stride=2, pad=1, hw=17, co=33),
    "conv_grouped": lambda: conv(ci=8, co=12, group=4, pad=1, bn=True),
    "conv_dilated": lambda: conv(dilation=2, pad=2, hw=13, relu=False),
    "concat_conv1x1": concat_conv,
}


def force_tensorize(program: LoopProgram) -> LoopProgram:
    """Every contraction kernel annotated ``tensorize=gemm``, however small."""
    import dataclasses

    from eqsat.lower.contraction import match_contraction
    from eqsat.lower.schedule import Tensorize, apply

    kernels = tuple(
        apply(k, (Tensorize(k.body.var, "gemm"),)) if match_contraction(k) is not None else k
        for k in program.kernels
    )
    return dataclasses.replace(program, kernels=kernels)
