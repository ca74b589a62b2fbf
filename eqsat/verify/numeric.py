"""Numerical equivalence of two ONNX models in onnxruntime: the verification gate and
``eqsat verify``.

Consumes two ModelProtos (or paths); produces a :class:`Verdict`. Both models run in ORT on the
same random inputs for several seeds; symbolic dims are bound to a fixed size (2 by default, not
1, so that a rewrite which mixes up a batch dim shows). An output passes when
``max|a - b| <= atol + rtol * max|a|`` — the error is judged against the output's scale, because
float32 reassociation makes element-wise relative error meaningless near zero — and NaN/Inf
appear at the same places. Element-wise relative error and ULP distances are reported beside it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from eqsat.egraph import onnx_files, onnx_io
from eqsat.errors import InputError

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-5
DEFAULT_SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class LoadedModel:
    """A model already read (``onnx_io.load_model``'s skeleton), where its external weights'
    bytes lie (``base_dir``), and arrays already mapped for some of them (by name), which are
    used instead of mapping the files again."""

    model: onnx.ModelProto
    base_dir: Path | None = None
    weights: Mapping[str, np.ndarray] | None = None


ModelLike = onnx.ModelProto | str | os.PathLike | LoadedModel


def _loaded(model: ModelLike) -> LoadedModel:
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, onnx.ModelProto):
        return LoadedModel(model)
    return LoadedModel(onnx_io.load_model(model), Path(model).parent)


@dataclass(frozen=True)
class InputSpec:
    name: str
    dtype: str
    shape: tuple


@dataclass
class OutputDiff:
    name: str
    shape: tuple
    max_abs: float
    max_rel: float  # element-wise, where |reference| > atol
    scale: float  # max |reference|
    max_ulp: int
    median_ulp: float
    ok: bool


@dataclass
class Verdict:
    ok: bool
    rtol: float
    atol: float
    seeds: tuple[int, ...]
    dim_values: dict[str, int]
    outputs: list[OutputDiff] = field(default_factory=list)
    distribution: str = "float: normal(0, 1); int: uniform[0, 2); bool: uniform"
    reason: str = ""

    @property
    def max_abs(self) -> float:
        return max((o.max_abs for o in self.outputs), default=0.0)

    def to_json(self) -> dict:
        return asdict(self) | {"max_abs": self.max_abs}


def threads() -> int:
    """The cores this process may use (onnxruntime's default counts the machine's)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Session:
    """A model in onnxruntime, built once. Initializers whose bytes are outside the proto (the
    large weights of a model read by ``onnx_io.load_model``, or external data) become graph
    inputs fed with memory-mapped arrays on every run: onnxruntime uses the arrays in place, so
    the weights are neither copied into the session nor pre-packed (for the gate, which runs a
    few inputs, packing costs more than it saves), and two sessions of the same weights share
    them. ``run(feeds)`` takes the model's own inputs only."""

    def __init__(self, model: ModelLike, n_threads: int | None = None):
        import onnxruntime as ort

        m = _loaded(model)
        self.specs = input_specs(m)
        data, self.weights = _with_weights_as_inputs(m)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = n_threads or threads()
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.add_session_config_entry("session.disable_prepacking", "1")
        # idle pool threads sleep instead of spinning: the gate alternates two sessions, and a
        # spinning pool of one takes the cores from the other (and from a loaded machine)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types
            first = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
            raise InputError(f"onnxruntime cannot load the model: {first}") from e
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(None, {**feeds, **self.weights})
        except Exception as e:
            raise InputError(
                f"onnxruntime failed to run the model: {str(e).splitlines()[0]}"
            ) from e


def _with_weights_as_inputs(m: LoadedModel) -> tuple[bytes, dict[str, np.ndarray]]:
    """The model's bytes for onnxruntime, with its external initializers turned into inputs,
    and the arrays to feed them."""
    ext = [t for t in m.model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if not ext:
        return m.model.SerializeToString(), {}
    given = m.weights or {}
    mapped = onnx_files.external_weights(
        _only(m.model, [t for t in ext if t.name not in given]), m.base_dir
    )
    feeds = {t.name: given[t.name] if t.name in given else mapped[t.name] for t in ext}
    out = onnx.ModelProto()
    out.CopyFrom(m.model)
    inputs = {i.name for i in out.graph.input}
    keep = [t for t in out.graph.initializer if t.name not in feeds]
    for t in ext:
        if t.name not in inputs:
            out.graph.input.append(
                onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
            )
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    return out.SerializeToString(), feeds


def _only(model: onnx.ModelProto, tensors: list) -> onnx.ModelProto:
    """A model whose initializers are ``tensors`` (for reading just those)."""
    out = onnx.ModelProto()
    out.graph.initializer.extend(tensors)
    return out


def input_specs(model: ModelLike) -> list[InputSpec]:
    """The graph inputs a caller must feed (initializers listed as inputs excluded)."""
    m = model.model if isinstance(model, LoadedModel) else model
    if not isinstance(m, onnx.ModelProto):
        m = onnx_io.load_model(m)
    inits = {t.name for t in m.graph.initializer}
    specs = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)).name
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{vi.name}_d{k}")
            for k, d in enumerate(tt.shape.dim)
        )
        specs.append(InputSpec(vi.name, dtype, dims))
    return specs


