"""The pipeline: composes the stages (the only module that imports them all besides the CLI).

``optimize`` runs a list of named passes (:class:`Pass`) over one :class:`State`, chosen by the
target (:func:`passes_for`). For ``onnx``: import → fold → dce → egraph (encode, saturate and
extract, in a child process) → fold-weights (the weight-only subterms extraction chose) → export
→ save (into a temporary directory beside the output) → onnx-checker → verify (the gate:
original vs optimized in onnxruntime) → write (renamed into place only when everything passed —
a failure leaves no file). The ``llvm`` and ``ref`` targets replace the tail after fold-weights
with compile → verify → write; ``cuda`` stops after compile (PTX for every kernel, which nothing
here can run or verify, so ``compile`` refuses an output path for it and writes nothing).

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
import functools
import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from eqsat.egraph import onnx_files, onnx_io, passes
from eqsat.egraph.ir import GraphError, TensorGraph
from eqsat.egraph.onnx_types import value_type
from eqsat.egraph.ops import node_flops
from eqsat.errors import DataFileError, EqsatError, InputError, VerificationError
from eqsat.lower.gpu_mma import check_precision
from eqsat.verify import numeric
from eqsat.verify.precision import tolerance

if TYPE_CHECKING:
    from eqsat.compiled import CompiledModel

Progress = Callable[[str], None]

# what a run produces: an optimized ONNX model, or eqsat's own code (eqsat.lower, eqsat.backends)
TARGETS = ("onnx", "llvm", "ref", "cuda")
# ref: the numpy interpreter (the oracle; cannot be saved); cuda: PTX, neither run nor verified
# here (no runtime, no GPU), so its pipeline stops after compile and writes nothing
COMPILED_TARGETS = ("llvm", "ref", "cuda")


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
    # rule families; None: by target (rule_families): DEFAULT_RULES, and for compiled targets
    # COMPILED_RULES too
    rules: tuple[str, ...] | None = None
    disabled_rules: tuple[str, ...] = ()
    # the `generated` family's rules file (`eqsat rules discover -o FILE`, its proofs inside it)
    # instead of the packaged one (eqsat/rules/generated/rules.json, proved in the ledger)
    rules_file: str | None = None
    iter_limit: int = 30
    node_limit: int = 100_000
    time_limit: float = 60.0
    # roofline | measured | ast-size | compiler; None: by target (cost_model_for): compiler
    # for the compiled targets (priced as eqsat's code runs), roofline for onnx (onnxruntime's)
    cost_model: str | None = None
    # the roofline constants (`eqsat calibrate -o FILE`) instead of this machine's calibration in
    # the user's cache folder, else the packaged default
    calibration: str | None = None
    # auto | greedy | local | ilp (see eqsat.extract.extraction); None: by cost model
    # (extractor_for): local under the compiler's, auto (the ILP after the search) otherwise
    extractor: str | None = None
    extract_time_limit: float = 10.0  # seconds for the local search and the ILP
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
    # arithmetic of contractions (eqsat.verify.precision): fp32, or tf32 / fp16 / bf16 tensor
    # cores (cuda only); the gate's tolerance follows it (gate_tolerance)
    precision: str = "fp32"
    shapes: tuple[tuple[str, int], ...] = ()
    # whole input shapes (``--input-shape x=1,3,640,640``, onnxsim's convention): the model is
    # specialized to them (its inputs' symbolic dims fixed), and the gate runs at them
    input_shapes: tuple[tuple[str, tuple[int, ...]], ...] = ()
    # compiled targets: reuse a model compiled (and verified) before with the same input and
    # settings, from the user's cache folder (eqsat.compiled.cache_dir)
    cache: bool = True
    # llvm: the tuning log (`eqsat tune`) whose best schedule per kernel replaces the default;
    # None: tuning.jsonl in the user's cache folder (eqsat.autoschedule.log.default_log)
    tuning_log: str | None = None
    tuned: bool = True  # False: the default schedules whatever the log holds
    # fusion decisions as e-graph terms (eqsat.rules.fusion), so that extraction picks algebra,
    # merges and fusion jointly and lowering follows it; None: by target (fusion_terms): on for
    # the compiled targets under the compiler cost model (an ONNX model holds no kernels)
    fusion_terms: bool | None = None


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
    """What ``optimize`` produced. The run keeps large weights out of the protos (read in place,
    written from numpy); ``source`` and ``model`` are self-contained ModelProtos made from them
    on first use (a copy of the weights), for callers that hand them on."""

    source_skeleton: onnx.ModelProto  # as read: large weights by reference (load_model)
    original: TensorGraph
    graph: TensorGraph
    skeleton: onnx.ModelProto  # as exported: large weights pending, their arrays in graph
    times: dict[str, float] = field(default_factory=dict)
    verdict: numeric.Verdict | None = None
    output: Path | None = None
    egraph: dict | None = None  # saturation and extraction statistics
    passes: list[PassRecord] = field(default_factory=list)  # in the order they ran
    base_dir: Path | None = None  # where the source's weight bytes lie

    @functools.cached_property
    def source(self) -> onnx.ModelProto:
        return onnx_files.materialize(self.source_skeleton, self.base_dir, self.original.weights)

    @functools.cached_property
    def model(self) -> onnx.ModelProto:
        return onnx_files.materialize(self.skeleton, weights=self.graph.weights)

    def to_json(self) -> dict:
        """Everything about the run (``--json``): per-rule matches, analysis rules included,
        the e-graph's size after each iteration, the ILP's status, every phase's time."""
        return {
            "output": str(self.output) if self.output else None,
            "nodes_before": len(self.source_skeleton.graph.node),
            "nodes_after": len(self.skeleton.graph.node),
            "ops_before": op_histogram(self.source_skeleton),
            "ops_after": op_histogram(self.skeleton),
            "params_before": self.original.param_count(),
            "params_after": self.graph.param_count(),
            "times_s": {k: round(v, 4) for k, v in self.times.items()},
            "passes": [p.to_json() for p in self.passes],
            "egraph": self.egraph,
            "verification": self.verdict.to_json() if self.verdict else None,
        }

    def summary(self) -> str:
        """The run in a screenful of text (:func:`summary_lines`); the detail is in
        :meth:`to_json`."""
        return "\n".join(summary_lines(self.to_json()))


