"""``eqsat tune``: measure schedules for a model's kernels into the tuning log, which the next
``eqsat compile`` of the model reads (see :mod:`eqsat.autoschedule`; :mod:`eqsat.cli` for the
exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from eqsat.cli_common import add_input_shape, err, input_shapes, out, positive, source
from eqsat.errors import InputError


def add_parser(sub) -> None:
    tune = sub.add_parser(
        "tune", help="search schedules for a model's kernels (measured), logged for compile"
    )
    tune.add_argument("model", nargs="?", help="an .onnx file")
    tune.add_argument("--example", help="a bundled example model (see `eqsat examples`)")
    tune.add_argument("--trials", type=positive(int), default=64,
                      help="measured candidates in all (default 64)")  # fmt: skip
    tune.add_argument("--time-limit", type=positive(float), metavar="S",
                      help="stop after S seconds (the trial being measured finishes)")  # fmt: skip
    tune.add_argument("--log", metavar="FILE",
                      help="the tuning log to append to and resume from (default: "
                           "tuning.jsonl in the user's cache folder)")  # fmt: skip
    tune.add_argument("--threads", type=positive(int),
                      help="threads the schedules are for (default: all cores)")  # fmt: skip
    tune.add_argument("--no-optimize", action="store_true",
                      help="the graph as imported (no e-graph), as compile --no-optimize")
    add_input_shape(tune, "fixed, as for compile (tuning needs constant shapes)")
    tune.add_argument("--ray", metavar="ADDRESS",
                      help="measure the candidates as tasks on this Ray cluster (pip "
                           "install 'eqsat[ray]'); nodes: the machine compiled for")  # fmt: skip
    tune.add_argument("--no-check", action="store_true",
                      help="skip the last step: the whole model compiled with the default "
                           "schedules and with the log, timed against each other (the defaults "
                           "logged when the tuned one is slower)")  # fmt: skip
    tune.add_argument("--json", action="store_true", help="machine-readable summary")


def cmd_tune(args) -> int:
    from eqsat import pipeline
    from eqsat.autoschedule.search import report_json

    src, label = source(args)
    if args.log is not None and Path(args.log).is_dir():
        raise InputError(f"--log {args.log} is a directory")
    opts = pipeline.Options(
        target="llvm", threads=args.threads, egraph=not args.no_optimize,
        input_shapes=input_shapes(args.input_shape), tuning_log=args.log,
    )  # fmt: skip
    show = not args.json and err.is_terminal
    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       console=err, transient=True)  # fmt: skip
        task_id = bar.add_task(f"{label}: preparing", total=args.trials)
        bar.start()

        def on_trial(t, n: int) -> None:
            bar.update(task_id, completed=n, description=(
                f"{t.kernel.name}: {t.trials} trials, best {t.rate(t.best_s):.1f} {t.unit}"))

        def phase(name: str) -> None:
            bar.update(task_id, description=f"{label}: {name}")
    else:
        bar = on_trial = phase = None
    try:
        report = pipeline.tune(src, opts, args.trials, args.time_limit, args.log, phase, on_trial,
                               args.ray, check=not args.no_check)  # fmt: skip
    finally:
        if bar is not None:
            bar.stop()
    summary = {"model": label} | report_json(report)
    check = report.whole_model
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    table = Table("kernel", "kind", "uses", "trials", "failed", "default", "best", "unit",
                  "speed-up", box=None)  # fmt: skip
    for r in summary["kernels"]:
        up = r["best_rate"] / r["default_rate"] if r["default_rate"] else 0.0
        table.add_row(r["kernel"], r["kind"], str(r["count"]), str(r["trials"]),
                      str(r["failed"]), f"{r['default_rate']:.1f}", f"{r['best_rate']:.1f}",
                      r["unit"], "not tried" if not r["default_rate"] else  # out of trials
                      "default" if r["best_is_default"] and r["confirmed"] is None else
                      f"{up:.2f}x, lost in the model" if r["confirmed"] is False else
                      f"{up:.2f}x, not confirmed" if r["confirmed"] is None else  # time limit
                      f"{up:.2f}x")  # fmt: skip
    out.print(f"{label}: {report.trials} trials on {len(report.tasks)} distinct kernels in "
              f"{report.seconds:.1f} s; log {report.log}")  # fmt: skip
    out.print(table)
    for s in report.skipped:
        out.print(f"not tuned: {s}", markup=False)
    if check is not None and check["tuned_ms"] is not None:
        text = (f"{check['speedup']:.2f}x" + (" (within noise)" if check["within_noise"] else "")
                + f": default schedules {check['default_ms']:.3f} ms, tuned "
                f"{check['tuned_ms']:.3f} ms (min of 15 interleaved runs)")  # fmt: skip
        out.print(f"whole model, tuned against the default schedules: {text}", markup=False)
        if check["reverted"]:
            out.print(f"the tuned model ran slower: the default schedules are logged for "
                      f"{len(check['reverted'])} kernel(s) ({', '.join(check['reverted'])})",
                      markup=False)  # fmt: skip
    elif check is not None:
        out.print("whole model: no kernel uses a tuned schedule (the defaults won in the model)",
                  markup=False)
    return 0
