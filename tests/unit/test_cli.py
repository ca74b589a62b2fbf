"""The CLI: info/optimize/verify on examples and files, exit codes, one-line errors, atomic
output, and the verification gate refusing a wrong model."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from eqsat import cli, pipeline
from eqsat.egraph import passes
from eqsat.examples import build_example, example_names


@pytest.fixture
def vgg_file(tmp_path):
    p = tmp_path / "vgg.onnx"
    onnx.save_model(build_example("vgg", size="small"), str(p))
    return p


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.mark.parametrize("name", example_names())
def test_info_json_on_every_example(capsys, name):
    code, out, _ = _run(capsys, "info", "--example", name, "--json")
    assert code == 0
    s = json.loads(out)
    assert s["nodes"] == sum(s["ops"].values()) > 0
    assert s["params"] > 0 and s["flops"] > 0
    assert s["inputs"] and s["outputs"]


def test_info_table_on_a_file(capsys, vgg_file):
    code, out, _ = _run(capsys, "info", vgg_file)
    assert code == 0
    assert "Conv" in out and "Gemm" in out and "params" in out and "FLOPs" in out


@pytest.mark.parametrize("name", example_names())
def test_optimize_every_example_writes_a_verified_model(capsys, tmp_path, name, monkeypatch):
    small = build_example(name, size="small")
    monkeypatch.setattr(pipeline, "example_model", lambda n, size="default": small)
    out_path = tmp_path / f"{name}.onnx"
    code, out, _ = _run(capsys, "optimize", "--example", name, "-o", out_path, "--json")
    assert code == 0
    s = json.loads(out)
    assert s["verification"]["ok"] and s["nodes_after"] <= s["nodes_before"]
    assert set(s["times_s"]) >= {"import", "fold", "export", "verify"}
    onnx.checker.check_model(str(out_path), full_check=True)
    code, _, _ = _run(capsys, "verify", out_path, out_path)
    assert code == 0


def test_optimize_folds_constant_nodes(capsys, tmp_path, monkeypatch):
    small = build_example("bert", size="small")
    monkeypatch.setattr(pipeline, "example_model", lambda n, size="default": small)
    code, out, _ = _run(capsys, "optimize", "--example", "bert", "-o", tmp_path / "b.onnx")
    assert code == 0
    s = json.loads(
        _run(capsys, "optimize", "--example", "bert", "-o", tmp_path / "c.onnx", "--json")[1]
    )
    assert s["ops_before"]["Constant"] == 8 and "Constant" not in s["ops_after"]
    assert s["nodes_after"] < s["nodes_before"] == len(small.graph.node)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "b.onnx")).graph.node}
    assert "Constant" not in ops and "MatMul" in ops
    assert "verified" in out and "total" in out


def test_verify_detects_a_different_model(capsys, tmp_path, vgg_file):
    m = onnx.load(str(vgg_file))
    w = m.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(w) * 1.5
    w.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), w.name))
    other = tmp_path / "other.onnx"
    onnx.save_model(m, str(other))
    code, out, _ = _run(capsys, "verify", vgg_file, other)
    assert code == 1 and "DIFFERENT" in out
    code, out, _ = _run(capsys, "verify", vgg_file, other, "--json")
    assert code == 1 and json.loads(out)["ok"] is False


def test_gate_refuses_a_wrong_optimization_and_writes_nothing(
    capsys, tmp_path, vgg_file, monkeypatch
):
    def broken_fold(graph):
        name = next(iter(graph.weights))
        return graph.replace(weights={**graph.weights, name: graph.weights[name] * 2})

    monkeypatch.setattr(passes, "fold_constants", broken_fold)
    out_path = tmp_path / "never.onnx"
    code, _, err = _run(capsys, "optimize", vgg_file, "-o", out_path)
    assert code == 1
    assert "verification failed" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == [vgg_file]  # no output, no temporary left


@pytest.mark.parametrize(
    "argv, message",
    [
        (["info", "{tmp}/missing.onnx"], "no such file"),
        (["info", "{tmp}/garbage.onnx"], "not a readable ONNX model"),
        (["info", "{tmp}/truncated.onnx"], "truncated.onnx"),
        (["optimize", "{tmp}/truncated.onnx", "-o", "{tmp}/o.onnx"], "truncated.onnx"),
        (["verify", "{tmp}/garbage.onnx", "{tmp}/garbage.onnx"], "garbage.onnx"),
        (["optimize", "{tmp}/vgg.onnx"], "-o/--output is required"),
        (["optimize", "--example", "nope", "-o", "{tmp}/o.onnx"], "nope"),
        (["optimize", "{tmp}/vgg.onnx", "-o", "{tmp}/vgg.onnx"], "overwrite the input"),
        (["optimize", "{tmp}/vgg.onnx", "-o", "{tmp}/no/such/dir/o.onnx"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, vgg_file, argv, message):
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01garbage\xff" * 10)
    (tmp_path / "truncated.onnx").write_bytes(vgg_file.read_bytes()[:300])
    code, out, err = _run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "o.onnx").exists()


def test_console_script_runs_without_traceback(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"nope")
    r = subprocess.run(
        [sys.executable, "-m", "eqsat", "info", str(bad)], capture_output=True, text=True
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.startswith("eqsat:")
    r = subprocess.run([sys.executable, "-m", "eqsat", "bogus"], capture_output=True, text=True)
    assert r.returncode == 2


def _save(tmp_path, name, m):
    p = tmp_path / name
    onnx.save_model(m, str(p))
    return p


def test_structurally_bad_models_are_one_line_exit_2(capsys, tmp_path):
    from onnx import helper

    from tests.helpers import model, vi

    cyclic = model(
        [helper.make_node("Relu", ["b"], ["a"]), helper.make_node("Add", ["x", "a"], ["b"])],
        [vi("x", [2])],
        [vi("b", [2])],
    )
    unknown = model(
        [helper.make_node("Frob", ["x"], ["y"], domain="com.acme")], [vi("x", [2])], [vi("y", None)]
    )
    unknown.opset_import.append(helper.make_opsetid("com.acme", 1))
    missing = model(
        [helper.make_node("Add", ["x", "nowhere"], ["y"])], [vi("x", [2])], [vi("y", [2])]
    )
    for name, m, msg in [
        ("cyclic.onnx", cyclic, "cycle"),
        ("unknown.onnx", unknown, "com.acme.Frob is unknown to eqsat"),
        ("missing.onnx", missing, "nowhere"),
    ]:
        path = _save(tmp_path, name, m)
        for argv in (["info", path], ["optimize", path, "-o", tmp_path / "o.onnx"]):
            code, _, err = _run(capsys, *argv)
            assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.onnx").exists()


def test_unknown_op_ort_cannot_run_needs_no_verify(capsys, tmp_path):
    from onnx import helper

    from tests.helpers import model, vi

    m = model(
        [helper.make_node("Frob", ["x"], ["y"], domain="com.acme")], [vi("x", [2])], [vi("y", [2])]
    )
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    path = _save(tmp_path, "frob.onnx", m)
    code, _, err = _run(capsys, "optimize", path, "-o", tmp_path / "o.onnx")
    assert code == 2 and "--no-verify" in err and not (tmp_path / "o.onnx").exists()
    code, out, _ = _run(capsys, "optimize", path, "-o", tmp_path / "o.onnx", "--no-verify")
    assert code == 0 and "not verified" in out
    kept = onnx.load(str(tmp_path / "o.onnx"))
    assert [(n.op_type, n.domain) for n in kept.graph.node] == [("Frob", "com.acme")]


def test_unnamed_dynamic_dims_become_symbols(capsys, tmp_path):
    from onnx import helper

    from tests.helpers import model, vi

    m = model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [None, 3])], [vi("y", [None, 3])])
    path = _save(tmp_path, "dyn.onnx", m)
    code, out, _ = _run(capsys, "info", path, "--json")
    assert code == 0 and json.loads(out)["inputs"][0]["shape"] == ["x_d0", 3]
    code, _, _ = _run(capsys, "optimize", path, "-o", tmp_path / "o.onnx")
    assert code == 0


def test_calibrate_and_examples_commands(capsys, tmp_path):
    code, out, _ = _run(capsys, "calibrate", "-o", tmp_path / "c.json")
    assert code == 0 and "GB/s" in out and (tmp_path / "c.json").is_file()
    code, out, _ = _run(capsys, "examples")
    assert code == 0 and out.split() == example_names()
    code, _, _ = _run(
        capsys, "examples", "--write", "vgg", "--size", "small", "-o", tmp_path / "v.onnx"
    )
    assert code == 0
    onnx.checker.check_model(str(tmp_path / "v.onnx"), full_check=True)


def test_egraph_failure_falls_back_to_the_folded_model(capsys, tmp_path, vgg_file, monkeypatch):
    from eqsat.egraph import encode

    def broken(graph):
        raise RuntimeError("simulated egglog panic")

    monkeypatch.setattr(encode, "encode", broken)
    code, out, err = _run(capsys, "optimize", vgg_file, "-o", tmp_path / "o.onnx")
    assert code == 0 and "e-graph stage failed" in err and "simulated" in err
    assert (tmp_path / "o.onnx").exists() and "verified" in out
    code, out, _ = _run(capsys, "optimize", vgg_file, "-o", tmp_path / "p.onnx", "--json")
    assert json.loads(out)["egraph"]["fallback"] == "folded graph"


def test_io_errors_are_one_line_exit_2(capsys, tmp_path, vgg_file, monkeypatch):
    from eqsat.egraph import onnx_io

    def full_disk(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(onnx_io, "save_model", full_disk)
    code, _, err = _run(capsys, "optimize", vgg_file, "-o", tmp_path / "o.onnx")
    assert code == 2 and "No space left" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists() and not list(tmp_path.glob(".eqsat-*"))
