"""The saturation schedule, in one place: which rule families run, in what order, with which
budget. Consumes rule records from the family modules; produces egglog rulesets and the ordered
Python-driven rewrites for :func:`eqsat.egraph.saturate.saturate`.

Families are selected by name (``--rules cleanup,algebra,fold,merge,layout``) and single rules
removed by name (``--disable-rule NAME``). Two phases:

1. The egglog rules run to a fixpoint or a limit: one ruleset of the rules that shrink the
   e-graph or add a bounded number of nodes (clean-up, the element-wise-through-slice rules of
   layout), then each family of :data:`GROWING` (algebra: commutativity and associativity) in
   its own ruleset under egglog's back-off scheduler.
2. The Python-driven rewrites (:class:`~eqsat.rules.base.PyRule`) run once each, in the order of
   :data:`FAMILIES` and, within a family, the order its module lists them, each followed by
   phase 1 again. Folding comes first (dropout, batch norm, then per-channel Mul before Add, so
   that ``conv * a + b`` folds completely), then merging: batching (shared rhs) before
   shared-lhs merging, so that the batched matmuls of one input can then merge across weights;
   then layout (slices of concatenations, concatenations of slices — what merging leaves).
   Running each once is what bounds them (:mod:`eqsat.rules.base` says why they are not egglog
   rules); the order does not depend on the order families are named on the command line."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from egglog import Ruleset, Schedule, back_off, ruleset, run

from eqsat.rules import algebra, cleanup, fold, fusion, layout, linear, merge
from eqsat.rules.base import PyRule, Rule, check_unique
from eqsat.rules.generated import lift, rulefile


def generated(path: Path | None = None) -> list[Rule | PyRule]:
    """The rules file's rules and the N-ary merges lifted from its multi-output pairs
    (:mod:`eqsat.rules.generated.lift`): the packaged file (missing: a
    :class:`~eqsat.errors.DataFileError`, the installation is broken), or ``path`` (a file of
    ``eqsat rules discover -o``); ValueError when it is not a rules file."""
    if path is None:  # rulefile.RULES_FILE, looked up now (the tests point it elsewhere)
        return [*rulefile.load(), *lift.rules(rulefile.read()["rules"])]
    if not Path(path).is_file():
        raise ValueError(f"{path}: no such rules file")
    try:
        return [*rulefile.load(path), *lift.rules(rulefile.read(path)["rules"])]
    except (OSError, KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: not a rules file of `eqsat rules discover` ({e})") from None


FAMILIES = {
    "cleanup": cleanup.rules,
    "algebra": algebra.rules,
    "fold": fold.rules,
    "merge": merge.rules,
    "merge-conv": merge.conv_rules,  # opt-in: measured slower in onnxruntime on CPU
    # convolutions and matmuls as linear maps (issue 19): opt-in for optimize, on for compiled
    # targets (pipeline.COMPILED_RULES)
    "linear": linear.rules,
    "layout": layout.rules,
    # opt-in: the rules `eqsat rules discover` wrote to eqsat/rules/generated/rules.json, each
    # guarded by the shapes it was proved for (so they need the shape analysis, on by default),
    # and the N-ary merges lifted from them (Python-driven, after the hand-written merges)
    "generated": generated,
    # compiled targets only (the pipeline adds it): fusion decisions as terms, after every
    # rewrite that changes the algebra, so that each alternative gets its kernels
    "fusion": fusion.rules,
}
# families that can grow the e-graph without bound: each runs in its own ruleset under egglog's
# back-off scheduler (a rule that matches more than BACK_OFF_MATCHES times in one pass is banned
# for a few passes, with both numbers doubling each time)
GROWING = ("algebra", "generated")
BACK_OFF_MATCHES = 2000
DEFAULT_FAMILIES = ("cleanup", "algebra", "fold", "merge", "layout")


def select(
    families: Iterable[str] = DEFAULT_FAMILIES,
    disabled: Iterable[str] = (),
    rules_file: str | Path | None = None,
) -> list[Rule | PyRule]:
    """The rules of ``families`` without the ``disabled`` ones; ValueError on unknown names.
    ``rules_file``: the ``generated`` family's rules come from this file."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown rule families {unknown}; known: {sorted(FAMILIES)}")

    def family(f: str) -> list:
        return generated(Path(rules_file)) if f == "generated" and rules_file else FAMILIES[f]()

    chosen = [r for f in families for r in family(f)]
    check_unique(chosen)
    names = {r.name for r in chosen}
    missing = [d for d in disabled if d not in names]
    if missing:
        raise ValueError(f"--disable-rule: no rule named {missing[0]!r} in the chosen families")
    return [r for r in chosen if r.name not in set(disabled)]


