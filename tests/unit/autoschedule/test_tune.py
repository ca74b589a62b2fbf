"""Tuning end to end: measured search in a worker (a crashing candidate costs one trial), timed
inside the model, the log it writes, the confirmation's verdicts, compile applying the logged
plan (and nothing without a log, or where the verdict is the default), ``eqsat tune``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest

from eqsat import pipeline
from eqsat.autoschedule import log as tlog
from eqsat.autoschedule.measure import Context, Job, Worker
from eqsat.autoschedule.search import CONFIRM_REPS, Tuner, kept, revert
from eqsat.autoschedule.signature import kernel_signature, machine_key
from eqsat.autoschedule.space import space_for
from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.plan_choice import PLAN_KEY, decode
from eqsat.egraph.onnx_io import import_onnx
from eqsat.lower.lower import lower
from eqsat.lower.printer import print_program
from eqsat.lower.schedule import Annotate, Tensorize
from tests.helpers import run_ort
from tests.unit.autoschedule.models import conv_mlp

TRIALS = 7


@pytest.fixture(scope="module")
def program():
    return lower(import_onnx(conv_mlp())).program


def test_crash_costs_one_trial(program, tmp_path):
    """The first candidate after the baselines crashes the worker (injected): one failed
    trial, the worker restarts, the search goes on."""
    path = tmp_path / "t.jsonl"
    crash = {"n": 0}

    def fault(c):
        if not c.default and crash["n"] == 0:
            crash["n"] += 1
            return "crash"
        return ""

    tuner = Tuner(program, 1, path, fault=fault)
    report = tuner.run(TRIALS)
    recs = tlog.read(path)
    assert report.trials == TRIALS == len([r for r in recs if not r.confirm])
    assert len(recs) == TRIALS + report.confirmed
    failed = [r for r in recs if not r.ok]
    assert len(failed) == 1 and "died" in failed[0].error
    assert sum(t.failed for t in report.tasks) == 1
    assert tuner.worker.started == 2  # restarted once after the crash
    assert all(t.default_s for t in report.tasks)  # every baseline measured
    assert {r.sig for r in recs} == {kernel_signature(k) for k in program.kernels}


def test_worker_reports_a_failing_candidate(program):
    k = program.kernels[0]
    root = k.body.var
    bad = (Tensorize(root, "gemm"), Annotate(root, PLAN_KEY, "mr=1"))  # not a plan
    with Worker(timeout=60) as w:
        seconds, error = w.measure(Job(k, None, 1, 2))
        assert seconds > 0 and error == ""
        seconds, error = w.measure(Job(k, bad, 1, 1))
        assert seconds is None and "PlanError" in error
        assert w.measure(Job(k, None, 1, 1))[0] > 0 and w.started == 1  # the same worker


@pytest.mark.slow
def test_hang_times_out(program):
    with Worker(timeout=3) as w:
        assert w.measure(Job(program.kernels[1], None, 1, 1))[0] > 0  # started, imports paid
        seconds, error = w.measure(Job(program.kernels[1], None, 1, 1, fault="hang"))
        assert seconds is None and "timed out" in error
        assert w.measure(Job(program.kernels[1], None, 1, 1))[0] > 0 and w.started == 2


def _log_plan(path, kernel, knobs_change, verdict=True):
    """A log holding one non-default plan of ``kernel`` (as fastest, and as the verdict of a
    confirmation unless ``verdict`` is false) and its default."""
    space = space_for(kernel, Capabilities.host(), 1)
    cand = space.candidate(dict(space.default.knobs) | knobs_change)
    assert cand is not None
    sig, m = kernel_signature(kernel), machine_key(1)
    tlog.append(path, [
        tlog.Record(sig, m, space.default.key, 2e-3, True, knobs=dict(space.default.knobs)),
        tlog.Record(sig, m, cand.key, 1e-3, False, knobs=dict(cand.knobs), confirm=verdict,
                    verdict=verdict),
    ])  # fmt: skip
    return cand


def test_compile_applies_the_logged_plan(program, tmp_path):
    path = tmp_path / "t.jsonl"
    cand = _log_plan(path, program.kernels[0], {"kc": 64, "unroll": 1})
    opts = pipeline.Options(target="llvm", threads=1, egraph=False, cache=False,
                            tuning_log=str(path))  # fmt: skip
    result = pipeline.compile(conv_mlp(), opts)  # the gate compares with onnxruntime
    assert result.verdict.ok
    assert result.compiled.report["tuned_kernels"] == 1
    conv = result.compiled.program.kernels[0]
    assert decode(dict(conv.body.annotations)[PLAN_KEY]) == dict(cand.knobs)
    x = np.random.default_rng(0).standard_normal((1, 8, 10, 10)).astype(np.float32)
    (want,) = run_ort(conv_mlp(), {"x": x})
    np.testing.assert_allclose(result.compiled.run({"x": x})[0], want, rtol=1e-4, atol=1e-4)


def test_an_unconfirmed_best_is_not_used(program, tmp_path):
    """The fastest record that no confirmation has timed against the default (a run stopped
    by its time limit, or killed, before confirming) leaves the kernel on its default."""
    path = tmp_path / "t.jsonl"
    cand = _log_plan(path, program.kernels[0], {"kc": 64, "unroll": 1}, verdict=False)
    log = tlog.TuningLog.load(path)
    sig, m = kernel_signature(program.kernels[0]), machine_key(1)
    assert log.best(sig, m).schedule == cand.key and log.chosen(sig, m) is None
    assert log.choices(program, 1) == {}


def test_no_log_is_the_default(tmp_path):
    opts = dict(target="llvm", threads=1, egraph=False, cache=False, verify=False)
    empty = pipeline.compile(conv_mlp(), pipeline.Options(
        **opts, tuning_log=str(tmp_path / "none.jsonl"))).compiled  # fmt: skip
    off = pipeline.compile(conv_mlp(), pipeline.Options(**opts, tuned=False)).compiled
    assert empty.report["tuned_kernels"] == 0
    assert print_program(empty.program) == print_program(off.program)
    assert empty.executable.ir == off.executable.ir


def test_default_best_and_stale_records_change_nothing(program, tmp_path):
    path = tmp_path / "t.jsonl"
    k = program.kernels[0]
    space = space_for(k, Capabilities.host(), 1)
    sig, m = kernel_signature(k), machine_key(1)
    tlog.append(path, [
        tlog.Record(sig, m, space.default.key, 1e-3, True),  # the default is the best
        tlog.Record(sig, machine_key(2), "[]", 1e-9, False),  # another machine
    ])  # fmt: skip
    with path.open("a") as f:
        f.write("garbage\n")
    with pytest.warns(UserWarning):
        assert tlog.TuningLog.load(path).choices(program, 1) == {}


def _eqsat(*args, env):
    return subprocess.run([sys.executable, "-m", "eqsat", *args], capture_output=True,
                          text=True, env=env)  # fmt: skip


def test_cli_tune_then_compile(tmp_path):
    import os

    model = tmp_path / "m.onnx"
    onnx.save(conv_mlp(), model)
    log = tmp_path / "tune.jsonl"
    env = dict(os.environ, EQSAT_CACHE_DIR=str(tmp_path / "cache"))
    r = _eqsat("tune", str(model), "--trials", "6", "--threads", "1", "--no-optimize",
               "--log", str(log), "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["trials"] == 6 == len([r for r in tlog.read(log) if not r.confirm])
    assert {row["kernel"] for row in summary["kernels"]} == {"k0_conv", "k1_reducemean",
                                                             "k2_matmul"}  # fmt: skip
    whole = summary["whole_model"]  # the default schedules against the log, whole model
    if whole["tuned_kernels"]:
        assert whole["default_ms"] > 0 and whole["tuned_ms"] > 0
        assert whole["slower"] == (whole["speedup"] < 1 and not whole["within_noise"])
        assert bool(whole["reverted"]) == whole["slower"]
    program = lower(import_onnx(conv_mlp())).program
    want = len(tlog.TuningLog.load(log).choices(program, 1))  # whichever candidates won
    with log.open("a") as f:
        f.write("{torn")  # a damaged line: a one-line warning, the rest of the log is used
    r = _eqsat("compile", str(model), "--threads", "1", "--no-optimize", "--tuning-log",
               str(log), "--json", env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["lowering"]["tuned_kernels"] == want
    assert r.stderr.strip().splitlines() == [
        f"eqsat: warning: {log}: skipped 1 line(s) that are not tuning records"]


def test_cli_tune_bad_input(tmp_path):
    import os

    env = dict(os.environ, EQSAT_CACHE_DIR=str(tmp_path / "cache"))
    r = _eqsat("tune", str(tmp_path / "missing.onnx"), env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    model = tmp_path / "m.onnx"
    onnx.save(conv_mlp(), model)
    r = _eqsat("tune", str(model), "--log", str(tmp_path), env=env)
    assert r.returncode == 2 and "is a directory" in r.stderr
    r = _eqsat("tune", str(model), "--trials", "0", env=env)
    assert r.returncode == 2


def test_a_second_run_resumes(program, tmp_path):
    path = tmp_path / "t.jsonl"
    Tuner(program, 1, path).run(5)
    second = Tuner(program, 1, path)
    assert sum(len(t.measured) for t in second.tasks) >= 5  # what the log holds is known
    second.run(3)
    recs = [r for r in tlog.read(path) if not r.confirm]
    assert len(recs) == 8
    assert len({(r.sig, r.schedule) for r in recs}) == 8  # no candidate tried twice


def test_time_limit_stops_before_the_trials(program, tmp_path):
    report = Tuner(program, 1, tmp_path / "t.jsonl").run(10, time_limit=0.0)
    assert report.trials == 0 and tlog.read(tmp_path / "t.jsonl") == []


def test_api_tune_then_compile(tmp_path):
    import eqsat

    log = tmp_path / "t.jsonl"
    report = eqsat.tune(conv_mlp(), trials=4, log=log, threads=1, optimize=False)
    assert report.trials == 4 == len(tlog.read(log)) - report.confirmed
    model = eqsat.compile(conv_mlp(), threads=1, optimize=False, tuning_log=str(log), cache=False)
    program = lower(import_onnx(conv_mlp())).program
    assert model.report["tuned_kernels"] == len(tlog.TuningLog.load(log).choices(program, 1))


def test_a_best_that_is_not_the_default_is_confirmed_in_the_model(program, tmp_path):
    """A best logged as faster than the default is timed again against it, in the model, and
    the winner's record is the verdict the log answers with from then on."""
    path = tmp_path / "t.jsonl"
    cand = _log_plan(path, program.kernels[0], {"kc": 64}, verdict=False)  # fastest, unconfirmed
    tuner = Tuner(program, 1, path)
    report = tuner.run(len(program.kernels) - 1)  # the other baselines
    assert report.trials == 2 and report.confirmed == 2
    again = [r for r in tlog.read(path) if r.confirm]
    default_key = space_for(program.kernels[0], Capabilities.host(), 1).default.key
    assert {(r.schedule, r.default) for r in again} == {(cand.key, False), (default_key, True)}
    (verdict,) = [r for r in again if r.verdict]
    task = report.tasks[0]
    assert verdict.schedule == (cand.key if task.kept else default_key)
    assert tlog.TuningLog.load(path).best(verdict.sig, verdict.machine) == verdict
    assert len(tlog.TuningLog.load(path).choices(program, 1)) == int(task.kept)


