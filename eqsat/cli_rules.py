"""``eqsat rules list|verify|discover``: the rewrite rules, their proofs, and rule discovery
(see :mod:`eqsat.cli` for the exit codes).

The package's own files (the proof ledger ``eqsat/verify/ledger.json``, the packaged rules file
``eqsat/rules/generated/rules.json``) are only written on request: ``rules verify
--write-ledger``, and ``rules discover -o`` naming the packaged rules file. Otherwise what these
commands produce goes to the user's cache folder (:func:`eqsat.paths.user_cache_dir`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from rich.table import Table
from rich.text import Text

from eqsat.cli_common import (
    FAMILIES,
    Quiet,
    UsageError,
    check_output,
    err,
    out,
    positive,
    status,
)
from eqsat.errors import InputError

# `rules list --status`: the ledger's verdicts, "stale" (proved for another text of the rule),
# "none" (no entry), and "unproved" (anything but proved)
STATUSES = ("proved", "stale", "refuted", "unknown", "unsupported", "none", "unproved")


def discovered_file() -> Path:
    """Where ``rules discover`` writes by default: the user's cache folder."""
    from eqsat.paths import user_cache_dir

    return user_cache_dir() / "rules" / "discovered.json"


def add_parser(sub) -> None:
    rules = sub.add_parser("rules", help="the rewrite rules: list them, verify or discover them")
    rsub = rules.add_subparsers(dest="rules_command", required=True, metavar="ACTION")
    rl = rsub.add_parser("list", help="every rule: family, proof claim and status, exactness")
    rl.add_argument(
        "--family",
        action="append",
        default=[],
        metavar="F",
        help=f"only this family (repeatable, or comma-separated) of: {FAMILIES}",
    )
    rl.add_argument(
        "--status",
        choices=STATUSES,
        help="only rules with this proof status in the ledger (unproved: any but proved)",
    )
    rl.add_argument(
        "--width",
        type=positive(int),
        help="columns of the table (default: the terminal's; not cut when not a terminal)",
    )
    rl.add_argument("--json", action="store_true", help="machine-readable list")
    add_rules_file(rl)

    rv = rsub.add_parser(
        "verify",
        help="prove rules with Z3 (bounded shape instances), in parallel; proofs already in the "
        "ledger or the user's verdict cache are reused",
    )
    rv.add_argument("names", nargs="*", help="rules to verify (default: all)")
    rv.add_argument(
        "--force", action="store_true", help="prove again, ignoring the ledger and the cache"
    )
    rv.add_argument(
        "--no-ledger",
        action="store_true",
        help="prove the rules the ledger proves too (verdicts in the user's cache still count)",
    )
    rv.add_argument("--workers", type=positive(int), help="processes (default: all cores)")
    rv.add_argument(
        "--write-ledger",
        action="store_true",
        help="record the results in the package's ledger (eqsat/verify/ledger.json)",
    )
    rv.add_argument("--json", action="store_true", help="machine-readable verdicts")
    add_rules_file(rv)

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
        help="rules file to write, with its proofs inside (default: rules/discovered.json in "
        "the user's cache folder; use it with `eqsat optimize --rules-file FILE`). Naming the "
        "packaged file eqsat/rules/generated/rules.json updates the package's proof ledger",
    )
    rd.add_argument("--json", action="store_true", help="machine-readable summary")


def add_rules_file(p) -> None:
    p.add_argument(
        "--rules-file",
        metavar="FILE",
        help="the `generated` family's rules and their proofs from this file (written by "
        "`eqsat rules discover`) instead of the packaged ones",
    )


def _rules_file(args) -> str | None:
    if args.rules_file is None:
        return None
    p = Path(args.rules_file)
    if not p.is_file():
        raise InputError(f"--rules-file {args.rules_file}: no such file")
    return str(p.resolve())


def _select(families: tuple[str, ...], rules_file: str | None) -> list:
    from eqsat.rules import schedule

    try:
        return schedule.select(families, rules_file=rules_file)
    except ValueError as e:
        raise InputError(str(e)) from None


def cmd_rules(args) -> int:
    if args.rules_command == "discover":
        return cmd_discover(args)
    if args.rules_command == "list":
        return cmd_list(args)
    return cmd_verify(args)


def _families(args) -> tuple[str, ...]:
    from eqsat.rules import schedule

    chosen = tuple(f for spec in args.family for f in spec.split(",") if f)
    unknown = [f for f in chosen if f not in schedule.FAMILIES]
    if unknown:
        raise UsageError(
            f"--family {unknown[0]}: no such family (known: {', '.join(schedule.FAMILIES)})"
        )
    return chosen or tuple(schedule.FAMILIES)


