"""The pipeline: composes the stages (the only module that imports them all besides the CLI).

``optimize`` runs a list of named passes (:class:`Pass`) over one :class:`State`, chosen by the
target (:func:`passes_for`). For ``onnx``: import → fold → dce → egraph (encode, saturate and
extract, in a child process) → fold-weights (the weight-only subterms extraction chose) → export
→ save (into a temporary directory beside the output) → onnx-checker → verify (the gate:
original vs optimized in onnxruntime) → write (renamed into place only when everything passed —
a failure leaves no file). The ``llvm`` and ``cuda`` targets will replace the tail after
fold-weights with lowering and compiling; :data:`TARGETS` names them already so that a request
for one fails as a usage error rather than as an unknown word.

Why a list and one runner (:func:`run_passes`) rather than a hand-written chain: the runner
times every pass, reports it (``Result.passes``, the ``passes`` list of ``--json``) and calls
:meth:`TensorGraph.check` on every graph a pass produces, so a pass that breaks the IR is
named at once (:class:`PassError`) instead of surfacing as an onnxruntime error two passes
later; a compile path adds passes rather than another chain. A pass is a plain function of the
state that returns it: the state is one mutable record, not a chain of frozen ones, because
the passes fill different fields (the source model, the exported one, the files, the verdict)
and a frozen copy per pass would add nothing the runner's identity test on ``state.graph``
does not already give. ``Result.times`` keeps its finer phases (the e-graph pass reports
encode, saturate and extract, measured in the child, instead of its total).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from eqsat.egraph import onnx_io, passes
from eqsat.egraph.ir import GraphError, TensorGraph
from eqsat.egraph.ops import node_flops
from eqsat.errors import InputError, VerificationError
from eqsat.verify import numeric

if TYPE_CHECKING:
    from eqsat.compiled import CompiledModel

Progress = Callable[[str], None]

# what a run produces: an optimized ONNX model, or eqsat's own code (eqsat.lower, eqsat.backends)
TARGETS = ("onnx", "llvm", "ref", "cuda")
COMPILED_TARGETS = ("llvm", "ref")  # ref: the numpy interpreter (the oracle; cannot be saved)


@dataclass
class Options:
    """Every setting of a pipeline run, in one place (the CLI fills it from flags)."""

    target: str = "onnx"  # one of TARGETS: what the pipeline produces (see passes_for)
    verify: bool = True
    rtol: float = numeric.DEFAULT_RTOL
    atol: float = numeric.DEFAULT_ATOL
    seeds: tuple[int, ...] = numeric.DEFAULT_SEEDS
    fold_constants: bool = True
    egraph: bool = True  # run the e-graph stages (encode, saturate, extract)
    # rule families: schedule.DEFAULT_FAMILIES, spelled out so that importing this module does
    # not load egglog (a test keeps the two equal)
    rules: tuple[str, ...] = ("cleanup", "algebra", "fold", "merge", "layout")
    disabled_rules: tuple[str, ...] = ()
    iter_limit: int = 30
    node_limit: int = 100_000
    time_limit: float = 60.0
    cost_model: str = "roofline"  # roofline | measured | ast-size
    extractor: str = "auto"  # auto | greedy | ilp (see eqsat.extract.extraction)
    extract_time_limit: float = 10.0  # seconds for the ILP
    # run the egglog shape analysis alongside the rules and refuse the e-graph (fall back to the
    # folded graph, with the conflict in the statistics) if a rewrite merged two shapes
    shape_check: bool = True
    # rules whose proof the ledger (eqsat/verify/ledger.json) does not hold for their current
    # text are left out unless this is set
    allow_unproved: bool = False
    # run the e-graph stages in a forked child process, killed when they overrun
    # time_limit + extract_time_limit + HARD_LIMIT_GRACE: the time limit is then hard (egglog runs
    # an iteration inside Rust, where nothing else can stop it); the run falls back to the
    # folded graph. Where fork is unavailable the stages run in process (soft limits only).
    isolate: bool = True
    # compiled targets: threads for parallel loops (None: the cores this process may use), and
    # symbolic input dims fixed at compile time (("batch", 8), ...); the others stay run-time
    threads: int | None = None
    shapes: tuple[tuple[str, int], ...] = ()
    # compiled targets: reuse a model compiled (and verified) before with the same input and
    # settings, from the user's cache folder (eqsat.compiled.cache_dir)
    cache: bool = True


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Op counts of an ONNX file as written (Constant nodes included), like onnxsim's table."""
    hist: dict[str, int] = {}
    for n in model.graph.node:
        key = f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        hist[key] = hist.get(key, 0) + 1
    return dict(sorted(hist.items()))


