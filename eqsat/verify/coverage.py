"""The op coverage matrix: for every op of the table, which facet each stage has for it.

Consumes the op table (:data:`eqsat.egraph.ops.OPS`) and the per-stage tables keyed by its
records; produces :func:`matrix` (op -> facet -> a short description, ``""`` where the op has no
such facet) and :func:`gaps` (the facets a stage needs and does not have). ``eqsat ops`` prints
the matrix; a test fails on any gap, so an op added without a facet its stages need fails
loudly instead of being silently skipped (a rule nobody can prove, a typed constructor whose
new terms get no shape).

Where each facet lives (one place each):

- ``attrs``, ``infer``, ``run``, ``flops``, ``kind``, ``cost`` (the roofline cost class), the
  egglog constructor's name: the op's record (:class:`eqsat.egraph.opdefs.base.OpDef`);
- the constructor's slots, attribute kinds and canonical forms: derived in
  :data:`eqsat.egraph.lang.SPECS` from the record and the ``Tensor`` declaration;
- the egglog shape rules: :func:`eqsat.egraph.shapes.shape_rules` (read back by
  :func:`eqsat.egraph.shapes.shaped_ctors`), with :data:`UNSHAPED` the typed ops that have none
  and why that is safe;
- Z3 semantics: :mod:`eqsat.verify.z3_ops` (interpreted element-wise ops in ``POINTWISE``,
  uninterpreted and structural ops derived from the kinds, the rest written out there);
- discovery: :func:`eqsat.rules.discover.exprs.as_op` maps each discovery op onto the table;
- lowering: the compiler's compute definitions, :data:`eqsat.lower.compute.COMPUTE` (the
  column says which family: element-wise, view, gemm, conv, pool, reduction, softmax, norm).
  Lowering must cover every op of the bundled example models and of the Tensat paper's
  architectures (:data:`LOWERING_REQUIRED`), and every op it claims must have an entry.

This module sits in ``verify/`` because it reads every stage, and only ``verify/``, the
pipeline and the CLI may.
"""

from __future__ import annotations

import re
from functools import cache

from eqsat.egraph.lang import SPECS
from eqsat.egraph.opdefs.base import CATEGORIES, Kind, zero_flops
from eqsat.egraph.ops import OPS
from eqsat.egraph.shapes import shaped_ctors
from eqsat.extract.extraction import FUSED_AFTER_CONV
from eqsat.lower import compute
from eqsat.verify import z3_ops

FACETS = (
    "kind",
    "attrs",
    "infer",
    "run",
    "flops",
    "cost",
    "egglog",
    "egglog-shape",
    "z3",
    "discovery",
    "lowering",
)
# Typed constructors without an egglog shape rule, and why no rule needs one: the analysis seeds
# every imported value with the importer's type, so only terms that rewrites *create* need a
# rule, and only where a guard reads their shape.
UNSHAPED = {
    "batch_norm": "only ever folded away (rules match it, none creates one)",
    "flatten": "no rule creates or guards on one",
    "gemm": "created only by Python-driven folds into an e-class the importer typed",
    "global_average_pool": "no rule creates or guards on one",
}
# Z3 semantics written out in z3_ops beyond the derived ones (contractions, windows, BatchNorm).
_Z3_EXPLICIT = ("MatMul", "Gemm", "Conv", "BatchNormalization", "MaxPool", "AveragePool")
# The data ops of the Tensat paper's architectures (BERT, NasRNN, ResNeXt-50, NasNet-A,
# Inception-v3, SqueezeNet, VGG-19) as exported to ONNX, beyond the bundled examples' ops.
TENSAT_OPS = frozenset(
    {
        "Add", "AveragePool", "BatchNormalization", "Concat", "Conv", "Div", "Dropout", "Erf",
        "Flatten", "Gemm", "GlobalAveragePool", "LayerNormalization", "MatMul", "MaxPool",
        "Mul", "Pad", "Relu", "Reshape", "Sigmoid", "Softmax", "Split", "Sqrt", "Sub", "Tanh",
        "Transpose",
    }
)  # fmt: skip
# Which compute families fit which kinds (a view must be INJECTIVE, and so on).
_FAMILY_KINDS = {
    "element-wise": {Kind.ELEMENTWISE},
    "view": {Kind.INJECTIVE},
    "fill": {Kind.SOURCE},  # ConstantOfShape, Range: SOURCE ops whose values are data
}


def z3_semantics(op: str) -> str:
    """How :mod:`eqsat.verify.z3_ops` interprets ``op`` ("" when it has no semantics)."""
    if op in z3_ops.POINTWISE:
        return "interpreted"
    if op in z3_ops.UNINTERPRETED:
        return "uninterpreted"
    if op in z3_ops.STRUCTURAL:
        return "index map"
    return "written out" if op in _Z3_EXPLICIT else ""


@cache
def _discovery() -> dict[str, list[str]]:
    """Table op -> the discovery ops that stand for it."""
    from eqsat.rules.discover import exprs

    out: dict[str, list[str]] = {}
    for op in exprs.OPS:  # a split's bounds need a typing; the op it stands for does not
        name = "Slice" if op in exprs.SPLITS else exprs.as_op(op, (op,), {}, None)[0]
        out.setdefault(name, []).append(op)
    return out


@cache
def _peaks() -> frozenset[str]:
    from eqsat.extract.roofline import DEFAULT_FILE, RooflineConstants

    return frozenset(RooflineConstants.load(DEFAULT_FILE).peak_gflops)


