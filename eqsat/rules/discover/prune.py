"""Ruler-style pruning: drop every rule that the rules kept before it already imply.

Consumes proved :class:`~.exprs.Candidate` pairs; produces the subset to keep. Candidates are
taken by total size (smallest first; within a size the most general typing first, since it
implies its instances), in chunks of :data:`CHUNK`. For a chunk, one e-graph holds both sides of
every candidate (variables as ``Tensor.input`` leaves of their own, with the shapes of the
candidate's typing, atoms as distinct primes) and the kept rules run in it, with their shape
guards, for :data:`ITERATIONS` iterations; a candidate whose two sides end in one e-class is
implied and dropped. Of the rest, the first is kept, its rule joins the ruleset, and the chunk
runs again, until every candidate is kept or dropped. So no kept rule is implied, within the
budget, by the rules kept before it.

A kept rule runs from its larger side to its smaller one, and both ways when the sides are the
same size (:meth:`~.exprs.Candidate.both_ways`, as the rules file uses it). A chunk's e-graph
stops iterating once it is :data:`GROWTH` times its first size, and is built afresh for the
candidates left (with sub and neg in the op set, ``x - x`` and its rules grew one chunk to 575k
e-nodes without that cap). The price is
completeness: a rule that only a detour through larger terms derives is kept although implied.
The count of kept rules is therefore an upper bound on the non-redundant ones; every rule
written is proved on its own either way.

The e-graphs run a lean shape analysis (ranks up to 4, two-input concatenations, no
broadcasting: what generated rules read). The candidates come after TASO's pruning
(:func:`.search.taso_prune`): measured on the matrix world with splits, pruning all 12,204
proved candidates and only TASO's 6,533 survivors both keep the same 165 rules (151 s vs 68 s).
"""

from __future__ import annotations

from collections import defaultdict

from egglog import EGraph, Vec, eq, i64, ruleset

from eqsat.egraph.lang import Tensor
from eqsat.egraph.shapes import dims, has_shape, shape_rules
from eqsat.rules.discover import exprs as X
from eqsat.rules.discover.exprs import Candidate

ITERATIONS = 3
GROWTH = 20  # a chunk's e-graph stops iterating past this many times its first size
CHUNK = 200  # candidates per pruning e-graph: each kept rule re-runs its chunk, keep it small
PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29)  # atom sizes in the pruning e-graph


def sizes(c: Candidate) -> dict[str, int]:
    """The atom sizes of candidate ``c`` in the pruning e-graph: distinct primes."""
    return {a: PRIMES[k % len(PRIMES)] for k, a in enumerate(c.atoms())}


def ground(text: str, k: int, c: Candidate) -> Tensor:
    """A printed side with its variables as the leaves of candidate ``k`` (each candidate its
    own) and its atoms at their :func:`sizes`: the terms are the ones the rules are written in."""
    ns = {"Tensor": Tensor, "Vec": Vec, "i64": i64}
    ns.update({v: Tensor.input(f"{v}_{k}") for v, _ in c.shapes})
    ns.update({f"size_{a}": i64(n) for a, n in sizes(c).items()})
    return eval(text, ns)


def _shape_facts(c: Candidate, k: int) -> list:
    n = sizes(c)
    return [has_shape(Tensor.input(f"{v}_{k}"), dims(X.concrete(s, n))) for v, s in c.shapes]


def prune(cands: list[Candidate], iterations: int = ITERATIONS, progress=None) -> list[Candidate]:
    from eqsat.rules.discover.rulefile import to_rule

    batches: dict[int, list[Candidate]] = defaultdict(list)
    for c in cands:
        batches[X.size(c.lhs) + X.size(c.rhs)].append(c)
    for batch in batches.values():  # the most general first: it implies its instances
        batch.sort(key=lambda c: (-len(c.shapes), -len(c.atoms()), c.key()))
    kept: list[Candidate] = []
    kept_rules = ruleset(name="discover-kept")
    shapes = shape_rules(max_rank=4, max_concat=2, lean=True)  # what generated rules use
    for total in sorted(batches):
        batch = batches[total]
        for lo in range(0, len(batch), CHUNK):
            if progress:
                progress(
                    f"pruning rules of size {total}: {lo}/{len(batch)} checked, {len(kept)} kept"
                )
            chunk = list(enumerate(batch[lo : lo + CHUNK], start=lo))
            _prune_chunk(chunk, kept, kept_rules, shapes, iterations, to_rule)
    return kept


def _size(eg: EGraph) -> int:
    return sum(n for _, n in eg.all_function_sizes())


def _egraph(todo, shapes):
    """A fresh e-graph holding both sides of every candidate in ``todo``."""
    eg = EGraph()
    sides = {}  # named sides: checking ``lhs_k = rhs_k`` is then a lookup, while checking two
    # terms with nested concatenations made egglog join over every Vec (one check ran > 100 s)
    for k, c in todo:
        lhs, rhs = c.texts()
        sides[k] = (eg.let(f"lhs_{k}", ground(lhs, k, c)), eg.let(f"rhs_{k}", ground(rhs, k, c)))
        eg.register(*_shape_facts(c, k))
    eg.run(shapes.saturate())
    return eg, sides, GROWTH * _size(eg)


def _prune_chunk(todo, kept, kept_rules, shapes, iterations, to_rule) -> None:
    """Keep or drop each candidate of ``todo`` (in order) against ``kept``; appends to both."""
    eg, sides, cap = _egraph(todo, shapes)
    while todo:
        if kept:
            for _ in range(iterations):
                report = eg.run(kept_rules)
                eg.run(shapes.saturate())
                if not report.updated or _size(eg) > cap:
                    break
        todo = [(k, c) for k, c in todo if not eg.check_bool(eq(sides[k][0]).to(sides[k][1]))]
        if todo:
            k, c = todo.pop(0)
            kept.append(c)
            shapes_ = dict(c.shapes)
            lhs, rhs = c.texts()
            rule = to_rule(f"kept-{len(kept)}", lhs, rhs, shapes_)
            kept_rules.append(rule.egglog())
            if c.both_ways():  # and right to left, as the rules file will use it
                back = to_rule(f"kept-{len(kept)}-back", rhs, lhs, shapes_)
                kept_rules.append(back.egglog())
            if _size(eg) > cap:  # start the rest afresh: each kept rule runs again from scratch
                eg, sides, cap = _egraph(todo, shapes)
