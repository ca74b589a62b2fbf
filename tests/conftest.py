"""Shared pytest options and fixtures: ``--update-golden`` rewrites the golden files under
tests/golden/; compiled objects are cached in a folder of the test session."""

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
    """Compiled objects go to a folder of this test session, never the user's cache."""
    mp = pytest.MonkeyPatch()
    mp.setenv("EQSAT_CACHE_DIR", str(tmp_path_factory.mktemp("objects")))
    yield
    mp.undo()
