"""Write docs/rules-table.md from the rule registry and the proof ledger (derived facts only).

    .venv/bin/python scripts/rules_doc.py          # rewrite docs/rules-table.md
    .venv/bin/python scripts/rules_doc.py --check  # exit 1 if the file is out of date

Every figure in the table is read from ``eqsat.rules.schedule.FAMILIES`` and
``eqsat/verify/ledger.json``; tests/unit/test_docs.py fails when the committed file differs from
what this script renders (after a rule is added, edited or re-proved, run it again).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "docs" / "rules-table.md"
EXAMPLES = 3  # generated rules shown as examples


def _cell(text: str, width: int = 110) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def render() -> str:
    from eqsat.rules import schedule
    from eqsat.rules.base import Rule
    from eqsat.verify.ledger import holds, load_ledger

    ledger = load_ledger()
    rules = schedule.select(tuple(schedule.FAMILIES))
    proved = {r.name: holds(r, ledger) for r in rules}
    lines = [
        "# Rule table (generated)",
        "",
        "Written by `scripts/rules_doc.py` from the rule registry (`eqsat/rules/schedule.py`) and",
        "the proof ledger (`eqsat/verify/ledger.json`); do not edit by hand. `docs/rules.md`",
        "explains the families.",
        "",
        "| family | default | rules | egglog | python-driven | proved in the ledger | bit-exact |",
        "|---|---|---|---|---|---|---|",
    ]
    for fam in schedule.FAMILIES:
        rs = [r for r in rules if r.family == fam]
        egglog = sum(isinstance(r, Rule) for r in rs)
        lines.append(
            f"| {fam} | {'yes' if fam in schedule.DEFAULT_FAMILIES else 'opt-in'} | {len(rs)} "
            f"| {egglog} | {len(rs) - egglog} | {sum(proved[r.name] for r in rs)} "
            f"| {sum(r.fp_exact for r in rs)} |"
        )
    lines += [
        "",
        "## Hand-written rules",
        "",
        "| rule | family | kind | identity | exact | ledger |",
        "|---|---|---|---|---|---|",
    ]
    for r in rules:
        if r.origin != "hand":
            continue
        kind = "egglog" if isinstance(r, Rule) else "python"
        lines.append(
            f"| `{r.name}` | {r.family} | {kind} | {_cell(r.doc or r.text())} "
            f"| {'bit-exact' if r.fp_exact else 'reals'} "
            f"| {'proved' if proved[r.name] else 'not proved'} |"
        )
    gen = [r for r in rules if r.origin != "hand"]
    lines += [
        "",
        "## Generated rules",
        "",
        f"{len(gen)} rules (`gen-*`, reverses `*-rev`, lifted merges) in the `generated` family; "
        f"{sum(proved[r.name] for r in gen)} proved in the ledger. Examples:",
        "",
    ]
    for r in [r for r in gen if isinstance(r, Rule)][:EXAMPLES]:
        lines.append(f"- `{r.name}`: `{_cell(r.text(), 200)}`")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = TARGET.read_text() if TARGET.is_file() else ""
        if current != text:
            print(f"{TARGET} is out of date: run python scripts/rules_doc.py", file=sys.stderr)
            return 1
        return 0
    TARGET.parent.mkdir(parents=True, exist_ok=True)
    tmp = TARGET.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(TARGET)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
