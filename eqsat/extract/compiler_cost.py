"""Compiler cost model: an e-node priced as eqsat's own compiler (``--target llvm``) runs it.

Consumes what every cost model gets (op, attributes, input and output TensorTypes); produces
estimated microseconds of the code :mod:`eqsat.lower` and the LLVM backend generate on this
machine. Where :class:`~eqsat.extract.roofline.RooflineCostModel` prices the kernels
onnxruntime runs (one per node, plus onnxruntime's own fusions), this one follows lowering's
fusion (:mod:`eqsat.lower.fuse`), stated by the op record's :class:`~eqsat.egraph.opdefs.base.Kind`
through the predicate fusion uses (:attr:`Kind.starts_kernel`), not a second list of ops:

- a **kernel root** (``Kind.starts_kernel``: REDUCTION and COMPLEX ops) is a kernel:
  ``overhead + max(flops / rate, bytes / bandwidth)``, where ``rate`` is the GFLOP/s the
  backend reaches for a contraction of that size (MatMul/Gemm: the ``linalg`` curve;
  Conv, grouped or not: the ``conv`` curve; interpolated in log FLOPs between measured shapes)
  and the element-wise rate for the others (reductions, softmax, norms, pools, whose memory
  term then decides);
- an **element-wise** op is fused: into its producer's epilogue, or inlined into its consumer,
  so it pays only its arithmetic at the element-wise rate (no kernel, no memory traffic). Where
  lowering must materialize one (read at several sites) the model underprices it: the model
  sees one node, not its uses (a known limit, shared with TVM's per-op cost models);
- with ``fusion_terms`` (the e-graph holds :mod:`eqsat.rules.fusion`'s terms, so the model
  no longer has to guess): an element-wise op in a kernel's epilogue pays its arithmetic
  (:meth:`CompilerCostModel.epilogue_cost`, asked by extraction for e-nodes over a lane), one
  outside any epilogue that lowering inlines into its readers pays its arithmetic too
  (:meth:`CompilerCostModel.inlined_cost`), and one that lowering must store whatever the plan
  (a graph output, or read only by MatMuls and Convs: :func:`eqsat.extract.extraction.
  must_store`) is a kernel of its own, a memory pass (overhead, bytes at the bandwidth). A
  value read at two sites is stored too, which depends on the plan: priced inlined, it is
  underpriced (extraction's tie-break then prefers the fused kernel);
- a **view** (INJECTIVE: Transpose, Reshape, Slice, Concat, ...) is index arithmetic: free.

The constants are measured by :func:`calibrate` through the compile path itself (a few GEMM
and Conv shapes, a large Add, a chain of tiny Softmax kernels, a chain of Tanh; one thread),
given the timer by the caller (:func:`eqsat.pipeline.calibrate_compiler`: this layer cannot
import the backends), and kept in JSON: a committed default (``compiler_default.json``,
measured on the development machine, its ``machine`` field says where) and a per-machine file
in the user cache, keyed by the backend's ``Capabilities.key()``, that takes precedence.

The tuning log (``eqsat tune``): a kernel root's price is the auto-scheduler's best measured
time on this machine where the log has the kernel lowering makes of that node alone (its
signature, :mod:`eqsat.autoschedule.signature`), else the model's. The lookup is given by the
caller (:func:`eqsat.pipeline.tuned_lookup`: it lowers a one-node graph, which this layer
cannot), and cached there per node configuration and per kernel signature. A kernel tuned with
its epilogue fused (a bias Add in the MatMul's store) has another signature than its root alone,
so the log prices the roots that were tuned bare (or by ``eqsat tune`` on a model where they
are); the epilogue is priced by the model as before.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eqsat.egraph.ir import TensorGraph, TensorType
from eqsat.egraph.opdefs.base import Kind
from eqsat.egraph.ops import OPS, node_bytes, node_flops
from eqsat.errors import missing_data_file
from eqsat.extract.cost import CostModelBase, op_flops
from eqsat.paths import user_cache_dir

DEFAULT_FILE = Path(__file__).with_name("compiler_default.json")
CONTRACTIONS = ("linalg", "conv")  # the op categories priced by a measured GFLOP/s curve


def cache_file(caps_key: str) -> Path:
    """This machine's constants (:func:`calibrate`), keyed by the backend's capabilities."""
    return user_cache_dir() / f"compiler-cost-{caps_key[:16]}.json"


@dataclass(frozen=True)
class CompilerConstants:
    overhead_us: float  # per kernel of the generated code (a Softmax chain, per link)
    bandwidth_gbs: float  # a large element-wise Add, one kernel
    elementwise_gflops: float  # arithmetic of an inlined element-wise op (a Tanh chain)
    # category -> [[flops, GFLOP/s], ...] sorted by flops, from compiled GEMM / Conv shapes
    curves: Mapping[str, list[list[float]]] = field(default_factory=dict)
    machine: str = ""

    @staticmethod
    def load(path: Path | None = None, caps_key: str | None = None) -> CompilerConstants:
        """``path``, else this machine's cache file (``caps_key``), else the default."""
        candidates = [path] if path else [cache_file(caps_key) if caps_key else None, DEFAULT_FILE]
        for p in candidates:
            if p is not None and p.is_file():
                return CompilerConstants(**json.loads(p.read_text()))
        raise missing_data_file(path or DEFAULT_FILE, "the compiler cost constants")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    def gflops(self, category: str, flops: float) -> float:
        """The rate of a contraction of ``flops`` (log-linear between measured points, flat
        beyond them)."""
        pts = self.curves.get(category) or self.curves.get("linalg")
        if not pts or flops <= 0:
            return self.elementwise_gflops
        xs = [math.log(p[0]) for p in pts]
        return float(np.interp(math.log(flops), xs, [p[1] for p in pts]))


