"""Shape analysis in egglog: which shape every ``Tensor`` e-class has, and alarms when two
disagree.

Consumes an :class:`~eqsat.egraph.encode.Encoding` (its lets and the TensorGraph's value types)
and terms of :mod:`eqsat.egraph.lang`; produces

- :func:`seed_shapes`: one ``has_shape(v, dims)`` action per let-bound value with a known type,
- :func:`shape_rules`: a ruleset that gives shapes bottom-up to e-nodes created by rewrites
  (element-wise ops, matmul, transpose, concat, reshape by a literal, softmax,
  layer_norm, one-axis slices, "same" 2-D convs and pools, a 1x1 kernel padded to 3x3) and
  reports conflicts,
- :func:`conflicts` / :func:`check_shapes`: the conflicts found, or a :class:`ShapeConflict`.

Later shape-guarded rules put ``has_shape(w, dims)`` and guards on ``dims`` in their query.

Design choices, and why:

- **Dims are an e-sort**: ``Dim.int(i64)`` for a known size and ``Dim.sym(String)`` for a
  symbolic one (``"batch"``). Two distinct symbols are *not* known to differ (they may be equal
  at run time), so only distinct ``Dim.int`` sizes count as a mismatch.
- **A relation ``has_shape(Tensor, Vec[Dim])``, not a function ``shape(Tensor) -> Vec[Dim]``.**
  Measured in egglog 14: a function without ``merge`` given two shapes for one e-class aborts
  the run with ``EggSmolError: Panic: Illegal merge attempted for function ...``, which names
  neither the e-class nor the shapes and leaves the run half done; a ``merge`` expression cannot
  record anything. A relation simply holds both rows, and the rule ``shape-conflict`` records the
  pair in ``shape_conflict(Vec[Dim], Vec[Dim])``: saturation always completes and the caller
  decides (:func:`check_shapes` raises). Queries read it exactly like a function
  (``has_shape(a, sa)`` binds ``sa``). Reading one shape from Python is a ``check``, not an
  ``extract`` (see :func:`has_dims`).
- **Ill-shaped terms are conflicts too.** A wrong rewrite can produce a term whose operands do
  not fit (``matmul(b, a)`` for ``[2,3] x [3,4]``): it gets no shape, so it would add no second
  shape to its e-class. The rules record such operand pairs in ``ill_shaped(String, Vec[Dim],
  Vec[Dim])`` (matmul contraction sizes, element-wise sizes that do not broadcast, concat
  non-axis sizes; known ``Dim.int`` sizes only).
- **Guards in the query, every computed value bound there** (EGGLOG_NOTES: a failing primitive in
  an action panics, in a query it does not match). Vec lengths are checked and every element the
  action uses is bound to a variable, so actions only build vectors. egglog queries cannot loop
  over a vector, so rules are generated per rank (up to :data:`MAX_RANK`) and, for concat, per
  input count (up to :data:`MAX_CONCAT`).
- Matmul covered: ``[..., m, k] x [k, n]`` and ``[..., m, k] x [..., k, n]`` with equal batch
  dims (no broadcasting of batch dims, no rank-1 operands).
- **Seeding every value**, not just leaves: the importer already inferred each type, and the rules
  then only matter for new e-nodes (and re-derive the old ones, which cross-checks them).
- Broadcasting covered: equal shapes, a 0-d operand, and an operand whose shape is a suffix of
  the other's (bias add ``[B,S,H] + [H]``). Other broadcasts (size-1 dims) get no shape.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache

from egglog import (
    EGraph,
    Expr,
    Ruleset,
    String,
    StringLike,
    Vec,
    eq,
    f64,
    i64,
    i64Like,
    ne,
    relation,
    rule,
    ruleset,
    var,
)

from eqsat.egraph.encode import Encoding, let_ref
from eqsat.egraph.ir import Shape
from eqsat.egraph.lang import Tensor
from eqsat.egraph.ops import elementwise_ctors, same_shape_ctors

MAX_RANK = 6  # transpose / broadcast / batched-matmul rules are generated up to this rank
MAX_CONCAT = 16  # concat shapes are derived for up to MAX_CONCAT inputs
CONCAT_MAX_RANK = 4

# derived from the op table: ops whose output has the input's shape, element-wise binary ops
UNARY = same_shape_ctors()
BINARY = elementwise_ctors(2)


class Dim(Expr):
    """One dimension of a tensor's shape."""

    @classmethod
    def int(cls, size: i64Like) -> Dim: ...
    @classmethod
    def sym(cls, name: StringLike) -> Dim: ...


