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
``latency in the model / (1 + trials spent on it)`` — its share of the model's latency,
discounted as it gets trials (the same idea as Ansor's gradient-based scheduler, without the
gradient); a kernel whose space is exhausted drops out. The latency is the sum over the
kernel's uses of each one's min time in ``PROFILE_REPS`` runs of the default model, all kernels
timed in the same runs (one job, before the trials); where that failed, ``count × the default's
own baseline``. Why not the baselines alone: each is one job of a few runs, at its own moment of
a shared machine. Measured (VGG, 1 thread, loadavg 4-7): a 1.9 ms conv's baseline came out
6.4 ms, and the scheduler gave it 33 trials against 13 for the 2.2 ms conv beside it.

Measurement: in the model (:mod:`.measure`: the worker builds the whole model once with the
default schedules and times a candidate in place of its kernel inside runs of it), so the
search ranks candidates by what they cost where the model runs them.

Confirmation: after the budget (unless the time limit has passed), each kernel whose best is
not its default has the best and the default timed again in the model, alternately, run by run,
``CONFIRM_REPS`` runs each (one job, records marked ``confirm``, not counted as trials). The
best is kept only when it wins both the min and the median by ``MARGIN`` — a best chosen as
the min over many candidates has won a lucky moment of a shared machine as often as a real
difference (the winner's curse), and a re-measurement beside the default under the same load
is what tells them apart. The winner's record is marked ``verdict``: the log's answer for the
kernel from then on (:meth:`eqsat.autoschedule.log.TuningLog.best`), the default where the best
lost. :func:`eqsat.pipeline.tune` then times the whole model with the log against the default
schedules and, where it is slower beyond noise, logs the default as the verdict of every kernel
(:func:`revert`).

A resumed run reads the log first: the measured candidates of a kernel on this machine are
skipped and train the model; a kernel whose default is logged is not measured again.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eqsat.autoschedule import log as tlog
from eqsat.autoschedule.measure import Context, Job, RayWorker, Worker
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
PROFILE_REPS = 7  # runs of the default model timing every kernel (the scheduler's shares)
CONFIRM_REPS = 15  # runs each of (best, default), alternated, to confirm a best (module doc)
MARGIN = 0.01  # a best is kept when its min and median beat the default's by this share


@dataclass
class Task:
    kernel: Kernel
    sig: str
    space: object
    count: int = 1
    names: list = field(default_factory=list)  # the kernels of the model it stands for
    share_s: float | None = None  # its uses' seconds in runs of the default model (profile)
    default_s: float | None = None
    best_s: float | None = None
    best: Candidate | None = None
    trials: int = 0
    failed: int = 0
    measured: dict = field(default_factory=dict)  # candidate key -> seconds or None
    samples: list = field(default_factory=list)  # (features, log seconds) of the ok ones
    exhausted: bool = False
    kept: bool | None = None  # the confirmation's verdict: best kept / default; None: none

    @property
    def unit(self) -> str:
        return "GFLOP/s" if self.space.kind == "gemm" else "GB/s"

    def rate(self, seconds: float | None) -> float:
        return self.space.work / seconds / 1e9 if seconds else 0.0

    @property
    def weight(self) -> float:
        share = self.share_s if self.share_s is not None else self.count * (self.default_s or 0.0)
        return share / (1 + self.trials)


@dataclass
class TuneReport:
    tasks: list[Task]
    trials: int
    seconds: float
    log: Path
    skipped: list[str] = field(default_factory=list)  # kernels with nothing to tune, and why
    confirmed: int = 0  # the confirmation measurements (beyond the trials)
    whole_model: dict | None = None  # eqsat.pipeline.tune_check's figures, when it ran

    def rows(self) -> list[dict]:
        return [{
            "kernel": t.kernel.name, "kind": t.space.kind, "count": t.count, "trials": t.trials,
            "share_ms": t.share_s * 1e3 if t.share_s is not None else None,
            "failed": t.failed, "unit": t.unit,
            "default_ms": t.default_s * 1e3 if t.default_s else None,
            "best_ms": t.best_s * 1e3 if t.best_s else None,
            "default_rate": t.rate(t.default_s), "best_rate": t.rate(t.best_s),
            "best_is_default": bool(t.best is not None and t.best.default) or t.kept is False,
            "confirmed": t.kept,
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
            tasks[sig].names.append(k.name)
            continue
        space = space_for(k, caps, threads)
        if space is None:
            skipped.append(f"{k.name}: no schedule to choose")
            continue
        tasks[sig] = Task(k, sig, space, names=[k.name])
    return list(tasks.values()), skipped


class Tuner:
    """One tuning run: the tasks, the worker, the log (see the module doc)."""

    def __init__(self, program: LoopProgram, threads: int, log_path: Path, reps: int = REPS,
                 timeout: float = 60.0, seed: int = 0, progress: Progress | None = None,
                 fault: Callable[[Candidate], str] | None = None,
                 ray_address: str | None = None, weights: dict | None = None):  # fmt: skip
        """``weights``: the model's, by buffer name (random ones stand in for those missing:
        the timing does not depend on the values, as long as they are not denormal)."""
        self.threads, self.log_path, self.reps = threads, Path(log_path), reps
        self.machine = machine_key(threads)
        self.tasks, self.skipped = tasks_of(program, threads)
        self.rng = random.Random(seed)
        self.progress = progress
        self.fault = fault  # tests: which candidates crash or hang
        # the model the kernels are timed in (measure.InModel), one key per run
        self.context = Context(program, dict(weights or {}), threads, uuid.uuid4().hex)
        # measured in a local worker process, or as Ray tasks on a cluster (``--ray``)
        self.worker = (RayWorker(ray_address, timeout, self.context) if ray_address
                       else Worker(timeout, self.context))  # fmt: skip
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

    def _record(self, t: Task, cand: Candidate, seconds, error="", **kw) -> tlog.Record:
        return tlog.Record(t.sig, self.machine, cand.key, seconds, cand.default, error,
                           t.space.work, t.unit, dict(cand.knobs), t.kernel.name,
                           **kw)  # fmt: skip

    def measure(self, t: Task, cand: Candidate) -> tlog.Record:
        job = Job(t.kernel, cand.schedule, self.threads, self.reps,
                  self.fault(cand) if self.fault else "", self.context.key)  # fmt: skip
        seconds, error = self.worker.measure(job)
        rec = self._record(t, cand, seconds, error)
        tlog.append(self.log_path, [rec])
        t.trials += 1
        t.failed += not rec.ok
        self.trials += 1
        self._learn(t, rec)
        if self.progress:
            self.progress(t, self.trials)
        return rec

    def profile(self) -> None:
        """Each task's share of the default model's latency (``Task.share_s``, the module
        doc); left None where the profile failed."""
        job = Job(self.tasks[0].kernel, None, self.threads, PROFILE_REPS,
                  context=self.context.key, profile=True)  # fmt: skip
        seconds, _ = self.worker.measure(job)
        for t in self.tasks if seconds else ():
            t.share_s = sum(seconds.get(n, 0.0) for n in t.names)

    def confirm(self, t: Task) -> None:
        """Time ``t``'s best against its default in the model, run by run, and log the
        verdict (the module doc)."""
        best, default = t.best, t.space.default
        job = Job(t.kernel, best.schedule, self.threads, CONFIRM_REPS,
                  self.fault(best) if self.fault else "", self.context.key,
                  against_default=True)  # fmt: skip
        times, error = self.worker.measure(job)
        if times is None:  # the best failed now: the default it is
            t.kept = False
            tlog.append(self.log_path, [self._record(t, best, None, error, confirm=True),
                                        self._record(t, default, t.default_s, confirm=True,
                                                     verdict=True)])  # fmt: skip
            self.confirmed += 1
            return
        mine, base = times
        t.kept = kept(mine, base)
        recs = [self._record(t, best, min(mine), confirm=True, verdict=t.kept),
                self._record(t, default, min(base), confirm=True, verdict=not t.kept)]
        tlog.append(self.log_path, recs)
        self.confirmed += 2
        for r in recs:
            self._learn(t, r)
        if self.progress:
            self.progress(t, self.trials)

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
            if self.tasks and not done():
                self.profile()
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
                if t.best is not None and not t.best.default:
                    self.confirm(t)
        finally:
            self.worker.close()
        return TuneReport(self.tasks, self.trials, time.perf_counter() - t0, self.log_path,
                          self.skipped, self.confirmed)  # fmt: skip


def kept(best: list[float], default: list[float]) -> bool:
    """Whether a best whose runs took ``best`` seconds beats the default's ``default`` (timed
    alternately): its min and its median both lower by ``MARGIN``."""
    return (min(best) <= (1 - MARGIN) * min(default)
            and float(np.median(best)) <= (1 - MARGIN) * float(np.median(default)))  # fmt: skip


def revert(log_path: Path, program: LoopProgram, threads: int) -> list[str]:
    """Log the default schedule as the verdict of each kernel of ``program`` the log gives a
    tuned schedule (the whole model ran slower with them); the names of those kernels."""
    log = tlog.TuningLog.load(log_path)
    chosen = log.choices(program, threads)
    machine = machine_key(threads)
    tasks, _ = tasks_of(program, threads)
    recs = [tlog.Record(t.sig, machine, t.space.default.key, None, True, "reverted: the whole "
                        "model ran slower with the tuned schedules", t.space.work, t.unit,
                        dict(t.space.default.knobs), t.kernel.name, confirm=True, verdict=True)
            for t in tasks if t.kernel.name in chosen]  # fmt: skip
    tlog.append(log_path, recs)
    return [r.kernel for r in recs]


def report_json(report: TuneReport) -> dict:
    return {"trials": report.trials, "confirmed": report.confirmed,
            "seconds": round(report.seconds, 3),
            "log": str(report.log), "kernels": report.rows(), "skipped": report.skipped,
            **({"whole_model": report.whole_model} if report.whole_model else {})}

