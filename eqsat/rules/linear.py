"""Linear-operator identities: convolutions and matmuls read as linear maps (the substitutions of
TASO and Tensat that the other families lack: issue 19).

Consumes a :class:`~eqsat.egraph.classes.Snapshot` of the e-graph; produces unions as
:class:`~eqsat.rules.base.PyRule` s (each is guarded on types, attribute values or a weight's
value, and most build their right-hand side's constants from sizes). Constants a rule makes
(a kernel of ones, an identity matrix) are weight-only terms over literals: extraction prices
them at zero and the fold pass computes them once at export, like the folded weights of
:mod:`eqsat.rules.fold`.

- ``merge-conv-add`` (Tensat's conv merge, NasNet's sum of convolutions; ResNeXt's residual
  branch plus its projection shortcut)::

      conv(x1, w1, b1) + conv(x2, w2, b2)  =  conv(concat(x1, x2, 1), concat(w1, w2, 1), b1 + b2)

  for group-1 convolutions with the same attributes, constant weights and biases, and
  non-constant inputs whose shapes agree except on the channel axis: each output element is
  one sum over the channels of both inputs instead of two sums added (four distinct rank-4
  operands).
- ``conv-add-shared-input``: ``conv(x, w1, b1) + conv(x, w2, b2) = conv(x, w1 + w2, b1 + b2)``
  for two convolutions of one input with the same attributes (any group): linear in the kernel.
- ``conv-concat-split``: the same identity read the other way, for any number of parts::

      conv(concat(x_1..x_n, 1), w, b)  =  conv(x_1, w[:, o_1:o_2], b) + .. + conv(x_n, w[:, o_n:])

  for a group-1 convolution with a constant weight (the channel slices of ``w`` are weight-only).
- ``avgpool-as-conv``: an average pooling is a depthwise convolution (``group = C``) with the
  constant kernel ``ones([C, 1, k..]) / (k_1 .. k_d)``, when every window divides by the full
  kernel size: no padding, or ``count_include_pad = 1`` (with padding and the default
  ``count_include_pad = 0`` a border window divides by what it covers: not a convolution), and
  ``ceil_mode = 0``.
- ``conv1x1-avgpool-commute`` (Inception's pool branch)::

      conv(average_pool(x), w, b)  =  average_pool(conv(x, w, b))

  for a 1x1 convolution (stride 1, no padding, any group): it mixes channels at one pixel, the
  pooling averages pixels with weights that depend on the pixel only, so the two commute; the
  bias commutes when every window's weights sum to 1 (``count_include_pad = 0``, or no
  padding and ``ceil_mode = 0``), so with padding and ``count_include_pad = 1`` only a
  bias-free conv does. Both ways round: pooling after the conv averages its output channels
  instead of its input channels (Inception: 32 of 192, 64 of 256), pooling before a strided
  pool's conv runs the conv on fewer pixels; extraction chooses.
- ``conv-residual-identity`` (TASO's identity kernel)::

      x + conv(x, w, b)  =  conv(x, w + I, b)

  where ``I`` is the identity kernel (``I[o, i, p..] = 1`` when ``o = i`` and ``p`` is the
  begin padding, else 0), for a group-1, stride-1, dilation-1 convolution of ``C`` to ``C``
  channels whose padding keeps the size (``begin + end = k - 1`` on each axis).
- ``matmul-residual-identity``: ``x + matmul(x, w) = matmul(x, w + I)`` for a constant square
  ``w`` (the residual around a linear layer).
- ``merge-grouped-conv-shared-input`` (ResNeXt's grouped convolutions): grouped convolutions
  of one input with the same attributes (``group = G > 1``) merge along the output channels.
  Group ``g`` of the merged convolution must see the ``g``-th block of every member, so the
  weights are interleaved by group, and each member's result is read back the same way::

      conv(x, w_i, b_i, G)  =  reshape(slice(reshape(conv(x, W, B, G), [n, G, m, -1]),
                                             p_i, p_i + m_i, axis 2), shape_i)

  with ``W = reshape(concat(reshape(w_i, [G, m_i, ..]), axis 1), [sum, ..])`` (``m_i`` output
  channels per group), ``B`` likewise and ``p_i = m_1 + .. + m_(i-1)``.
- ``matmul-identity-elim`` and ``conv-identity-elim``: a matmul by a *literal* identity matrix
  (either side), a convolution by a literal identity kernel without bias whose result has its
  input's type, is its input (``X·I = X``).

The module's last section holds the rest of TASO's axioms and Tensat's substitutions that no
family had (docs/rules.md, "Coverage of TASO's and Tensat's substitutions", counts what each
closes): a convolution and a matmul linear in the *input* (``conv-add-shared-weight``,
``matmul-add-shared-rhs`` / ``-lhs``), ``matmul-associative-2d`` (every bracketing of a chain
of rank-2 products united with the right-nested one in one pass), a 0-d factor moved into and
out of matmul, bias-free conv, average pooling, transpose and concat
(``scalar-mul-through-linear``), Tensat's kernel enlargement (``conv-enlarge-kernel``: a kernel
padded to the window of another conv of the graph, the padding grown to match), pooling and
convolution over a batch or channel concatenation (``pool-concat-distribute``,
``conv-concat-batch``), element-wise ops and transposes through concatenations
(``binary-concat-distribute``, ``transpose-concat-distribute``) and ``x * ones = x``
(``mul-ones-elim``, TASO's ``Iewmul``). Each runs once, like the rest of the family.

Every rule here that reorders or regroups sums (or divides by the count in the kernel rather
than after the sum) says ``fp_exact=False``, and so do the kernel enlargement (its zero taps
turn an infinite input into NaN) and a conv over a batch concat (a kernel may block a larger
batch differently); the ``-elim`` rules multiply by 1 and add 0, and the concatenation and
pooling rules move values without arithmetic: exact.
"""