class _Timings:
    """A stand-in worker: a fixed profile of the model, and a fixed time per kernel for any
    schedule."""

    def __init__(self, profile, seconds):
        self.profile, self.seconds, self.jobs = profile, seconds, []

    def measure(self, job):
        self.jobs.append(job)
        if job.profile:
            return dict(self.profile), ""
        s = self.seconds[job.kernel.name]
        return ([[s] * job.reps, [s] * job.reps] if job.against_default else s), ""

    def close(self):
        pass


def test_the_scheduler_spreads_trials_by_latency_in_the_model(program, tmp_path):
    """Trials go by each kernel's time in a profile of the default model, not by its baseline
    (here the baselines say the opposite): the conv takes 3x the matmul's time and gets about
    3x its trials (one more each: the baseline)."""
    tuner = Tuner(program, 1, tmp_path / "t.jsonl")
    tuner.worker.close()
    profile = {"k0_conv": 3e-3, "k1_reducemean": 1e-6, "k2_matmul": 1e-3}
    baselines = {"k0_conv": 1e-6, "k1_reducemean": 1e-6, "k2_matmul": 1e-3}
    tuner.worker = _Timings(profile, baselines)
    report = tuner.run(43)
    assert tuner.worker.jobs[0].profile  # before any trial
    assert {t.kernel.name: t.share_s for t in report.tasks} == profile
    trials = {t.kernel.name: t.trials for t in report.tasks}
    assert trials["k1_reducemean"] == 1  # its baseline: a millionth of the model
    # share / (1 + trials) evened out, to a round of BATCH trials
    assert 2.5 <= (1 + trials["k0_conv"]) / (1 + trials["k2_matmul"]) <= 3.5


