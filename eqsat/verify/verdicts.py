"""Proving many rules at once (``eqsat rules verify``): each rule's proof is looked up before it
is redone, and the rest are proved in parallel.

Consumes rule records; produces one :class:`~eqsat.verify.ledger.Verdict` per rule, in order,
each with where it came from:

- ``ledger``: the committed ledger (``eqsat/verify/ledger.json``), or the proofs a
  ``rules_file`` carries for its rules, proves the rule as written:
  the entry's hash is :func:`~eqsat.verify.ledger.rule_hash` of the rule now (its text, and
  for a Python-driven rule its module's source) and its semantics version is the current
  :data:`~eqsat.verify.z3_ops.SEMANTICS_VERSION`;
- ``cache``: the user's verdict cache (``proofs/verdicts.json`` in
  :func:`eqsat.paths.user_cache_dir`) holds a verdict for that hash and semantics version
  (proved, refuted or unsupported; an ``unknown``, a solver time-out, is not kept);
- ``proved now``: proved by :func:`eqsat.verify.rules.verify`, in a pool of processes (each
  rebuilds the rule registry once and proves rules by name: egglog terms cannot be pickled),
  and recorded in the cache. A generated rule's reverse ``NAME-rev`` states its forward rule's
  equation, so it takes that verdict (as :func:`~eqsat.verify.rules.verify_entries` does).

``force`` skips both look-ups; ``use_ledger=False`` only the ledger's. The cache is written
every few seconds while proving, so an interrupted run keeps what it proved.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from eqsat.paths import user_cache_dir
from eqsat.verify.ledger import Verdict, load_proofs, rule_hash

CACHED_RESULTS = ("proved", "refuted", "unsupported")
CHUNK = 8  # rules per work unit: small units balance the pool (a conv rule takes seconds)
SAVE_EVERY_S = 10.0


def cache_file() -> Path:
    return user_cache_dir() / "proofs" / "verdicts.json"


def _semantics() -> int:
    from eqsat.verify.z3_ops import SEMANTICS_VERSION

    return SEMANTICS_VERSION


def cache_key(digest: str) -> str:
    return f"{digest}/semantics-{_semantics()}"


def load_cache(path: Path | None = None) -> dict[str, dict]:
    p = path or cache_file()
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: rebuilt, never trusted
    return data if isinstance(data, dict) else {}


def save_cache(new: dict[str, dict], path: Path | None = None) -> None:
    """Merge ``new`` into the cache file, atomically (another run may have written it)."""
    if not new:
        return
    p = path or cache_file()
    p.parent.mkdir(parents=True, exist_ok=True)
    data = load_cache(p) | new
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=0, sort_keys=True) + "\n")
    tmp.replace(p)


def _from_entry(name: str, e: dict) -> Verdict:
    return Verdict(
        name,
        e.get("result", "unknown"),
        e.get("scope", ""),
        int(e.get("instances", 0)),
        0.0,
        e.get("detail", ""),
        e.get("hash", ""),
        e.get("generic", ""),
    )


def _entry(v: Verdict) -> dict:
    from eqsat.verify.rules import ledger_entry

    return ledger_entry(v) | {"time_s": round(v.time_s, 3)}


# ------------------------------------------------------------------------------ the workers

_REGISTRY: dict = {}


def _prove_names(names: list[str], rules_file: str | None) -> list[Verdict]:
    """A worker's unit: the named rules of the registry (built once per process), proved."""
    from eqsat.rules import schedule
    from eqsat.verify.rules import verify

    if rules_file not in _REGISTRY:
        every = schedule.select(tuple(schedule.FAMILIES), rules_file=rules_file)
        _REGISTRY[rules_file] = {r.name: r for r in every}
    by_name = _REGISTRY[rules_file]
    return [verify(by_name[n]) for n in names]


def _reverse_of(rule, by_name: dict):
    """The forward rule whose equation a generated ``NAME-rev`` rule reads right to left."""
    if not rule.name.endswith("-rev") or not getattr(rule, "shapes", ()):
        return None
    fwd = by_name.get(rule.name[: -len("-rev")])
    if fwd is None or not getattr(fwd, "source", None) or not getattr(rule, "source", None):
        return None
    return fwd if tuple(rule.source) == tuple(reversed(fwd.source)) else None


def verify_all(
    rules: list,
    force: bool = False,
    workers: int | None = None,
    use_ledger: bool = True,
    rules_file: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    cache: Path | None = None,
) -> list[tuple[Verdict, str]]:
    """(verdict, source) for each of ``rules``, in order (see the module doc). ``rules`` must
    come from the registry (:func:`eqsat.rules.schedule.select` over every family, with
    ``rules_file``): the workers find them there by name."""
    ledger = {} if force or not use_ledger else load_proofs(rules_file)
    cached = {} if force else load_cache(cache)
    semantics = _semantics()
    out: list[tuple[Verdict, str] | None] = [None] * len(rules)
    digests = [rule_hash(r) for r in rules]
    todo: list[int] = []
    for i, (r, h) in enumerate(zip(rules, digests, strict=True)):
        e = ledger.get(r.name)
        if e and e.get("result") == "proved" and e.get("hash") == h:
            if e.get("semantics") == semantics:
                out[i] = (_from_entry(r.name, e), "ledger")
                continue
        c = cached.get(cache_key(h))
        if c:
            out[i] = (_from_entry(r.name, c | {"hash": h}), "cache")
            continue
        todo.append(i)
    by_name = {r.name: r for r in rules}
    pending = {rules[i].name: i for i in todo}
    mirrored = {  # reverse -> forward, both still to prove
        i: pending[f.name]
        for i in todo
        if (f := _reverse_of(rules[i], by_name)) is not None and f.name in pending
    }
    prove = [i for i in todo if i not in mirrored]
    new: dict[str, dict] = {}

    def record(i: int, v: Verdict) -> None:
        out[i] = (v, "proved now")
        if v.result in CACHED_RESULTS:
            new[cache_key(digests[i])] = _entry(v)

    units = [prove[k : k + CHUNK] for k in range(0, len(prove), CHUNK)]
    workers = max(1, min(workers or os.cpu_count() or 1, len(units) or 1))
    last_save, done = time.monotonic(), 0
    try:
        if workers == 1:
            results = (
                (unit, _prove_names([rules[i].name for i in unit], rules_file)) for unit in units
            )
            for unit, verdicts in results:
                for i, v in zip(unit, verdicts, strict=True):
                    record(i, v)
                done += len(unit)
                if progress:
                    progress(done, len(prove))
        else:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")  # egglog and Z3 are loaded: no fork
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
                futures = {
                    pool.submit(_prove_names, [rules[i].name for i in u], rules_file): u
                    for u in units
                }
                for f in as_completed(futures):
                    unit = futures[f]
                    for i, v in zip(unit, f.result(), strict=True):
                        record(i, v)
                    done += len(unit)
                    if progress:
                        progress(done, len(prove))
                    if time.monotonic() - last_save > SAVE_EVERY_S:
                        save_cache(new, cache)
                        last_save = time.monotonic()
        for i, j in mirrored.items():
            fwd = out[j][0]
            scope = f"{fwd.scope} (the equation of {fwd.name}, read right to left)"
            digest = digests[i] if fwd.result == "proved" else ""
            v = Verdict(rules[i].name, fwd.result, scope, fwd.instances, 0.0, fwd.detail, digest)
            record(i, v)
    finally:
        save_cache(new, cache)
    return [o for o in out if o is not None]
