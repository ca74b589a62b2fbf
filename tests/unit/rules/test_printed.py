"""The cached printer of egglog terms (eqsat.rules.printed): it prints exactly what ``str()``
prints (the proof ledger hashes that text), a hit does not run black, a changed term misses,
and a damaged cache file is rebuilt rather than trusted or fatal."""

import json

import pytest
from egglog import var

from eqsat.egraph.lang import Tensor
from eqsat.rules import printed, schedule
from eqsat.rules.base import Rule


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSAT_CACHE_DIR", str(tmp_path))
    printed.reset()
    yield tmp_path
    printed.reset()


def _no_black(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("black ran on a cached term")

    monkeypatch.setattr(printed.black, "format_str", refuse)


def _terms():
    """Every side and guard of the hand-written egglog rules, and of a few generated ones."""
    families = [f for f in schedule.FAMILIES if f != "generated"]
    rules = [r for r in schedule.select(families) if isinstance(r, Rule)]
    rules += [r for r in schedule.select(("generated",)) if isinstance(r, Rule)][:3]
    return [t for r in rules for t in (r.lhs, r.rhs, *r.when)]


def test_prints_what_str_prints_cold_and_warm(monkeypatch):
    terms = _terms()
    assert any(not hasattr(t, "__egg_typed_expr__") for t in terms)  # guards (facts) included
    expected = [str(t) for t in terms]
    with printed.batch():
        assert [printed.pretty(t) for t in terms] == expected
    hits, misses = printed.stats()
    assert misses > 0 and hits + misses == len(terms)
    printed.reset()  # a new process: the table comes from the file
    _no_black(monkeypatch)
    assert [printed.pretty(t) for t in terms] == expected
    assert printed.stats() == (len(terms), 0)


def test_changed_term_misses_and_is_kept(fresh_cache):
    x = var("x", Tensor)
    printed.pretty(Tensor.relu(x))
    assert printed.stats() == (0, 1)
    assert printed.pretty(Tensor.relu(x)) == str(Tensor.relu(x))
    assert printed.stats() == (1, 1)
    edited = Tensor.relu(Tensor.relu(x))
    assert printed.pretty(edited) == str(edited)
    assert printed.stats() == (1, 2)
    table = json.loads(printed.cache_file().read_text())
    assert str(edited) in table.values() and len(table) == 2


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"k": 3}', b"\xff\xfe"])
def test_damaged_cache_file_is_rebuilt(damage, monkeypatch):
    path = printed.cache_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(damage)
    term = Tensor.relu(var("x", Tensor))
    assert printed.pretty(term) == str(term)
    assert printed.stats() == (0, 1)
    assert list(json.loads(path.read_text()).values()) == [str(term)]


def test_unwritable_cache_folder_still_prints(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("EQSAT_CACHE_DIR", str(blocker / "below-a-file"))
    printed.reset()
    term = Tensor.relu(var("x", Tensor))
    assert printed.pretty(term) == str(term)
