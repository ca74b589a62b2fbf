"""A rule's printed side, read for its proofs: the pattern variables and their roles, the ranks
that literal permutations fix, and the namespace of the literals.

Consumes a side's tree (:func:`eqsat.egraph.term_text.parse`); produces what the bounded proof
(:mod:`.rules`) and the shape-generic proof (:mod:`.generic`) both need to build their
instances. Both folds give ``Tensor`` their own meaning (Z3 tensors, index functions) over the
same literals (:data:`LITERALS`). It is its own module so that the two provers share it without
importing each other: ``generic`` used to import these helpers, private, from ``rules``, which
imports ``generic`` to run it (a cycle).
"""

from __future__ import annotations

from eqsat.egraph.term_text import Node, Term, Var, calls
from eqsat.verify import z3_ops


class _VecNS:
    """``Vec[<sort>](*items)``: the items, as a tuple (a shape, a permutation, or tensors)."""

    def __getitem__(self, _):
        return lambda *xs: tuple(xs)


# what the scalar literals of a printed side stand for in a proof: plain Python values
LITERALS = {"Vec": _VecNS(), "i64": int, "f64": float, "String": str}
# names that are a namespace's, never a pattern variable
RESERVED = frozenset({"Tensor", *LITERALS})


def variables(side: Node) -> dict[str, str]:
    """Pattern variables of a printed side and their roles: tensor | perm | slice1..slice4
    (a Slice's starts, ends, axes, steps). Only direct arguments of ``Tensor`` constructors
    are read, breadth first (where a variable has two roles, the last seen wins)."""
    roles: dict[str, str] = {}
    for call in calls(side):
        for k, arg in enumerate(call.args):
            if isinstance(arg, Var) and arg.name not in RESERVED:
                if call.ctor == "transpose" and k == 1:
                    roles[arg.name] = "perm"
                elif call.ctor == "slice" and k >= 1:
                    roles[arg.name] = f"slice{k}"
                elif call.ctor == "reshape" and k == 1:
                    raise z3_ops.Unsupported("a reshape target that is a pattern variable")
                else:
                    roles.setdefault(arg.name, "tensor")
    return roles


def perm_ranks(side: Node) -> list[int]:
    """The rank of each literal permutation (``Tensor.transpose(x, Vec[i64](...))``) in a
    printed side: its length."""
    return [
        len(call.args[1].args)
        for call in calls(side, "transpose")
        if len(call.args) == 2 and isinstance(call.args[1], Term) and call.args[1].is_call
    ]