SHOWN = 8  # at most this many ops or rules on one summary line; the JSON has them all


def _most(counts: dict[str, str | int], order: dict[str, int]) -> str:
    """``name value, ...`` for the :data:`SHOWN` largest of ``order``, and how many more."""
    names = sorted(counts, key=lambda k: (-order[k], k))
    text = ", ".join(f"{k} {counts[k]}" for k in names[:SHOWN])
    return text + (f", and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def summary_lines(s: dict, ops: bool = True) -> list[str]:
    """What a person reads of a run (``s``: :meth:`Result.to_json`): nodes and the ops that
    changed (``ops``; the CLI prints its own table instead), times, the e-graph's iterations
    against the limit, the rewrites that fired apart from the shape analysis' rules, the
    modelled cost, the gate's verdict, the file written."""
    lines = []
    if ops:
        before, after = s["ops_before"], s["ops_after"]
        changed = {
            op: f"{before.get(op, 0)}->{after.get(op, 0)}"
            for op in sorted(set(before) | set(after))
            if before.get(op, 0) != after.get(op, 0)
        }
        delta = {op: abs(before.get(op, 0) - after.get(op, 0)) for op in changed}
        lines.append(
            f"nodes: {s['nodes_before']} -> {s['nodes_after']}"
            + (f" ({_most(changed, delta)})" if changed else " (no op changed)")
        )
    times = s["times_s"]
    lines.append(
        f"time: {sum(times.values()):.2f} s ("
        + ", ".join(f"{k} {v:.2f}" for k, v in times.items())
        + ")"
    )
    eg = s.get("egraph")
    if eg and "error" in eg:
        lines.append(f"e-graph: failed ({eg['error']}); the constant-folded graph was kept")
    elif eg:
        sat = eg["saturation"]
        runs = sat.get("runs") or []
        lines.append(
            f"e-graph: {sat['enodes'][0]} -> {sat['enodes'][-1]} e-nodes, "
            f"{sat['iterations']} iterations in {len(runs)} runs of the rules (longest "
            f"{max(runs, default=0)}; the limit, {sat['iter_limit_per_run']}, bounds each run), "
            f"{sat['stop_reason']}"
        )
        fired = eg["rewrites_fired"]
        an = eg["analysis"]
        lines.append(
            f"rewrites fired: {len(fired)} of {eg['rules']} rules, "
            f"{sum(fired.values())} matches"
            + (f": {_most(fired, fired)}" if fired else "")
            + f" (besides {an['rules_fired']} shape-analysis rules, {an['matches']} matches)"
        )
        if eg.get("unproved_left_out"):
            lines.append(f"left out as unproved: {len(eg['unproved_left_out'])} rules")
        lines.append(
            f"cost ({eg['cost_model']}, modelled): {eg['cost_before']:.4g} -> "
            f"{eg['cost_after']:.4g}"
        )
    v = s["verification"]
    if v:
        lines.append(
            f"verified: {len(v['seeds'])} random input sets, max abs error {v['max_abs']:.3g} "
            f"(rtol {v['rtol']:g}, atol {v['atol']:g})"
        )
    else:
        lines.append("not verified (--no-verify)")
    lines.append(f"wrote {s['output']}" if s["output"] else "wrote nothing (no output given)")
    return lines


def rules_fired(matches: dict[str, int], rules) -> tuple[dict[str, int], dict[str, int]]:
    """``matches`` (every rule egglog or a Python-driven rule reported) split into the
    rewrites of ``rules`` that fired and the analysis rules that did (the shape analysis: rules
    that type e-classes and rewrite nothing). The one place that tells the two apart: the CLI,
    the summary and the report read the split from the statistics."""
    names = {r.name for r in rules}
    rewrites = {k: n for k, n in sorted(matches.items()) if n and k in names}
    analysis = {k: n for k, n in sorted(matches.items()) if n and k not in names}
    return rewrites, analysis


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
    saved: onnx.ModelProto | None = None  # the written file as read back (weights by reference)

    @property
    def base_dir(self) -> Path | None:
        """Where the source model's weight bytes lie (None for a ModelProto given in memory)."""
        return None if isinstance(self.model, onnx.ModelProto) else Path(self.model).parent

    @functools.cached_property
    def tuning(self):
        """The tuning log this compile reads (:func:`_tuning`), read once: the compiled-model
        cache key hashes it and the compile pass schedules from it."""
        return _tuning(self.options)


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
    """The passes that make ``options.target`` (InputError for an unknown target)."""
    if options.target not in TARGETS:
        raise InputError(f"unknown target {options.target!r}; known: {', '.join(TARGETS)}")
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
    if options.target == "cuda":
        return [*front, Pass("compile", _compile)]
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
    if state.source is None:  # compile may have read it already, for its cache key
        state.source = load(state.model)
    o = state.options
    source = _fix_dims(state.source, dict(o.shapes), dict(o.input_shapes))
    state.original = state.graph = onnx_io.import_onnx(source, state.base_dir)
    return state


def _fix_dims(
    model: onnx.ModelProto, fixed: dict[str, int], shapes: dict | None = None
) -> onnx.ModelProto:
    """A copy of ``model`` whose inputs' symbolic dims named in ``fixed`` (``--shape batch=8``)
    have those sizes, and whose inputs named in ``shapes`` (``--input-shape x=1,3,64,64``) have
    those shapes; the importer's inference carries them through the graph."""
    if not fixed and not shapes:
        return model
    dims = [d for vi in model.graph.input for d in vi.type.tensor_type.shape.dim if d.dim_param]
    unknown = sorted(set(fixed) - {d.dim_param for d in dims})
    if unknown:
        raise InputError(f"--shape {unknown[0]}: no input has a dim named {unknown[0]!r}")
    if any(v < 1 for v in fixed.values()):
        raise InputError("--shape: sizes must be positive")
    # checks names, ranks and fixed dims; the symbols' sizes join those --shape gave
    implied = numeric.bind_input_shapes(numeric.input_specs(model), dict(shapes or {}))
    clash = [k for k, v in implied.items() if fixed.get(k, v) != v]
    if clash:
        raise InputError(f"--shape {clash[0]}={fixed[clash[0]]} disagrees with --input-shape")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for vi in out.graph.input:
        tdims = vi.type.tensor_type.shape.dim
        given = (shapes or {}).get(vi.name)
        for k, d in enumerate(tdims):
            if given is not None:
                d.dim_value = given[k]  # clears dim_param (a oneof)
            elif d.dim_param in fixed:
                d.dim_value = fixed[d.dim_param]
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
    except EqsatError:  # bad options, a missing data file: the user's to fix, not a fallback
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
    except EqsatError:
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
    # the large weights stay numpy arrays: save streams them into the file
    state.exported = onnx_io.export_onnx(state.graph, inline_weights=False)
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
    try:
        state.saved = onnx_io.load_model(state.files[0])
        onnx_files.check_file(state.saved, state.files[0])
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError, InputError) as e:
        invalid = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)
        try:  # the input's fault when it fails the checker too
            src = state.model if isinstance(state.model, onnx.ModelProto) else str(state.model)
            onnx.checker.check_model(src, full_check=True)
        except invalid as bad:
            raise InputError(f"the model fails onnx.checker: {_first_line(bad)}") from bad
        raise VerificationError(f"the optimized model fails onnx.checker: {e}") from e
    return state


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _verify(state: State) -> State:
    o = state.options
    try:
        candidate = _candidate(state)
        state.verdict = numeric.compare_models(
            _reference(state), candidate, seeds=o.seeds, rtol=o.rtol, atol=o.atol,
            dim_values=dict(o.shapes), input_shapes=dict(o.input_shapes),
        )  # fmt: skip
    except InputError as e:
        raise InputError(
            f"{e} — the verification gate runs both models in onnxruntime; --no-verify skips it"
        ) from e
    _refuse_unless_ok(state.verdict)
    return state


