"""A model over the 2 GB protobuf limit: read from and written to external data (slow)."""

import numpy as np
import onnx
import pytest
from onnx import helper

from eqsat import pipeline
from tests.helpers import init, model, vi


@pytest.mark.slow
def test_model_over_2gb_round_trips_through_external_data(tmp_path):
    rows = 2**29 // 256 + 4096  # 2.1 GiB of float32 weights: more than one protobuf can hold
    nodes = [
        helper.make_node("Gather", ["w", "idx"], ["g"], axis=0),
        helper.make_node("Add", ["g", "two"], ["y"]),
    ]
    m = model(
        nodes,
        [vi("idx", [3], onnx.TensorProto.INT64)],
        [vi("y", [3, 256])],
        [init("two", np.array(2.0, np.float32)), init("unused", np.zeros(4))],
    )
    # The big tensor is written the way exporters do: bytes in a file, a reference in the proto.
    t = m.graph.initializer.add(name="w", data_type=onnx.TensorProto.FLOAT, dims=[rows, 256])
    t.data_location = onnx.TensorProto.EXTERNAL
    t.external_data.add(key="location", value="big.bin")
    w = np.lib.format.open_memmap(tmp_path / "scratch.npy", "w+", np.float32, (rows, 256))
    w[:] = 0.5
    w[1] = 1.5
    with open(tmp_path / "big.bin", "wb") as f:
        w.tofile(f)
    del w
    (tmp_path / "scratch.npy").unlink()
    src = tmp_path / "big.onnx"
    onnx.save_model(m, str(src))
    out = tmp_path / "out.onnx"
    result = pipeline.optimize(src, output=out)
    assert result.verdict.ok and "unused" not in result.graph.weights
    assert (tmp_path / "out.onnx.data").stat().st_size >= 2**31
    assert out.stat().st_size < 1 << 20
    onnx.checker.check_model(str(out), full_check=True)