has_shape = relation("has_shape", Tensor, Vec[Dim])
shape_conflict = relation("shape_conflict", Vec[Dim], Vec[Dim])
ill_shaped = relation("ill_shaped", String, Vec[Dim], Vec[Dim])
# the operand shapes of an element-wise op, checked for broadcastability by the ill- rules
ill_shaped_candidate = relation("ill_shaped_candidate", String, Vec[Dim], Vec[Dim])
# reshape: which (input shape, target spec) pairs occur, and each output dim they give
reshape_demand = relation("reshape_demand", Vec[Dim], Vec[i64])
reshape_dim = relation("reshape_dim", Vec[Dim], Vec[i64], i64, Dim)
# concat: the shape of the input at each position of an input vector
concat_arg = relation("concat_arg", Vec[Tensor], i64, Vec[Dim])
# the sum of the axis sizes of a concat's first j inputs: ``concat_acc(inputs, axis, j, sum)``
concat_acc = relation("concat_acc", Vec[Tensor], i64, i64, i64)
# a view of two-input concatenations, ``concat2(r, a, b, axis)`` for ``r = concat([a, b], axis)``,
# that generated rules query (eqsat.rules.generated.rulefile): matching the elements of a
# ``Vec[Tensor]`` in a pattern leaves them ungrounded, and reading them with ``vec-get`` made
# egglog plan the join from the shape guards (28 s for one pass over 1k e-nodes, measured)
concat2 = relation("concat2", Tensor, Tensor, Tensor, i64)
# a view of one-axis slices with literal bounds and unit step, ``slice1(r, x, start, end, axis)``
# for ``r = x[start:end]`` along ``axis`` (as written: not clamped), for the same reason
slice1 = relation("slice1", Tensor, Tensor, i64, i64, i64)
# a view of static sizes, ``dim_size(x, k, n)`` when axis ``k`` of ``x`` has the size ``n``, that
# generated rules read many sizes through: matching ``shape[k] = Dim.int(n)`` for several axes
# made egglog join the ``Dim.int`` table with itself first (``n`` is in no other table), 21^4
# rows for four sizes (eqsat.rules.generated.rulefile.guards has the measurements)
dim_size = relation("dim_size", Tensor, i64, i64)


class ShapeConflict(Exception):
    """An e-class with two different shapes, or a term whose operand shapes do not fit: some
    rewrite was unsound. ``conflicts`` holds the printed relation rows."""

    def __init__(self, conflicts: Sequence[str]):
        self.conflicts = list(conflicts)
        shown = "; ".join(self.conflicts[:5])
        more = f" (+{len(self.conflicts) - 5} more)" if len(self.conflicts) > 5 else ""
        super().__init__(f"{len(self.conflicts)} shape conflict(s): {shown}{more}")


# ---------------------------------------------------------------------------- seeding


def dim(d: int | str) -> Dim:
    return Dim.int(i64(d)) if isinstance(d, int) else Dim.sym(String(d))


def dims(shape: Iterable[int | str]) -> Vec[Dim]:
    """The ``Vec[Dim]`` of a TensorType shape (int -> ``Dim.int``, str -> ``Dim.sym``)."""
    ds = [dim(d) for d in shape]
    return Vec[Dim](*ds) if ds else Vec[Dim].empty()


def seed_shapes(encoding: Encoding) -> list:
    """``has_shape`` actions for every let-bound value whose type the importer knows."""
    types = encoding.graph.types
    out = []
    # one Vec per distinct shape (terms are values): building each anew was a third of seeding
    # PP-OCRv4 rec's 877 typed values, which have 84 distinct shapes
    vecs: dict[tuple, Vec[Dim]] = {}
    for value, let_name in encoding.lets.items():
        t = types.get(value)
        if t is not None:
            vec = vecs.get(t.shape)
            if vec is None:
                vec = vecs[t.shape] = dims(t.shape)
            out.append(has_shape(let_ref(let_name), vec))
    return out


