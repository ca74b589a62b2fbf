"""The pipeline: composes the stages (the only module that imports them all besides the CLI).

``optimize``: ONNX → import → constant folding and dead-code removal → encode into an e-graph →
saturate with the rule schedule → extract under a cost model (roofline by default) → export →
onnx.checker → verification gate (original vs optimized in onnxruntime) → :class:`Result`.
With an output path the file is written atomically: into a temporary directory beside the
target, checked and verified there, and renamed into place only when everything passed — a
failure leaves no file.
"""

from __future__ import annotations

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
    rules: tuple[str, ...] = ("cleanup",)  # rule families (see eqsat.rules.schedule)
    disabled_rules: tuple[str, ...] = ()
    iter_limit: int = 30
    node_limit: int = 100_000
    time_limit: float = 60.0
    cost_model: str = "roofline"  # roofline | ast-size


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
            stats = {"error": f"{type(e).__name__}: {first}"[:300], "fallback": "folded graph"}
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
    from eqsat.extract.roofline import RooflineCostModel

    models = {"roofline": RooflineCostModel, "ast-size": AstSize}
    if name not in models:
        raise InputError(f"unknown cost model {name!r}; known: {', '.join(models)}")
    return models[name]()


def _egraph_stages(graph: TensorGraph, options: Options, timer: _Timer):
    """encode → saturate → extract; returns the extracted graph and the statistics."""
    from eqsat.egraph.encode import encode
    from eqsat.egraph.saturate import saturate
    from eqsat.extract.extraction import extract
    from eqsat.rules import schedule

    try:
        rules = schedule.select(options.rules, options.disabled_rules)
    except ValueError as e:
        raise InputError(str(e)) from e
    cost_model = _cost_model(options.cost_model)
    with timer.phase("encode"):
        enc = encode(graph)
    with timer.phase("saturate"):
        sat = saturate(
            enc,
            schedule.rulesets(rules),
            iter_limit=options.iter_limit,
            node_limit=options.node_limit,
            time_limit=options.time_limit,
        )
    with timer.phase("extract"):
        ex = extract(sat, cost_model)
        before = extract_cost(graph, cost_model)
    with timer.phase("fold"):
        extracted = passes.fold_constants(ex.graph, bounded=False)  # weight-only subterms
    stats = {
        "rules": len(rules),
        "saturation": sat.summary(),
        "extraction": ex.summary(),
        "cost_model": cost_model.name,
        "cost_before": before,
        "cost_after": ex.cost,
    }
    return extracted, stats


def extract_cost(graph: TensorGraph, cost_model) -> float:
    """The cost of a graph as it stands (weight-only nodes are free, as in extraction)."""
    total = 0.0
    for n in graph.nodes:
        ins = [graph.types.get(i) if i else None for i in n.inputs]
        outs = [graph.types[o] for o in n.outputs if o]
        total += cost_model.node_cost(n.op, n.attr, ins, outs)
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
