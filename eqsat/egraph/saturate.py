"""Equality saturation: an :class:`~eqsat.egraph.encode.Encoding` plus rulesets → Saturation.

Consumes an Encoding (its e-graph is grown in place) and egglog rulesets (from ``eqsat.rules``);
produces a :class:`Saturation`: the e-graph and its roots, the e-graph size after loading and
after each iteration, per-rule match counts summed over the iterations, and why it stopped.

One iteration runs every ruleset once, in the order given (a ruleset may also be any egglog
``Schedule``, e.g. one scoped with ``back_off``). The limits are checked *between* iterations:
egglog runs an iteration inside Rust, where neither a node limit nor SIGALRM can stop it
(EGGLOG_NOTES: one add-associativity iteration grew 165k → 16.2M e-nodes in ~190 s), so rules
must be bounded by their own schedule, and a hard wall-clock bound needs a subprocess. With no
rulesets nothing runs and the loaded e-graph is returned as is.

Python-driven rewrites (:class:`PyRewrite`: horizontal merging, type-guarded folds) run after the
rulesets reach a fixpoint, once each, in order: each reads a
:class:`~eqsat.egraph.classes.Snapshot`, its unions are registered, and the rulesets run again.
Running each once is their bound: a merge rewrite applied to its own output would merge merged
groups again."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from egglog import EGraph, Ruleset, Schedule, bindings, run, seq, union

from eqsat.egraph.classes import Snapshot
from eqsat.egraph.encode import Encoding
from eqsat.egraph.lang import Tensor


class PyRewrite(Protocol):
    """A rewrite driven from Python (``eqsat.rules.base.PyRule``): its name, and the unions to
    make in a snapshot of the e-graph."""

    name: str

    def find(self, snapshot: Snapshot) -> list[tuple[Tensor, Tensor]]: ...


STOP_REASONS = ("no-rules", "saturated", "iter-limit", "node-limit", "time-limit")


@dataclass
class Saturation:
    encoding: Encoding
    sizes: list[int]  # e-nodes after loading, then after each iteration
    matches: dict[str, int] = field(default_factory=dict)  # rule name -> matches, all iterations
    stop_reason: str = "no-rules"
    time: float = 0.0  # seconds spent running rules

    @property
    def egraph(self) -> EGraph:
        return self.encoding.egraph

    @property
    def roots(self) -> tuple[str, ...]:
        """Let names of the graph outputs (see :class:`Encoding`)."""
        return self.encoding.roots

    rewrite_passes: int = 0  # entries of ``sizes`` that come from Python-driven rewrites
    # iterations of each run of the rulesets (the first run, then one after each Python-driven
    # rewrite that made unions); ``iter_limit`` bounds each run, not their sum
    runs: list[int] = field(default_factory=list)
    iter_limit: int | None = None

    @property
    def iterations(self) -> int:
        """Iterations of all runs together (can exceed ``iter_limit``: it bounds each run)."""
        return sum(self.runs)

    def summary(self) -> dict:
        return {
            "iterations": self.iterations,
            "runs": list(self.runs),
            "iter_limit_per_run": self.iter_limit,
            "stop_reason": self.stop_reason,
            "enodes": self.sizes,
            "matches": dict(sorted(self.matches.items())),
            "time_s": round(self.time, 4),
        }


def egraph_size(egraph: EGraph) -> int:
    """E-nodes in the e-graph: rows of every constructor and function table."""
    return sum(n for _, n in egraph.all_function_sizes())


def rule_name(decl, decls) -> str:
    """A rule's name in run reports: ``rule(..., name=...)`` if given, else its printed text."""
    name = getattr(decl, "name", None)
    if name:
        return name
    from egglog.pretty import pretty_decl  # egglog-python internals (pinned egglog==14.0.0)

    return pretty_decl(decls, decl)


