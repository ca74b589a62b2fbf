"""The search space of one kernel: candidates (knobs + the schedule they replay to), sampled,
mutated and described by features for the cost model.

Consumes an unscheduled kernel (as :func:`eqsat.lower.lower.lower` emits it), the host's
Capabilities and the thread count; produces :class:`Candidate` s whose ``schedule`` is an
ordinary replayable :data:`~eqsat.lower.schedule.Schedule`, valid by construction (each is
checked before it is offered), and which all compute the same result as the default.

* **Contractions** (:class:`GemmSpace`): the knobs the backend's ``Plan`` already has
  (:mod:`eqsat.backends.llvm.plan_choice`): operand exchange, micro-tile width NR from
  ``Capabilities.gemm_tiles()``, strip height MR (the tile's, ``_pick_mr``'s range below it),
  k-unroll, KC, MC (whole MR strips), the column block (rows of the innermost N axis, or a
  piece of a row in whole NR panels). The schedule is ``Tensorize(root, "gemm")`` plus
  ``Annotate(root, "gemm.plan", knobs)``; the default is ``Tensorize`` alone (``orient``).
  A convolution the direct path accepts (:func:`eqsat.lower.conv_direct.match_direct_conv`)
  has a second region, knob ``direct=1``: ``Tensorize(root, "nchwc")`` plus
  ``Annotate(root, "dconv.tile", "tw=..,ob=..")`` (the register tile of
  :mod:`eqsat.backends.llvm.direct_conv`); sampled a third of the time, and a mutation moves
  between the regions now and then, so ``eqsat tune`` measures direct against implicit GEMM.
  The default is whichever ``schedule_gemm.intrinsic`` picks.
* **Element-wise, reduction, multi-stage** (:class:`LoopSpace`): the knobs the default schedule
  uses (:mod:`eqsat.lower.default_schedule`): its vectorization or none, for an element-wise
  kernel the innermost loop split by 1, 2 or 4 vectors with the inner part vectorized, and
  with more than one thread the parallel granularity (none, or 1-16 chunks a thread over the
  fused outer loops, ``parallel_plan``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.direct_conv import TILE_KEY, max_accumulators, tile
from eqsat.backends.llvm.plan_choice import (
    KNOBS,
    PLAN_KEY,
    UNROLLS,
    decode,
    encode,
    knobs_of,
    plan_from,
)
from eqsat.backends.llvm.tensorize_plan import padded_share, swapped
from eqsat.lower.analysis import outer_nest
from eqsat.lower.contraction import const_extent, match_contraction
from eqsat.lower.conv_direct import match_direct_conv, prefer_direct
from eqsat.lower.default_schedule import classify, parallel_plan, schedule_kernel, vector_plan
from eqsat.lower.loops import For, Kernel
from eqsat.lower.schedule import (
    Annotate,
    Schedule,
    ScheduleTarget,
    Split,
    Tensorize,
    Vectorize,
    apply,
    to_json,
)
from eqsat.lower.schedule_gemm import worth_gemm
from eqsat.lower.transform import ScheduleError

KCS = (64, 128, 192, 256, 384, 512)
MC_STRIPS = (1, 2, 4, 8, 12, 16, 24, 32)
ROWS = (1, 2, 4, 8, 16, 32, 64)
PANELS = (1, 2, 4, 8, 16)
PER_THREAD = (0, 1, 2, 4, 8, 16)  # 0: no parallel loop
SPLITS = (1, 2, 4)  # vectors per split of an element-wise kernel's innermost loop
TRIES = 40  # random draws before sample() gives up on finding a new valid candidate


@dataclass(frozen=True)
class Candidate:
    knobs: tuple[tuple[str, int], ...]
    schedule: Schedule
    default: bool = False

    @property
    def key(self) -> str:
        """The schedule's JSON: what the log records, so a resumed search skips it."""
        return to_json(self.schedule)


def space_for(kernel: Kernel, caps: Capabilities, threads: int):
    """The space of ``kernel``: GemmSpace for a contraction the default tensorizes, LoopSpace
    for the classes the default schedules, None for a kernel with nothing to choose."""
    c = match_contraction(kernel)
    if c is not None and isinstance(kernel.body, For) and worth_gemm(c):
        return GemmSpace(kernel, caps, threads)
    if classify(kernel) in ("elementwise", "reduction", "multistage"):
        return LoopSpace(kernel, caps, threads)
    return None


