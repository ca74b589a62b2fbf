"""Small builders shared by the tests: one-node and hand-made ONNX models."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F = TensorProto.FLOAT


def vi(name: str, shape, elem=F) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, None if shape is None else list(shape))


def model(nodes, inputs, outputs, inits=(), opset: int = 17, **kw) -> onnx.ModelProto:
    g = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], **kw)
    m.ir_version = 8
    return m


def init(name: str, a) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(a), name)


def run_ort(m: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def run_op(op: str, args, attrs=None, n_out: int = 1):
    """Run a table op the way ``ops.run_node`` does, checking its inferred types on the way."""
    from eqsat.egraph.ir import TensorType
    from eqsat.egraph.opdefs.base import InferCtx
    from eqsat.egraph.ops import OPS

    at = {**(attrs or {}), "_num_outputs": n_out}
    types = [TensorType(a.dtype.name, a.shape) if a is not None else None for a in args]
    want = OPS[op].infer(InferCtx(types, args, at))[:n_out]
    got = OPS[op].run(list(args), at)[:n_out]
    assert [TensorType(g.dtype.name, g.shape) for g in got] == want
    return got
