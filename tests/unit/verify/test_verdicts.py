"""``rules verify`` over many rules: proofs in the committed ledger are reused when the rule's
hash and the semantics version match, other verdicts are cached per user by rule hash, the rest
are proved in a pool of processes; a generated rule's reverse takes its forward rule's verdict."""

import json

import pytest

from eqsat import cli
from eqsat.rules import schedule
from eqsat.verify import verdicts, z3_ops

EVERY = {r.name: r for r in schedule.select(tuple(schedule.FAMILIES))}
NAMES = ["add-commutative", "gen-add-0035", "gen-add-0035-rev"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSAT_CACHE_DIR", str(tmp_path))
    return tmp_path / "proofs" / "verdicts.json"


def _sources(results) -> list[str]:
    return [src for _, src in results]


def _same(a, b) -> bool:
    return [(v.name, v.result, v.scope, v.instances) for v, _ in a] == [
        (v.name, v.result, v.scope, v.instances) for v, _ in b
    ]


def test_ledger_then_cache_then_proof(cache):
    rules = [EVERY[n] for n in NAMES]
    assert EVERY["gen-add-0035"].source == tuple(reversed(EVERY["gen-add-0035-rev"].source))
    first = verdicts.verify_all(rules, workers=1)
    assert _sources(first) == ["ledger"] * 3 and not cache.exists()
    proved = verdicts.verify_all(rules, workers=1, use_ledger=False)
    assert _sources(proved) == ["proved now"] * 3
    assert all(v.result == "proved" for v, _ in proved)
    rev = proved[2][0]
    assert "read right to left" in rev.scope and rev.time_s == 0.0  # not proved a second time
    assert len(json.loads(cache.read_text())) == 3
    again = verdicts.verify_all(rules, workers=1, use_ledger=False)
    assert _sources(again) == ["cache"] * 3 and _same(again, proved)
    forced = verdicts.verify_all(rules, workers=1, force=True)
    assert _sources(forced) == ["proved now"] * 3 and _same(forced, proved)


def test_a_changed_rule_or_semantics_is_proved_again(cache, monkeypatch):
    rules = [EVERY["add-commutative"]]
    from eqsat.verify.ledger import load_ledger

    entry = load_ledger()["add-commutative"]
    monkeypatch.setattr(
        verdicts, "load_proofs", lambda f=None: {"add-commutative": entry | {"hash": "0" * 16}}
    )
    assert _sources(verdicts.verify_all(rules, workers=1)) == ["proved now"]
    assert _sources(verdicts.verify_all(rules, workers=1)) == ["cache"]
    monkeypatch.setattr(z3_ops, "SEMANTICS_VERSION", z3_ops.SEMANTICS_VERSION + 1)
    assert _sources(verdicts.verify_all(rules, workers=1)) == ["proved now"]


def test_a_refutation_is_cached_too(cache, monkeypatch):
    from eqsat.verify.ledger import Verdict

    def wrong(names, rules_file):
        return [Verdict(n, "refuted", "", 1, 0.5, "a counterexample") for n in names]

    monkeypatch.setattr(verdicts, "_prove_names", wrong)
    rules = [EVERY["add-commutative"]]
    ((v, src),) = verdicts.verify_all(rules, workers=1, use_ledger=False)
    assert (v.result, src) == ("refuted", "proved now")
    ((v, src),) = verdicts.verify_all(rules, workers=1, use_ledger=False)
    assert (v.result, v.detail, src) == ("refuted", "a counterexample", "cache")


def test_parallel_proofs_match_the_serial_ones(cache):
    names = [n for n in EVERY if not n.startswith("gen-")][:12]
    rules = [EVERY[n] for n in names]
    parallel = verdicts.verify_all(rules, workers=2, force=True)
    serial = verdicts.verify_all(rules, workers=1, force=True)
    assert _sources(parallel) == ["proved now"] * len(names)
    assert [v.name for v, _ in parallel] == names and _same(parallel, serial)


def test_cli_reports_where_each_verdict_came_from(capsys, cache):
    assert cli.main(["rules", "verify", *NAMES, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["source"], r["result"]) for r in rows] == [
        (n, "ledger", "proved") for n in NAMES
    ]
    assert cli.main(["rules", "verify", "add-commutative", "--no-ledger"]) == 0
    out = capsys.readouterr().out
    assert "1/1 proved" in out and "1 proved now" in out
    assert cli.main(["rules", "verify", "add-commutative", "--no-ledger"]) == 0
    assert "1 from the cache" in capsys.readouterr().out
