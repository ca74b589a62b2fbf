"""Fusion as terms: what eqsat's compiler will fuse, written into the e-graph so that extraction
picks algebra, merges and fusion jointly (issue 19, item 2: a first increment, epilogues only).

Consumes a :class:`~eqsat.egraph.classes.Snapshot`; produces unions as one
:class:`~eqsat.rules.base.PyRule` (``fuse-epilogue``), for the compiled targets only (the
pipeline adds the family to ``eqsat compile`` under the compiler cost model, unless
``--no-fusion-terms``; ``eqsat optimize`` never runs it,
and the decoder unfolds the terms anyway, so an ONNX model never holds one).

The terms (:mod:`eqsat.egraph.lang`): ``lane(x, k)`` is ``x`` read by kernel ``k`` (the id of
the e-class the kernel stores), which keeps what it computes from ``x`` in registers, and
``kernel(e)`` is ``e`` stored by one kernel. A kernel root
(an op whose :attr:`Kind.starts_kernel`: MatMul, Gemm, Conv, pools, Softmax, norms) with its
first input read through a lane, and element-wise ops over it, is the kernel's epilogue::

    relu(conv(x, w, b) + r)  =  kernel(relu(conv(lane(x, k), w, b) + r))

Why a lane and not a marker on the class: an e-class holds every equivalent e-node, so "this
Relu's operand is a Conv" is not a fact about a class (the compiler cost model used to price an
activation as fused when its operand's class held *any* Conv, even where extraction chose a
Slice of a merged Conv; issue 19 saw SqueezeNet with the ``linear`` rules reported at 3772 and
priced at 3789: with fusion terms extraction's cost is the extracted graph's, a test checks it).
``conv(lane(x, k), w, b)`` is a class of its own that no rule unions with the stored
``conv(x, w, b)``: choosing ``kernel(..)`` chooses that very root, and its epilogue, as one
node each, so the cost model prices what lowering will run, with no look at the neighbours:

- the root in the lane is priced as the kernel it is (the same price as unfused);
- an element-wise e-node over a lane (an *epilogue* e-node) pays its arithmetic only;
- an element-wise e-node outside any lane (the compiler cost model's ``fusion_terms``) is a
  memory pass of its own: it is not fused, lowering stores it (flaw (c) made visible);
- ``lane`` and ``kernel`` cost nothing.

So a stored root used by a fused kernel *and* by another consumer is two e-nodes, two kernels,
priced twice: the decoder writes two nodes, as lowering then runs them (it would otherwise have
to store the root and recompute or materialize its epilogue). The lane's kernel id does the
same between two fused kernels: each epilogue prefix that is stored (a residual Add read by the
next RMSNorm's Pow and by its Mul) is a kernel of its own with its own root in its own lane, so
extraction cannot price one root with several stored epilogues, a kernel lowering cannot make
(:mod:`eqsat.lower.fuse` stores one value per kernel). Without the id the three kernels shared
one root e-node and the decoder wrote three groups for one MatMul. And a merge that cuts an
epilogue off its GEMM (after the Split of a merged MatMul, the activations no longer have a root
to fuse into) now pays for the passes it adds: BERT's Q/K/V merge is declined (16 MatMuls kept,
each with its bias Add in its store), while on SwiGLU the model still takes the gate/up merge
(the wider GEMM's measured rate outweighs the passes of SiLU and the product).

What the rule makes, per e-class: one lane term, extended greedily along element-wise e-nodes
(deterministic: classes in graph order, the first e-node that fits). An element-wise e-node
joins the epilogue of the root of one of its inputs' lanes when its type is the root's type (the
epilogue runs at the root's store index: it may broadcast its other operands, not the root) and
each other input is either in the same root's lane (SiLU's ``g * sigmoid(g)``) or a stored value
that does not depend on the root (a bias, a residual). These are :mod:`eqsat.lower.fuse`'s
conditions, so where extraction takes ``kernel(..)`` lowering can follow it: the decoder
(:func:`eqsat.extract.decode.decode`) unfolds ``lane``/``kernel`` into the plain ops and records
each chosen kernel as a group in ``GraphMeta.fusion``, which ``fuse.plan`` follows.

Its proof is by unfolding: ``lane`` and ``kernel`` mean their operand, so both sides are the
same composition of ops; the ledger entry checks it on witnesses with the Z3 semantics
(:mod:`eqsat.verify.pyrules`), like every Python-driven rule.

Layout, next (not built; it needs the direct NCHWc convolution being written in lowering):
a layout is a property of a *stored* value, so it is a term over stored values, not a lane.
Two op records, ``ToBlocked(x, c)`` (NCHW -> NCHW[c]c) and ``ToPlain(y)``, injective
transforms whose semantics are index maps (so each is priced as the memory pass it is, and
``ToPlain(ToBlocked(x)) = x`` is proved by unfolding), and a ``ConvNCHWc`` record derived from
Conv's (its semantics is ``ToBlocked(conv(ToPlain(x), w, b))``, its shape rule Conv's with the
channel axis split, its cost the NCHWc curve). Rules: ``conv(x, w, b) = ToPlain(ConvNCHWc(
ToBlocked(x), w, b))`` and ``ToBlocked(ToPlain(y)) = y``, so a chain of convs can stay blocked
and pay one transform in and one out; an element-wise op is layout-agnostic (same index on
every operand), so it commutes with the transforms (a per-channel operand blocked too, a
weight-only term) and the epilogue rule here applies unchanged to a ``ConvNCHWc`` root. The
kernel id of the lane keeps that choice local as well: a blocked and a plain kernel of one
value are two kernels, priced as two.
"""

