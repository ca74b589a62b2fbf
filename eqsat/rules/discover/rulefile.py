"""Generated rules as data: the rules file under ``eqsat/rules/generated/`` and its
:class:`~eqsat.rules.base.Rule` records.

The file is JSON, deterministic (sorted keys, rules sorted by name): a ``generator`` header with
the settings and the summary that produced it, then one entry per rule: its name, the printed
left- and right-hand sides, and every variable's symbolic shape. :func:`to_rule` turns an entry
into a Rule whose ``when`` guards the match on those shapes through the shape analysis
(:mod:`eqsat.egraph.shapes`): each variable must have the rank and the dims the rule was proved
for. Without the guard an element-wise rule proved for equal shapes would also fire on
broadcast operands, where it can be wrong; with it a generated rule only ever fires on the
typing the verifier proved it for (:func:`eqsat.verify.rules.verify_typed`).

A dim that is one atom is matched as any ``Dim`` (static or symbolic); an atom that also occurs
in a sum (``a + b``, a concatenation's axis) must be a known size, ``Dim.int(p_a)``, so the sum
can be computed in the query.
"""

from __future__ import annotations

import json
from pathlib import Path

from egglog import String, Vec, eq, f64, i64, var

from eqsat.egraph.lang import Tensor
from eqsat.egraph.shapes import Dim, concat2, has_shape
from eqsat.rules.base import Rule

GENERATED_DIR = Path(__file__).resolve().parents[1] / "generated"
RULES_FILE = GENERATED_DIR / "rules.json"


def guards(shapes: dict[str, tuple]) -> list:
    """The query facts that bind each variable's shape to its symbolic dims."""
    summed = {a for s in shapes.values() for d in s if len(d) > 1 for a in d}
    dims: dict[str, Dim] = {}
    ints: dict[str, i64] = {}
    facts = []
    for v, s in shapes.items():
        sv = var(f"shape_{v}", Vec[Dim])
        facts += [has_shape(var(v, Tensor), sv), eq(sv.length()).to(i64(len(s)))]
        for k, d in enumerate(s):
            if len(d) == 1 and d[0] not in summed:
                if d[0] in dims:
                    facts.append(eq(dims[d[0]]).to(sv[i64(k)]))
                else:
                    dims[d[0]] = var(f"dim_{d[0]}", Dim)
                    facts.append(eq(dims[d[0]]).to(sv[i64(k)]))
                continue
            terms = []
            for a in d:
                ints.setdefault(a, var(f"size_{a}", i64))
                terms.append(ints[a])
            total = terms[0]
            for t in terms[1:]:
                total = total + t
            facts.append(eq(sv[i64(k)]).to(Dim.int(total)))
    return facts


class _PatternTensor:
    """``Tensor``'s constructors for a left-hand side: a concatenation's inputs cannot be
    matched inside a ``Vec`` literal (egglog: its variables would be ungrounded), so each
    ``concat`` becomes a fresh variable bound by the ``concat2`` view of the shape analysis."""

    def __init__(self) -> None:
        self.facts: list = []

    def __getattr__(self, name: str):
        if name == "concat":
            return self._concat
        return getattr(Tensor, name)

    def _concat(self, items, axis):
        if len(items) != 2:
            raise ValueError("generated rules concatenate two tensors")
        r = var(f"concat_{len(self.facts)}", Tensor)
        self.facts.append(concat2(r, items[0], items[1], axis))
        return r


class _PatternVec:
    def __getitem__(self, t):
        return (lambda *xs: xs) if isinstance(t, _PatternTensor) or t is Tensor else Vec[t]


def _namespace(shapes, tensor) -> dict:
    ns = {"Tensor": tensor, "Vec": Vec, "i64": i64, "f64": f64, "String": String}
    ns.update({v: var(v, Tensor) for v in shapes})
    return ns


def pattern(text: str, shapes: dict) -> tuple[Tensor, list]:
    """A left-hand side's term and the query facts its concatenations need."""
    pt = _PatternTensor()
    ns = _namespace(shapes, pt)
    ns["Vec"] = _PatternVec()
    term = eval(text, ns)
    return term, pt.facts


def to_rule(name: str, lhs: str, rhs: str, shapes: dict[str, tuple]) -> Rule:
    shapes = {v: tuple(tuple(d) for d in s) for v, s in shapes.items()}
    lhs_term, facts = pattern(lhs, shapes)
    return Rule(
        name,
        "generated",
        lhs_term,
        eval(rhs, _namespace(shapes, Tensor)),
        when=tuple(facts + guards(shapes)),
        source=(lhs, rhs),
        proof="bounded",
        fp_exact=False,  # reassociation and distribution are among them: exact over the reals
        origin="generated",
        shapes=tuple(sorted(shapes.items())),
    )


def write(entries: list[dict], header: dict, path: Path = RULES_FILE) -> Path:
    """Write the rules file atomically (no partial file on an interrupt)."""
    data = {"generator": header, "rules": sorted(entries, key=lambda r: r["name"])}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read(path: Path = RULES_FILE) -> dict:
    if not Path(path).exists():
        return {"generator": {}, "rules": []}
    return json.loads(Path(path).read_text())


def rules_of(entry: dict) -> list[Rule]:
    """An entry's rule, and its reverse ``NAME-rev`` when the entry is used both ways."""
    out = [to_rule(entry["name"], entry["lhs"], entry["rhs"], entry["shapes"])]
    if entry.get("both_ways"):
        out.append(to_rule(entry["name"] + "-rev", entry["rhs"], entry["lhs"], entry["shapes"]))
    return out


def load(path: Path = RULES_FILE) -> list[Rule]:
    """The rules of a rules file (none when there is no file)."""
    return [r for e in read(path)["rules"] for r in rules_of(e)]
