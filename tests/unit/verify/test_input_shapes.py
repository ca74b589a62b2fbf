"""Input shapes a user controls (``--input-shape NAME=D0,D1,...`` for optimize, verify and
compile), stored dims of -1 and 0 read as symbolic, and the gate choosing sizes the original
model runs with — or saying, in one line, which input needs which flag."""

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from eqsat import cli
from eqsat.verify import numeric
from tests.helpers import init, model, vi


def _cli(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _save(tmp_path, m, name="m.onnx"):
    p = tmp_path / name
    onnx.save_model(m, str(p))
    return p


def _reshaped(width: int, metadata: dict | None = None):
    """x: [1, n] reshaped to rows of ``width``: runs only when ``width`` divides n."""
    nodes = [
        helper.make_node("Reshape", ["x", "shape"], ["r"]),
        helper.make_node("Relu", ["r"], ["y"]),
    ]
    shape = init("shape", np.array([-1, width], np.int64))
    m = model(nodes, [vi("x", [1, "n"])], [vi("y", ["rows", width])], [shape])
    for k, v in (metadata or {}).items():
        m.metadata_props.add(key=k, value=v)
    return m


def test_paddle_style_minus_one_and_zero_dims_go_through_the_gate(capsys, tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [1, 3])], [vi("y", [1, 3])])
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = -1
    m.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 0
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = -1
    p = _save(tmp_path, m)
    code, out, err = _cli(capsys, "optimize", p, "-o", tmp_path / "o.onnx", "--json")
    assert code == 0, err
    # -1 is a symbol; onnxruntime feeds a stored 0 only empty tensors, so the gate does too,
    # while the optimized model keeps that dim symbolic (the importer's reading)
    assert json.loads(out)["verification"]["dim_values"] == {"x_d0": 2}
    dims = onnx.load(str(tmp_path / "o.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param for d in dims] == ["x_d0", "x_d1"]
    code, _, err = _cli(capsys, "verify", p, tmp_path / "o.onnx")
    assert code == 0, err


def test_reflect_pad_needing_more_samples_than_two_gets_a_size_it_runs_at(capsys, tmp_path):
    """A voice model's reflect-Pad of 32 needs at least 33 samples: 2 fails, 64 runs."""
    nodes = [
        helper.make_node("Pad", ["x", "pads"], ["p"], mode="reflect"),
        helper.make_node("Neg", ["p"], ["q"]),
        helper.make_node("Neg", ["q"], ["y"]),
    ]
    pads = init("pads", np.array([0, 32, 0, 32], np.int64))
    p = _save(tmp_path, model(nodes, [vi("x", ["b", "samples"])], [vi("y", None)], [pads]))
    code, out, err = _cli(capsys, "optimize", p, "-o", tmp_path / "o.onnx", "--json")
    assert code == 0, err
    s = json.loads(out)
    assert s["verification"]["dim_values"] == {"b": 2, "samples": 64}
    assert "Neg" not in s["ops_after"]


def test_model_metadata_hint_is_tried_first(capsys, tmp_path):
    """96 divides none of the generic sizes; the model says ``imgsz: [96]``."""
    p = _save(tmp_path, _reshaped(96, {"imgsz": "[96]"}))
    code, out, err = _cli(capsys, "verify", p, p, "--json")
    assert code == 0, err
    assert json.loads(out)["dim_values"] == {"n": 96}
    bare = _save(tmp_path, _reshaped(96), "bare.onnx")
    code, _, err = _cli(capsys, "verify", bare, bare)
    assert code == 2 and "--input-shape x=1,<n>" in err


def test_original_that_runs_at_no_tried_size_names_the_input_and_the_flag(capsys, tmp_path):
    p = _save(tmp_path, _reshaped(1001))
    out_path = tmp_path / "o.onnx"
    code, _, err = _cli(capsys, "optimize", p, "-o", out_path, "--no-egraph")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "input 'x'" in err and "--input-shape x=1,<n>" in err and not out_path.exists()
    assert "(Reshape node: The input tensor cannot be reshaped" in err  # ORT's reason, short
    code, out, err = _cli(
        capsys, "optimize", p, "-o", out_path, "--input-shape", "x=1,2002", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["verification"]["dim_values"] == {"n": 2002}
    dims = onnx.load(str(out_path)).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 2002]  # specialized, as onnxsim does
    code, _, err = _cli(capsys, "verify", p, p, "--input-shape", "x=1,3003")
    assert code == 0, err


@pytest.mark.parametrize(
    "flag, message",
    [
        ("y=1,64", "the model has no input 'y' (x)"),
        ("x=64", "1 dims given, the input has 2 (1,n)"),
        ("x=2,64", "dim 0 is 1 in the model, not 2"),
        ("x=1,a", "write NAME=D0,D1,... with positive sizes"),
        ("x=1,0", "write NAME=D0,D1,... with positive sizes"),
    ],
)
def test_bad_input_shapes_are_one_line_exit_2(capsys, tmp_path, flag, message):
    p = _save(tmp_path, _reshaped(32))
    for argv in (
        ["optimize", p, "-o", tmp_path / "o.onnx", "--no-egraph"],
        ["verify", p, p],
        ["compile", p, "--no-cache", "--no-optimize"],
    ):
        code, _, err = _cli(capsys, *argv, "--input-shape", flag)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.onnx").exists()


def test_compile_takes_input_shape_beside_shape(capsys, tmp_path):
    m = model(
        [helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["b", "n"])], [vi("y", ["b", "n"])]
    )
    p = _save(tmp_path, m)
    code, out, err = _cli(
        capsys, "compile", p, "--no-cache", "--no-optimize", "--input-shape", "x=3,5",
        "--json",
    )  # fmt: skip
    assert code == 0, err
    s = json.loads(out)
    assert s["inputs"][0]["shape"] == [3, 5] and s["verification"]["dim_values"] == {
        "b": 3,
        "n": 5,
    }
    code, out, err = _cli(
        capsys, "compile", p, "--no-cache", "--no-optimize", "--shape", "b=4", "--json"
    )
    assert code == 0, err
    assert json.loads(out)["inputs"][0]["shape"][0] == 4


def test_size_candidates_keep_fixed_sizes_and_try_the_generic_ones():
    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", ["b", 3, "h", "w"])], [])
    specs = numeric.input_specs(m)
    got = numeric.size_candidates(m, specs, {"h": 7})
    assert got[0] == {"b": 2, "w": 2, "h": 7}
    assert {"b": 2, "w": 64, "h": 7} in got and all(c["h"] == 7 for c in got)
    assert numeric.size_candidates(m, specs, {"b": 1, "h": 1, "w": 1}) == [{"b": 1, "h": 1, "w": 1}]
