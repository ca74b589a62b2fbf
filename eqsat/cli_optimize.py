"""``eqsat optimize`` and ``eqsat verify``: an optimized model behind the verification gate,
and the numerical comparison of two models (see :mod:`eqsat.cli` for the exit codes)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table
from rich.text import Text

from eqsat.cli_common import (
    FAMILIES,
    UsageError,
    add_input_shape,
    check_output,
    err,
    input_shapes,
    out,
    positive,
    shape_text,
    source,
    status,
)
from eqsat.errors import InputError


def seeds_arg(text: str) -> tuple[int, ...]:
    try:
        n = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError("--seeds takes a count, e.g. 3") from e
    if n < 1:
        raise argparse.ArgumentTypeError("--seeds must be at least 1")
    return tuple(range(n))


def add_tolerance(p: argparse.ArgumentParser) -> None:
    from eqsat.verify import numeric

    p.add_argument("--rtol", type=float, default=numeric.DEFAULT_RTOL, help="relative tolerance")
    p.add_argument("--atol", type=float, default=numeric.DEFAULT_ATOL, help="absolute tolerance")
    p.add_argument(
        "--seeds",
        type=seeds_arg,
        default=numeric.DEFAULT_SEEDS,
        metavar="N",
        help=f"random input sets (default: {len(numeric.DEFAULT_SEEDS)})",
    )


def add_parsers(sub) -> None:
    from eqsat.pipeline import COST_MODELS, Options, cost_model_for, rule_families

    d = Options()
    opt = sub.add_parser("optimize", help="optimize a model (verified before it is written)")
    opt.add_argument("model", nargs="?", help="an .onnx file (or give --example NAME)")
    opt.add_argument(
        "-o",
        "--output",
        help="where to write the optimized model (required with a file; with --example the "
        "default is NAME-optimized.onnx)",
    )
    opt.add_argument("--example", help="a bundled example model (see `eqsat examples`)")
    opt.add_argument("--json", action="store_true", help="machine-readable summary")
    opt.add_argument("--report", metavar="OUT.html", help="write an HTML report (+ .json)")
    opt.add_argument(
        "--no-verify", action="store_true", help="skip the verification gate (not recommended)"
    )
    opt.add_argument(
        "--rules",
        default=",".join(rule_families(d)),
        help=f"rule families, comma-separated, of: {FAMILIES}",
    )
    opt.add_argument(
        "--rules-file",
        metavar="FILE",
        help="the `generated` family's rules (and their proofs) from this file, written by "
        "`eqsat rules discover`, instead of the packaged one; adds `generated` to --rules",
    )
    opt.add_argument(
        "--disable-rule", action="append", default=[], metavar="NAME", help="leave a rule out"
    )
    opt.add_argument(
        "--iter-limit",
        type=positive(int),
        default=d.iter_limit,
        help="iterations of each run of the rules (the first, then one after each Python rewrite)",
    )
    opt.add_argument("--node-limit", type=positive(int), default=d.node_limit, help="e-node limit")
    opt.add_argument(
        "--time-limit",
        type=positive(float),
        default=d.time_limit,
        help="seconds of saturation (checked between iterations; the e-graph process is killed "
        "past time limit + extract time limit + 30 s and the folded model is written)",
    )
    opt.add_argument(
        "--cost-model",
        default=cost_model_for(d),  # the ONNX path's (compile's is the compiler's own)
        choices=COST_MODELS,
        help="roofline (estimated), measured (each kernel timed once in "
        "onnxruntime, cached), compiler (priced as `eqsat compile` runs it)",
    )
    opt.add_argument(
        "--calibration",
        metavar="FILE",
        help="the roofline constants from this file (written by `eqsat calibrate -o FILE`) "
        "instead of this machine's calibration or the packaged default",
    )
    opt.add_argument(
        "--extractor",
        default=d.extractor,
        choices=["auto", "greedy", "local", "ilp"],
        help="greedy DAG, local (greedy then a local search), ILP (from greedy, never worse), or "
        "auto (the local search, then the ILP from its plan unless the e-graph is huge; the "
        "default, local under --cost-model compiler)",
    )
    opt.add_argument(
        "--extract-time-limit",
        type=positive(float),
        default=d.extract_time_limit,
        help="seconds for the local search and the ILP",
    )
    opt.add_argument("--no-egraph", action="store_true", help="only fold constants and DCE")
    opt.add_argument(
        "--allow-unproved",
        action="store_true",
        help="also use rules the proof ledger does not prove as written (see `eqsat rules list`)",
    )
    add_input_shape(opt, "the model is specialized to it and the gate runs at it")
    add_tolerance(opt)

    ver = sub.add_parser("verify", help="numerical equivalence of two models in onnxruntime")
    ver.add_argument("a", help="reference model")
    ver.add_argument("b", help="candidate model")
    ver.add_argument("--json", action="store_true", help="machine-readable verdict")
    ver.add_argument("--report", metavar="OUT.html", help="write an HTML report (+ .json)")
    add_input_shape(ver, "both models run at it")
    add_tolerance(ver)


def _input_file(flag: str, path: str | None) -> str | None:
    """A file a flag names: it must be a readable file (one-line errors otherwise)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise InputError(f"{flag} {path}: is a directory")
    if not p.is_file():
        raise InputError(f"{flag} {path}: no such file")
    return str(p.resolve())