def seed(encoding: Encoding) -> int:
    """Register :func:`seed_shapes` in the encoding's e-graph; returns how many were set."""
    commands = seed_commands(encoding)
    encoding.egraph._state.run_program(*commands)
    return len(commands)


def seed_commands(encoding: Encoding) -> list:
    """The egglog commands ``register(*seed_shapes(encoding))`` runs, in the same order, with
    egglog's conversion (egglog-python internals, pinned egglog==14.0.0) run once per distinct
    shape instead of once per value: the commands of one shape differ only in the let they
    name. Converting each of PP-OCRv4 rec's 862 actions was 0.3-0.4 s, most of seeding. A
    template not of the expected form (``(has_shape $let (vec-of ...))``) is used as converted
    and its shape converted again for every value."""
    from egglog import bindings
    from egglog.egraph import _command_like

    egraph, types = encoding.egraph, encoding.graph.types
    templates: dict[tuple, tuple | None] = {}  # shape -> (span, call, vec) of its first command
    out = []
    for value, let_name in encoding.lets.items():
        t = types.get(value)
        if t is None:
            continue
        template = templates.get(t.shape)
        if template is not None:
            span, call, vec = template
            var = bindings.Var(call.args[0].span, _egg_let(let_name))
            expr = bindings.Call(call.span, call.name, [var, vec])
            out.append(bindings.ActionCommand(bindings.Expr_(span, expr)))
            continue
        cmd = _command_like(has_shape(let_ref(let_name), dims(t.shape)))
        egraph._add_decls(cmd)
        converted = egraph._commands_to_egg(cmd)
        out.extend(converted)
        templates[t.shape] = _template(converted, let_name)
    return out


def _egg_let(name: str) -> str:
    """egglog's name of the let ``name`` (``EGraph.let``'s, as egglog-python spells it)."""
    return name if name.startswith("$") else f"${name}"


def _template(converted: list, let_name: str) -> tuple | None:
    """(span, call, vec) of a converted ``has_shape`` action on the let ``let_name``, or None."""
    from egglog import bindings

    if len(converted) != 1 or not isinstance(converted[0], bindings.ActionCommand):
        return None
    action = converted[0].action
    if not isinstance(action, bindings.Expr_) or not isinstance(action.expr, bindings.Call):
        return None
    args = action.expr.args
    if len(args) != 2 or not isinstance(args[0], bindings.Var):
        return None
    return (action.span, action.expr, args[1]) if args[0].name == _egg_let(let_name) else None


# ---------------------------------------------------------------------------- rules


def _dvars(prefix: str, n: int) -> list[Dim]:
    return [var(f"{prefix}{k}", Dim) for k in range(n)]


def _vec(items: Sequence[Dim]) -> Vec[Dim]:
    return Vec[Dim](*items) if items else Vec[Dim].empty()


def _bind(s: Vec[Dim], ds: Sequence[Dim], first: int = 0) -> list:
    """Query facts binding ``ds[k]`` to ``s[first + k]``."""
    return [eq(d).to(s[i64(first + k)]) for k, d in enumerate(ds)]


def _rank(s: Vec[Dim], r: int):
    return eq(s.length()).to(i64(r))


def _sizes_differ(x: Dim, y: Dim, p: i64, q: i64, allow_one: bool) -> list:
    facts = [eq(x).to(Dim.int(p)), eq(y).to(Dim.int(q)), ne(p).to(q)]
    if allow_one:
        facts += [ne(p).to(i64(1)), ne(q).to(i64(1))]
    return facts


