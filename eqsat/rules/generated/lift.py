"""Multi-output merges lifted from generated rules: TASO's multi-output substitutions, N-ary.

Consumes the entries of a rules file (:mod:`.rulefile`); produces
:class:`~eqsat.rules.base.PyRule` s for the ``generated`` family. Discovery finds every rule as
one output: among them, pairs that take the two pieces of one operator applied to a
concatenation,

    split_l(f(x, concat(y, z, b)), a) = f(x, y)        split_r(f(x, concat(y, z, b)), a) = f(x, z)

(``gen-split-0102`` and ``gen-split-0117``: ``x·[y z]`` sliced is ``x·y`` and ``x·z``). Read
right to left the pair is a substitution with two outputs — wherever ``f(x, y)`` and
``f(x, z)`` are both computed, one ``f(x, concat(y, z))`` can compute both (TASO's
multi-output substitutions, SOSP'19 §3) — which a single-output rule cannot say: right to left
``f(x, y) = split_l(...)`` would make ``z`` up. So the pair is lifted here into one N-ary merge:
the e-nodes of ``f`` that agree on every other argument (the same e-classes and attribute
values as the rule's) become slices of one ``f`` over the concatenation of all their
``y`` s. That it holds for N pieces follows from the pair by induction (``concat(y1, .., yn)``
is ``concat(y1, concat(y2, .., yn))`` and the rules hold for any size of ``z``'s axis, which the
lift checks is an atom of its own); each lifted rule is also proved on its own, on a witness
with three pieces (:func:`witness`, :mod:`eqsat.verify.pyrules`).

Which pairs exist is up to discovery: the lifts are found in the rules file, not listed here.
The optimizer builds them whenever it selects the ``generated`` family, so this module sits
beside the rules file and its loader, apart from the generator (:mod:`eqsat.rules.discover`,
which only wrote the file); the printed sides are read by the one parser of rule text
(:mod:`eqsat.egraph.term_text`).
A pair qualifies when its inner term is one constructor whose arguments are variables, literal
attributes or ``Tensor.none()``, and exactly one concatenation of two variables; at least one
variable besides the pieces (the shared operand: a unary ``relu(concat(y, z))`` would merge
every relu of one shape, which saves nothing); the pieces' shapes equal but on the concatenated
axis, whose atom occurs nowhere else. Like the hand-written merges (:mod:`eqsat.rules.merge`)
a lift runs once per phase (its groups merged maximally, at most
:data:`~eqsat.rules.merge.MAX_GROUP` pieces each, not the 2^n subsets pairwise rules regrow),
skips a member that is weight-only (it is folded anyway) and one whose piece depends on
another member's result (a merge would need the future: a cycle).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from egglog import Vec, i64

from eqsat.egraph.classes import Snapshot
from eqsat.egraph.encode import prim
from eqsat.egraph.lang import BY_CTOR, Tensor, ctor
from eqsat.egraph.term_text import Node, Term, Var, parse
from eqsat.rules.base import PyRule

FAMILY = "generated"


@dataclass(frozen=True)
class Lift:
    """A pair of generated rules read as one N-ary merge."""

    name: str
    ctor: str  # the Tensor constructor of the inner term
    args: tuple  # per argument: ("var", name) | ("lit", value) | ("none",) | ("concat",)
    position: int  # the concatenated argument
    concat_axis: int
    out_axis: int  # the axis the pieces are sliced from
    piece: tuple  # the first piece's shape in the rule's typing (atoms; its axis is free)
    shapes: tuple  # ((var, shape), ...) of the other variables
    sources: tuple[str, str]  # the two generated rules, left piece first

    def pattern(self) -> str:
        shown = []
        for a in self.args:
            if a[0] == "var":
                shown.append(a[1])
            elif a[0] == "concat":
                shown.append(f"concat(y_1..y_n, {self.concat_axis})")
            elif a[0] == "none":
                shown.append("none")
            else:
                shown.append(repr(a[1]))
        merged = f"{self.ctor}({', '.join(shown)})"
        return (
            f"{self.ctor}(.., y_i, ..) => slice({merged}, o_i, o_i + n_i, {self.out_axis}) "
            f"from {self.sources[0]} and {self.sources[1]}"
        )


# ---------------------------------------------------------------------------- finding pairs


def _value(node: Node):
    """A literal argument's value as the snapshot holds attributes: int, or tuple of ints."""
    match node:
        case Term(head="i64", args=(int() as n,)):
            return n
        case Term(head=head, args=items) if head.startswith("Vec["):
            out = tuple(_value(x) for x in items)
            return out if all(isinstance(x, int) for x in out) else None
    return None


