"""Blocked channel layouts between direct convolutions (backends/llvm/layout.py): which temps the
pass blocks (conv chains, through bias / BN / ReLU epilogues) and which it leaves row-major
(a GEMM or a residual reads them, channels not a multiple of the block); every chain compiled
with its blocked temps equals interpret() of the unscheduled program at 1 and 2 threads; the
IR checker and the backend refuse blocked buffers where they cannot be."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.codegen import emit
from eqsat.backends.llvm.layout import block_layouts, blocked_buffers
from eqsat.backends.llvm.runtime import compile as llvm_compile
from eqsat.egraph import onnx_io
from eqsat.lower.analysis import replace_buffer, walk
from eqsat.lower.check import check_program
from eqsat.lower.interpret import interpret
from eqsat.lower.loops import Const, For, LoopIRError
from eqsat.lower.lower import lower
from eqsat.lower.schedule_gemm import tensorize_contractions

VW = Capabilities.host().vector_width
rng = np.random.default_rng(3)


def chain(layers, ci=VW, hw=12, batch=1):
    """(lowered program, weights) of an NCHW chain: ``("conv", oc, k, pad, stride)`` (+ bias
    and ReLU), ``("bn", )`` (BatchNorm of the last output), ``("pool", )`` (MaxPool 2x2/2),
    ``("res", )`` (add the chain's previous conv input: a residual), ``("concat", oc)`` (the
    last output and a 1x1 conv of it to ``oc`` channels, concatenated on the channels)."""
    nodes, inits = [], []
    last, c, h, prev = "x", ci, hw, None

    def w(name, shape, scale=1.0):
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        inits.append(onnx.numpy_helper.from_array(a, name))
        return name

    def conv(src, cin, oc, k, pad, stride, tag):
        nodes.append(helper.make_node(
            "Conv", [src, w(f"w{tag}", [oc, cin, k, k], (2.0 / (cin * k * k)) ** 0.5),
                     w(f"b{tag}", [oc], 0.1)], [f"c{tag}"], kernel_shape=[k, k],
            pads=[pad] * 4, strides=[stride] * 2))
        nodes.append(helper.make_node("Relu", [f"c{tag}"], [f"r{tag}"]))
        return f"r{tag}"

    for i, (kind, *args) in enumerate(layers):
        if kind == "conv":
            oc, k, pad, stride = args
            prev, last = last, conv(last, c, oc, k, pad, stride, i)
            c, h = oc, (h + 2 * pad - k) // stride + 1
        elif kind == "bn":
            names = [w(f"{n}{i}", [c]) for n in ("g", "beta", "mean")]
            var = onnx.numpy_helper.from_array(rng.uniform(0.5, 2, c).astype(np.float32),
                                               f"var{i}")
            inits.append(var)
            nodes.append(helper.make_node("BatchNormalization", [last, *names, f"var{i}"],
                                          [f"bn{i}"]))
            last = f"bn{i}"
        elif kind == "pool":
            nodes.append(helper.make_node("MaxPool", [last], [f"p{i}"], kernel_shape=[2, 2],
                                          strides=[2, 2]))
            last, h = f"p{i}", h // 2
        elif kind == "res":
            nodes.append(helper.make_node("Add", [last, prev], [f"a{i}"]))
            last = f"a{i}"
        elif kind == "concat":
            side = conv(last, c, args[0], 1, 0, 1, f"s{i}")
            nodes.append(helper.make_node("Concat", [last, side], [f"cat{i}"], axis=1))
            last, c = f"cat{i}", c + args[0]
    graph = helper.make_graph(
        nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                       [batch, ci, hw, hw])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, [batch, c, h, h])], inits)
    low = lower(onnx_io.import_onnx(helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)])))
    return low.program, low.weights


def _blocked(p):
    return block_layouts(tensorize_contractions(p, min_macs=0), VW)


def _check(p, weights, threads):
    q = _blocked(p)
    check_program(q)
    feeds = dict(weights)
    for b in p.inputs:
        feeds[b.name] = rng.standard_normal(b.shape).astype(np.float32)
    want = interpret(p, feeds)
    got = llvm_compile(q, threads=threads, use_cache=False).run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)
    return q


CHAINS = {  # layers, and how many temps the pass blocks
    "two_convs": ([("conv", 2 * VW, 3, 1, 1), ("conv", VW, 3, 1, 1)], 1),
    "three_convs_stride": ([("conv", 2 * VW, 3, 1, 1), ("conv", 2 * VW, 3, 1, 2),
                            ("conv", VW, 3, 0, 1)], 2),
    "bn_between": ([("conv", VW, 3, 1, 1), ("bn",), ("conv", 3 * VW, 3, 1, 1)], 1),
    # VGG's: the pool runs with the channel lanes innermost, reading and writing blocks
    "pool_between": ([("conv", 2 * VW, 3, 1, 1), ("conv", 2 * VW, 3, 1, 1), ("pool",),
                      ("conv", VW, 3, 1, 1)], 3),
}


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chains_equal_interpret(name, threads):
    """The temps between direct convs (through pools) are blocked, and the compiled chain
    computes what the unscheduled program does."""
    layers, blocked = CHAINS[name]
    p, weights = chain(layers)
    q = _check(p, weights, threads)
    assert len(blocked_buffers(q)) == blocked


def test_batch_of_images():
    """Several images: the blocked store and the transposing one address image ``n``."""
    layers, blocked = CHAINS["pool_between"]
    p, weights = chain(layers, batch=3)
    assert len(blocked_buffers(_check(p, weights, 2))) == blocked


@pytest.mark.parametrize("layers", [
    [("conv", 2 * VW, 3, 1, 1), ("pool",), ("conv", VW, 1, 0, 1)],  # a 1x1 GEMM reads the pool
    [("conv", VW, 3, 1, 1), ("conv", VW, 3, 1, 1), ("res",)],  # the residual add reads it
    [("conv", VW, 3, 1, 1), ("concat", VW), ("conv", VW, 3, 1, 1)],  # a 1x1 GEMM conv reads it
    [("conv", VW + 3, 3, 1, 1), ("conv", VW, 3, 1, 1)],  # channels not whole blocks
])
def test_row_major_where_another_reader(layers):
    """A temp that a kernel other than a direct conv's input copy or a blocked pool reads (or
    one whose channels are not whole blocks) stays row-major, and so do the temps that would
    leave a pool half blocked; the program is still right."""
    p, weights = chain(layers)
    assert blocked_buffers(_check(p, weights, 1)) == ()


def test_pool_lanes_innermost():
    """The blocked pool's every statement sits in a 16-lane (vw) loop, innermost."""
    p, _ = chain(CHAINS["pool_between"][0])
    q = _blocked(p)
    (pool,) = [k for k in q.kernels if "pool" in k.name]
    inner = [n for n in walk(pool.body) if isinstance(n, For) and n.var.startswith("i1.l")]
    assert len(inner) == 2 and all(n.extent == Const(VW) for n in inner)
    assert all(not isinstance(n.body, For) for n in inner)


