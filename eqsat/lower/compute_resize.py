"""Resize's compute definition: a gather of a few taps per output element, weighted.

Consumes a :class:`~eqsat.lower.compute.Ctx` of a Resize node; produces its output
:class:`~eqsat.lower.compute.View`. The op table's reference builds, per resized axis, the
interpolation matrix ``w`` (``opdefs.tensor.resize_matrix``: every mode, coordinate
transformation and rounding rule in one place); here each row's non-zero entries become two
small compile-time tables per axis, the source index and the weight of each tap, so the output
is ``sum over taps of prod_a weight_a[i_a, t_a] * x[src_a[i_a, t_a]]``. Nearest is one tap of
weight 1 on every axis: a pure index view without arithmetic. Linear has 2 taps per axis (4
reads in 2-D), cubic 4 (16 in 2-D).

tf_crop_and_resize selects ``extrapolation_value`` where a third table says the output point
lies outside the input. A symbolic axis (a dynamic image size) scaled by an integer
is periodic: output ``s * q + j`` reads ``clamp(q + off[j, t])``, so its tables have one row
per phase ``j`` (the nearest/asymmetric/floor upsample of FPN necks is ``x[q]``). Refused, each
in one line naming its reason: a symbolic axis whose taps are not periodic (align_corners, a
non-integer scale, sizes), and antialiased down-scaling whose taps per output element exceed
:data:`MAX_TAPS`.
"""

from __future__ import annotations

import itertools

import numpy as np

from eqsat.egraph.opdefs.tensor import resize_axes, resize_matrix
from eqsat.lower.compute_base import Compute, Ctx, Unsupported, View
from eqsat.lower.compute_ew import k
from eqsat.lower.compute_reduce import acc_dtype, cast_to
from eqsat.lower.indexing import add, dim, floordiv, mod, sub
from eqsat.lower.loops import BinaryOp, BinOp, Const, Select, call, is_float, maximum, minimum

MAX_TAPS = 64  # reads per output element; beyond it the view's expression grows too large


def _present(ctx: Ctx, i: int, what: str) -> list | None:
    if not ctx.has(i):
        return None
    v = np.asarray(ctx.const(i, what)).reshape(-1)
    return v.tolist() if v.size else None


