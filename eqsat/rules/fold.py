"""Fusion and folding: constants that follow a kernel fold into its weights.

Consumes a :class:`~eqsat.egraph.classes.Snapshot` of the e-graph; produces unions as
:class:`~eqsat.rules.base.PyRule` s (Python-driven, because each one is guarded on types: a
per-channel constant, a rank, a dtype for the literal epsilon). The folded weights are
weight-only terms (``mul(w, reshape(f, [-1, 1, 1, 1]))``): extraction prices them at zero and
the fold pass after extraction computes them once at export.

- ``dropout-elim``: inference-mode ``Dropout(x)`` (one output, no training_mode input) is ``x``.
- ``fold-batchnorm-into-conv``: ``BN(conv(x, w, b))`` is ``conv(x, w * f, (b - mean) * f + beta)``
  with ``f = scale / sqrt(var + eps)`` per output channel (all BN inputs constant).
- ``fold-batchnorm-into-gemm``: the same for a BN over a Gemm's ``[N, C]`` result: the factor
  scales the columns of ``B`` and ``C`` becomes ``(beta_gemm * C - mean) * f + beta`` (beta 1).
- ``fold-mul-into-conv``: ``conv(x, w, b) * c`` is ``conv(x, w * c, b * c)`` for a constant ``c``
  that is per output channel (or a single value): broadcast against ``[N, C, ...]`` it varies
  along axis 1 at most and adds no axis.
- ``fold-add-into-conv``: ``conv(x, w, b) + c`` is ``conv(x, w, b + c)`` for such a ``c``.
- ``matmul-add-to-gemm``: ``matmul(a, w) + c`` with ``a`` of rank 2, ``w`` a constant matrix and
  ``c`` a constant that broadcasts to the result is ``Gemm(a, w, c)``.

All but ``dropout-elim`` round differently from the original (a product of constants is formed
before the data meets it): ``fp_exact=False``; the verification gate bounds the difference.
onnxruntime performs the batch-norm and Gemm fusions itself when it loads a model, so they make
the exported graph smaller rather than faster in ORT; they matter for the lowering backends.
"""

from __future__ import annotations

from egglog import String, f64, i64

from eqsat.egraph.classes import Snapshot, View
from eqsat.egraph.encode import ints_vec, prim
from eqsat.egraph.ir import TensorType
from eqsat.egraph.lang import Tensor
from eqsat.rules.base import PyRule

FAMILY = "fold"
# the claim for this module's rules; the evidence is eqsat/verify/ledger.json, written by
# `eqsat rules verify --write-ledger` (a fast test fails when it does not hold the rule as written)
PROOF = "bounded"
FLOATS = ("float16", "float32", "float64")


def rules() -> list[PyRule]:
    return [
        PyRule("dropout-elim", FAMILY, "dropout(x) => x", dropout_elim, proof=PROOF),
        PyRule(
            "fold-batchnorm-into-conv",
            FAMILY,
            "bn(conv(x, w, b), s, beta, m, v, eps) => "
            "conv(x, w * r(s / sqrt(v + eps)), (b - m) * s / sqrt(v + eps) + beta)",
            batchnorm_into_conv,
            fp_exact=False,
            proof=PROOF,
        ),
        PyRule(
            "fold-batchnorm-into-gemm",
            FAMILY,
            "bn(gemm(a, b, c), s, beta, m, v, eps) => gemm(a, b * f, (c - m) * f + beta)",
            batchnorm_into_gemm,
            fp_exact=False,
            proof=PROOF,
        ),
        PyRule(
            "fold-mul-into-conv",
            FAMILY,
            "conv(x, w, b) * c => conv(x, w * r(c), b * c) if c per-channel",
            mul_into_conv,
            fp_exact=False,
            proof=PROOF,
        ),
        PyRule(
            "fold-add-into-conv",
            FAMILY,
            "conv(x, w, b) + c => conv(x, w, b + c) if c per-channel",
            add_into_conv,
            fp_exact=False,
            proof=PROOF,
        ),
        PyRule(
            "matmul-add-to-gemm",
            FAMILY,
            "matmul(a, w) + c => gemm(a, w, c) if rank(a) = 2",
            matmul_add_to_gemm,
            fp_exact=False,
            proof=PROOF,
        ),
    ]


# ---------------------------------------------------------------------------- helpers


