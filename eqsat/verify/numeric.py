"""Numerical equivalence of two ONNX models in onnxruntime: the verification gate and
``eqsat verify``.

Consumes two ModelProtos (or paths); produces a :class:`Verdict`. Both models run in ORT on the
same random inputs for several seeds. Symbolic dims (a stored ``dim_value`` of -1 or 0 counts as
one) get sizes the *original* model runs with (:func:`size_candidates`): the sizes a caller
fixed (``--input-shape``, ``--shape``), else the first assignment onnxruntime accepts among the
model's own hints (metadata such as ``imgsz: [640, 640]``), 2 everywhere (not 1, so that a rewrite
which mixes up a batch dim shows), then growing spatial sizes that divide by the usual strides
(64, 320, 640: a reflect-Pad needs more samples than 2, a detector sizes divisible by 32). If the
original runs at none of them, the error names the input and the flag to pass. An output passes when
``max|a - b| <= atol + rtol * max|a|`` — the error is judged against the output's scale, because
float32 reassociation makes element-wise relative error meaningless near zero — and NaN/Inf
appear at the same places. Element-wise relative error and ULP distances are reported beside it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx

from eqsat.egraph.onnx_types import value_type
from eqsat.errors import InputError

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-5
DEFAULT_SEEDS = (0, 1, 2)

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


def _session(model: ModelLike, threads: int = 1):
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


def _load(model: ModelLike) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(str(model), load_external_data=False)


def input_specs(model: ModelLike) -> list[InputSpec]:
    """The graph inputs a caller must feed (initializers listed as inputs excluded). Dims are
    read as onnxruntime reads them: an unnamed or negative dim is the symbol ``<input>_d<k>``
    (the importer's name for it), a stored 0 is 0."""
    m = _load(model)
    inits = {t.name for t in m.graph.initializer}
    specs = []
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        t = value_type(vi, "input", fresh_dims=True, keep_zero=True)
        if t is None:
            raise InputError(f"input {vi.name!r} has no tensor type or rank")
        specs.append(InputSpec(vi.name, t.dtype, t.shape))
    return specs


InputShapes = dict[str, tuple[int, ...]]


def bind_input_shapes(specs: list[InputSpec], shapes: InputShapes) -> dict[str, int]:
    """The symbol sizes that ``--input-shape name=d0,d1,...`` implies; InputError when a name
    is no input, the rank differs, a fixed dim disagrees or one symbol gets two sizes."""
    by_name = {s.name: s for s in specs}
    dims: dict[str, int] = {}
    for name, shape in shapes.items():
        s = by_name.get(name)
        if s is None:
            known = ", ".join(by_name) or "none"
            raise InputError(f"--input-shape {name}: the model has no input {name!r} ({known})")
        if len(shape) != len(s.shape):
            raise InputError(
                f"--input-shape {name}: {len(shape)} dims given, the input has {len(s.shape)} "
                f"({_spelled(s.shape)})"
            )
        for k, (d, n) in enumerate(zip(s.shape, shape, strict=True)):
            if isinstance(d, int) and d != n:
                raise InputError(f"--input-shape {name}: dim {k} is {d} in the model, not {n}")
            if isinstance(d, str) and dims.setdefault(d, n) != n:
                raise InputError(f"--input-shape {name}: dim {d!r} is given both {dims[d]} and {n}")
    return dims


def _spelled(shape) -> str:
    return ",".join(str(d) for d in shape)


# sizes tried for symbolic dims, in order: the first dim of an input (a batch) and the others
_TRIED = ((2, 2), (2, 64), (1, 320), (1, 640))


def size_candidates(model: onnx.ModelProto, specs: list[InputSpec], fixed: dict[str, int]):
    """Assignments of sizes to the symbolic dims not in ``fixed``, most likely first: the
    model's metadata hints, then :data:`_TRIED`. Empty when nothing is symbolic."""
    free = [d for s in specs for d in s.shape if isinstance(d, str) and d not in fixed]
    if not free:
        return [dict(fixed)]
    leading = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], str)}
    out = []
    for hint in _metadata_hints(model, specs, fixed):
        out.append({**{d: 2 for d in free}, **hint, **fixed})
    for batch, size in _TRIED:
        out.append({**{d: batch if d in leading else size for d in free}, **fixed})
    unique = []
    for c in out:
        if c not in unique:
            unique.append(c)
    return unique