from __future__ import annotations

import itertools

import numpy as np
from egglog import String, Vec, f64, i64

from eqsat.egraph.classes import Snapshot, View, leaf_value
from eqsat.egraph.encode import ints_vec, prim
from eqsat.egraph.lang import Tensor
from eqsat.rules.base import PyRule

FAMILY = "linear"
# the claim for this module's rules; the evidence is eqsat/verify/ledger.json, written by
# `eqsat rules verify --write-ledger` (a fast test fails when it does not hold the rule as written)
PROOF = "bounded"
FLOATS = ("float16", "float32", "float64")


def rules() -> list[PyRule]:
    def r(name, pattern, find, doc, exact=False, makes=()):
        return PyRule(name, FAMILY, pattern, find, PROOF, exact, doc=doc, makes=frozenset(makes))

    return [
        r(
            "merge-conv-add",
            "conv(x1, w1, b1) + conv(x2, w2, b2) => conv(concat(x1, x2, 1), concat(w1, w2, 1), "
            "b1 + b2)",
            merge_conv_add,
            "a sum of two convolutions with one shape of window is one convolution of the "
            "concatenated inputs and weights (Tensat's conv merge)",
        ),
        r(
            "conv-add-shared-input",
            "conv(x, w1, b1) + conv(x, w2, b2) => conv(x, w1 + w2, b1 + b2)",
            conv_add_shared_input,
            "two convolutions of one input with one window, added, are one convolution by the "
            "sum of the kernels (any group)",
        ),
        r(
            "conv-concat-split",
            "conv(concat(x_1..x_n, 1), w, b) => conv(x_1, w[:, o_1:o_2], b) + .. + "
            "conv(x_n, w[:, o_n:])",
            conv_concat_split,
            "a convolution of a channel concatenation is the sum of the convolutions of its "
            "parts by the matching input-channel slices of the weight",
        ),
        r(
            "avgpool-as-conv",
            "average_pool(x, k) => conv(x, ones([C, 1, k]) / prod(k), group=C) "
            "if no pads or count_include_pad",
            avgpool_as_conv,
            "average pooling is a depthwise convolution by a constant 1/(kh*kw) kernel",
            makes=("conv",),
        ),
        r(
            "conv1x1-avgpool-commute",
            "conv(average_pool(x), w, b) <=> average_pool(conv(x, w, b)) for a 1x1 conv "
            "if no bias or each window's weights sum to 1",
            conv1x1_avgpool_commute,
            "a 1x1 convolution (channels at one pixel) and an average pooling (pixels, one "
            "channel) commute",
            makes=("average_pool", "conv"),
        ),
        r(
            "conv-residual-identity",
            "x + conv(x, w, b) => conv(x, w + I, b) if stride 1 and pads keep the size",
            conv_residual_identity,
            "a residual add around a convolution folds into its kernel as the identity kernel",
        ),
        r(
            "matmul-residual-identity",
            "x + matmul(x, w) => matmul(x, w + I) for a constant square w",
            matmul_residual_identity,
            "a residual add around a matmul folds into its weight as the identity matrix",
        ),
        r(
            "merge-grouped-conv-shared-input",
            "conv(x, w_i, b_i, G) => reshape(slice(reshape(conv(x, interleave_G(w_1..w_n), "
            "interleave_G(b_1..b_n), G), [n, G, m, -1]), p_i, p_i + m_i, 2), shape_i)",
            merge_grouped_convs,
            "grouped convolutions of one input merged along output channels, their weights "
            "interleaved group by group",
        ),
        r(
            "matmul-identity-elim",
            "matmul(x, I) => x, matmul(I, x) => x for a literal identity matrix I",
            matmul_identity_elim,
            "X I = X",
            exact=True,
        ),
        r(
            "conv-identity-elim",
            "conv(x, I, none) => x for a literal identity kernel I if type(result) = type(x)",
            conv_identity_elim,
            "a convolution by the identity kernel is its input",
            exact=True,
        ),
        *substitution_rules(r),
    ]


# ---------------------------------------------------------------------------- constants


def _ints(values) -> Tensor:
    return Tensor.ints(ints_vec(list(values)))


def _pad(x: Tensor, pads, value: Tensor) -> Tensor:
    return Tensor.pad(x, _ints(pads), value, Tensor.none(), String("constant"))


def ones(shape, dtype: str) -> Tensor:
    """A constant of ``shape`` filled with 1: a one-element tensor padded with ones."""
    one = Tensor.scalar(f64(1.0), String(dtype))
    x = Tensor.reshape(one, _ints([1] * len(shape)), i64(0))
    return _pad(x, [0] * len(shape) + [d - 1 for d in shape], one)


def eye(n: int, dtype: str, shape=None) -> Tensor:
    """The ``n x n`` identity matrix as a constant (reshaped to ``shape``): a column of ones
    padded with ``n`` zero columns, read row-major (``1`` then ``n`` zeros, repeated) and cut to
    ``n * n`` elements: element ``r * n + c`` is 1 iff ``r * n + c`` is a multiple of ``n + 1``,
    that is iff ``c = r``."""
    wide = _pad(ones([n, 1], dtype), [0, 0, 0, n], Tensor.none())
    flat = Tensor.reshape(wide, _ints([n * (n + 1)]), i64(0))
    cut = Tensor.slice(flat, _ints([0]), _ints([n * n]), _ints([0]), Tensor.none())
    return Tensor.reshape(cut, _ints(shape or [n, n]), i64(0))


