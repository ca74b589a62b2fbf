"""Shared pytest options and fixtures: ``--update-golden`` rewrites the golden files under
tests/golden/; compiled objects and every other cache go to a folder of the test session;
``report_line`` prints a line under the run's summary.

What runs by default, and what is slow
--------------------------------------
``make test`` (what ``.ci/run`` calls) must stay under 5 minutes on an idle 2-core machine; the
target is 180 s, so that tests added later have room. It runs the tests not marked ``slow`` on
two pytest-xdist worker processes (``TEST_WORKERS``, Makefile), a test file at a time per
worker (``--dist loadfile``: a module-scoped fixture such as the conformance runs is built once,
not once per worker). ``make test-slow`` runs the ``slow`` ones (serially).

The rule for ``@pytest.mark.slow``:

- a test that takes over 10 s on an idle machine (``make test`` prints its ten slowest), or a
  parametrized family whose cases together take over 10 s, is slow, unless it is the only check
  of its area (the two conformance runs, ~10 s each, are the op coverage: they stay);
- a family keeps a representative subset in the default run (one case of each path its
  docstring names) and marks the rest ``pytest.param(..., marks=pytest.mark.slow)``; a comment
  says which cases stay, and a slow test names the default test that keeps its check. Every
  area (each folder of ``tests/unit/``, the property, golden, conformance and packaging tests)
  keeps default tests;
- hypothesis tests in the default run draw few examples (``max_examples`` of a few to a few
  dozen); the long draws are slow tests or ``make fuzz``;
- never a wall-clock limit (iteration and node limits only).

Why two workers, and what makes it safe: the default run is CPU-bound Python and LLVM work in
one process. Measured on the shared 2-core host, the final default suite (1,794 tests) back to
back at loadavg 1.6-3.6 (other helpers' tests and benchmarks took up to ~0.8 core): one process
257 s (259 CPU-s); two workers 227-238 s wall, of which the busier worker used 149 CPU-s and
the other 130. On an idle machine the wall time is the busier worker's, ~150 s; at loadavg 7-10
the serial run took 340 CPU-s (1,822 tests before the slow marks) and the busier worker 148.
A simulation of loadfile's order on the serial per-test times gives 1.01x of half the serial.
Measured after the merge (fresh clone, `.ci/run`, 1,857 tests, loadavg under 1): 150 s and
188 s in two runs.

Each worker has its own ``tmp_path_factory`` folder, so ``$EQSAT_CACHE_DIR`` (the object and
model caches, the tuning log, the printed-rule, measured-cost and verdict caches) is private to
a worker: no two processes write one cache file. Tests must not write in the
checkout or the user's folders, must not bind fixed ports, and must not assume they run alone
(a test that measures or needs both cores is ``slow``, or compares results, never speed).
``make test TEST_WORKERS=0`` runs in one process (for ``pdb`` and for timing one test).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite tests/golden/*.txt from the current output instead of comparing with it",
    )


@pytest.fixture(scope="session")
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


@pytest.fixture(autouse=True, scope="session")
def _private_object_cache(tmp_path_factory: pytest.TempPathFactory):
    """Compiled objects go to a folder of this test session (of this xdist worker), never the
    user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EQSAT_CACHE_DIR", str(tmp_path_factory.mktemp("objects")))
    yield
    mp.undo()


@pytest.fixture
def report_line(record_property):
    """``report_line(text)`` prints ``text`` after the run (``pytest_terminal_summary``): a
    test's own output is lost in an xdist worker, its recorded properties are not."""
    return lambda text: record_property("report_line", text)


def pytest_terminal_summary(terminalreporter) -> None:
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            for key, value in getattr(report, "user_properties", ()):
                if key == "report_line":
                    terminalreporter.write_line(str(value))
