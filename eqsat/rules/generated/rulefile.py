"""Generated rules as data: the rules file under ``eqsat/rules/generated/`` and its
:class:`~eqsat.rules.base.Rule` records.

This is the runtime side of the file: the optimizer loads it whenever the ``generated`` family
is selected (:mod:`eqsat.rules.schedule`), so it imports nothing of the generator
(:mod:`eqsat.rules.discover`, with its enumeration, Z3 and process pools); the generator
imports this module to write the file it produced. Reading and writing sit together because
they are one file format.

The file is JSON, deterministic (sorted keys, rules sorted by name): a ``generator`` header with
the settings and the summary that produced it, then one entry per rule: its name, the printed
left- and right-hand sides, and every variable's symbolic shape (an entry with ``widened_from``
is a middle-slice form of that rule: :func:`eqsat.rules.discover.widen.widen`).
:func:`to_rule` turns an entry into a Rule whose ``when`` guards the match on those shapes
through the shape analysis (:mod:`eqsat.egraph.shapes`): each variable must have the rank and
the dims the rule was proved for. Without the guard an element-wise rule proved for equal
shapes would also fire on broadcast operands, where it can be wrong; with it a generated rule
only ever fires on the typing the verifier proved it for
(:func:`eqsat.verify.rules.verify_typed`).

A dim that is one atom is matched as any ``Dim`` (static or symbolic); an atom whose size the
rule needs (it occurs in a sum such as a concatenation's axis, or in a split's bounds) must be a
known size, bound or derived in the query (:func:`guards`); a literal dim (a 3x3 kernel) must be
that size. A split is a one-axis ``Slice`` whose bounds print the atoms' sizes (``size_a``,
``size_a + size_b``); in a left-hand side it is matched through the ``slice1`` view of the
shape analysis, like a concatenation through ``concat2``.

The printed sides are parsed by :mod:`eqsat.egraph.term_text` and folded into egglog terms
with the namespaces below (:func:`pattern` for a left-hand side, which needs the views, and
plain ``Tensor`` for a right-hand side).
"""

from __future__ import annotations

import json
from pathlib import Path

from egglog import String, Vec, eq, f64, i64, var

from eqsat.egraph.lang import Tensor
from eqsat.egraph.shapes import Dim, concat2, dim_size, has_shape, slice1
from eqsat.egraph.term_text import Var, evaluate, parse, walk
from eqsat.errors import missing_data_file
from eqsat.rules.base import Rule

GENERATED_DIR = Path(__file__).resolve().parent
RULES_FILE = GENERATED_DIR / "rules.json"


# a rule that reads at least this many dims as sizes reads them through the ``dim_size`` view;
# one that reads fewer through ``Dim.int`` (see :func:`guards`)
SIZES_VIA_VIEW = 5


class _Atom:
    """A dim atom's size in a printed slice bound (``size_a``), summed while the pattern is
    read: :func:`guards` then binds or derives each size."""

    def __init__(self, atoms: tuple[str, ...]):
        self.atoms = atoms

    def __add__(self, other: _Atom) -> _Atom:
        return _Atom(self.atoms + other.atoms)


