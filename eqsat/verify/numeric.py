"""Numerical equivalence of two ONNX models in onnxruntime: the verification gate and
``eqsat verify``.

Consumes two models (ModelProtos, paths or :class:`LoadedModel` instances); produces a
:class:`Verdict`. Both models run in ORT on the same random inputs for several seeds. Symbolic dims
(a stored ``dim_value`` of -1 or 0 counts as one) get sizes the *original* model runs with
(:func:`size_candidates`): the sizes a caller fixed (``--input-shape``, ``--shape``), else the first
assignment onnxruntime accepts among the model's own hints (metadata such as ``imgsz: [640, 640]``),
2 everywhere (not 1, so that a rewrite which mixes up a batch dim shows), then growing spatial sizes
that divide by the usual strides (64, 320, 640: a reflect-Pad needs more samples than 2, a detector
sizes divisible by 32). If the original runs at none of them, the error names the input and the flag
to pass. An output passes when ``max|a - b| <= atol + rtol * max|a|`` — the error is judged against
the output's scale, because float32 reassociation makes element-wise relative error meaningless near
zero — and NaN/Inf appear at the same places. Element-wise relative error and ULP distances are
reported beside it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnx

from eqsat.egraph import onnx_files, onnx_io
from eqsat.egraph.onnx_types import value_type
from eqsat.errors import InputError

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-5
DEFAULT_SEEDS = (0, 1, 2)
# the most bytes of random inputs one run of the gate makes: a model whose inputs declare more
# (dims of 2^40) is refused with a reason instead of failing to allocate them
MAX_FEED_BYTES = 4 << 30


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
        import onnxruntime as ort

        quiet = ort.RunOptions()  # the caller reports a failure in one line: no ORT log lines
        quiet.log_severity_level = 4
        try:
            return self.run_raw(feeds, quiet)
        except Exception as e:
            raise InputError(
                f"onnxruntime failed to run the model: {str(e).splitlines()[0]}"
            ) from e

    def run_raw(self, feeds: Mapping[str, np.ndarray], options=None) -> list[np.ndarray]:
        """:meth:`run` with onnxruntime's ``RunOptions`` and its own exceptions."""
        return self.session.run(None, {**feeds, **self.weights}, options)


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
    """The graph inputs a caller must feed (initializers listed as inputs excluded). Dims are
    read as onnxruntime reads them: an unnamed or negative dim is the symbol ``<input>_d<k>``
    (the importer's name for it), a stored 0 is 0."""
    m = _loaded(model).model
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
    input_shapes: InputShapes | None = None,
) -> Verdict:
    """Run both models on the same random inputs; InputError if their interfaces differ.
    ``dim_values`` fixes symbols (``--shape batch=8``), ``input_shapes`` whole inputs
    (``--input-shape x=1,3,64,64``); the other symbolic dims get sizes the reference runs at."""
    ref = _loaded(reference)  # read once, for the specs here and the session in compare_with
    sb = Session(candidate)
    specs_a, specs_b = input_specs(ref), sb.specs
    if [(s.name, s.dtype) for s in specs_a] != [(s.name, s.dtype) for s in specs_b]:
        raise InputError(
            "the models have different inputs: "
            f"{[(s.name, s.dtype) for s in specs_a]} vs {[(s.name, s.dtype) for s in specs_b]}"
        )
    return compare_with(
        ref,
        sb.run,
        sb.output_names,
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
    ref = _loaded(reference)
    sa = Session(ref)
    specs_a, names_a = sa.specs, sa.output_names
    names_b = list(output_names)
    fixed = dict(dim_values or {}) | bind_input_shapes(specs_a, dict(input_shapes or {}))
    verdict = Verdict(True, rtol, atol, tuple(seeds), fixed)
    if names_a != names_b:
        verdict.ok = False
        verdict.reason = f"different outputs: {names_a} vs {names_b}"
        return verdict
    dims, first = _sizes_it_runs_at(sa, ref.model, specs_a, fixed, seeds[0] if seeds else 0)
    verdict.dim_values = dims
    worst: dict[str, OutputDiff] = {}
    for seed in seeds:
        feeds = random_feeds(specs_a, seed, dims)
        if first is not None and first[0] == seed:
            out_a = first[1]
        else:
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


def _sizes_it_runs_at(session: Session, model: onnx.ModelProto, specs, fixed, seed):
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
            return dims, (seed, session.run_raw(random_feeds(specs, seed, dims), quiet))
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
