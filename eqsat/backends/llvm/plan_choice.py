"""An explicit blocking for a tensorized contraction: the ``gemm.plan`` annotation.

Consumes a kernel whose root loop carries ``tensorize=gemm`` and, optionally, ``gemm.plan``
(written by ``Annotate(root, PLAN_KEY, encode(knobs))``, e.g. from a tuning log), its
:class:`~eqsat.lower.contraction.Contraction` and the host's
:class:`~eqsat.backends.llvm.capabilities.Capabilities`; produces the orientation and
:class:`~eqsat.backends.llvm.tensorize_plan.Plan` that :mod:`eqsat.backends.llvm.tensorize`
compiles: the annotated one when the annotation is there (checked, :func:`plan_from`), else
the default heuristic (``tensorize_plan.orient``) — so a kernel without the annotation
compiles exactly as before.

The knobs (:data:`KNOBS`) are the Plan's own fields that a search may vary, plus ``swap``
(``C^T = B^T A^T``, ``tensorize_plan.swapped``); ``vw`` comes from the host and the two
prepack flags from the operands (a weight is packed once whatever the blocking), so they are
not knobs. The annotation is a ``key=value,...`` string (annotations are string pairs), which
keeps the choice a replayable schedule record (:mod:`eqsat.lower.schedule`).
"""

from __future__ import annotations

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.tensorize_plan import Plan, choose_plan, orient, swapped
from eqsat.lower.contraction import Contraction, const_extent
from eqsat.lower.loops import For, Kernel

PLAN_KEY = "gemm.plan"
KNOBS = ("swap", "mr", "nr", "unroll", "kc", "mc", "rows_mode", "ncb", "rows")
UNROLLS = (1, 2, 4, 8)
MAX_ACCUMULATORS = 28  # MR × NR/vw vector accumulators: AVX-512 has 32 registers, AVX2 16


class PlanError(ValueError):
    """Knobs that do not make a valid plan for this contraction on this host."""


def encode(knobs: dict[str, int]) -> str:
    return ",".join(f"{k}={int(knobs[k])}" for k in KNOBS)


def decode(text: str) -> dict[str, int]:
    try:
        knobs = {k: int(v) for k, v in (kv.split("=", 1) for kv in text.split(","))}
    except ValueError:
        raise PlanError(f"bad {PLAN_KEY} annotation {text!r}") from None
    if set(knobs) != set(KNOBS):
        raise PlanError(f"{PLAN_KEY} annotation {text!r}: want the keys {', '.join(KNOBS)}")
    return knobs


def knobs_of(c: Contraction, caps: Capabilities) -> dict[str, int]:
    """The default choice (``orient``) as knobs: the search's first candidate."""
    oc, plan = orient(c, caps)
    return {"swap": int(oc is not c), "mr": plan.mr, "nr": plan.nr, "unroll": plan.unroll,
            "kc": plan.kc, "mc": plan.mc, "rows_mode": int(plan.rows_mode), "ncb": plan.ncb,
            "rows": plan.rows}  # fmt: skip


def plan_from(c: Contraction, caps: Capabilities, knobs: dict[str, int]):
    """``(oriented contraction, Plan)`` for ``knobs``; PlanError when they do not fit.

    The checks are what the emitter relies on: NR a whole number of vectors and one of the
    host's tiles' (or one vector, as ``_plan_for`` uses for narrow N), the accumulators fit the
    registers, MC a multiple of MR, a rows-mode block whole rows of the innermost N axis, a
    split-mode block whole NR panels."""
    oc = swapped(c) if knobs["swap"] else c
    if knobs["swap"] and not c.m:
        raise PlanError("swap: the contraction has no M axis")
    vw = caps.vector_width
    mr, nr, unroll, kc, mc = (knobs[k] for k in ("mr", "nr", "unroll", "kc", "mc"))
    rows_mode, ncb, rows = bool(knobs["rows_mode"]), knobs["ncb"], knobs["rows"]
    nrs = {n for _, n in caps.gemm_tiles()} | {vw}
    if nr not in nrs:
        raise PlanError(f"nr {nr}: not one of the host's tile widths {sorted(nrs)}")
    tile_mr = max(m for m, n in caps.gemm_tiles() if n >= nr) if nr > vw else caps.gemm_tile()[0]
    if not 1 <= mr <= tile_mr or mr * (nr // vw) > MAX_ACCUMULATORS:
        raise PlanError(f"mr {mr} × nr {nr}: does not fit the registers")
    if unroll not in UNROLLS or kc < 1 or mc < mr or mc % mr:
        raise PlanError(f"unroll {unroll}, kc {kc}, mc {mc} (mr {mr}): invalid")
    w = const_extent(oc.n[-1:]) if oc.n else 1
    no = const_extent(oc.n[:-1])
    if w is None:
        raise PlanError("the innermost N extent is not a constant")
    if rows_mode:
        if rows < 1 or ncb != rows * w or (no is not None and rows > max(1, no)):
            raise PlanError(f"rows mode: ncb {ncb} must be rows {rows} × W {w}, rows ≤ {no}")
    elif rows != 1 or ncb < nr or ncb % nr:
        raise PlanError(f"split mode: ncb {ncb} must be whole panels of {nr}, rows 1")
    base = choose_plan(oc, caps)  # the prepack flags: what the operands are, not a knob
    return oc, Plan(mr, nr, vw, unroll, kc, mc, rows_mode, ncb, rows, base.prepack_a,
                    base.prepack_b)  # fmt: skip


def chosen_plan(k: Kernel, c: Contraction, caps: Capabilities) -> tuple[Contraction, Plan, bool]:
    """The orientation and plan to compile ``k`` with, and whether they were annotated."""
    text = dict(k.body.annotations).get(PLAN_KEY) if isinstance(k.body, For) else None
    if text is None:
        return (*orient(c, caps), False)
    return (*plan_from(c, caps, decode(text)), True)