def guards(shapes: dict[str, tuple], sums=(), needed: set[str] = frozenset()) -> tuple[list, dict]:
    """The query facts that bind each variable's shape to its symbolic dims, and each dim atom
    that a sum or a slice bound needs as an ``i64`` expression (``size_a``).

    ``sums`` are the pattern's equations ``(i64 variable, atoms)``: a slice bound is the sum of
    those atoms' sizes. A variable's dim that is a sum (or a single atom some sum needs) is
    read as its static size ``t``, another equation. Sizes are solved in order: an equation with
    one unknown atom gives it, as ``t`` minus the known ones (a split's second piece is the dim's
    size minus the first piece: no variable has it as a dim); every other equation becomes a
    check, and every size must be positive (the proofs are for sizes 1..3). ``needed``: atoms
    whose size the right-hand side reads. ValueError when a needed size stays unknown.

    How a size is read decides egglog's join order, measured on the pruning e-graphs (egglog
    14): ``shape[k] = Dim.int(t)`` leaves ``t`` in no table but ``Dim.int`` (``vec-get`` only
    filters), so egglog joins the ``Dim.int`` table with itself first, once per size read: six
    reads took 7 s a pass over 2.5k e-nodes, 4 ms through the ``dim_size(v, k, t)`` view of the
    shape analysis. With up to four reads ``Dim.int`` was the faster plan (through the view, a
    concatenation of two valid convolutions took 0.35 s a pass, against milliseconds), so a rule
    reads its sizes through the view from :data:`SIZES_VIA_VIEW` reads on."""
    sums = list(sums)
    needed = set(needed) | {a for _, d in sums for a in d}
    needed |= {a for s in shapes.values() for d in s if len(d) > 1 for a in d}
    # a literal in a sum (a valid convolution's input is ``h + 2``) is its own size
    known: dict[str, i64] = {a: i64(int(a)) for a in needed if a.isdigit()}
    needed -= set(known)
    dims: dict[str, Dim] = {}
    facts = []
    kinds = {v: [_read(d, needed) for d in s] for v, s in shapes.items()}
    via_view = sum(k == "size" for ks in kinds.values() for k in ks) >= SIZES_VIA_VIEW
    for v, s in shapes.items():
        sv = var(f"shape_{v}", Vec[Dim])
        facts += [has_shape(var(v, Tensor), sv), eq(sv.length()).to(i64(len(s)))]
        for k, (d, kind) in enumerate(zip(s, kinds[v], strict=True)):
            if kind == "literal":  # a 3x3 kernel
                # (not dim_size(v, k, 3): egglog then started from every tensor of size 3)
                facts.append(eq(sv[i64(k)]).to(Dim.int(i64(int(d[0])))))
                continue
            if kind == "dim":
                dims.setdefault(d[0], var(f"dim_{d[0]}", Dim))
                facts.append(eq(dims[d[0]]).to(sv[i64(k)]))
                continue
            total = var(f"total_{v}_{k}", i64)
            if via_view:
                facts.append(dim_size(var(v, Tensor), i64(k), total))
            else:
                facts.append(eq(sv[i64(k)]).to(Dim.int(total)))
            sums.append((total, tuple(d)))
    used: set[int] = set()
    progress = True
    while progress:
        progress = False
        for j, (t, d) in enumerate(sums):
            unknown = {a for a in d if a not in known}
            if j in used or len(unknown) != 1 or d.count(next(iter(unknown))) != 1:
                continue
            (a,) = unknown
            rest = [known[b] for b in d if b != a]
            known[a] = t - _sum(rest) if rest else t
            facts.append(known[a] > i64(0))  # proved for sizes >= 1: no empty piece
            used.add(j)
            progress = True
    missing = sorted(needed - set(known))
    if missing:
        raise ValueError(f"sizes {missing} cannot be derived from a match")
    facts += [
        eq(t).to(_sum([known[a] for a in d])) for j, (t, d) in enumerate(sums) if j not in used
    ]
    return facts, known


def _read(d: tuple, needed: set[str]) -> str:
    """How :func:`guards` reads a dim: a ``"literal"`` size, any ``"dim"`` (one atom whose size
    nothing needs), or its static ``"size"`` (a sum, or an atom some size is derived from)."""
    if len(d) == 1 and d[0].isdigit():
        return "literal"
    return "dim" if len(d) == 1 and d[0] not in needed else "size"


def _sum(xs: list):
    total = xs[0]
    for x in xs[1:]:
        total = total + x
    return total


class _VecLit(tuple):
    """A ``Vec[i64]`` literal in a pattern, kept as its items until an op reads it."""


class _Ints(tuple):
    """``Tensor.ints`` of a literal in a pattern, kept as its items until an op reads it."""


def _literal(a):
    if isinstance(a, _Ints):
        return Tensor.ints(Vec[i64](*a))
    return Vec[i64](*a) if isinstance(a, _VecLit) else a


