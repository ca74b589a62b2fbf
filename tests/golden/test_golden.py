"""Golden printed graphs: every bundled example (benchmark size) before and after ``optimize``
with the default options, in the TensorGraph text form (names, ops, attributes and types; no
weight values). A difference is a change in what the optimizer does: if it is intended, rewrite
the files with ``pytest tests/golden --update-golden`` (or ``make golden``) and review the diff.

Only the iteration and node limits bound the run: the wall-clock limits are out of reach, so the
result does not depend on how loaded the machine is. The roofline constants are the committed
defaults (a calibration in this machine's cache would change the costs)."""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from eqsat.examples import build_example, example_names
from eqsat.pipeline import Options, Result, optimize

GOLDEN = Path(__file__).parent
NO_WALL_CLOCK = {"time_limit": 3600.0, "extract_time_limit": 3600.0}


@pytest.fixture(scope="session")
def optimized(tmp_path_factory: pytest.TempPathFactory):
    """name -> Result, optimized once per session (each example is read by two tests)."""
    results: dict[str, Result] = {}
    cache = tmp_path_factory.mktemp("no-calibration")

    def get(name: str) -> Result:
        if name not in results:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv("EQSAT_CACHE_DIR", str(cache))  # the committed roofline constants
                results[name] = optimize(build_example(name), Options(**NO_WALL_CLOCK))
        return results[name]

    return get


def _check(path: Path, text: str, update: bool) -> None:
    text += "\n"
    if update:
        path.write_text(text)
        return
    if not path.is_file():
        pytest.fail(f"{path.name} is missing: run pytest tests/golden --update-golden")
    want = path.read_text()
    if text != want:
        diff = difflib.unified_diff(
            want.splitlines(), text.splitlines(), "golden", "now", lineterm="", n=1
        )
        lines = list(diff)
        shown = "\n".join(lines[:60]) + ("\n..." if len(lines) > 60 else "")
        pytest.fail(
            f"{path.name} differs from the golden file (if intended: pytest tests/golden "
            f"--update-golden):\n{shown}"
        )


@pytest.mark.parametrize("name", example_names())
def test_example_before_optimize(name, optimized, update_golden):
    result = optimized(name)
    _check(GOLDEN / f"{name}.before.txt", result.original.to_text(), update_golden)


@pytest.mark.parametrize("name", example_names())
def test_example_after_optimize(name, optimized, update_golden):
    result = optimized(name)
    assert result.egraph is not None and "error" not in result.egraph, result.egraph
    assert result.verdict is not None and result.verdict.ok
    _check(GOLDEN / f"{name}.after.txt", result.graph.to_text(), update_golden)
