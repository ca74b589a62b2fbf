"""Injective compute definitions: views that are index arithmetic, never copies.

Consumes a :class:`~eqsat.lower.compute.Ctx` of an INJECTIVE op; produces output
:class:`~eqsat.lower.compute.View` s whose ``at(idx)`` reads the input at a computed index.
Reshape, Flatten, Squeeze and Unsqueeze are one group-wise reshape map
(:func:`~eqsat.lower.indexing.reshape_index`); Transpose permutes; Slice and Split offset and
stride; Concat selects among its inputs along the axis (a lazy ``Select``, so only the chosen
input is read); Expand and Tile broadcast or wrap; Pad guards its reads (constant), clamps
(edge) or reflects; Gather, GatherElements and GatherND read their index from the indices tensor (a
constant scalar index folds to a constant). Shape-like arguments (Slice starts, Pad pads, Tile
repeats, ...) must be constants; Reshape and Expand only need the output type, so their shape
input may stay a run-time computation that lowering never reads.
"""

from __future__ import annotations

import numpy as np

from eqsat.egraph.opdefs.base import ints, norm_axis
from eqsat.egraph.opdefs.shape_ops import fill_value
from eqsat.lower.compute_base import Compute, Ctx, Unsupported, View
from eqsat.lower.compute_ew import k
from eqsat.lower.indexing import (
    add,
    broadcast_index,
    dim,
    floordiv,
    mod,
    mul,
    reshape_index,
    sub,
    wrap_negative,
)
from eqsat.lower.loops import (
    INDEX,
    BinaryOp,
    BinOp,
    Cast,
    Cmp,
    CmpOp,
    Const,
    Expr,
    Select,
    maximum,
    minimum,
)

ALL = 1 << 30  # "every output"


def _index(e: Expr) -> Expr:
    return e if e.dtype == INDEX else Cast(INDEX, e)


def _identity(ctx: Ctx) -> list[View]:
    return [View(ctx.out, ctx.x(0).at)]


def _dropout(ctx: Ctx) -> list[View]:
    """Inference: the identity, and a mask of all True. Training mode (a constant true
    ``training_mode``) drops at random unless the ratio is 0: refused."""
    training = ctx.has(2) and bool(np.asarray(ctx.const(2, "training_mode")).reshape(-1)[0])
    ratio = float(np.asarray(ctx.const(1, "ratio")).reshape(-1)[0]) if ctx.has(1) else 0.5
    if training and ratio != 0:
        raise Unsupported(f"Dropout in training mode (ratio {ratio:g}) drops at random")
    x = ctx.x(0)
    out = [View(ctx.out, x.at)]
    if len(ctx.out_types) > 1:
        out.append(View(ctx.out_types[1], lambda idx: Const(True, "bool")))
    return out


def _reshape(ctx: Ctx) -> list[View]:
    x = ctx.x(0)
    return [View(ctx.out, lambda idx: x.at(reshape_index(idx, x.shape, ctx.out.shape)))]


def _expand(ctx: Ctx) -> list[View]:
    x = ctx.x(0)
    return [View(ctx.out, lambda idx: x.at(broadcast_index(idx, x.shape, ctx.out.shape)))]


def _transpose(ctx: Ctx) -> list[View]:
    x = ctx.x(0)
    perm = [int(p) for p in ctx.a("perm", ())] or list(range(x.type.rank))[::-1]

    def at(idx):
        src = [Const(0)] * len(perm)
        for o, p in enumerate(perm):
            src[p] = idx[o]
        return x.at(tuple(src))

    return [View(ctx.out, at)]


def _arg(ctx: Ctx, i: int, attr: str, what: str) -> list[int] | None:
    if ctx.has(i):
        return ints(ctx.const(i, what))
    v = ctx.a(attr)
    return None if v is None else [int(a) for a in v]