def _candidate(state: State) -> numeric.LoadedModel:
    """The written file for the gate: its structure as read back from disk; its weights are
    the arrays it was written from, once the file's bytes are checked equal to them (so the
    gate runs exactly the file, and unchanged weights share memory with the reference)."""
    scratch = state.files[0].parent
    bad = onnx_files.differing_weight(state.saved, scratch, state.graph.weights)
    if bad is not None:
        raise VerificationError(f"the written file's weight {bad!r} differs from the graph's")
    return numeric.LoadedModel(state.saved, scratch, state.graph.weights)


def _reference(state: State) -> numeric.LoadedModel:
    """The original model for the gate: as read, with the weights the import mapped (unless
    the import converted an old opset, which may rewrite initializers: then from the file)."""
    opset = {o.domain: o.version for o in state.source.opset_import}.get("", 0)
    same = opset >= onnx_io.MIN_OPSET
    return numeric.LoadedModel(
        state.source, state.base_dir, state.original.weights if same else None
    )


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
        state.compiled = build(state.graph, o.target, threads=o.threads, precision=o.precision,
                               tuning=state.tuning)
    except LoweringError as e:
        raise InputError(f"cannot compile this model: {e}") from e
    except Exception as e:  # a bug, unless onnxruntime refuses the model too (ill-typed)
        try:
            numeric.Session(_reference(state))
        except InputError as bad:
            raise InputError(f"cannot compile this model: {bad}") from e
        raise
    return state


def _tuning(o: Options):
    """The tuning log a compile reads (None: not tuned)."""
    if not o.tuned or o.target != "llvm":
        return None
    from eqsat.autoschedule.log import TuningLog

    return TuningLog.load(o.tuning_log)


def _verify_compiled(state: State) -> State:
    """The gate: the compiled model against onnxruntime on the original model."""
    o, c = state.options, state.compiled
    rtol, atol = gate_tolerance(o, c.program)
    state.verdict = numeric.compare_with(
        _reference(state), c.run, c.output_names, seeds=o.seeds, rtol=rtol, atol=atol,
        dim_values=dict(o.shapes), input_shapes=dict(o.input_shapes),
    )  # fmt: skip
    _refuse_unless_ok(state.verdict, "the compiled model differs from onnxruntime: ")
    return state


