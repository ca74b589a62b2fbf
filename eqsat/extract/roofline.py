"""Roofline cost model for the CPU eqsat runs on, with measured constants.

Consumes an op, its attributes and its input/output TensorTypes; produces an estimated run
time in microseconds:

    cost = overhead + max(flops / peak[category], bytes / bandwidth)

``peak`` is measured per op category (a GEMM reaches a different fraction of the machine's
peak than a depthwise conv or an element-wise op), ``bandwidth`` with a large element-wise Add,
``overhead`` (the per-kernel launch cost in onnxruntime) with a chain of tiny ops. The constants
are measured by :func:`calibrate` (a few seconds of onnxruntime micro-benchmarks, one intra-op
thread) and kept in JSON: a committed default (``roofline_default.json``, measured on the
development machine) and a per-machine file in the user cache written by ``calibrate`` that takes
precedence. Nothing numeric is hard-coded here.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from eqsat.egraph.ir import TensorType
from eqsat.egraph.ops import OPS, node_bytes
from eqsat.errors import missing_data_file
from eqsat.extract.cost import CostModelBase, op_flops
from eqsat.paths import user_cache_dir, write_atomic

DEFAULT_FILE = Path(__file__).with_name("roofline_default.json")
# Ops that read only the part of their data input they copy out: charging them the whole input
# would price slicing one gate out of a merged matmul's result like copying all of it.
PARTIAL_READS = frozenset({"Slice", "Split", "Gather"})


def cache_file() -> Path:
    """This machine's calibrated constants in the user's cache folder (``eqsat calibrate``)."""
    return user_cache_dir() / f"roofline-{platform.node() or 'host'}-{platform.machine()}.json"


@dataclass(frozen=True)
class RooflineConstants:
    overhead_us: float
    bandwidth_gbs: float
    peak_gflops: Mapping[str, float] = field(default_factory=dict)  # per op category
    machine: str = ""
    ort_version: str = ""

    @staticmethod
    def load(path: Path | None = None) -> RooflineConstants:
        """The calibrated constants: ``path``, else this machine's cache file, else the default."""
        for p in [path] if path else [cache_file(), DEFAULT_FILE]:
            if p is not None and p.is_file():
                data = json.loads(p.read_text())
                return RooflineConstants(**data)
        raise missing_data_file(path or DEFAULT_FILE, "the roofline constants")

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")


class RooflineCostModel(CostModelBase):
    """Estimated microseconds of one kernel under the roofline of this machine."""

    name = "roofline"
    runtime_fusions = True  # onnxruntime's: see eqsat.extract.extraction.FUSED_AFTER_CONV

    def __init__(self, constants: RooflineConstants | None = None):
        self.c = constants or RooflineConstants.load()

    def node_cost(
        self,
        op: str,
        attrs: Mapping,
        ins: Sequence[TensorType | None],
        outs: Sequence[TensorType],
    ) -> float:
        flops = op_flops(op, attrs, ins, outs)
        moved = node_bytes(ins, outs)
        if op in PARTIAL_READS:  # reads only what it writes (plus small index inputs)
            moved = 2 * sum(t.nbytes() for t in outs)
        category = OPS[op].category if op in OPS else "data"
        peak = self.c.peak_gflops.get(category) or self.c.peak_gflops.get("elementwise", 1.0)
        compute_us = flops / (peak * 1e3)
        memory_us = moved / (self.c.bandwidth_gbs * 1e3)
        return self.c.overhead_us + max(compute_us, memory_us)


# ------------------------------------------------------------------------------ calibration


def _time_model(model, feeds, reps: int = 15) -> float:
    """Minimum seconds per run over interleaving-free repetitions (one intra-op thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # No graph rewrites: ORT would otherwise collapse the chain of tiny ops that measures the
    # per-kernel overhead (Relu(Relu(x)) -> Relu(x)).
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    s.run(None, feeds)
    t0 = time.perf_counter()
    s.run(None, feeds)
    inner = max(1, int(0.01 / max(time.perf_counter() - t0, 1e-7)))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            s.run(None, feeds)
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def _one_node(op, in_shapes, out_shape, attrs=None, n_chain=1, weights=()):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), f"w{i}")
        for i, s in enumerate(weights)
    ]
    nodes, prev = [], "x0"
    for k in range(n_chain):
        ins = [prev] + [f"x{j}" for j in range(1, len(in_shapes))] + [t.name for t in inits]
        nodes.append(helper.make_node(op, ins, [f"y{k}"], **(attrs or {})))
        prev = f"y{k}"
    g = helper.make_graph(
        nodes,
        "calib",
        [
            helper.make_tensor_value_info(f"x{j}", TensorProto.FLOAT, s)
            for j, s in enumerate(in_shapes)
        ],
        [helper.make_tensor_value_info(prev, TensorProto.FLOAT, out_shape)],
        initializer=inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    feeds = {f"x{j}": rng.standard_normal(s).astype(np.float32) for j, s in enumerate(in_shapes)}
    return m, feeds


def calibrate(save_to: Path | None = None) -> RooflineConstants:
    """Measure the constants on this machine with onnxruntime (~5 s) and save them."""
    import onnxruntime as ort

    chain = 64
    m, f = _one_node("Relu", [[1, 1]], [1, 1], n_chain=chain)
    overhead_us = _time_model(m, f) / chain * 1e6

    n = 1 << 23
    m, f = _one_node("Add", [[n], [n]], [n])
    bandwidth = 3 * n * 4 / (_time_model(m, f, reps=7) - overhead_us * 1e-6) / 1e9

    def gflops(model_feeds, flops):
        model, feeds = model_feeds
        return flops / max(_time_model(model, feeds, reps=7) - overhead_us * 1e-6, 1e-9) / 1e9

    k = 512
    peak = {
        "linalg": gflops(_one_node("MatMul", [[k, k]], [k, k], weights=[[k, k]]), 2 * k**3),
        "conv": gflops(
            _one_node(
                "Conv",
                [[1, 64, 56, 56]],
                [1, 64, 56, 56],
                {"pads": [1, 1, 1, 1]},
                weights=[[64, 64, 3, 3]],
            ),
            2 * 64 * 56 * 56 * 64 * 9,
        ),
    }
    # Element-wise, activation, normalization, pooling, reduction and data movement are
    # bandwidth-bound at realistic sizes: their "peak" is one flop per byte-equivalent of the
    # measured bandwidth, so the memory term decides.
    for cat in ("elementwise", "activation", "norm", "pool", "reduce", "shape", "data"):
        peak[cat] = bandwidth
    consts = RooflineConstants(
        overhead_us=round(overhead_us, 3),
        bandwidth_gbs=round(bandwidth, 2),
        peak_gflops={k: round(v, 2) for k, v in peak.items()},
        machine=f"{platform.node()} {platform.machine()} {platform.processor()}".strip(),
        ort_version=ort.__version__,
    )
    consts.save(save_to or cache_file())
    return consts