# ``tuned(op, attrs, ins, outs, weight)``: the microseconds the tuning log holds for the kernel
# lowering makes of this node alone (``weight``: per input, whether it is a constant, which
# lowering packs once), or None where it has none
TunedLookup = Callable[
    [str, Mapping, Sequence[TensorType | None], Sequence[TensorType], Sequence[bool]],
    float | None,
]


class CompilerCostModel(CostModelBase):
    """Estimated microseconds of one node in eqsat's compiled code (see the module doc)."""

    name = "compiler"

    def __init__(
        self,
        constants: CompilerConstants | None = None,
        fusion_terms: bool = False,
        tuned: TunedLookup | None = None,
    ):
        self.c = constants or CompilerConstants.load()
        # the e-graph holds fusion terms (eqsat.rules.fusion): an element-wise op is fused only
        # where extraction chooses its epilogue term (epilogue_cost), else it is a pass of its own
        self.fusion_terms = fusion_terms
        self.tuned = tuned
        self.needs_values = tuned is not None  # the lookup needs which inputs are weights

    def arithmetic(self, op, attrs, ins, outs) -> float:
        """An element-wise op's arithmetic at the inlined rate: no kernel, no memory traffic."""
        return op_flops(op, attrs, ins, outs) / (self.c.elementwise_gflops * 1e3)

    def epilogue_cost(self, op, attrs, ins, outs) -> float:
        """An element-wise e-node in a kernel's epilogue (over a lane): its arithmetic only."""
        return self.arithmetic(op, attrs, ins, outs)

    def inlined_cost(self, op, attrs, ins, outs) -> float:
        """An element-wise e-node lowering inlines into its readers: its arithmetic only, as in
        an epilogue (the value is computed where it is read, never stored)."""
        return self.arithmetic(op, attrs, ins, outs)

    def node_cost(
        self,
        op: str,
        attrs: Mapping,
        ins: Sequence[TensorType | None],
        outs: Sequence[TensorType],
        consts: Sequence | None = None,
    ) -> float:
        record = OPS.get(op)
        kind = record.kind if record is not None else Kind.COMPLEX  # opaque: a kernel of its own
        if kind is Kind.INJECTIVE or kind is Kind.SOURCE:
            return 0.0  # index arithmetic in its consumer
        if self.tuned is not None and record is not None and kind.starts_kernel:
            weight = [c is not None for c in consts] if consts else [False] * len(ins)
            logged = self.tuned(op, attrs, ins, outs, weight)
            if logged is not None:
                return logged
        if not kind.starts_kernel and not self.fusion_terms:  # element-wise: fused, arithmetic
            return self.arithmetic(op, attrs, ins, outs)
        flops = op_flops(op, attrs, ins, outs)
        category = record.category if record is not None else ""
        rate = (
            self.c.gflops(category, flops)
            if category in CONTRACTIONS
            else self.c.elementwise_gflops
        )
        compute_us = flops / (rate * 1e3)
        memory_us = node_bytes(ins, outs) / (self.c.bandwidth_gbs * 1e3)
        return self.c.overhead_us + max(compute_us, memory_us)


# ------------------------------------------------------------------------------ calibration

