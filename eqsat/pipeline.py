"""The pipeline: composes the stages (the only module that imports them all besides the CLI).

``optimize``: ONNX → import → constant folding and dead-code removal → encode into an e-graph →
saturate with the rule schedule → extract under a cost model (roofline by default) → export →
onnx.checker → verification gate (original vs optimized in onnxruntime) → :class:`Result`.
With an output path the file is written atomically: into a temporary directory beside the
target, checked and verified there, and renamed into place only when everything passed — a
failure leaves no file.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from eqsat.egraph import onnx_io, passes
from eqsat.egraph.ir import TensorGraph
from eqsat.egraph.ops import node_flops
from eqsat.errors import InputError, VerificationError
from eqsat.verify import numeric

Progress = Callable[[str], None]


@dataclass
class Options:
    """Every setting of a pipeline run, in one place (the CLI fills it from flags)."""

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


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Op counts of an ONNX file as written (Constant nodes included), like onnxsim's table."""
    hist: dict[str, int] = {}
    for n in model.graph.node:
        key = f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        hist[key] = hist.get(key, 0) + 1
    return dict(sorted(hist.items()))


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
            "egraph": self.egraph,
            "verification": self.verdict.to_json() if self.verdict else None,
        }


class _Timer:
    def __init__(self, progress: Progress | None):
        self.times: dict[str, float] = {}
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
    timer = _Timer(progress)
    with timer.phase("import"):
        source = load(model)
        base_dir = None if isinstance(model, onnx.ModelProto) else Path(model).parent
        original = onnx_io.import_onnx(source, base_dir)
    graph = original
    if options.fold_constants:
        with timer.phase("fold"):
            graph = passes.fold_constants(graph)
    with timer.phase("dce"):
        graph = passes.eliminate_dead_code(graph)
    stats = None
    if options.egraph:
        try:
            graph, stats = _egraph_stages(graph, options, timer)
        except InputError:
            raise
        except Exception as e:  # a bug in the e-graph stages must not cost the user the run:
            # the folded graph is still correct (and still goes through the gate); say so.
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            error = first if isinstance(e, EGraphStageError) else f"{type(e).__name__}: {first}"
            stats = {"error": error[:300], "fallback": "folded graph"}
    with timer.phase("export"):
        out_model = onnx_io.export_onnx(graph)
    result = Result(source, original, graph, out_model, timer.times, egraph=stats)
    with tempfile.TemporaryDirectory(
        prefix=".eqsat-", dir=Path(output).parent if output else None
    ) as tmp:
        name = Path(output).name if output else "optimized.onnx"
        files = onnx_io.save_model(out_model, Path(tmp) / name, weights=graph.weights)
        with timer.phase("check"):
            try:
                onnx.checker.check_model(str(files[0]), full_check=True)
            except onnx.checker.ValidationError as e:
                raise VerificationError(f"the optimized model fails onnx.checker: {e}") from e
        if options.verify:
            with timer.phase("verify"):
                reference = model if not isinstance(model, onnx.ModelProto) else source
                try:
                    result.verdict = numeric.compare_models(
                        reference,
                        files[0],
                        seeds=options.seeds,
                        rtol=options.rtol,
                        atol=options.atol,
                    )
                except InputError as e:
                    raise InputError(
                        f"{e} — the verification gate runs both models in onnxruntime; "
                        "--no-verify skips it"
                    ) from e
            if not result.verdict.ok:
                raise VerificationError(
                    f"verification failed, no output written: {result.verdict.reason} "
                    f"(max abs error {result.verdict.max_abs:.3g})"
                )
        if output:
            dest = Path(output).parent
            for f in files:
                os.replace(f, dest / f.name)
            result.output = Path(output)
    return result


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
    """encode → saturate → extract → fold; returns the extracted graph and the statistics.
    Options are checked here (InputError); the work runs in a child when ``options.isolate``."""
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
        extracted, stats = _in_child(graph, options, timer)
    else:
        extracted, stats = _egraph_work(graph, options, timer)
    with timer.phase("fold"):
        extracted = passes.fold_constants(extracted, bounded=False)  # weight-only subterms
        extracted = passes.eliminate_dead_code(passes.slices_to_split(extracted))
    return extracted, stats


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
