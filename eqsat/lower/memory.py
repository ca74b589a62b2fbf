"""Memory planning: temporaries share one arena by liveness; the peak is reported.

Consumes a LoopProgram (its TEMP buffers and the kernels that read and write them, in order);
produces a :class:`MemoryPlan`: a byte offset per temporary inside one arena, the arena's size
(the peak) and what the temporaries would take without reuse.

Design choices (why):
- The program keeps one TEMP buffer per materialized value and records the plan beside it
  (offsets), instead of renaming buffers to share them: sharing names would only work between
  buffers of one shape and dtype, and would make the interpreter and the checker see false
  dependences. A backend allocates the arena once and places each temporary at its offset (as
  TVM's storage rewrite and XLA's buffer assignment do).
- A temporary is live from the first kernel that touches it to the last (inclusive); two
  temporaries may overlap in memory only when their live ranges are disjoint. Placement is
  greedy first-fit in decreasing size order, offsets aligned to 64 bytes (a cache line, and
  the widest vector load).
- Symbolic dims count as 1 (``TensorType.numel``'s convention): the plan is a per-batch-row
  lower bound for symbolic shapes, exact for static ones. Inputs, outputs and weights are not in
  the arena (the caller owns them).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from eqsat.lower.analysis import walk
from eqsat.lower.loops import Accumulate, Buffer, Load, LoopProgram, Store

ALIGN = 64


def nbytes(b: Buffer) -> int:
    n = 1
    for d in b.shape:
        n *= d if isinstance(d, int) else 1
    return n * np.dtype(b.dtype).itemsize


@dataclass(frozen=True)
class MemoryPlan:
    offsets: dict[str, int]  # temp buffer -> byte offset in the arena
    live: dict[str, tuple[int, int]]  # temp buffer -> (first kernel, last kernel), inclusive
    sizes: dict[str, int]  # temp buffer -> bytes
    peak_bytes: int  # the arena's size
    unshared_bytes: int  # the sum of the temporaries' sizes

    def overlaps(self) -> list[tuple[str, str]]:
        """Pairs of temporaries that share memory while both live (empty for a valid plan)."""
        names = sorted(self.offsets)
        bad = []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                (a0, a1), (b0, b1) = self.live[a], self.live[b]
                if a1 < b0 or b1 < a0:
                    continue
                oa, ob = self.offsets[a], self.offsets[b]
                if oa < ob + self.sizes[b] and ob < oa + self.sizes[a]:
                    bad.append((a, b))
        return bad


def plan_memory(program: LoopProgram) -> MemoryPlan:
    temps = {b.name: b for b in program.temps}
    live: dict[str, tuple[int, int]] = {}
    for t, k in enumerate(program.kernels):
        touched = {n.buffer.name for n in walk(k.body) if isinstance(n, Load | Store | Accumulate)}
        for name in touched & set(temps):
            first, _ = live.get(name, (t, t))
            live[name] = (first, t)
    sizes = {n: -(-nbytes(temps[n]) // ALIGN) * ALIGN for n in live}
    placed: list[tuple[int, int, int, int]] = []  # (offset, size, first, last)
    offsets: dict[str, int] = {}
    for name in sorted(live, key=lambda n: (-sizes[n], live[n], n)):
        first, last = live[name]
        busy = sorted((o, o + s) for o, s, f, ll in placed if not (ll < first or last < f))
        off = 0
        for lo, hi in busy:
            if off + sizes[name] <= lo:
                break
            off = max(off, hi)
        offsets[name] = off
        placed.append((off, sizes[name], first, last))
    peak = max((o + s for o, s, _, _ in placed), default=0)
    return MemoryPlan(offsets, live, sizes, peak, sum(sizes.values()))
