"""Layout algebra: transposes, reshapes, slices and concatenations that cancel or compose.

Consumes a :class:`~eqsat.egraph.classes.Snapshot` (the rules whose right-hand side is computed
from attribute values or guarded on types are :class:`~eqsat.rules.base.PyRule` s) or nothing
(plain egglog :class:`~eqsat.rules.base.Rule` s); produces rewrites. All are exact.

- ``transpose-compose``: ``T_p(T_q(x)) = T_r(x)`` with ``r[i] = q[p[i]]`` (``x`` itself when
  ``r`` is the identity); egglog cannot compose two vectors in a rule, so it is computed here.
- ``reshape-compose``: ``reshape(reshape(x, s1), s2) = reshape(x, s2)`` when ``s2`` is a literal
  without 0 entries (a 0 copies a dimension of the *inner* reshape's result) or allowzero is set.
- ``reshape-noop``: a reshape whose result type is its input's type is its input.
- ``slice-slice-commute``: two unit-step slices along different axes commute.
- ``binary-slice-commute``: an element-wise binary op (Add, Sub, Mul, Div) of two slices with the
  same bounds of tensors of the same type is that slice of the op: one wide op instead of one per
  slice (with the two above: NAS-RNN's eight gate additions per step become one).
- ``unary-concat-distribute``: an element-wise unary op of a concatenation is the
  concatenation of the op on each part.
- ``slice-of-concat``: a unit-step slice of a concatenation along the same axis that covers
  exactly one of its inputs is that input.
- ``concat-of-slices``: concatenating unit-step slices of one tensor that tile its axis in
  order is the tensor (what merging leaves behind when the merged results are concatenated
  again, as in SqueezeNet's fire modules).
- ``concat-flatten``: a concatenation one of whose inputs is a concatenation along the same axis
  is the one concatenation of all their parts, in order (``concat(concat(a, b), c) = concat(a,
  b, c)``): one copy instead of two; flattened to any depth (a part is expanded once per path,
  never through a class already on the path, so a cycle in the e-graph cannot loop).
- ``<op>-slice-commute``: an element-wise unary op of a slice is the slice of the op, so the op
  runs once on a merged result instead of once per slice (egglog rule).
"""

from __future__ import annotations

from egglog import Vec, i64, var

from eqsat.egraph.classes import Snapshot, View
from eqsat.egraph.encode import ints_vec
from eqsat.egraph.lang import Tensor
from eqsat.egraph.ops import OPS
from eqsat.rules.algebra import UNARY
from eqsat.rules.base import PyRule, Rule

FAMILY = "layout"
# the claim for this module's egglog rules; the evidence is eqsat/verify/ledger.json, written by
# `eqsat rules verify --write-ledger` (a fast test fails when it does not hold the rule as written)
PROOF = "bounded"


def rules() -> list[Rule | PyRule]:
    x, s, e, a, st = (var(n, Tensor) for n in ("x", "s", "e", "a", "st"))
    out: list[Rule | PyRule] = [
        PyRule(
            "transpose-compose",
            FAMILY,
            "T_p(T_q(x)) => T_(q o p)(x)",
            transpose_compose,
            proof=PROOF,
        ),
        PyRule(
            "reshape-compose",
            FAMILY,
            "reshape(reshape(x, s1), s2) => reshape(x, s2) if 0 not in s2",
            reshape_compose,
            proof=PROOF,
        ),
        PyRule(
            "reshape-noop",
            FAMILY,
            "reshape(x, s) => x if type(result) = type(x)",
            noop,
            proof=PROOF,
        ),
        PyRule(
            "slice-slice-commute",
            FAMILY,
            "slice_a(slice_b(x)) => slice_b(slice_a(x)) if axes a != b",
            slice_slice_commute,
            proof=PROOF,
        ),
        PyRule(
            "binary-slice-commute",
            FAMILY,
            "op(slice(a, k), slice(b, k)) => slice(op(a, b), k) if type(a) = type(b)",
            binary_slice_commute,
            proof=PROOF,
        ),
        PyRule(
            "unary-concat-distribute",
            FAMILY,
            "f(concat(x_1..x_n, ax)) => concat(f(x_1)..f(x_n), ax) for element-wise unary f",
            unary_concat,
            proof=PROOF,
        ),
        PyRule(
            "slice-of-concat",
            FAMILY,
            "slice(concat(x_1..x_n, ax), o_i, o_i + d_i, ax) => x_i",
            slice_of_concat,
            proof=PROOF,
        ),
        PyRule(
            "concat-of-slices",
            FAMILY,
            "concat(slice(x, 0, o_1, ax), .., slice(x, o_(n-1), d, ax), ax) => x",
            concat_of_slices,
            proof=PROOF,
        ),
        PyRule(
            "concat-flatten",
            FAMILY,
            "concat(.., concat(y_1..y_m, ax), .., ax) => concat(.., y_1..y_m, .., ax)",
            concat_flatten,
            proof=PROOF,
        ),
    ]
    for op in UNARY:
        f = getattr(Tensor, op)
        out.append(
            Rule(
                f"{op}-slice-commute",
                FAMILY,
                f(Tensor.slice(x, s, e, a, st)),
                Tensor.slice(f(x), s, e, a, st),
                proof=PROOF,
                doc=f"{op}(slice(x)) = slice({op}(x)): element-wise",
            )
        )
    return out