def test_checker_and_backend_refuse_misplaced_blocks():
    p, _ = chain([("conv", VW, 3, 1, 1), ("conv", VW, 1, 0, 1)])  # the 1x1: a GEMM
    q = tensorize_contractions(p, min_macs=0)
    assert blocked_buffers(block_layouts(q, VW)) == ()
    (t,) = q.temps
    bad = dataclasses.replace(t, blocked=VW)  # the pass would not; force it blocked everywhere
    kernels = tuple(dataclasses.replace(k, params=tuple(bad if x == t else x for x in k.params),
                                        body=replace_buffer(k.body, t, bad)) for k in q.kernels)
    mixed = dataclasses.replace(q, kernels=kernels, buffers=tuple(
        bad if b == t else b for b in q.buffers))
    check_program(mixed)  # a valid IR ...
    with pytest.raises(ValueError, match="blocked buffer"):
        emit(mixed)  # ... that the backend refuses: the GEMM's packer reads row-major
    odd = dataclasses.replace(q.outputs[0], blocked=VW)
    with pytest.raises(LoopIRError, match="blocked"):
        check_program(dataclasses.replace(q, buffers=tuple(
            odd if b == q.outputs[0] else b for b in q.buffers)))


def test_fixed_kernels_are_not_rewritten():
    """A kernel with a schedule chosen elsewhere (a tuning log's) keeps its loops, so the
    temps around it stay row-major; the conv→conv temp is still blocked."""
    p, _ = chain(CHAINS["pool_between"][0])
    q = tensorize_contractions(p, min_macs=0)
    (pool,) = [k.name for k in q.kernels if "pool" in k.name]
    r = block_layouts(q, VW, fixed={pool})
    assert len(blocked_buffers(r)) == 1
    assert [k for k in r.kernels if k.name == pool] == [k for k in q.kernels if k.name == pool]