def _call(node: Node, name: str) -> tuple | None:
    """The arguments of ``node`` when it is a call of ``Tensor.<name>``."""
    return node.args if isinstance(node, Term) and node.ctor == name else None


def _inner(lhs: str):
    """(inner term, slice start/end/axis terms) of ``Tensor.slice(inner, ...)``, or None."""
    args = _call(parse(lhs), "slice")
    if args is None or len(args) != 5 or _call(args[4], "none") is None:
        return None
    return args[0], args[1:4]


def _ints(node: Node):
    args = _call(node, "ints")
    return _value(args[0]) if args and len(args) == 1 else None


def _read(entry: dict):
    """(inner key, lift fields, which piece) of a rule of the split-of-concat form, or None."""
    found = _inner(entry["lhs"])
    if found is None:
        return None
    inner, (start, _end, axis) = found
    if not isinstance(inner, Term) or inner.ctor is None:
        return None
    name = inner.ctor
    if name not in BY_CTOR or BY_CTOR[name].inputs == "*":
        return None
    args, concat = [], None
    for k, a in enumerate(inner.args):
        if isinstance(a, Var):
            args.append(("var", a.name))
        elif _call(a, "none") is not None:
            args.append(("none",))
        elif (cat := _call(a, "concat")) is not None and concat is None:
            parts = cat[0].args if isinstance(cat[0], Term) and cat[0].is_call else ()
            b = _value(cat[1]) if len(cat) == 2 else None
            if len(parts) != 2 or not all(isinstance(p, Var) for p in parts) or b is None:
                return None
            concat = (k, parts[0].name, parts[1].name, b)
            args.append(("concat",))
        elif (v := _value(a)) is not None:
            args.append(("lit", v))
        else:
            return None
    if concat is None:
        return None
    k, left, right, b = concat
    rhs = parse(entry["rhs"])
    which = None
    for piece, label in ((left, "l"), (right, "r")):
        expect = Term(inner.head, (*inner.args[:k], Var(piece), *inner.args[k + 1 :]))
        if rhs == expect:
            which = label
    out_axis = _ints(axis)
    if which is None or not isinstance(out_axis, tuple) or len(out_axis) != 1:
        return None
    if which == "l" and _ints(start) != (0,):
        return None
    key = (inner, _shapes_key(entry["shapes"]), out_axis[0])
    return key, (name, tuple(args), k, b, out_axis[0], left, right), which


def _shapes_key(shapes: dict) -> tuple:
    return tuple(sorted((v, tuple(tuple(d) for d in s)) for v, s in shapes.items()))


def _qualifies(args, b, left, right, shapes: dict) -> bool:
    others = [a[1] for a in args if a[0] == "var"]
    if not others or left in others or right in others or left == right:
        return False
    sl, sr = shapes.get(left), shapes.get(right)
    if sl is None or sr is None or len(sl) != len(sr) or not 0 <= b < len(sl):
        return False
    if any(tuple(sl[i]) != tuple(sr[i]) for i in range(len(sl)) if i != b):
        return False
    atom = tuple(sl[b])
    if len(atom) != 1 or atom[0].isdigit():
        return False
    uses = [a for v, s in shapes.items() for i, d in enumerate(s) if not (v == left and i == b)
            for a in d]  # fmt: skip
    return atom[0] not in uses