@dataclass(frozen=True)
class PassRecord:
    """What the runner saw of one pass: its wall time, and whether it produced a new graph that
    was then checked (passes that only read the graph, or fell back to their input, were not)."""

    name: str
    seconds: float
    checked: bool

    def to_json(self) -> dict:
        return {"name": self.name, "seconds": round(self.seconds, 4), "checked": self.checked}


@dataclass
class Result:
    source: onnx.ModelProto
    original: TensorGraph
    graph: TensorGraph
    model: onnx.ModelProto
    times: dict[str, float] = field(default_factory=dict)
    verdict: numeric.Verdict | None = None
    output: Path | None = None
    egraph: dict | None = None  # saturation and extraction statistics
    passes: list[PassRecord] = field(default_factory=list)  # in the order they ran

    def summary(self) -> dict:
        return {
            "output": str(self.output) if self.output else None,
            "nodes_before": len(self.source.graph.node),
            "nodes_after": len(self.model.graph.node),
            "ops_before": op_histogram(self.source),
            "ops_after": op_histogram(self.model),
            "params_before": self.original.param_count(),
            "params_after": self.graph.param_count(),
            "times_s": {k: round(v, 4) for k, v in self.times.items()},
            "passes": [p.to_json() for p in self.passes],
            "egraph": self.egraph,
            "verification": self.verdict.to_json() if self.verdict else None,
        }


# ------------------------------------------------------------------------------ passes


@dataclass
class State:
    """What flows through the passes of one run; each pass fills in its part."""

    options: Options
    model: onnx.ModelProto | str | os.PathLike  # as given: the gate reads a file itself
    output: Path | None = None
    progress: Progress | None = None
    # closes what a pass opened for the rest of the run (the scratch directory) when it ends
    resources: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    source: onnx.ModelProto | None = None
    original: TensorGraph | None = None  # as imported
    graph: TensorGraph | None = None  # the current graph: each graph pass replaces it
    folded: TensorGraph | None = None  # before the e-graph stage: what a failure falls back to
    egraph: dict | None = None
    exported: onnx.ModelProto | None = None
    files: list[Path] = field(default_factory=list)  # the exported model in the scratch dir
    verdict: numeric.Verdict | None = None
    written: Path | None = None
    times: dict[str, float] = field(default_factory=dict)
    passes: list[PassRecord] = field(default_factory=list)
    compiled: CompiledModel | None = None  # compiled targets: the model eqsat's code runs


@dataclass(frozen=True)
class Pass:
    """One named step: ``run`` takes the state and returns it with its part done."""

    name: str
    run: Callable[[State], State]
    # the pass records its own finer phases in ``state.times`` (the e-graph pass: encode,
    # saturate, extract) instead of the runner recording its total there
    own_times: bool = False


class PassError(RuntimeError):
    """A pass produced a graph that fails :meth:`TensorGraph.check`: a bug in that pass."""


def run_passes(pipeline: Sequence[Pass], state: State) -> State:
    """Run ``pipeline`` in order: announce each pass to ``state.progress``, time it, and check
    the graph it produced (a new ``state.graph`` object); record both in ``state.passes``."""
    for p in pipeline:
        if state.progress:
            state.progress(p.name)
        before = state.graph
        t0 = time.perf_counter()
        state = p.run(state)
        seconds = time.perf_counter() - t0
        checked = state.graph is not None and state.graph is not before
        if checked:
            try:
                state.graph.check()
            except GraphError as e:
                raise PassError(f"pass {p.name} produced an invalid graph: {e}") from e
        state.passes.append(PassRecord(p.name, seconds, checked))
        if not p.own_times:
            state.times[p.name] = state.times.get(p.name, 0.0) + seconds
    return state