def _ints_of(s: Snapshot, c: str | None) -> tuple[int, ...] | None:
    """The values of an ``ints`` literal class, else None."""
    if c is None:
        return None
    for _, v in s.nodes(c):
        if v.kind == "ints":
            return tuple(int(k) for k in v.literal)
    return None


def _pair(s: Snapshot, a: str, b: str | None):
    ta, tb = s.term(a), (Tensor.none() if b is None else s.term(b))
    return (ta, tb) if ta is not None and tb is not None else None


def transpose_compose(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, outer in s.ops("Transpose"):
        (p,) = outer.values
        for _, inner in s.nodes(outer.inputs[0]):
            if inner.kind != "op" or inner.op != "Transpose":
                continue
            (q,) = inner.values
            if len(p) != len(q):
                continue
            r = tuple(q[i] for i in p)
            root, xt = s.term(c), s.term(inner.inputs[0])
            if root is None or xt is None:
                continue
            ident = r == tuple(range(len(r)))
            unions.append((root, xt if ident else Tensor.transpose(xt, ints_vec(r))))
    return unions


def reshape_compose(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, outer in s.ops("Reshape"):
        shape = _ints_of(s, outer.inputs[1])
        (allowzero,) = outer.values
        if shape is None or (0 in shape and not allowzero):
            continue
        for _, inner in s.nodes(outer.inputs[0]):
            if inner.kind != "op" or inner.op != "Reshape":
                continue
            root, xt, st = s.term(c), s.term(inner.inputs[0]), s.term(outer.inputs[1])
            if root is not None and xt is not None and st is not None:
                unions.append((root, Tensor.reshape(xt, st, i64(allowzero))))
    return unions


def noop(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, v in s.ops("Reshape"):
        tin, tout = s.tensor_type(v.inputs[0]), s.tensor_type(c)
        if tin is None or tout is None or tin != tout:
            continue
        pair = _pair(s, c, v.inputs[0])
        if pair is not None:
            unions.append(pair)
    return unions


def _unit_slice(s: Snapshot, v: View) -> tuple[int, int, int] | None:
    """(start, end, axis) of a Slice e-node with literal one-axis bounds and unit step, with the
    bounds clamped to the static extent of its input and the axis made non-negative."""
    x, starts, ends, axes, steps = v.inputs
    tx = s.tensor_type(x)
    b, e, ax = _ints_of(s, starts), _ints_of(s, ends), _ints_of(s, axes)
    st = _ints_of(s, steps) if steps is not None else (1,)
    if tx is None or b is None or e is None or len(b) != 1 or len(e) != 1 or st != (1,):
        return None
    if ax is None and axes is not None:
        return None
    axis = ax[0] if ax is not None and len(ax) == 1 else 0
    axis = axis + tx.rank if axis < 0 else axis
    if not 0 <= axis < tx.rank or not isinstance(tx.shape[axis], int):
        return None
    d = int(tx.shape[axis])
    start, end = (k + d if k < 0 else k for k in (b[0], e[0]))
    return max(0, min(start, d)), max(0, min(end, d)), axis


def slice_of_concat(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, v in s.ops("Slice"):
        bounds = _unit_slice(s, v)
        if bounds is None:
            continue
        start, end, axis = bounds
        for _, cat in s.nodes(v.inputs[0]):
            if cat.kind != "op" or cat.op != "Concat" or cat.values[0] != axis:
                continue
            off = 0
            for part in cat.inputs:
                t = s.tensor_type(part)
                if t is None or not isinstance(t.shape[axis], int):
                    break
                n = int(t.shape[axis])
                if (off, off + n) == (start, end):
                    pair = _pair(s, c, part)
                    if pair is not None:
                        unions.append(pair)
                    break
                off += n
    return unions


def concat_of_slices(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, cat in s.ops("Concat"):
        (axis,) = cat.values
        sources: set[str] = set()
        pieces = []
        for part in cat.inputs:
            found = None
            for _, v in s.nodes(part):
                if v.kind == "op" and v.op == "Slice":
                    b = _unit_slice(s, v)
                    if b is not None and b[2] == axis:
                        found = (v.inputs[0], b[0], b[1])
                        break
            if found is None:
                break
            sources.add(found[0])
            pieces.append(found)
        if len(pieces) != len(cat.inputs) or len(sources) != 1:
            continue
        src = pieces[0][0]
        t = s.tensor_type(src)
        tiles = [(b, e) for _, b, e in pieces]
        contiguous = tiles[0][0] == 0 and all(
            tiles[k][0] == tiles[k - 1][1] for k in range(1, len(tiles))
        )
        if t is None or not contiguous or any(b >= e for b, e in tiles):
            continue
        if tiles[-1][1] != t.shape[axis]:
            continue
        pair = _pair(s, c, src)
        if pair is not None:
            unions.append(pair)
    return unions


def _slices_in(s: Snapshot, c: str) -> list[tuple[View, tuple[int, int, int]]]:
    """Unit-step one-axis Slice e-nodes of class ``c`` with their normalised bounds."""
    out = []
    for _, v in s.nodes(c):
        if v.kind == "op" and v.op == "Slice":
            b = _unit_slice(s, v)
            if b is not None:
                out.append((v, b))
    return out


def _slice_term(x: Tensor, bounds: tuple[int, int, int]) -> Tensor:
    start, end, axis = bounds
    ints = [Tensor.ints(ints_vec([k])) for k in (start, end, axis)]
    return Tensor.slice(x, *ints, Tensor.none())


def slice_slice_commute(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, outer in s.ops("Slice"):
        ob = _unit_slice(s, outer)
        if ob is None:
            continue
        for inner, ib in _slices_in(s, outer.inputs[0]):
            if ib[2] == ob[2]:
                continue
            root, xt = s.term(c), s.term(inner.inputs[0])
            if root is not None and xt is not None:
                unions.append((root, _slice_term(_slice_term(xt, ob), ib)))
    return unions


def binary_slice_commute(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    seen: set[tuple] = set()
    for op in ("Add", "Sub", "Mul", "Div"):
        f = getattr(Tensor, op.lower())
        for c, v in s.ops(op):
            a, b = v.inputs
            for sa, ba in _slices_in(s, a):
                for sb, bb in _slices_in(s, b):
                    ta, tb = s.tensor_type(sa.inputs[0]), s.tensor_type(sb.inputs[0])
                    if ba != bb or ta is None or ta != tb:
                        continue
                    key = (c, sa.inputs[0], sb.inputs[0], ba)
                    if key in seen:
                        continue
                    seen.add(key)
                    root, xa, xb = s.term(c), s.term(sa.inputs[0]), s.term(sb.inputs[0])
                    if root is not None and xa is not None and xb is not None:
                        unions.append((root, _slice_term(f(xa, xb), ba)))
    return unions


_UNARY_OPS = {d.name: d.ctor for d in OPS.values() if d.ctor in UNARY}  # ONNX op -> constructor


def unary_concat(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for onnx_op, ctor in sorted(_UNARY_OPS.items()):
        f = getattr(Tensor, ctor)
        for c, v in s.ops(onnx_op):
            for _, cat in s.nodes(v.inputs[0]):
                if cat.kind != "op" or cat.op != "Concat":
                    continue
                root, parts = s.term(c), [s.term(p) for p in cat.inputs]
                if root is None or any(p is None for p in parts):
                    continue
                mapped = Vec[Tensor](*(f(p) for p in parts))
                unions.append((root, Tensor.concat(mapped, i64(cat.values[0]))))
    return unions


FLATTEN_DEPTH = 8  # nested concatenations expanded at most this deep


def _flat_parts(s: Snapshot, parts, axis: int, path: frozenset, depth: int) -> list[str]:
    """The classes ``parts`` with every one that holds a concatenation along ``axis`` replaced
    by that concatenation's parts (recursively; the first such e-node of a class whose parts
    do not lead back to a class on ``path``)."""
    out: list[str] = []
    for p in parts:
        inner = None
        if depth > 0 and p not in path:
            for _, v in s.nodes(p):
                if v.kind == "op" and v.op == "Concat" and v.values[0] == axis:
                    if not path.intersection(v.inputs) and p not in v.inputs:
                        inner = v
                        break
        if inner is None:
            out.append(p)
        else:
            out.extend(_flat_parts(s, inner.inputs, axis, path | {p}, depth - 1))
    return out


def concat_flatten(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, cat in s.ops("Concat"):
        (axis,) = cat.values
        parts = _flat_parts(s, cat.inputs, axis, frozenset({c}), FLATTEN_DEPTH)
        if parts == list(cat.inputs):
            continue  # no part was a concatenation along the axis
        root, terms = s.term(c), [s.term(p) for p in parts]
        if root is None or any(t is None for t in terms):
            continue
        unions.append((root, Tensor.concat(Vec[Tensor](*terms), i64(axis))))
    return unions
