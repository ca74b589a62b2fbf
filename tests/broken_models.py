"""A corpus of broken ONNX files, made with onnx.helper: what a user may bring by mistake.

``write_corpus(folder)`` writes each case as ``folder/NAME.onnx`` (with its side files) and
returns the cases; ``python -m tests.broken_models DIR`` writes them for poking at by hand.
Each case says what eqsat must do with it: ``"error"`` — a one-line error and exit 2, with
``message`` in it — or ``"either"`` — that, or a correct pass-through (exit 0). A stored dim
of -1 or 0 is an "either": whether it reads as a symbolic dim is being decided elsewhere, and
both answers are acceptable; exit 3 (an internal error) or a traceback never is.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.helpers import init, model, vi


@dataclass(frozen=True)
class Case:
    name: str
    expect: str  # "error" (exit 2) or "either" (exit 0 or 2)
    message: str  # a piece of the one-line error, for "error" ("" when any error will do)
    build: Callable[[Path], None]  # writes folder/NAME.onnx (and side files)


def _relu(shape_in, shape_out=None, **kw) -> onnx.ModelProto:
    out = shape_in if shape_out is None else shape_out
    relu = helper.make_node("Relu", ["x"], ["y"])
    return model([relu], [vi("x", shape_in)], [vi("y", out)], **kw)


def _save(m: onnx.ModelProto, path: Path) -> None:
    path.write_bytes(m.SerializeToString())


def _bytes(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


def _model(make: Callable[[], onnx.ModelProto]) -> Callable[[Path], None]:
    return lambda p: _save(make(), p)


def _good() -> onnx.ModelProto:
    w = init("w", np.arange(12, dtype=np.float32).reshape(3, 4))
    return model(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
        [vi("x", ["N", 3])],
        [vi("y", ["N", 4])],
        [w],
    )


def _truncated(p: Path) -> None:
    data = _good().SerializeToString()
    p.write_bytes(data[: len(data) // 2])


def _cyclic() -> onnx.ModelProto:
    return model(
        [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Add", ["x", "a"], ["b"])],
        [vi("x", [2])],
        [vi("b", [2])],
    )


def _two_producers() -> onnx.ModelProto:
    return model(
        [helper.make_node("Relu", ["x"], ["y"]), helper.make_node("Neg", ["x"], ["y"])],
        [vi("x", [2])],
        [vi("y", [2])],
    )


def _unknown_domain() -> onnx.ModelProto:
    m = model(
        [helper.make_node("Frob", ["x"], ["y"], domain="com.acme")], [vi("x", [2])], [vi("y", None)]
    )
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    return m


def _undeclared_domain() -> onnx.ModelProto:  # a domain the opset imports do not declare
    return model(
        [helper.make_node("Frob", ["x"], ["y"], domain="com.acme")], [vi("x", [2])], [vi("y", [2])]
    )


def _unknown_standard_op() -> onnx.ModelProto:
    return model(
        [helper.make_node("NoSuchOp", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])]
    )


def _bad_broadcast() -> onnx.ModelProto:
    return model(
        [helper.make_node("Add", ["x", "z"], ["y"])],
        [vi("x", [2, 3]), vi("z", [4, 5])],
        [vi("y", [2, 3])],
    )


def _matmul_mismatch() -> onnx.ModelProto:
    return model(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        [vi("x", [2, 3])],
        [vi("y", [2, 4])],
        [init("w", np.ones((5, 4), np.float32))],
    )


def _reshape_count() -> onnx.ModelProto:
    return model(
        [helper.make_node("Reshape", ["x", "s"], ["y"])],
        [vi("x", [2, 3])],
        [vi("y", [7])],
        [init("s", np.array([7], np.int64))],
    )


def _declared_output_disagrees() -> onnx.ModelProto:
    return _relu([2, 3], [5])


def _mixed_dtypes() -> onnx.ModelProto:
    return model(
        [helper.make_node("Add", ["x", "i"], ["y"])],
        [vi("x", [2]), vi("i", [2], TensorProto.INT64)],
        [vi("y", [2])],
    )


def _bad_perm() -> onnx.ModelProto:
    return model(
        [helper.make_node("Transpose", ["x"], ["y"], perm=[0, 2])],
        [vi("x", [2, 3])],
        [vi("y", [2, 3])],
    )


def _raw(name: str, dims: list[int], data: bytes) -> TensorProto:
    """A float tensor declaring ``dims`` whatever ``data`` holds (make_tensor would check)."""
    t = TensorProto(name=name, data_type=TensorProto.FLOAT, dims=dims)
    t.raw_data = data
    return t


def _short_initializer() -> onnx.ModelProto:
    w = _raw("w", [4, 4], b"\x00" * 12)
    return model(
        [helper.make_node("Add", ["x", "w"], ["y"])], [vi("x", [4, 4])], [vi("y", [4, 4])], [w]
    )


def _untyped_input() -> onnx.ModelProto:
    m = _relu([2])
    m.graph.input[0].type.Clear()
    return m


def _no_graph_outputs() -> onnx.ModelProto:
    m = _relu([2])
    del m.graph.output[:]
    return m


def _future_opset() -> onnx.ModelProto:
    return _relu([2], opset=99)


def _dims(*dims) -> Callable[[], onnx.ModelProto]:
    def make() -> onnx.ModelProto:
        m = _relu([1] * len(dims))
        for vi_ in (m.graph.input[0], m.graph.output[0]):
            for d, v in zip(vi_.type.tensor_type.shape.dim, dims, strict=True):
                d.dim_value = v
        return m

    return make


def _huge_initializer() -> onnx.ModelProto:  # declared [2^20, 2^20] floats, 16 bytes stored
    w = _raw("w", [1 << 20, 1 << 20], b"\x00" * 16)
    return model(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        [vi("x", [1 << 20, 1 << 20])],
        [vi("y", [1 << 20, 1 << 20])],
        [w],
    )


def _external(location: str, keep_data: bool) -> Callable[[Path], None]:
    """A model whose weight lives in an external file at ``location``: deleted, or pointing
    outside the model's folder."""

    def build(p: Path) -> None:
        m = _good()
        w = m.graph.initializer[0]
        data = numpy_helper.to_array(w).tobytes()
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", "0"), ("length", str(len(data)))):
            entry = w.external_data.add()
            entry.key, entry.value = k, v
        if keep_data:
            (p.parent / location).write_bytes(data)
        _save(m, p)

    return build