def passes_for(options: Options) -> list[Pass]:
    """The passes that make ``options.target`` (InputError for a target not built yet)."""
    if options.target not in TARGETS:
        raise InputError(f"unknown target {options.target!r}; known: {', '.join(TARGETS)}")
    if options.target not in ("onnx", *COMPILED_TARGETS):
        raise InputError(f"target {options.target} is not built yet (onnx, llvm and ref are)")
    front = [
        Pass("import", _import),
        *([Pass("fold", _fold)] if options.fold_constants else []),
        Pass("dce", _dce),
        *(
            [Pass("egraph", _egraph, own_times=True), Pass("fold-weights", _fold_weights)]
            if options.egraph
            else []
        ),
    ]
    if options.target in COMPILED_TARGETS:
        return [
            *front,
            Pass("compile", _compile),
            *([Pass("verify", _verify_compiled)] if options.verify else []),
            Pass("write", _write_compiled),
        ]
    return [
        *front,
        Pass("export", _export),
        Pass("save", _save),
        Pass("onnx-checker", _onnx_checker),
        *([Pass("verify", _verify)] if options.verify else []),
        Pass("write", _write),
    ]


def _import(state: State) -> State:
    model = state.model
    if state.source is None:  # compile may have read it already, for its cache key
        state.source = load(model)
    base_dir = None if isinstance(model, onnx.ModelProto) else Path(model).parent
    source = _fix_dims(state.source, dict(state.options.shapes))
    state.original = state.graph = onnx_io.import_onnx(source, base_dir)
    for name in state.graph.inputs:
        shape = state.graph.types[name].shape
        if any(isinstance(d, int) and d < 0 for d in shape):
            raise InputError(f"input {name!r} has a negative dim: {list(shape)}")
    return state


def _fix_dims(model: onnx.ModelProto, fixed: dict[str, int]) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs' symbolic dims named in ``fixed`` (``--shape batch=8``)
    have those sizes; the importer's inference carries them through the graph."""
    if not fixed:
        return model
    dims = [d for vi in model.graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param]
    unknown = sorted(set(fixed) - {d.dim_param for d in dims})
    if unknown:
        raise InputError(f"--shape {unknown[0]}: no input has a dim named {unknown[0]!r}")
    if any(v < 1 for v in fixed.values()):
        raise InputError("--shape: sizes must be positive")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        for d in vi.type.tensor_type.shape.dim:
            if d.dim_param in fixed:
                d.dim_value = fixed[d.dim_param]  # clears dim_param (a oneof)
    return out


def _fold(state: State) -> State:
    state.graph = passes.fold_constants(state.graph)
    return state


def _dce(state: State) -> State:
    state.graph = passes.eliminate_dead_code(state.graph)
    return state


def _egraph(state: State) -> State:
    """encode → saturate → extract; a failure other than bad options keeps the folded graph."""
    state.folded = state.graph
    try:
        timer = _Timer(state.progress, state.times)
        state.graph, state.egraph = _egraph_stages(state.graph, state.options, timer)
    except InputError:
        raise
    except Exception as e:
        _fall_back(state, e)
    return state


def _fold_weights(state: State) -> State:
    """Compute the weight-only subterms extraction chose (it priced them at nothing), turn
    slices into splits and drop what died; part of the e-graph stage for its fallback."""
    if state.egraph is None or "error" in state.egraph:
        return state  # the e-graph stage fell back: nothing of it to fold
    try:
        graph = passes.fold_constants(state.graph, bounded=False)
        state.graph = passes.eliminate_dead_code(passes.slices_to_split(graph))
    except InputError:
        raise
    except Exception as e:
        _fall_back(state, e)
    return state


