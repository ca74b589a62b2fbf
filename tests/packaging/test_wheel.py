"""The wheel carries every data file of the package: a wheel without the proof ledger, the
generated rules or the roofline constants installed an eqsat that optimized nothing and exited 0
(issue 22). Builds the wheel (about 3 s) and compares its contents with the package's files."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _data_files() -> set[str]:
    """The package's non-Python files that git tracks (what a checkout runs with)."""
    out = subprocess.run(
        ["git", "ls-files", "eqsat"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if out.returncode != 0:
        pytest.skip("not a git checkout")
    return {f for f in out.stdout.split() if not f.endswith(".py")}


def _clean_copy(dest: Path) -> Path:
    """The tracked files as they are in the working tree, without build leftovers (an
    ``eqsat.egg-info`` from an editable install lists the data files and hid the bug)."""
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in out.stdout.split():
        src, dst = ROOT / name, dest / name
        if src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
    return dest


def _build_wheel(tmp_path) -> Path:
    """The wheel ``pip wheel`` builds from a clean copy of the repository, in ``tmp_path``."""
    src = _clean_copy(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("eqsat-*.whl")
    return wheel


def test_the_wheel_carries_the_package_data(tmp_path):
    data = _data_files()
    assert {"eqsat/verify/ledger.json", "eqsat/rules/generated/rules.json"} <= data
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert sorted(data - names) == []


def _site_packages(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip()


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_venv_optimizes(tmp_path):
    """``pip install`` of the wheel into a fresh venv, then ``eqsat optimize --example nasrnn``
    there: the merges fire and the node count drops. Offline: the wheel is installed with
    ``--no-deps --no-index``; its dependencies are this venv's, made visible by a ``.pth`` line
    (a plain path: the editable install's own ``.pth`` in there is not run, so ``import eqsat``
    can only find the wheel's copy)."""
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    deps = _site_packages(sys.executable)
    Path(_site_packages(python), "project-deps.pth").write_text(deps + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    work = tmp_path / "work"  # not the checkout: nothing of it may be imported
    work.mkdir()
    where = subprocess.run(
        [python, "-c", "import eqsat; print(eqsat.__file__)"],
        cwd=work, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    run = subprocess.run(
        [str(venv / "bin" / "eqsat"), "optimize", "--example", "nasrnn", "-o", "n.onnx", "--json"],
        cwd=work, capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    s = json.loads(run.stdout)
    assert "error" not in s["egraph"] and s["egraph"]["unproved_left_out"] == []
    fired = s["egraph"]["saturation"]["matches"]
    assert any(name.startswith("merge-matmul") and n > 0 for name, n in fired.items()), fired
    assert s["nodes_after"] < s["nodes_before"]
    assert (work / "n.onnx").is_file()