class GemmSpace:
    kind = "gemm"

    def __init__(self, kernel: Kernel, caps: Capabilities, threads: int):
        self.kernel, self.caps, self.threads = kernel, caps, threads
        self.c = match_contraction(kernel)
        self.root = kernel.body.var
        d = knobs_of(self.c, caps)
        self.default = Candidate(tuple((k, d[k]) for k in KNOBS), (Tensorize(self.root, "gemm"),),
                                 True)  # fmt: skip
        self.direct = match_direct_conv(self.c)
        if self.direct is not None and prefer_direct(self.direct):
            tw, ob = tile(self.direct, caps)
            self.default = Candidate((("direct", 1), ("tw", tw), ("ob", ob)),
                                     (Tensorize(self.root, "nchwc"),), True)
        self.work = 2.0 * self._size(self.c.m) * self._size(self.c.n) * self._size(self.c.k) \
            * self._size(self.c.batch)

    @staticmethod
    def _size(axes) -> int:
        return const_extent(axes) or 1

    def from_knobs(self, knobs: dict[str, int]) -> Candidate | None:
        return self.candidate(knobs)

    def candidate(self, knobs: dict[str, int]) -> Candidate | None:
        """The candidate of ``knobs``, None when they make no valid plan."""
        if knobs.get("direct"):
            return self._direct(knobs.get("tw", 0), knobs.get("ob", 0))
        try:
            plan_from(self.c, self.caps, knobs)
        except ValueError:
            return None
        sched = (Tensorize(self.root, "gemm"), Annotate(self.root, PLAN_KEY, encode(knobs)))
        return Candidate(tuple((k, knobs[k]) for k in KNOBS), sched)

    def _direct(self, tw: int, ob: int) -> Candidate | None:
        """The direct convolution with a ``tw × ob`` register tile (None: not a direct conv, or
        the tile does not fit the registers or the conv)."""
        d = self.direct
        if d is None or not (1 <= tw <= d.ow and 1 <= ob <= -(-d.oc // self.caps.vector_width)):
            return None
        spec = f"tw={tw},ob={ob}"
        try:
            tile(d, self.caps, spec)
        except ValueError:
            return None
        sched = (Tensorize(self.root, "nchwc"), Annotate(self.root, TILE_KEY, spec))
        return Candidate((("direct", 1), ("tw", tw), ("ob", ob)), sched)

    def _sample_direct(self, rng: random.Random) -> Candidate | None:
        ob = rng.randint(1, min(4, -(-self.direct.oc // self.caps.vector_width)))
        most = max_accumulators(self.caps) // ob
        return self._direct(rng.randint(1, min(self.direct.ow, most)), ob)

    def sample(self, rng: random.Random) -> Candidate | None:
        """A random valid candidate (None when ``TRIES`` draws found none)."""
        if self.direct is not None and rng.random() < 1 / 3:
            return self._sample_direct(rng)
        tiles = list(self.caps.gemm_tiles())
        for _ in range(TRIES):
            swap = rng.choice((0, 1)) if self.c.m else 0
            oc = swapped(self.c) if swap else self.c
            m, no = const_extent(oc.m) or 1, const_extent(oc.n[:-1]) or 1
            w = (const_extent(oc.n[-1:]) if oc.n else 1) or 1
            mr_max, nr = rng.choice(tiles)  # MR: the tile's, or down to 2/3 of it (_pick_mr)
            mr = max(1, min(m, rng.randint(-(-2 * mr_max // 3), mr_max)))
            knobs = {"swap": swap, "mr": mr, "nr": nr, "unroll": rng.choice(UNROLLS),
                     "kc": rng.choice(KCS), "mc": mr * rng.choice(MC_STRIPS)}
            if w <= 1024 and rng.random() < 0.7:
                rows = min(no, rng.choice(ROWS))
                knobs |= {"rows_mode": 1, "rows": rows, "ncb": rows * w}
            else:
                ncb = min(-(-w // nr) * nr, nr * rng.choice(PANELS))
                knobs |= {"rows_mode": 0, "rows": 1, "ncb": ncb}
            cand = self.candidate(knobs)
            if cand is not None:
                return cand
        return None

    def mutate(self, cand: Candidate, rng: random.Random) -> Candidate | None:
        """``cand`` with one or two knobs moved to a neighbouring value (a direct conv's tile, or
        now and then the other region: direct ↔ implicit GEMM)."""
        if self.direct is not None and rng.random() < 0.15:
            return self.sample(rng)
        if dict(cand.knobs).get("direct"):
            for _ in range(TRIES):
                k = dict(cand.knobs)
                k[rng.choice(("tw", "ob"))] += rng.choice((-2, -1, 1, 2))
                new = self._direct(k["tw"], k["ob"])
                if new is not None and new.key != cand.key:
                    return new
            return None
        for _ in range(TRIES):
            knobs = dict(cand.knobs)
            for _ in range(rng.choice((1, 1, 2))):
                k = rng.choice(("unroll", "kc", "mc", "rows", "mr", "swap"))
                if k == "unroll":
                    knobs["unroll"] = rng.choice(UNROLLS)
                elif k == "kc":
                    knobs["kc"] = max(16, int(knobs["kc"] * rng.choice((0.5, 0.75, 1.5, 2))))
                elif k == "mc":
                    knobs["mc"] = max(1, knobs["mc"] // knobs["mr"] + rng.choice((-2, -1, 1, 2))) \
                        * knobs["mr"]
                elif k == "mr":
                    knobs["mr"] = max(1, knobs["mr"] + rng.choice((-2, -1, 1)))
                    knobs["mc"] = -(-knobs["mc"] // knobs["mr"]) * knobs["mr"]
                elif k == "rows" and knobs["rows_mode"]:
                    w = knobs["ncb"] // knobs["rows"]
                    knobs["rows"] = max(1, knobs["rows"] + rng.choice((-2, -1, 1, 2)))
                    knobs["ncb"] = knobs["rows"] * w
                elif k == "rows":
                    step = knobs["nr"] * rng.choice((-1, 1))
                    knobs["ncb"] = max(knobs["nr"], knobs["ncb"] + step)
                elif k == "swap" and self.c.m:
                    return self.sample(rng)  # another orientation is another region
            new = self.candidate(knobs)
            if new is not None and new.key != cand.key:
                return new
        return None

    def features(self, cand: Candidate) -> np.ndarray:
        """Knob values and what they imply: padded share, the A / B / C working sets per task
        (log2 bytes, against the caches), tasks per thread."""
        knobs = dict(cand.knobs)
        if knobs.get("direct"):
            return self._direct_features(knobs["tw"], knobs["ob"])
        oc, plan = plan_from(self.c, self.caps, knobs)
        share = padded_share(oc, plan) or 1.0
        m = const_extent(oc.m) or 1
        no = const_extent(oc.n[:-1]) or 1
        w = const_extent(oc.n[-1:]) or 1
        kc = min(plan.kc, const_extent(oc.k) or plan.kc)
        njb = -(-no // plan.rows) if plan.rows_mode else no * -(-w // plan.ncb)
        tasks = -(-m // plan.mc) * njb * (const_extent(oc.batch) or 1)
        return np.array([
            knobs["swap"], plan.mr, plan.nr / plan.vw, plan.unroll, np.log2(kc), np.log2(plan.mc),
            plan.rows_mode, np.log2(plan.ncpad), share, np.log2(plan.mc * kc * 4),
            np.log2(kc * plan.ncpad * 4), np.log2(plan.mc * plan.ncpad * 4),
            tasks / self.threads, float(tasks % self.threads == 0), 0.0,
        ], dtype=float)  # fmt: skip

    def _direct_features(self, tw: int, ob: int) -> np.ndarray:
        """A direct conv's candidate in the same 15 places: the tile (as MR, NR vectors), the
        share of real work (channel blocks and column tiles padded), the per-task working sets
        (weights of OB blocks, the input rows, the row workspace), tasks per thread, and 1 in
        the last place (the region)."""
        d, vw = self.direct, self.caps.vector_width
        icb, ocb = -(-d.ic // vw), -(-d.oc // vw)
        share = d.ic * d.oc * d.ow / (icb * vw * -(-ocb // ob) * ob * vw * -(-d.ow // tw) * tw)
        wbytes = ob * icb * d.kh * d.kw * vw * vw * 4
        xbytes = icb * d.kh * d.padded_hw()[1] * vw * 4
        tasks = d.n * -(-ocb // ob) * d.oh
        return np.array([
            0, tw, ob, 1, np.log2(icb * vw * d.kh * d.kw), 0, 1, np.log2(tw * vw), share,
            np.log2(xbytes), np.log2(wbytes), np.log2(ob * d.ow * vw * 4),
            tasks / self.threads, float(tasks % self.threads == 0), 1.0,
        ], dtype=float)  # fmt: skip


class LoopSpace:
    kind = "loops"

    def __init__(self, kernel: Kernel, caps: Capabilities, threads: int):
        from eqsat.compiled import target_caps

        self.kernel, self.caps, self.threads = kernel, caps, threads
        self.target: ScheduleTarget = target_caps(caps, threads)
        self.cls = classify(kernel)
        self.nest, self.point = outer_nest(kernel.body)
        self.work = float(sum(np.prod([d if isinstance(d, int) else 1 for d in p.shape]) * 4
                              for p in kernel.params))  # fmt: skip
        self.candidates = [c for c in (self.candidate(v, s, p) for v in (0, 1) for s in (0, *SPLITS)
                                 for p in (PER_THREAD if threads > 1 else (0,))) if c]
        sched = schedule_kernel(kernel, self.target)  # the default: its knobs where it is one
        same = [c for c in self.candidates if c.key == to_json(sched)]
        knobs = same[0].knobs if same else (("vec", 1), ("split", 0), ("par", 0))
        self.default = Candidate(knobs, sched, True)

    def from_knobs(self, knobs: dict[str, int]) -> Candidate | None:
        return self.candidate(knobs.get("vec", 0), knobs.get("split", 0), knobs.get("par", 0))

    def candidate(self, vec: int, split: int, par: int) -> Candidate | None:
        if split and (vec != 1 or self.cls != "elementwise"):
            return None
        vsched, rest = (), self.nest
        if vec:
            vsched, rest = vector_plan(self.cls, self.nest, self.point, self.target)
        if split:
            last = self.nest[-1]
            vsched = (Split(last.var, split * self.target.vector_width),
                      Vectorize(f"{last.var}.i"))  # fmt: skip
            rest = self.nest[:-1]
        psched = parallel_plan(rest, self.target, par) if par else ()
        sched = (*vsched, *psched)
        try:
            apply(self.kernel, sched)
        except (ScheduleError, ValueError):
            return None
        return Candidate((("vec", vec), ("split", split), ("par", par)), sched)

    def sample(self, rng: random.Random) -> Candidate | None:
        return rng.choice(self.candidates) if self.candidates else None

    def mutate(self, cand: Candidate, rng: random.Random) -> Candidate | None:
        near = [c for c in self.candidates if c.key != cand.key
                and sum(a != b for a, b in zip(c.knobs, cand.knobs, strict=True)) == 1]
        return rng.choice(near) if near else None

    def features(self, cand: Candidate) -> np.ndarray:
        k = dict(cand.knobs)
        return np.array([k["vec"], k["split"], k["par"], np.log2(max(self.work, 1.0))])

    @property
    def size(self) -> int:
        return len(self.candidates)


def valid(kernel: Kernel, schedule: Schedule) -> Kernel:
    """``kernel`` with ``schedule`` replayed; ScheduleError / ValueError (PlanError) when it does
    not replay, or its GEMM plan or direct-conv tile does not fit this kernel on this host (a
    log from another version of eqsat)."""
    k = apply(kernel, schedule)
    notes = dict(k.body.annotations) if isinstance(k.body, For) else {}
    if notes.get("tensorize") == "nchwc":
        c = match_contraction(kernel)
        d = None if c is None else match_direct_conv(c)
        if d is None:
            raise ScheduleError(f"kernel {kernel.name}: tensorize=nchwc, but not a direct conv")
        if TILE_KEY in notes:
            tile(d, Capabilities.host(), notes[TILE_KEY])
    text = notes.get(PLAN_KEY)
    if text is not None:
        c = match_contraction(kernel)
        if c is None:
            raise ScheduleError(f"kernel {kernel.name}: a GEMM plan, but not a contraction")
        plan_from(c, Capabilities.host(), decode(text))
    return k
