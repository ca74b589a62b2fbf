"""Rules as named data: the :class:`Rule` record and its compilation to egglog.

Consumes terms of :mod:`eqsat.egraph.lang` (patterns with egglog variables); produces egglog
rules for :mod:`eqsat.egraph.saturate`. A rule is a record, not code: a unique, stable,
kebab-case name (per-rule statistics are reported by it), the left- and right-hand sides, side
conditions (``when``: egglog facts such as ``eq(p).to(Vec(...))``), a proof *claim* whose
evidence lives in ``eqsat/verify`` (the ledger, issue 5), whether it is exact in floating point,
and where it came from. Every rule compiles to ``rule(eq(root).to(lhs), *when, name=name)
.then(union(root).with_(rhs))`` so that egglog's run report counts matches by rule name; one-way
clean-ups may ``subsume`` their left-hand side (EGGLOG_NOTES: it keeps the e-graph small).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from egglog import RewriteOrRule, eq, rule, subsume, union, var

from eqsat.egraph.classes import Snapshot
from eqsat.egraph.lang import Tensor
from eqsat.rules.printed import pretty

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
PROOF_CLAIMS = ("unproved", "bounded", "axioms")


@dataclass(frozen=True)
class Rule:
    name: str
    family: str
    lhs: Tensor
    rhs: Tensor
    when: tuple = ()
    proof: str = "unproved"  # a claim; the ledger in eqsat/verify holds the evidence
    fp_exact: bool = True  # False where it reassociates floating-point arithmetic
    origin: str = "hand"  # hand | generated
    subsume: bool = False  # one-way clean-up: the lhs is removed from extraction
    doc: str = ""  # the identity in math, where it is not obvious
    # generated rules: each variable's symbolic shape ((var, dims), ...), each dim a sum of atoms
    # (("a",), ("a", "b") for a + b); ``when`` holds the matching has_shape guards, and the
    # verifier proves the rule for every size of the atoms (eqsat.verify.rules.verify_typed)
    shapes: tuple = ()
    source: tuple = ()  # generated rules: the printed sides (lhs, rhs) the verifier evaluates

    def __post_init__(self) -> None:
        _check(self.name, self.proof)

    def egglog(self) -> RewriteOrRule:
        root = var("__root", Tensor)
        actions = [union(root).with_(self.rhs)]
        if self.subsume:
            actions.append(subsume(self.lhs))
        return rule(eq(root).to(self.lhs), *self.when, name=self.name).then(*actions)

    def text(self) -> str:
        """The printed form: what the proof ledger hashes (editing a rule drops its proof). A
        generated rule is its printed sides and its typing, what its proof reads (the guards
        are derived from them); printing its egglog terms and guards took 25 ms a rule (egglog
        formats with black), 18 s for the generated family. Printed once per rule: the ledger
        check and :func:`eqsat.rules.schedule.relevant` both read it; black's step is cached
        on disk (:mod:`eqsat.rules.printed`: 16 ms a hand-written rule without it, 0.2 ms
        with it)."""
        return self._printed

    @cached_property
    def _printed(self) -> str:
        if self.source and self.shapes:
            return f"{self.source[0]} => {self.source[1]} for {dict(self.shapes)}"
        when = f" if {', '.join(pretty(w) for w in self.when)}" if self.when else ""
        source = f" from {self.source[0]} => {self.source[1]}" if self.source else ""
        return f"{pretty(self.lhs)} => {pretty(self.rhs)}{when}{source}"


def _check(name: str, proof: str) -> None:
    if not _NAME.match(name):
        raise ValueError(f"rule name {name!r} is not kebab-case")
    if proof not in PROOF_CLAIMS:
        raise ValueError(f"rule {name}: proof claim {proof!r}")


def check_unique(rules: list[Rule | PyRule]) -> None:
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise ValueError(f"rule name {r.name!r} is used twice")
        seen.add(r.name)


@dataclass(frozen=True)
class PyRule:
    """A rewrite driven from Python over a :class:`~eqsat.egraph.classes.Snapshot` of the
    e-graph, for the two things one egglog rule cannot do well:

    - **groups of any size** (N matmuls sharing an operand): egglog patterns have a fixed arity,
      and pairwise merge rules regrow every subset of a group (2^8 merged matmuls for NAS-RNN's
      eight gates — the blow-up Tensat bounds with its multi-pattern iteration limit);
    - **guards on types** (a per-channel constant, a rank, a static size) and right-hand sides
      computed from them (slice bounds), which in egglog would need the shape analysis to run
      inside every rule's query.

    ``find`` returns the unions to make: (an existing e-node's term, its new equivalent). It
    runs once per phase (see :mod:`eqsat.rules.schedule`), so each group is merged once,
    maximally. ``pattern`` is its printed form (what the proof ledger hashes)."""

    name: str
    family: str
    pattern: str
    find: Callable[[Snapshot], list[tuple[Tensor, Tensor]]]
    proof: str = "unproved"
    fp_exact: bool = True
    origin: str = "hand"
    doc: str = ""
    # size -> a small ONNX model the rule rewrites, for its proof (eqsat.verify.pyrules); the
    # hand-written rules' witnesses are listed there instead
    witness: Callable[[int], object] | None = None
    # constructors it builds beyond schedule.PY_MADE, for schedule.relevant (where the op it
    # rewrites may be the graph's only way to that constructor: an average pooling into a conv)
    makes: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        _check(self.name, self.proof)

    def text(self) -> str:
        return self.pattern