def lifts(entries: list[dict]) -> list[Lift]:
    """The lifts of a rules file's entries: every left/right pair of the split-of-concat form,
    in order of the concatenated argument (the first argument's merges first: batching before
    merging across weights, as :mod:`eqsat.rules.merge` orders them), then of name."""
    halves: dict[tuple, dict[str, tuple]] = defaultdict(dict)
    discovered = [e for e in entries if "widened_from" not in e]
    for e in sorted(discovered, key=lambda e: e["name"]):
        got = _read(e)
        if got is not None:
            key, fields, which = got
            halves[key].setdefault(which, (e, fields))
    out = []
    for pair in halves.values():
        if set(pair) != {"l", "r"}:
            continue
        (el, fields), (er, _) = pair["l"], pair["r"]
        name, args, k, b, out_axis, left, right = fields
        shapes = {v: tuple(tuple(d) for d in s) for v, s in el["shapes"].items()}
        if not _qualifies(args, b, left, right, shapes):
            continue
        others = tuple(sorted((v, s) for v, s in shapes.items() if v not in (left, right)))
        out.append(
            Lift(
                f"{el['name']}-{er['name'].rsplit('-', 1)[-1]}-nary",
                name,
                args,
                k,
                b,
                out_axis,
                shapes[left],
                others,
                (el["name"], er["name"]),
            )
        )
    return sorted(out, key=lambda lf: (lf.position, lf.name))


# ---------------------------------------------------------------------------- the rewrite


def _bind(shape: tuple, dims: tuple, env: dict, free: int | None = None) -> bool:
    """Match concrete ``dims`` against a rule's symbolic ``shape`` (binding atoms in ``env``);
    the axis ``free`` matches any static size. A dim is a literal, an atom, or an atom plus
    literals (a valid convolution's input, ``h + 2``: the atom is the size less 2, at least 1,
    the sizes the rule was proved for)."""
    if len(shape) != len(dims):
        return False
    for i, (d, n) in enumerate(zip(shape, dims, strict=True)):
        if not isinstance(n, int):
            return False
        if i == free:
            continue
        atoms = [a for a in d if not a.isdigit()]
        rest = n - sum(int(a) for a in d if a.isdigit())
        if len(atoms) > 1:
            return False
        if not atoms:
            if rest != 0:
                return False
        elif rest < 1 or env.setdefault(atoms[0], rest) != rest:
            return False
    return True


def _members(lift: Lift, s: Snapshot):
    """Groups of (class, argument classes/values, piece class) keyed by the shared arguments."""
    groups: dict[tuple, list[tuple]] = defaultdict(list)
    shapes = dict(lift.shapes)
    for nid, v in s.views.items():
        if s.eg.nodes[nid].subsumed or v.kind != "op" or v.spec is None:
            continue
        if v.spec.ctor != lift.ctor:
            continue
        args = (*v.inputs, *v.values)
        if len(args) != len(lift.args):
            continue
        bound: dict[str, str] = {}
        env: dict[str, int] = {}
        ok = True
        for a, got in zip(lift.args, args, strict=True):
            if a[0] == "none":
                ok = got is None
            elif a[0] == "lit":
                ok = got == a[1]
            elif a[0] == "var":
                t = s.tensor_type(got)
                ok = (
                    got is not None
                    and bound.setdefault(a[1], got) == got
                    and t is not None
                    and _bind(shapes[a[1]], t.shape, env)
                )
            if not ok:
                break
        piece = args[lift.position]
        t = s.tensor_type(piece)
        if not ok or t is None or not _bind(lift.piece, t.shape, env, lift.concat_axis):
            continue
        if all(i is None or i in s.constant for i in v.inputs):
            continue  # weight-only: folded at export anyway
        key = tuple(args[i] for i, a in enumerate(lift.args) if a[0] != "concat")
        dims = tuple(d for i, d in enumerate(t.shape) if i != lift.concat_axis)
        members = groups[(key, dims, t.dtype)]
        c = s.eg.nodes[nid].eclass
        if all(piece != p for _, _, p in members):
            members.append((c, args, piece))
    return groups