def _fall_back(state: State, e: Exception) -> None:
    """A bug in the e-graph stages must not cost the user the run: the folded graph is still
    correct (and still goes through the gate); say so in the statistics."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else ""
    error = first if isinstance(e, EGraphStageError) else f"{type(e).__name__}: {first}"
    state.graph = state.folded
    state.egraph = {"error": error[:300], "fallback": "folded graph"}


def _export(state: State) -> State:
    state.exported = onnx_io.export_onnx(state.graph)
    return state


def _save(state: State) -> State:
    """Into a temporary directory beside the output (the same file system, so that ``write``
    is a rename), removed when the run ends."""
    out = state.output
    scratch = tempfile.TemporaryDirectory(prefix=".eqsat-", dir=out.parent if out else None)
    tmp = Path(state.resources.enter_context(scratch))
    name = out.name if out else "optimized.onnx"
    state.files = onnx_io.save_model(state.exported, tmp / name, weights=state.graph.weights)
    return state


def _onnx_checker(state: State) -> State:
    invalid = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)
    try:
        onnx.checker.check_model(str(state.files[0]), full_check=True)
    except invalid as e:
        try:  # the input's fault when it fails the checker too
            src = state.model if isinstance(state.model, onnx.ModelProto) else str(state.model)
            onnx.checker.check_model(src, full_check=True)
        except invalid as bad:
            raise InputError(f"the model fails onnx.checker: {_first_line(bad)}") from bad
        raise VerificationError(
            f"the optimized model fails onnx.checker: {_first_line(e)}"
        ) from e
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _verify(state: State) -> State:
    o = state.options
    try:
        state.verdict = numeric.compare_models(
            state.model, state.files[0], seeds=o.seeds, rtol=o.rtol, atol=o.atol
        )
    except InputError as e:
        raise InputError(
            f"{e} — the verification gate runs both models in onnxruntime; --no-verify skips it"
        ) from e
    _refuse_unless_ok(state.verdict)
    return state


def _refuse_unless_ok(verdict: numeric.Verdict, what: str = "") -> None:
    """VerificationError (exit 1; nothing is written) when the gate's verdict is not ok."""
    if not verdict.ok:
        raise VerificationError(
            f"verification failed, no output written: {what}{verdict.reason} "
            f"(max abs error {verdict.max_abs:.3g})"
        )


def _compile(state: State) -> State:
    """Lower the graph to loop nests and compile them for the target (``eqsat.compiled``)."""
    from eqsat.compiled import build
    from eqsat.lower.lower import LoweringError

    o = state.options
    try:
        state.compiled = build(state.graph, o.target, threads=o.threads)
    except LoweringError as e:
        raise InputError(f"cannot compile this model: {e}") from e
    except Exception as e:  # a bug, unless onnxruntime refuses the model too (ill-typed)
        try:
            numeric.load_session(state.model)
        except InputError as bad:
            raise InputError(f"cannot compile this model: {bad}") from e
        raise
    return state


def _verify_compiled(state: State) -> State:
    """The gate: the compiled model against onnxruntime on the original model."""
    o, c = state.options, state.compiled
    state.verdict = numeric.compare_with(
        state.model, c.run, c.output_names, seeds=o.seeds, rtol=o.rtol, atol=o.atol,
        dim_values=dict(o.shapes),
    )  # fmt: skip
    _refuse_unless_ok(state.verdict, "the compiled model differs from onnxruntime: ")
    return state


def _write_compiled(state: State) -> State:
    if state.output:
        state.written = state.compiled.save(state.output)
    return state


def _write(state: State) -> State:
    if state.output:
        for f in state.files:
            os.replace(f, state.output.parent / f.name)
        state.written = state.output
    return state


class _Timer:
    """Phases inside a pass (the e-graph stage's encode, saturate, extract), added to
    ``times`` and announced to ``progress``."""

    def __init__(self, progress: Progress | None, times: dict[str, float] | None = None):
        self.times: dict[str, float] = {} if times is None else times
        self.progress = progress

    def phase(self, name: str):
        timer = self

        class _Ctx:
            def __enter__(self):
                if timer.progress:
                    timer.progress(name)
                self.t0 = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self.t0

        return _Ctx()


def load(model: onnx.ModelProto | str | os.PathLike) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else onnx_io.load_model(model)


