"""Measured search over a program's kernels: random sampling, then a learned ranking plus
evolutionary mutation, with a task scheduler spreading the trials by latency share.

Consumes a lowered (unscheduled) LoopProgram with constant shapes, a thread count, a trial
budget and a time limit; produces records appended to the tuning log (:mod:`.log`) as each
trial ends, and a :class:`TuneReport` (per distinct kernel: default and best seconds, trials).

Per kernel (a :class:`Task`: one signature, however often the model uses it): the first trial
is the default schedule (the baseline, and the latency the scheduler weighs). Each later
round proposes a pool of unmeasured candidates — ``POOL`` random ones from the space and
``MUTANTS`` mutations of the best ``ELITE`` measured so far (the evolutionary part: one or two
knobs moved to a neighbouring value) — and measures ``BATCH`` of them: while fewer than
``MIN_FIT`` have been measured, random ones; then the ones the cost model
(:class:`~eqsat.autoschedule.model.BoostedTrees` fit on this kernel's measured log-seconds)
predicts fastest, plus one random pick so that a wrong model still sees new regions.

Task scheduler: the next round goes to the kernel with the largest
``count × default latency / (1 + trials spent on it)`` — its share of the model's latency,
discounted as it gets trials (the same idea as Ansor's gradient-based scheduler, without the
gradient); a kernel whose space is exhausted drops out.

Confirmation: after the budget (unless the time limit has passed), each kernel whose best is
not its default has the default and the best measured again, ``CONFIRM`` rounds, one right
after the other (records marked ``confirm``, not counted as trials): a best that won by a
lucky moment of a shared machine then meets the default under the same load, and since the
log keeps the fastest run of each schedule, the default wins back where it is as fast.

A resumed run reads the log first: the measured candidates of a kernel on this machine are
skipped and train the model; a kernel whose default is logged is not measured again.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eqsat.autoschedule import log as tlog
from eqsat.autoschedule.measure import Job, RayWorker, Worker
from eqsat.autoschedule.model import BoostedTrees
from eqsat.autoschedule.signature import kernel_signature, machine_key
from eqsat.autoschedule.space import Candidate, space_for
from eqsat.lower.loops import Kernel, LoopProgram

POOL = 48
MUTANTS = 16
ELITE = 3
BATCH = 4
MIN_FIT = 6
REPS = 5
CONFIRM = 1  # rounds of (default, best) re-measured at the end where the best is not the default


@dataclass
class Task:
    kernel: Kernel
    sig: str
    space: object
    count: int = 1
    default_s: float | None = None
    best_s: float | None = None
    best: Candidate | None = None
    trials: int = 0
    failed: int = 0
    measured: dict = field(default_factory=dict)  # candidate key -> seconds or None
    samples: list = field(default_factory=list)  # (features, log seconds) of the ok ones
    exhausted: bool = False

    @property
    def unit(self) -> str:
        return "GFLOP/s" if self.space.kind == "gemm" else "GB/s"

    def rate(self, seconds: float | None) -> float:
        return self.space.work / seconds / 1e9 if seconds else 0.0

    @property
    def weight(self) -> float:
        return self.count * (self.default_s or 0.0) / (1 + self.trials)


@dataclass
class TuneReport:
    tasks: list[Task]
    trials: int
    seconds: float
    log: Path
    skipped: list[str] = field(default_factory=list)  # kernels with nothing to tune, and why
    confirmed: int = 0  # the confirmation measurements (beyond the trials)

    def rows(self) -> list[dict]:
        return [{
            "kernel": t.kernel.name, "kind": t.space.kind, "count": t.count, "trials": t.trials,
            "failed": t.failed, "unit": t.unit,
            "default_ms": t.default_s * 1e3 if t.default_s else None,
            "best_ms": t.best_s * 1e3 if t.best_s else None,
            "default_rate": t.rate(t.default_s), "best_rate": t.rate(t.best_s),
            "best_is_default": bool(t.best is not None and t.best.default),
            "knobs": dict(t.best.knobs) if t.best else {},
        } for t in self.tasks]  # fmt: skip


Progress = Callable[[Task, int], None]  # (task just measured, trials so far in the run)


def tasks_of(program: LoopProgram, threads: int) -> tuple[list[Task], list[str]]:
    """The distinct tunable kernels of ``program`` (by signature, counted), and the names of
    the kernels left out with the reason."""
    from eqsat.backends.llvm.capabilities import Capabilities

    caps = Capabilities.host()
    tasks: dict[str, Task] = {}
    skipped = []
    for k in program.kernels:
        if any(isinstance(d, str) for p in k.params for d in p.shape):
            skipped.append(f"{k.name}: symbolic shape (fix it with --input-shape)")
            continue
        sig = kernel_signature(k)
        if sig in tasks:
            tasks[sig].count += 1
            continue
        space = space_for(k, caps, threads)
        if space is None:
            skipped.append(f"{k.name}: no schedule to choose")
            continue
        tasks[sig] = Task(k, sig, space)
    return list(tasks.values()), skipped


class Tuner:
    """One tuning run: the tasks, the worker, the log (see the module doc)."""

    def __init__(self, program: LoopProgram, threads: int, log_path: Path, reps: int = REPS,
                 timeout: float = 60.0, seed: int = 0, progress: Progress | None = None,
                 fault: Callable[[Candidate], str] | None = None,
                 ray_address: str | None = None):  # fmt: skip
        self.threads, self.log_path, self.reps = threads, Path(log_path), reps
        self.machine = machine_key(threads)
        self.tasks, self.skipped = tasks_of(program, threads)
        self.rng = random.Random(seed)
        self.progress = progress
        self.fault = fault  # tests: which candidates crash or hang
        # measured in a local worker process, or as Ray tasks on a cluster (``--ray``)
        self.worker = RayWorker(ray_address, timeout) if ray_address else Worker(timeout)
        self.trials = self.confirmed = 0
        self.known: dict[str, Candidate] = {}  # key -> candidate, of everything measured
        self._resume()

    def _resume(self) -> None:
        for r in tlog.read(self.log_path):
            if r.machine != self.machine:
                continue
            for t in self.tasks:
                if t.sig == r.sig:
                    self._learn(t, r)

    def _learn(self, t: Task, r: tlog.Record) -> None:
        cand = t.space.default if r.default else t.space.from_knobs(r.knobs)
        if cand is None:
            return  # a record the current space cannot express (eqsat changed): ignore it
        self.known[cand.key] = cand
        old = t.measured.get(cand.key)
        t.measured[cand.key] = r.seconds if old is None else min(old, r.seconds or old)
        if r.default and r.ok:
            t.default_s = r.seconds if t.default_s is None else min(t.default_s, r.seconds)
        if r.ok:
            t.samples.append((t.space.features(cand), float(np.log(r.seconds))))
            if t.best_s is None or r.seconds < t.best_s:
                t.best_s, t.best = r.seconds, cand

    def measure(self, t: Task, cand: Candidate, confirm: bool = False) -> tlog.Record:
        job = Job(t.kernel, cand.schedule, self.threads, self.reps,
                  self.fault(cand) if self.fault else "")  # fmt: skip
        seconds, error = self.worker.measure(job)
        rec = tlog.Record(t.sig, self.machine, cand.key, seconds, cand.default, error,
                          t.space.work, t.unit, dict(cand.knobs), t.kernel.name,
                          confirm=confirm)  # fmt: skip
        tlog.append(self.log_path, [rec])
        if confirm:
            self.confirmed += 1
        else:
            t.trials += 1
            t.failed += not rec.ok
            self.trials += 1
        self._learn(t, rec)
        if self.progress:
            self.progress(t, self.trials)
        return rec

    def _propose(self, t: Task, n: int) -> list[Candidate]:
        pool: dict[str, Candidate] = {}
        for _ in range(POOL):
            c = t.space.sample(self.rng)
            if c is not None and c.key not in t.measured:
                pool.setdefault(c.key, c)
        elite = sorted(self._measured_ok(t), key=lambda c: t.measured[c.key])[:ELITE]
        for _ in range(MUTANTS if elite else 0):
            c = t.space.mutate(self.rng.choice(elite), self.rng)
            if c is not None and c.key not in t.measured:
                pool.setdefault(c.key, c)
        cands = list(pool.values())
        if len(t.samples) < MIN_FIT or len(cands) <= n:
            self.rng.shuffle(cands)
            return cands[:n]
        x = np.array([s[0] for s in t.samples])
        y = np.array([s[1] for s in t.samples])
        pred = BoostedTrees().fit(x, y).predict(np.array([t.space.features(c) for c in cands]))
        order = [cands[i] for i in np.argsort(pred)]
        picked = order[: n - 1]
        rest = order[n - 1 :]
        return picked + [self.rng.choice(rest)]  # one random pick keeps exploring

    def _measured_ok(self, t: Task):
        return (self.known[k] for k, s in t.measured.items() if s is not None and k in self.known)

    def run(self, trials: int, time_limit: float | None = None) -> TuneReport:
        """Measure up to ``trials`` candidates, stopping once ``time_limit`` seconds have
        passed (the trial under way finishes)."""
        t0 = time.perf_counter()

        def done() -> bool:
            late = time_limit is not None and time.perf_counter() - t0 > time_limit
            return late or self.trials >= trials

        try:
            for t in self.tasks:  # the baselines first: the scheduler weighs by them
                if t.space.default.key not in t.measured and not done():
                    self.measure(t, t.space.default)
            while not done():
                live = [t for t in self.tasks if not t.exhausted]
                if not live:
                    break
                t = max(live, key=lambda t: t.weight)
                batch = self._propose(t, min(BATCH, trials - self.trials))
                if not batch:
                    t.exhausted = True
                    continue
                for c in batch:
                    if done():
                        break
                    self.measure(t, c)
            late = time_limit is not None and time.perf_counter() - t0 > time_limit
            for t in self.tasks if not late else ():
                for _ in range(CONFIRM if t.best is not None and not t.best.default else 0):
                    for c in (t.space.default, t.best):
                        self.measure(t, c, confirm=True)
        finally:
            self.worker.close()
        return TuneReport(self.tasks, self.trials, time.perf_counter() - t0, self.log_path,
                          self.skipped, self.confirmed)  # fmt: skip


def report_json(report: TuneReport) -> dict:
    return {"trials": report.trials, "confirmed": report.confirmed,
            "seconds": round(report.seconds, 3),
            "log": str(report.log), "kernels": report.rows(), "skipped": report.skipped}