from __future__ import annotations

from dataclasses import dataclass

from egglog import String, Vec

from eqsat.egraph.classes import Snapshot, View
from eqsat.egraph.encode import prim
from eqsat.egraph.lang import Tensor, ctor
from eqsat.egraph.opdefs.base import Kind
from eqsat.egraph.ops import OPS
from eqsat.rules.base import PyRule

FAMILY = "fusion"
PROOF = "bounded"  # the ledger's evidence: witnesses, Z3 (eqsat.verify.pyrules)
TERM_DEPTH = 8  # a folded weight (BatchNorm into a conv) is five ops deep: as linear.py


def rules() -> list[PyRule]:
    return [
        PyRule(
            "fuse-epilogue",
            FAMILY,
            "e(root(x, ..), y..) => kernel(e(root(lane(x, k), ..), y..)) if type(e) = type(root)",
            fuse_epilogue,
            PROOF,
            True,
            doc="an element-wise chain over a kernel root is that root's epilogue: one kernel "
            "(lane and kernel mean their operand)",
            makes=frozenset({"lane", "kernel"}),
        )
    ]


def _kind(v: View) -> Kind | None:
    return OPS[v.op].kind if v.kind == "op" and v.spec is not None else None


def _build(v: View, kids: list) -> Tensor:
    attrs = [prim(a.kind, x) for a, x in zip(v.spec.attrs, v.values, strict=True)]
    args = [Vec[Tensor](*kids)] if v.spec.inputs == "*" else kids
    return ctor(v.spec.ctor)(*args, *attrs)


@dataclass(frozen=True)
class _Lane:
    """How to write a class in a kernel's lane: ``view`` over ``kids`` (per input: a stored
    class's term, or a :class:`_Lane` of the same root); ``is_root``: the kernel root, whose
    input 0 is read through the lane."""

    view: View
    kids: tuple
    is_root: bool = False

    def term(self, kernel: str) -> Tensor:
        """The term in the lane of kernel ``kernel`` (each kernel its own: two kernels never
        share a root e-node, see the module docstring)."""
        kids = [k.term(kernel) if isinstance(k, _Lane) else k for k in self.kids]
        if self.is_root:
            kids[0] = Tensor.lane(kids[0], String(kernel))
        return _build(self.view, kids)


def fuse_epilogue(s: Snapshot) -> list[tuple[Tensor, Tensor]]:
    classes = sorted({s.eg.nodes[n].eclass for n in s.views}, key=s.order)
    lanes: dict[str, tuple[_Lane, str]] = {}  # class -> (how to write it in a lane, root class)
    for c in classes:  # roots: the first kernel root of each class, its input 0 in a lane
        if c in s.constant or s.tensor_type(c) is None:
            continue
        for _, v in s.nodes(c):
            k = _kind(v)
            if k is None or not k.starts_kernel or v.spec.inputs == "*" or not v.inputs:
                continue
            if v.inputs[0] is None or v.inputs[0] in s.constant:
                continue
            kids = [s.term(i, TERM_DEPTH) if i is not None else Tensor.none() for i in v.inputs]
            if all(t is not None for t in kids):
                lanes[c] = (_Lane(v, tuple(kids), True), c)
                break
    unions = []
    changed = True
    while changed:  # epilogues: extend lanes along element-wise e-nodes, to a fixpoint
        changed = False
        for c in classes:
            if c in lanes or c in s.constant or s.tensor_type(c) is None:
                continue
            for _, v in s.nodes(c):
                lane = _epilogue(s, c, v, lanes)
                if lane is None:
                    continue
                mine = s.term(c, TERM_DEPTH)
                if mine is not None:
                    lanes[c] = lane
                    unions.append((mine, Tensor.kernel(lane[0].term(c))))
                    changed = True
                break
    return unions


def _epilogue(s: Snapshot, c: str, v: View, lanes) -> tuple[_Lane, str] | None:
    """``v`` (an e-node of class ``c``) in the lane of the root of one of its inputs, or None
    where lowering could not fuse it there (see the module docstring)."""
    if _kind(v) is not Kind.ELEMENTWISE or v.spec.inputs == "*":
        return None
    roots = [lanes[i][1] for i in v.inputs if i is not None and i in lanes]
    if not roots:
        return None
    root = roots[0]
    if s.tensor_type(c) != s.tensor_type(root):
        return None  # the epilogue would broadcast the root out
    kids: list = []
    for i in v.inputs:
        if i is None:
            kids.append(Tensor.none())
        elif i in lanes and lanes[i][1] == root:
            kids.append(lanes[i][0])
        elif s.reaches([i], {root}):
            return None  # depends on the root, stored after the kernel: cannot be read in it
        else:
            t = s.term(i, TERM_DEPTH)
            if t is None:
                return None
            kids.append(t)
    return _Lane(v, tuple(kids)), root