def gate_tolerance(options: Options, program) -> tuple[float, float]:
    """The gate's ``(rtol, atol)`` for a compiled program: the options' own, widened to the
    precision's tolerance (:func:`eqsat.verify.precision.tolerance`) at the longest K of the
    program's tensor-core contractions (symbolic K: :data:`SYMBOLIC_K`)."""
    from eqsat.lower.gpu_mma import mma_ks

    if options.precision == "fp32":
        return options.rtol, options.atol
    ks = [SYMBOLIC_K if k is None else k for k in mma_ks(program)]
    rtol, atol = tolerance(options.precision, max(ks, default=1))
    return max(rtol, options.rtol), max(atol, options.atol)


SYMBOLIC_K = 4096  # the K a tolerance assumes where a contraction's K is a run-time size


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
        base_dir=state.base_dir,
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
    pipeline = passes_for(options)  # refuses unknown targets
    check_precision(options.precision, options.target)
    if options.target not in COMPILED_TARGETS:
        raise InputError(
            f"compile makes {' or '.join(COMPILED_TARGETS)} code, not {options.target}"
        )
    if options.target == "cuda" and output is not None:
        from eqsat.backends.cuda import NO_GPU

        raise InputError(f"no artifact written: {NO_GPU}")
    state = State(options, model, Path(output) if output else None, progress)
    key = None
    if options.cache and options.target == "llvm":
        t0 = time.perf_counter()
        state.source = load(model)  # read once: the import pass takes it from the state
        key = _cache_key(state.source, state.base_dir, options, state.tuning)
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


def tune(
    model: onnx.ModelProto | str | os.PathLike,
    options: Options | None = None,
    trials: int = 64,
    time_limit: float | None = None,
    log: str | os.PathLike | None = None,
    progress: Progress | None = None,
    on_trial=None,
    ray_address: str | None = None,
    check: bool = True,
):
    """Tune the kernels of ``model`` as ``compile`` with ``options`` would build them: the
    graph passes (import, fold, e-graph) run as for a compile, the graph is lowered, and
    :class:`eqsat.autoschedule.search.Tuner` measures up to ``trials`` candidates (within
    ``time_limit`` seconds) in the model, appending each to the tuning log (``log``, else
    ``options.tuning_log``, else the default one), which a later ``compile`` reads.
    ``on_trial(task, trials)`` is called after each measurement. ``check``: then the whole
    model with the log is timed against the default schedules (:func:`tune_check`), and where
    it is slower beyond noise the defaults are logged as the verdicts. Returns the TuneReport
    (``whole_model``: the check's figures, None without one)."""
    from eqsat.autoschedule.log import default_log
    from eqsat.autoschedule.search import Tuner
    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.lower.lower import LoweringError, lower

    options = options or Options(target="llvm")
    front = [p for p in passes_for(options) if p.name not in ("compile", "verify", "write")]
    state = State(options, model, None, progress)
    with state.resources:
        state = run_passes(front, state)
    try:
        lowered = lower(state.graph)
    except LoweringError as e:
        raise InputError(f"cannot compile this model: {e}") from e
    path = Path(log or options.tuning_log or default_log())
    threads = options.threads or Capabilities.host().cores
    tuner = Tuner(lowered.program, threads, path, progress=on_trial, ray_address=ray_address,
                  weights=lowered.weights)  # fmt: skip
    if progress:
        progress("tune")
    report = tuner.run(trials, time_limit)
    if check and report.trials:
        if progress:
            progress("whole model, default schedules against tuned")
        report.whole_model = tune_check(state.graph, lowered.program, threads, path)
    return report


def tune_check(graph: TensorGraph, program, threads: int, log: Path, reps: int = 15) -> dict:
    """The whole model (``graph``, lowered to ``program``) built with the default schedules
    and with the tuning log, timed interleaved (:func:`eqsat.verify.timing.interleaved_calls`);
    when the tuned one is slower beyond noise, every kernel's default is logged as its verdict
    (:func:`eqsat.autoschedule.search.revert`): tuning never leaves a model slower. Why, though
    the kernels were timed in the model: the kernels are confirmed one at a time, and a kernel
    changes the caches its successors find. Returns the figures (``reverted``: the kernels
    sent back to their default)."""
    import numpy as np

    from eqsat import compiled as compiled_module
    from eqsat.autoschedule.log import TuningLog
    from eqsat.autoschedule.search import revert
    from eqsat.verify.timing import interleaved_calls

    tuning = TuningLog.load(log)
    tuned = compiled_module.build(graph, "llvm", threads, tuning=tuning)
    row = {"tuned_kernels": tuned.report["tuned_kernels"], "reverted": []}
    if not row["tuned_kernels"]:
        return row | {"default_ms": None, "tuned_ms": None, "speedup": 1.0,
                      "within_noise": True, "slower": False}  # fmt: skip
    default = compiled_module.build(graph, "llvm", threads)
    rng = np.random.default_rng(0)
    feeds = {p.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in p.shape])
             .astype(p.dtype) for p in default.inputs}  # fmt: skip
    rows = interleaved_calls({"default schedules": default.run, "tuned": tuned.run}, feeds, reps)
    verdict = rows[1]["vs_first"]
    slower = verdict["speedup"] < 1.0 and not verdict["within_noise"]
    row |= {"default_ms": rows[0]["min_ms"], "tuned_ms": rows[1]["min_ms"],
            "default_q3_ms": rows[0]["q3_ms"], "tuned_q3_ms": rows[1]["q3_ms"],
            "speedup": verdict["speedup"], "within_noise": verdict["within_noise"],
            "slower": slower}  # fmt: skip
    if slower:
        row["reverted"] = revert(log, program, threads)
    return row


# the settings that change what compile produces (threads too: the default schedules read it)
_COMPILE_KEY_FIELDS = tuple(
    f for f in Options.__dataclass_fields__ if f not in ("cache", "isolate", "verify")
)


