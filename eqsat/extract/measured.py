"""Measured cost model: every distinct kernel configuration timed once in onnxruntime.

Consumes what every cost model gets (op, attributes, input and output TensorTypes) plus the
values of constant inputs (:data:`NEEDS_VALUES`: a Slice's bounds or a Reshape's shape decide
what the kernel does); produces microseconds measured on this machine. Each configuration (op,
attributes, input dtypes, shapes, which inputs are constant and the values of small integer
constants) becomes a one-node ONNX model, timed in onnxruntime with one intra-op thread (the
median of :data:`REPS` repetitions, each long enough to be timed), minus the cost of calling
``run`` at all (measured once with an Identity of one element). Results go to a JSON cache keyed
by configuration, in a file per machine and onnxruntime version, so each configuration is timed
once per machine, across runs.

What it cannot see, and does instead:

- **Context.** A kernel alone is not a kernel in a graph: onnxruntime rewrites graphs (fusions,
  the blocked channel layout of convolutions), caches differ, and ``run`` has a fixed price. One
  node models are run at ORT_ENABLE_EXTENDED (fusions within the node, no layout transforms).
- **Symbolic dims** take :data:`SYMBOLIC_DIM` (a batch of 1).
- **Nodes it cannot build**: generic (opaque) nodes, integer inputs whose values are unknown
  (indices), outputs it cannot type, or an onnxruntime failure — those fall back to the
  roofline model, and the fallback is recorded so it is not retried.

Constant float inputs (weights, including weight-only subterms such as merged weights) are
initializers with random values, so that onnxruntime prepacks them as it would in the model.
"""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from eqsat.egraph.ir import AttrValue, TensorType
from eqsat.extract.cost import CostModelBase

NEEDS_VALUES = True
SYMBOLIC_DIM = 1
REPS = 7
MIN_REP_SECONDS = 2e-3  # each repetition runs the node this long at least
SMALL_INTS = 64  # integer constants up to this many values are part of the key
CONST = "const"  # the value of a constant input that is not known (a weight-only subterm)


def cache_file(threads: int = 1) -> Path:
    import onnxruntime as ort

    from eqsat.paths import user_cache_dir

    host = f"{platform.node() or 'host'}-{platform.machine()}"
    return user_cache_dir() / f"measured-{host}-ort{ort.__version__}-t{threads}.json"


class MeasuredCostModel(CostModelBase):
    """Microseconds per kernel, measured in onnxruntime on this machine (see the module doc)."""

    name = "measured"
    needs_values = NEEDS_VALUES
    runtime_fusions = True  # onnxruntime's: see eqsat.extract.extraction.FUSED_AFTER_CONV
    # relative error of one timing (medians of 7 on a shared 2-core machine): extraction takes a
    # rewritten e-node only when it is cheaper than the original by more than this. Measured:
    # SwiGLU's RMSNorm reassociated on a ~2 % timing difference broke an ORT fusion (0.98x).
    noise = 0.05

    def __init__(self, cache: Path | None = None, threads: int = 1, fallback=None):
        from eqsat.extract.roofline import RooflineCostModel

        self.threads = threads
        self.path = cache or cache_file(threads)
        self.fallback = fallback or RooflineCostModel()
        self.table: dict[str, float | None] = {}
        if self.path.is_file():
            try:
                self.table = json.loads(self.path.read_text())
            except (OSError, ValueError):
                self.table = {}  # a damaged cache is rebuilt, not trusted
        self.measured = 0  # configurations timed by this instance (not from the cache)
        self._base: float | None = None

    # ------------------------------------------------------------------ the protocol
    def node_cost(
        self,
        op: str,
        attrs: Mapping[str, AttrValue],
        ins: Sequence[TensorType | None],
        outs: Sequence[TensorType | None],
        consts: Sequence[object] | None = None,
    ) -> float:
        consts = list(consts) if consts is not None else [None] * len(ins)
        key = _key(op, attrs, ins, consts)
        if key not in self.table:
            self.table[key] = self._measure(op, attrs, ins, outs, consts)
            self.measured += 1
        us = self.table[key]
        return us if us is not None else self.fallback.node_cost(op, attrs, ins, outs)

    def save(self) -> None:
        """Write the cache (atomically); a read-only cache directory is not an error."""
        from eqsat.paths import write_atomic

        try:
            write_atomic(self.path, json.dumps(self.table, sort_keys=True))
        except OSError:
            pass

    # ------------------------------------------------------------------ measuring
    def _measure(self, op, attrs, ins, outs, consts) -> float | None:
        built = _one_node(op, attrs, ins, outs, consts)
        if built is None:
            return None
        try:
            seconds = _time(built, self.threads)
        except Exception:  # onnxruntime refused the node: the roofline prices it
            return None
        return max(seconds * 1e6 - self._call_overhead(), 0.0)

    def _call_overhead(self) -> float:
        """Microseconds of ``InferenceSession.run`` around a kernel that does nothing."""
        if self._base is None:
            one = TensorType("float32", (1,))
            built = _one_node("Identity", {}, [one], [one], [None])
            self._base = _time(built, self.threads) * 1e6 if built else 0.0
        return self._base