CASES = [
    Case("empty", "error", "", _bytes(b"")),
    Case("garbage", "error", "not a readable ONNX model", _bytes(b"\x00\x01garbage\xff" * 10)),
    Case("text", "error", "", _bytes(b"ir_version: 8\nthis is not a model\n")),
    Case("truncated", "error", "", _truncated),
    Case("cyclic", "error", "cycle", _model(_cyclic)),
    Case("two-producers", "error", "", _model(_two_producers)),
    Case("unknown-domain", "error", "com.acme.Frob", _model(_unknown_domain)),
    Case("undeclared-domain", "error", "com.acme", _model(_undeclared_domain)),
    Case("unknown-standard-op", "error", "NoSuchOp", _model(_unknown_standard_op)),
    Case("bad-broadcast", "error", "", _model(_bad_broadcast)),
    Case("matmul-mismatch", "error", "", _model(_matmul_mismatch)),
    Case("reshape-count", "error", "", _model(_reshape_count)),
    Case("declared-output-disagrees", "either", "", _model(_declared_output_disagrees)),
    Case("mixed-dtypes", "error", "", _model(_mixed_dtypes)),
    Case("bad-perm", "error", "", _model(_bad_perm)),
    Case("short-initializer", "error", "", _model(_short_initializer)),
    Case("untyped-input", "error", "", _model(_untyped_input)),
    Case("no-graph-outputs", "error", "", _model(_no_graph_outputs)),
    Case("future-opset", "error", "", _model(_future_opset)),
    Case("dim-minus-one", "either", "", _model(_dims(-1, 3))),
    Case("dim-zero", "either", "", _model(_dims(0, 3))),
    Case("huge-dims", "error", "", _model(_dims(1 << 40, 1 << 40))),
    Case("huge-initializer", "error", "", _model(_huge_initializer)),
    Case("external-data-missing", "error", "", _external("weights.bin", keep_data=False)),
    Case("external-data-outside", "error", "", _external("../outside.bin", keep_data=True)),
]


def write_corpus(folder: Path) -> list[tuple[Case, Path]]:
    """Each case's file in ``folder`` (which must exist); side files beside them."""
    out = []
    for case in CASES:
        sub = folder / case.name  # a folder per case: external data must not be shared
        sub.mkdir()
        path = sub / f"{case.name}.onnx"
        case.build(path)
        out.append((case, path))
    return out


if __name__ == "__main__":
    dest = Path(sys.argv[1] if len(sys.argv) > 1 else "broken")
    dest.mkdir(parents=True, exist_ok=True)
    for case, path in write_corpus(dest):
        print(f"{case.expect:6s} {path}")