def test_kept_needs_the_min_and_the_median():
    base = [1.0] * CONFIRM_REPS
    assert kept([0.9] * CONFIRM_REPS, base)
    assert not kept([0.995] * CONFIRM_REPS, base)  # within the margin
    assert not kept([0.5] + [1.1] * (CONFIRM_REPS - 1), base)  # one lucky run


def test_a_verdict_overrides_the_fastest_record_and_revert_logs_the_default(program, tmp_path):
    path = tmp_path / "t.jsonl"
    k = program.kernels[0]
    cand = _log_plan(path, k, {"kc": 64, "unroll": 1})
    assert set(tlog.TuningLog.load(path).choices(program, 1)) == {k.name}
    assert revert(path, program, 1) == [k.name]  # the whole model was slower: the default
    assert tlog.TuningLog.load(path).choices(program, 1) == {}
    sig, m = kernel_signature(k), machine_key(1)
    tlog.append(path, [tlog.Record(sig, m, cand.key, 3e-3, knobs=dict(cand.knobs),
                                   confirm=True, verdict=True)])  # a later verdict: the plan
    assert set(tlog.TuningLog.load(path).choices(program, 1)) == {k.name}
    assert revert(path, program, 1) == [k.name] and revert(path, program, 1) == []


def test_a_kernel_is_timed_in_the_model(program):
    """A worker given the model (sent once) times a kernel inside runs of it, alone or
    alternately with its default (a list of runs each), and refuses a job naming a model it
    was not given. (How much the timings differ from the kernel's alone is a measurement, in
    measure.py's doc, not a test.)"""
    k = program.kernels[-1]
    ctx = Context(program, {}, 1, "m")
    with Worker(timeout=60, context=ctx) as w:
        inside, error = w.measure(Job(k, None, 1, 5, context="m"))
        assert error == "" and inside > 0
        times, error = w.measure(Job(k, None, 1, 5, context="m", against_default=True))
        assert error == "" and [len(t) for t in times] == [5, 5]
        assert w.measure(Job(k, None, 1, 5, context="other"))[1].startswith("RuntimeError")
        assert w.started == 1  # the context was sent once