def _concrete(t: TensorType) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) else SYMBOLIC_DIM for d in t.shape)


def _key(op, attrs, ins, consts) -> str:
    parts = []
    for t, c in zip(ins, consts, strict=True):
        if t is None:
            parts.append("-")
            continue
        desc = f"{t.dtype}{list(_concrete(t))}"
        if c is not None:
            small = isinstance(c, np.ndarray) and c.dtype.kind in "iu" and c.size <= SMALL_INTS
            desc += "=" + (json.dumps(c.reshape(-1).tolist()) if small else "c")
        parts.append(desc)
    a = json.dumps({k: _plain(v) for k, v in sorted(attrs.items())}, sort_keys=True)
    return f"{op}|{a}|{';'.join(parts)}"


def _plain(v):
    if isinstance(v, bytes):
        return v.decode("latin-1")
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    return v if isinstance(v, int | float | str) or v is None else repr(v)


def _one_node(op, attrs, ins, outs, consts):
    """(model bytes, feeds) of a one-node model, or None where it cannot be built faithfully."""
    from onnx import helper, numpy_helper

    def onnx_dtype(name: str) -> int:
        return helper.np_dtype_to_tensor_dtype(np.dtype(name))

    rng = np.random.default_rng(0)
    inputs, inits, feeds, names = [], [], {}, []
    for k, (t, c) in enumerate(zip(ins, consts, strict=True)):
        if t is None:
            names.append("")
            continue
        name = f"i{k}"
        names.append(name)
        shape = _concrete(t)
        np_dtype = np.dtype(t.dtype) if t.dtype != "bool" else np.dtype(bool)
        if isinstance(c, np.ndarray):
            inits.append(numpy_helper.from_array(c.astype(np_dtype, copy=False), name))
        elif np_dtype.kind == "f":
            value = rng.standard_normal(shape).astype(np_dtype)
            if c is not None:  # constant of unknown value: an initializer, as in the model
                inits.append(numpy_helper.from_array(value, name))
            else:
                inputs.append(helper.make_tensor_value_info(name, onnx_dtype(t.dtype), shape))
                feeds[name] = value
        else:
            return None  # integer or boolean data we cannot invent (indices, masks)
    if any(t is None for t in outs):
        return None
    out_names = [f"o{k}" for k in range(len(outs))]
    node = helper.make_node(op, names, out_names, **{k: _attr(v) for k, v in attrs.items()})
    graph = helper.make_graph(
        [node],
        "measure",
        inputs,
        [
            helper.make_tensor_value_info(n, onnx_dtype(t.dtype), None)
            for n, t in zip(out_names, outs, strict=True)
        ],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString(), feeds


def _attr(v):
    return list(v) if isinstance(v, tuple) else v


def _time(built, threads: int) -> float:
    """Median seconds per run of a one-node model."""
    import onnxruntime as ort

    model, feeds = built
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    s.run(None, feeds)
    t0 = time.perf_counter()
    s.run(None, feeds)
    inner = max(1, int(MIN_REP_SECONDS / max(time.perf_counter() - t0, 1e-7)))
    reps = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        for _ in range(inner):
            s.run(None, feeds)
        reps.append((time.perf_counter() - t0) / inner)
    return statistics.median(reps)
