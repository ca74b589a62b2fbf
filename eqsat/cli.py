"""The ``eqsat`` command line: argv → pipeline calls, tables, exit codes.

Exit codes: 0 ok; 1 verification failed (the models differ, nothing written); 2 bad input or
usage (one line on stderr, never a traceback); 3 internal error (a bug: one line, and the
traceback only with EQSAT_DEBUG=1); 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from eqsat import __version__
from eqsat.errors import EqsatError, InputError, UntypedValueError

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)


def _fmt_count(n: float) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f}{unit}"
    return f"{n:g}"


def _shape(s) -> str:
    if s is None:
        return "?"
    return "[" + ", ".join(str(d) for d in s) + "]"


def _seeds(text: str) -> tuple[int, ...]:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError("--seeds takes a count, e.g. 3") from e
    if n < 1:
        raise argparse.ArgumentTypeError("--seeds must be at least 1")
    return tuple(range(n))


def _positive(kind):
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"not a number: {text}") from e
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text}")
        return v

    return parse


def _add_tolerance(p: argparse.ArgumentParser) -> None:
    from eqsat.verify import numeric

    p.add_argument("--rtol", type=float, default=numeric.DEFAULT_RTOL, help="relative tolerance")
    p.add_argument("--atol", type=float, default=numeric.DEFAULT_ATOL, help="absolute tolerance")
    p.add_argument(
        "--seeds", type=_seeds, default=numeric.DEFAULT_SEEDS, help="random input sets (count)"
    )


def _add_input_shape(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D0,D1,...",
        help=f"an input's shape (repeatable; onnxsim's convention): {what}",
    )


def _input_shapes(specs: list[str]) -> tuple[tuple[str, tuple[int, ...]], ...]:
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, eq, value = spec.rpartition("=")
        dims = value.split(",")
        if not eq or not name or not all(d.strip().isdigit() and int(d) > 0 for d in dims):
            raise InputError(
                f"--input-shape {spec}: write NAME=D0,D1,... with positive sizes "
                "(images=1,3,640,640)"
            )
        if name in out:
            raise InputError(f"--input-shape {name}: given twice")
        out[name] = tuple(int(d) for d in dims)
    return tuple(out.items())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eqsat", description="Equality-saturation optimizer for ONNX models."
    )
    p.add_argument("--version", action="version", version=f"eqsat {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="op histogram, parameters, FLOPs, inputs/outputs")
    info.add_argument("model", nargs="?", help="an .onnx file")
    info.add_argument("--example", help="a bundled example model instead of a file")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    opt = sub.add_parser("optimize", help="optimize a model (verified before it is written)")
    opt.add_argument("model", nargs="?", help="an .onnx file (default: a bundled example)")
    opt.add_argument("-o", "--output", help="where to write the optimized model")
    opt.add_argument("--example", help="a bundled example model (see `eqsat examples`)")
    opt.add_argument("--json", action="store_true", help="machine-readable summary")
    opt.add_argument("--report", metavar="OUT.html", help="write an HTML report (+ .json)")
    opt.add_argument(
        "--no-verify", action="store_true", help="skip the verification gate (not recommended)"
    )
    opt.add_argument(
        "--rules",
        default="cleanup,algebra,fold,merge,layout",
        help="rule families, comma-separated",
    )
    opt.add_argument(
        "--disable-rule", action="append", default=[], metavar="NAME", help="leave a rule out"
    )
    opt.add_argument(
        "--iter-limit", type=_positive(int), default=30,
        help="iterations of each run of the rules (the first, then one after each Python rewrite)",
    )  # fmt: skip
    opt.add_argument("--node-limit", type=_positive(int), default=100_000, help="e-node limit")
    opt.add_argument(
        "--time-limit",
        type=_positive(float),
        default=60.0,
        help="seconds of saturation (checked between iterations; the e-graph process is killed "
        "past time limit + extract time limit + 30 s and the folded model is written)",
    )
    opt.add_argument(
        "--cost-model",
        default="roofline",
        choices=["roofline", "measured", "ast-size"],
        help="roofline (estimated), measured (each kernel timed once in onnxruntime, cached)",
    )
    opt.add_argument(
        "--extractor",
        default="auto",
        choices=["auto", "greedy", "ilp"],
        help="greedy DAG, ILP (never worse than greedy), or auto (ILP unless the e-graph is huge)",
    )
    opt.add_argument(
        "--extract-time-limit", type=_positive(float), default=10.0, help="seconds for the ILP"
    )
    opt.add_argument("--no-egraph", action="store_true", help="only fold constants and DCE")
    opt.add_argument(
        "--allow-unproved",
        action="store_true",
        help="also use rules the proof ledger does not prove as written (see `eqsat rules list`)",
    )
    _add_input_shape(opt, "the model is specialized to it and the gate runs at it")
    _add_tolerance(opt)

    ver = sub.add_parser("verify", help="numerical equivalence of two models in onnxruntime")
    ver.add_argument("a", help="reference model")
    ver.add_argument("b", help="candidate model")
    ver.add_argument("--json", action="store_true", help="machine-readable verdict")
    ver.add_argument("--report", metavar="OUT.html", help="write an HTML report (+ .json)")
    _add_input_shape(ver, "both models run at it")
    _add_tolerance(ver)

    cal = sub.add_parser("calibrate", help="measure this machine's roofline cost constants")
    cal.add_argument("-o", "--output", help="file to write (default: the user cache)")

    rules = sub.add_parser("rules", help="the rewrite rules: list them, or verify them with Z3")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    rl = rsub.add_parser("list", help="every rule: family, proof claim and status, exactness")
    rl.add_argument("--json", action="store_true", help="machine-readable list")
    rv = rsub.add_parser("verify", help="prove rules with Z3 (bounded shape instances)")
    rv.add_argument("names", nargs="*", help="rules to verify (default: all)")
    rv.add_argument("--write-ledger", action="store_true", help="record the results")
    rv.add_argument("--json", action="store_true", help="machine-readable verdicts")

    rd = rsub.add_parser(
        "discover", help="generate rules: enumerate small graphs, fingerprint, prove, prune"
    )
    rd.add_argument("--max-ops", type=int, default=3, help="ops per side, at most (1-4)")
    rd.add_argument(
        "--ops",
        default="",
        help="op set, comma-separated (default: matmul, add, mul, smul, transpose, relu, "
        "concat, split, conv, pool, enlarge, valid; conv and pool are padded to keep H and W, "
        "valid is the convolution and the pools without padding; also sub, neg)",
    )
    rd.add_argument(
        "--variables",
        type=int,
        default=4,
        help="tensor variables x, y, z, w: how many (1-4; 4 finds x·z + y·w = [x y]·[z; w]); "
        "the rank-4 tensors of the conv ops take at most 3",
    )
    rd.add_argument("--workers", type=int, default=0, help="processes (default: all cores)")
    rd.add_argument("--ray", metavar="ADDRESS", help="run the work units on a Ray cluster")
    rd.add_argument("--no-prune", action="store_true", help="keep rules implied by others")
    rd.add_argument(
        "-o",
        "--output",
        help="rules file to write (default: the `generated` family's file; only that one "
        "updates the proof ledger)",
    )
    rd.add_argument("--json", action="store_true", help="machine-readable summary")

    comp = sub.add_parser(
        "compile", help="compile a model to eqsat's own code (verified before it is written)"
    )
    comp.add_argument("model", nargs="?", help="an .onnx file")
    comp.add_argument("--example", help="a bundled example model (see `eqsat examples`)")
    comp.add_argument("-o", "--output", help="the compiled model to write (model.eqsat)")
    comp.add_argument(
        "--target",
        default="llvm",
        help="llvm (native code for this CPU; default) or cuda (PTX for sm_80 and sm_90: with "
        "--emit only, nothing is written since no GPU verifies it)",
    )
    comp.add_argument(
        "--threads", type=_positive(int), help="threads for parallel loops (default: all cores)"
    )
    comp.add_argument(
        "--no-optimize", action="store_true", help="compile the graph as imported (no e-graph)"
    )
    comp.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="DIM=N",
        help="fix a symbolic input dim at compile time (repeatable); others stay run-time sizes",
    )
    _add_input_shape(comp, "fixed at compile time, and the gate runs at it")
    comp.add_argument(
        "--emit",
        nargs=2,
        metavar=("WHAT", "DIR"),
        help="also write the loop nests (loops), LLVM IR (llvm) or assembly (asm) into DIR",
    )
    comp.add_argument("--no-verify", action="store_true", help="skip the verification gate")
    comp.add_argument(
        "--no-cache", action="store_true", help="compile again even if this model is cached"
    )
    comp.add_argument("--json", action="store_true", help="machine-readable summary")

    run = sub.add_parser("run", help="run a compiled model on inputs from .npy files")
    run.add_argument("model", help="a compiled model (.eqsat)")
    run.add_argument(
        "--input", action="append", default=[], metavar="NAME=FILE.npy", help="an input's value"
    )
    run.add_argument("--random", action="store_true", help="random values for the inputs not given")
    run.add_argument("-o", "--output", help="write the outputs to this .npz file")
    run.add_argument("--bench", type=_positive(int), metavar="N", help="time N runs")
    run.add_argument("--threads", type=_positive(int), help="threads (default: all cores)")
    run.add_argument("--json", action="store_true", help="machine-readable summary")

    bench = sub.add_parser(
        "bench", help="onnxruntime (original, optimized) against the compiled model, timed"
    )
    bench.add_argument("model", nargs="?", help="an .onnx file")
    bench.add_argument("--example", help="a bundled example model")
    bench.add_argument("--threads", type=_positive(int), default=1, help="threads (default 1)")
    bench.add_argument("--reps", type=_positive(int), default=15, help="repetitions (default 15)")
    bench.add_argument("--json", action="store_true", help="machine-readable results")

    ops = sub.add_parser("ops", help="the op table: which facet every stage has for each op")
    ops.add_argument("--json", action="store_true", help="print the matrix as JSON")
    ops.add_argument(
        "--gaps", action="store_true", help="only the facets a stage needs and lacks (exit 1)"
    )
    ex = sub.add_parser("examples", help="list the bundled example models, or write one")
    ex.add_argument("--write", metavar="NAME", help="write this example as NAME.onnx")
    ex.add_argument("-o", "--output", help="file to write (with --write)")
    ex.add_argument("--size", default="default", choices=["default", "small"])
    return p


# ------------------------------------------------------------------------------ commands


def _source(args, default: str | None = "bert") -> tuple[object, str]:
    """The model a command reads: a file, or a bundled example (``default`` when neither is
    given; None: one of them is required)."""
    from eqsat import pipeline

    if args.model and args.example:
        raise InputError("give a model file or --example, not both")
    if args.model:
        return Path(args.model), args.model
    name = args.example or default
    if name is None:
        raise InputError("give a model file or --example NAME")
    return pipeline.example_model(name), f"example:{name}"


def _check_output(output: str, model: str | None) -> None:
    """An output path that can be written: not a folder, in a folder that exists, not the input."""
    if Path(output).is_dir():
        raise InputError(f"{output} is a directory")
    if not Path(output).resolve().parent.is_dir():
        raise InputError(f"{output}: the directory {Path(output).parent} does not exist")
    if model and Path(output).resolve() == Path(model).resolve():
        raise InputError("the output would overwrite the input; choose another -o")


def cmd_info(args) -> int:
    from eqsat import pipeline
    from eqsat.egraph.onnx_io import import_onnx

    src, label = _source(args)
    source = pipeline.load(src)
    try:
        graph, problem = import_onnx(source, Path(src).parent if args.model else None), None
    except UntypedValueError as e:  # still show what the file tells (ops, params, interface)
        graph, problem = None, str(e)
    s = pipeline.summarize(source, graph)
    if problem:
        s["error"] = problem
        err.print(
            f"eqsat: warning: {problem}; shown as the file declares it (no FLOPs)",
            markup=False,
            soft_wrap=True,
        )
    if args.json:
        print(json.dumps({"model": label} | s, indent=2))
        return 0
    out.print(f"[bold]{label}[/]  opset {s['opset']}  {s['producer']}")
    io = Table("", "name", "dtype", "shape", box=None)
    for kind in ("inputs", "outputs"):
        for v in s[kind]:
            io.add_row(kind[:-1], v["name"], v["dtype"] or "?", _shape(v["shape"]))
    out.print(io)
    ops = Table("op", "count", box=None)
    for op, n in sorted(s["ops"].items(), key=lambda kv: (-kv[1], kv[0])):
        ops.add_row(op + (" (opaque)" if op in s["opaque_ops"] else ""), str(n))
    out.print(ops)
    flops = "unknown" if s["flops"] is None else _fmt_count(s["flops"])
    out.print(
        f"nodes {s['nodes']}   params {_fmt_count(s['params'])} "
        f"({_fmt_count(s['param_bytes'])}B)   FLOPs {flops}"
        + ("   (symbolic dims counted as 1)" if _symbolic(s) else "")
    )
    return 0


def _symbolic(s: dict) -> bool:
    return any(isinstance(d, str) for v in s["inputs"] for d in v["shape"] or ())


def cmd_optimize(args) -> int:
    from eqsat import pipeline

    src, label = _source(args)
    output = args.output
    if output is None:
        if args.model:
            raise InputError("-o/--output is required when optimizing a file")
        output = f"{label.split(':', 1)[1]}-optimized.onnx"
    _check_output(output, args.model)
    _check_report_path(args.report)
    opts = pipeline.Options(
        verify=not args.no_verify,
        rtol=args.rtol,
        atol=args.atol,
        seeds=args.seeds,
        egraph=not args.no_egraph,
        rules=tuple(r for r in args.rules.split(",") if r),
        disabled_rules=tuple(args.disable_rule),
        iter_limit=args.iter_limit,
        node_limit=args.node_limit,
        time_limit=args.time_limit,
        cost_model=args.cost_model,
        extractor=args.extractor,
        extract_time_limit=args.extract_time_limit,
        allow_unproved=args.allow_unproved,
        input_shapes=_input_shapes(args.input_shape),
    )
    show = not args.json and err.is_terminal
    with err.status("optimizing", spinner="dots") if show else _nullctx() as status:

        def progress(phase: str) -> None:
            if status is not None:
                status.update(f"{label}: {phase}")

        result = pipeline.optimize(src, opts, output=output, progress=progress)
        if args.report:
            if status is not None:
                status.update(f"{label}: report (timing both models)")
            _report(
                "optimize",
                result.verdict,
                result.source,
                result.model,
                (label, str(output)),
                args.report,
                result.egraph,
            )
    summary = {"model": label} | result.to_json()
    if args.report:
        summary["report"] = str(args.report)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    _print_optimize(summary)
    if args.report:
        out.print(f"report: {args.report} (and {Path(args.report).with_suffix('.json')})")
    return 0


def _check_report_path(path: str | None) -> None:
    if path and not Path(path).resolve().parent.is_dir():
        raise InputError(f"--report {path}: the directory {Path(path).parent} does not exist")


def _report(kind, verdict, reference, candidate, labels, path, egraph=None) -> None:
    from eqsat.verify import report

    if verdict is None:
        raise InputError("--report needs the verification gate (drop --no-verify)")
    data = report.build(kind, verdict, reference, candidate, labels, egraph)
    try:
        report.write(data, Path(path))
    except OSError as e:
        raise InputError(f"cannot write the report {path}: {e.strerror or e}") from e


class _nullctx:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _print_optimize(s: dict) -> None:
    t = Table("op", "before", "after", box=None)
    ops = sorted(set(s["ops_before"]) | set(s["ops_after"]))
    for op in ops:
        b, a = s["ops_before"].get(op, 0), s["ops_after"].get(op, 0)
        style = "green" if a < b else ("red" if a > b else "")
        t.add_row(op, str(b), f"[{style}]{a}[/]" if style else str(a))
    t.add_row("[bold]total[/]", str(s["nodes_before"]), str(s["nodes_after"]))
    out.print(t)
    eg = s.get("egraph")
    if eg and "error" in eg:
        err.print(
            f"eqsat: warning: the e-graph stage failed ({eg['error']}); wrote the "
            "constant-folded model instead",
            markup=False,
            soft_wrap=True,
        )
    from eqsat.pipeline import summary_lines

    for line in summary_lines(s, ops=False):
        out.print(line, markup=False, soft_wrap=True)


def cmd_verify(args) -> int:
    from eqsat.egraph.onnx_files import materialize
    from eqsat.egraph.onnx_io import load_model
    from eqsat.verify import numeric

    _check_report_path(args.report)
    # read once (one-line errors for unreadable files); the weights stay in the files
    a = numeric.LoadedModel(load_model(args.a), Path(args.a).parent)
    b = numeric.LoadedModel(load_model(args.b), Path(args.b).parent)
    v = numeric.compare_models(
        a, b, seeds=args.seeds, rtol=args.rtol, atol=args.atol,
        input_shapes=dict(_input_shapes(args.input_shape)),
    )  # fmt: skip
    if args.report:
        ma, mb = (materialize(m.model, m.base_dir) for m in (a, b))
        _report("verify", v, ma, mb, (args.a, args.b), args.report)
    if args.json:
        print(json.dumps(v.to_json(), indent=2, default=str))
    else:
        t = Table("output", "shape", "max abs", "max rel", "max ulp", "ok", box=None)
        for o in v.outputs:
            t.add_row(
                o.name,
                _shape(o.shape),
                f"{o.max_abs:.3g}",
                f"{o.max_rel:.3g}",
                str(o.max_ulp),
                "[green]yes[/]" if o.ok else "[red]NO[/]",
            )
        out.print(t)
        dims = ", ".join(f"{k}={n}" for k, n in v.dim_values.items())
        out.print(
            f"{len(v.seeds)} random input sets{' (' + dims + ')' if dims else ''}; "
            f"rtol {v.rtol:g}, atol {v.atol:g}: "
            + ("[green]equivalent[/]" if v.ok else f"[red]DIFFERENT[/] — {v.reason}")
        )
    return 0 if v.ok else 1


def cmd_calibrate(args) -> int:
    from eqsat.extract.roofline import cache_file, calibrate

    path = Path(args.output) if args.output else cache_file()
    with err.status("measuring (about 5 s)", spinner="dots") if err.is_terminal else _nullctx():
        c = calibrate(path)
    peaks = ", ".join(
        f"{k} {v:g}" for k, v in sorted(c.peak_gflops.items()) if v != c.bandwidth_gbs
    )
    out.print(
        f"per-kernel overhead {c.overhead_us:g} us, bandwidth {c.bandwidth_gbs:g} GB/s, "
        f"peak GFLOP/s: {peaks}"
    )
    out.print(f"wrote {path}")
    return 0


def cmd_examples(args) -> int:
    from eqsat import pipeline
    from eqsat.egraph.onnx_io import save_model
    from eqsat.examples import example_names

    if not args.write:
        for name in example_names():
            out.print(name)
        return 0
    model = pipeline.example_model(args.write, size=args.size)
    path = args.output or f"{args.write}.onnx"
    save_model(model, path)
    out.print(f"wrote {path}")
    return 0


def _shapes(specs: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for spec in specs:
        name, eq, value = spec.partition("=")
        if not eq or not name or not value.isdigit() or int(value) < 1:
            raise InputError(f"--shape {spec}: write DIM=N with a positive N (batch=8)")
        out.append((name, int(value)))
    return tuple(out)


def cmd_compile(args) -> int:
    from eqsat import pipeline

    src, label = _source(args, default=None)
    if args.output is not None:
        _check_output(args.output, args.model)
    if args.emit and args.emit[0] not in ("loops", "llvm", "asm"):
        raise InputError(f"--emit {args.emit[0]}: one of loops, llvm, asm")
    if args.target == "cuda" and (not args.emit or args.output):
        from eqsat.backends.cuda import NO_GPU

        raise InputError(f"no artifact written: {NO_GPU}")  # exit 2, before compiling
    opts = pipeline.Options(
        target=args.target,
        threads=args.threads,
        egraph=not args.no_optimize,
        shapes=_shapes(args.shape),
        input_shapes=_input_shapes(args.input_shape),
        verify=not args.no_verify,
        cache=not args.no_cache and not args.emit,  # --emit shows the code it generates
    )
    show = not args.json and err.is_terminal
    with err.status("compiling", spinner="dots") if show else _nullctx() as status:

        def progress(phase: str) -> None:
            if status is not None:
                status.update(f"{label}: {phase}")

        result = pipeline.compile(src, opts, output=args.output, progress=progress)
    if args.emit:
        from eqsat.compiled import emit

        emitted = emit(result.compiled, args.emit[0], Path(args.emit[1]))
    if args.target == "cuda":  # --emit only (checked above): the files, then why no artifact
        from eqsat.backends.cuda import NO_GPU

        out.print(f"wrote {len(emitted)} files into {args.emit[1]}; no artifact written: {NO_GPU}")
        return 0
    summary = {"model": label} | result.summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    low, ver = summary["lowering"], summary["verification"]
    total = sum(summary["times_s"].values())
    nodes = "from the cache" if summary["cached"] else f"{summary['nodes']} nodes"
    out.print(
        f"{label}: {nodes} -> {low['kernels']} kernels "
        f"({low['inlined']} values inlined), peak temporaries {low['peak_temp_bytes']:,} B, "
        f"{total:.1f} s"
    )
    if ver:
        out.print(f"verified against onnxruntime: max abs error {ver['max_abs']:.3g}")
    out.print(f"wrote {args.output}" if args.output else "nothing written (no -o)")
    return 0


def cmd_run(args) -> int:
    import time

    import numpy as np

    from eqsat.compiled import load
    from eqsat.verify.numeric import InputSpec, random_feeds

    model = load(args.model, threads=args.threads)
    feeds = {}
    for spec in args.input:
        name, eq, path = spec.partition("=")
        if not eq:
            raise InputError(f"--input {spec}: write NAME=FILE.npy")
        try:
            feeds[name] = np.load(path)
        except (OSError, ValueError) as e:
            raise InputError(f"--input {name}: cannot read {path} ({e})") from None
    missing = [p for p in model.inputs if p.name not in feeds]
    if missing and not args.random:
        raise InputError(f"no value for input {missing[0].name!r} (give --input or --random)")
    specs = [InputSpec(p.name, p.dtype, p.shape) for p in missing]
    feeds |= random_feeds(specs, 0)
    outputs = model.run(feeds)
    summary: dict = {
        "model": args.model,
        "outputs": [
            {"name": p.name, "shape": list(a.shape), "dtype": str(a.dtype)}
            for p, a in zip(model.outputs, outputs, strict=True)
        ],
    }
    if args.bench:
        times = []
        for _ in range(args.bench):
            t0 = time.perf_counter()
            model.run(feeds)
            times.append(time.perf_counter() - t0)
        times.sort()
        summary["bench_ms"] = {
            "min": times[0] * 1e3, "median": times[len(times) // 2] * 1e3, "runs": len(times)
        }  # fmt: skip
    if args.output:
        _save_npz(args.output, {p.name: a for p, a in zip(model.outputs, outputs, strict=True)})
        summary["written"] = args.output
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for o in summary["outputs"]:
        out.print(f"{o['name']}: {o['dtype']} {o['shape']}", markup=False)
    if args.bench:
        b = summary["bench_ms"]
        out.print(f"{b['runs']} runs: min {b['min']:.3f} ms, median {b['median']:.3f} ms")
    if args.output:
        out.print(f"wrote {args.output}")
    return 0


def _save_npz(path: str, arrays: dict) -> None:
    import tempfile

    import numpy as np

    target = Path(path)
    if not target.resolve().parent.is_dir():
        raise InputError(f"{path}: the directory {target.parent} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".eqsat-", suffix=".npz", dir=target.resolve().parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cmd_bench(args) -> int:
    from eqsat import bench

    src, label = _source(args, default=None)
    rows = bench.compare(src, threads=args.threads, reps=args.reps)
    if args.json:
        print(json.dumps({"model": label, "threads": args.threads, "rows": rows}, indent=2))
        return 0
    table = Table("", "min ms", "median ms", "spread", "vs onnxruntime", box=None)
    base = rows[0]["min_ms"]
    for r in rows:
        table.add_row(
            r["what"],
            f"{r['min_ms']:.3f}",
            f"{r['median_ms']:.3f}",
            f"{r['spread']:.0%}",
            f"{r['min_ms'] / base:.2f}x"
            + (" (within noise)" if r.get("vs_first", {}).get("within_noise") else ""),
        )
    out.print(f"{label}: {args.threads} thread(s), min of {args.reps} interleaved runs")
    out.print(table)
    return 0


def cmd_ops(args) -> int:
    import json

    from rich.table import Table

    from eqsat.verify import coverage

    if args.gaps:
        found = coverage.gaps()
        for line in found:
            out.print(line, markup=False)
        if not found:
            out.print("no gaps: every op has every facet its stages need")
        return 1 if found else 0
    if args.json:
        print(json.dumps(coverage.matrix(), indent=1))
        return 0
    header, *rows = coverage.table_rows()
    table = Table(*header, box=None, pad_edge=False)
    for row in rows:
        table.add_row(*row)
    out.print(table)
    return 0


def cmd_discover(args) -> int:
    import json
    from dataclasses import asdict

    from eqsat.rules.discover import exprs, search
    from eqsat.rules.generated import lift, rulefile
    from eqsat.verify import rules as rv

    ops = tuple(o for o in args.ops.split(",") if o) if args.ops else exprs.DEFAULT_OPS
    try:
        exprs.expand_ops(ops)
    except ValueError as e:
        raise InputError(str(e)) from None
    if not 1 <= args.max_ops <= 4:
        raise InputError(f"--max-ops {args.max_ops}: give 1 to 4")
    if not 1 <= args.variables <= len(exprs.VARS):
        raise InputError(f"--variables {args.variables}: give 1 to {len(exprs.VARS)}")
    path = Path(args.output) if args.output else rulefile.RULES_FILE
    show = not args.json and err.is_terminal
    with err.status("discovering", spinner="dots") if show else _nullctx() as status:

        def progress(msg: str) -> None:
            if status is not None:
                status.update(msg)
            elif not args.json:
                err.print(msg)

        try:
            entries, summary = search.discover(
                rv.prove_unit,
                ops,
                args.max_ops,
                workers=args.workers or None,
                ray_address=args.ray,
                prune=not args.no_prune,
                progress=progress,
                variables=args.variables,
            )
        except RuntimeError as e:  # --ray without ray
            raise InputError(str(e)) from None
        progress(f"recording the proofs of {len(entries)} rules")
        runner = search.LocalRunner(args.workers or os.cpu_count() or 1)
        parts = search.split_units(entries, 8 * runner.workers)
        verdicts = [v for part in runner.map(rv.verify_entries, parts) for v in part]
        # the N-ary merges lifted from the written pairs, proved on their witnesses
        verdicts += [rv.verify(r) for r in lift.rules(entries)]
    wrong = [v for v in verdicts if v.result != "proved"]
    if wrong:  # every rule was proved during discovery: this would be a bug, never hide it
        raise InputError(f"rule {wrong[0].name} did not verify again: {wrong[0].detail}")
    rulefile.write(entries, search.header(summary), path)
    if path.resolve() == rulefile.RULES_FILE.resolve():
        rv.write_ledger(verdicts, replace_prefix="gen-")
    if args.json:
        out.print_json(json.dumps({"file": str(path), **asdict(summary)}))
        return 0
    t = Table(show_edge=False, title=f"rule discovery: {', '.join(summary.settings['ops'])}")
    for col, just in (("phase", "left"), ("count", "right"), ("time", "right")):
        t.add_column(col, justify=just)
    for row in summary.table():
        t.add_row(*row)
    out.print(t)
    for lhs, rhs, result, detail in summary.not_proved:
        out.print(f"not proved ({result}): {lhs} = {rhs}: {detail.splitlines()[0][:160]}")
    out.print(f"{len(entries)} rules written to {path}")
    return 0


def cmd_rules(args) -> int:
    import json

    if args.rules_command == "discover":
        return cmd_discover(args)
    from eqsat.rules import schedule
    from eqsat.rules.base import Rule
    from eqsat.verify import ledger as led
    from eqsat.verify import rules as rv

    every = schedule.select(tuple(schedule.FAMILIES))
    ledger = led.load_ledger()
    if args.rules_command == "list":
        rows = []
        for r in every:
            entry = ledger.get(r.name, {})
            status = (
                "proved"
                if led.holds(r, ledger)
                else ("stale" if entry.get("result") == "proved" else entry.get("result", "-"))
            )
            rows.append(
                {
                    "name": r.name,
                    "family": r.family,
                    "kind": "egglog" if isinstance(r, Rule) else "python",
                    "claim": r.proof,
                    "ledger": status,
                    "scope": entry.get("scope", ""),
                    "generic": entry.get("generic", ""),
                    "fp_exact": r.fp_exact,
                    "default": r.family in schedule.DEFAULT_FAMILIES,
                }
            )
        if args.json:
            out.print_json(json.dumps(rows))
            return 0
        t = Table(show_edge=False)
        for col in ("rule", "family", "kind", "claim", "ledger", "sizes", "exact", "default"):
            t.add_column(col)
        for row in rows:
            t.add_row(
                row["name"],
                row["family"],
                row["kind"],
                row["claim"],
                row["ledger"],
                "all" if row["generic"] else ("bounded" if row["scope"] else "-"),
                "yes" if row["fp_exact"] else "reals",
                "yes" if row["default"] else "no",
            )
        out.print(t)
        proved = sum(row["ledger"] == "proved" for row in rows)
        out.print(f"{len(rows)} rules, {proved} proved in the ledger ({led.LEDGER})")
        return 0
    by_name = {r.name: r for r in every}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        raise InputError(f"no rule named {unknown[0]!r} (see `eqsat rules list`)")
    chosen = [by_name[n] for n in args.names] if args.names else every
    verdicts = []
    show = not args.json and err.is_terminal
    with err.status("proving", spinner="dots") if show else _nullctx() as status:
        for r in chosen:
            if status is not None:
                status.update(f"proving {r.name}")
            verdicts.append(rv.verify(r))
    if args.write_ledger:
        rv.write_ledger(verdicts)
    if args.json:
        out.print_json(json.dumps([{"name": v.name, **rv.ledger_entry(v)} for v in verdicts]))
    else:
        for v in verdicts:
            out.print(
                f"{v.name:34s} {v.result:11s} {v.instances:4d} instances {v.time_s:6.2f} s"
                + (f"  {v.detail}" if v.detail else "")
            )
        ok = sum(v.result == "proved" for v in verdicts)
        out.print(
            f"{ok}/{len(verdicts)} proved in {sum(v.time_s for v in verdicts):.1f} s"
            + (f"; ledger written: {led.LEDGER}" if args.write_ledger else "")
        )
    return 0 if all(v.result == "proved" for v in verdicts) else 1


COMMANDS = {
    "rules": cmd_rules,
    "info": cmd_info,
    "optimize": cmd_optimize,
    "verify": cmd_verify,
    "examples": cmd_examples,
    "calibrate": cmd_calibrate,
    "ops": cmd_ops,
    "compile": cmd_compile,
    "run": cmd_run,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except EqsatError as e:
        err.print(f"eqsat: error: {e}", markup=False, soft_wrap=True)
        return _json_error(args, str(e), e.exit_code)
    except KeyboardInterrupt:
        err.print("eqsat: interrupted", markup=False)
        return _json_error(args, "interrupted", 130)
    except OSError as e:  # the environment, not eqsat: permissions, a full disk, ...
        err.print(f"eqsat: error: {e}", markup=False, soft_wrap=True)
        return _json_error(args, str(e), 2)
    except Exception as e:  # a bug: one line for the user, the traceback on request
        if os.environ.get("EQSAT_DEBUG"):
            traceback.print_exc()
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        err.print(
            f"eqsat: internal error: {type(e).__name__}: {first} "
            "(set EQSAT_DEBUG=1 for a traceback)",
            markup=False,
            soft_wrap=True,
        )
        return _json_error(args, f"internal error: {type(e).__name__}: {first}", 3)


def _json_error(args, message: str, code: int) -> int:
    """With ``--json``, a failed command still prints one JSON object on stdout (the error and
    the exit code), so that a script reading stdout always gets JSON; stderr has the line."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message, "exit_code": code}))
    return code


if __name__ == "__main__":
    sys.exit(main())
