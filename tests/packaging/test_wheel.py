"""The wheel carries every data file of the package: a wheel without the proof ledger, the
generated rules or the roofline constants installed an eqsat that optimized nothing and exited 0
(issue 22). Builds the wheel (about 3 s) and compares its contents with the package's files."""

from __future__ import annotations

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


def test_the_wheel_carries_the_package_data(tmp_path):
    data = _data_files()
    assert {"eqsat/verify/ledger.json", "eqsat/rules/generated/rules.json"} <= data
    src = _clean_copy(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("eqsat-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
    assert sorted(data - names) == []
