"""The CLI's manners: one-line usage errors, quiet when the reader of its output goes away,
shapes printed as text, ``rules list`` filters and widths, defaults and rule families in
``--help``, no default model, clear errors for a folder or a missing output folder."""

import json
import re
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
from onnx import helper

from eqsat import cli

README = Path(__file__).resolve().parents[2] / "README.md"


def _run(capsys, *argv):
    code = cli.main([str(a) for a in argv])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _usage_error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, prog",
    [
        ([], "eqsat"),
        (["bogus"], "eqsat"),
        (["optimize", "--bogus"], "eqsat optimize"),
        (["optimize", "m.onnx", "--iter-limit", "0"], "eqsat optimize"),
        (["optimize", "m.onnx", "--extractor", "nope"], "eqsat optimize"),
        (["rules", "list", "--status", "nope"], "eqsat rules list"),
        (["rules", "verify", "--workers", "x"], "eqsat rules verify"),
        (["compile", "m.onnx", "--threads", "-1"], "eqsat compile"),
    ],
)
def test_a_usage_error_is_one_line(capsys, argv, prog):
    err = _usage_error(capsys, argv)
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{prog}: error: ") and err.strip().endswith(f"({prog} --help)")
    assert "usage:" not in err


def test_optimize_needs_a_model_or_an_example(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(capsys, "optimize")
    assert code == 2 and out == ""
    assert err.strip() == (
        "eqsat optimize: error: give a model file or --example NAME (see `eqsat examples`) "
        "(eqsat optimize --help)"
    )
    assert list(tmp_path.iterdir()) == []  # nothing optimized into the current folder
    code, _, err = _run(capsys, "info")
    assert code == 2 and err.startswith("eqsat info: error: give a model file")


def test_a_folder_given_as_model_is_a_directory(capsys, tmp_path):
    for argv in (
        ["info", tmp_path],
        ["optimize", tmp_path, "-o", tmp_path / "o.onnx"],
        ["verify", tmp_path, tmp_path],
    ):
        code, _, err = _run(capsys, *argv)
        assert code == 2 and "is a directory" in err and "no such file" not in err
        assert len(err.strip().splitlines()) == 1


def test_examples_write_into_a_missing_folder_is_one_line(capsys, tmp_path):
    target = tmp_path / "missing" / "dir" / "x.onnx"
    code, _, err = _run(capsys, "examples", "--write", "vgg", "--size", "small", "-o", target)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "does not exist" in err and "Errno" not in err
    assert not (tmp_path / "missing").exists()


def test_symbolic_shapes_print_as_text(capsys, tmp_path):
    from tests.helpers import model, vi

    m = model(
        [helper.make_node("Relu", ["x"], ["y"])],
        [vi("x", ["batch", 128])],
        [vi("y", ["batch", 128])],
    )
    path = tmp_path / "sym.onnx"
    onnx.save_model(m, str(path))
    code, out, _ = _run(capsys, "info", path)
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert ["input", "x", "float32", "[batch,", "128]"] in rows
    assert ["output", "y", "float32", "[batch,", "128]"] in rows


def _closed_stdout(*argv) -> subprocess.CompletedProcess:
    p = subprocess.Popen(
        [sys.executable, "-m", "eqsat", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    p.stdout.close()  # like `| head -1` that has read its line: every write now fails
    err = p.stderr.read()
    p.stderr.close()
    return subprocess.CompletedProcess(argv, p.wait(), "", err)


def test_quiet_when_the_reader_goes_away():
    for argv in (["info", "--json", "--example", "bert"], ["rules", "list"]):
        r = _closed_stdout(*argv)
        assert r.stderr == "", r.stderr  # no "Broken pipe", no traceback
        assert r.returncode == cli.EXIT_SIGPIPE


def test_rules_list_filters_by_family_and_status(capsys):
    from eqsat.rules import schedule

    code, out, _ = _run(capsys, "rules", "list", "--family", "cleanup,fold", "--json")
    rows = json.loads(out)
    assert code == 0 and {r["family"] for r in rows} == {"cleanup", "fold"}
    assert len(rows) == len(schedule.select(("cleanup", "fold")))
    code, out, _ = _run(capsys, "rules", "list", "--status", "proved", "--json")
    assert code == 0 and rows and {r["ledger"] for r in json.loads(out)} == {"proved"}
    code, out, _ = _run(capsys, "rules", "list", "--family", "cleanup", "--status", "unproved")
    assert code == 0 and out.strip().splitlines()[-1].startswith("0 rules")
    code, _, err = _run(capsys, "rules", "list", "--family", "nope")
    assert code == 2 and err.startswith("eqsat rules list: error: --family nope")


def test_rules_list_is_not_cut_when_not_a_terminal(capsys):
    from eqsat.rules import schedule

    every = schedule.select(tuple(schedule.FAMILIES))
    longest = max((r.name for r in every), key=len)
    code, out, _ = _run(capsys, "rules", "list")
    assert code == 0 and len(longest) > 20
    names = {line.split()[0] for line in out.splitlines()[2:-1] if line.strip()}
    assert names == {r.name for r in every}  # every name whole, on its own row
    assert max(len(line) for line in out.splitlines()) > 80
    code, out, _ = _run(capsys, "rules", "list", "--family", "algebra", "--width", "60")
    table = out.splitlines()[:-1]  # the last line is the count, not the table
    assert code == 0 and max(len(line) for line in table) <= 60


def test_help_shows_defaults_and_the_rule_families(capsys):
    from eqsat.pipeline import Options
    from eqsat.rules import schedule

    with pytest.raises(SystemExit) as e:
        cli.main(["optimize", "--help"])
    assert e.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # the help's line breaks undone
    assert f"(default: {Options().iter_limit})" in text
    assert f"(default: {Options().node_limit})" in text
    assert "(default: roofline)" in text and "(default: 3)" in text
    families = re.search(r"rule families, comma-separated, of: ([^(]*)", text).group(1)
    assert [f.strip() for f in families.split(",")] == list(schedule.FAMILIES)
    with pytest.raises(SystemExit):
        cli.main(["rules", "list", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert all(f in text for f in schedule.FAMILIES)


def test_readme_lists_every_exit_code():
    table = {
        int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", README.read_text(), re.MULTILINE)
    }
    assert {0, 1, 2, 3, 130, cli.EXIT_SIGPIPE} <= table