def random_feeds(
    specs: list[InputSpec], seed: int, dim_values: dict[str, int] | None = None
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    dims = dim_values or {}
    feeds = {}
    for s in specs:
        shape = tuple(d if isinstance(d, int) else dims.get(d, 2) for d in s.shape)
        dt = np.dtype(s.dtype)
        if dt.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[s.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[s.name] = rng.integers(0, 2, shape).astype(dt)
    return feeds


def _ulp(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """ULP distance between float arrays of the same float dtype (monotone integer mapping)."""
    if a.dtype.kind != "f" or a.dtype.itemsize not in (2, 4, 8):
        return np.zeros(a.shape, dtype=np.int64)
    it = {2: np.int16, 4: np.int32, 8: np.int64}[a.dtype.itemsize]
    big = np.iinfo(it).min

    def key(x):
        i = x.view(it).astype(np.int64)
        return np.where(i < 0, np.int64(big) - i, i)

    return np.abs(key(a) - key(b))


def compare_arrays(name: str, ref: np.ndarray, got: np.ndarray, rtol: float, atol: float):
    ref, got = np.asarray(ref), np.asarray(got)
    if ref.shape != got.shape or ref.dtype != got.dtype:
        return OutputDiff(name, tuple(got.shape), float("inf"), float("inf"), 0, 0, 0, False)
    if ref.dtype.kind not in "fc":
        equal = bool(np.array_equal(ref, got))
        return OutputDiff(name, ref.shape, 0.0 if equal else float("inf"), 0.0, 0, 0, 0, equal)
    inf_a, inf_b = np.isinf(ref), np.isinf(got)
    same_special = (
        np.array_equal(np.isnan(ref), np.isnan(got))
        and np.array_equal(inf_a, inf_b)
        and np.array_equal(ref[inf_a], got[inf_b])
    )
    finite = np.isfinite(ref) & np.isfinite(got)
    r = ref[finite].astype(np.float64)
    g = got[finite].astype(np.float64)
    err = np.abs(r - g)
    max_abs = float(err.max()) if err.size else 0.0
    scale = float(np.abs(r).max()) if r.size else 0.0
    big = np.abs(r) > atol
    max_rel = float((err[big] / np.abs(r[big])).max()) if big.any() else 0.0
    ulps = _ulp(ref[finite], got[finite])
    ok = same_special and max_abs <= atol + rtol * scale
    return OutputDiff(
        name,
        tuple(ref.shape),
        max_abs,
        max_rel,
        scale,
        int(ulps.max()) if ulps.size else 0,
        float(np.median(ulps)) if ulps.size else 0.0,
        ok,
    )


def compare_models(
    reference: ModelLike,
    candidate: ModelLike,
    *,
    seeds: tuple[int, ...] = DEFAULT_SEEDS,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    dim_values: dict[str, int] | None = None,
) -> Verdict:
    """Run both models on the same random inputs; InputError if their interfaces differ."""
    sb = Session(candidate)
    specs_a, specs_b = input_specs(reference), sb.specs
    if [(s.name, s.dtype) for s in specs_a] != [(s.name, s.dtype) for s in specs_b]:
        raise InputError(
            "the models have different inputs: "
            f"{[(s.name, s.dtype) for s in specs_a]} vs {[(s.name, s.dtype) for s in specs_b]}"
        )
    return compare_with(
        reference,
        sb.run,
        sb.output_names,
        seeds=seeds,
        rtol=rtol,
        atol=atol,
        dim_values=dim_values,
    )


def compare_with(
    reference: ModelLike,
    run,
    output_names: list[str],
    *,
    seeds: tuple[int, ...] = DEFAULT_SEEDS,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    dim_values: dict[str, int] | None = None,
) -> Verdict:
    """The reference model in onnxruntime against ``run(feeds) -> outputs`` (in the order of
    ``output_names``: another session, or a compiled model) on the same random inputs."""
    sa = Session(reference)
    specs_a, names_a = sa.specs, sa.output_names
    names_b = list(output_names)
    dims = dict(dim_values or {})
    for s in specs_a:
        for d in s.shape:
            if isinstance(d, str):
                dims.setdefault(d, 2)
    verdict = Verdict(True, rtol, atol, tuple(seeds), dims)
    if names_a != names_b:
        verdict.ok = False
        verdict.reason = f"different outputs: {names_a} vs {names_b}"
        return verdict
    worst: dict[str, OutputDiff] = {}
    for seed in seeds:
        feeds = random_feeds(specs_a, seed, dims)
        out_a = sa.run(feeds)
        out_b = run(feeds)
        for name, a, b in zip(names_a, out_a, out_b, strict=True):
            d = compare_arrays(name, a, b, rtol, atol)
            w = worst.get(name)
            if w is None or (not d.ok and w.ok) or d.max_abs > w.max_abs:
                worst[name] = d
    verdict.outputs = [worst[n] for n in names_a]
    verdict.ok = all(o.ok for o in verdict.outputs)
    if not verdict.ok:
        bad = [o.name for o in verdict.outputs if not o.ok]
        verdict.reason = f"outputs differ beyond tolerance: {', '.join(bad)}"
    return verdict
