"""The saturation schedule, in one place: which rule families run, in what order, with which
budget. Consumes Rule records from the family modules; produces egglog rulesets for
:func:`eqsat.egraph.saturate.saturate`.

Families are selected by name (``--rules cleanup,...``) and single rules removed by name
(``--disable-rule NAME``). Today there is one phase: the clean-up family, which only shrinks
the e-graph and so saturates by itself. Multi-pattern merge families (which grow the e-graph
fastest) will run in a separately bounded phase (see issue 3).
"""

from __future__ import annotations

from collections.abc import Iterable

from egglog import Ruleset, ruleset

from eqsat.rules import cleanup
from eqsat.rules.base import Rule, check_unique

FAMILIES = {"cleanup": cleanup.rules}
DEFAULT_FAMILIES = ("cleanup",)


def select(families: Iterable[str] = DEFAULT_FAMILIES, disabled: Iterable[str] = ()) -> list[Rule]:
    """The rules of ``families`` without the ``disabled`` ones; ValueError on unknown names."""
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ValueError(f"unknown rule families {unknown}; known: {sorted(FAMILIES)}")
    chosen = [r for f in families for r in FAMILIES[f]()]
    check_unique(chosen)
    names = {r.name for r in chosen}
    missing = [d for d in disabled if d not in names]
    if missing:
        raise ValueError(f"--disable-rule: no rule named {missing[0]!r} in the chosen families")
    return [r for r in chosen if r.name not in set(disabled)]


def rulesets(rules: list[Rule]) -> list[Ruleset]:
    if not rules:
        return []
    return [ruleset(*(r.egglog() for r in rules), name="eqsat-main")]
