"""Equivalence-verification reports: self-contained HTML plus JSON, from optimize and verify."""

import json
import re

import onnx
import pytest
from onnx import helper

from eqsat import cli
from eqsat.examples import build_example
from tests.helpers import model, vi


def _no_external_assets(page: str) -> bool:
    return not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page) and "@import" not in page


def test_optimize_report_shows_errors_latency_and_proved_rules(tmp_path, capsys):
    out, rep = tmp_path / "o.onnx", tmp_path / "r.html"
    code = cli.main(
        ["optimize", "--example", "nasrnn", "-o", str(out), "--report", str(rep), "--json"]
    )
    assert code == 0
    page, data = rep.read_text(), json.loads(rep.with_suffix(".json").read_text())
    assert _no_external_assets(page) and "<svg" in page
    assert data["verdict"]["ok"] and data["verdict"]["seeds"]
    assert data["latency"]["reference"]["min_ms"] > 0
    fired = {r["rule"]: r for r in data["rules"]}
    assert "merge-matmul-shared-rhs" in fired
    assert all(r["proof"] == "proved" and r["scope"] for r in fired.values())
    assert data["ops"]["reference"]["MatMul"] > data["ops"]["candidate"]["MatMul"]
    assert "EQUIVALENT" in page and "every one is proved" in page
    assert json.loads(capsys.readouterr().out)["report"] == str(rep)


def test_verify_report_of_different_models_says_so(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for path, op in ((a, "Relu"), (b, "Sigmoid")):
        onnx.save(
            model([helper.make_node(op, ["x"], ["y"])], [vi("x", [2, 3])], [vi("y", [2, 3])]),
            str(path),
        )
    rep = tmp_path / "v.html"
    assert cli.main(["verify", str(a), str(b), "--report", str(rep)]) == 1
    page = rep.read_text()
    data = json.loads(rep.with_suffix(".json").read_text())
    assert not data["verdict"]["ok"] and "DIFFERENT" in page
    assert data["ops"] == {"reference": {"Relu": 1}, "candidate": {"Sigmoid": 1}}
    assert _no_external_assets(page)


def test_report_into_a_missing_directory_is_a_usage_error(tmp_path):
    m = tmp_path / "m.onnx"
    onnx.save(build_example("nasrnn", "small"), str(m))
    missing = tmp_path / "nope" / "r.html"
    assert cli.main(["verify", str(m), str(m), "--report", str(missing)]) == 2
    assert (
        cli.main(["optimize", str(m), "-o", str(tmp_path / "o.onnx"), "--report", str(missing)])
        == 2
    )
    assert not (tmp_path / "o.onnx").exists()


@pytest.mark.slow
def test_report_renders_in_headless_chromium(tmp_path):
    """Rendered once in a real browser (Debian's chromium, when the machine has it)."""
    import shutil
    import subprocess

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine (apt-get install chromium)")
    rep, png = tmp_path / "r.html", tmp_path / "r.png"
    assert (
        cli.main(
            [
                "optimize",
                "--example",
                "nasrnn",
                "-o",
                str(tmp_path / "o.onnx"),
                "--report",
                str(rep),
            ]
        )
        == 0
    )
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    subprocess.run(
        [browser, *flags, "--window-size=1000,1400", f"--screenshot={png}", rep.as_uri()],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert png.stat().st_size > 20_000  # a page with tables and a chart, not a blank one


def test_a_speedup_is_claimed_only_outside_the_noise():
    from eqsat.verify.timing import describe, speedup, spread

    base = spread([1.0e-3, 1.1e-3, 1.2e-3, 1.3e-3])
    same = spread([0.95e-3, 1.05e-3, 1.15e-3, 1.25e-3])  # faster minimum, overlapping spread
    fast = spread([0.5e-3, 0.52e-3, 0.55e-3, 0.6e-3])
    s = speedup(base, same)
    assert s["within_noise"] and s["speedup"] > 1
    assert describe(base, same).startswith("within noise (reference 1.000-")
    s = speedup(base, fast)
    assert not s["within_noise"] and s["speedup"] == pytest.approx(2.0)
    assert describe(base, fast).startswith("2.00x (reference 1.000-1.300 ms, candidate 0.500-")
    assert speedup(fast, base)["speedup"] == pytest.approx(0.5)  # a slowdown, said as such


def test_the_report_of_a_model_against_itself_claims_no_speedup(tmp_path):
    m = tmp_path / "m.onnx"
    onnx.save(build_example("vgg", "small"), str(m))
    rep = tmp_path / "v.html"
    assert cli.main(["verify", str(m), str(m), "--report", str(rep)]) == 0
    lat = json.loads(rep.with_suffix(".json").read_text())["latency"]
    page = rep.read_text()
    for key in ("min_ms", "q3_ms", "median_ms", "reps"):
        assert lat["reference"][key] > 0 and lat["candidate"][key] > 0
    if lat["within_noise"]:  # what identical models should show; a loaded machine may not
        assert "within noise" in page and "<b>" not in page.split("Cost and latency")[1]
    else:
        assert f"{lat['speedup']:.2f}x" in page and "min to upper quartile" in page