def cmd_list(args) -> int:
    from eqsat.rules import schedule
    from eqsat.rules.base import Rule
    from eqsat.verify import ledger as led

    rules_file = _rules_file(args)
    ledger = led.load_proofs(rules_file)
    rows = []
    for r in _select(_families(args), rules_file):
        entry = ledger.get(r.name, {})
        if led.holds(r, ledger):
            state = "proved"
        elif entry.get("result") == "proved":
            state = "stale"
        else:
            state = entry.get("result", "none")
        if args.status and args.status != state:
            if not (args.status == "unproved" and state != "proved"):
                continue
        rows.append(
            {
                "name": r.name,
                "family": r.family,
                "kind": "egglog" if isinstance(r, Rule) else "python",
                "claim": r.proof,
                "ledger": state,
                "scope": entry.get("scope", ""),
                "generic": entry.get("generic", ""),
                "fp_exact": r.fp_exact,
                "default": r.family in schedule.DEFAULT_FAMILIES,
            }
        )
    if args.json:
        print(json.dumps(rows))
        return 0
    t = Table(show_edge=False)
    for col in ("rule", "family", "kind", "claim", "ledger", "sizes", "exact", "default"):
        t.add_column(col, overflow="fold")
    for row in rows:
        t.add_row(
            Text(row["name"]),
            row["family"],
            row["kind"],
            Text(row["claim"]),
            row["ledger"],
            "all" if row["generic"] else ("bounded" if row["scope"] else "-"),
            "yes" if row["fp_exact"] else "reals",
            "yes" if row["default"] else "no",
        )
    # a pipe or a file gets every name whole; a terminal its width, unless --width says
    width = args.width or (out.width if out.is_terminal else 100_000)
    Quiet(width=width, highlight=False, file=out.file).print(t)
    proved = sum(row["ledger"] == "proved" for row in rows)
    where = f"{led.LEDGER}" + (f" and {rules_file}" if rules_file else "")
    out.print(f"{len(rows)} rules, {proved} proved in the ledger ({where})", markup=False)
    return 0


def cmd_verify(args) -> int:
    from eqsat.rules import schedule
    from eqsat.verify import ledger as led
    from eqsat.verify import rules as rv
    from eqsat.verify import verdicts as vd

    rules_file = _rules_file(args)
    if rules_file and args.write_ledger:
        raise UsageError("--write-ledger records the packaged rules, not a --rules-file's")
    every = _select(tuple(schedule.FAMILIES), rules_file)
    by_name = {r.name: r for r in every}
    unknown = [n for n in args.names if n not in by_name]
    if unknown:
        raise InputError(f"no rule named {unknown[0]!r} (see `eqsat rules list`)")
    chosen = [by_name[n] for n in args.names] if args.names else every
    t0 = time.perf_counter()
    workers = args.workers or os.cpu_count() or 1
    with status("proving", not args.json and err.is_terminal) as spinner:

        def progress(done: int, total: int) -> None:
            if spinner is not None:
                spinner.update(f"proving: {done}/{total} rules")

        results = vd.verify_all(
            chosen,
            force=args.force,
            workers=workers,
            use_ledger=not args.no_ledger,
            rules_file=rules_file,
            progress=progress,
        )
    seconds = time.perf_counter() - t0
    verdicts = [v for v, _ in results]
    if args.write_ledger:
        rv.write_ledger([v for v, src in results if src != "ledger"])
    if args.json:
        rows = [
            {"name": v.name, "source": src, "time_s": v.time_s, **rv.ledger_entry(v)}
            for v, src in results
        ]
        print(json.dumps(rows))
    else:
        for v, src in results:
            if args.names or v.result != "proved":  # all rules: only the failures, by name
                how = f"{v.time_s:6.2f} s" if src == "proved now" else f"({src})"
                line = f"{v.name:34s} {v.result:11s} {v.instances:4d} instances {how}"
                out.print(line + (f"  {v.detail}" if v.detail else ""), markup=False)
        ok = sum(v.result == "proved" for v in verdicts)
        count = {s: sum(src == s for _, src in results) for s in ("ledger", "cache", "proved now")}
        out.print(
            f"{ok}/{len(verdicts)} proved in {seconds:.1f} s "
            f"({count['ledger']} from the ledger, {count['cache']} from the cache, "
            f"{count['proved now']} proved now, up to {workers} processes)"
            + (f"; ledger written: {led.LEDGER}" if args.write_ledger else ""),
            markup=False,
        )
    return 0 if all(v.result == "proved" for v in verdicts) else 1


def cmd_discover(args) -> int:
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
    if args.output:
        path = Path(args.output)
        check_output(args.output)  # before the search, not after it
    else:
        path = discovered_file()
        path.parent.mkdir(parents=True, exist_ok=True)
    packaged = path.resolve() == rulefile.RULES_FILE.resolve()
    with status("discovering", not args.json and err.is_terminal) as spinner:

        def progress(msg: str) -> None:
            if spinner is not None:
                spinner.update(msg)
            elif not args.json:
                err.print(msg, markup=False)

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
    proofs = None if packaged else {v.name: rv.ledger_entry(v) for v in verdicts}
    rulefile.write(entries, search.header(summary), path, proofs=proofs)
    if packaged:
        rv.write_ledger(verdicts, replace_prefix="gen-")
    if args.json:
        print(json.dumps({"file": str(path), **asdict(summary)}, default=str))
        return 0
    t = Table(show_edge=False, title=f"rule discovery: {', '.join(summary.settings['ops'])}")
    for col, just in (("phase", "left"), ("count", "right"), ("time", "right")):
        t.add_column(col, justify=just)
    for row in summary.table():
        t.add_row(*row)
    out.print(t)
    for lhs, rhs, result, detail in summary.not_proved:
        line = f"not proved ({result}): {lhs} = {rhs}: {detail.splitlines()[0][:160]}"
        out.print(line, markup=False)
    use = "" if packaged else f" (use: eqsat optimize MODEL --rules-file {path})"
    out.print(f"{len(entries)} rules written to {path}{use}", markup=False)
    return 0
