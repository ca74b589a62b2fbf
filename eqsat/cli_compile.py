"""``eqsat compile``, ``eqsat run`` and ``eqsat bench``: eqsat's own code for a model, run and
timed (see :mod:`eqsat.cli` for the exit codes)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from rich.table import Table

from eqsat.cli_common import (
    add_input_shape,
    check_output,
    err,
    input_shapes,
    out,
    positive,
    source,
    status,
)
from eqsat.errors import InputError


def add_parsers(sub) -> None:
    from eqsat.pipeline import COST_MODELS

    comp = sub.add_parser(
        "compile", help="compile a model to eqsat's own code (verified before it is written)"
    )
    comp.add_argument("model", nargs="?", help="an .onnx file")
    comp.add_argument("--example", help="a bundled example model (see `eqsat examples`)")
    comp.add_argument("-o", "--output", help="the compiled model to write (model.eqsat)")
    comp.add_argument(
        "--target",
        default="llvm",
        help="llvm (native code for this CPU) or cuda (PTX for sm_80 and sm_90: with --emit "
        "only, nothing is written since no GPU verifies it)",
    )
    comp.add_argument(
        "--threads", type=positive(int), help="threads for parallel loops (default: all cores)"
    )
    comp.add_argument(
        "--precision",
        default="fp32",
        help="arithmetic of matrix products and convolutions: fp32, or tf32 | fp16 | bf16 "
        "(tensor cores: operands rounded, fp32 accumulation; cuda only); the verification "
        "gate's tolerance follows it (printed)",
    )
    comp.add_argument(
        "--no-optimize", action="store_true", help="compile the graph as imported (no e-graph)"
    )
    comp.add_argument(
        "--cost-model",
        choices=COST_MODELS,
        help="extraction's cost model (default: compiler, priced as eqsat's code runs on this "
        "CPU; roofline and measured price onnxruntime's kernels)",
    )
    comp.add_argument(
        "--fusion-terms",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="put the kernels lowering can fuse into the e-graph, so that extraction chooses "
        "them with the algebra and merges and lowering follows (default: on under the "
        "compiler cost model; --no-fusion-terms leaves fusion to lowering)",
    )
    comp.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="DIM=N",
        help="fix a symbolic input dim at compile time (repeatable); others stay run-time sizes",
    )
    add_input_shape(comp, "fixed at compile time, and the gate runs at it")
    comp.add_argument(
        "--emit",
        nargs=2,
        metavar=("WHAT", "DIR"),
        help="also write the loop nests (loops), LLVM IR (llvm) or assembly (asm) into DIR",
    )
    comp.add_argument("--no-verify", action="store_true", help="skip the verification gate")
    comp.add_argument(
        "--tuning-log", metavar="FILE",
        help="the tuning log (`eqsat tune`) to take schedules from (default: tuning.jsonl in "
        "the user's cache folder)",
    )  # fmt: skip
    comp.add_argument(
        "--no-tuning", action="store_true", help="default schedules, whatever the log holds"
    )
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
    run.add_argument("--bench", type=positive(int), metavar="N", help="time N runs")
    run.add_argument("--threads", type=positive(int), help="threads (default: all cores)")
    run.add_argument("--json", action="store_true", help="machine-readable summary")

    bench = sub.add_parser(
        "bench", help="onnxruntime (original, optimized) against the compiled model, timed"
    )
    bench.add_argument("model", nargs="?", help="an .onnx file")
    bench.add_argument("--example", help="a bundled example model")
    bench.add_argument("--threads", type=positive(int), default=1, help="threads")
    bench.add_argument("--reps", type=positive(int), default=15, help="repetitions")
    bench.add_argument("--json", action="store_true", help="machine-readable results")


def shapes_arg(specs: list[str]) -> tuple[tuple[str, int], ...]:
    out = []
    for spec in specs:
        name, eq, value = spec.partition("=")
        if not eq or not name or not value.isdigit() or int(value) < 1:
            raise InputError(f"--shape {spec}: write DIM=N with a positive N (batch=8)")
        out.append((name, int(value)))
    return tuple(out)


def cmd_compile(args) -> int:
    from eqsat import pipeline

    src, label = source(args)
    if args.output is not None:
        check_output(args.output, args.model)
    if args.emit and args.emit[0] not in ("loops", "llvm", "asm"):
        raise InputError(f"--emit {args.emit[0]}: one of loops, llvm, asm")
    if args.target == "cuda" and (not args.emit or args.output):
        from eqsat.backends.cuda import NO_GPU

        raise InputError(f"no artifact written: {NO_GPU}")  # exit 2, before compiling
    opts = pipeline.Options(
        target=args.target,
        threads=args.threads,
        precision=args.precision,
        egraph=not args.no_optimize,
        cost_model=args.cost_model,
        fusion_terms=args.fusion_terms,
        shapes=shapes_arg(args.shape),
        input_shapes=input_shapes(args.input_shape),
        verify=not args.no_verify,
        cache=not args.no_cache and not args.emit,  # --emit shows the code it generates
        tuning_log=args.tuning_log,
        tuned=not args.no_tuning,
    )
    show = not args.json and err.is_terminal
    with status("compiling", show) as spinner:

        def progress(phase: str) -> None:
            if spinner is not None:
                spinner.update(f"{label}: {phase}")

        result = pipeline.compile(src, opts, output=args.output, progress=progress)
    if args.emit:
        from eqsat.compiled import emit

        emitted = emit(result.compiled, args.emit[0], Path(args.emit[1]))
    if args.target == "cuda":  # --emit only (checked above): the files, then why no artifact
        from eqsat.backends.cuda import NO_GPU

        out.print(_precision_line(opts, result.compiled.program))
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
    if low.get("tuned_kernels"):
        out.print(f"{low['tuned_kernels']} kernels used a tuned schedule from the tuning log")
    if ver:
        out.print(f"verified against onnxruntime: max abs error {ver['max_abs']:.3g}")
    out.print(f"wrote {args.output}" if args.output else "nothing written (no -o)")
    return 0


def _precision_line(opts, program) -> str:
    """What the precision does to a cuda model, and the gate's tolerance at it (not run)."""
    from eqsat.lower.gpu_mma import mma_ks
    from eqsat.pipeline import SYMBOLIC_K, gate_tolerance

    rtol, atol = gate_tolerance(opts, program)
    ks = mma_ks(program)
    known = [k for k in ks if k is not None]
    where = "no contraction large enough for tensor cores (M, N, K >= 32)"
    if opts.precision == "fp32":
        where = "float32 throughout (no tensor cores)"
    elif ks:
        where = f"{len(ks)} contraction kernels on tensor cores, K up to {max(known, default=0)}"
        if None in ks:
            where += f" (a run-time K taken as {SYMBOLIC_K})"
    return (
        f"precision {opts.precision}: {where}; the verification gate's tolerance at it: "
        f"rtol {rtol:.3g}, atol {atol:.3g} (not run: no GPU)"
    )


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
        save_npz(args.output, {p.name: a for p, a in zip(model.outputs, outputs, strict=True)})
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


def save_npz(path: str, arrays: dict) -> None:
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

    src, label = source(args)
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