@cache
def matrix() -> dict[str, dict[str, str]]:
    """op -> facet -> what the op has there ("" where nothing)."""
    shaped = shaped_ctors()
    disc = _discovery()
    out: dict[str, dict[str, str]] = {}
    for name, d in OPS.items():
        spec = SPECS.get(name)
        row = {
            "kind": d.kind.value if d.kind else "",
            "attrs": str(len(d.attrs)),
            "infer": "yes" if callable(d.infer) else "",
            "run": "yes" if callable(d.run) else "",
            "flops": "0" if d.flops is zero_flops else "yes",
            "cost": d.category if d.category in _peaks() else "",
            "egglog": f"Tensor.{spec.ctor}" if spec else "generic",
            "egglog-shape": (
                ("rule" if spec.ctor in shaped else "none: " + UNSHAPED.get(spec.ctor, ""))
                if spec
                else "-"
            ),
            "z3": z3_semantics(name),
            "discovery": ",".join(disc.get(name, [])),
            "lowering": compute.describe(name),
        }
        out[name] = row
    return out


_CTOR = re.compile(r"Tensor\.([a-z_0-9]+)\(")
_LEAVES = {"input", "weight", "ints", "scalar", "none", "node", "output"}


def gaps(rule_texts: list[str] | None = None) -> list[str]:
    """Every facet a stage needs and the op lacks, one line each (empty: complete):

    - every op: shape inference, numpy semantics, a FLOP count, a kind, a cost class the
      default roofline constants price;
    - every typed op: an egglog shape rule, or an entry in :data:`UNSHAPED` saying why none;
    - every op that a rule's printed side mentions (``rule_texts``; all rule families by
      default): Z3 semantics, or the rule cannot be proved;
    - every op the extractor treats as fused into a Conv by onnxruntime: an element-wise op;
    - every discovery op: a typed op of the table it stands for."""
    out = []
    rows = matrix()
    for name, row in rows.items():
        d = OPS[name]
        for facet in ("infer", "run", "kind", "cost"):
            if not row[facet]:
                out.append(f"{name}: no {facet}")
        if d.category not in CATEGORIES:
            out.append(f"{name}: unknown category {d.category}")
        if row["egglog-shape"] == "none: ":
            out.append(f"{name}: Tensor.{d.ctor} has no egglog shape rule and no UNSHAPED reason")
    for ctor in sorted(set(UNSHAPED) - {s.ctor for s in SPECS.values()}):
        out.append(f"UNSHAPED names {ctor}, which is not a typed constructor")
    by_ctor = {s.ctor: s.op for s in SPECS.values()}
    texts = rule_texts if rule_texts is not None else _rule_texts()
    used = {c for t in texts for c in _CTOR.findall(t)} - _LEAVES
    for ctor in sorted(used):
        op = by_ctor.get(ctor)
        if op is None:
            out.append(f"a rule uses Tensor.{ctor}, which no op of the table has")
        elif not rows[op]["z3"]:
            out.append(f"{op}: a rule uses Tensor.{ctor} but it has no Z3 semantics")
    for op in FUSED_AFTER_CONV:  # onnxruntime's ConvActivationFusion: a fact about onnxruntime
        if op not in OPS or OPS[op].kind is not Kind.ELEMENTWISE:
            out.append(f"FUSED_AFTER_CONV names {op}, which is no element-wise op of the table")
    for op, disc in _discovery().items():
        if op not in SPECS:
            out.append(f"discovery ops {disc} stand for {op}, which has no typed constructor")
    out += lowering_gaps()
    return out


@cache
def example_ops() -> frozenset[str]:
    """The ops lowering meets in the bundled example models (small size, constants folded)."""
    from eqsat.egraph.onnx_io import import_onnx
    from eqsat.egraph.passes import fold_constants
    from eqsat.examples import build_example, example_names

    ops: set[str] = set()
    for name in example_names():
        g = fold_constants(import_onnx(build_example(name, size="small")))
        ops.update(n.op for n in g.nodes if OPS.get(n.op) and OPS[n.op].kind is not Kind.SOURCE)
    return frozenset(ops)


def lowering_required() -> frozenset[str]:
    """Ops lowering must have: the example models' and the Tensat architectures'."""
    return example_ops() | TENSAT_OPS


def lowering_gaps() -> list[str]:
    """Lowering's gaps: a claimed op without a compute definition, a required op not claimed,
    a compute definition for an op outside the table or of a family its kind does not fit."""
    out = []
    table = compute.COMPUTE
    for op in sorted(compute.CLAIMED - set(table)):
        out.append(f"{op}: claimed by lowering but has no compute definition")
    for op in sorted(lowering_required() - set(table)):
        out.append(f"{op}: used by the example models but has no compute definition (lowering)")
    for op, c in sorted(table.items()):
        if op not in OPS:
            out.append(f"lowering defines {op}, which is no op of the table")
            continue
        fam = c.what.split(" ")[0]
        kinds = _FAMILY_KINDS.get(fam, {Kind.REDUCTION, Kind.COMPLEX})
        if OPS[op].kind not in kinds:
            out.append(
                f"{op}: a {c.what} compute definition for an op of kind {OPS[op].kind.value}"
            )
    return out


def _rule_texts() -> list[str]:
    from eqsat.rules.schedule import FAMILIES

    return [r.text() for fam in FAMILIES.values() for r in fam()]


def table_rows() -> list[list[str]]:
    """The matrix as rows (a header first) for printing."""
    rows = [["op", *FACETS]]
    for name, row in matrix().items():
        rows.append([name, *(row[f] for f in FACETS)])
    return rows