@cache
def shape_rules(
    max_rank: int = MAX_RANK, max_concat: int = MAX_CONCAT, lean: bool = False, sizes: bool = True
) -> Ruleset:
    """The shape analysis: run it (saturated) together with, or after, the rewrites. Rules
    are generated for ranks up to ``max_rank`` and concatenations of up to ``max_concat``
    inputs; ``lean`` leaves out broadcasting (with its ill-shaped detectors) and reshape;
    ``sizes`` adds the ``dim_size`` view, which only generated rules read (without them it is
    5-10 % of saturation on the examples: BERT 0.38 -> 0.41 s, NAS-RNN 1.26 -> 1.35 s). Rule
    discovery's pruning needs ranks up to 4, two inputs, equal shapes: measured on 1,490
    rank-4 candidates, its shape passes took 4.9 s lean and 13.2 s full (61 s vs 67 s in
    all). Built once (about 0.3 s: some 400 rules, generated per rank) and shared."""
    r = var("r", Tensor)
    x, a, b = var("x", Tensor), var("a", Tensor), var("b", Tensor)
    s, sa, sb = var("s", Vec[Dim]), var("sa", Vec[Dim]), var("sb", Vec[Dim])
    p, q = var("p", i64), var("q", i64)
    rules = []

    # conflicts: two shapes in one e-class
    rules.append(
        rule(has_shape(x, sa), has_shape(x, sb), ne(sa).to(sb), name="shape-conflict").then(
            shape_conflict(sa, sb)
        )
    )

    # shape = the first input's shape
    ax, eps, st = var("axis", i64), var("eps", f64), var("st", i64)
    same = [(op, getattr(Tensor, op)(x)) for op in UNARY]
    same.append(("softmax", Tensor.softmax(x, ax)))
    same.append(("layer_norm", Tensor.layer_norm(x, a, b, ax, eps, st)))
    for op, term in same:
        rules.append(
            rule(eq(r).to(term), has_shape(x, s), name=f"shape-{op}").then(has_shape(r, s))
        )

    # element-wise binary ops
    for op in BINARY:
        term = getattr(Tensor, op)(a, b)
        base = [eq(r).to(term), has_shape(a, sa), has_shape(b, sb)]
        rules.append(
            rule(*base[:2], has_shape(b, sa), name=f"shape-{op}-same").then(has_shape(r, sa))
        )
        empty = Vec[Dim].empty()
        rules.append(
            rule(*base[:2], has_shape(b, empty), name=f"shape-{op}-scalar-b").then(has_shape(r, sa))
        )
        rules.append(
            rule(base[0], has_shape(a, empty), base[2], name=f"shape-{op}-scalar-a").then(
                has_shape(r, sb)
            )
        )
        for ra in range(2, 1 if lean else max_rank + 1):
            for rb in range(1, ra):
                big = _dvars("d", ra)
                small = _vec(big[ra - rb :])
                # b is a suffix of a, and a is a suffix of b
                rules.append(
                    rule(
                        *base[:2],
                        _rank(sa, ra),
                        *_bind(sa, big),
                        has_shape(b, small),
                        name=f"shape-{op}-suffix-b-{ra}-{rb}",
                    ).then(has_shape(r, sa))
                )
                rules.append(
                    rule(
                        base[0],
                        has_shape(b, sb),
                        _rank(sb, ra),
                        *_bind(sb, big),
                        has_shape(a, small),
                        name=f"shape-{op}-suffix-a-{ra}-{rb}",
                    ).then(has_shape(r, sb))
                )
        if not lean:
            rules.append(
                rule(*base, name=f"shape-{op}-args").then(ill_shaped_candidate(String(op), sa, sb))
            )

    # element-wise sizes that cannot broadcast (aligned from the right)
    o, sx, sy = var("o", String), var("sx", Vec[Dim]), var("sy", Vec[Dim])
    dx, dy = var("dx", Dim), var("dy", Dim)
    for rx in range(1, 0 if lean else max_rank + 1):  # lean makes no candidates to check
        for ry in range(1, max_rank + 1):
            for k in range(1, min(rx, ry) + 1):  # k-th dim from the right
                rules.append(
                    rule(
                        ill_shaped_candidate(o, sx, sy),
                        _rank(sx, rx),
                        _rank(sy, ry),
                        eq(dx).to(sx[i64(rx - k)]),
                        eq(dy).to(sy[i64(ry - k)]),
                        *_sizes_differ(dx, dy, p, q, allow_one=True),
                        name=f"ill-broadcast-{rx}-{ry}-{k}",
                    ).then(ill_shaped(o, sx, sy))
                )

    # matmul: [..., m, k] x [k, n] -> [..., m, n]
    mm = Tensor.matmul(a, b)
    kk, n = var("k", Dim), var("n", Dim)
    for ra in range(2, max_rank + 1):
        lead = _dvars("m", ra - 1)
        # Both rules read the same operands; one computes the shape, one detects a misfit.
        operands = (eq(r).to(mm), has_shape(a, sa), _rank(sa, ra), has_shape(b, sb), _rank(sb, 2))
        rules.append(
            rule(
                *operands,
                *_bind(sa, lead),
                eq(kk).to(sa[i64(ra - 1)]),
                eq(kk).to(sb[i64(0)]),
                eq(n).to(sb[i64(1)]),
                name=f"shape-matmul-{ra}x2",
            ).then(has_shape(r, _vec([*lead, n])))
        )
        rules.append(
            rule(
                *operands,
                eq(dx).to(sa[i64(ra - 1)]),
                eq(dy).to(sb[i64(0)]),
                *_sizes_differ(dx, dy, p, q, allow_one=False),
                name=f"ill-matmul-{ra}x2",
            ).then(ill_shaped(String("matmul"), sa, sb))
        )

    # batched matmul, equal batch dims: [..., m, k] x [..., k, n] -> [..., m, n]
    m = var("m", Dim)
    for rk in range(3, max_rank + 1):
        lead = _dvars("b", rk - 2)
        rules.append(
            rule(
                eq(r).to(mm),
                has_shape(a, sa),
                _rank(sa, rk),
                has_shape(b, sb),
                _rank(sb, rk),
                *_bind(sa, lead),
                *_bind(sb, lead),
                eq(m).to(sa[i64(rk - 2)]),
                eq(kk).to(sa[i64(rk - 1)]),
                eq(kk).to(sb[i64(rk - 2)]),
                eq(n).to(sb[i64(rk - 1)]),
                name=f"shape-matmul-{rk}x{rk}",
            ).then(has_shape(r, _vec([*lead, m, n])))
        )

    # transpose: out[k] = in[perm[k]]
    perm = var("perm", Vec[i64])
    for rk in range(1, max_rank + 1):
        out = _dvars("t", rk)
        rules.append(
            rule(
                eq(r).to(Tensor.transpose(x, perm)),
                has_shape(x, s),
                _rank(s, rk),
                eq(perm.length()).to(i64(rk)),
                *[eq(d).to(s[perm[i64(k)]]) for k, d in enumerate(out)],
                name=f"shape-transpose-{rk}",
            ).then(has_shape(r, _vec(out)))
        )

    rules += [] if lean else _reshape_rules(max_rank)
    rules += _concat_rules(max_rank, max_concat)
    rules += _slice_rules(max_rank)
    rules += _window_rules()
    if sizes:  # one free Dim.int per rule: joined as has_shape x Dim.int, not a cross product
        rules += [
            rule(
                has_shape(x, s), s.length() > k, eq(s[i64(k)]).to(Dim.int(p)), name=f"size-{k}"
            ).then(dim_size(x, i64(k), p))
            for k in range(max_rank)
        ]
    full = (max_rank, max_concat, lean) == (MAX_RANK, MAX_CONCAT, False)
    name = "shapes" if full else f"shapes-r{max_rank}-c{max_concat}{'-lean' if lean else ''}"
    name += "" if sizes else "-nosizes"
    return ruleset(*rules, name=name)


