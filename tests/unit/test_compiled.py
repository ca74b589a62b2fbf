"""The compile path end to end: eqsat.compile / CompiledModel.run against onnxruntime, the
artifact's save/load round trip and its refusals, the CLI's compile, run and bench."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

import eqsat
from eqsat import cli, pipeline
from eqsat.compiled import load
from eqsat.errors import InputError, VerificationError
from tests.helpers import init, model, run_ort, vi


@pytest.fixture(scope="module")
def mlp():
    """x[batch, 8] -> relu(x W1 + b1) W2: a symbolic batch dim, two weights, a fused epilogue."""
    rng = np.random.default_rng(0)
    w1, b1 = rng.standard_normal((8, 16)).astype(np.float32), rng.standard_normal(16)
    w2 = rng.standard_normal((16, 4)).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"]),
        helper.make_node("Add", ["h", "b1"], ["hb"]),
        helper.make_node("Relu", ["hb"], ["r"]),
        helper.make_node("MatMul", ["r", "w2"], ["y"]),
    ]
    inits = [init("w1", w1), init("b1", b1.astype(np.float32)), init("w2", w2)]
    return model(nodes, [vi("x", ["batch", 8])], [vi("y", ["batch", 4])], inits)


@pytest.fixture(scope="module")
def compiled(mlp):
    return eqsat.compile(mlp)


def _x(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)


def test_compiled_model_matches_onnxruntime_at_any_batch(mlp, compiled):
    assert compiled.input_names == ["x"] and compiled.output_names == ["y"]
    for batch in (1, 3, 7):
        (got,) = compiled.run({"x": _x(batch)})
        (want,) = run_ort(mlp, {"x": _x(batch)})
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_save_and_load_round_trip(tmp_path, compiled):
    path = compiled.save(tmp_path / "m.eqsat")
    with zipfile.ZipFile(path) as z:
        assert {"manifest.json", "code.o", "weights.npz", "program.txt"} <= set(z.namelist())
        manifest = json.loads(z.read("manifest.json"))
    assert manifest["inputs"][0]["shape"] == ["batch", 8] and manifest["target"] == "llvm"
    again = eqsat.load(path)
    np.testing.assert_array_equal(again.run({"x": _x(5)})[0], compiled.run({"x": _x(5)})[0])


def test_load_refuses_a_cpu_without_the_features(tmp_path, compiled):
    path = compiled.save(tmp_path / "m.eqsat")
    with zipfile.ZipFile(path) as z:
        files = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(files["manifest.json"])
    manifest["features"] += ",+imaginary-feature"
    files["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as z:
        for n, data in files.items():
            z.writestr(n, data)
    with pytest.raises(InputError, match="lacks imaginary-feature"):
        load(path)


def test_load_refuses_what_is_not_a_compiled_model(tmp_path):
    bad = tmp_path / "bad.eqsat"
    bad.write_bytes(b"not a zip")
    with pytest.raises(InputError, match="is not an eqsat compiled model"):
        load(bad)
    with pytest.raises(InputError, match="no such file"):
        load(tmp_path / "missing.eqsat")


def test_run_checks_its_feeds(compiled):
    with pytest.raises(InputError, match="input 'x' is missing"):
        compiled.run({})
    with pytest.raises(InputError, match="dtype float64"):
        compiled.run({"x": _x(2).astype(np.float64)})
    with pytest.raises(InputError, match="shape"):
        compiled.run({"x": np.zeros((2, 9), np.float32)})
    with pytest.raises(InputError, match="no input named 'z'"):
        compiled.run({"x": _x(2), "z": _x(2)})


def test_a_fixed_shape_leaves_no_size_parameter(mlp):
    fixed = pipeline.compile(mlp, pipeline.Options(target="llvm", shapes=(("batch", 4),)))
    assert fixed.compiled.program.sizes == ()
    assert fixed.compiled.inputs[0].shape == (4, 8)
    with pytest.raises(InputError, match="no input has a dim named 'seq'"):
        pipeline.compile(mlp, pipeline.Options(target="llvm", shapes=(("seq", 4),)))


def test_the_ref_backend_runs_the_same_program(mlp):
    ref = eqsat.compile(mlp, target="ref", optimize=False)
    (got,) = ref.run({"x": _x(3)})
    np.testing.assert_allclose(got, run_ort(mlp, {"x": _x(3)})[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="cannot be saved"):
        ref.save("never.eqsat")


def test_an_op_without_a_compute_definition_is_a_one_line_error(tmp_path, capsys):
    m = model(
        [helper.make_node("Einsum", ["a", "b"], ["c"], equation="ij,jk->ik")],
        [vi("a", [2, 3]), vi("b", [3, 4])],
        [vi("c", [2, 4])],
    )
    with pytest.raises(InputError, match="Einsum"):
        eqsat.compile(m, optimize=False)
    src = tmp_path / "e.onnx"
    src.write_bytes(m.SerializeToString())
    code = cli.main(["compile", str(src), "-o", str(tmp_path / "e.eqsat"), "--no-optimize"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "Einsum" in err
    assert not (tmp_path / "e.eqsat").exists()


def test_a_compiled_model_that_differs_is_not_written(mlp, tmp_path, monkeypatch):
    from eqsat import compiled as compiled_module

    real = compiled_module.CompiledModel.run
    monkeypatch.setattr(
        compiled_module.CompiledModel, "run", lambda self, feeds: [o + 1 for o in real(self, feeds)]
    )
    with pytest.raises(VerificationError, match="the compiled model differs from onnxruntime"):
        pipeline.compile(
            mlp, pipeline.Options(target="llvm", cache=False), output=tmp_path / "m.eqsat"
        )
    assert list(tmp_path.iterdir()) == []


def test_cli_compile_then_run(mlp, tmp_path, capsys):
    src = tmp_path / "mlp.onnx"
    src.write_bytes(mlp.SerializeToString())
    art, x = tmp_path / "mlp.eqsat", tmp_path / "x.npy"
    code = cli.main(
        ["compile", str(src), "-o", str(art), "--threads", "1", "--emit", "llvm", str(tmp_path)]
    )
    assert code == 0, capsys.readouterr().err
    assert "verified against onnxruntime" in capsys.readouterr().out
    assert list(tmp_path.glob("*.ll"))
    np.save(x, _x(3))
    out_npz = tmp_path / "y.npz"
    assert cli.main(["run", str(art), "--input", f"x={x}", "-o", str(out_npz), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["outputs"] == [{"name": "y", "shape": [3, 4], "dtype": "float32"}]
    with np.load(out_npz) as z:
        np.testing.assert_allclose(z["y"], run_ort(mlp, {"x": _x(3)})[0], rtol=1e-5, atol=1e-5)
    assert cli.main(["run", str(art)]) == 2
    assert "no value for input 'x'" in capsys.readouterr().err


def test_cli_bench_prints_the_three_rows(mlp, tmp_path, capsys):
    src = tmp_path / "mlp.onnx"
    src.write_bytes(mlp.SerializeToString())
    assert cli.main(["bench", str(src), "--reps", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert [r["what"] for r in rows] == [
        "onnxruntime, original",
        "onnxruntime, optimized by eqsat",
        "eqsat compiled (llvm)",
    ]
    assert all(r["min_ms"] > 0 and r["median_ms"] >= r["min_ms"] for r in rows)
    # each ratio to the first row carries the noise verdict (the report's rule)
    assert all(isinstance(r["vs_first"]["within_noise"], bool) for r in rows[1:])


def test_the_object_code_is_cached(mlp):
    first = eqsat.compile(mlp, optimize=False)
    second = eqsat.compile(mlp, optimize=False)
    assert second.executable.stats.cache_hit
    assert second.executable.object == first.executable.object


TORCH = sorted((Path(__file__).parents[1] / "data" / "torch").glob("*.onnx"))


# one export of each model and each exporter by default; the other two in `make test-slow`
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow)
     if p.stem in ("mobilenetish-ts", "transformer-dynamo") else p for p in TORCH],
    ids=lambda p: p.stem,
)
def test_torch_exports_compile_and_pass_the_gate(path):
    result = pipeline.compile(str(path), pipeline.Options(target="llvm", threads=2, cache=False))
    assert result.verdict.ok and result.compiled.report["kernels"] > 0


def test_a_second_compile_comes_from_the_model_cache(mlp, tmp_path):
    first = pipeline.compile(mlp, pipeline.Options(target="llvm", iter_limit=7))
    assert first.graph is not None and first.verdict.ok
    second = pipeline.compile(mlp, pipeline.Options(target="llvm", iter_limit=7), tmp_path / "c")
    assert second.graph is None and [p.name for p in second.passes] == ["cache"]
    assert second.summary()["cached"] and (tmp_path / "c").exists()
    np.testing.assert_array_equal(
        second.compiled.run({"x": _x(2)})[0], first.compiled.run({"x": _x(2)})[0]
    )
    other = pipeline.compile(mlp, pipeline.Options(target="llvm", iter_limit=8))
    assert other.graph is not None  # other settings, another entry


def test_a_recalibrated_compiler_cost_model_misses_the_model_cache(mlp, monkeypatch, tmp_path):
    import dataclasses
    import json

    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.extract import compiler_cost

    monkeypatch.setenv("EQSAT_CACHE_DIR", str(tmp_path))
    opts = pipeline.Options(target="llvm", iter_limit=7)
    pipeline.compile(mlp, opts)
    assert [p.name for p in pipeline.compile(mlp, opts).passes] == ["cache"]
    # this machine's calibration (`eqsat calibrate --compiler`) replaces the packaged default
    consts = compiler_cost.CompilerConstants.load()
    calibrated = dataclasses.replace(consts, overhead_us=consts.overhead_us * 2)
    path = compiler_cost.cache_file(Capabilities.host().key())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dataclasses.asdict(calibrated)))
    again = pipeline.compile(mlp, opts)
    assert again.graph is not None and "cache" not in [p.name for p in again.passes]