def cmd_optimize(args) -> int:
    from eqsat import pipeline

    src, label = source(args)
    output = args.output
    if output is None:
        if args.model:
            raise UsageError("-o/--output is required when optimizing a file")
        output = f"{label.split(':', 1)[1]}-optimized.onnx"
    check_output(output, args.model)
    _check_report_path(args.report)
    rules = tuple(r for r in args.rules.split(",") if r)
    rules_file = _input_file("--rules-file", args.rules_file)
    if rules_file and "generated" not in rules:
        rules += ("generated",)
    opts = pipeline.Options(
        verify=not args.no_verify,
        rtol=args.rtol,
        atol=args.atol,
        seeds=args.seeds,
        egraph=not args.no_egraph,
        rules=rules,
        rules_file=rules_file,
        disabled_rules=tuple(args.disable_rule),
        iter_limit=args.iter_limit,
        node_limit=args.node_limit,
        time_limit=args.time_limit,
        cost_model=args.cost_model,
        calibration=_input_file("--calibration", args.calibration),
        extractor=args.extractor,
        extract_time_limit=args.extract_time_limit,
        allow_unproved=args.allow_unproved,
        input_shapes=input_shapes(args.input_shape),
    )
    show = not args.json and err.is_terminal
    with status("optimizing", show) as spinner:

        def progress(phase: str) -> None:
            if spinner is not None:
                spinner.update(f"{label}: {phase}")

        result = pipeline.optimize(src, opts, output=output, progress=progress)
        if args.report:
            if spinner is not None:
                spinner.update(f"{label}: report (timing both models)")
            _report(
                "optimize",
                result.verdict,
                result.source,
                result.model,
                (label, str(output)),
                args.report,
                result.egraph,
                rules_file,
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


def _report(kind, verdict, reference, candidate, labels, path, egraph=None, rules_file=None):
    from eqsat.verify import report

    if verdict is None:
        raise InputError("--report needs the verification gate (drop --no-verify)")
    data = report.build(kind, verdict, reference, candidate, labels, egraph, rules_file=rules_file)
    try:
        report.write(data, Path(path))
    except OSError as e:
        raise InputError(f"cannot write the report {path}: {e.strerror or e}") from e


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
        a,
        b,
        seeds=args.seeds,
        rtol=args.rtol,
        atol=args.atol,
        input_shapes=dict(input_shapes(args.input_shape)),
    )
    if args.report:
        ma, mb = (materialize(m.model, m.base_dir) for m in (a, b))
        _report("verify", v, ma, mb, (args.a, args.b), args.report)
    if args.json:
        print(json.dumps(v.to_json(), indent=2, default=str))
    else:
        t = Table("output", "shape", "max abs", "max rel", "max ulp", "ok", box=None)
        for o in v.outputs:
            t.add_row(
                Text(o.name),
                shape_text(o.shape),
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
