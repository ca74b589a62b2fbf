"""The package's data files (proof ledger, generated rules, roofline constants): a missing one is
a one-line error with a non-zero exit, never a silent fallback. A wheel without them once gave an
eqsat that left every rule out as unproved, or fell back to the folded graph, and exited 0
(issue 22). Each loader is pointed at a missing path; the CLI must fail and write nothing."""

from __future__ import annotations

import pytest

from eqsat import cli
from eqsat.errors import DataFileError
from eqsat.extract import compiler_cost, roofline
from eqsat.rules.generated import rulefile
from eqsat.verify import ledger


@pytest.fixture
def no_user_constants(tmp_path, monkeypatch):
    """No calibrated constants in the user's cache, so the package's default file is read."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def test_the_loaders_refuse_a_missing_file(tmp_path, monkeypatch, no_user_constants):
    missing = tmp_path / "absent.json"
    with pytest.raises(DataFileError, match="proof ledger"):
        ledger.load_ledger(missing)
    assert ledger.load_ledger(missing, missing_ok=True) == {}  # a writer starting a new ledger
    with pytest.raises(DataFileError, match="generated rules"):
        rulefile.read(missing)
    with pytest.raises(DataFileError, match="generated rules"):
        rulefile.load(missing)
    monkeypatch.setattr(roofline, "DEFAULT_FILE", missing)
    with pytest.raises(DataFileError, match="roofline constants"):
        roofline.RooflineConstants.load()
    monkeypatch.setattr(compiler_cost, "DEFAULT_FILE", missing)
    with pytest.raises(DataFileError, match="compiler cost constants"):
        compiler_cost.CompilerConstants.load()


def _optimize(capsys, tmp_path, *extra):
    out = tmp_path / "out.onnx"
    code = cli.main(["optimize", "--example", "nasrnn", "-o", str(out), *extra])
    err = capsys.readouterr().err
    return code, err, out


@pytest.mark.parametrize("which", ["ledger", "roofline", "rules"])
def test_optimize_fails_in_one_line_without_a_data_file(
    which, tmp_path, monkeypatch, capsys, no_user_constants
):
    missing = tmp_path / "absent.json"
    extra: tuple[str, ...] = ()
    if which == "ledger":
        monkeypatch.setattr(ledger, "LEDGER", missing)
    elif which == "roofline":
        monkeypatch.setattr(roofline, "DEFAULT_FILE", missing)
    else:
        monkeypatch.setattr(rulefile, "RULES_FILE", missing)
        extra = ("--rules", "generated")
    code, err, out = _optimize(capsys, tmp_path, *extra)
    assert code == DataFileError.exit_code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_rules_list_fails_without_the_ledger(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ledger, "LEDGER", tmp_path / "absent.json")
    assert cli.main(["rules", "list"]) == DataFileError.exit_code
    assert "proof ledger is missing" in capsys.readouterr().err


def test_every_data_file_of_the_package_ships_in_the_wheel():
    """A JSON file under eqsat/ is read at run time; one not in pyproject's package-data is
    missing from the wheel (compiler_default.json was, when the compiler cost model landed)."""
    import tomllib
    from pathlib import Path

    import eqsat

    root = Path(eqsat.__file__).parent
    project = tomllib.loads((root.parent / "pyproject.toml").read_text())
    shipped = set(project["tool"]["setuptools"]["package-data"]["eqsat"])
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*.json")}
    assert on_disk <= shipped, f"not in package-data: {sorted(on_disk - shipped)}"
