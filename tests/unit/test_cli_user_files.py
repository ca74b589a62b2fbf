"""Per-user files: what ``rules discover`` and ``calibrate`` write goes to the user's cache folder
(never into the installed package unless asked), and ``optimize`` can use those files:
``--rules-file`` (a discovered rules file, with the proofs it carries) and ``--calibration``."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import helper

from eqsat import cli, paths
from eqsat.extract import roofline
from eqsat.rules.generated import rulefile
from eqsat.verify import ledger
from tests.helpers import init, model, vi

# x·y + x·z = x·(y + z) over matrices, under a name the package's ledger does not know
ENTRY = {
    "both_ways": False,
    "lhs": "Tensor.add(Tensor.matmul(x, y), Tensor.matmul(x, z))",
    "name": "gen-user-0000",
    "rhs": "Tensor.matmul(x, Tensor.add(y, z))",
    "shapes": {"x": [["a"], ["b"]], "y": [["b"], ["c"]], "z": [["b"], ["c"]]},
}


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("EQSAT_CACHE_DIR", str(folder))
    return folder


@pytest.fixture
def two_matmuls(tmp_path):
    rng = np.random.default_rng(0)
    w1, w2 = (rng.standard_normal((8, 16)).astype(np.float32) for _ in range(2))
    m = model(
        [
            helper.make_node("MatMul", ["x", "w1"], ["a"]),
            helper.make_node("MatMul", ["x", "w2"], ["b"]),
            helper.make_node("Add", ["a", "b"], ["y"]),
        ],
        [vi("x", [4, 8])],
        [vi("y", [4, 16])],
        [init("w1", w1), init("w2", w2)],
    )
    path = tmp_path / "mm.onnx"
    onnx.save_model(m, str(path))
    return path


def test_one_helper_picks_the_user_cache_folder(user_cache):
    from eqsat import compiled
    from eqsat.backends.llvm import jit
    from eqsat.cli_rules import discovered_file
    from eqsat.verify import verdicts

    assert paths.user_cache_dir() == user_cache
    for f in (
        roofline.cache_file(),
        jit.default_cache_dir(),
        compiled.cache_dir(),
        verdicts.cache_file(),
        discovered_file(),
    ):
        assert user_cache in f.parents, f


def _package_files() -> dict:
    return {p: p.read_bytes() for p in (rulefile.RULES_FILE, ledger.LEDGER)}


def test_discover_writes_to_the_user_cache_not_the_package(capsys, user_cache):
    before = _package_files()
    argv = ["rules", "discover", "--max-ops", "2", "--ops", "add,mul", "--variables", "2"]
    code, out, _ = _run(capsys, *argv, "--workers", "1", "--json")
    assert code == 0
    path = user_cache / "rules" / "discovered.json"
    assert json.loads(out)["file"] == str(path)
    data = json.loads(path.read_text())
    names = {r.name for e in data["rules"] for r in rulefile.rules_of(e)}
    assert names and names <= set(data["proofs"])
    assert {p["result"] for p in data["proofs"].values()} == {"proved"}
    assert _package_files() == before  # the installed package's files are untouched


def test_discover_checks_its_output_before_searching(capsys, tmp_path):
    code, _, err = _run(capsys, "rules", "discover", "-o", tmp_path / "no" / "such" / "r.json")
    assert code == 2 and "does not exist" in err and len(err.strip().splitlines()) == 1


def _rules_file(path, with_proofs: bool):
    from eqsat.verify import rules as rv

    (rule,) = rulefile.rules_of(ENTRY)
    v = rv.verify(rule)
    assert v.result == "proved"
    proofs = {v.name: rv.ledger_entry(v)} if with_proofs else None
    rulefile.write([ENTRY], {"settings": {"test": True}}, path, proofs=proofs)
    return path


def _optimize(capsys, model_path, out_path, *extra):
    argv = ["optimize", model_path, "-o", out_path, "--rules", "generated", "--json", *extra]
    code, out, err = _run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def test_optimize_uses_a_discovered_rules_file_and_its_proofs(capsys, tmp_path, two_matmuls):
    proved = _rules_file(tmp_path / "proved.json", with_proofs=True)
    s = _optimize(capsys, two_matmuls, tmp_path / "a.onnx", "--rules-file", proved)
    assert s["egraph"]["unproved_left_out"] == []
    assert s["egraph"]["rules"] == 1  # the file's rule, not the packaged generated family
    assert s["ops_after"]["MatMul"] == 1 and s["verification"]["ok"]
    # the same rule without its proof is left out: a proof is taken from the file, not assumed
    bare = _rules_file(tmp_path / "bare.json", with_proofs=False)
    s = _optimize(capsys, two_matmuls, tmp_path / "b.onnx", "--rules-file", bare)
    assert s["egraph"]["unproved_left_out"] == ["gen-user-0000"]
    assert s["ops_after"]["MatMul"] == 2


def test_the_report_shows_the_rules_files_proofs(capsys, tmp_path, two_matmuls):
    proved = _rules_file(tmp_path / "proved.json", with_proofs=True)
    report = tmp_path / "r.html"
    _optimize(capsys, two_matmuls, tmp_path / "a.onnx", "--rules-file", proved, "--report", report)
    fired = {r["rule"]: r for r in json.loads(report.with_suffix(".json").read_text())["rules"]}
    assert fired["gen-user-0000"]["proof"] == "proved"
    assert fired["gen-user-0000"]["scope"].startswith("bounded")


def test_rules_list_and_verify_read_a_rules_file(capsys, tmp_path, user_cache):
    proved = _rules_file(tmp_path / "proved.json", with_proofs=True)
    bare = _rules_file(tmp_path / "bare.json", with_proofs=False)
    argv = ["rules", "list", "--family", "generated", "--json", "--rules-file"]
    code, out, _ = _run(capsys, *argv, proved)
    assert code == 0 and [(r["name"], r["ledger"]) for r in json.loads(out)] == [
        ("gen-user-0000", "proved")
    ]
    code, out, _ = _run(capsys, *argv, bare)
    assert code == 0 and json.loads(out)[0]["ledger"] == "none"
    argv = ["rules", "verify", "gen-user-0000", "--json", "--rules-file"]
    code, out, _ = _run(capsys, *argv, proved)
    assert code == 0 and json.loads(out)[0]["source"] == "ledger"  # the file's own proof
    code, out, _ = _run(capsys, *argv, bare)
    assert code == 0 and json.loads(out)[0]["source"] == "proved now"
    code, _, err = _run(capsys, "rules", "verify", "--rules-file", bare, "--write-ledger")
    assert code == 2 and err.startswith("eqsat rules verify: error: --write-ledger")


def test_rules_file_adds_the_generated_family(capsys, tmp_path, two_matmuls):
    proved = _rules_file(tmp_path / "proved.json", with_proofs=True)
    code, out, _ = _run(
        capsys, "optimize", two_matmuls, "-o", tmp_path / "o.onnx", "--rules-file", proved, "--json"
    )
    assert code == 0 and json.loads(out)["ops_after"]["MatMul"] == 1


@pytest.mark.parametrize("content", [None, "{not json", '{"rules": 3}'])
def test_a_bad_rules_file_is_one_line_exit_2(capsys, tmp_path, two_matmuls, content):
    path = tmp_path / "rules.json"
    if content is not None:
        path.write_text(content)
    code, _, err = _run(
        capsys, "optimize", two_matmuls, "-o", tmp_path / "o.onnx", "--rules-file", path
    )
    assert code == 2 and "rules.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_optimize_uses_a_calibration_file(capsys, tmp_path, two_matmuls):
    default = json.loads(roofline.DEFAULT_FILE.read_text())
    slow = tmp_path / "slow.json"
    slow.write_text(json.dumps(default | {"overhead_us": default["overhead_us"] * 1000}))
    base = _optimize(capsys, two_matmuls, tmp_path / "a.onnx", "--rules", "algebra")
    s = _optimize(
        capsys, two_matmuls, tmp_path / "b.onnx", "--rules", "algebra", "--calibration", slow
    )
    assert s["egraph"]["cost_before"] > 100 * base["egraph"]["cost_before"]
    # what `eqsat calibrate -o FILE` writes is such a file
    calibrated = tmp_path / "c.json"
    r = subprocess.run(
        [sys.executable, "-m", "eqsat", "calibrate", "-o", str(calibrated)], capture_output=True
    )
    assert r.returncode == 0 and calibrated.is_file()
    s = _optimize(
        capsys, two_matmuls, tmp_path / "c.onnx", "--rules", "algebra", "--calibration", calibrated
    )
    assert "error" not in s["egraph"], s["egraph"]
    assert s["egraph"]["cost_model"] == "roofline" and s["verification"]["ok"]


@pytest.mark.parametrize("content", [None, "{}", "[1, 2]"])
def test_a_bad_calibration_file_is_one_line_exit_2(capsys, tmp_path, two_matmuls, content):
    path = tmp_path / "cal.json"
    if content is not None:
        path.write_text(content)
    code, _, err = _run(
        capsys, "optimize", two_matmuls, "-o", tmp_path / "o.onnx", "--calibration", path
    )
    assert code == 2 and "cal.json" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o.onnx").exists()