def identity_kernel(c: int, kernel, begins, dtype: str) -> Tensor:
    """``[c, c, k..]``: 1 at ``[o, o, begins..]``, else 0 (a conv by it copies its input when the
    padding keeps the size)."""
    nd = len(kernel)
    center = eye(c, dtype, [c, c] + [1] * nd)
    ends = [k - 1 - b for k, b in zip(kernel, begins, strict=True)]
    return _pad(center, [0, 0, *begins, 0, 0, *ends], Tensor.none())


def identity_kernel_value(c: int, kernel, begins) -> np.ndarray:
    """:func:`identity_kernel`'s value, to recognise a literal one."""
    out = np.zeros((c, c, *kernel))
    for o in range(c):
        out[(o, o, *begins)] = 1.0
    return out


# ---------------------------------------------------------------------------- helpers


def attrs(v: View) -> dict:
    return dict(zip((a.name for a in v.spec.attrs), v.values, strict=True))


def conv_term(v: View, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    """A Conv with ``v``'s attributes over new operands."""
    args = (prim(a.kind, val) for a, val in zip(v.spec.attrs, v.values, strict=True))
    return Tensor.conv(x, w, b, *args)


TERM_DEPTH = 8  # a folded weight (BatchNorm's scale into a conv) is five ops deep


def _terms(s: Snapshot, *classes: str | None) -> list[Tensor] | None:
    out = []
    for c in classes:
        t = Tensor.none() if c is None else s.term(c, TERM_DEPTH)
        if t is None:
            return None
        out.append(t)
    return out


def _ops_in(s: Snapshot, c: str | None, op: str) -> list[View]:
    if c is None:
        return []
    return [v for _, v in s.nodes(c) if v.kind == "op" and v.op == op]


def _convs(s: Snapshot, c: str) -> list[View]:
    """Conv e-nodes of class ``c`` with a constant, statically shaped weight, a constant (or
    no) bias and a non-constant input."""
    out = []
    for v in _ops_in(s, c, "Conv"):
        x, w, b = v.inputs
        tw = s.tensor_type(w)
        if w not in s.constant or tw is None or not tw.is_static or x in s.constant:
            continue
        if b is None or b in s.constant:
            out.append(v)
    return out


def _literal(s: Snapshot, c: str) -> np.ndarray | None:
    """The value of a class that holds a weight leaf (a literal of the model)."""
    for _, v in s.nodes(c):
        if v.kind == "weight":
            val = leaf_value(v, s.enc)
            return None if val is None else np.asarray(val)
    return None


# ---------------------------------------------------------------------------- the rules


def _conv_sums(s: Snapshot):
    """(add class, conv view, conv view): every Add of two convolutions with the same
    attributes, constant weights and biases and non-constant inputs, that does not broadcast;
    each pair once."""
    seen: set[tuple] = set()
    for c, add in s.ops("Add"):
        p, q = add.inputs
        tp, tq = s.tensor_type(p), s.tensor_type(q)
        if tp is None or tp != tq:
            continue  # the Add broadcasts: not one conv's result
        for v1 in _convs(s, p):
            for v2 in _convs(s, q):
                key = (c, *sorted(tuple(k or "" for k in v.inputs) for v in (v1, v2)))
                if v1.values == v2.values and key not in seen:
                    seen.add(key)
                    yield c, v1, v2


def _bias_sum(b1: str | None, b2: str | None, tb1: Tensor, tb2: Tensor) -> Tensor:
    if b1 is None or b2 is None:
        return tb2 if b1 is None else tb1  # none when both are
    return Tensor.add(tb1, tb2)


def merge_conv_add(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, v1, v2 in _conv_sums(s):
        (x1, w1, b1), (x2, w2, b2) = v1.inputs, v2.inputs
        t1, t2 = s.tensor_type(x1), s.tensor_type(x2)
        if attrs(v1)["group"] != 1 or x1 == x2 or t1 is None or t2 is None:
            continue
        if t1.rank != t2.rank or t1.dtype != t2.dtype or t1.rank < 3:
            continue
        if t1.shape[0] != t2.shape[0] or t1.shape[2:] != t2.shape[2:]:
            continue  # the windows would not line up
        terms = _terms(s, c, x1, w1, b1, x2, w2, b2)
        if terms is None:
            continue
        root, tx1, tw1, tb1, tx2, tw2, tb2 = terms
        x = Tensor.concat(Vec[Tensor](tx1, tx2), i64(1))
        w = Tensor.concat(Vec[Tensor](tw1, tw2), i64(1))
        unions.append((root, conv_term(v1, x, w, _bias_sum(b1, b2, tb1, tb2))))
    return unions


def conv_add_shared_input(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, v1, v2 in _conv_sums(s):
        (x, w1, b1), (x2, w2, b2) = v1.inputs, v2.inputs
        if x != x2:
            continue
        terms = _terms(s, c, x, w1, b1, w2, b2)
        if terms is None:
            continue
        root, xt, tw1, tb1, tw2, tb2 = terms
        w = Tensor.add(tw1, tw2)
        unions.append((root, conv_term(v1, xt, w, _bias_sum(b1, b2, tb1, tb2))))
    return unions


def _weight_slice(w: Tensor, start: int, end: int) -> Tensor:
    return Tensor.slice(w, _ints([start]), _ints([end]), _ints([1]), Tensor.none())


def conv_concat_split(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, conv in s.ops("Conv"):
        x, w, b = conv.inputs
        tw = s.tensor_type(w)
        if attrs(conv)["group"] != 1 or w not in s.constant or tw is None or not tw.is_static:
            continue
        for cat in _ops_in(s, x, "Concat"):
            if cat.values[0] != 1 or len(cat.inputs) < 2:
                continue
            widths = [s.tensor_type(k) for k in cat.inputs]
            if any(t is None or not isinstance(t.shape[1], int) for t in widths):
                continue
            terms = _terms(s, c, w, b, *cat.inputs)
            if terms is None:
                continue
            root, tw_, tb, *parts = terms
            total, off = None, 0
            for k, (part, t) in enumerate(zip(parts, widths, strict=True)):
                n = int(t.shape[1])
                bias = tb if k == 0 else Tensor.none()
                one = conv_term(conv, part, _weight_slice(tw_, off, off + n), bias)
                total = one if total is None else Tensor.add(total, one)
                off += n
            if off == int(tw.shape[1]):
                unions.append((root, total))
    return unions


def avgpool_as_conv(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, pool in s.ops("AveragePool"):
        a = attrs(pool)
        (x,) = pool.inputs
        tx = s.tensor_type(x)
        if tx is None or tx.dtype not in FLOATS or tx.rank < 3 or a["ceil_mode"]:
            continue
        if any(a["pads"]) and not a["count_include_pad"]:
            continue  # border windows divide by what they cover
        if not isinstance(tx.shape[1], int):
            continue
        channels, kernel = int(tx.shape[1]), list(a["kernel_shape"])
        terms = _terms(s, c, x)
        if terms is None:
            continue
        root, xt = terms
        count = Tensor.scalar(f64(float(np.prod(kernel))), String(tx.dtype))
        w = Tensor.div(ones([channels, 1, *kernel], tx.dtype), count)
        conv = Tensor.conv(
            xt,
            w,
            Tensor.none(),
            i64(channels),
            ints_vec(a["strides"]),
            ints_vec(a["pads"]),
            ints_vec(a["dilations"]),
            ints_vec(kernel),
        )
        unions.append((root, conv))
    return unions


def _pointwise(conv: View) -> bool:
    """A 1x1 convolution with stride 1 and no padding: a map of the channels at each pixel."""
    a = attrs(conv)
    return all(k == 1 for k in (*a["kernel_shape"], *a["strides"])) and not any(a["pads"])


def _commutes_with_bias(pool: View) -> bool:
    """Whether every window of the average pooling weights its pixels by a sum of 1, so that a
    constant (the conv's bias) averages to itself."""
    a = attrs(pool)
    return not a["count_include_pad"] or (not any(a["pads"]) and not a["ceil_mode"])


def conv1x1_avgpool_commute(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    def pool_term(pool: View, x: Tensor) -> Tensor:
        args = (prim(a.kind, val) for a, val in zip(pool.spec.attrs, pool.values, strict=True))
        return Tensor.average_pool(x, *args)

    def fits(conv: View, pool: View, x: str) -> bool:
        tx = s.tensor_type(x)
        ok_bias = conv.inputs[2] is None or _commutes_with_bias(pool)
        return _pointwise(conv) and ok_bias and tx is not None and tx.dtype in FLOATS

    unions = []
    classes = dict.fromkeys(k for k, _ in s.ops("Conv"))  # in order, each once
    for c, conv in ((k, v) for k in classes for v in _convs(s, k)):  # conv(pool(x)) => ..
        _, w, b = conv.inputs
        for pool in _ops_in(s, conv.inputs[0], "AveragePool"):
            (x,) = pool.inputs
            terms = _terms(s, c, x, w, b)
            if terms is None or not fits(conv, pool, x):
                continue
            root, xt, wt, bt = terms
            unions.append((root, pool_term(pool, conv_term(conv, xt, wt, bt))))
    for c, pool in s.ops("AveragePool"):  # pool(conv(x)) => conv(pool(x))
        for conv in _convs(s, pool.inputs[0]):
            x, w, b = conv.inputs
            terms = _terms(s, c, x, w, b)
            if terms is None or not fits(conv, pool, x):
                continue
            root, xt, wt, bt = terms
            unions.append((root, conv_term(conv, pool_term(pool, xt), wt, bt)))
    return unions


def _residual_pairs(s: Snapshot, op: str):
    """(add class, input class, op view) for ``x + op(x, ..)`` either way round, where the add
    does not broadcast (both sides have one type)."""
    for c, add in s.ops("Add"):
        for xs, ys in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
            tx, ty = s.tensor_type(xs), s.tensor_type(ys)
            if tx is None or tx != ty or xs in s.constant or tx.dtype not in FLOATS:
                continue
            for v in _ops_in(s, ys, op):
                if v.inputs[0] == xs:
                    yield c, xs, v


def conv_residual_identity(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, x, conv in _residual_pairs(s, "Conv"):
        _, w, b = conv.inputs
        tw, tx = s.tensor_type(w), s.tensor_type(x)
        if w not in s.constant or tw is None or not tw.is_static:
            continue
        a = attrs(conv)
        kernel, nd = list(a["kernel_shape"]), len(a["kernel_shape"])
        pads = list(a["pads"])
        begins, ends = pads[:nd], pads[nd:]
        if a["group"] != 1 or any(st != 1 for st in (*a["strides"], *a["dilations"])):
            continue
        if any(bb + e != k - 1 for bb, e, k in zip(begins, ends, kernel, strict=True)):
            continue  # the size changes: no identity tap
        if tw.shape[0] != tw.shape[1] or tw.shape[1] != tx.shape[1]:
            continue
        terms = _terms(s, c, x, w, b)
        if terms is None:
            continue
        root, xt, wt, bt = terms
        eye_k = identity_kernel(int(tw.shape[0]), kernel, begins, tw.dtype)
        unions.append((root, conv_term(conv, xt, Tensor.add(wt, eye_k), bt)))
    return unions


def matmul_residual_identity(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, x, mm in _residual_pairs(s, "MatMul"):
        w = mm.inputs[1]
        tw = s.tensor_type(w)
        if w not in s.constant or tw is None or tw.rank != 2 or not tw.is_static:
            continue
        if tw.shape[0] != tw.shape[1]:
            continue
        terms = _terms(s, c, x, w)
        if terms is None:
            continue
        root, xt, wt = terms
        unions.append((root, Tensor.matmul(xt, Tensor.add(wt, eye(int(tw.shape[0]), tw.dtype)))))
    return unions


def _is_eye(v: np.ndarray | None) -> bool:
    return (
        v is not None
        and v.ndim == 2
        and v.shape[0] == v.shape[1]
        and v.dtype.kind == "f"
        and np.array_equal(v, np.eye(v.shape[0]))
    )


def matmul_identity_elim(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, mm in s.ops("MatMul"):
        a, b = mm.inputs
        for x, k in ((a, b), (b, a)):
            tx = s.tensor_type(x)
            if tx is None or tx != s.tensor_type(c) or not _is_eye(_literal(s, k)):
                continue
            terms = _terms(s, c, x)
            if terms is not None:
                unions.append((terms[0], terms[1]))
                break
    return unions


def conv_identity_elim(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, conv in s.ops("Conv"):
        x, w, b = conv.inputs
        tx = s.tensor_type(x)
        if b is not None or tx is None or tx != s.tensor_type(c):
            continue  # unknown types: the padding might not keep the size
        a = attrs(conv)
        val = _literal(s, w)
        if val is None or val.ndim < 3 or a["group"] != 1 or val.shape[0] != val.shape[1]:
            continue
        if any(st != 1 for st in a["strides"]) or any(d != 1 for d in a["dilations"]):
            continue
        nd = len(a["kernel_shape"])
        begins = list(a["pads"])[:nd]
        want = identity_kernel_value(val.shape[0], val.shape[2:], begins)
        if not np.array_equal(val, want):
            continue
        terms = _terms(s, c, x)
        if terms is not None:
            unions.append((terms[0], terms[1]))
    return unions


def _reshape(x: Tensor, shape) -> Tensor:
    return Tensor.reshape(x, _ints(shape), i64(0))


def merge_grouped_convs(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    groups: dict[tuple, list[tuple[str, View]]] = {}
    for c, v in s.ops("Conv"):
        x, w, b = v.inputs
        tw, tout = s.tensor_type(w), s.tensor_type(c)
        if attrs(v)["group"] < 2 or w not in s.constant or tw is None or not tw.is_static:
            continue
        if x in s.constant or (b is not None and b not in s.constant):
            continue
        if tout is None or tout.rank < 3 or not all(isinstance(d, int) for d in tout.shape[2:]):
            continue
        members = groups.setdefault((x, v.values, b is None, tw.dtype), [])
        if all(c != other for other, _ in members):
            members.append((c, v))
    unions = []
    for (x, _, no_bias, _), members in groups.items():
        if len(members) < 2:
            continue
        g = int(attrs(members[0][1])["group"])
        per = [int(s.tensor_type(v.inputs[1]).shape[0]) // g for _, v in members]
        terms = _terms(s, x, *(k for _, v in members for k in v.inputs[1:]))
        if terms is None:
            continue
        xt, rest = terms[0], terms[1:]
        ws, bs = rest[0::2], rest[1::2]
        tail = list(s.tensor_type(members[0][1].inputs[1]).shape[1:])
        w = _reshape(
            Tensor.concat(
                Vec[Tensor](*(_reshape(t, [g, m, *tail]) for t, m in zip(ws, per, strict=True))),
                i64(1),
            ),
            [g * sum(per), *tail],
        )
        if no_bias:
            bias = Tensor.none()
        else:
            parts = (_reshape(t, [g, m]) for t, m in zip(bs, per, strict=True))
            bias = _reshape(Tensor.concat(Vec[Tensor](*parts), i64(1)), [g * sum(per)])
        merged = conv_term(members[0][1], xt, w, bias)
        split = _reshape(merged, [0, g, sum(per), -1])
        off = 0
        for (c, _), m in zip(members, per, strict=True):
            tout = s.tensor_type(c)
            root = s.term(c)
            piece = Tensor.slice(split, _ints([off]), _ints([off + m]), _ints([2]), Tensor.none())
            if root is not None:
                unions.append((root, _reshape(piece, [0, g * m, *tout.shape[2:]])))
            off += m
    return unions


# ---------------------------------------------------------------------------- TASO's axioms
# The rest of TASO's axioms and Tensat's substitutions, which no family had (issue 19): linearity
# on the input side, matmul associativity, a scalar through linear ops, kernel enlargement, and
# ops through concatenations. docs/rules.md's coverage section counts what each closes.


def substitution_rules(r) -> list[PyRule]:
    """The rules of this section, built with :func:`rules`'s constructor ``r``."""
    return [
        r(
            "conv-add-shared-weight",
            "conv(x1, w, b1) + conv(x2, w, b2) => conv(x1 + x2, w, b1 + b2) if type(x1) = type(x2)",
            conv_add_shared_weight,
            "two convolutions by one kernel, added, are one convolution of the sum of their "
            "inputs (a convolution is linear in its input; with avgpool-as-conv, so is a pooling)",
        ),
        r(
            "conv-enlarge-kernel",
            "conv(x, w, pads p) => conv(x, pad(w, K - k), pads p + (K - k)/2) for each larger "
            "kernel K of a conv in the graph, dilation 1",
            conv_enlarge_kernel,
            "a kernel padded with zeros to a larger window, the input padded as much more, "
            "computes the same convolution (Tensat's enlarge: 1x3 -> 3x3 so convs can merge)",
        ),
        r(
            "matmul-associative-2d",
            "matmul(..matmul(f1, f2).., fn) => matmul(f1, matmul(f2, .. fn)) for rank-2 factors",
            matmul_associative_2d,
            "(AB)C = A(BC) for matrices: every bracketing of a chain of products is united "
            "with the right-nested one (one pass, not egglog iterating over bracketings)",
        ),
        r(
            "scalar-mul-through-linear",
            "op(x, ..) * s => op(x * s, ..) (and op(x, w * s) for matmul and conv) for 0-d s, "
            "op one of matmul, bias-free conv, average pooling, transpose, concat (every part), "
            "pushed on through up to 4 ops; and op(.., x * s, ..) => op(.., x, ..) * s",
            scalar_mul_through_linear,
            "multiplying by a scalar commutes with every linear op (TASO's smul axioms)",
            makes=("average_pool", "concat", "conv", "transpose"),
        ),
        r(
            "pool-concat-distribute",
            "pool(concat(x_1..x_n, axis)) => concat(pool(x_1)..pool(x_n), axis) for axis 0 or 1",
            pool_concat_distribute,
            "a pooling works on each (batch, channel) plane alone, so it distributes over a "
            "concatenation along either (TASO's concatenation-and-pooling axioms)",
            exact=True,
            makes=("average_pool", "max_pool", "concat"),
        ),
        r(
            "conv-concat-batch",
            "conv(concat(x_1..x_n, 0), w, b) => concat(conv(x_1, w, b)..conv(x_n, w, b), 0)",
            conv_concat_batch,
            "a convolution works on each image of a batch alone (TASO's concatenation-and-conv "
            "along the batch axis)",
        ),
        r(
            "binary-concat-distribute",
            "concat(a_1 op b_1, .., a_n op b_n) => concat(a_1..a_n) op concat(b_1..b_n) for op "
            "Add or Mul, each a_i, b_i of its part's type",
            binary_concat_distribute,
            "an element-wise op of concatenations is the concatenation of the element-wise ops "
            "(TASO's operator-commutativity with concat)",
            exact=True,
        ),
        r(
            "transpose-concat-distribute",
            "transpose(concat(x_1..x_n, a), p) => concat(transpose(x_i, p).., p.index(a))",
            transpose_concat_distribute,
            "a transpose of a concatenation is the concatenation of the transposes along the "
            "axis the concatenation's axis moved to (TASO's concatenation-and-transpose)",
            exact=True,
        ),
        r(
            "mul-ones-elim",
            "x * ones => x for a literal tensor of ones if type(result) = type(x)",
            mul_ones_elim,
            "multiplying by a tensor of ones that does not broadcast x is x (TASO's Iewmul)",
            exact=True,
        ),
        r(
            "matmul-add-shared-rhs",
            "matmul(a, w) + matmul(b, w) => matmul(a + b, w) for rank-2 a, b of one type",
            matmul_add_shared_rhs,
            "a matmul is linear in its left operand",
        ),
        r(
            "matmul-add-shared-lhs",
            "matmul(w, a) + matmul(w, b) => matmul(w, a + b) for rank-2 a, b of one type",
            matmul_add_shared_lhs,
            "a matmul is linear in its right operand",
        ),
    ]


def conv_add_shared_weight(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, v1, v2 in _conv_sums(s):
        (x1, w, b1), (x2, w2, b2) = v1.inputs, v2.inputs
        tx = s.tensor_type(x1)
        if w != w2 or x1 == x2 or tx is None or tx != s.tensor_type(x2):
            continue  # inputs of different types: their sum would broadcast
        terms = _terms(s, c, x1, x2, w, b1, b2)
        if terms is None:
            continue
        root, tx1, tx2, wt, tb1, tb2 = terms
        unions.append((root, conv_term(v1, Tensor.add(tx1, tx2), wt, _bias_sum(b1, b2, tb1, tb2))))
    return unions


def conv_enlarge_kernel(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    convs = [(c, v, attrs(v)) for c, v in s.ops("Conv")]
    sizes = {tuple(a["kernel_shape"]) for _, _, a in convs}
    unions = []
    for c, v, a in convs:
        x, w, b = v.inputs
        kernel, nd = tuple(a["kernel_shape"]), len(a["kernel_shape"])
        if w not in s.constant or any(d != 1 for d in a["dilations"]):
            continue
        for big in sorted(sizes):
            if len(big) != nd or big == kernel:
                continue
            if any(K < k for K, k in zip(big, kernel, strict=True)):
                continue
            terms = _terms(s, c, x, w, b)
            if terms is None:
                break
            root, xt, wt, bt = terms
            before = [(K - k) // 2 for K, k in zip(big, kernel, strict=True)]
            after = [K - k - t for K, k, t in zip(big, kernel, before, strict=True)]
            wide = _pad(wt, [0, 0, *before, 0, 0, *after], Tensor.none())
            pads = list(a["pads"])
            grown = [p + t for p, t in zip(pads, [*before, *after], strict=True)]
            conv = Tensor.conv(
                xt,
                wide,
                bt,
                i64(a["group"]),
                ints_vec(a["strides"]),
                ints_vec(grown),
                ints_vec(a["dilations"]),
                ints_vec(list(big)),
            )
            unions.append((root, conv))
    return unions


def _matmul_sums(s: Snapshot, shared: int):
    """(add class, other operand classes, shared operand class) for every Add of two rank-2
    MatMuls of one type that share operand ``shared`` (0: left, 1: right) and whose other
    operands have one type (so their sum does not broadcast)."""
    for c, add in s.ops("Add"):
        p, q = add.inputs
        if p == q or s.tensor_type(p) is None or s.tensor_type(p) != s.tensor_type(q):
            continue
        for m1 in _ops_in(s, p, "MatMul"):
            for m2 in _ops_in(s, q, "MatMul"):
                if m1.inputs[shared] != m2.inputs[shared]:
                    continue
                a, b = m1.inputs[1 - shared], m2.inputs[1 - shared]
                ta, tw = s.tensor_type(a), s.tensor_type(m1.inputs[shared])
                if a == b or ta is None or ta != s.tensor_type(b) or ta.rank != 2:
                    continue
                if tw is None or tw.rank != 2:
                    continue
                yield c, a, b, m1.inputs[shared]
                break
            else:
                continue
            break


def _matmul_add(s: Snapshot, shared: int) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, a, b, w in _matmul_sums(s, shared):
        terms = _terms(s, c, a, b, w)
        if terms is None:
            continue
        root, ta, tb, tw = terms
        total = Tensor.add(ta, tb)
        unions.append((root, Tensor.matmul(total, tw) if shared else Tensor.matmul(tw, total)))
    return unions


def matmul_add_shared_rhs(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    return _matmul_add(s, 1)


def matmul_add_shared_lhs(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    return _matmul_add(s, 0)


MAX_CHAIN = 8  # factors of a matmul chain read through nested e-classes


def _factors(s: Snapshot, c: str, left: int) -> list[str]:
    """The classes whose product class ``c`` is, read through one rank-2 MatMul e-node of each
    class (any one: every bracketing of the same factors is given the same form), at most
    ``left`` of them."""
    if left > 1:
        for v in _ops_in(s, c, "MatMul"):
            a, b = v.inputs
            if all(getattr(s.tensor_type(k), "rank", 0) == 2 for k in (a, b)):
                head = _factors(s, a, left - 1)
                return head + _factors(s, b, left - len(head))
    return [c]


def matmul_associative_2d(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    """Each product of three or more rank-2 factors, united with its right-nested form
    ``f1 (f2 (.. fn))``: two bracketings of the same factors meet there in one pass."""
    unions = []
    for c, _ in s.ops("MatMul"):
        if getattr(s.tensor_type(c), "rank", 0) != 2:
            continue
        factors = _factors(s, c, MAX_CHAIN)
        if len(factors) < 3:
            continue
        terms = _terms(s, c, *factors)
        if terms is None:
            continue
        root, *ts = terms
        nested = ts[-1]
        for t in reversed(ts[:-1]):
            nested = Tensor.matmul(t, nested)
        unions.append((root, nested))
    return unions


# the linear ops a 0-d factor moves through, and which of their inputs it may scale
SCALED_INPUTS = {"MatMul": (0, 1), "Conv": (0, 1), "AveragePool": (0,), "Transpose": (0,)}
SCALAR_DEPTH = 4  # ops a factor is pushed through in one pass (concat(x, conv(x, w)) * s: 2)


def _scaled(s: Snapshot, mul: View):
    """(scaled class, 0-d factor class) of a Mul e-node by a 0-d float of its own dtype."""
    for y, k in (mul.inputs, mul.inputs[::-1]):
        tk, ty = s.tensor_type(k), s.tensor_type(y)
        if tk is None or ty is None or tk.rank != 0 or tk.dtype != ty.dtype or y == k:
            continue
        if ty.dtype in FLOATS:
            yield y, k


def scalar_mul_through_linear(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    """Pushed in from ``op(..) * s``; and pulled out of ``op(.., x * s, ..)`` (the other
    direction: ``conv(x * s, w)`` and ``conv(x, w * s)`` then meet at ``conv(x, w) * s``)."""
    unions: list[tuple[Tensor, Tensor]] = []
    for c, mul in s.ops("Mul"):
        for y, k in _scaled(s, mul):
            terms = _terms(s, c, k)
            if terms is not None:
                _push_scalar(s, y, terms[1], terms[0], SCALAR_DEPTH, unions)
    for op, inputs in SCALED_INPUTS.items():
        for c, v in s.ops(op):
            if op == "Conv" and v.inputs[2] is not None:
                continue
            for j in inputs:
                for mul in _ops_in(s, v.inputs[j], "Mul"):
                    for y, k in _scaled(s, mul):
                        terms = _terms(s, c, k, y, *v.inputs)
                        if terms is None:
                            continue
                        root, kt, yt, *args = terms
                        args[j] = yt
                        unions.append((root, Tensor.mul(_rebuild(v, args), kt)))
    return unions


def _push_scalar(s: Snapshot, y: str, kt: Tensor, root: Tensor, depth: int, unions) -> None:
    """Unions of ``root`` (the term ``y * k``) with ``k`` moved into each linear op of class
    ``y``, and on into the class it scaled (the new products are not in the snapshot)."""
    for _, v in s.nodes(y):
        if v.kind != "op" or (v.op not in SCALED_INPUTS and v.op != "Concat"):
            continue
        if v.op == "Conv" and v.inputs[2] is not None:
            continue  # the bias would need scaling too
        terms = _terms(s, *v.inputs)
        if terms is None:
            continue
        if v.op == "Concat":  # every part scaled
            parts = [Tensor.mul(t, kt) for t in terms]
            unions.append((root, Tensor.concat(Vec[Tensor](*parts), i64(v.values[0]))))
            scaled = list(zip(v.inputs, parts, strict=True))
        else:
            scaled = []
            for j in SCALED_INPUTS[v.op]:
                part = Tensor.mul(terms[j], kt)
                args = [part if i == j else t for i, t in enumerate(terms)]
                unions.append((root, _rebuild(v, args)))
                scaled.append((v.inputs[j], part))
        if depth > 1:
            for inner, part in scaled:
                _push_scalar(s, inner, kt, part, depth - 1, unions)


def _rebuild(v: View, args: list[Tensor]) -> Tensor:
    """``v``'s op with its attributes over new operands (``args`` in ``v.inputs`` order)."""
    if v.op == "MatMul":
        return Tensor.matmul(*args)
    prims = [prim(a.kind, val) for a, val in zip(v.spec.attrs, v.values, strict=True)]
    return getattr(Tensor, v.spec.ctor)(*args, *prims)


def pool_concat_distribute(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for op in ("MaxPool", "AveragePool"):
        for c, pool in s.ops(op):
            (x,) = pool.inputs[:1]
            tx = s.tensor_type(x)
            if tx is None or tx.rank < 3 or len(pool.inputs) != 1:
                continue
            for cat in _ops_in(s, x, "Concat"):
                if cat.values[0] % tx.rank not in (0, 1):
                    continue
                terms = _terms(s, c, *cat.inputs)
                if terms is None:
                    continue
                root, *parts = terms
                pooled = Vec[Tensor](*(_rebuild(pool, [t]) for t in parts))
                unions.append((root, Tensor.concat(pooled, i64(cat.values[0]))))
    return unions


def conv_concat_batch(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, conv in s.ops("Conv"):
        x, w, b = conv.inputs
        for cat in _ops_in(s, x, "Concat"):
            tx = s.tensor_type(x)
            if tx is None or cat.values[0] % tx.rank != 0:
                continue
            terms = _terms(s, c, w, b, *cat.inputs)
            if terms is None:
                continue
            root, wt, bt, *parts = terms
            convs = Vec[Tensor](*(conv_term(conv, t, wt, bt) for t in parts))
            unions.append((root, Tensor.concat(convs, i64(cat.values[0]))))
    return unions


MAX_ORIENTATIONS = 16  # operand orders tried per concatenation (a + b and b + a are both there)


def binary_concat_distribute(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, cat in s.ops("Concat"):
        for op in ("Add", "Mul"):
            choices = []  # per part: the operand pairs of its non-broadcasting ``op`` e-nodes
            for part in cat.inputs:
                t = s.tensor_type(part)
                views = _ops_in(s, part, op) if t is not None else []
                choices.append(
                    [v.inputs for v in views if all(s.tensor_type(k) == t for k in v.inputs)]
                )
            if not all(choices):
                continue
            f = Tensor.add if op == "Add" else Tensor.mul
            for pairs in itertools.islice(itertools.product(*choices), MAX_ORIENTATIONS):
                terms = _terms(s, c, *(k for pair in pairs for k in pair))
                if terms is None:
                    continue
                root, *ts = terms
                axis = i64(cat.values[0])
                left = Tensor.concat(Vec[Tensor](*ts[0::2]), axis)
                right = Tensor.concat(Vec[Tensor](*ts[1::2]), axis)
                unions.append((root, f(left, right)))
    return unions


def mul_ones_elim(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, mul in s.ops("Mul"):
        for x, k in (mul.inputs, mul.inputs[::-1]):
            tx = s.tensor_type(x)
            if tx is None or tx != s.tensor_type(c) or tx.dtype not in FLOATS:
                continue
            val = _literal(s, k)
            if val is None or val.dtype.kind != "f" or val.size == 0 or not np.all(val == 1):
                continue
            terms = _terms(s, c, x)
            if terms is not None:
                unions.append((terms[0], terms[1]))
                break
    return unions


def transpose_concat_distribute(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, tr in s.ops("Transpose"):
        (x,) = tr.inputs
        tx = s.tensor_type(x)
        perm = list(tr.values[0])
        if tx is None or sorted(perm) != list(range(tx.rank)):
            continue
        for cat in _ops_in(s, x, "Concat"):
            terms = _terms(s, c, *cat.inputs)
            if terms is None:
                continue
            root, *parts = terms
            moved = Vec[Tensor](*(Tensor.transpose(t, ints_vec(perm)) for t in parts))
            unions.append((root, Tensor.concat(moved, i64(perm.index(cat.values[0] % tx.rank)))))
    return unions
