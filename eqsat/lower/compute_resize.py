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
lies outside the input. Refused, each in one line naming its reason: a resized axis whose
input or output size is symbolic (the tables need the sizes), and antialiased down-scaling
whose taps per output element exceed :data:`MAX_TAPS`.
"""

from __future__ import annotations

import itertools

import numpy as np

from eqsat.egraph.opdefs.tensor import resize_axes, resize_matrix
from eqsat.lower.compute_base import Compute, Ctx, Unsupported, View
from eqsat.lower.compute_ew import k
from eqsat.lower.compute_reduce import acc_dtype, cast_to
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


def _resize(ctx: Ctx) -> list[View]:
    x, out = ctx.x(0), ctx.out
    if ctx.pack is None:
        raise Unsupported("Resize: its tap tables need compile-time packing")
    sizes = _present(ctx, 3, "sizes")
    scales = None if sizes is not None else _present(ctx, 2, "scales")
    roi = _present(ctx, 1, "roi")
    acc = acc_dtype(out.dtype) if is_float(out.dtype) else "float64"
    outs = []  # (axis, table of the output points outside the input)
    axes = []  # (axis, index table view, weight table view or None, taps)
    base = ctx.node.outputs[0]
    for a, n_out, s, pair in resize_axes(x.shape, ctx.attrs, roi, scales, sizes):
        n_in = x.shape[a]
        if not (isinstance(n_in, int) and isinstance(n_out, int)):
            raise Unsupported(f"Resize: axis {a} has a symbolic size ({n_in} -> {n_out})")
        w, outside = resize_matrix(n_in, n_out, n_out / n_in if s is None else s, pair, ctx.attrs)
        src, wt = _taps(w)
        one = bool(np.all(wt[:, 0] == 1.0)) and src.shape[1] == 1
        sv = ctx.pack(f"{base}.src{a}", src)
        wv = None if one else ctx.pack(f"{base}.w{a}", wt.astype(acc))
        axes.append((a, sv, wv, src.shape[1]))
        if outside.any():  # tf_crop_and_resize: points outside the input extrapolate
            outs.append((a, ctx.pack(f"{base}.out{a}", outside)))
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
        if all(wv is None for _, _, wv, _ in axes):  # nearest: an index view
            src = list(idx)
            for a, sv, _, _ in axes:
                src[a] = sv.at((idx[a], Const(0)))
            return x.at(tuple(src))
        total = None
        for taps in itertools.product(*(range(t) for *_, t in axes)):
            src, weight = list(idx), None
            for (a, sv, wv, _), t in zip(axes, taps, strict=True):
                src[a] = sv.at((idx[a], Const(t)))
                if wv is not None:
                    wa = cast_to(wv.at((idx[a], Const(t))), acc)
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
