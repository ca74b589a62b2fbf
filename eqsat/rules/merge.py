"""Horizontal merging: N matmuls that share an operand become one matmul plus slices.

Consumes a :class:`~eqsat.egraph.classes.Snapshot` of the e-graph; produces unions (each
original matmul with a slice of the merged one) as :class:`~eqsat.rules.base.PyRule` s. The
merged form is only an *alternative*: extraction decides whether it pays, and it only pays when
all members take it together, which is why the extractor must see the whole group (ILP).

``merge-matmul-shared-lhs`` (TASO/Tensat's merge: BERT's Q/K/V, SwiGLU's gate and up, NAS-RNN's
eight gates)::

    matmul(x, w_i)  =  slice(matmul(x, concat(w_1..w_n, axis=1)), o_i, o_i + n_i, axis=-1)

for constant ``w_i`` of shape ``[k, n_i]`` (same ``k`` and dtype), ``o_i = n_1 + .. + n_(i-1)``.
The concatenated weight is weight-only: it costs nothing at run time (it is folded at export).

``merge-matmul-add`` (Tensat's RNN rewrite)::

    matmul(x, a) + matmul(h, b)  =  matmul(concat(x, h, axis=-1), concat(a, b, axis=0))

for constant ``a`` ``[k1, n]`` and ``b`` ``[k2, n]`` and non-constant ``x``, ``h`` whose shapes
agree except on the last axis (one sum of ``k1 + k2`` products instead of two sums added).

``merge-matmul-shared-rhs`` (batching: one weight applied to several inputs, e.g. an RNN's
input projection at every time step)::

    matmul(x_i, w)  =  slice(matmul(concat(x_1..x_n, axis=0), w), o_i, o_i + m_i, axis=0)

for a constant ``w`` of rank 2 and non-constant ``x_i`` of rank >= 2 whose shapes agree except
on axis 0, which is static (``m_i``). A member is left out when its ``x`` depends on another
member's result (an RNN's state: merging it would need the future), so no merge closes a cycle.
On this CPU it is the merge that pays most (NAS-RNN: the weight is read once, not once per step).

Both compute every output element as the same dot product over the same ``k`` terms, but a
matmul kernel may block and vectorise a wider (or taller) problem differently, so the rounding
may differ: ``fp_exact=False``.
Groups are formed in graph order and capped at :data:`MAX_GROUP` members per merged matmul.
"""

from __future__ import annotations

from collections import defaultdict

from egglog import Vec, i64

from eqsat.egraph.classes import Snapshot, View
from eqsat.egraph.encode import ints_vec
from eqsat.egraph.lang import Tensor
from eqsat.rules.base import PyRule

FAMILY = "merge"
# the claim for this module's rules; the evidence is eqsat/verify/ledger.json, written by
# `eqsat rules verify --write-ledger` (a fast test fails when it does not hold the rule as written)
PROOF = "bounded"
MAX_GROUP = 16


def rules() -> list[PyRule]:
    return [
        PyRule(
            "merge-matmul-shared-rhs",
            FAMILY,
            "matmul(x_i, w) => slice(matmul(concat(x_1..x_n, 0), w), o_i, o_i + m_i, 0)",
            shared_rhs,
            fp_exact=False,
            doc="one constant weight applied to n inputs: one matmul on their concatenation",
            proof=PROOF,
        ),
        PyRule(
            "merge-matmul-shared-lhs",
            FAMILY,
            "matmul(x, w_i) => slice(matmul(x, concat(w_1..w_n, 1)), o_i, o_i + n_i, -1)",
            shared_lhs,
            fp_exact=False,
            doc="n constant weights applied to one input: one matmul on the concatenated weights",
            proof=PROOF,
        ),
        PyRule(
            "merge-matmul-add",
            FAMILY,
            "matmul(x, a) + matmul(h, b) => matmul(concat(x, h, -1), concat(a, b, 0))",
            matmul_add,
            fp_exact=False,
            doc="a sum of two projections is one projection of the concatenated inputs "
            "(Tensat's X·A + H·B = [X H]·[A; B])",
            proof=PROOF,
        ),
    ]


def _matmuls(s: Snapshot) -> list[tuple[str, str, str]]:
    """(class, lhs class, rhs class) of every typed MatMul e-node, in graph order."""
    out = []
    for nid, v in s.views.items():
        if s.eg.nodes[nid].subsumed or v.kind != "op" or v.op != "MatMul":
            continue
        a, b = v.inputs
        if a is not None and b is not None:
            out.append((s.eg.nodes[nid].eclass, a, b))
    out.sort(key=lambda t: (s.order(t[0]), t[1], t[2]))
    return out


def slice_of(m: Tensor, start: int, end: int, axis: int) -> Tensor:
    return Tensor.slice(
        m,
        Tensor.ints(ints_vec([start])),
        Tensor.ints(ints_vec([end])),
        Tensor.ints(ints_vec([axis])),
        Tensor.none(),
    )