def _cache_key(source: onnx.ModelProto, base_dir: Path | None, options: Options, tuning) -> str:
    from eqsat import compiled as compiled_module

    settings = repr([(f, getattr(options, f)) for f in _COMPILE_KEY_FIELDS])
    # the tuning log's content changes the schedules
    settings += tuning.digest() if tuning is not None else ""
    # so do the cost model's constants: a recalibration may extract another graph
    settings += _cost_constants(options)
    # the proto holds the large weights by reference: their bytes are hashed beside it
    return compiled_module.cache_key(onnx_files.digest(source, base_dir), settings)


def _cost_constants(options: Options) -> str:
    """The constants extraction will price with, as text for the compiled-model cache key
    (empty without the e-graph): the compiler model's (this machine's calibration, else the
    packaged default) or the roofline's (``--calibration``, this machine's, else the default).
    The measured model's cache is a growing table of timings, not constants: not keyed."""
    if not options.egraph:
        return ""
    from dataclasses import asdict

    name = cost_model_for(options)
    try:
        if name == "compiler":
            return repr(asdict(_compiler_constants()))
        if name == "roofline":
            from eqsat.extract.roofline import RooflineConstants

            path = Path(options.calibration) if options.calibration else None
            return repr(asdict(RooflineConstants.load(path)))
    except (OSError, ValueError, TypeError):  # the compile itself says what is wrong with it
        return "unreadable"
    return ""


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


COST_MODELS = ("roofline", "measured", "ast-size", "compiler")


# schedule.DEFAULT_FAMILIES, spelled out so that importing this module does not load egglog (a
# test keeps the two equal)
DEFAULT_RULES = ("cleanup", "algebra", "fold", "merge", "layout")
# families added for compiled targets under the compiler cost model: `linear` (convolutions as
# linear maps), whose rewrites that model prices as eqsat's code runs them. Measured
# (benchmarks/merge_bench.py --rules linear, 1 thread, min of 20, interleaved, loadavg 5-7 on
# 2 cores; CPU-time ratio, the A/A spread of two builds of one graph beside it): Inception
# 1.01x-1.21x in four runs, 1.08x at min of 40 (A/A 1.00; conv1x1-avgpool-commute: the pool
# branch averages its 32/64 output channels, not the 192/256 input channels), ResNeXt
# 1.005x-1.22x, 1.06x at min of 40 (A/A 1.10: within the noise; merge-conv-add: conv3 and
# the projection shortcut as one conv); the five other examples
# compile the same graph. Not with the roofline (onnxruntime's kernels), where the family was
# not measured to pay
COMPILED_RULES = ("linear",)


def rule_families(options: Options) -> tuple[str, ...]:
    """The rule families the e-graph runs: ``options.rules``, else by target
    (:data:`DEFAULT_RULES`, plus :data:`COMPILED_RULES` where extraction prices eqsat's own code:
    a compiled target with the compiler cost model; with the roofline, which prices
    onnxruntime's kernels, the roofline took conv-concat-split on SqueezeNet, 13 convs to 15)."""
    if options.rules is not None:
        return tuple(options.rules)
    own = options.target in COMPILED_TARGETS and cost_model_for(options) == "compiler"
    return DEFAULT_RULES + (COMPILED_RULES if own else ())


def cost_model_for(options: Options) -> str:
    """The cost model extraction uses: ``options.cost_model``, else by target: ``compiler``
    (:mod:`eqsat.extract.compiler_cost`) when the result is eqsat's compiled code, ``roofline``
    (onnxruntime's kernels) when it is an ONNX model."""
    if options.cost_model is not None:
        return options.cost_model
    return "compiler" if options.target in COMPILED_TARGETS else "roofline"


def extractor_for(options: Options) -> str:
    """The extractor (:func:`eqsat.extract.extraction.extract`): ``options.extractor``, else
    ``local`` under the compiler cost model and ``auto`` (the local search, then the ILP's
    solver where shrinking does not prove the plan optimal) under the others.

    Why the solver only there: under the compiler's costs a view (Split, Slice) is free, and
    the search's moves reach the plans the solver finds: measured on the 7 examples with and
    without fusion terms (compile, load 4-7 on 2 cores), the solver improved none of the 14
    plans (NAS-RNN with fusion terms: 2014.9056 against 2014.9081, the tie-break's noise, after
    its 10 s limit), and it costs the scipy import (1.5-4.5 s of wall per compile on this host)
    and up to the time limit. Under onnxruntime's costs the Split is a kernel and NAS-RNN's
    search stays at greedy's plan (2402.3) where the solver finds 1482.6 (its merged
    MatMuls)."""
    if options.extractor is not None:
        return options.extractor
    return "local" if cost_model_for(options) == "compiler" else "auto"


def fusion_terms(options: Options) -> bool:
    """Whether the e-graph holds fusion terms: ``options.fusion_terms``, else wherever they can
    mean something (a compiled target and the compiler cost model); InputError where asked
    for and they cannot.

    Why on by default: with them every example's plan has no more kernels than without
    (BERT 24 -> 22: its Q/K/V merge, which cuts each bias Add off its GEMM, is declined; the
    other six the same kernels), and their latency is the same within the noise (1 thread,
    200 alternated calls, load ~7: BERT 1.011x min, 1.002x median, 0.998x CPU; NAS-RNN 0.98x);
    the cost extraction reports is then the extracted graph's (without them the model prices
    every element-wise op as fused, even where lowering stores it). What they cost: NAS-RNN's
    e-graph doubles (932 to 2047 e-nodes), its extraction 0.4 -> 1.3 s."""
    on = options.fusion_terms
    if on is None:
        return options.target in COMPILED_TARGETS and cost_model_for(options) == "compiler"
    if on and (options.target not in COMPILED_TARGETS or cost_model_for(options) != "compiler"):
        raise InputError(
            "fusion terms need a compiled target and the compiler cost model (an ONNX model "
            "holds no kernels; the other cost models price onnxruntime's)"
        )
    return on


