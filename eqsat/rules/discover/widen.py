"""Middle-slice forms of generated rules: the last phase of discovery.

Consumes a rules-file entry (:mod:`eqsat.rules.generated.rulefile`); produces candidate
entries, not yet proved, that :func:`eqsat.rules.discover.search.discover` proves and writes
besides the kept rules. A generator step, so it sits in the generator package: the optimizer
reads the entries it wrote, never this code (the lifted merges that need them are
:mod:`eqsat.rules.generated.lift`).
"""

from __future__ import annotations

from eqsat.rules.discover.exprs import atom_name


def widen(entry: dict) -> list[dict]:
    """Candidate middle-slice forms of a rules-file entry (not yet proved).

    A generated split takes the first atom of a dim or the rest (``split_l`` of ``a + b`` is
    ``0..a``, ``split_r`` is ``a..a+b``), so its rules match only a prefix or a suffix — not the
    middle pieces an N-ary merge leaves (the third gate of eight). For each dim of two atoms
    ``a + b`` that the entry's variables have and whose suffix bound ``size_a + size_b`` it
    prints, the candidate is the same entry with that dim ``a + b + c`` (a fresh atom): its
    suffix slice is then a middle slice. Whether that still holds depends on the rule
    (``split_r(concat(x, y)) = y`` does not widen), so every candidate is proved like a
    discovered one and only the proved are kept (:func:`eqsat.rules.discover.search.discover`);
    each is named after its entry, ``NAME-mid`` (``-mid2`` for a second such dim)."""
    shapes = {v: [tuple(d) for d in s] for v, s in entry["shapes"].items()}
    text = entry["lhs"] + " " + entry["rhs"]
    used = {a for s in shapes.values() for d in s for a in d}
    fresh = next(atom_name(k) for k in range(len(used) + 1) if atom_name(k) not in used)
    out = []
    for d in sorted({d for s in shapes.values() for d in s if len(d) == 2}):
        if f"size_{d[0]} + size_{d[1]}" not in text:
            continue
        wide = {
            v: [list(x + (fresh,)) if x == d else list(x) for x in s] for v, s in shapes.items()
        }
        suffix = "-mid" if not out else f"-mid{len(out) + 1}"
        out.append(
            {**entry, "name": entry["name"] + suffix, "shapes": wide, "widened_from": entry["name"]}
        )
    return out
