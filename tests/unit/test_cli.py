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
        commands = [["optimize", path, "-o", tmp_path / "o.onnx"]]
        if name != "unknown.onnx":  # info shows an untyped model as the file declares it
            commands.append(["info", path])
        for argv in commands:
            code, _, err = _run(capsys, *argv)
            assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o.onnx").exists()


def test_info_shows_an_untyped_model_as_the_file_declares_it(capsys, tmp_path):
    """A value no source can type stops import, not `eqsat info`: ops, params and the
    interface are shown, with the reason on stderr as a one-line warning."""
    from onnx import helper

    from tests.helpers import init, model, vi

    m = model(
        [
            helper.make_node("Frob", ["x"], ["f"], domain="com.acme"),
            helper.make_node("Add", ["f", "w"], ["y"]),
        ],
        [vi("x", [2, 3])],
        [vi("y", None)],
        # v, over SMALL_TENSOR, is read in place (a reference into the file): its bytes count
        [init("w", np.ones((2, 3), np.float32)), init("v", np.zeros(300, np.float32))],
        opset=12,
    )
    m.opset_import.append(helper.make_opsetid("com.acme", 1))
    path = _save(tmp_path, "untyped.onnx", m)
    code, out, err = _run(capsys, "info", path, "--json")
    s = json.loads(out)
    assert code == 0 and "com.acme.Frob is unknown to eqsat" in err
    assert len(err.strip().splitlines()) == 1 and "Frob is unknown" in s["error"]
    assert s["ops"] == {"Add": 1, "com.acme.Frob": 1} and s["opaque_ops"] == ["com.acme.Frob"]
    assert s["params"] == 306 and s["param_bytes"] == 1224
    assert s["flops"] is None and s["opset"] == 12
    assert s["inputs"] == [{"name": "x", "dtype": "float32", "shape": [2, 3]}]
    assert s["outputs"] == [{"name": "y", "dtype": "float32", "shape": None}]
    code, out, _ = _run(capsys, "info", path)
    assert code == 0 and "com.acme.Frob (opaque)" in out and "FLOPs unknown" in out


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


def test_json_failure_prints_an_error_object(capsys, tmp_path, vgg_file, monkeypatch):
    code, out, err = _run(capsys, "optimize", tmp_path / "missing.onnx", "-o", "x.onnx", "--json")
    assert code == 2 and json.loads(out) == {
        "error": f"{tmp_path / 'missing.onnx'}: no such file",
        "exit_code": 2,
    }
    assert len(err.strip().splitlines()) == 1  # the line on stderr stays

    def broken_fold(graph):
        name = next(iter(graph.weights))
        return graph.replace(weights={**graph.weights, name: graph.weights[name] * 2})

    monkeypatch.setattr(passes, "fold_constants", broken_fold)
    code, out, _ = _run(capsys, "optimize", vgg_file, "-o", tmp_path / "o.onnx", "--json")
    s = json.loads(out)
    assert code == 1 and s["exit_code"] == 1 and "verification failed" in s["error"]


def test_info_and_optimize_count_nodes_alike_and_info_shows_the_declared_opset(capsys, tmp_path):
    from onnx import helper

    from tests.helpers import model, vi

    nodes = [
        helper.make_node("Constant", [], ["c"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("Add", ["x", "c"], ["a"]),
        helper.make_node("Relu", ["a"], ["y"]),
    ]
    path = _save(tmp_path, "c.onnx", model(nodes, [vi("x", [2, 3])], [vi("y", [2, 3])], opset=11))
    code, out, _ = _run(capsys, "info", path, "--json")
    info = json.loads(out)
    assert code == 0 and info["opset"] == 11  # as the file declares it (imported as 13)
    code, out, _ = _run(capsys, "optimize", path, "-o", tmp_path / "o.onnx", "--json")
    opt = json.loads(out)
    assert code == 0 and info["nodes"] == opt["nodes_before"] == 3
    assert info["ops"] == opt["ops_before"] == {"Add": 1, "Constant": 1, "Relu": 1}


def test_params_do_not_grow_when_identity_aliases_of_a_weight_are_folded(capsys, tmp_path):
    """A legacy export: the weight is also a graph input, and reaches its second user through
    an Identity; folding the Identity leaves two names for one tensor, which export stores
    once, and the summary counts once."""
    from onnx import helper

    from tests.helpers import init, model, vi

    w = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["W"], ["W2"]),
        helper.make_node("MatMul", ["x", "W"], ["a"]),
        helper.make_node("MatMul", ["a", "W2"], ["y"]),
    ]
    m = model(nodes, [vi("x", [2, 16]), vi("W", [16, 16])], [vi("y", [2, 16])], [init("W", w)])
    m.opset_import[0].version = 9
    path = _save(tmp_path, "legacy.onnx", m)
    out_path = tmp_path / "o.onnx"
    code, out, _ = _run(capsys, "optimize", path, "-o", out_path, "--json")
    s = json.loads(out)
    stored = sum(int(np.prod(t.dims)) for t in onnx.load(str(out_path)).graph.initializer)
    assert code == 0 and s["params_before"] == s["params_after"] == stored == 256
    assert s["nodes_after"] < s["nodes_before"]
