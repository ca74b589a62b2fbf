"""Build and time one kernel under one schedule, where the model runs it, in a worker process.

Consumes an unscheduled kernel (as lowered), a candidate schedule (:mod:`.space`), a thread
count and, normally, the model the kernel belongs to (a :class:`Context`); produces the min
seconds of one call over the repetitions, or why it failed.

:func:`standalone` makes the kernel a program of its own (the buffers it writes become
outputs, the others inputs; weights stay weights, since a weight operand is packed once) and
:func:`prepare` schedules it through the compile path's own function
(:func:`eqsat.compiled.schedule_llvm`, with the candidate as the kernel's chosen schedule), so
what is timed is what ``eqsat compile`` would build.

**In the model** (a job with a context, what ``eqsat tune`` runs): the worker builds the whole
model once with the default schedules (:class:`InModel`: its real weights, random inputs), and
a candidate is called in place of its kernel inside runs of the model — the kernels before it
called first, its call timed, the kernels after it called — on the model's own buffers; one
untimed run first (it packs the candidate's weights), then ``reps`` runs, the min. Why: timed
alone, a kernel ran back to back on its own buffers, its weights and inputs hot in the caches,
which predicted the model badly. Measured (VGG, 1 thread, the kernels of the compiled model
timed alone, called 3 times in a row, against the same kernels inside runs of the model, min of
15): the maxpools 0.013 vs 0.060 ms, the first FC GEMV 0.71 vs 0.97 ms, the last 0.010 vs 0.071
ms; a candidate's win measured hot does not say how it does on cold weights. Calling the
whole model around each timed call also leaves the caches as the model leaves them for this
kernel (the previous kernel's output in L2, the weights evicted by the others').

**Alone** (no context: :func:`time_kernel`, the tests' and a caller's own kernels): random
inputs, one warm-up call, then ``reps`` rounds of ``number`` calls (enough for ~1 ms a round),
the min per call.

A job with ``against_default`` times the candidate and the default schedule alternately, run
by run, and returns both lists of seconds (the confirmation of :mod:`.search`); one with
``profile`` times every kernel of the default model in the same runs, ``{name: min seconds}``
(the task scheduler's shares).

:class:`Worker` runs the jobs in a fresh interpreter, ``python -m eqsat.autoschedule.measure``,
talking over two pipes of its own (``multiprocessing.connection`` framing): no state of the
parent's LLVM or thread pool is inherited, and, unlike a ``multiprocessing`` spawn, the child
does not re-import the caller's ``__main__`` — a user's script calling ``eqsat.tune`` needs
no ``if __name__ == "__main__"`` guard (with spawn, such a script re-ran itself in the worker
and failed in multiprocessing's bootstrapping check). The context is sent once per worker
process, before its first job. A candidate that crashes the process (a bad generated code
path, a segfault) or runs past ``timeout`` seconds costs one failed trial, the worker is
restarted and the search goes on. ``fault`` in a job injects a crash or a hang (the tests use
it to check exactly that).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from eqsat.lower.analysis import replace_buffer, walk
from eqsat.lower.loops import Accumulate, BufferKind, Kernel, LoopProgram, Store
from eqsat.lower.schedule import Schedule

IMPORT_S = 30.0  # grace for a fresh worker's imports
BUILD_S = 120.0  # grace for a fresh worker to build the model (a cold compile, under load)
ROUND_S = 1e-3  # a timed round is at least this long (calls per round from the warm-up)


def standalone(kernel: Kernel) -> LoopProgram:
    """``kernel`` as a program of its own: written params become outputs, read ones inputs."""
    written = {n.buffer.name for n in walk(kernel.body) if isinstance(n, Store | Accumulate)}
    body, params = kernel.body, []
    for p in kernel.params:
        kind = (BufferKind.OUTPUT if p.name in written
                else p.kind if p.kind is BufferKind.WEIGHT else BufferKind.INPUT)  # fmt: skip
        q = dataclasses.replace(p, kind=kind)
        if q != p:
            body = replace_buffer(body, p, q)
        params.append(q)
    k = dataclasses.replace(kernel, params=tuple(params), body=body)
    return LoopProgram(f"tune_{kernel.name}", k.params, (k,))


def prepare(kernel: Kernel, schedule: Schedule | None, threads: int) -> LoopProgram:
    """The standalone program of ``kernel`` scheduled as ``eqsat compile`` would with
    ``schedule`` as its chosen one (None: the default)."""
    from eqsat.compiled import schedule_llvm

    program = standalone(kernel)
    chosen = {} if schedule is None else {program.kernels[0].name: schedule}
    return schedule_llvm(program, threads, chosen)


def feeds_for(program: LoopProgram, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for b in program.inputs + program.weights:
        shape = b.sized({})
        out[b.name] = (rng.standard_normal(shape).astype(b.dtype) if np.dtype(b.dtype).kind == "f"
                       else rng.integers(0, 2, shape).astype(b.dtype))  # fmt: skip
    return out


def run_once(kernel: Kernel, schedule: Schedule | None, threads: int) -> dict[str, np.ndarray]:
    """The outputs of the compiled candidate on :func:`feeds_for` (for checks)."""
    from eqsat.backends.llvm import runtime

    program = prepare(kernel, schedule, threads)
    return runtime.compile(program, threads=threads).run(feeds_for(program))


def compiled_call(kernel: Kernel, schedule: Schedule | None, threads: int):
    """A no-argument callable running the compiled candidate once on bound random inputs."""
    from eqsat.backends.llvm import runtime

    program = prepare(kernel, schedule, threads)
    # not through the object cache: a search's hundreds of candidates would fill it
    cp = runtime.compile(program, threads=threads, use_cache=False)
    arrays, dims = cp.bind(feeds_for(program))
    return lambda: cp.call(arrays, dims)


def time_kernel(kernel: Kernel, schedule: Schedule | None, threads: int, reps: int) -> float:
    """Min seconds of one call of the compiled candidate (see the module doc)."""
    call = compiled_call(kernel, schedule, threads)
    t0 = time.perf_counter()
    call()  # warm-up: packs the weights, faults the pages in
    first = time.perf_counter() - t0
    number = max(1, min(1000, int(ROUND_S / max(first, 1e-7))))
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(number):
            call()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


@dataclass(frozen=True)
class Context:
    """The model a tuning run's kernels belong to: its lowered (unscheduled) program, its
    weights by buffer name, the threads it runs on; ``key`` names it (a worker builds the
    model of a key once)."""

    program: LoopProgram
    weights: dict
    threads: int
    key: str


class InModel:
    """A :class:`Context` built in this process: the model with the default schedules on bound
    buffers (the weights, random inputs, the outputs and temporaries allocated once), its
    kernels as calls in order, run twice (the weights packed, the pages faulted in)."""

    def __init__(self, context: Context):
        from eqsat.backends.llvm import runtime
        from eqsat.compiled import schedule_llvm

        program = schedule_llvm(context.program, context.threads)
        self.cp = runtime.compile(program, threads=context.threads)
        feeds = dict(context.weights)
        feeds |= {k: v for k, v in feeds_for(program).items() if k not in feeds}
        self.arrays, dims = self.cp.bind(feeds)
        self.calls = list(self.cp.kernel_calls(self.arrays, dims).items())
        self.cp.call(self.arrays, dims)
        self.cp.call(self.arrays, dims)

    def candidate(self, kernel: Kernel, schedule: Schedule | None, threads: int):
        """The compiled candidate of ``kernel`` as a no-argument call on the model's buffers
        (a buffer of its program the model does not have, a workspace, is allocated)."""
        from eqsat.backends.llvm import runtime

        program = prepare(kernel, schedule, threads)
        cp = runtime.compile(program, threads=threads, use_cache=False)
        arrays = {}
        for b in program.buffers:
            a = self.arrays.get(b.name)
            fits = a is not None and a.shape == tuple(b.shape) and a.dtype == np.dtype(b.dtype)
            arrays[b.name] = a if fits else np.zeros(b.sized({}), dtype=b.dtype)
        (call,) = cp.kernel_calls(arrays, []).values()
        return call

    def timer(self, kernel: Kernel, call):
        """A no-argument function: one run of the model with ``call`` in place of ``kernel``,
        returning the seconds of that call."""
        names = [n for n, _ in self.calls]
        if kernel.name not in names:
            raise ValueError(f"kernel {kernel.name} is not in the model")
        i = names.index(kernel.name)
        before = [f for _, f in self.calls[:i]]
        after = [f for _, f in self.calls[i + 1 :]]

        def run() -> float:
            for f in before:
                f()
            t0 = time.perf_counter()
            call()
            seconds = time.perf_counter() - t0
            for f in after:
                f()
            return seconds

        return run

    def profile(self, reps: int) -> dict[str, float]:
        """``{kernel name: min seconds}`` over ``reps`` runs of the model, each kernel timed
        where it runs (the task scheduler's shares)."""
        times: dict[str, float] = {n: float("inf") for n, _ in self.calls}
        for _ in range(reps):
            for n, f in self.calls:
                t0 = time.perf_counter()
                f()
                times[n] = min(times[n], time.perf_counter() - t0)
        return times

    def time(self, job: Job):
        """The job's candidate timed in the model (see the module doc): the min seconds, or
        with ``against_default`` the seconds of each run, candidate's and default's."""
        runs = [self.timer(job.kernel, self.candidate(job.kernel, job.schedule, job.threads))]
        if job.against_default:
            runs.append(self.timer(job.kernel, self.candidate(job.kernel, None, job.threads)))
        for run in runs:
            run()  # untimed: packs the candidate's weights
        times: list[list[float]] = [[] for _ in runs]
        for _ in range(job.reps):
            for run, ts in zip(runs, times, strict=True):
                ts.append(run())
        return times if job.against_default else min(times[0])


@dataclass(frozen=True)
class Job:
    kernel: Kernel
    schedule: Schedule | None
    threads: int
    reps: int
    fault: str = ""  # "crash" or "hang": injected, for tests
    context: str = ""  # the Context.key to time it in; "": alone
    against_default: bool = False  # also time the default schedule, run by run (InModel.time)
    profile: bool = False  # instead: every kernel of the default model (InModel.profile)


_MODELS: dict[str, InModel] = {}  # the model built in this worker process, by Context.key


def serve(jobs, results) -> None:
    """The worker's loop: a Context (kept for the jobs), or a Job in and ("ok", seconds) or
    ("error", message) out."""
    context = None
    while True:
        try:
            job = jobs.recv()
        except EOFError:
            return
        if isinstance(job, Context):
            context = job
            continue
        if job.fault == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if job.fault == "hang":
            time.sleep(3600)
        results.send(run_job(job, context))


def run_job(job: Job, context: Context | None = None) -> tuple[str, object]:
    """One job measured in this process: ``("ok", seconds)`` or ``("error", message)`` (the
    body of a local worker's loop and of a Ray task); a job with a context key is timed in
    that model (``context``: its Context, built here the first time)."""
    try:
        if not job.context:
            return "ok", time_kernel(job.kernel, job.schedule, job.threads, job.reps)
        model = _MODELS.get(job.context)
        if model is None:
            if context is None or context.key != job.context:
                raise RuntimeError(f"no model {job.context} in this worker")
            _MODELS.clear()  # one model at a time: a run tunes one
            model = _MODELS[job.context] = InModel(context)
        return "ok", model.profile(job.reps) if job.profile else model.time(job)
    except Exception as e:  # noqa: BLE001 - a candidate's failure is a result
        return "error", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


class Worker:
    """A measuring process (``python -m eqsat.autoschedule.measure``, the module doc),
    restarted after a crash or a timeout."""

    def __init__(self, timeout: float = 60.0, context: Context | None = None):
        self.timeout, self.context = timeout, context
        self.proc: subprocess.Popen | None = None
        self.jobs = self.results = None  # our ends of the two pipes
        self.started = 0

    def _start(self) -> None:
        from multiprocessing.connection import Connection

        job_r, job_w = os.pipe()
        res_r, res_w = os.pipe()
        # the child finds eqsat where this process did (an editable checkout, PYTHONPATH, ...)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", __name__, str(job_r), str(res_w)],
            pass_fds=(job_r, res_w), env=env, stdin=subprocess.DEVNULL)
        os.close(job_r)
        os.close(res_w)
        self.jobs = Connection(job_w, readable=False)
        self.results = Connection(res_r, writable=False)
        self.started += 1

    def measure(self, job: Job) -> tuple[float | None, str]:
        """``(seconds, "")`` or ``(None, why it failed)``."""
        fresh = self.proc is None or self.proc.poll() is not None
        if fresh:
            self.close()
            self._start()
        try:
            if fresh and self.context is not None:
                self.jobs.send(self.context)
            self.jobs.send(job)
            # a fresh worker's first job also pays its imports (numpy, llvmlite, eqsat) and
            # building the model
            grace = IMPORT_S + (BUILD_S if self.context is not None else 0) if fresh else 0
            if not self.results.poll(self.timeout + grace):
                self.close()
                return None, f"timed out after {self.timeout:g} s"
            kind, value = self.results.recv()
        except (EOFError, OSError, BrokenPipeError):
            code = self.proc.wait(5) if self.proc is not None else None
            self.close()
            return None, f"the worker died (exit code {code})"
        return (value, "") if kind == "ok" else (None, value)

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)
            self.proc = None
        for conn in (self.jobs, self.results):
            if conn is not None:
                conn.close()
        self.jobs = self.results = None

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RayWorker:
    """Measures on a Ray cluster (``eqsat tune --ray ADDRESS``; ``ray`` is optional: ``pip
    install 'eqsat[ray]'``): each job is a Ray task without retries, run in a Ray worker
    process, so a crashing candidate costs that task; one past the timeout is cancelled. The
    log keys records by the driver's machine (``signature.machine_key``): the cluster's nodes
    must be the kind of machine the model will be compiled for. The context is put in the
    object store once and passed to every task (a Ray worker process builds its model once,
    ``_MODELS``)."""

    def __init__(self, address: str, timeout: float = 60.0, context: Context | None = None):
        try:
            import ray
        except ImportError as e:
            from eqsat.errors import InputError

            raise InputError("--ray needs the ray package: pip install 'eqsat[ray]'") from e
        self.ray, self.timeout = ray, timeout
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self.task = ray.remote(max_retries=0)(run_job)
        self.context = ray.put(context) if context is not None else None

    def measure(self, job: Job) -> tuple[float | None, str]:
        """``(seconds, "")`` or ``(None, why it failed)``, as :meth:`Worker.measure`."""
        ref = self.task.remote(job, self.context)
        grace = IMPORT_S + (BUILD_S if self.context is not None else 0)
        try:
            kind, value = self.ray.get(ref, timeout=self.timeout + grace)
        except self.ray.exceptions.GetTimeoutError:
            self.ray.cancel(ref, force=True)
            return None, f"timed out after {self.timeout:g} s"
        except self.ray.exceptions.RayError as e:
            return None, f"the Ray task failed ({type(e).__name__})"
        return (value, "") if kind == "ok" else (None, value)

    def close(self) -> None:
        """Nothing to stop: the cluster outlives the run."""


if __name__ == "__main__":  # the worker process (Worker._start): the pipes' fds as arguments
    from multiprocessing.connection import Connection

    # through the module by its name: the parent pickles eqsat.autoschedule.measure.Context,
    # which is not this __main__'s class
    from eqsat.autoschedule.measure import serve

    serve(Connection(int(sys.argv[1]), writable=False),
          Connection(int(sys.argv[2]), readable=False))