def _compiler_constants():
    """This machine's compiler cost constants (``calibrate_compiler``), keyed by the LLVM
    backend's capabilities, else the packaged default: what extraction prices with and what
    the compiled-model cache key holds (:func:`_cost_constants`)."""
    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.extract.compiler_cost import CompilerConstants

    return CompilerConstants.load(caps_key=Capabilities.host().key())


def _compiler_cost_model(fusion: bool = False, options: Options | None = None):
    """The compiler cost model with :func:`_compiler_constants`; ``fusion``: it prices the
    fusion terms (an element-wise op outside one is a memory pass); ``options``: the tuning
    log the compile reads prices the kernels it has (:func:`tuned_lookup`)."""
    from eqsat.extract.compiler_cost import CompilerCostModel

    log = _tuning(options) if options is not None else None
    tuned = tuned_lookup(log, options.threads) if log is not None else None
    return CompilerCostModel(_compiler_constants(), fusion_terms=fusion, tuned=tuned)


def tuned_lookup(log, threads: int | None):
    """The compiler cost model's ``tuned`` (:data:`eqsat.extract.compiler_cost.TunedLookup`):
    the microseconds of the best schedule ``log`` (a :class:`~eqsat.autoschedule.log.TuningLog`)
    holds on this machine at ``threads`` (None: every core) for the kernel lowering makes of a
    node alone, a one-node graph whose constant inputs are weights (packed once, as in the
    model); None where the log has none, or the node does not lower alone (symbolic dims, an
    op without a compute definition). Cached per node configuration (one lowering each) and
    per kernel signature (one look in the log each); None when the log is empty."""
    import numpy as np

    from eqsat.autoschedule.signature import kernel_signature, machine_key
    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.egraph.ir import Node, make_attrs
    from eqsat.lower.lower import lower

    if not log.records:
        return None
    machine = machine_key(threads or Capabilities.host().cores)
    by_sig: dict[str, float | None] = {}
    by_node: dict[tuple, float | None] = {}

    def logged(sig: str) -> float | None:
        if sig not in by_sig:
            best = log.best(sig, machine)
            by_sig[sig] = best.seconds * 1e6 if best is not None else None
        return by_sig[sig]

    def lookup(op, attrs, ins, outs, weight) -> float | None:
        key = (op, tuple(sorted(attrs.items(), key=lambda a: a[0])), tuple(ins), tuple(outs),
               tuple(weight))  # fmt: skip
        if key in by_node:
            return by_node[key]
        by_node[key] = None
        typed = [t for t in (*ins, *outs) if t is not None]
        if not outs or any(not isinstance(d, int) for t in typed for d in t.shape):
            return None
        names = [f"arg{p}" if t is not None else "" for p, t in enumerate(ins)]  # no loop var name
        types = {n: t for n, t in zip(names, ins, strict=True) if n}
        types.update({f"res{p}": t for p, t in enumerate(outs)})
        weights = {n: np.zeros(t.shape, t.dtype) for n, t, w in zip(names, ins, weight,
                   strict=True) if n and w}  # fmt: skip
        node = Node(op, tuple(names), tuple(f"res{p}" for p in range(len(outs))), make_attrs(attrs))
        graph = TensorGraph(tuple(n for n in names if n and n not in weights),
                            (node.outputs[0],), (node,), types, weights)  # fmt: skip
        try:
            kernels = lower(graph, "tuned").program.kernels
        except ValueError:  # LoweringError, Unsupported: it does not lower alone, the model prices
            return None
        if kernels:
            by_node[key] = logged(kernel_signature(kernels[0]))
        return by_node[key]

    return lookup


def calibrate_compiler(save_to: str | os.PathLike | None = None, reps: int = 15):
    """Measure the compiler cost model's constants on this machine by compiling and timing
    its calibration graphs (:func:`eqsat.extract.compiler_cost.calibrate`, one thread, min of
    ``reps``); saved to ``save_to``, else to the user cache keyed by the capabilities."""
    import platform

    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.compiled import build
    from eqsat.extract.compiler_cost import cache_file, calibrate

    caps = Capabilities.host()

    def time_graph(graph: TensorGraph) -> float:
        import numpy as np

        model = build(graph, "llvm", threads=1)
        rng = np.random.default_rng(0)
        feeds = {i: rng.standard_normal(graph.types[i].shape).astype(np.float32)
                 for i in graph.inputs}  # fmt: skip
        model.run(feeds)
        t0 = time.perf_counter()
        model.run(feeds)
        inner = max(1, int(0.005 / max(time.perf_counter() - t0, 1e-7)))
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            for _ in range(inner):
                model.run(feeds)
            best = min(best, (time.perf_counter() - t0) / inner)
        return best

    machine = f"{platform.node()} {caps.cpu_name} {platform.machine()}"
    return calibrate(time_graph, machine, Path(save_to) if save_to else cache_file(caps.key()))


