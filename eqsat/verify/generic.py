"""Shape-generic proofs: a rule proved for *every* size of each rank, not only small ones.

Consumes an egglog :class:`~eqsat.rules.base.Rule`; produces a verdict for each rank 1..6 (or
the rank a literal permutation fixes). A tensor of rank ``r`` is an uninterpreted function from
``r`` integer indices to a real (TASO's view of operators as functions), so no size appears
anywhere: element-wise ops act pointwise (``neg``/``relu``/``reciprocal`` interpreted,
``sigmoid``/``tanh``/``erf``/``exp``/``sqrt`` uninterpreted), ``Transpose(x, p)`` maps index
``i`` to ``x`` at ``j`` with ``j[p[k]] = i[k]``, a 0-d literal is a constant. ``lhs(i) = rhs(i)``
for fresh integer symbols ``i`` proves the rule for all indices, hence for all sizes.

Scope, precisely: operands of one shape (no broadcasting: the bounded proof in :mod:`.rules`
covers broadcast shapes up to size 3), and only rules built from the ops above; a permutation
variable is instantiated with every permutation of the rank (ranks <= 4). Rules with matmuls,
slices or reshapes have sums or index arithmetic over sizes and keep only the bounded proof.

The sides are parsed by :mod:`eqsat.egraph.term_text` and folded with ``Tensor`` bound to
index functions; their variables and literal permutations are read by :mod:`.patterns`, as the
bounded proof reads them.
"""

from __future__ import annotations

import itertools

import z3

from eqsat.egraph.ops import OPS
from eqsat.egraph.term_text import calls, evaluate, parse
from eqsat.verify.patterns import LITERALS, perm_ranks, variables
from eqsat.verify.z3_ops import POINTWISE
from eqsat.verify.z3_ops import UNINTERPRETED as Z3_UNINTERPRETED

# Element-wise semantics by constructor name, from z3_ops' one table (POINTWISE): unary
# interpreted ops, uninterpreted ones, binary ones; Identity is the identity index map.
UNARY = {
    d.ctor: POINTWISE[d.name]
    for d in OPS.values()
    if d.ctor and d.name in POINTWISE and d.inputs == (1, 1)
}
UNARY["identity"] = lambda v: v
UNINTERPRETED = tuple(d.ctor for d in OPS.values() if d.ctor and d.name in Z3_UNINTERPRETED)
BINARY = {
    d.ctor: POINTWISE[d.name]
    for d in OPS.values()
    if d.ctor and d.name in POINTWISE and d.inputs == (2, 2)
}
SUPPORTED = {*UNARY, *UNINTERPRETED, *BINARY, "transpose", "scalar"}
MAX_RANK = 6
MAX_PERM_RANK = 4


class Indexed:
    """A tensor as a function of its index tuple: ``self(i)`` is a Z3 real."""

    def __init__(self, f, rank: int | None):
        self.f, self.rank = f, rank  # rank None: a 0-d literal (broadcasts to any rank)

    def __call__(self, idx):
        return self.f(idx)


_UF = {name: z3.Function(f"g_{name}", z3.RealSort(), z3.RealSort()) for name in UNINTERPRETED}


class _Gen:
    """``Tensor``'s constructors over index functions."""

    @staticmethod
    def scalar(v, dtype):
        c = z3.RealVal(str(float(v)))
        return Indexed(lambda i: c, None)

    @staticmethod
    def transpose(x: Indexed, perm):
        perm = tuple(perm)
        if x.rank != len(perm):
            raise ValueError("perm rank")

        def f(i):
            j = [None] * len(perm)
            for k, p in enumerate(perm):
                j[p] = i[k]
            return x(tuple(j))

        return Indexed(f, x.rank)


for _n, _op in UNARY.items():
    setattr(_Gen, _n, staticmethod(lambda x, _op=_op: Indexed(lambda i: _op(x(i)), x.rank)))
for _n in UNINTERPRETED:
    setattr(
        _Gen,
        _n,
        staticmethod(lambda x, _g=_UF[_n]: Indexed(lambda i: _g(x(i)), x.rank)),
    )
for _n, _op in BINARY.items():

    def _bin(a, b, _op=_op):
        ranks = {r for r in (a.rank, b.rank) if r is not None}
        if len(ranks) > 1:
            raise ValueError("ranks differ")
        return Indexed(lambda i: _op(a(i), b(i)), next(iter(ranks), None))

    setattr(_Gen, _n, staticmethod(_bin))


def supported(rule) -> bool:
    """Whether the rule is built only from ops with a shape-generic semantics here."""
    if hasattr(rule, "find"):
        return False
    return all(
        call.ctor in SUPPORTED for side in (rule.lhs, rule.rhs) for call in calls(parse(str(side)))
    )


def prove(rule) -> tuple[str, str]:
    """(result, scope): ``proved`` for every rank tried, ``refuted`` with the rank and a model,
    or ``unsupported``."""
    if not supported(rule):
        return "unsupported", ""
    lhs_side, rhs_side = parse(str(rule.lhs)), parse(str(rule.rhs))
    roles = variables(lhs_side)
    literal = perm_ranks(lhs_side)
    has_perm_var = "perm" in roles.values()
    ranks = sorted(set(literal)) or list(
        range(1, (MAX_PERM_RANK if has_perm_var else MAX_RANK) + 1)
    )
    proved_ranks = []
    for r in ranks:
        idx = tuple(z3.Int(f"i{k}") for k in range(r))
        env_base = {}
        for v, role in roles.items():
            if role == "tensor":
                fn = z3.Function(f"T_{v}", *([z3.IntSort()] * r), z3.RealSort())
                env_base[v] = Indexed(lambda i, fn=fn: fn(*i), r)
        perm_vars = [v for v, role in roles.items() if role == "perm"]
        for perms in itertools.product(itertools.permutations(range(r)), repeat=len(perm_vars)):
            env = dict(env_base, **dict(zip(perm_vars, perms, strict=True)))
            ns = {**LITERALS, "Tensor": _Gen, **env}
            try:
                lhs = evaluate(lhs_side, ns)
            except ValueError:
                continue  # ill-typed at this rank
            rhs = evaluate(rhs_side, ns)
            s = z3.Solver()
            s.set("timeout", 10_000)
            s.add(lhs(idx) != rhs(idx))
            res = s.check()
            if res == z3.sat:
                return "refuted", f"rank {r}, perms {perms}: {s.model()}"[:400]
            if res != z3.unsat:
                return "unknown", f"rank {r}: {s.reason_unknown()}"
        proved_ranks.append(r)
    scope = (
        f"generic: every size, ranks {proved_ranks[0]}-{proved_ranks[-1]}, operands of one shape"
        if len(proved_ranks) > 1
        else f"generic: every size, rank {proved_ranks[0]}, operands of one shape"
    )
    return "proved", scope