def optimize(
    model: onnx.ModelProto | str | os.PathLike,
    options: Options | None = None,
    output: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> Result:
    """Optimize a model; with ``output``, write it atomically after the verification gate."""
    options = options or Options()
    pipeline = passes_for(options)
    if options.target != "onnx":
        raise InputError(
            f"optimize writes an ONNX model; target {options.target} is compiled code: use "
            "`eqsat compile` (eqsat.compile)"
        )
    state = State(options, model, Path(output) if output else None, progress)
    with state.resources:
        state = run_passes(pipeline, state)
    return Result(
        state.source,
        state.original,
        state.graph,
        state.exported,
        state.times,
        verdict=state.verdict,
        output=state.written,
        egraph=state.egraph,
        passes=state.passes,
    )


@dataclass
class CompileResult:
    """What ``compile`` produced: the model, the graph it was compiled from, the gate's
    verdict, and the per-pass times."""

    compiled: CompiledModel
    graph: TensorGraph | None  # None: served from the cache (nothing was imported)
    times: dict[str, float] = field(default_factory=dict)
    verdict: numeric.Verdict | None = None
    output: Path | None = None
    egraph: dict | None = None
    passes: list[PassRecord] = field(default_factory=list)

    def summary(self) -> dict:
        c = self.compiled
        return {
            "output": str(self.output) if self.output else None,
            "target": c.target,
            "nodes": len(self.graph.nodes) if self.graph is not None else None,
            "cached": self.graph is None,
            "lowering": c.report,
            "inputs": [p.to_json() for p in c.inputs],
            "outputs": [p.to_json() for p in c.outputs],
            "times_s": {k: round(v, 4) for k, v in self.times.items()},
            "passes": [p.to_json() for p in self.passes],
            "egraph": self.egraph,
            "verification": self.verdict.to_json() if self.verdict else None,
        }


def compile(  # noqa: A001 - the verb of this stage, as in eqsat.compile
    model: onnx.ModelProto | str | os.PathLike,
    options: Options | None = None,
    output: str | os.PathLike | None = None,
    progress: Progress | None = None,
) -> CompileResult:
    """Compile a model to eqsat's own code (``options.target``: llvm by default here); with
    ``output``, save the artifact after the verification gate (atomically)."""
    options = options or Options(target="llvm")
    pipeline = passes_for(options)  # refuses targets not built yet
    if options.target not in COMPILED_TARGETS:
        raise InputError(
            f"compile makes {' or '.join(COMPILED_TARGETS)} code, not {options.target}"
        )
    state = State(options, model, Path(output) if output else None, progress)
    key = None
    if options.cache and options.target == "llvm":
        t0 = time.perf_counter()
        state.source = load(model)  # read once: the import pass takes it from the state
        key = _cache_key(state.source, options)
        cached = _from_cache(key, options, output, progress, t0)
        if cached is not None:
            return cached
    with state.resources:
        state = run_passes(pipeline, state)
    if key is not None and options.verify:
        from eqsat import compiled as compiled_module

        compiled_module.store(state.compiled, key)
    return CompileResult(
        state.compiled, state.graph, state.times, state.verdict, state.written, state.egraph,
        state.passes,
    )  # fmt: skip


# the settings that change what compile produces (threads too: the default schedules read it)
_COMPILE_KEY_FIELDS = tuple(
    f for f in Options.__dataclass_fields__ if f not in ("cache", "isolate", "verify")
)


def _cache_key(source: onnx.ModelProto, options: Options) -> str:
    from eqsat import compiled as compiled_module

    settings = repr([(f, getattr(options, f)) for f in _COMPILE_KEY_FIELDS])
    return compiled_module.cache_key(source.SerializeToString(), settings)


def _from_cache(key: str, options: Options, output, progress: Progress | None, t0: float):
    """The compiled model cached under ``key`` (:func:`_cache_key`: the model's bytes, the
    settings that change the code, eqsat's code and the CPU), or None on a miss."""
    from eqsat import compiled as compiled_module

    hit = compiled_module.cached(key, options.threads)
    if hit is None:
        return None
    if progress:
        progress("cache")
    written = hit.save(output) if output else None
    seconds = time.perf_counter() - t0
    return CompileResult(
        hit, None, {"cache": seconds}, None, written, None, [PassRecord("cache", seconds, False)]
    )


def _cost_model(name: str):
    from eqsat.extract.cost import AstSize
    from eqsat.extract.measured import MeasuredCostModel
    from eqsat.extract.roofline import RooflineCostModel

    models = {"roofline": RooflineCostModel, "measured": MeasuredCostModel, "ast-size": AstSize}
    if name not in models:
        raise InputError(f"unknown cost model {name!r}; known: {', '.join(models)}")
    return models[name]()


HARD_LIMIT_GRACE = 30.0  # seconds past the soft limits before the child is killed


class EGraphStageError(RuntimeError):
    """The e-graph stages failed in the child process; the message names the original error."""


class HardTimeLimit(EGraphStageError):
    """The e-graph stages overran their hard time limit and were killed."""


def _egraph_stages(graph: TensorGraph, options: Options, timer: _Timer):
    """encode → saturate → extract; returns the extracted graph and the statistics. Options
    are checked here (InputError); the work runs in a child when ``options.isolate``."""
    from eqsat.extract.extraction import EXTRACTORS
    from eqsat.rules import schedule

    try:
        chosen = schedule.select(options.rules, options.disabled_rules)
    except ValueError as e:
        raise InputError(str(e)) from e
    if options.extractor not in EXTRACTORS:
        raise InputError(f"unknown extractor {options.extractor!r}; known: {', '.join(EXTRACTORS)}")
    _cost_model(options.cost_model)
    if options.shape_check:
        from eqsat.egraph import shapes

        # build the (cached) ruleset once here, not in every child
        shapes.shape_rules(sizes=schedule.reads_sizes(chosen))
    if options.isolate and "fork" in multiprocessing.get_all_start_methods():
        return _in_child(graph, options, timer)
    return _egraph_work(graph, options, timer)


def _in_child(graph: TensorGraph, options: Options, timer: _Timer):
    """:func:`_egraph_work` in a forked child. The child inherits ``graph`` (no copy) and sends
    back phase names (for the progress display), then the extracted graph *without* the weights
    it shares with ``graph`` (a 2 GB model is not pickled back), or the error."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(graph, options, send), daemon=True)
    child.start()
    send.close()
    limit = options.time_limit + options.extract_time_limit + HARD_LIMIT_GRACE
    deadline = time.monotonic() + limit
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not receive.poll(left):
                raise HardTimeLimit(f"the e-graph stages ran past the hard limit of {limit:.0f} s")
            try:
                kind, payload = receive.recv()
            except EOFError:
                raise EGraphStageError(
                    f"the e-graph process died (exit code {child.exitcode})"
                ) from None
            if kind == "phase" and timer.progress:
                timer.progress(payload)
            elif kind == "done":
                out, shared, own, stats, times = payload
                break
            elif kind == "error":
                cls, msg = payload
                raise (InputError if cls == "InputError" else EGraphStageError)(msg)
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    for k, v in times.items():
        timer.times[k] = timer.times.get(k, 0.0) + v
    return out.replace(weights={**{k: graph.weights[k] for k in shared}, **own}), stats


def _child_main(graph: TensorGraph, options: Options, send) -> None:
    timer = _Timer(lambda phase: send.send(("phase", phase)))
    try:
        out, stats = _egraph_work(graph, options, timer)
        own = {k: v for k, v in out.weights.items() if graph.weights.get(k) is not v}
        shared = [k for k in out.weights if k not in own]  # in order: names only
        send.send(("done", (out.replace(weights={}), shared, own, stats, timer.times)))
    except BaseException as e:  # everything goes back to the parent, which decides
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        send.send(("error", (type(e).__name__, f"{type(e).__name__}: {first}"[:300])))
    finally:
        send.close()


def _egraph_work(graph: TensorGraph, options: Options, timer: _Timer):
    """encode → saturate → extract (see :func:`_egraph_stages`)."""
    from eqsat.egraph import shapes
    from eqsat.egraph.encode import encode
    from eqsat.egraph.saturate import saturate
    from eqsat.extract.extraction import extract
    from eqsat.rules import schedule

    chosen = schedule.select(options.rules, options.disabled_rules)
    rules, unproved = _proved(chosen, options)
    rules = schedule.relevant(rules, _ctors(graph))
    cost_model = _cost_model(options.cost_model)
    with timer.phase("encode"):
        enc = encode(graph)
        rulesets = schedule.rulesets(rules)
        if options.shape_check:
            shapes.seed(enc)
            rulesets = [shapes.shape_rules(sizes=schedule.reads_sizes(chosen)), *rulesets]
    with timer.phase("saturate"):
        sat = saturate(
            enc,
            rulesets,
            iter_limit=options.iter_limit,
            node_limit=options.node_limit,
            time_limit=options.time_limit,
            rewrites=schedule.rewrites(rules),
        )
        if options.shape_check:
            shapes.check_shapes(enc.egraph)  # ShapeConflict: a rule is unsound
    with timer.phase("extract"):
        ex = extract(
            sat, cost_model, extractor=options.extractor, time_limit=options.extract_time_limit
        )
        before = extract_cost(graph, cost_model)
    stats = {
        "rules": len(rules),
        "unproved_left_out": unproved,
        "saturation": sat.summary(),
        "extraction": ex.summary(),
        "cost_model": cost_model.name,
        "cost_before": before,
        "cost_after": ex.cost,
    }
    return ex.graph, stats


def _ctors(graph: TensorGraph) -> set[str]:
    """The Tensor constructors the encoding of ``graph`` uses for its nodes."""
    from eqsat.egraph.lang import SPECS

    return {SPECS[n.op].ctor for n in graph.nodes if n.op in SPECS}


def _proved(rules: list, options: Options) -> tuple[list, list[str]]:
    """The rules the ledger proves as written (all of them with ``allow_unproved``), and the
    names of those left out."""
    if options.allow_unproved:
        return rules, []
    from eqsat.verify.ledger import holds, load_ledger

    ledger = load_ledger()
    kept = [r for r in rules if holds(r, ledger)]
    return kept, [r.name for r in rules if not holds(r, ledger)]


def extract_cost(graph: TensorGraph, cost_model) -> float:
    """The cost of a graph as it stands (weight-only nodes are free, as in extraction)."""
    from eqsat.extract.cost import checked_cost

    total = 0.0
    for n in graph.nodes:
        ins = [graph.types.get(i) if i else None for i in n.inputs]
        outs = [graph.types[o] for o in n.outputs if o]
        consts = [graph.weights.get(i) if i else None for i in n.inputs]
        total += checked_cost(cost_model, n.op, n.attr, ins, outs, consts)
    return total


def summarize(graph: TensorGraph) -> dict:
    """What ``eqsat info`` shows: op histogram, parameters, FLOPs, interface."""
    flops = 0
    for n in graph.nodes:
        ins = [graph.types.get(i) if i else None for i in n.inputs]
        outs = [graph.types[o] for o in n.outputs if o]
        flops += node_flops(n, ins, outs)
    opaque = sorted({n.op for n in graph.nodes if n.opaque is not None})
    return {
        "opset": graph.meta.opset,
        "producer": f"{graph.meta.producer_name} {graph.meta.producer_version}".strip(),
        "nodes": len(graph.nodes),
        "ops": graph.op_histogram(),
        "opaque_ops": opaque,
        "params": graph.param_count(),
        "param_bytes": graph.param_bytes(),
        "flops": int(flops),
        "inputs": [_io(graph, i) for i in graph.inputs],
        "outputs": [_io(graph, o) for o in graph.outputs],
    }


def _io(graph: TensorGraph, name: str) -> dict:
    t = graph.types[name]
    return {"name": name, "dtype": t.dtype, "shape": list(t.shape)}


def example_model(name: str, size: str = "default") -> onnx.ModelProto:
    from eqsat.examples import build_example

    try:
        return build_example(name, size=size)
    except KeyError as e:
        raise InputError(str(e).strip("'\"")) from e