def _slice(ctx: Ctx) -> list[View]:
    x = ctx.x(0)
    rank = x.type.rank
    starts, ends = _arg(ctx, 1, "starts", "starts"), _arg(ctx, 2, "ends", "ends")
    axes = _arg(ctx, 3, "axes", "axes") or list(range(len(starts)))
    steps = _arg(ctx, 4, "steps", "steps") or [1] * len(starts)
    begin, stride = [0] * rank, [1] * rank
    for s, e, a, st in zip(starts, ends, axes, steps, strict=True):
        a = norm_axis(a, rank)
        n = x.shape[a]
        if isinstance(n, int):
            begin[a] = range(*slice(s, e, st).indices(n)).start if st else 0
        elif 0 <= s and st == 1:
            begin[a] = s  # the output type already records the clamped end
        else:
            raise Unsupported(f"Slice of symbolic dim {n!r} from {s} by {st}")
        stride[a] = st

    def at(idx):
        return x.at(tuple(add(mul(i, st), b) for i, b, st in zip(idx, begin, stride, strict=True)))

    return [View(ctx.out, at)]


def _concat(ctx: Ctx) -> list[View]:
    parts = [ctx.x(i) for i in range(len(ctx.in_types))]
    axis = norm_axis(int(ctx.a("axis")), ctx.out.rank)
    offs = [Const(0)]
    for p in parts:
        offs.append(add(offs[-1], dim(p.shape[axis])))

    def at(idx):
        def part(j):
            shifted = list(idx)
            shifted[axis] = sub(idx[axis], offs[j])
            return parts[j].at(tuple(shifted))

        out = part(len(parts) - 1)
        for j in range(len(parts) - 2, -1, -1):
            out = Select(idx[axis] < offs[j + 1], part(j), out)
        return out

    return [View(ctx.out, at)]


def _split(ctx: Ctx) -> list[View]:
    x = ctx.x(0)
    axis = norm_axis(int(ctx.a("axis", 0)), x.type.rank)
    views, off = [], Const(0)
    for t in ctx.out_types:

        def at(idx, off=off):
            shifted = list(idx)
            shifted[axis] = add(idx[axis], off)
            return x.at(tuple(shifted))

        views.append(View(t, at))
        off = add(off, dim(t.shape[axis]))
    return views


def _gather(ctx: Ctx) -> list[View]:
    x, q = ctx.x(0), ctx.x(1)
    axis = norm_axis(int(ctx.a("axis", 0)), x.type.rank)
    r = q.type.rank

    def at(idx):
        i = wrap_negative(_index(q.at(tuple(idx[axis : axis + r]))), x.shape[axis])
        return x.at((*idx[:axis], i, *idx[axis + r :]))

    return [View(ctx.out, at)]


def _gather_elements(ctx: Ctx) -> list[View]:
    x, q = ctx.x(0), ctx.x(1)
    axis = norm_axis(int(ctx.a("axis", 0)), x.type.rank)

    def at(idx):
        i = wrap_negative(_index(q.at(idx)), x.shape[axis])
        return x.at((*idx[:axis], i, *idx[axis + 1 :]))

    return [View(ctx.out, at)]


def _gather_nd(ctx: Ctx) -> list[View]:
    """out[batch, i..., rest] = x[batch, q[batch, i..., 0..m-1], rest]: the last axis of the
    indices tensor holds the coordinates of the m axes after the batch axes."""
    x, q = ctx.x(0), ctx.x(1)
    b, m = int(ctx.a("batch_dims", 0)), int(q.shape[-1])
    mid = q.type.rank - 1 - b  # the index axes of the output after the batch axes

    def at(idx):
        lead = tuple(idx[: b + mid])
        coords = tuple(
            wrap_negative(_index(q.at((*lead, Const(j)))), x.shape[b + j]) for j in range(m)
        )
        return x.at((*idx[:b], *coords, *idx[b + mid :]))

    return [View(ctx.out, at)]


