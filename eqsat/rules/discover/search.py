"""Rule discovery, the pipeline: enumerate, fingerprint, pair, check, prove, prune.

Consumes generator settings (op set, ``max_ops``); produces proved, non-redundant rules as rules
-file entries (:mod:`eqsat.rules.generated.rulefile`) and a :class:`Summary` of every phase.
TASO's method (SOSP'19 §3) with Ruler's pruning (OOPSLA'21):

1. **Enumerate** every well-typed expression of up to ``max_ops`` ops over the variables
   (:mod:`.exprs`: shapes are inferred symbolically, so one expression covers every size).
   Variable assignments are all kept (``add(x, y)`` and ``add(y, x)`` differ: that is how
   commutativity is found); pairs are renamed canonically later.
2. **Fingerprint** each one (exact integer arithmetic modulo a prime, relu as a polynomial) and
   **bucket** by (fingerprint, concrete shapes of the variables and the result).
3. **Pair** every member of a bucket with its smallest member (the rule rewrites towards it; the
   pairs of a bucket span it without the transitive ones), rename the variables of each pair
   jointly, unify the two sides' typings: that typing is the rule's shape guard.
4. **Check** each pair in float64 on inputs of unequal atom sizes (a cheap filter).
5. **TASO's pruning**, *before* proving (proving is the dearest phase): renaming duplicates;
   pairs whose roots agree and differ in one child that is itself a candidate pair (they follow
   by congruence); and pairs whose sides share a subterm such that, with the subterm replaced
   by a fresh variable, the two sides still have one fingerprint (they are instances of that
   smaller pair: TASO's common-subgraph pruning).
6. **Prove** the rest with Z3 (:func:`eqsat.verify.rules.prove_unit`, exact relu, atom sizes in
   1..3; rank-4 candidates on fewer, smaller sizes: a convolution's terms are dear to build).
7. **Prune** the proved rules Ruler's way: in order of size, a rule is dropped when the rules
   kept so far, run in an e-graph holding both its sides, make them equal (:mod:`.prune`).
8. **Widen** the kept rules whose splits take a suffix into middle-slice forms and prove them
   (:func:`.widen.widen`): written besides the kept rules, counted apart (they generalize
   kept rules, so they are not new substitutions; the optimizer needs them after N-ary merges).

Work units are plain tuples handed to a :class:`Runner`: a local process pool by default, or a
Ray cluster (``ray_address``) with the same functions — rule spaces grow past one machine.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field

import numpy as np

from eqsat.rules.discover import exprs as X
from eqsat.rules.discover.exprs import Candidate, Expr
from eqsat.rules.discover.widen import widen


@dataclass
class Summary:
    settings: dict
    enumerated: int = 0  # well-typed expressions
    buckets: int = 0
    candidates: int = 0  # distinct pairs after renaming
    numeric_ok: int = 0
    taso_pruned: int = 0  # after TASO's common-subterm pruning: what is proved
    proved: int = 0
    refuted: int = 0
    unknown: int = 0
    kept: int = 0  # proved, after e-graph pruning: the rules written
    widened: int = 0  # middle-slice forms of kept rules, proved: written besides them
    # candidates that passed the float64 check and Z3 refuted or could not prove (at most 5):
    # a float64 check at two size draws misses what one size assignment breaks
    not_proved: list = field(default_factory=list)
    times: dict = field(default_factory=dict)

    def table(self) -> list[tuple[str, str, str]]:
        t = self.times
        return [
            ("expressions enumerated (well-typed)", str(self.enumerated), _s(t, "enumerate")),
            ("fingerprint buckets", str(self.buckets), _s(t, "fingerprint")),
            ("candidate pairs (after renaming)", str(self.candidates), _s(t, "pair")),
            ("numerically equal (float64)", str(self.numeric_ok), _s(t, "numeric")),
            ("after TASO's pruning", str(self.taso_pruned), _s(t, "taso")),
            ("proved with Z3", str(self.proved), _s(t, "prove")),
            ("refuted / unknown", f"{self.refuted} / {self.unknown}", ""),
            ("after e-graph pruning (written)", str(self.kept), _s(t, "prune")),
            ("middle-slice forms, proved (written too)", str(self.widened), _s(t, "widen")),
        ]


def _s(t: dict, k: str) -> str:
    return f"{t[k]:.1f} s" if k in t else ""


# ---------------------------------------------------------------------------- runners


class Runner:
    """Maps a module-level function over work units, in order; ``done(k, n)`` is told as units
    finish (progress on long phases)."""

    def map(self, fn: Callable, units: list, done: Callable | None = None) -> list:
        out = []
        for u in units:
            out.append(fn(u))
            if done:
                done(len(out), len(units))
        return out


class LocalRunner(Runner):
    def __init__(self, workers: int):
        self.workers = max(1, workers)

    def map(self, fn: Callable, units: list, done: Callable | None = None) -> list:
        if self.workers == 1 or len(units) < 2:
            return super().map(fn, units, done)
        out: list = [None] * len(units)
        with ProcessPoolExecutor(max_workers=self.workers) as pool:
            futures = {pool.submit(fn, u): k for k, u in enumerate(units)}
            for n, f in enumerate(as_completed(futures), 1):
                out[futures[f]] = f.result()
                if done:
                    done(n, len(units))
        return out


class RayRunner(Runner):
    """The same work units on a Ray cluster (``ray`` is optional: ``pip install ray``)."""

    def __init__(self, address: str):
        try:
            import ray
        except ImportError as e:
            raise RuntimeError("--ray needs the ray package: pip install ray") from e
        self.ray = ray
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)

    def map(self, fn: Callable, units: list, done: Callable | None = None) -> list:
        remote = self.ray.remote(fn)
        out = self.ray.get([remote.remote(u) for u in units])
        if done:
            done(len(units), len(units))
        return out


def split_units(items: list, n: int) -> list[list]:
    """About ``n`` contiguous units (results are joined in order). Items are sorted by size, so
    the last units cost most: ask for many more units than workers, the pool balances them."""
    n = max(1, n)
    step = max(1, -(-len(items) // n))
    return [items[i : i + step] for i in range(0, len(items), step)]


# ---------------------------------------------------------------------------- work units


def grow_unit(unit: tuple) -> list[Expr]:
    """(op, n, smaller expressions by size) -> the well-typed expressions with ``op`` at the
    root and ``n`` ops."""
    op, n, by_size = unit
    return X.well_typed(X.grow(op, by_size, n))


def fingerprint_unit(unit: list[Expr]) -> list[tuple | None]:
    return [X.fingerprint(e) for e in unit]


def prune_unit(unit: tuple) -> list[Candidate]:
    """(candidates, progress queue or None, label) -> the kept ones; progress messages go to the
    queue as (label, message)."""
    from eqsat.rules.discover.prune import prune as egraph_prune

    cands, queue, label = unit
    return egraph_prune(cands, progress=(lambda m: queue.put((label, m))) if queue else None)


def prune_worlds(worlds: dict[int, list[Candidate]], workers: int, say) -> list[list[Candidate]]:
    """Each world (by rank) pruned in a process of its own, their progress shown together."""
    import multiprocessing
    import queue as queues

    labels = {k: f"rank {k}" for k in sorted(worlds)}
    with multiprocessing.Manager() as manager:
        q = manager.Queue()
        with ProcessPoolExecutor(max_workers=min(workers, len(worlds))) as pool:
            futures = [pool.submit(prune_unit, (worlds[k], q, lb)) for k, lb in labels.items()]
            latest: dict[str, str] = {}
            while not all(f.done() for f in futures):
                try:
                    label, msg = q.get(timeout=0.5)
                except queues.Empty:
                    continue
                latest[label] = msg.removeprefix("pruning ")
                shown = [f"{lb}: {latest[lb]}" for lb in labels.values() if lb in latest]
                say("pruning: " + "; ".join(shown))
            return [f.result() for f in futures]


def numeric_unit(unit: list[Candidate]) -> list[bool]:
    return [_numeric_ok(c) for c in unit]


def _numeric_ok(c: Candidate) -> bool:
    shapes = dict(c.shapes)
    atoms = c.atoms()
    for seed, base in ((11, 2), (12, 4)):
        sizes = {a: base + k for k, a in enumerate(atoms)}  # unequal sizes
        a = X.evaluate(c.lhs, shapes, seed=seed, mod=False, sizes=sizes)
        b = X.evaluate(c.rhs, shapes, seed=seed, mod=False, sizes=sizes)
        if a.shape != b.shape or not np.allclose(a, b, rtol=1e-9, atol=1e-9):
            return False
    return True


# ---------------------------------------------------------------------------- the pipeline


def enumerate_all(
    ops: Sequence[str], max_ops: int, runner: Runner, variables: int = 4
) -> list[Expr]:
    by_size: dict[int, list[Expr]] = {0: X.leaves(ops, variables)}
    for n in range(1, max_ops + 1):
        units = [(op, n, {k: by_size[k] for k in range(n)}) for op in ops]
        by_size[n] = sorted({e for part in runner.map(grow_unit, units) for e in part}, key=repr)
    out = [e for n in range(1, max_ops + 1) for e in by_size[n]] + by_size[0]
    return sorted(out, key=lambda e: (X.size(e), repr(e)))


def pair(exprs: list[Expr], fps: list) -> tuple[int, list[Candidate]]:
    buckets: dict[tuple, list[Expr]] = defaultdict(list)
    for e, f in zip(exprs, fps, strict=True):
        if f is not None:
            buckets[f].append(e)
    found: dict[tuple, Candidate] = {}
    for members in buckets.values():
        members.sort(key=lambda e: (X.size(e), repr(e)))
        small = members[0]
        for e in members[1:]:
            lhs, rhs = X.canonical(e, small)
            if not set(X.variables(rhs)) <= set(X.variables(lhs)):
                continue  # its right-hand side would read a tensor the match does not bind
            shapes = X.typing(lhs, rhs)
            if shapes is None or (lhs, rhs) in found:
                continue
            shapes.pop("")
            found[(lhs, rhs)] = Candidate(lhs, rhs, tuple(sorted(shapes.items())))
    return len(buckets), sorted(found.values(), key=Candidate.key)


def taso_prune(cands: list[Candidate], fp_of: dict | None = None) -> list[Candidate]:
    """TASO's pruning (SOSP'19 §4): drop ``op(.., a, ..) = op(.., b, ..)`` (same root, one
    child differs) when ``a = b`` is itself among the rules, up to renaming; and, given the
    expressions' fingerprints ``fp_of``, drop a pair whose two sides share a subterm when the
    pair with that subterm replaced by a fresh variable holds too (same fingerprint, one
    typing): the pair is an instance of that smaller one (TASO's common-subgraph pruning)."""
    have = {(c.lhs, c.rhs) for c in cands} | {(c.rhs, c.lhs) for c in cands}
    have |= {X.canonical(a, b) for a, b in list(have)}
    out = []
    for c in cands:
        a, b = c.lhs, c.rhs
        if len(a) > 1 and len(b) > 1 and a[0] == b[0] and len(a) == len(b):
            diff = [k for k in range(1, len(a)) if a[k] != b[k]]
            if len(diff) == 1:
                k = diff[0]
                if (a[k], b[k]) in have or X.canonical(a[k], b[k]) in have:
                    continue
        if fp_of is not None and _generalizes(a, b, fp_of):
            continue
        out.append(c)
    return out


def _subterms(e: Expr) -> set[Expr]:
    if len(e) == 1:
        return set()
    return {e}.union(*(_subterms(k) for k in e[1:]))


def _replace(e: Expr, t: Expr, v: str) -> Expr:
    if e == t:
        return (v,)
    if len(e) == 1:
        return e
    return (e[0], *(_replace(k, t, v) for k in e[1:]))


def _generalizes(a: Expr, b: Expr, fp_of: dict) -> bool:
    """Whether ``a = b`` is an instance of a smaller pair that holds: a subterm of both sides
    replaced by a fresh variable (of its rank) everywhere."""
    used = set(X.variables(a) + X.variables(b))
    for t in sorted(_subterms(a) & _subterms(b), key=repr):
        shapes = X.typing(t)
        if shapes is None:
            continue
        names = X.VARS4 if len(shapes[""]) == 4 else X.VARS
        fresh = next((v for v in names if v not in used), None)
        if fresh is None:
            continue
        ga, gb = X.canonical(_replace(a, t, fresh), _replace(b, t, fresh))
        fa, fb = fp_of.get(ga), fp_of.get(gb)
        if fa is not None and fa == fb and X.typing(ga, gb) is not None:
            return True
    return False


def name_rules(kept: list[Candidate]) -> list[dict]:
    counts: dict[str, int] = defaultdict(int)
    out = []
    for c in kept:
        fam = X.family(c.lhs[0]) if len(c.lhs) > 1 else "var"
        lhs, rhs = c.texts()
        out.append(
            {
                "name": f"gen-{fam}-{counts[fam]:04d}",
                "lhs": lhs,
                "rhs": rhs,
                "shapes": {v: [list(d) for d in s] for v, s in c.shapes},
                # used right to left too, as NAME-rev (a merge, x·z + y·w = [x y]·[z; w])
                "both_ways": c.both_ways(),
            }
        )
        counts[fam] += 1
    return out


def discover(
    prove: Callable[[list[tuple]], list[tuple[str, str]]],
    ops: Sequence[str] = X.DEFAULT_OPS,
    max_ops: int = 2,
    workers: int | None = None,
    ray_address: str | None = None,
    prune: bool = True,
    progress: Callable[[str], None] | None = None,
    variables: int = 4,
) -> tuple[list[dict], Summary]:
    """Proved, pruned rules (rules-file entries, named and sorted) and the phase summary.

    ``prove`` is the proving work unit, (lhs text, rhs text, shapes) per candidate -> (result,
    detail): :func:`eqsat.verify.rules.prove_unit`. The caller passes it because ``rules`` sits
    below ``verify`` in the layering (docs/architecture.md: the pipeline, the CLI and tests read
    ``verify``); it must be a module-level function so that the process pool and Ray can ship
    it."""
    ops = X.expand_ops(ops)
    workers = workers or os.cpu_count() or 1
    runner: Runner = RayRunner(ray_address) if ray_address else LocalRunner(workers)
    say = progress or (lambda _m: None)
    if not 1 <= variables <= len(X.VARS):
        raise ValueError(f"variables: give 1 to {len(X.VARS)}")
    s = Summary(
        {
            "ops": list(ops),
            "max_ops": max_ops,
            "variables": [v for (v,) in X.leaves(ops, variables)],
            "atom_size": X.SIZE,
            "prime": X.PRIME,
        }
    )
    clock = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        s.times[name] = round(now - clock[0], 3)
        clock[0] = now

    say(f"enumerating expressions of up to {max_ops} ops over {', '.join(ops)}")
    exprs = enumerate_all(ops, max_ops, runner, variables)
    s.enumerated = len(exprs)
    lap("enumerate")
    say(f"fingerprinting {len(exprs)} expressions")
    fps = [
        f for part in runner.map(fingerprint_unit, split_units(exprs, 16 * workers)) for f in part
    ]
    lap("fingerprint")
    s.buckets, cands = pair(exprs, fps)
    s.candidates = len(cands)
    lap("pair")
    say(f"checking {len(cands)} candidate pairs numerically")
    ok = [b for part in runner.map(numeric_unit, split_units(cands, 16 * workers)) for b in part]
    cands = [c for c, good in zip(cands, ok, strict=True) if good]
    s.numeric_ok = len(cands)
    lap("numeric")
    # instances of smaller pairs and pairs implied by congruence: proving them would add nothing
    cands = taso_prune(cands, dict(zip(exprs, fps, strict=True)))
    s.taso_pruned = len(cands)
    lap("taso")
    say(f"proving {len(cands)} pairs with Z3")
    units = [(*c.texts(), c.shapes) for c in cands]
    parts = split_units(units, 64 * workers)

    def proving(k: int, n: int) -> None:
        if k == n or k % max(1, n // 20) == 0:  # about every 5 %
            say(f"proving {len(cands)} pairs with Z3: {k * 100 // n} %")

    results = [r for part in runner.map(prove, parts, proving) for r in part]
    proved = [c for c, (r, _) in zip(cands, results, strict=True) if r == "proved"]
    s.proved = len(proved)
    s.refuted = sum(r == "refuted" for r, _ in results)
    s.unknown = len(results) - s.proved - s.refuted
    s.not_proved = [
        [*u[:2], r, detail[:300]]
        for u, (r, detail) in zip(units, results, strict=True)
        if r != "proved"
    ][:5]
    lap("prove")
    if prune:
        worlds: dict[int, list[Candidate]] = defaultdict(list)
        for c in proved:  # no op mixes matrices and rank-4 tensors: prune each world alone
            worlds[max(len(sh) for _, sh in c.shapes)].append(c)
        if len(worlds) > 1 and not isinstance(runner, RayRunner) and workers > 1:
            say(f"pruning {len(proved)} proved rules in e-graphs, {len(worlds)} worlds at once")
            done = prune_worlds(worlds, workers, say)
            kept = sorted((c for part in done for c in part), key=Candidate.key)
        else:
            from eqsat.rules.discover.prune import prune as egraph_prune

            say(f"pruning {len(proved)} proved rules in an e-graph")
            # in the order of the other path: rule names must not depend on the worker count
            kept = sorted(egraph_prune(proved, progress=say), key=Candidate.key)
    else:
        kept = proved
    s.kept = len(kept)
    lap("prune")
    entries = name_rules(kept)
    wide = [w for e in entries for w in widen(e)]
    if wide:
        say(f"proving {len(wide)} middle-slice forms")
        units = [(w["lhs"], w["rhs"], tuple(sorted(w["shapes"].items()))) for w in wide]
        parts = split_units(units, 8 * workers)
        results = [r for part in runner.map(prove, parts) for r in part]
        wide = [w for w, (r, _) in zip(wide, results, strict=True) if r == "proved"]
    s.widened = len(wide)
    lap("widen")
    return entries + wide, s


def header(summary: Summary) -> dict:
    d = asdict(summary)
    d.pop("times")  # the file is deterministic: timings go to the summary table only
    # and so are Z3's counterexamples (the run prints them): the model Z3 picks depends on the
    # queries its worker process answered before, and units reach workers as workers free up
    # (measured: two runs refuted the same pair with X = 1 and with X = -1)
    d["not_proved"] = [[*row[:3], row[3].split(": [", 1)[0]] for row in d["not_proved"]]
    return {"generator": "eqsat rules discover", **d}