def test_a_script_without_a_main_guard_can_tune(tmp_path):
    """The measuring worker is a fresh ``python -m`` process, not a multiprocessing spawn: a
    user's script that calls ``eqsat.tune`` at top level does not re-run itself in it."""
    model = tmp_path / "m.onnx"
    onnx.save(conv_mlp(), model)
    script = tmp_path / "tune_it.py"
    script.write_text(
        "import eqsat\n"
        f"report = eqsat.tune({str(model)!r}, trials=2, log={str(tmp_path / 't.jsonl')!r},"
        " threads=1, optimize=False)\n"
        "print('failed', sum(t.failed for t in report.tasks))\n"
    )
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["failed", "0"]  # printed once, by this process only
    records = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert records and all(r["seconds"] for r in records)


def test_cli_tune_reverts_when_the_tuned_model_is_slower(tmp_path, monkeypatch, capsys):
    """When the whole model compiled with the log runs slower than with the default schedules
    (beyond noise), ``eqsat tune`` logs the defaults as the verdicts (compile then uses none of
    the tuned schedules) and says so. The timing is replaced here: what is tested is the
    verdict, the log and the message."""
    from eqsat import cli
    from eqsat.autoschedule import search
    from eqsat.verify import timing

    def slow_tuned(runners, feeds, reps):
        for run in runners.values():
            run(feeds)
        default = {"min_ms": 1.0, "median_ms": 1.01, "q3_ms": 1.02, "reps": reps}
        tuned = {"min_ms": 1.3, "median_ms": 1.31, "q3_ms": 1.32, "reps": reps}
        return [default, tuned | {"vs_first": timing.speedup(default, tuned)}]

    monkeypatch.setattr(timing, "interleaved_calls", slow_tuned)
    monkeypatch.setattr(search, "kept", lambda best, default: True)  # the plan wins alone
    monkeypatch.setenv("EQSAT_CACHE_DIR", str(tmp_path / "cache"))
    model = tmp_path / "m.onnx"
    onnx.save(conv_mlp(), model)
    log = tmp_path / "t.jsonl"
    program = lower(import_onnx(conv_mlp())).program
    k = program.kernels[0]
    _log_plan(log, k, {"kc": 64, "unroll": 1})
    argv = ["tune", str(model), "--trials", "1", "--threads", "1", "--no-optimize", "--log",
            str(log)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "whole model, tuned against the default schedules: 0.77x" in text
    assert f"the default schedules are logged for 1 kernel(s) ({k.name})" in text
    assert tlog.TuningLog.load(log).choices(program, 1) == {}
    # 1 trial for the 2 kernels without a logged default: one is left untried, and the table
    # says so (not a 0.00x speed-up)
    assert "not tried" in text and "0.00x" not in text
    assert cli.main([*argv, "--no-check"]) == 0
    assert "whole model" not in capsys.readouterr().out
