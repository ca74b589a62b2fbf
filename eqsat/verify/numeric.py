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
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from eqsat.errors import InputError

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-5
DEFAULT_SEEDS = (0, 1, 2)
# the most bytes of random inputs one run of the gate makes: a model whose inputs declare more
# (dims of 2^40) is refused with a reason instead of failing to allocate them
MAX_FEED_BYTES = 4 << 30

ModelLike = onnx.ModelProto | str | os.PathLike


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


def load_session(model: ModelLike, threads: int = 1):
    """An onnxruntime session of ``model``; InputError (with ORT's reason) if ORT refuses it."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        if isinstance(model, onnx.ModelProto):
            return ort.InferenceSession(
                model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
            )
        return ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types
        first = str(e).strip().splitlines()[0][:240] if str(e).strip() else type(e).__name__
        raise InputError(f"onnxruntime cannot load the model: {first}") from e


def _run(session, feeds: dict) -> list:
    """``session.run`` with onnxruntime's own error log off: the caller reports a failure in
    one line (the log printed its own lines on stderr besides)."""
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4
    try:
        return session.run(None, feeds, quiet)
    except Exception as e:  # ORT raises its own exception types
        raise InputError(f"onnxruntime failed to run the model: {str(e).splitlines()[0]}") from e


def input_specs(model: ModelLike) -> list[InputSpec]:
    """The graph inputs a caller must feed (initializers listed as inputs excluded)."""
    m = (
        model
        if isinstance(model, onnx.ModelProto)
        else onnx.load(str(model), load_external_data=False)
    )
    inits = {t.name for t in m.graph.initializer}
    specs = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type") or not tt.elem_type:
            raise InputError(f"input {vi.name!r} has no tensor type")
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
    total = 0
    for s in specs:
        shape = tuple(d if isinstance(d, int) else dims.get(d, 2) for d in s.shape)
        dt = np.dtype(s.dtype)
        if any(d < 0 for d in shape):
            raise InputError(f"input {s.name!r} has a negative dim: {list(s.shape)}")
        total += int(np.prod(shape, dtype=object)) * dt.itemsize
        if total > MAX_FEED_BYTES:
            raise InputError(
                f"input {s.name!r} of shape {list(shape)} is too big for random inputs "
                f"(over {MAX_FEED_BYTES >> 30} GiB in all)"
            )
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
    specs_a, specs_b = input_specs(reference), input_specs(candidate)
    if [(s.name, s.dtype) for s in specs_a] != [(s.name, s.dtype) for s in specs_b]:
        raise InputError(
            "the models have different inputs: "
            f"{[(s.name, s.dtype) for s in specs_a]} vs {[(s.name, s.dtype) for s in specs_b]}"
        )
    sb = load_session(candidate)
    names_b = [o.name for o in sb.get_outputs()]

    return compare_with(
        reference,
        lambda feeds: _run(sb, feeds),
        names_b,
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
    specs_a = input_specs(reference)
    sa = load_session(reference)
    names_a = [o.name for o in sa.get_outputs()]
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
        out_a = _run(sa, feeds)
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