def _cost_model(
    name: str,
    calibration: str | None = None,
    fusion: bool = False,
    options: Options | None = None,
):
    from eqsat.extract.cost import AstSize
    from eqsat.extract.measured import MeasuredCostModel
    from eqsat.extract.roofline import RooflineConstants, RooflineCostModel

    models = {"roofline": RooflineCostModel, "measured": MeasuredCostModel, "ast-size": AstSize,
              "compiler": _compiler_cost_model}  # fmt: skip
    assert tuple(models) == COST_MODELS
    if name not in models:
        raise InputError(f"unknown cost model {name!r}; known: {', '.join(models)}")
    if name == "compiler":
        return _compiler_cost_model(fusion, options)
    if calibration is None or name == "ast-size":
        return models[name]()
    try:
        roofline = RooflineCostModel(RooflineConstants.load(Path(calibration)))
    except (OSError, ValueError, TypeError) as e:
        raise InputError(
            f"--calibration {calibration}: not a file of `eqsat calibrate -o` ({e})"
        ) from None
    return roofline if name == "roofline" else MeasuredCostModel(fallback=roofline)


HARD_LIMIT_GRACE = 30.0  # seconds past the soft limits before the child is killed


class EGraphStageError(RuntimeError):
    """The e-graph stages failed in the child process; the message names the original error."""


class HardTimeLimit(EGraphStageError):
    """The e-graph stages overran their hard time limit and were killed."""


def _egraph_stages(graph: TensorGraph, options: Options, timer: _Timer):
    """encode → saturate → extract; returns the extracted graph and the statistics. Options
    are checked here (InputError); the work runs in a child when ``options.isolate``. The
    rules are chosen and checked against the ledger here, once: the forked child inherits them
    (building them again there cost another 0.02-0.2 s)."""
    from eqsat.extract.extraction import EXTRACTORS
    from eqsat.rules import printed, schedule

    with timer.phase("rules"):  # loading egglog and building the rulesets: a fixed cost
        try:
            families = rule_families(options)
            if fusion_terms(options) and "fusion" not in families:
                families += ("fusion",)
            elif "fusion" in families and not fusion_terms(options):
                raise ValueError("the fusion family is for compiled targets (--target llvm)")
            chosen = schedule.select(families, options.disabled_rules, options.rules_file)
        except ValueError as e:
            raise InputError(str(e)) from e
        if extractor_for(options) not in EXTRACTORS:
            known = ", ".join(EXTRACTORS)
            raise InputError(f"unknown extractor {options.extractor!r}; known: {known}")
        # reads its constants: a missing file fails here, in one line
        _cost_model(cost_model_for(options), options.calibration, fusion_terms(options))
        with printed.batch():  # the ledger's hashes print every rule: one cache write
            rules, unproved = _proved(chosen, options)  # a missing ledger fails here too
            rules = schedule.relevant(rules, _ctors(graph))
        shape_rules = None
        if options.shape_check:
            from eqsat.egraph import shapes

            # built here (the child inherits it)
            shape_rules = shapes.shape_rules(sizes=schedule.reads_sizes(chosen))
    picked = (rules, unproved, shape_rules)
    if options.isolate and "fork" in multiprocessing.get_all_start_methods():
        return _in_child(graph, options, picked, timer)
    return _egraph_work(graph, options, picked, timer)


def _in_child(graph: TensorGraph, options: Options, picked: tuple, timer: _Timer):
    """:func:`_egraph_work` in a forked child. The child inherits ``graph`` (no copy) and sends
    back phase names (for the progress display), then the extracted graph *without* the weights
    it shares with ``graph`` (a 2 GB model is not pickled back), or the error."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)
    child = ctx.Process(target=_child_main, args=(graph, options, picked, send), daemon=True)
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
                if cls in _CHILD_ERRORS:
                    raise _CHILD_ERRORS[cls](msg.removeprefix(f"{cls}: "))
                raise EGraphStageError(msg)
    finally:
        if child.is_alive():
            child.kill()
        child.join()
        receive.close()
    for k, v in times.items():
        timer.times[k] = timer.times.get(k, 0.0) + v
    return out.replace(weights={**{k: graph.weights[k] for k in shared}, **own}), stats


# errors of the child that are the user's to fix, raised again as such in the parent
_CHILD_ERRORS = {"InputError": InputError, "DataFileError": DataFileError}


def _child_main(graph: TensorGraph, options: Options, picked: tuple, send) -> None:
    timer = _Timer(lambda phase: send.send(("phase", phase)))
    try:
        out, stats = _egraph_work(graph, options, picked, timer)
        own = {k: v for k, v in out.weights.items() if graph.weights.get(k) is not v}
        shared = [k for k in out.weights if k not in own]  # in order: names only
        send.send(("done", (out.replace(weights={}), shared, own, stats, timer.times)))
    except BaseException as e:  # everything goes back to the parent, which decides
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        send.send(("error", (type(e).__name__, f"{type(e).__name__}: {first}"[:300])))
    finally:
        send.close()


def _egraph_work(graph: TensorGraph, options: Options, picked: tuple, timer: _Timer):
    """encode → saturate → extract (see :func:`_egraph_stages`); ``picked``: the rules kept
    (proved, relevant), the names of those left out as unproved, and the shape analysis's
    ruleset (None without ``options.shape_check``)."""
    from eqsat.egraph import shapes
    from eqsat.egraph.encode import encode
    from eqsat.egraph.saturate import saturate
    from eqsat.extract.extraction import extract
    from eqsat.rules import schedule

    rules, unproved, shape_rules = picked
    with timer.phase("rules"):
        cost_model = _cost_model(
            cost_model_for(options), options.calibration, fusion_terms(options), options
        )
    with timer.phase("encode"):
        enc = encode(graph)
        rulesets = schedule.rulesets(rules)
        if shape_rules is not None:
            shapes.seed(enc)
            rulesets = [shape_rules, *rulesets]
    with timer.phase("saturate"):
        sat = saturate(
            enc,
            rulesets,
            iter_limit=options.iter_limit,
            node_limit=options.node_limit,
            time_limit=options.time_limit,
            rewrites=schedule.rewrites(rules),
        )
        if shape_rules is not None:
            shapes.check_shapes(enc.egraph)  # ShapeConflict: a rule is unsound
    with timer.phase("extract"):
        ex = extract(
            sat, cost_model, extractor=extractor_for(options), time_limit=options.extract_time_limit
        )
        # with fusion terms the input graph records no kernels: none fused, its element-wise
        # values inlined or stored as lowering would (extraction.unstored_nodes)
        before = extract_cost(graph, cost_model, fusion_terms(options))
    rewrites, analysis = rules_fired(sat.matches, rules)
    stats = {
        "rules": len(rules),
        "rewrites_fired": rewrites,
        "analysis": {"rules_fired": len(analysis), "matches": sum(analysis.values())},
        "unproved_left_out": unproved,
        "saturation": sat.summary(),
        "extraction": ex.summary(),
        "cost_model": cost_model.name,
        "fusion_terms": fusion_terms(options),
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
    names of those left out. A rules file of ``rules discover -o`` carries its own proofs,
    which take precedence for its rules (each proof is still checked against the rule's
    hash)."""
    if options.allow_unproved:
        return rules, []
    from eqsat.verify.ledger import holds, load_proofs

    ledger = load_proofs(options.rules_file)
    kept = [r for r in rules if holds(r, ledger)]
    return kept, [r.name for r in rules if not holds(r, ledger)]