def _pad(ctx: Ctx) -> list[View]:
    x, rank = ctx.x(0), ctx.x(0).type.rank
    pads = _arg(ctx, 1, "pads", "pads")
    axes = [norm_axis(a, rank) for a in (_arg(ctx, 3, "axes", "axes") or range(rank))]
    begin, end = [0] * rank, [0] * rank
    for j, a in enumerate(axes):
        begin[a], end[a] = pads[j], pads[j + len(axes)]
    mode = ctx.a("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    value = float(np.asarray(ctx.const(2, "value")).reshape(-1)[0]) if ctx.has(2) else 0.0
    value = ctx.a("value", value) if not ctx.has(2) else value
    if mode not in ("constant", "edge", "reflect", "wrap"):
        raise Unsupported(f"Pad mode {mode}")
    if mode == "reflect" and any(
        max(b, e) >= n for b, e, n in zip(begin, end, x.shape, strict=True) if isinstance(n, int)
    ):
        raise Unsupported("Pad mode reflect with a pad not smaller than its axis")

    def at(idx):
        src, ok = [], None
        for i, b, e, n in zip(idx, begin, end, x.shape, strict=True):
            j = sub(i, Const(b))
            if b == 0 and e == 0:  # an axis not padded (a pad at its end only still needs
                src.append(j)  # its reads guarded, clamped or reflected)
            elif mode == "edge":
                src.append(minimum(maximum(j, Const(0)), sub(dim(n), Const(1))))
            elif mode == "wrap":  # periodic (floor modulo is never negative here)
                src.append(mod(j, dim(n)))
            elif mode == "reflect":
                j = Select(j < Const(0), sub(Const(0), j), j)
                last = sub(dim(n), Const(1))
                src.append(Select(j > last, sub(mul(last, Const(2)), j), j))
            else:
                src.append(j)
                if b > 0 or e > 0:
                    c = BinOp(BinaryOp.AND, j >= Const(0), j < dim(n))
                    ok = c if ok is None else BinOp(BinaryOp.AND, ok, c)
        v = x.at(tuple(src))
        return v if ok is None else Select(ok, v, k(value, ctx.out.dtype))

    return [View(ctx.out, at)]


def _tile(ctx: Ctx) -> list[View]:
    x = ctx.x(0)
    reps = ints(ctx.const(1, "repeats"))

    def at(idx):
        src = zip(idx, reps, x.shape, strict=True)
        return x.at(tuple(i if r == 1 else mod(i, dim(n)) for i, r, n in src))

    return [View(ctx.out, at)]


def _trilu(ctx: Ctx) -> list[View]:
    x = ctx.x(0)
    kk = int(ints(ctx.const(1, "k"))[0]) if ctx.has(1) else 0
    upper = bool(ctx.a("upper", 1))

    def at(idx):
        d = sub(idx[-1], idx[-2])
        keep = d >= Const(kk) if upper else d <= Const(kk)
        return Select(keep, x.at(idx), k(0, ctx.out.dtype))

    return [View(ctx.out, at)]


def _depth_to_space(ctx: Ctx) -> list[View]:
    x, b = ctx.x(0), int(ctx.a("blocksize"))
    crd = ctx.a("mode", "DCR") in ("CRD", b"CRD")
    cout = dim(ctx.out.shape[1])

    def at(idx):
        n, c, h, w = idx
        bh, bw = mod(h, Const(b)), mod(w, Const(b))
        if crd:
            ch = add(add(mul(c, Const(b * b)), mul(bh, Const(b))), bw)
        else:
            ch = add(mul(add(mul(bh, Const(b)), bw), cout), c)
        return x.at((n, ch, floordiv(h, Const(b)), floordiv(w, Const(b))))

    return [View(ctx.out, at)]


def _space_to_depth(ctx: Ctx) -> list[View]:
    x, b = ctx.x(0), int(ctx.a("blocksize"))
    cin = dim(x.shape[1])
    mode = ctx.a("mode", "DCR")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    if mode not in ("DCR", "CRD"):
        raise Unsupported(f"SpaceToDepth mode {mode}")

    def at(idx):
        n, c, h, w = idx
        if mode == "CRD":  # out channel = (c * b + bh) * b + bw
            blk = mod(c, Const(b * b))
            hh = add(mul(h, Const(b)), floordiv(blk, Const(b)))
            ww = add(mul(w, Const(b)), mod(blk, Const(b)))
            return x.at((n, floordiv(c, Const(b * b)), hh, ww))
        blk = floordiv(c, cin)  # DCR: out channel = (bh * b + bw) * C + c
        hh = add(mul(h, Const(b)), floordiv(blk, Const(b)))
        ww = add(mul(w, Const(b)), mod(blk, Const(b)))
        return x.at((n, mod(c, cin), hh, ww))

    return [View(ctx.out, at)]


def _one_hot(ctx: Ctx) -> list[View]:
    q, values = ctx.x(0), ctx.x(2)
    depth = int(np.asarray(ctx.const(1, "depth")).reshape(-1)[0])
    axis = norm_axis(int(ctx.a("axis", -1)), ctx.out.rank)

    def at(idx):
        i = wrap_negative(_index(q.at((*idx[:axis], *idx[axis + 1 :]))), depth)
        hit = Cmp(CmpOp.EQ, i, idx[axis])
        return Select(hit, values.at((Const(1),)), values.at((Const(0),)))

    return [View(ctx.out, at)]


def _constant_of_shape(ctx: Ctx) -> list[View]:
    """Every element is the ``value`` attribute; the shape comes from the output type (a
    symbolic dim is a size param), so the shape input is never read."""
    v = k(fill_value(ctx.attrs).item(), ctx.out.dtype)
    return [View(ctx.out, lambda idx: v)]


def _range(ctx: Ctx) -> list[View]:
    """``start + i * delta`` over the output type's length (symbolic when the limit is computed
    at run time, e.g. from a feature map's size: the limit is never read). float16 computes in
    float32, as the op record's reference."""
    t = ctx.out.dtype
    work = "float32" if t == "float16" else t
    start, delta = (
        k(np.asarray(ctx.const(i, what)).reshape(()).item(), work)
        for i, what in ((0, "start"), (2, "delta"))
    )

    def at(idx):
        v = start + Cast(work, idx[0]) * delta
        return v if work == t else Cast(t, v)

    return [View(ctx.out, at)]


TABLE: dict[str, Compute] = {
    "Identity": Compute("view", _identity),
    "Dropout": Compute("view", _dropout, data=(0,), outputs=2),
    "Reshape": Compute("view", _reshape, data=(0,)),
    "Flatten": Compute("view", _reshape),
    "Squeeze": Compute("view", _reshape, data=(0,)),
    "Unsqueeze": Compute("view", _reshape, data=(0,)),
    "Expand": Compute("view", _expand, data=(0,)),
    "Transpose": Compute("view", _transpose),
    "Slice": Compute("view", _slice, data=(0,)),
    "Concat": Compute("view", _concat),
    "Split": Compute("view", _split, data=(0,), outputs=ALL),
    "Gather": Compute("view", _gather),
    "GatherElements": Compute("view", _gather_elements),
    "GatherND": Compute("view", _gather_nd),
    "Pad": Compute("view", _pad, data=(0,)),
    "Tile": Compute("view", _tile, data=(0,)),
    "Trilu": Compute("view", _trilu, data=(0,)),
    "DepthToSpace": Compute("view", _depth_to_space),
    "SpaceToDepth": Compute("view", _space_to_depth),
    "OneHot": Compute("view", _one_hot, data=(0, 2)),
    # SOURCE ops, folded when their shape is a constant; lowered when the shape is computed at
    # run time (a symbolic image size) but the output type already records it
    "ConstantOfShape": Compute("fill", _constant_of_shape, data=()),
    "Range": Compute("fill", _range, data=()),
}