def rulesets(rules: list[Rule | PyRule]) -> list[Ruleset | Schedule]:
    """Phase 1: the shrinking egglog rules as one ruleset, then each growing family in its own
    ruleset under the back-off scheduler."""
    plain = [r.egglog() for r in rules if isinstance(r, Rule) and r.family not in GROWING]
    out: list[Ruleset | Schedule] = [ruleset(*plain, name="eqsat-main")] if plain else []
    for fam in GROWING:
        mine = [r.egglog() for r in rules if isinstance(r, Rule) and r.family == fam]
        if mine:
            rs = ruleset(*mine, name=f"eqsat-{fam}")
            out.append(run(rs, scheduler=back_off(match_limit=BACK_OFF_MATCHES)))
    return out


def rewrites(rules: list[Rule | PyRule]) -> list[PyRule]:
    """Phase 2: the Python-driven rewrites, in the order they run."""
    rank = {f: k for k, f in enumerate(FAMILIES)}
    py = [r for r in rules if isinstance(r, PyRule)]
    return sorted(py, key=lambda r: rank[r.family])  # stable: module order within a family


# ---------------------------------------------------------------------------- relevance

_CTOR = re.compile(r"Tensor\.(\w+)\(")
# leaves and generic nodes: every encoded graph may have them
LEAVES = frozenset({"input", "weight", "ints", "scalar", "none", "node", "output"})
# what a Python-driven rewrite may build besides the ops already there (merges: concat, slice,
# pad; folds: weight arithmetic, reshape, gemm): a superset, so no rule is dropped that one of
# them could make reachable; a rewrite that builds another op says so (PyRule.makes)
PY_MADE = frozenset(
    {"concat", "slice", "pad", "mul", "add", "sub", "div", "sqrt", "reshape", "gemm", "matmul"}
)


def _sides(r: Rule) -> tuple[frozenset, frozenset]:
    """The constructors of a rule's left-hand side and of the rest of its printed form (the
    right-hand side, and the guards: a superset of what it makes, which only keeps more)."""
    lhs, _, rest = r.text().partition(" => ")
    return frozenset(_CTOR.findall(lhs)), frozenset(_CTOR.findall(rest))


def reads_sizes(rules: list[Rule | PyRule]) -> bool:
    """Whether ``rules`` need the shape analysis's ``dim_size`` view: generated egglog rules
    may read static sizes through it (:func:`eqsat.rules.generated.rulefile.guards`), no
    other rule does (a superset: not every generated rule reads it)."""
    return any(isinstance(r, Rule) and r.origin == "generated" for r in rules)


def relevant(rules: list[Rule | PyRule], present: Iterable[str]) -> list[Rule | PyRule]:
    """The rules that can fire on a graph whose terms use the constructors ``present``: every
    egglog rule whose left-hand side only uses constructors the graph has or that some rule
    (or Python-driven rewrite) can make from them, a closure; Python-driven rules all stay.
    Dropping the others changes no result, only the time: egglog pays for every rule in every
    pass whether it matches or not (with the 817 generated rules, NAS-RNN, which has no
    convolution, spent 13 s saturating an e-graph of 3k e-nodes)."""
    have = set(present) | LEAVES
    if any(isinstance(r, PyRule) for r in rules):
        have |= PY_MADE
    have |= {c for r in rules if isinstance(r, PyRule) for c in r.makes}
    egg = [r for r in rules if isinstance(r, Rule)]
    changed = True
    while changed:
        changed = False
        for r in egg:
            lhs, rhs = _sides(r)
            if lhs <= have and not rhs <= have:
                have |= rhs
                changed = True
    return [r for r in rules if not isinstance(r, Rule) or _sides(r)[0] <= have]