def _window_rules() -> list:
    """ "Same" 2-D windows, whose output keeps the input's spatial dims: convolutions (group 1,
    stride 1, dilation 1) with a 3x3 kernel padded by 1 or a 1x1 kernel, 3x3 max/average pools
    padded by 1 with stride 1, and the constant Pad that enlarges a 1x1 kernel to 3x3 (rule
    discovery's conv ops). Every attribute is a literal in the query: the general form, with
    output sizes computed from ``Dim.int`` sizes, took 5.8 s per pass on a 2.6k-node e-graph
    (egglog scans the ``Dim.int`` table for every row) and these take milliseconds. Other
    windows get no shape from the analysis (the importer's types still seed them)."""
    r, x, w, b = (var(n, Tensor) for n in "rxwb")
    sx, sw = var("sx", Vec[Dim]), var("sw", Vec[Dim])
    n, c, o, h, wd = (var(v, Dim) for v in ("n", "c", "o", "h", "wd"))
    one2 = Vec[i64](i64(1), i64(1))
    pads = {k: Vec[i64](*[i64((k - 1) // 2)] * 4) for k in (1, 3)}
    kernel = {k: Vec[i64](i64(k), i64(k)) for k in (1, 3)}
    image = [has_shape(x, sx), _rank(sx, 4), *_bind(sx, [n, c, h, wd])]
    rules = []
    for k in (1, 3):
        conv = Tensor.conv(x, w, b, i64(1), one2, pads[k], one2, kernel[k])
        rules.append(
            rule(
                eq(r).to(conv),
                *image,
                has_shape(w, sw),
                _rank(sw, 4),
                eq(o).to(sw[i64(0)]),
                eq(c).to(sw[i64(1)]),
                eq(sw[i64(2)]).to(Dim.int(i64(k))),
                eq(sw[i64(3)]).to(Dim.int(i64(k))),
                name=f"shape-conv-same-{k}x{k}",
            ).then(has_shape(r, _vec([n, o, h, wd])))
        )
    flag = var("flag", i64)
    for name, pool in (
        ("max", Tensor.max_pool(x, kernel[3], one2, pads[3], one2, i64(0), flag)),
        ("average", Tensor.average_pool(x, kernel[3], one2, pads[3], one2, i64(0), flag)),
    ):
        rules.append(
            rule(eq(r).to(pool), *image, name=f"shape-{name}-pool-same").then(has_shape(r, sx))
        )
    enlarge = Vec[i64](*[i64(p) for p in (0, 0, 1, 1, 0, 0, 1, 1)])
    pad = Tensor.pad(x, Tensor.ints(enlarge), Tensor.none(), Tensor.none(), String("constant"))
    three = Dim.int(i64(3))
    rules.append(
        rule(
            eq(r).to(pad),
            *image,
            eq(h).to(Dim.int(i64(1))),
            eq(wd).to(Dim.int(i64(1))),
            name="shape-pad-1x1-to-3x3",
        ).then(has_shape(r, _vec([n, c, three, three])))
    )
    return rules


def _slice_rules(max_rank: int) -> list:
    """One-axis slices with literal bounds, no steps or a unit step: the ``slice1`` view, and the
    shape where the axis has a known size, ``0 <= start < end``, ``end`` clamped to the size
    (``x[2:INT64_MAX]`` is ``x[2:]``), the axis non-negative. Other slices get no shape."""
    r, x = var("r", Tensor), var("x", Tensor)
    b, e, a = var("b", Vec[i64]), var("e", Vec[i64]), var("a", Vec[i64])
    s, n = var("s", Vec[Dim]), var("n", i64)
    lo, hi = var("lo", i64), var("hi", i64)
    rules = []
    for k, steps in enumerate((Tensor.none(), Tensor.ints(Vec[i64](i64(1))))):
        rules.append(
            rule(
                eq(r).to(Tensor.slice(x, Tensor.ints(b), Tensor.ints(e), Tensor.ints(a), steps)),
                *[eq(v.length()).to(i64(1)) for v in (b, e, a)],
                name=f"view-slice1-{k}",
            ).then(slice1(r, x, b[i64(0)], e[i64(0)], a[i64(0)]))
        )
    for rk in range(1, max_rank + 1):
        for axis in range(rk):
            ds = _dvars("d", rk)
            base = [
                slice1(r, x, lo, hi, i64(axis)),
                has_shape(x, s),
                _rank(s, rk),
                eq(s[i64(axis)]).to(Dim.int(n)),
                *[eq(ds[k]).to(s[i64(k)]) for k in range(rk) if k != axis],
                lo >= i64(0),
                lo < hi,
            ]
            for end, cond in (("in", hi <= n), ("clamped", hi > n)):
                out = [
                    Dim.int((hi if end == "in" else n) - lo) if k == axis else ds[k]
                    for k in range(rk)
                ]
                rules.append(
                    rule(*base, cond, lo < n, name=f"shape-slice-{end}-r{rk}-a{axis}").then(
                        has_shape(r, _vec(out))
                    )
                )
    return rules


def _reshape_rules(max_rank: int) -> list:
    """reshape(x, ints(v), allowzero=0) where every entry of ``v`` is a positive size or 0 (copy
    the input's dim): per output position, ``reshape_dim`` is computed once per (input shape,
    spec) pair, then one rule per output rank collects the positions. ``-1`` is not handled
    (its size needs the element count). The element count is not checked: exact for the valid
    reshapes a model or a sound rewrite contains."""
    r, x = var("r", Tensor), var("x", Tensor)
    s, v = var("s", Vec[Dim]), var("v", Vec[i64])
    c, d = var("c", i64), var("d", Dim)
    term = Tensor.reshape(x, Tensor.ints(v), i64(0))
    rules = [
        rule(eq(r).to(term), has_shape(x, s), name="shape-reshape-demand").then(
            reshape_demand(s, v)
        )
    ]
    for k in range(max_rank):
        at = [reshape_demand(s, v), eq(c).to(v[i64(k)])]
        rules.append(
            rule(*at, c > i64(0), name=f"shape-reshape-size-{k}").then(
                reshape_dim(s, v, i64(k), Dim.int(c))
            )
        )
        rules.append(
            rule(*at, eq(c).to(i64(0)), eq(d).to(s[i64(k)]), name=f"shape-reshape-copy-{k}").then(
                reshape_dim(s, v, i64(k), d)
            )
        )
    for rk in range(1, max_rank + 1):
        out = _dvars("o", rk)
        rules.append(
            rule(
                eq(r).to(term),
                has_shape(x, s),
                eq(v.length()).to(i64(rk)),
                *[reshape_dim(s, v, i64(k), out[k]) for k in range(rk)],
                name=f"shape-reshape-{rk}",
            ).then(has_shape(r, _vec(out)))
        )
    return rules


def _concat_rules(max_rank: int, max_concat: int) -> list:
    """concat of up to ``max_concat`` inputs of rank rk along ``axis``: non-axis dims equal to
    the first input's, axis sizes known ints. The input shapes are first collected per input
    position into ``concat_arg(inputs, j, shape)``: binding ``ins[j]`` and its ``has_shape`` for
    all inputs in one query made egglog join the ``has_shape`` table with itself n times
    (measured: 9 s per iteration on a 50-node graph with one Concat), one position at a time
    stays linear. The axis sizes are then summed left to right in ``concat_acc(inputs, axis,
    j, sum of the first j)``, three rules per rank and axis whatever the input count: one rule
    per count (as before) cost 150 rules at 16 inputs, which doubled the saturation time of
    every example model (nasrnn 1.5 s to 2.7 s, measured) although few concats are that wide;
    16 is what the N-ary merges make (:data:`eqsat.rules.merge.MAX_GROUP`)."""
    r, ins, x = var("r", Tensor), var("ins", Vec[Tensor]), var("x", Tensor)
    s, ax = var("s", Vec[Dim]), var("ax", i64)
    rules = []
    for j in range(max_concat):
        rules.append(
            rule(
                eq(r).to(Tensor.concat(ins, ax)),
                eq(x).to(ins[i64(j)]),
                has_shape(x, s),
                name=f"shape-concat-arg-{j}",
            ).then(concat_arg(ins, i64(j), s))
        )
    rules.append(
        rule(
            eq(r).to(Tensor.concat(ins, ax)), eq(ins.length()).to(i64(2)), name="view-concat2"
        ).then(concat2(r, ins[i64(0)], ins[i64(1)], ax))
    )
    s0, sj = var("s0", Vec[Dim]), var("sj", Vec[Dim])
    p, t, j = var("p", i64), var("t", i64), var("j", i64)
    for rk in range(1, min(CONCAT_MAX_RANK, max_rank) + 1):
        for axis in range(rk):
            ds = _dvars("c", rk)
            first = [
                eq(r).to(Tensor.concat(ins, i64(axis))),
                concat_arg(ins, i64(0), s0),
                _rank(s0, rk),
                *[eq(ds[k]).to(s0[i64(k)]) for k in range(rk) if k != axis],
            ]
            rules.append(
                rule(
                    *first, eq(Dim.int(p)).to(s0[i64(axis)]), name=f"shape-concat-r{rk}-a{axis}-0"
                ).then(concat_acc(ins, i64(axis), i64(1), p))
            )
            step = [
                concat_acc(ins, i64(axis), j, t),
                concat_arg(ins, j, sj),
                _rank(sj, rk),
                eq(Dim.int(p)).to(sj[i64(axis)]),
                *[eq(ds[k]).to(sj[i64(k)]) for k in range(rk) if k != axis],
            ]
            rules.append(
                rule(*first, *step, name=f"shape-concat-r{rk}-a{axis}-j").then(
                    concat_acc(ins, i64(axis), j + i64(1), t + p)
                )
            )
            out = [Dim.int(t) if k == axis else ds[k] for k in range(rk)]
            rules.append(
                rule(
                    *first,
                    concat_acc(ins, i64(axis), ins.length(), t),
                    name=f"shape-concat-r{rk}-a{axis}",
                ).then(has_shape(r, _vec(out)))
            )
    # non-axis sizes of the first two inputs that differ: an ill-shaped concat
    s0, s1 = var("s0", Vec[Dim]), var("s1", Vec[Dim])
    dx, dy, p, q = var("dx", Dim), var("dy", Dim), var("p", i64), var("q", i64)
    for rk in range(1, min(CONCAT_MAX_RANK, max_rank) + 1):
        for k in range(rk):
            rules.append(
                rule(
                    eq(r).to(Tensor.concat(ins, ax)),
                    ne(ax).to(i64(k)),
                    concat_arg(ins, i64(0), s0),
                    _rank(s0, rk),
                    concat_arg(ins, i64(1), s1),
                    _rank(s1, rk),
                    eq(dx).to(s0[i64(k)]),
                    eq(dy).to(s1[i64(k)]),
                    *_sizes_differ(dx, dy, p, q, allow_one=False),
                    name=f"ill-concat-r{rk}-d{k}",
                ).then(ill_shaped(String("concat"), s0, s1))
            )
    return rules


# ---------------------------------------------------------------------------- conflicts


def conflicts(egraph: EGraph) -> list[str]:
    """Every recorded conflict, printed: ``shape_conflict`` rows (two shapes for one e-class)
    and ``ill_shaped`` rows (operands that do not fit). Empty when the shapes agree."""
    out = []
    for fn in (shape_conflict, ill_shaped):
        out += sorted(str(k) for k in egraph.function_values(fn))
    return out


def check_shapes(egraph: EGraph) -> None:
    """Raise :class:`ShapeConflict` if the shape analysis found any conflict."""
    found = conflicts(egraph)
    if found:
        raise ShapeConflict(found)


def has_dims(egraph: EGraph, term: Tensor, shape: Shape) -> bool:
    """Whether the analysis gave ``term`` the shape ``shape``."""
    try:
        egraph.check(has_shape(term, dims(shape)))
    except Exception:
        return False
    return True


# ---------------------------------------------------------------------------- coverage


def shaped_ctors(rules: Ruleset | None = None) -> frozenset[str]:
    """The constructors whose terms the analysis gives a shape, read off the rules themselves
    (so this cannot drift from them): a rule that derives ``has_shape`` covers the constructors
    its query matches, directly or through a view relation (``slice1``, ``concat2``) that
    another rule derives from a constructor. Reads egglog's rule declarations (egglog is
    pinned)."""
    rs = rules if rules is not None else shape_rules()
    decls = next(iter(rs.__egg_decls__._rulesets.values())).rules  # type: ignore[attr-defined]
    ctor_re = re.compile(r"ClassMethodRef\(ident=Ident\(name='Tensor'[^)]*\), method_name='(\w+)'")
    rel_re = re.compile(r"FunctionRef\(ident=Ident\(name='(\w+)'")
    about: dict[str, set[str]] = {}  # view relation -> constructors it is derived from
    for d in decls:
        heads = set(rel_re.findall(repr(d.head)))
        for rel in heads - {"has_shape"}:
            about.setdefault(rel, set()).update(ctor_re.findall(repr(d.body)))
    out: set[str] = set()
    for d in decls:
        if "has_shape" in rel_re.findall(repr(d.head)):
            body = repr(d.body)
            out.update(ctor_re.findall(body))
            for rel in set(rel_re.findall(body)) - {"has_shape"}:
                out.update(about.get(rel, ()))
    return frozenset(out)