def _ints(values) -> Tensor:
    return Tensor.ints(ints_vec(list(values)))


def _reshape(x: Tensor, shape) -> Tensor:
    return Tensor.reshape(x, _ints(shape), i64(0))


def _conv(s: Snapshot, conv: View, x: Tensor, w: Tensor, b: Tensor) -> Tensor:
    assert conv.spec is not None
    attrs = [prim(a.kind, v) for a, v in zip(conv.spec.attrs, conv.values, strict=True)]
    return Tensor.conv(x, w, b, *attrs)


def _convs_in(s: Snapshot, c: str) -> list[View]:
    """Conv e-nodes of class ``c`` whose weight and bias are constant."""
    return [
        v
        for _, v in s.nodes(c)
        if v.kind == "op"
        and v.op == "Conv"
        and v.inputs[1] in s.constant
        and (v.inputs[2] is None or v.inputs[2] in s.constant)
    ]


def _per_channel(c: TensorType, out: TensorType) -> bool:
    """``c`` broadcast against ``out`` = [N, C, ...] varies along axis 1 at most, adds no axis
    and does not grow ``out``."""
    if c.rank > out.rank or not c.is_static:
        return False
    padded = (1,) * (out.rank - c.rank) + tuple(int(d) for d in c.shape)
    return all(d == 1 for k, d in enumerate(padded) if k != 1) and padded[1] in (1, out.shape[1])


def _terms(s: Snapshot, *classes: str | None) -> list[Tensor] | None:
    out = []
    for c in classes:
        t = Tensor.none() if c is None else s.term(c)
        if t is None:
            return None
        out.append(t)
    return out


# ---------------------------------------------------------------------------- the rules