def find(lift: Lift, s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    """The unions: each member's own term with a slice of the merged one."""
    from eqsat.rules.merge import chunks, independent, slice_of

    unions = []
    groups = sorted(_members(lift, s).values(), key=lambda ms: min(s.order(m[0]) for m in ms))
    for members in groups:
        in_order = sorted(members, key=lambda m: s.order(m[0]))
        for chunk in chunks(independent(s, in_order, piece=lambda m: m[2])):
            pieces = [s.term(p) for _, _, p in chunk]
            sizes = [_out_size(s, c, lift.out_axis) for c, _, _ in chunk]
            if len(chunk) < 2 or any(x is None for x in pieces + sizes):
                continue
            cat = Tensor.concat(Vec[Tensor](*pieces), i64(lift.concat_axis))
            merged = _term(lift, s, chunk[0][1], cat)
            if merged is None:
                continue
            off = 0
            for (_, args, _), piece, n in zip(chunk, pieces, sizes, strict=True):
                own = _term(lift, s, args, piece)
                if own is not None:
                    unions.append((own, slice_of(merged, off, off + n, lift.out_axis)))
                off += n
    return unions


def _term(lift: Lift, s: Snapshot, args: tuple, piece: Tensor) -> Tensor | None:
    """The lift's op over a member's arguments (input classes, attribute values), with
    ``piece`` as the concatenated argument; None when an input has no term."""
    spec = BY_CTOR[lift.ctor]
    n_in = len(spec.inputs)
    out = []
    for i, a in enumerate(args):
        if i == lift.position:
            out.append(piece)
        elif i < n_in:
            out.append(Tensor.none() if a is None else s.term(a))
        else:
            out.append(prim(spec.attrs[i - n_in].kind, a))
    return None if any(x is None for x in out) else ctor(lift.ctor)(*out)


def _out_size(s: Snapshot, c: str, axis: int) -> int | None:
    t = s.tensor_type(c)
    n = t.shape[axis] if t is not None and axis < t.rank else None
    return n if isinstance(n, int) else None


# ---------------------------------------------------------------------------- the witness


def witness(lift: Lift, d: int):
    """An ONNX model with three e-nodes the lift merges, at witness size ``d``: the shared
    variables are graph inputs (every atom of size ``d``), the three pieces float weights
    (symbols in the proof) of sizes 1, ``d`` and 2 on the concatenated axis."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    spec = BY_CTOR[lift.ctor]
    n_in = len(spec.inputs)

    def dims(shape, axis_size=None, axis=None):  # a dim is a sum: literals and atoms of size d
        return [
            axis_size if i == axis else sum(int(a) if a.isdigit() else d for a in dd)
            for i, dd in enumerate(shape)
        ]

    inputs = [
        helper.make_tensor_value_info(v, onnx.TensorProto.FLOAT, dims(shape))
        for v, shape in lift.shapes
    ]
    weights, nodes, outs = [], [], []
    for k, n in enumerate((1, d, 2)):
        piece = np.ones(dims(lift.piece, n, lift.concat_axis), np.float32)
        weights.append(numpy_helper.from_array(piece, f"piece{k}"))
        names, attrs = [], {}
        for i, a in enumerate(lift.args):
            if i >= n_in:
                attrs[spec.attrs[i - n_in].name] = list(a[1]) if isinstance(a[1], tuple) else a[1]
            else:
                names.append({"var": a[-1], "none": "", "concat": f"piece{k}"}[a[0]])
        while names and not names[-1]:
            names.pop()
        nodes.append(helper.make_node(spec.op, names, [f"out{k}"], **attrs))
        outs.append(helper.make_tensor_value_info(f"out{k}", onnx.TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "witness", inputs, outs, weights)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def pyrule(lift: Lift) -> PyRule:
    return PyRule(
        lift.name,
        FAMILY,
        lift.pattern(),
        lambda s: find(lift, s),
        proof="bounded",
        fp_exact=False,  # a wider kernel may block the same sums differently
        origin="generated",
        doc=f"N-ary merge lifted from {lift.sources[0]} and {lift.sources[1]}",
        witness=lambda d: witness(lift, d),
    )


def rules(entries: list[dict]) -> list[PyRule]:
    return [pyrule(lf) for lf in lifts(entries)]