class _PatternTensor:
    """``Tensor``'s constructors for a left-hand side. A concatenation's inputs cannot be
    matched inside a ``Vec`` literal (egglog: its variables would be ungrounded), so each
    ``concat`` becomes a fresh variable bound by the ``concat2`` view of the shape analysis; a
    slice likewise by the ``slice1`` view, its bounds fresh ``i64`` variables whose atoms go
    to :func:`guards` as equations."""

    def __init__(self) -> None:
        self.facts: list = []
        self.sums: list[tuple] = []

    def __getattr__(self, name: str):
        if name in ("concat", "slice", "ints"):
            return getattr(self, "_" + name)
        f = getattr(Tensor, name)
        return lambda *args: f(*(_literal(a) for a in args))

    @staticmethod
    def _ints(items):
        return _Ints(items)

    def _concat(self, items, axis):
        if len(items) != 2:
            raise ValueError("generated rules concatenate two tensors")
        r = var(f"concat_{len(self.facts)}", Tensor)
        self.facts.append(concat2(r, items[0], items[1], axis))
        return r

    def _slice(self, x, starts, ends, axes, steps):
        if len(starts) != 1 or len(ends) != 1 or len(axes) != 1:
            raise ValueError("generated rules slice one axis")
        n = len(self.facts)
        bounds = []
        for which, b in (("start", starts[0]), ("end", ends[0])):
            if isinstance(b, _Atom):
                bv = var(f"slice_{n}_{which}", i64)
                self.sums.append((bv, b.atoms))
                b = bv
            bounds.append(b)
        r = var(f"slice_{n}", Tensor)
        self.facts.append(slice1(r, x, bounds[0], bounds[1], axes[0]))
        return r


class _PatternVec:
    def __getitem__(self, t):
        return lambda *xs: xs if t is Tensor else _VecLit(xs)


def _namespace(shapes, tensor, sizes: dict) -> dict:
    ns = {"Tensor": tensor, "Vec": Vec, "i64": i64, "f64": f64, "String": String}
    ns.update({v: var(v, Tensor) for v in shapes})
    ns.update({f"size_{a}": n for a, n in sizes.items()})
    return ns


def pattern(text: str, shapes: dict) -> tuple[Tensor, list, list]:
    """A left-hand side's term, the query facts its concatenations and slices need, and the
    slice-bound equations (for :func:`guards`)."""
    pt = _PatternTensor()
    atoms = {a for s in shapes.values() for d in s for a in d}
    ns = _namespace(shapes, pt, {a: _Atom((a,)) for a in atoms})
    ns["Vec"] = _PatternVec()
    term = evaluate(parse(text), ns)
    return term, pt.facts, pt.sums


# the fields every generated rule shares (what :func:`to_rule` sets besides the terms)
_FIELDS = {
    "family": "generated",
    "proof": "bounded",
    "fp_exact": False,  # reassociation and distribution are among them: exact over the reals
    "origin": "generated",
    "subsume": False,
    "doc": "",
}


def _typing(shapes: dict) -> dict[str, tuple]:
    """A rules-file typing (lists, from JSON) as tuples: each variable's dims, each a sum."""
    return {v: tuple(tuple(d) for d in s) for v, s in shapes.items()}


def _sizes_read(text: str) -> set[str]:
    """The dim atoms whose sizes a printed side reads (``size_a`` in a slice bound: ``a``)."""
    names = (n.name for n in walk(parse(text)) if isinstance(n, Var))
    return {n[len("size_") :] for n in names if n.startswith("size_")}


def to_rule(name: str, lhs: str, rhs: str, shapes: dict[str, tuple]) -> Rule:
    shapes = _typing(shapes)
    lhs_term, facts, sums = pattern(lhs, shapes)
    shape_facts, sizes = guards(shapes, sums, _sizes_read(rhs))
    return Rule(
        name,
        lhs=lhs_term,
        rhs=evaluate(parse(rhs), _namespace(shapes, Tensor, sizes)),
        when=tuple(facts + shape_facts),
        source=(lhs, rhs),
        shapes=tuple(sorted(shapes.items())),
        **_FIELDS,
    )