def chunks(items: list, n: int = MAX_GROUP) -> list[list]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def shared_lhs(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    groups: dict[tuple, list[tuple[str, str]]] = defaultdict(list)
    for c, a, b in _matmuls(s):
        ta, tb = s.tensor_type(a), s.tensor_type(b)
        if ta is None or tb is None or b not in s.constant or a in s.constant:
            continue
        if tb.rank != 2 or not tb.is_static or ta.rank < 1 or ta.dtype != tb.dtype:
            continue
        members = groups[(a, int(tb.shape[0]), tb.dtype)]
        if all(b != other for _, other in members):
            members.append((c, b))
    unions = []
    for (a, _, _), members in groups.items():
        for chunk in chunks(members):
            if len(chunk) < 2:
                continue
            xa = s.term(a)
            ws = [s.term(b) for _, b in chunk]
            if xa is None or any(w is None for w in ws):
                continue
            merged = Tensor.matmul(xa, Tensor.concat(Vec[Tensor](*ws), i64(1)))
            rank = max(s.tensor_type(a).rank, 2) if s.tensor_type(a) else 2
            off = 0
            for (_, b), w in zip(chunk, ws, strict=True):
                n = int(s.tensor_type(b).shape[1])
                unions.append((Tensor.matmul(xa, w), slice_of(merged, off, off + n, rank - 1)))
                off += n
    return unions


def shared_rhs(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    groups: dict[tuple, list[tuple[str, str, int]]] = defaultdict(list)
    for c, a, b in _matmuls(s):
        ta, tb = s.tensor_type(a), s.tensor_type(b)
        if ta is None or tb is None or b not in s.constant or a in s.constant:
            continue
        if tb.rank != 2 or ta.rank < 2 or ta.dtype != tb.dtype or not isinstance(ta.shape[0], int):
            continue
        members = groups[(b, ta.shape[1:], ta.dtype)]
        if all(a != other for _, other, _ in members):
            members.append((c, a, int(ta.shape[0])))
    unions = []
    for (b, _, _), members in groups.items():
        kept = independent(s, members)
        for chunk in chunks(kept):
            if len(chunk) < 2:
                continue
            w = s.term(b)
            xs = [s.term(a) for _, a, _ in chunk]
            if w is None or any(x is None for x in xs):
                continue
            merged = Tensor.matmul(Tensor.concat(Vec[Tensor](*xs), i64(0)), w)
            off = 0
            for (_, _, m), x in zip(chunk, xs, strict=True):
                unions.append((Tensor.matmul(x, w), slice_of(merged, off, off + m, 0)))
                off += m
    return unions


def independent(s: Snapshot, members: list[tuple], piece=lambda m: m[1]) -> list[tuple]:
    """The members ``(class, ...)``, in order, that can be computed together: a member is
    dropped when its ``piece`` (the input that is concatenated) depends on an earlier kept
    member's result, or a kept member's piece depends on its result. Also used by the merges
    lifted from generated rules (:mod:`eqsat.rules.generated.lift`)."""
    kept: list[tuple] = []
    for m in members:
        results = {k[0] for k in kept}
        if s.reaches([piece(m)], results | {m[0]}):
            continue  # its input needs a kept result (or its own: a cycle already)
        if s.reaches([piece(k) for k in kept], {m[0]}):
            continue  # a kept input needs its result
        kept.append(m)
    return kept


# ---------------------------------------------------------------------------- convolutions

CONV_FAMILY = "merge-conv"


def conv_rules() -> list[PyRule]:
    """Opt-in (not a default family): see :func:`shared_input_conv`."""
    return [
        PyRule(
            "merge-conv-shared-input",
            CONV_FAMILY,
            "conv(x, w_i, b_i) => slice(conv(x, concat(pad(w_1)..pad(w_n), 0), "
            "concat(b_1..b_n, 0)), o_i, o_i + c_i, 1)",
            shared_input_conv,
            fp_exact=False,
            doc="convolutions of one input merged along output channels; smaller kernels "
            "zero-padded to the largest (1x1 -> 3x3) where their padding centres them",
            proof=PROOF,
        )
    ]


def shared_input_conv(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    """Convolutions of one input (group 1, equal strides and dilations, constant weights, all
    with or all without bias) become one convolution over the concatenated weights, sliced
    along the channel axis. A kernel smaller than the group's largest is zero-padded to it when
    the difference is even on every axis and its own padding plus half the difference equals
    the largest kernel's padding (so every output position sees the same window; dilation 1
    only). Measured on this CPU (onnxruntime 1.32, ORT_ENABLE_ALL): Inception 0.96x, ResNeXt
    0.90x, SqueezeNet (1x1 padded to 3x3) 0.60x — ORT runs convolutions in a blocked channel
    layout that a channel slice breaks, and padding adds work — which the roofline model cannot
    see, so this family is not in the default schedule; it is for targets where it pays."""
    groups: dict[tuple, list[tuple[str, View]]] = defaultdict(list)
    for nid, v in s.views.items():
        if s.eg.nodes[nid].subsumed or v.kind != "op" or v.op != "Conv":
            continue
        x, w, b = v.inputs
        a = dict(zip((at.name for at in v.spec.attrs), v.values, strict=True))
        tw, tx = s.tensor_type(w), s.tensor_type(x)
        if a["group"] != 1 or w not in s.constant or tw is None or tx is None or not tw.is_static:
            continue
        if x in s.constant or (b is not None and b not in s.constant):
            continue
        key = (x, a["strides"], a["dilations"], b is None, tw.dtype)
        groups[key].append((s.eg.nodes[nid].eclass, v))
    unions = []
    for (x, strides, dilations, no_bias, _), members in sorted(
        groups.items(), key=lambda kv: s.order(kv[0][0])
    ):
        members = sorted({c: v for c, v in members}.items(), key=lambda cv: s.order(cv[0]))
        plan = _conv_plan(s, members, dilations)
        if plan is None or len(members) < 2:
            continue
        kernel, pads, paddings = plan
        xt = s.term(x)
        ws = [s.term(v.inputs[1]) for _, v in members]
        bs = [] if no_bias else [s.term(v.inputs[2]) for _, v in members]
        if xt is None or any(t is None for t in ws + bs):
            continue
        padded = [
            w
            if not any(p)
            else Tensor.pad(w, _ints_term(p), Tensor.none(), Tensor.none(), "constant")
            for w, p in zip(ws, paddings, strict=True)
        ]
        weight = Tensor.concat(Vec[Tensor](*padded), i64(0))
        bias = Tensor.none() if no_bias else Tensor.concat(Vec[Tensor](*bs), i64(0))
        merged = Tensor.conv(
            xt,
            weight,
            bias,
            i64(1),
            ints_vec(strides),
            ints_vec(pads),
            ints_vec(dilations),
            ints_vec(kernel),
        )
        off = 0
        for c, v in members:
            root = s.term(c)
            n = int(s.tensor_type(v.inputs[1]).shape[0])
            if root is not None:
                unions.append((root, slice_of(merged, off, off + n, 1)))
            off += n
    return unions


def _conv_plan(s: Snapshot, members, dilations):
    """(kernel, pads, per-member weight paddings) of the merged convolution, or None."""
    attrs = [dict(zip((a.name for a in v.spec.attrs), v.values, strict=True)) for _, v in members]
    shapes = [tuple(int(d) for d in s.tensor_type(v.inputs[1]).shape) for _, v in members]
    if len({sh[1] for sh in shapes}) != 1:
        return None  # input channels differ: not one input after all
    kernels = [tuple(a["kernel_shape"]) for a in attrs]
    nd = len(kernels[0])
    if any(len(k) != nd for k in kernels):
        return None
    big = max(range(len(kernels)), key=lambda i: (kernels[i], -i))
    kernel, pads = kernels[big], tuple(attrs[big]["pads"])
    paddings = []
    for k, a in zip(kernels, attrs, strict=True):
        diff = [K - kk for K, kk in zip(kernel, k, strict=True)]
        if any(d < 0 or d % 2 for d in diff) or (any(diff) and any(x != 1 for x in dilations)):
            return None
        half = [d // 2 for d in diff]
        p = tuple(a["pads"])
        if (
            tuple(p[i] + half[i] for i in range(nd)) + tuple(p[nd + i] + half[i] for i in range(nd))
            != pads
        ):
            return None
        paddings.append((0, 0, *half, 0, 0, *half))  # ONNX Pad: all begins, then all ends
    return kernel, pads, paddings


def _ints_term(values) -> Tensor:
    return Tensor.ints(ints_vec(list(values)))


def matmul_add(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    adds = [
        (s.eg.nodes[n].eclass, v)
        for n, v in s.views.items()
        if v.kind == "op" and v.op == "Add" and not s.eg.nodes[n].subsumed
    ]
    adds.sort(key=lambda cv: (s.order(cv[0]), cv[1].inputs))
    for c, add in adds:
        left, right = (_matmuls_in(s, k) for k in add.inputs)
        for x, a in left:
            for h, b in right:
                tx, th, ta, tb = (s.tensor_type(k) for k in (x, h, a, b))
                if None in (tx, th, ta, tb) or ta.rank != 2 or tb.rank != 2:
                    continue
                if tx.rank < 2 or tx.shape[:-1] != th.shape[:-1] or ta.shape[1] != tb.shape[1]:
                    continue
                if len({tx.dtype, th.dtype, ta.dtype, tb.dtype}) != 1:
                    continue
                terms = [s.term(k) for k in (c, x, h, a, b)]
                if any(t is None for t in terms):
                    continue
                root, xt, ht, at, bt = terms
                cat_in = Tensor.concat(Vec[Tensor](xt, ht), i64(tx.rank - 1))
                cat_w = Tensor.concat(Vec[Tensor](at, bt), i64(0))
                unions.append((root, Tensor.matmul(cat_in, cat_w)))
    return unions


def _matmuls_in(s: Snapshot, c: str | None) -> list[tuple[str, str]]:
    """(lhs, rhs) of the MatMul e-nodes of class ``c`` with a non-constant lhs and a constant
    rhs."""
    if c is None:
        return []
    return [
        (v.inputs[0], v.inputs[1])
        for _, v in s.nodes(c)
        if v.kind == "op"
        and v.op == "MatMul"
        and v.inputs[0] not in s.constant
        and v.inputs[1] in s.constant
    ]