# (M, K, N) of the MatMuls and (C_in, HW, C_out, kernel, group) of the Convs timed
GEMM_SHAPES = ((32, 64, 64), (64, 128, 128), (128, 256, 256), (256, 512, 512), (512, 768, 768))
CONV_SHAPES = ((16, 28, 16, 3, 1), (64, 28, 64, 3, 1), (64, 56, 64, 3, 1), (128, 28, 128, 3, 4))


def calibration_graphs() -> dict[str, tuple[TensorGraph, float]]:
    """The graphs :func:`calibrate` times, each with the quantity its time divides (FLOPs,
    bytes, or kernels): built through the ONNX importer, as a user's model would be."""
    from onnx import TensorProto, helper, numpy_helper

    from eqsat.egraph.onnx_io import import_onnx

    rng = np.random.default_rng(0)

    def graph(nodes, inputs, output, out_shape, weights=()):
        g = helper.make_graph(
            nodes,
            "calib",
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
            [helper.make_tensor_value_info(output, TensorProto.FLOAT, out_shape)],
            initializer=[
                numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
                for n, s in weights
            ],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return import_onnx(m)

    out: dict[str, tuple[TensorGraph, float]] = {}
    for m, k, n in GEMM_SHAPES:
        g = graph([helper.make_node("MatMul", ["x", "w"], ["y"])], [("x", [m, k])], "y",
                  [m, n], [("w", [k, n])])  # fmt: skip
        out[f"linalg {m}x{k}x{n}"] = (g, 2.0 * m * k * n)
    for c, hw, co, r, grp in CONV_SHAPES:
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[r // 2] * 4, group=grp)
        g = graph([node], [("x", [1, c, hw, hw])], "y", [1, co, hw, hw],
                  [("w", [co, c // grp, r, r])])  # fmt: skip
        out[f"conv {c}x{hw}x{co}/{grp}"] = (g, 2.0 * co * hw * hw * (c // grp) * r * r)
    n = 1 << 22
    g = graph([helper.make_node("Add", ["a", "b"], ["y"])], [("a", [n]), ("b", [n])], "y", [n])
    out["bandwidth"] = (g, 3.0 * n * 4)
    for links in (1, 33):  # per-kernel overhead: the difference over 32 tiny kernels
        nodes = [helper.make_node("Softmax", [f"v{i}"], [f"v{i + 1}"]) for i in range(links)]
        out[f"softmax{links}"] = (graph(nodes, [("v0", [1, 4])], f"v{links}", [1, 4]), links)
    e = 1 << 14  # in cache: the inlined arithmetic, not memory
    for links in (1, 17):
        nodes = [helper.make_node("Tanh", [f"v{i}"], [f"v{i + 1}"]) for i in range(links)]
        out[f"tanh{links}"] = (graph(nodes, [("v0", [e])], f"v{links}", [e]), links)
    return out


def calibrate(
    time_graph: Callable[[TensorGraph], float], machine: str, save_to: Path | None = None
) -> CompilerConstants:
    """Measure the constants: ``time_graph(graph)`` is the minimum seconds of one run of the
    graph compiled by eqsat (one thread). Saved to ``save_to`` when given."""
    graphs = calibration_graphs()
    secs = {name: time_graph(g) for name, (g, _) in graphs.items()}
    overhead = max((secs["softmax33"] - secs["softmax1"]) / 32, 1e-9)
    # a one-kernel graph's time is the call's own cost (binding buffers, the Python around the
    # kernels: paid once per model, not per e-node) plus one kernel: a tiny Softmax measures both
    base = secs["softmax1"]
    bandwidth = graphs["bandwidth"][1] / max(secs["bandwidth"] - base, 1e-9) / 1e9
    g1 = graphs["tanh1"][0]
    tanh_flops = node_flops(g1.nodes[0], [g1.types["v0"]], [g1.types["v1"]])
    ew = 16 * tanh_flops / max(secs["tanh17"] - secs["tanh1"], 1e-9) / 1e9
    curves: dict[str, list[list[float]]] = {c: [] for c in CONTRACTIONS}
    for name, (_, flops) in graphs.items():
        cat = name.split()[0]
        if cat in curves:
            rate = flops / max(secs[name] - base, 1e-9) / 1e9
            curves[cat].append([flops, round(rate, 2)])
    consts = CompilerConstants(
        overhead_us=round(overhead * 1e6, 3),
        bandwidth_gbs=round(bandwidth, 2),
        elementwise_gflops=round(ew, 2),
        curves={c: sorted(p) for c, p in curves.items()},
        machine=machine,
    )
    if save_to is not None:
        consts.save(save_to)
    return consts
