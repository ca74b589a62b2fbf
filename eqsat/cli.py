"""The ``eqsat`` command line: argv → pipeline calls, tables, exit codes.

Exit codes: 0 ok; 1 verification failed (the models differ, nothing written); 2 bad input or
usage (one line on stderr, never a traceback or a usage block); 3 internal error (a bug: one
line, and the traceback only with EQSAT_DEBUG=1); 130 interrupted; 141 the reader of the output
went away (``eqsat info --json m | head -1``: nothing printed, like a program killed by SIGPIPE).
With ``--json``, a command that fails still prints one JSON object on stdout, ``{"error": ...,
"exit_code": ...}``, besides the line on stderr.

This module builds the parser and runs the small commands; the others live beside it:
:mod:`eqsat.cli_optimize` (optimize, verify), :mod:`eqsat.cli_rules` (rules list, verify,
discover), :mod:`eqsat.cli_compile` (compile, run, bench); :mod:`eqsat.cli_common` holds what
they share.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
import warnings
from pathlib import Path

from rich.table import Table
from rich.text import Text

from eqsat import __version__, cli_compile, cli_optimize, cli_rules, cli_tune
from eqsat.cli_common import (
    Parser,
    UsageError,
    check_output,
    err,
    out,
    shape_text,
    source,
    usage_line,
)
from eqsat.cli_common import status as spinner_status
from eqsat.errors import EqsatError, UntypedValueError

EXIT_SIGPIPE = 141  # 128 + SIGPIPE, what a shell reports for a program killed by it


def _fmt_count(n: float) -> str:
    for unit, k in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= k:
            return f"{n / k:.2f}{unit}"
    return f"{n:g}"


def build_parser() -> Parser:
    p = Parser(prog="eqsat", description="Equality-saturation optimizer for ONNX models.")
    p.add_argument("--version", action="version", version=f"eqsat {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    info = sub.add_parser("info", help="op histogram, parameters, FLOPs, inputs/outputs")
    info.add_argument("model", nargs="?", help="an .onnx file (or give --example NAME)")
    info.add_argument("--example", help="a bundled example model instead of a file")
    info.add_argument("--json", action="store_true", help="machine-readable output")

    cli_optimize.add_parsers(sub)

    cal = sub.add_parser("calibrate", help="measure this machine's roofline cost constants")
    cal.add_argument(
        "-o",
        "--output",
        help="file to write (default: this machine's file in the user's cache folder, which "
        "optimize then uses; another file is used with `eqsat optimize --calibration FILE`)",
    )

    cli_rules.add_parser(sub)
    cli_compile.add_parsers(sub)
    cli_tune.add_parser(sub)

    ops = sub.add_parser("ops", help="the op table: which facet every stage has for each op")
    ops.add_argument("--json", action="store_true", help="print the matrix as JSON")
    ops.add_argument(
        "--gaps", action="store_true", help="only the facets a stage needs and lacks (exit 1)"
    )
    ex = sub.add_parser("examples", help="list the bundled example models, or write one")
    ex.add_argument("--write", metavar="NAME", help="write this example as NAME.onnx")
    ex.add_argument("-o", "--output", help="file to write (with --write; default: NAME.onnx)")
    ex.add_argument("--size", default="default", choices=["default", "small"], help="model size")
    return p


# ------------------------------------------------------------------------------ commands


def cmd_info(args) -> int:
    from eqsat import pipeline
    from eqsat.egraph.onnx_io import import_onnx

    src, label = source(args)
    model = pipeline.load(src)
    try:
        graph, problem = import_onnx(model, Path(src).parent if args.model else None), None
    except UntypedValueError as e:  # still show what the file tells (ops, params, interface)
        graph, problem = None, str(e)
    s = pipeline.summarize(model, graph)
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
    out.print(Text.assemble((label, "bold"), f"  opset {s['opset']}  {s['producer']}"))
    io = Table("", "name", "dtype", "shape", box=None)
    for kind in ("inputs", "outputs"):
        for v in s[kind]:
            io.add_row(kind[:-1], Text(v["name"]), v["dtype"] or "?", shape_text(v["shape"]))
    out.print(io)
    ops = Table("op", "count", box=None)
    for op, n in sorted(s["ops"].items(), key=lambda kv: (-kv[1], kv[0])):
        ops.add_row(Text(op + (" (opaque)" if op in s["opaque_ops"] else "")), str(n))
    out.print(ops)
    flops = "unknown" if s["flops"] is None else _fmt_count(s["flops"])
    out.print(
        f"nodes {s['nodes']}   params {_fmt_count(s['params'])} "
        f"({_fmt_count(s['param_bytes'])}B)   FLOPs {flops}"
        + ("   (symbolic dims counted as 1)" if _symbolic(s) else ""),
        markup=False,
    )
    return 0


def _symbolic(s: dict) -> bool:
    return any(isinstance(d, str) for v in s["inputs"] for d in v["shape"] or ())


def cmd_calibrate(args) -> int:
    from eqsat.extract.roofline import cache_file, calibrate

    if args.output:
        check_output(args.output)
    path = Path(args.output) if args.output else cache_file()
    with spinner_status("measuring (about 5 s)", err.is_terminal):
        c = calibrate(path)
    peaks = ", ".join(
        f"{k} {v:g}" for k, v in sorted(c.peak_gflops.items()) if v != c.bandwidth_gbs
    )
    out.print(
        f"per-kernel overhead {c.overhead_us:g} us, bandwidth {c.bandwidth_gbs:g} GB/s, "
        f"peak GFLOP/s: {peaks}"
    )
    out.print(f"wrote {path}", markup=False)
    return 0


def cmd_examples(args) -> int:
    from eqsat import pipeline
    from eqsat.egraph.onnx_io import save_model
    from eqsat.examples import example_names

    if not args.write:
        if args.output:
            raise UsageError("-o/--output needs --write NAME")
        for name in example_names():
            out.print(name)
        return 0
    path = args.output or f"{args.write}.onnx"
    check_output(path)
    model = pipeline.example_model(args.write, size=args.size)
    save_model(model, path)
    out.print(f"wrote {path}", markup=False)
    return 0


def cmd_ops(args) -> int:
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


COMMANDS = {
    "rules": cli_rules.cmd_rules,
    "info": cmd_info,
    "optimize": cli_optimize.cmd_optimize,
    "verify": cli_optimize.cmd_verify,
    "examples": cmd_examples,
    "calibrate": cmd_calibrate,
    "ops": cmd_ops,
    "compile": cli_compile.cmd_compile,
    "run": cli_compile.cmd_run,
    "bench": cli_compile.cmd_bench,
    "tune": cli_tune.cmd_tune,
}


def _prog(args) -> str:
    sub = getattr(args, "rules_command", None)
    return " ".join(["eqsat", args.command, *([sub] if sub else [])])


def _stdout_gone() -> int:
    """The reader of stdout went away (``| head``): no message, and nothing more is written
    (stdout now points at /dev/null, so the interpreter's last flush does not fail again)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return EXIT_SIGPIPE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the command that did not take them, not by `eqsat`
        parser.exit(2, usage_line(_prog(args), f"unrecognized arguments: {' '.join(extra)}") + "\n")
    try:
        with warnings.catch_warnings():  # a warning is one line on stderr, like an error
            warnings.showwarning = _warning_line
            code = COMMANDS[args.command](args)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _stdout_gone()
    except UsageError as e:
        err.print(usage_line(_prog(args), str(e)), markup=False, soft_wrap=True)
        return _json_error(args, str(e), e.exit_code)
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


def _warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    err.print(f"eqsat: warning: {message}", markup=False, soft_wrap=True)


def _json_error(args, message: str, code: int) -> int:
    """With ``--json``, a failed command still prints one JSON object on stdout (the error and
    the exit code), so that a script reading stdout always gets JSON; stderr has the line.
    A reader that went away already gets nothing (exit 141)."""
    if getattr(args, "json", False):
        try:
            print(json.dumps({"error": message, "exit_code": code}))
            sys.stdout.flush()
        except BrokenPipeError:
            return _stdout_gone()
    return code


if __name__ == "__main__":
    sys.exit(main())
