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
e-nodes without that cap). The price is completeness: a rule that only a detour through larger
terms derives is kept although implied. The count of kept rules is therefore an upper bound on
the non-redundant ones; every rule written is proved on its own either way.

Tighter bounds were measured and not taken. egglog's back-off scheduler (a rule matching more
than 1,000 times in a pass sits out) with a growth cap of 5 halved the pruning time on the
matrix world with sub and neg (358 s to 161 s to the first 1,000 candidates of size 6), but on
the default conv world it was slower and weaker: 379 rules kept in 142 s against 364 in 86 s,
and at N = 3 over the default op set 615 rules in 207 s against 561 (measured before the valid
windows joined the default op set). The bans cost derivations (so more rules are kept), and
the kept extra rules cost time.

The e-graphs run a lean shape analysis (ranks up to 4, two-input concatenations, no
broadcasting: what generated rules read). The candidates come after TASO's pruning
(:func:`.search.taso_prune`): measured on the matrix world with splits, pruning all 12,204
proved candidates and only TASO's 6,533 survivors both keep the same 165 rules (151 s vs 68 s).
"""

from __future__ import annotations

from collections import defaultdict

from egglog import EGraph, ruleset
from egglog.bindings import EggSmolError

from eqsat.egraph.lang import Tensor
from eqsat.egraph.shapes import Dim, has_shape, shape_rules
from eqsat.egraph.term_text import Node, Term, Var, parse
from eqsat.rules.discover import exprs as X
from eqsat.rules.discover.exprs import Candidate

ITERATIONS = 3
GROWTH = 20  # a chunk's e-graph is built afresh past this many times its first size
CHUNK = 200  # candidates per pruning e-graph: each kept rule re-runs its chunk, keep it small
PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29)  # atom sizes in the pruning e-graph


def sizes(c: Candidate) -> dict[str, int]:
    """The atom sizes of candidate ``c`` in the pruning e-graph: distinct primes."""
    return {a: PRIMES[k % len(PRIMES)] for k, a in enumerate(c.atoms())}


class _Text:
    """Puts candidates' sides into an e-graph as egglog program text.

    Building a side through egglog-python's expression objects cost about 4 ms per candidate
    (type inference and conversion in Python: 63 % of a size-6 chunk, 1.7 of 2.7 s, measured);
    the printed side (:meth:`~.exprs.Candidate.texts`, the form the rules are written in) is
    parsed (:mod:`eqsat.egraph.term_text`: ``Tensor`` constructors, ``Vec[...]``, ``i64`` and
    ``+``) and translated to egglog's syntax generically, with each constructor's egglog name
    asked of the e-graph (which also declares it), and parsed and run in Rust. The names and
    the raw program go through egglog-python's private methods (``_callable_to_egg``,
    ``_state.run_program``) of the pinned egglog 14.0.0; a test checks that both ways build
    the same terms."""

    def __init__(self, eg: EGraph):
        self.eg = eg
        self.names: dict[str, str] = {}
        self.has_shape = eg._callable_to_egg(has_shape)[1]
        self.dim_int = eg._callable_to_egg(Dim.int)[1]

    def ctor(self, attr: str) -> str:
        if attr not in self.names:
            self.names[attr] = self.eg._callable_to_egg(getattr(Tensor, attr))[1]
        return self.names[attr]

    def term(self, node: Node, env: dict[str, str]) -> str:
        match node:
            case Term(args=args) if node.ctor is not None:
                return (
                    "(" + " ".join([self.ctor(node.ctor), *(self.term(a, env) for a in args)]) + ")"
                )
            case Term(head=head, args=args) if head.startswith("Vec["):
                return "(" + " ".join(["vec-of", *(self.term(a, env) for a in args)]) + ")"
            case Term(head="i64", args=(arg,)):
                return self.term(arg, env)
            case Term(head="+", args=(a, b)):
                return f"(+ {self.term(a, env)} {self.term(b, env)})"
            case int() as n:
                return str(n)
            case str() as t:
                return f'"{t}"'
            case Var(name=name):
                return env[name]
        raise ValueError(f"cannot translate {node!r}")

    def candidate(self, k: int, c: Candidate) -> str:
        """``(let $lhs_k ...)``, ``(let $rhs_k ...)`` and the variables' shape facts: each
        candidate's variables are leaves of its own, its atoms distinct primes (:func:`sizes`)."""
        n = sizes(c)
        env = {v: f'({self.ctor("input")} "{v}_{k}")' for v, _ in c.shapes}
        env.update({f"size_{a}": str(p) for a, p in n.items()})
        lhs, rhs = c.texts()
        out = [f"(let $lhs_{k} {self._side(lhs, env)})", f"(let $rhs_{k} {self._side(rhs, env)})"]
        for v, shape in c.shapes:
            ds = " ".join(f"({self.dim_int} {d})" for d in X.concrete(shape, n))
            out.append(f"({self.has_shape} {env[v]} (vec-of {ds}))")
        return "\n".join(out)

    def _side(self, text: str, env: dict[str, str]) -> str:
        return self.term(parse(text), env)

    def run(self, program: str) -> None:
        self.eg._state.run_program(*self.eg._egraph.parse_program(program))

    def same(self, k: int) -> bool:
        try:
            self.run(f"(check (= $lhs_{k} $rhs_{k}))")
        except EggSmolError:
            return False
        return True


def prune(cands: list[Candidate], iterations: int = ITERATIONS, progress=None) -> list[Candidate]:
    from eqsat.rules.generated.rulefile import to_rule

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
    text = _Text(eg)  # named sides: checking ``lhs_k = rhs_k`` is then a lookup, while checking
    # two terms with nested concatenations made egglog join over every Vec (one ran > 100 s)
    text.run("\n".join(text.candidate(k, c) for k, c in todo))
    eg.run(shapes.saturate())
    return eg, text, GROWTH * _size(eg)


def _prune_chunk(todo, kept, kept_rules, shapes, iterations, to_rule) -> None:
    """Keep or drop each candidate of ``todo`` (in order) against ``kept``; appends to both."""
    eg, text, cap = _egraph(todo, shapes)
    while todo:
        if kept:
            for _ in range(iterations):
                report = eg.run(kept_rules)
                eg.run(shapes.saturate())
                if not report.updated or _size(eg) > cap:
                    break
        todo = [(k, c) for k, c in todo if not text.same(k)]
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
                eg, text, cap = _egraph(todo, shapes)