class GeneratedRule(Rule):
    """A generated rule (:func:`to_rule`) whose egglog terms — ``lhs``, ``rhs`` and the guards
    ``when`` — are built from its printed sides on first use.

    Building them takes about 4 ms a rule (egglog-python's expression objects for the
    pattern, the guards and the right-hand side): 5.5 s for the 1,342 rules of the rules file,
    in every process that loaded it. An optimize run needs the terms of the rules that can fire
    on its graph only (423 on NAS-RNN, none of the convolution rules), and everything before
    that — the family's selection, the ledger check (:meth:`Rule.text` reads the printed sides
    and the typing), :func:`eqsat.rules.schedule.relevant` — reads the other fields. So the
    terms wait until :meth:`Rule.egglog` (or anything else) asks for them. The record is the
    same as :func:`to_rule`'s in every field (a test compares them)."""

    def __init__(self, name: str, lhs: str, rhs: str, shapes: dict):
        fields = {
            **_FIELDS,
            "name": name,
            "source": (lhs, rhs),
            "shapes": tuple(sorted(_typing(shapes).items())),
        }
        for k, v in fields.items():
            object.__setattr__(self, k, v)  # a frozen dataclass: set once, here
        self.__post_init__()

    def __getattr__(self, k: str):  # only asked for what is not set yet: the terms
        if k not in ("lhs", "rhs", "when"):
            raise AttributeError(k)
        built = to_rule(self.name, *self.source, dict(self.shapes))
        for f in ("lhs", "rhs", "when"):
            object.__setattr__(self, f, getattr(built, f))
        return getattr(self, k)


def write(
    entries: list[dict], header: dict, path: Path = RULES_FILE, proofs: dict | None = None
) -> Path:
    """Write the rules file atomically (no partial file on an interrupt). ``proofs``: the
    rules' proof-ledger entries (name -> entry), kept in the file itself for a file other than
    the packaged one (whose proofs are in the committed ledger)."""
    data = {"generator": header, "rules": sorted(entries, key=lambda r: r["name"])}
    if proofs is not None:
        data["proofs"] = dict(sorted(proofs.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read(path: Path | None = None) -> dict:
    """The rules file's contents; a missing file is an error (:class:`DataFileError`), not an
    empty rule set (that made ``--rules generated`` optimize nothing and exit 0)."""
    path = RULES_FILE if path is None else Path(path)
    if not path.is_file():
        raise missing_data_file(path, "the generated rules file")
    return json.loads(path.read_text())


def proofs(path: Path) -> dict[str, dict]:
    """The proof-ledger entries a rules file carries (none for the packaged file)."""
    data = read(path)
    found = data.get("proofs", {}) if isinstance(data, dict) else {}
    return found if isinstance(found, dict) else {}


def rules_of(entry: dict) -> list[Rule]:
    """An entry's rule, and its reverse ``NAME-rev`` when the entry is used both ways (their
    egglog terms are built when first used: :class:`GeneratedRule`)."""
    out = [GeneratedRule(entry["name"], entry["lhs"], entry["rhs"], entry["shapes"])]
    if entry.get("both_ways"):
        out.append(
            GeneratedRule(entry["name"] + "-rev", entry["rhs"], entry["lhs"], entry["shapes"])
        )
    return out


def load(path: Path | None = None) -> list[Rule]:
    """The rules of a rules file (none when there is no file), read once per version of the
    file in a process; each rule's egglog terms are built when first used (0.1 s for the
    file's 1,342 rules, 5.5 s with every rule's terms built)."""
    p = Path(RULES_FILE if path is None else path).resolve()
    stamp = p.stat().st_mtime_ns if p.is_file() else None  # missing: read() says so
    key = (str(p), stamp)
    if key not in _LOADED:
        _LOADED.clear()
        _LOADED[key] = [r for e in read(p)["rules"] for r in rules_of(e)]
    return list(_LOADED[key])


_LOADED: dict[tuple, list[Rule]] = {}