def extract_cost(graph: TensorGraph, cost_model, fusion_terms: bool | None = None) -> float:
    """The cost of a graph as it stands, priced as extraction prices it
    (:func:`eqsat.extract.extraction.graph_cost`; ``fusion_terms``: as in an e-graph that
    holds them, the graph's own kernels not recorded)."""
    from eqsat.extract.extraction import graph_cost

    return graph_cost(graph, cost_model, fusion_terms)


def summarize(source: onnx.ModelProto, graph: TensorGraph | None) -> dict:
    """What ``eqsat info`` shows: the file's opset, op histogram and node count (as written,
    Constant nodes included: the count ``optimize`` reports as ``nodes_before``), parameters,
    FLOPs and the interface. ``graph`` None: the model could not be imported (a value eqsat
    cannot type); what the file alone tells is still shown, FLOPs and types where it has them."""
    declared = {o.domain: o.version for o in source.opset_import}
    opset = declared.get("", declared.get("ai.onnx"))
    opaque = sorted({_op_key(n) for n in source.graph.node if _is_opaque(n)})
    s = {
        "opset": opset,
        "producer": f"{source.producer_name} {source.producer_version}".strip(),
        "nodes": len(source.graph.node),
        "ops": op_histogram(source),
        "opaque_ops": opaque,
    }
    if graph is None:
        return s | {
            "params": sum(_numel(t.dims) for t in source.graph.initializer),
            "param_bytes": sum(_stored_bytes(t) for t in source.graph.initializer),
            "flops": None,
            "inputs": [_declared_io(vi) for vi in _feeds(source)],
            "outputs": [_declared_io(vi) for vi in source.graph.output],
        }
    flops = 0
    for n in graph.nodes:
        ins = [graph.types.get(i) if i else None for i in n.inputs]
        outs = [graph.types[o] for o in n.outputs if o]
        flops += node_flops(n, ins, outs)
    return s | {
        "params": graph.param_count(),
        "param_bytes": graph.param_bytes(),
        "flops": int(flops),
        "inputs": [_io(graph, i) for i in graph.inputs],
        "outputs": [_io(graph, o) for o in graph.outputs],
    }


def _op_key(n: onnx.NodeProto) -> str:
    return f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type


def _is_opaque(n: onnx.NodeProto) -> bool:
    return n.op_type != "Constant" and onnx_io.node_from_proto(n).opaque is not None


def _stored_bytes(t: onnx.TensorProto) -> int:
    """A weight's bytes as the file stores them (a large one, read in place, is a reference to
    its bytes in the file: the reference's length, not the proto's)."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        return onnx_files.external_ref(t)[2]
    return len(t.raw_data) or t.ByteSize()


def _numel(dims) -> int:
    out = 1
    for d in dims:
        out *= int(d)
    return out


def _feeds(source: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {t.name for t in source.graph.initializer}
    return [vi for vi in source.graph.input if vi.name not in inits]


def _declared_io(vi: onnx.ValueInfoProto) -> dict:
    """An input or output as the file declares it (dtype and shape None where it does not)."""
    try:
        t = value_type(vi, "value", fresh_dims=True)
    except InputError:
        t = None
    if t is None:
        tt = vi.type.tensor_type
        dtype = None
        if tt.elem_type:
            with contextlib.suppress(Exception):
                dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
        return {"name": vi.name, "dtype": dtype, "shape": None}
    return {"name": vi.name, "dtype": t.dtype, "shape": list(t.shape)}


def _io(graph: TensorGraph, name: str) -> dict:
    t = graph.types[name]
    return {"name": name, "dtype": t.dtype, "shape": list(t.shape)}


def example_model(name: str, size: str = "default") -> onnx.ModelProto:
    from eqsat.examples import build_example

    try:
        return build_example(name, size=size)
    except KeyError as e:
        raise InputError(str(e).strip("'\"")) from e