def _metadata_hints(model: onnx.ModelProto, specs: list[InputSpec], fixed: dict[str, int]):
    """Sizes a model's metadata states: a list of ints as long as an input's trailing symbolic
    dims (ultralytics writes ``imgsz: [640, 640]``), or one int under a key naming a dim."""
    import ast

    hints = []
    for p in model.metadata_props:
        try:
            v = ast.literal_eval(p.value.strip())
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            continue
        if isinstance(v, int) and v > 0:
            dims = {d for s in specs for d in s.shape if isinstance(d, str)}
            if p.key in dims and p.key not in fixed:
                hints.append({p.key: v})
            continue
        if not (isinstance(v, list | tuple) and v and all(isinstance(x, int) and x > 0 for x in v)):
            continue
        for s in specs:
            tail = [d for d in s.shape[len(s.shape) - len(v) :] if isinstance(d, str)]
            if len(s.shape) >= len(v) and len(tail) == len(v):
                hints.append(dict(zip(tail, v, strict=True)))
    merged: dict[str, int] = {}
    for h in hints:
        merged.update({k: n for k, n in h.items() if k not in merged})
    return [merged] if merged else []


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
    input_shapes: InputShapes | None = None,
) -> Verdict:
    """Run both models on the same random inputs; InputError if their interfaces differ.
    ``dim_values`` fixes symbols (``--shape batch=8``), ``input_shapes`` whole inputs
    (``--input-shape x=1,3,64,64``); the other symbolic dims get sizes the reference runs at."""
    specs_a, specs_b = input_specs(reference), input_specs(candidate)
    if [(s.name, s.dtype) for s in specs_a] != [(s.name, s.dtype) for s in specs_b]:
        raise InputError(
            "the models have different inputs: "
            f"{[(s.name, s.dtype) for s in specs_a]} vs {[(s.name, s.dtype) for s in specs_b]}"
        )
    sb = _session(candidate)
    names_b = [o.name for o in sb.get_outputs()]

    def run(feeds):
        try:
            return sb.run(None, feeds)
        except Exception as e:
            raise InputError(
                f"onnxruntime failed to run the model: {str(e).splitlines()[0]}"
            ) from e

    return compare_with(
        reference,
        run,
        names_b,
        seeds=seeds,
        rtol=rtol,
        atol=atol,
        dim_values=dim_values,
        input_shapes=input_shapes,
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
    input_shapes: InputShapes | None = None,
) -> Verdict:
    """The reference model in onnxruntime against ``run(feeds) -> outputs`` (in the order of
    ``output_names``: another session, or a compiled model) on the same random inputs."""
    ref = _load(reference)
    specs_a = input_specs(ref)
    sa = _session(reference)
    names_a = [o.name for o in sa.get_outputs()]
    names_b = list(output_names)
    fixed = dict(dim_values or {}) | bind_input_shapes(specs_a, dict(input_shapes or {}))
    verdict = Verdict(True, rtol, atol, tuple(seeds), fixed)
    if names_a != names_b:
        verdict.ok = False
        verdict.reason = f"different outputs: {names_a} vs {names_b}"
        return verdict
    dims, first = _sizes_it_runs_at(sa, ref, specs_a, fixed, seeds[0] if seeds else 0)
    verdict.dim_values = dims
    worst: dict[str, OutputDiff] = {}
    for seed in seeds:
        feeds = random_feeds(specs_a, seed, dims)
        if first is not None and first[0] == seed:
            out_a = first[1]
        else:
            try:
                out_a = sa.run(None, feeds)
            except Exception as e:
                raise InputError(
                    f"onnxruntime failed to run the model: {str(e).splitlines()[0]}"
                ) from e
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


def _sizes_it_runs_at(session, model, specs, fixed, seed):
    """(symbol sizes, (seed, reference outputs)) for the first of :func:`size_candidates` the
    reference runs at (its outputs are kept: the first seed's run is not repeated). InputError
    naming the input and ``--input-shape`` when it runs at none."""
    import onnxruntime as ort

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # a refused size is reported below, not logged by ORT
    candidates = size_candidates(model, specs, fixed)
    errors = []
    for dims in candidates:
        try:
            return dims, (seed, session.run(None, random_feeds(specs, seed, dims), quiet))
        except Exception as e:
            errors.append(ort_error(e))
    free = [s for s in specs if any(isinstance(d, str) and d not in fixed for d in s.shape)]
    if not free:
        raise InputError(f"onnxruntime failed to run the model: {errors[0]}")
    s = free[0]
    tried = " or ".join(
        ",".join(str(c.get(d, d)) if isinstance(d, str) else str(d) for d in s.shape)
        for c in candidates
    )
    spelled = ",".join(f"<{d}>" if isinstance(d, str) else str(d) for d in s.shape)
    raise InputError(
        f"onnxruntime cannot run the original model with input {s.name!r} of shape "
        f"{tried} ({errors[-1]}); pass the shape it runs with: "
        f"--input-shape {s.name}={spelled}"
    )


def ort_error(e: BaseException) -> str:
    """onnxruntime's error in one short line: the node and the explanation, without the source
    location and the failed C++ condition it prints before them."""
    import re

    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    m = re.match(
        r"Non-zero status code returned while running (\S+) node\. Name:'([^']*)' "
        r"Status Message: (.*)",
        text,
    )
    if m:
        op, name, msg = m.groups()
        msg = msg.split(" was false. ")[-1]
        text = f"{op} node {name!r}: {msg}" if name else f"{op} node: {msg}"
    return text[:240]