def _taps(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(source index, weight) tables, n_out x T, of the non-zero entries of each row of ``w``;
    rows with fewer than T taps are padded with weight 0 at index 0."""
    nnz = [np.flatnonzero(row) for row in w]
    t = max(1, max(len(j) for j in nnz))
    src, wt = np.zeros((len(w), t), np.int64), np.zeros((len(w), t))
    for i, j in enumerate(nnz):
        src[i, : len(j)], wt[i, : len(j)] = j, w[i, j]
    return src, wt


def _static_axis(ctx: Ctx, name: str, a: int, src: np.ndarray, wt: np.ndarray, acc: str):
    """Tables indexed by the output position: the taps of every output point."""
    sv = ctx.pack(f"{name}.src", src)
    wv = None
    if not (src.shape[1] == 1 and np.all(wt == 1.0)):  # nearest: no weights
        wv = ctx.pack(f"{name}.w", wt.astype(acc))
    wf = None if wv is None else (lambda o, t: wv.at((o, Const(t))))
    return a, (lambda o, t: sv.at((o, Const(t)))), wf, src.shape[1]


def _phases(s: int, pair, ctx: Ctx) -> tuple[np.ndarray, np.ndarray] | None:
    """An integer up-scale ``s`` of a symbolic axis: output ``o = s * q + j`` reads its taps at
    ``clamp(q + off[j, t])`` with weight ``wt[j, t]`` (s x T tables) when the coordinate
    transformation is shift-invariant (``o + s`` maps to ``x + 1``: asymmetric, half_pixel, ...;
    not align_corners). Read off an interior row of two small surrogate sizes and checked by
    rebuilding their whole matrices, borders included; None when they differ."""
    found = None
    for n in (16, 17):
        w, outside = resize_matrix(n, n * s, float(s), pair, ctx.attrs)
        if outside.any():
            return None
        mid = n // 2
        off, wt = _taps(w[s * mid : s * mid + s])
        off = off - mid
        o = np.arange(n * s)
        src = np.clip(o[:, None] // s + off[o % s], 0, n - 1)
        rebuilt = np.zeros_like(w)
        np.add.at(rebuilt, (np.repeat(o, off.shape[1]), src.ravel()), wt[o % s].ravel())
        if not np.allclose(rebuilt, w, rtol=0, atol=1e-12):
            return None
        if found is not None and not (np.array_equal(found[0], off) and np.allclose(found[1], wt)):
            return None
        found = (off, wt)
    return found


def _periodic_axis(ctx, name, a, s, n_in, off, wt, acc):
    ov = ctx.pack(f"{name}.off", off)
    wv = None
    if not (off.shape[1] == 1 and np.all(wt == 1.0)):
        wv = ctx.pack(f"{name}.w", wt.astype(acc))
    last = sub(dim(n_in), Const(1))

    def src(o, t):
        q = add(floordiv(o, Const(s)), ov.at((mod(o, Const(s)), Const(t))))
        return minimum(maximum(q, Const(0)), last)

    wf = None if wv is None else (lambda o, t: wv.at((mod(o, Const(s)), Const(t))))
    return a, src, wf, off.shape[1]


def _resize(ctx: Ctx) -> list[View]:
    x, out = ctx.x(0), ctx.out
    if ctx.pack is None:
        raise Unsupported("Resize: its tap tables need compile-time packing")
    sizes = _present(ctx, 3, "sizes")
    scales = None if sizes is not None else _present(ctx, 2, "scales")
    roi = _present(ctx, 1, "roi")
    acc = acc_dtype(out.dtype) if is_float(out.dtype) else "float64"
    outs = []  # (axis, table of the output points outside the input)
    axes = []  # (axis, tap source index(o, t), tap weight(o, t) or None, taps)
    base = ctx.node.outputs[0]
    for a, n_out, s, pair in resize_axes(x.shape, ctx.attrs, roi, scales, sizes):
        n_in, name = x.shape[a], f"{base}.{a}"
        if isinstance(n_in, int) and isinstance(n_out, int):
            s = n_out / n_in if s is None else s
            w, outside = resize_matrix(n_in, n_out, s, pair, ctx.attrs)
            axes.append(_static_axis(ctx, name, a, *_taps(w), acc))
            if outside.any():  # tf_crop_and_resize: points outside the input extrapolate
                outs.append((a, ctx.pack(f"{name}.out", outside)))
            continue
        phases = None if s is None or not float(s).is_integer() else _phases(int(s), pair, ctx)
        if phases is None:
            raise Unsupported(
                f"Resize: axis {a} has a symbolic size ({n_in} -> {n_out}) and its taps are not "
                "periodic (an integer scale with a shift-invariant coordinate transformation)"
            )
        axes.append(_periodic_axis(ctx, name, a, int(s), n_in, *phases, acc))
    if int(np.prod([t for *_, t in axes])) > MAX_TAPS:
        raise Unsupported(f"Resize: more than {MAX_TAPS} taps per output element (antialias)")

    def at(idx):
        v = _interpolate(idx)
        if not outs:
            return v
        far = None
        for a, ov in outs:
            o = ov.at((idx[a],))
            far = o if far is None else BinOp(BinaryOp.OR, far, o)
        return Select(far, k(float(ctx.a("extrapolation_value", 0.0)), out.dtype), v)

    def _interpolate(idx):
        if all(wf is None for _, _, wf, _ in axes):  # nearest: an index view
            src = list(idx)
            for a, sf, _, _ in axes:
                src[a] = sf(idx[a], 0)
            return x.at(tuple(src))
        total = None
        for taps in itertools.product(*(range(t) for *_, t in axes)):
            src, weight = list(idx), None
            for (a, sf, wf, _), t in zip(axes, taps, strict=True):
                src[a] = sf(idx[a], t)
                if wf is not None:
                    wa = cast_to(wf(idx[a], t), acc)
                    weight = wa if weight is None else weight * wa
            term = cast_to(x.at(tuple(src)), acc)
            term = term if weight is None else weight * term
            total = term if total is None else total + term
        if is_float(out.dtype):
            return cast_to(total, out.dtype)
        info = np.iinfo(out.dtype)  # the reference rounds half to even, then saturates
        r = minimum(maximum(call("roundeven", total), k(info.min, acc)), k(info.max, acc))
        return cast_to(r, out.dtype)

    return [View(out, at)]


TABLE: dict[str, Compute] = {
    "Resize": Compute("interpolation", _resize, data=(0,)),
}
