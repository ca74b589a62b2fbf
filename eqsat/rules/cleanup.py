"""Clean-up rules: identities that only ever remove work (one-way, subsumed).

Consumes nothing; produces :class:`~eqsat.rules.base.Rule` records over
:mod:`eqsat.egraph.lang`. Each holds for every shape and is bit-exact. Their proof claim is
"bounded": the Z3 ledger (eqsat/verify/ledger.json) holds the evidence; each is also checked
numerically, alone, on a witness graph (tests/unit/rules/test_rules.py).
"""

from __future__ import annotations

from egglog import Vec, i64, var

from eqsat.egraph.lang import Tensor
from eqsat.rules.base import Rule

FAMILY = "cleanup"
# the claim for this module's egglog rules; the evidence is eqsat/verify/ledger.json, written by
# `eqsat rules verify --write-ledger` (a fast test fails when it does not hold the rule as written)
PROOF = "bounded"


def rules() -> list[Rule]:
    x = var("x", Tensor)
    r = []
    r.append(Rule("identity-elim", FAMILY, Tensor.identity(x), x, subsume=True, proof=PROOF))
    r.append(
        Rule(
            "relu-idempotent",
            FAMILY,
            Tensor.relu(Tensor.relu(x)),
            Tensor.relu(x),
            subsume=True,
            proof=PROOF,
            doc="relu(relu(x)) = relu(x)",
        )
    )
    r.append(
        Rule("neg-involution", FAMILY, Tensor.neg(Tensor.neg(x)), x, subsume=True, proof=PROOF)
    )
    # Transpose by a permutation that is its own inverse, twice, is the identity. Listed per
    # involutive permutation of rank <= 4 (egglog queries cannot compose vectors).
    for perm in _involutions(4):
        p = Vec[i64](*[i64(v) for v in perm])
        name = "transpose-involution-" + "".join(str(v) for v in perm)
        r.append(
            Rule(
                name,
                FAMILY,
                Tensor.transpose(Tensor.transpose(x, p), p),
                x,
                subsume=True,
                proof=PROOF,
                doc=f"T_{perm}(T_{perm}(x)) = x",
            )
        )
    return r


def _involutions(max_rank: int) -> list[tuple[int, ...]]:
    from itertools import permutations

    out = []
    for rank in range(2, max_rank + 1):
        for p in permutations(range(rank)):
            if p != tuple(range(rank)) and all(p[p[i]] == i for i in range(rank)):
                out.append(p)
    return out