def saturate(
    encoding: Encoding,
    rulesets: Sequence[Ruleset | Schedule] = (),
    iter_limit: int = 30,
    node_limit: int = 100_000,
    time_limit: float = 60.0,
    rewrites: Sequence[PyRewrite] = (),
    clock: Callable[[], float] = time.perf_counter,
) -> Saturation:
    """Run ``rulesets`` on the encoding's e-graph until saturated or a limit is reached; then
    each of ``rewrites`` once, in order, each followed by ``rulesets`` again (so what a rewrite
    adds is cleaned up before the next one looks). ``iter_limit`` bounds each of these runs of
    the rulesets (every pass counts as an iteration in the result); a rewrite adds one entry to
    ``sizes``; its matches are the unions it made. The node and time limits are global;
    ``clock`` (seconds) measures the time limit and ``Saturation.time`` (tests inject one)."""
    egraph = encoding.egraph
    result = Saturation(encoding, [egraph_size(egraph)], iter_limit=iter_limit)
    if not rulesets and not rewrites:
        return result
    steps = [run(r) if isinstance(r, Ruleset) else r for r in rulesets]
    schedule = (steps[0] if len(steps) == 1 else seq(*steps)) if steps else None
    runner = _Runner(egraph, schedule) if schedule is not None else None
    t0 = clock()

    def rules_to_fixpoint() -> bool:
        """Run the rulesets until nothing changes; False when a limit stopped them."""
        result.stop_reason = "saturated"
        passes = 0
        while runner is not None:
            if passes >= iter_limit:
                result.stop_reason = "iter-limit"
                return False
            if passes == 0:
                result.runs.append(0)
            updated = runner.run(result.matches)
            passes += 1
            result.runs[-1] += 1
            result.sizes.append(egraph_size(egraph))
            if not updated:
                break
            if not _within(result, node_limit, time_limit, clock() - t0):
                return False
        return _within(result, node_limit, time_limit, clock() - t0)

    if rules_to_fixpoint():
        snapshot = None
        for rw in rewrites:
            # a rewrite that made no unions left the e-graph as it was: the next one reads the
            # same snapshot (taking one serializes the e-graph and types every class: on
            # PP-OCRv4 rec, 17 snapshots were a third of saturation; 5 of the 17 rewrites make
            # unions there, so 6 snapshots are needed)
            if snapshot is None:
                snapshot = Snapshot.take(encoding)
            unions = rw.find(snapshot)
            if unions:
                egraph.register(*(union(a).with_(b) for a, b in unions))
                snapshot = None
            result.matches[rw.name] = result.matches.get(rw.name, 0) + len(unions)
            result.sizes.append(egraph_size(egraph))
            result.rewrite_passes += 1
            if unions and not rules_to_fixpoint():  # none: still at the fixpoint
                break
    result.time = clock() - t0
    return result


class _Runner:
    """``egraph.run(schedule)`` for one schedule run many times, without its per-run Python
    overhead (egglog-python internals, pinned egglog==14.0.0). ``EGraph.run`` converts the
    schedule to an egglog command again on every call, checking each rule of it against the
    registered ones, and translates the whole run report (per rule and per iteration) into dicts
    keyed by the rules' declarations, hashing those deep frozen dataclasses again each time: on
    PP-OCRv4 rec (25 runs, 1.8M ``__hash__`` calls) that was about a third of saturation's Python
    time. Here the command is built once (which registers the rules, as ``run`` does) and only
    the match counts are read, keyed by egglog's rule names, each translated to a rule name once.
    """

    def __init__(self, egraph: EGraph, schedule: Schedule):
        self.state = egraph._state
        egraph._add_decls(schedule)
        self.command = self.state.run_schedule_to_egg(schedule.schedule)
        self.names: dict[str, str] = {}  # egglog's name of a rule -> rule_name

    def run(self, matches: dict[str, int]) -> bool:
        """One run of the schedule; adds its matches per rule name; whether it changed anything."""
        (output,) = self.state.run_program(self.command)
        assert isinstance(output, bindings.RunScheduleOutput)
        report = output.report
        for key, n in report.num_matches_per_rule.items():
            name = self.names.get(key)
            if name is None:
                decl = self.state.rule_name_to_command_decl[key]
                name = self.names[key] = rule_name(decl, self.state.__egg_decls__)
            matches[name] = matches.get(name, 0) + n
        return report.updated


def _within(result: Saturation, node_limit: int, time_limit: float, elapsed: float) -> bool:
    if result.sizes[-1] > node_limit:
        result.stop_reason = "node-limit"
        return False
    if elapsed > time_limit:
        result.stop_reason = "time-limit"
        return False
    return True
