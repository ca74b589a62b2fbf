"""The tuning log: one JSON object a line, appended as trials finish, read tolerantly.

Consumes and produces :class:`Record` s; :class:`TuningLog` answers the one question the
compile path asks (:meth:`TuningLog.choices`: the best logged schedule of each kernel of a
program on this machine). The default file is ``tuning.jsonl`` in the user's cache folder
(:func:`eqsat.paths.user_cache_dir`), so ``eqsat tune m.onnx`` then ``eqsat compile m.onnx``
needs no flag.

A record is keyed by the kernel's signature and the machine
(:mod:`eqsat.autoschedule.signature`) and holds the schedule measured (its replayable JSON,
:func:`eqsat.lower.schedule.to_json`; a contraction's carries the ``gemm.plan`` annotation),
whether it is the default, the seconds (min of the repetitions, timed in the model:
:mod:`eqsat.autoschedule.measure`) or the error, and the work (FLOP or bytes) for the progress
display. A record marked ``verdict`` is a confirmation's decision
(:mod:`eqsat.autoschedule.search`: the best re-timed against the default, and the whole model
with the log against the default schedules): the latest verdict of a kernel is the log's
answer for it (:meth:`TuningLog.chosen`), whatever the fastest record says, so a best that
does not beat the default where the model runs it is not used, nor one never confirmed. Why
one line per *trial*, not only the best: a run that is killed keeps every measurement made so
far, a later run resumes (it skips candidates already measured, and its cost model learns from
them), and the best is a max over lines.

Appending: each record is one ``write`` of one line on a file opened for appending, flushed, so
a killed run leaves whole lines (at worst a torn last line, which the reader skips). A line
that is not a record is skipped with a warning, never an error; so are the records of version 1
(eqsat before the in-model timing: kernels timed alone, hot, which did not predict the model),
with a warning of their own.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from eqsat.lower.loops import LoopProgram
from eqsat.lower.schedule import Schedule, ScheduleError, from_json

LOG_NAME = "tuning.jsonl"
VERSION = 2  # 2: timed in the model, verdicts (1: timed alone, hot; ignored)


def default_log() -> Path:
    from eqsat.paths import user_cache_dir

    return user_cache_dir() / LOG_NAME


@dataclass(frozen=True)
class Record:
    sig: str  # kernel_signature
    machine: str  # machine_key (CPU and threads)
    schedule: str  # the schedule's JSON (eqsat.lower.schedule.to_json)
    seconds: float | None  # min over the repetitions; None: the candidate failed
    default: bool = False  # the default schedule (the baseline of this kernel)
    error: str = ""
    work: float = 0.0  # FLOP (contractions) or bytes moved (the others) of one call
    unit: str = "GFLOP/s"
    knobs: dict = field(default_factory=dict)  # the candidate's knobs (the cost model's input)
    kernel: str = ""  # the kernel's name in the model it was tuned on (for people only)
    confirm: bool = False  # a confirmation run (search.Tuner.confirm), not a new trial
    verdict: bool = False  # the confirmation's choice for this kernel (the module doc)
    time: float = field(default_factory=time.time)
    version: int = VERSION

    @property
    def ok(self) -> bool:
        return self.seconds is not None and self.seconds > 0

    @property
    def rate(self) -> float:
        """Throughput in ``unit`` (0 for a failed trial)."""
        return self.work / self.seconds / 1e9 if self.ok else 0.0


def read(path: str | os.PathLike) -> list[Record]:
    """Every record of the log at ``path`` (none when it does not exist); lines that are not
    records are skipped, with one warning naming how many."""
    p = Path(path)
    if not p.exists():
        return []
    out, bad, old = [], 0, 0
    with p.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                d = json.loads(line)
                if d.get("version") == 1:
                    old += 1
                    continue
                if d.get("version") != VERSION:
                    raise ValueError("version")
                out.append(Record(**d))
            except (ValueError, TypeError, AttributeError):
                bad += 1
    if bad:
        warnings.warn(f"{p}: skipped {bad} line(s) that are not tuning records", stacklevel=2)
    if old:
        warnings.warn(f"{p}: ignored {old} record(s) of kernels timed alone by an older eqsat "
                      "(run eqsat tune again)", stacklevel=2)  # fmt: skip
    return out


def append(path: str | os.PathLike, records: Iterable[Record]) -> None:
    """Append ``records`` to the log, one line each (the folder is created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    torn = False
    if p.exists() and p.stat().st_size:
        with p.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            torn = f.read(1) != b"\n"  # a killed writer's last line: end it, keep ours whole
    with p.open("a", encoding="utf-8") as f:
        if torn:
            f.write("\n")
        for r in records:
            f.write(json.dumps(asdict(r), separators=(",", ":")) + "\n")
            f.flush()


class TuningLog:
    """The records of a log, indexed for lookups (read once)."""

    def __init__(self, records: Iterable[Record], path: Path | None = None):
        self.path = path
        self.records = list(records)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> TuningLog:
        p = Path(path) if path is not None else default_log()
        return cls(read(p), p)

    def best(self, sig: str, machine: str) -> Record | None:
        """The fastest successful record of a kernel on a machine (confirmed or not)."""
        ok = [r for r in self.records if r.sig == sig and r.machine == machine and r.ok]
        return min(ok, key=lambda r: r.seconds) if ok else None

    def chosen(self, sig: str, machine: str) -> Record | None:
        """The latest verdict of a kernel on a machine: what compile uses. None (the default
        schedule) where there is none — a best that no confirmation has timed against its
        default (a run stopped by its time limit or killed first) is not used."""
        verdicts = [r for r in self.records if r.sig == sig and r.machine == machine
                    and r.verdict]  # fmt: skip
        return max(verdicts, key=lambda r: r.time) if verdicts else None

    def measured(self, sig: str, machine: str) -> list[Record]:
        return [r for r in self.records if r.sig == sig and r.machine == machine]

    def choices(self, program: LoopProgram, threads: int) -> dict[str, Schedule]:
        """``{kernel name: schedule}`` for the kernels of ``program`` (unscheduled, as lowered)
        whose verdict on this machine (:meth:`chosen`) is not the default schedule; a record
        whose schedule no longer replays on the kernel is skipped (eqsat's code changed)."""
        from eqsat.autoschedule.signature import kernel_signature, machine_key
        from eqsat.autoschedule.space import valid

        if not self.records:
            return {}
        machine = machine_key(threads)
        out: dict[str, Schedule] = {}
        for k in program.kernels:
            best = self.chosen(kernel_signature(k), machine)
            if best is None or best.default:
                continue
            try:
                sched = from_json(best.schedule)
                valid(k, sched)
            except (ScheduleError, ValueError, TypeError):
                continue
            out[k.name] = sched
        return out

    def digest(self) -> str:
        """What a compiled-model cache key needs: the log's bytes (changes when it grows; a
        cache hit must not need lowering the model, which the choices do)."""
        import hashlib

        if self.path is None or not self.path.exists():
            return ""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