def dropout_elim(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for nid, v in s.views.items():
        if v.kind != "generic" or v.op != "Dropout" or s.eg.nodes[nid].subsumed:
            continue
        node = s.enc.generic[v.name]
        outs = [o for o in node.outputs if o]
        if len(node.outputs) != 1 or len(outs) != 1 or v.implicit:
            continue
        if len(v.inputs) > 2 and v.inputs[2] is not None:
            continue  # training_mode given: it may be true at run time
        terms = _terms(s, s.eg.nodes[nid].eclass, v.inputs[0])
        if terms is not None:
            unions.append((terms[0], terms[1]))
    return unions


def _batchnorms(s: Snapshot):
    """(class, input class, dtype, terms of scale, beta, mean, var, the factor
    ``scale / sqrt(var + eps)``) of every BatchNormalization with constant rank-1 parameters."""
    for c, bn in s.ops("BatchNormalization"):
        y, scale, beta, mean, var = bn.inputs
        ty = s.tensor_type(y)
        params = (scale, beta, mean, var)
        if ty is None or ty.dtype not in FLOATS or any(p not in s.constant for p in params):
            continue
        if any((t := s.tensor_type(p)) is None or t.rank != 1 for p in params):
            continue
        terms = _terms(s, c, scale, beta, mean, var)
        if terms is None:
            continue
        root, ts, tbeta, tmean, tvar = terms
        eps = dict(zip((a.name for a in bn.spec.attrs), bn.values, strict=True))["epsilon"]
        eps_t = Tensor.scalar(f64(float(eps)), String(ty.dtype))
        f = Tensor.div(ts, Tensor.sqrt(Tensor.add(tvar, eps_t)))
        yield c, root, y, ty, tbeta, tmean, f


def batchnorm_into_conv(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for _, root, y, _, tbeta, tmean, f in _batchnorms(s):
        for conv in _convs_in(s, y):
            x, w, b = conv.inputs
            tw = s.tensor_type(w)
            terms = _terms(s, x, w, b)
            if tw is None or terms is None:
                continue
            tx, tw_, tb = terms
            w2 = Tensor.mul(tw_, _reshape(f, [-1] + [1] * (tw.rank - 1)))
            shifted = Tensor.neg(tmean) if b is None else Tensor.sub(tb, tmean)
            b2 = Tensor.add(Tensor.mul(shifted, f), tbeta)
            unions.append((root, _conv(s, conv, tx, w2, b2)))
    return unions


def batchnorm_into_gemm(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for _, root, y, ty, tbeta, tmean, f in _batchnorms(s):
        if ty.rank != 2:
            continue
        for _, g in s.nodes(y):
            if g.kind != "op" or g.op != "Gemm":
                continue
            a, b, c = g.inputs
            alpha, beta, trans_a, trans_b = g.values
            if b not in s.constant or (c is not None and c not in s.constant):
                continue
            terms = _terms(s, a, b, c)
            if terms is None:
                continue
            ta, tb, tc = terms
            b2 = Tensor.mul(tb, _reshape(f, [-1, 1]) if trans_b else f)  # scale output columns
            if c is None:
                c2 = Tensor.sub(tbeta, Tensor.mul(tmean, f))
            else:
                scaled = Tensor.mul(tc, Tensor.scalar(f64(float(beta)), String(ty.dtype)))
                c2 = Tensor.add(Tensor.mul(Tensor.sub(scaled, tmean), f), tbeta)
            gemm = Tensor.gemm(ta, b2, c2, f64(float(alpha)), f64(1.0), i64(trans_a), i64(trans_b))
            unions.append((root, gemm))
    return unions


def _conv_and_constant(s: Snapshot, op: str):
    """(class, conv view, constant class, conv output type) for ``op(conv, c)`` / ``op(c, conv)``
    with a per-channel constant ``c`` of the conv's dtype."""
    for c, v in s.ops(op):
        for conv_side, k in ((v.inputs[0], v.inputs[1]), (v.inputs[1], v.inputs[0])):
            tk, tout = s.tensor_type(k), s.tensor_type(conv_side)
            if k not in s.constant or tk is None or tout is None or tk.dtype != tout.dtype:
                continue
            if tout.rank < 3 or not isinstance(tout.shape[1], int) or not _per_channel(tk, tout):
                continue
            for conv in _convs_in(s, conv_side):
                yield c, conv, k, tout


def mul_into_conv(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, conv, k, tout in _conv_and_constant(s, "Mul"):
        x, w, b = conv.inputs
        terms = _terms(s, c, x, w, b, k)
        if terms is None:
            continue
        root, tx, tw, tb, tk = terms
        w2 = Tensor.mul(tw, _reshape(tk, [-1] + [1] * (tout.rank - 1)))
        b2 = Tensor.none() if b is None else Tensor.mul(tb, _reshape(tk, [-1]))
        unions.append((root, _conv(s, conv, tx, w2, b2)))
    return unions


def add_into_conv(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, conv, k, tout in _conv_and_constant(s, "Add"):
        x, w, b = conv.inputs
        tk = s.tensor_type(k)
        channels = max((int(d) for d in tk.shape), default=1) if tk else 1
        if b is None and channels != tout.shape[1]:
            continue  # a single value cannot be a bias of C channels without an Expand
        terms = _terms(s, c, x, w, b, k)
        if terms is None:
            continue
        root, tx, tw, tb, tk_ = terms
        b2 = _reshape(tk_, [-1]) if b is None else Tensor.add(tb, _reshape(tk_, [-1]))
        unions.append((root, _conv(s, conv, tx, tw, b2)))
    return unions


def matmul_add_to_gemm(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    unions = []
    for c, add in s.ops("Add"):
        for mm_side, k in ((add.inputs[0], add.inputs[1]), (add.inputs[1], add.inputs[0])):
            tk, tout = s.tensor_type(k), s.tensor_type(mm_side)
            if k not in s.constant or tk is None or tout is None or tout.rank != 2:
                continue
            if tk.rank > 2 or tk.dtype != tout.dtype or tout.dtype not in FLOATS:
                continue
            tail = tout.shape[2 - tk.rank :]
            if not all(d == 1 or d == o for d, o in zip(tk.shape, tail, strict=True)):
                continue  # Gemm's C must broadcast to the result without growing it
            for _, mm in s.nodes(mm_side):
                if mm.kind != "op" or mm.op != "MatMul":
                    continue
                a, w = mm.inputs
                ta, tw = s.tensor_type(a), s.tensor_type(w)
                if ta is None or tw is None or ta.rank != 2 or tw.rank != 2:
                    continue
                terms = _terms(s, c, a, w, k)
                if terms is None:
                    continue
                root, t_a, t_w, t_k = terms
                gemm = Tensor.gemm(t_a, t_w, t_k, f64(1.0), f64(1.0), i64(0), i64(0))
                unions.append((root, gemm))
    return unions
