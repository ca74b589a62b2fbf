"""Build and time one kernel under one schedule, alone, in a worker process.

Consumes an unscheduled kernel (as lowered), a candidate schedule (:mod:`.space`) and a thread
count; produces the min seconds of one call over the repetitions, or why it failed.

:func:`standalone` makes the kernel a program of its own (the buffers it writes become
outputs, the others inputs; weights stay weights, since a weight operand is packed once) and
:func:`prepare` schedules it through the compile path's own hooks
(``schedule_gemm.tensorize_contractions`` and ``default_schedule.schedule_program`` with the
candidate as the kernel's chosen schedule), so what is timed is what ``eqsat compile`` would
build. Timing: random inputs, one warm-up call (it packs the weights), then ``reps`` rounds of
``number`` calls (enough for ~1 ms a round), the min per call.

:class:`Worker` runs the jobs in a fresh interpreter, ``python -m eqsat.autoschedule.measure``,
talking over two pipes of its own (``multiprocessing.connection`` framing): no state of the
parent's LLVM or thread pool is inherited, and, unlike a ``multiprocessing`` spawn, the child
does not re-import the caller's ``__main__`` — a user's script calling ``eqsat.tune`` needs
no ``if __name__ == "__main__"`` guard (with spawn, such a script re-ran itself in the worker
and failed in multiprocessing's bootstrapping check). A candidate that crashes the process (a bad
generated code path, a segfault) or runs past ``timeout`` seconds costs one failed trial, the
worker is restarted and the search goes on. ``fault`` in a job injects a crash or a hang (the
tests use it to check exactly that).
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
    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.compiled import target_caps
    from eqsat.lower.default_schedule import schedule_program
    from eqsat.lower.schedule_gemm import tensorize_contractions

    program = standalone(kernel)
    chosen = {} if schedule is None else {program.kernels[0].name: schedule}
    program = tensorize_contractions(program, chosen=chosen)
    return schedule_program(program, target_caps(Capabilities.host(), threads), chosen)


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
class Job:
    kernel: Kernel
    schedule: Schedule | None
    threads: int
    reps: int
    fault: str = ""  # "crash" or "hang": injected, for tests


def _serve(jobs, results) -> None:
    """The worker's loop: a Job in, ("ok", seconds) or ("error", message) out."""
    while True:
        try:
            job = jobs.recv()
        except EOFError:
            return
        if job.fault == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if job.fault == "hang":
            time.sleep(3600)
        results.send(run_job(job))


def run_job(job: Job) -> tuple[str, object]:
    """One job measured in this process: ``("ok", seconds)`` or ``("error", message)`` (the
    body of a local worker's loop and of a Ray task)."""
    try:
        return "ok", time_kernel(job.kernel, job.schedule, job.threads, job.reps)
    except Exception as e:  # noqa: BLE001 - a candidate's failure is a result
        return "error", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"


class Worker:
    """A measuring process (``python -m eqsat.autoschedule.measure``, the module doc),
    restarted after a crash or a timeout."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
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
            self.jobs.send(job)
            # a fresh worker's first job also pays its imports (numpy, llvmlite, eqsat)
            if not self.results.poll(self.timeout + (IMPORT_S if fresh else 0)):
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
    must be the kind of machine the model will be compiled for."""

    def __init__(self, address: str, timeout: float = 60.0):
        try:
            import ray
        except ImportError as e:
            from eqsat.errors import InputError

            raise InputError("--ray needs the ray package: pip install 'eqsat[ray]'") from e
        self.ray, self.timeout = ray, timeout
        if not ray.is_initialized():
            ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        self.task = ray.remote(max_retries=0)(run_job)

    def measure(self, job: Job) -> tuple[float | None, str]:
        """``(seconds, "")`` or ``(None, why it failed)``, as :meth:`Worker.measure`."""
        ref = self.task.remote(job)
        try:
            kind, value = self.ray.get(ref, timeout=self.timeout + IMPORT_S)
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

    _serve(Connection(int(sys.argv[1]), writable=False),
           Connection(int(sys.argv[2]), readable=False))
