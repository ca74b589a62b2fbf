"""Schedules: replayable traces of primitive records applied to a kernel.

Consumes a Kernel (:mod:`eqsat.lower.loops`) and a ``Schedule`` (a tuple of the records below);
produces the scheduled Kernel. The records are data (frozen dataclasses, JSON round trip), so an
auto-scheduler can store, compare and replay its decisions (as TVM MetaSchedule's traces and
tinygrad's ``Opt`` lists do); the rewrites themselves live in :mod:`eqsat.lower.transform`.

Loops are addressed by name. Names are deterministic: ``split i`` makes ``i.o`` and ``i.i``,
``fuse i, j`` makes ``i.j.fused``, ``cache_write C`` allocates ``C.local`` (copy loops ``C.in0``,
``C.out0``, ...) and ``pack B`` allocates ``B.pack``; so replaying a schedule on the unscheduled
kernel always gives an equal kernel.

Primitives (each keeps results, up to the reassociation ``Accumulate`` allows, or raises
``ScheduleError``; none is a silent no-op):

- ``Split(loop, factor)``: outer/inner loops; a non-dividing factor guards the body with ``If``.
- ``Reorder(loops)``: permute loops of one perfect nest (refused when iterations may conflict).
- ``Fuse(outer, inner)``: two directly nested loops become one.
- ``Vectorize``/``Parallel``/``Unroll(loop)``: set the loop's kind; the backend reads it.
- ``Bind(loop, axis)``: run the loop's iterations as the blocks (``axis="block"``) or the threads
  of a block (``"thread"``, a constant extent ≤ 1024) of a GPU grid; legal where ``Parallel`` is.
- ``Tensorize(loop, intrinsic)``: annotate the nest as a micro-kernel target (``tensorize=``);
  the backend matches the nest against the intrinsic and emits explicit vector code.
- ``Annotate(loop, key, value)``: a backend parameter on a loop (a tuned GEMM plan).
- ``CacheWrite(buffer, loop)``: accumulate the tile one iteration of ``loop`` writes in a local
  buffer (copied in, then back).
- ``Pack(buffer, loop)``: copy the tile one iteration of ``loop`` reads into a contiguous local
  buffer (a GEMM panel). Packing *with a layout change* (e.g. NCHW8c) and hoisting the packing
  of weights to compile time are not implemented yet.
- ``ComputeAt(loop, at)``: move a producer nest into the next nest at ``at`` (restricted: equal
  aligned extents, no recomputation; see ``transform.compute_at``).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import ClassVar

from eqsat.lower import transform
from eqsat.lower.check import check_kernel
from eqsat.lower.loops import Buffer, Kernel, LoopKind, Stmt
from eqsat.lower.transform import ScheduleError


@dataclass(frozen=True)
class Primitive:
    name: ClassVar[str]

    def apply(self, kernel: Kernel) -> Stmt:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class Split(Primitive):
    name: ClassVar[str] = "split"
    loop: str
    factor: int

    def apply(self, k: Kernel) -> Stmt:
        return transform.split(k.body, self.loop, self.factor)


@dataclass(frozen=True)
class Reorder(Primitive):
    name: ClassVar[str] = "reorder"
    loops: tuple[str, ...]

    def apply(self, k: Kernel) -> Stmt:
        return transform.reorder(k.body, self.loops)


@dataclass(frozen=True)
class Fuse(Primitive):
    name: ClassVar[str] = "fuse"
    outer: str
    inner: str

    def apply(self, k: Kernel) -> Stmt:
        return transform.fuse(k.body, self.outer, self.inner)


@dataclass(frozen=True)
class Vectorize(Primitive):
    name: ClassVar[str] = "vectorize"
    loop: str

    def apply(self, k: Kernel) -> Stmt:
        return transform.set_kind(k.body, self.loop, LoopKind.VECTORIZED)


@dataclass(frozen=True)
class Parallel(Primitive):
    name: ClassVar[str] = "parallel"
    loop: str

    def apply(self, k: Kernel) -> Stmt:
        return transform.set_kind(k.body, self.loop, LoopKind.PARALLEL)


@dataclass(frozen=True)
class Unroll(Primitive):
    name: ClassVar[str] = "unroll"
    loop: str

    def apply(self, k: Kernel) -> Stmt:
        return transform.set_kind(k.body, self.loop, LoopKind.UNROLLED)


GPU_AXES = {"block": LoopKind.GPU_BLOCK, "thread": LoopKind.GPU_THREAD}


@dataclass(frozen=True)
class Bind(Primitive):
    name: ClassVar[str] = "bind"
    loop: str
    axis: str  # one of GPU_AXES

    def apply(self, k: Kernel) -> Stmt:
        kind = GPU_AXES.get(self.axis)
        if kind is None:
            raise ScheduleError(f"bind {self.loop}: axis {self.axis!r} is not block or thread")
        return transform.set_kind(k.body, self.loop, kind)


@dataclass(frozen=True)
class Tensorize(Primitive):
    name: ClassVar[str] = "tensorize"
    loop: str
    intrinsic: str

    def apply(self, k: Kernel) -> Stmt:
        if not self.intrinsic.isidentifier():
            raise ScheduleError(f"tensorize {self.loop}: bad intrinsic name {self.intrinsic!r}")
        return transform.annotate(k.body, self.loop, "tensorize", self.intrinsic)


@dataclass(frozen=True)
class Annotate(Primitive):
    """A backend's parameter for a loop (``gemm.plan``: a tuned GEMM blocking), as a string
    annotation that the backend reads and every other stage passes through."""

    name: ClassVar[str] = "annotate"
    loop: str
    key: str
    value: str

    def apply(self, k: Kernel) -> Stmt:
        return transform.annotate(k.body, self.loop, self.key, self.value)


def _param(k: Kernel, name: str, what: str) -> Buffer:
    for p in k.params:
        if p.name == name:
            return p
    raise ScheduleError(f"{what}: kernel {k.name} has no buffer {name!r}")


@dataclass(frozen=True)
class CacheWrite(Primitive):
    name: ClassVar[str] = "cache_write"
    buffer: str
    loop: str

    def apply(self, k: Kernel) -> Stmt:
        buf = _param(k, self.buffer, "cache_write")
        return transform.cache(k.body, buf, self.loop, write=True)


@dataclass(frozen=True)
class Pack(Primitive):
    name: ClassVar[str] = "pack"
    buffer: str
    loop: str

    def apply(self, k: Kernel) -> Stmt:
        buf = _param(k, self.buffer, "pack")
        return transform.cache(k.body, buf, self.loop, write=False)


@dataclass(frozen=True)
class ComputeAt(Primitive):
    name: ClassVar[str] = "compute_at"
    loop: str
    at: str

    def apply(self, k: Kernel) -> Stmt:
        return transform.compute_at(k.body, self.loop, self.at)


Schedule = tuple[Primitive, ...]


@dataclass(frozen=True)
class ScheduleTarget:
    """What a scheduler may know of the machine (docs/architecture.md: schedulers read a backend's
    capabilities, never its name). ``lower`` cannot import backends, so a backend's
    ``Capabilities`` is copied into this record (``eqsat.compiled.target_caps``)."""

    vector_width: int = 8  # float32 lanes of the widest usable vector register
    threads: int = 1  # threads the runtime splits a parallel loop over
    l1_bytes: int = 32 * 1024  # per core
    l2_bytes: int = 1024 * 1024  # per core
    # intrinsics emitted as scalar calls, by name or "name.dtype" (e.g. "tanh.float64"): such
    # a loop is not vectorized
    scalar_calls: tuple[str, ...] = ()


PRIMITIVES: dict[str, type[Primitive]] = {
    p.name: p
    for p in (
        Split,
        Reorder,
        Fuse,
        Vectorize,
        Parallel,
        Unroll,
        Bind,
        Tensorize,
        Annotate,
        CacheWrite,
        Pack,
        ComputeAt,
    )
}


def apply(kernel: Kernel, schedule: Schedule) -> Kernel:
    """Replay ``schedule`` on ``kernel``; the result is checked (a bug in a rewrite surfaces
    here, with the path of the node it broke)."""
    for step, prim in enumerate(schedule):
        try:
            kernel = dataclasses.replace(kernel, body=prim.apply(kernel))
        except ScheduleError as e:
            raise ScheduleError(f"kernel {kernel.name}, step {step}: {e}") from None
    check_kernel(kernel)
    return kernel


def to_json(schedule: Schedule) -> str:
    """One JSON list of ``{"primitive": name, field: value, ...}`` in schedule order."""
    records = [{"primitive": p.name, **dataclasses.asdict(p)} for p in schedule]
    return json.dumps(records, separators=(",", ":"))


def from_json(text: str) -> Schedule:
    out = []
    for rec in json.loads(text):
        rec = dict(rec)
        cls = PRIMITIVES.get(rec.pop("primitive", None))
        if cls is None:
            raise ScheduleError(f"unknown schedule primitive in {text[:80]!r}")
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in rec.items()}
        out.append(cls(**fields))
    return tuple(out)
