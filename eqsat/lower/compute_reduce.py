"""Reduction compute definitions: contractions, windows, reductions and normalizations.

Consumes a :class:`~eqsat.lower.compute.Ctx` of a REDUCTION or COMPLEX op; produces a
:class:`~eqsat.lower.compute.Reduction`: per output row, stages that each reduce into a scalar
(``Store`` init + ``Accumulate`` when lowered), then the final per-element value.

- MatMul (batch broadcasting, 1-D operands), Gemm (transposes, alpha, beta, C broadcast):
  one SUM stage over ``k``; the bias/scale terms are the final value.
- Conv (groups, strides, dilations, explicit and SAME pads): one SUM stage over input channels
  of the group and the kernel window; a read in the padding is a lazy ``Select`` that skips both
  loads. MaxPool/AveragePool likewise; AveragePool divides by a second SUM stage counting the
  window's real (or, with ``count_include_pad``, padded) elements, unless the window never
  leaves the input, when the count is the constant kernel size.
- ConvTranspose: the same stage over the zero-stuffed input, as guarded index arithmetic.
- Reduce* (axes from the attribute or a constant input, keepdims, ``noop_with_empty_axes``),
  Global pools, ArgMax/ArgMin (a max stage, then a min/max over matching indices), CumSum.
- Softmax and the normalizations are in :mod:`eqsat.lower.compute_norm`.

Accumulation is in the output dtype, except float16 which accumulates in float32 (as the op
table's references do).
"""

from __future__ import annotations

import numpy as np

from eqsat.egraph.opdefs.base import ints, norm_axis
from eqsat.egraph.opdefs.nn import convt_geometry
from eqsat.egraph.opdefs.window import Window
from eqsat.lower.compute_base import Compute, Ctx, Reduction, Stage, Unsupported, View
from eqsat.lower.compute_ew import k
from eqsat.lower.indexing import add, broadcast_index, dim, floordiv, mod, mul, product, sub
from eqsat.lower.loops import (
    INDEX,
    BinaryOp,
    BinOp,
    Cast,
    Cmp,
    CmpOp,
    Const,
    Expr,
    ReduceOp,
    Select,
    call,
    is_float,
)


def acc_dtype(dtype: str) -> str:
    return "float32" if dtype == "float16" else dtype


def cast_to(e: Expr, dtype: str) -> Expr:
    return e if e.dtype == dtype else Cast(dtype, e)


def _and(a: Expr | None, b: Expr) -> Expr:
    return b if a is None else BinOp(BinaryOp.AND, a, b)


def count_of(dims, dtype: str) -> Expr:
    n = product(dims)
    return k(n.value, dtype) if isinstance(n, Const) else Cast(dtype, n)


# -------------------------------------------------------------------------------- contractions
def matmul(ctx: Ctx) -> Reduction:
    a, b, out = ctx.x(0), ctx.x(1), ctx.out
    ra, rb, R = a.type.rank, b.type.rank, out.rank
    nb = R - (ra > 1) - (rb > 1)
    acc = acc_dtype(out.dtype)

    def body(idx, ks, vals):
        kk, batch = ks[0], idx[:nb]
        ai = (
            (kk,)
            if ra == 1
            else (*broadcast_index(batch, a.shape[:-2], out.shape[:nb]), idx[nb], kk)
        )
        bi = (
            (kk,)
            if rb == 1
            else (*broadcast_index(batch, b.shape[:-2], out.shape[:nb]), kk, idx[-1])
        )
        return cast_to(a.at(ai), acc) * cast_to(b.at(bi), acc)

    stage = Stage("acc", ReduceOp.SUM, acc, ("k",), (dim(a.shape[-1]),), body)
    return Reduction(out, tuple(range(R)), (stage,), lambda idx, v: cast_to(v["acc"], out.dtype))


def _gemm(ctx: Ctx) -> Reduction:
    a, b, out = ctx.x(0), ctx.x(1), ctx.out
    ta, tb = int(ctx.a("transA", 0)), int(ctx.a("transB", 0))
    alpha, beta = float(ctx.a("alpha", 1.0)), float(ctx.a("beta", 1.0))
    kdim = a.shape[0] if ta else a.shape[1]
    acc = acc_dtype(out.dtype)

    def body(idx, ks, vals):
        i, j, kk = idx[0], idx[1], ks[0]
        x = a.at((kk, i) if ta else (i, kk))
        y = b.at((j, kk) if tb else (kk, j))
        return cast_to(x, acc) * cast_to(y, acc)

    c = ctx.ins[2] if ctx.has(2) else None

    def final(idx, v):
        r = v["acc"] if alpha == 1 else k(alpha, acc) * v["acc"]
        if c is not None and beta != 0:
            cv = cast_to(c.at(broadcast_index(idx, c.shape, out.shape)), acc)
            r = r + (cv if beta == 1 else k(beta, acc) * cv)
        return cast_to(r, out.dtype)

    stage = Stage("acc", ReduceOp.SUM, acc, ("k",), (dim(kdim),), body)
    return Reduction(out, (0, 1), (stage,), final)


# ------------------------------------------------------------------------------------ windows
def _window(ctx: Ctx, kernel) -> tuple[Window, list[int], list[int]]:
    win = Window.of(ctx.attrs, kernel)
    spatial = ctx.x(0).shape[2:]
    pb, pe = [], []
    for i, d in enumerate(spatial):
        if isinstance(d, str) and win.auto_pad.startswith("SAME"):
            raise Unsupported("SAME padding of a symbolic spatial dim")
        _, b, e = win._out1(i, d)
        pb.append(b)
        pe.append(e)
    return win, pb, pe


def _positions(win, pb, idx_sp, rs):
    """Input positions ``o * s - pb + r * d`` along each spatial axis."""
    return [
        add(sub(mul(o, Const(win.strides[i])), Const(pb[i])), mul(r, Const(win.dilations[i])))
        for i, (o, r) in enumerate(zip(idx_sp, rs, strict=True))
    ]


def _inside(pos, lo, hi, may_leave) -> Expr | None:
    cond = None
    for p, lo_, hi_, leave in zip(pos, lo, hi, may_leave, strict=True):
        if leave:
            cond = _and(cond, BinOp(BinaryOp.AND, p >= lo_, p < hi_))
    return cond


def _may_leave(win, pb, out_sp, in_sp) -> list[bool]:
    """Whether a window along each axis can reach outside the input (else no guard needed)."""
    res = []
    for i, (o, n) in enumerate(zip(out_sp, in_sp, strict=True)):
        if pb[i] > 0 or not (isinstance(o, int) and isinstance(n, int)):
            res.append(True)
        else:
            res.append((o - 1) * win.strides[i] + win.extent(i) - pb[i] > n)
    return res


def conv(ctx: Ctx) -> Reduction:
    x, w, out = ctx.x(0), ctx.x(1), ctx.out
    kernel = [int(d) for d in (ctx.a("kernel_shape") or w.shape[2:])]
    win, pb, _ = _window(ctx, kernel)
    g, nd = int(ctx.a("group", 1)), len(kernel)
    cg, mg = w.shape[1], dim(out.shape[1]) if g == 1 else Const(int(out.shape[1]) // g)
    leave = _may_leave(win, pb, out.shape[2:], x.shape[2:])
    acc = acc_dtype(out.dtype)
    rvars = ("rc", *(f"r{i}" for i in range(nd)))

    def body(idx, rs, vals):
        n, co, sp = idx[0], idx[1], idx[2:]
        ci = rs[0] if g == 1 else add(mul(BinOp(BinaryOp.FLOORDIV, co, mg), dim(cg)), rs[0])
        pos = _positions(win, pb, sp, rs[1:])
        prod = cast_to(x.at((n, ci, *pos)), acc) * cast_to(w.at((co, rs[0], *rs[1:])), acc)
        cond = _inside(pos, [Const(0)] * nd, [dim(d) for d in x.shape[2:]], leave)
        return prod if cond is None else Select(cond, prod, k(0, acc))

    return _conv_sum(ctx, acc, rvars, cg, kernel, body)


def _conv_sum(ctx: Ctx, acc: str, rvars, cg, kernel, body) -> Reduction:
    """A Conv-like kernel (Conv, ConvTranspose): one SUM stage of ``body`` over a group's
    input channels ``cg`` and the ``kernel`` window, the optional bias (input 2) added per
    output channel in the final store."""
    out = ctx.out
    bias = ctx.ins[2] if ctx.has(2) else None

    def final(idx, v):
        r = v["acc"] if bias is None else v["acc"] + cast_to(bias.at((idx[1],)), acc)
        return cast_to(r, out.dtype)

    extents = (dim(cg), *(Const(kk) for kk in kernel))
    stage = Stage("acc", ReduceOp.SUM, acc, rvars, extents, body)
    return Reduction(out, tuple(range(out.rank)), (stage,), final)


def conv_transpose(ctx: Ctx) -> Reduction:
    """The gradient of a Conv as a gather: ``y[n, co, o] = sum over ci of the group and the
    kernel r of x[n, ci, i] * w[ci, co mod M, r]`` where ``i * s + r * d = o + pad_begin``,
    i.e. a read at ``p = o + pb - r * d`` guarded by ``0 <= p < s * in`` and ``p mod s = 0``
    (the zero-stuffed input, never materialized). Output size and pads from the op record's
    geometry (output_padding, output_shape, auto_pad)."""
    x, w, out = ctx.x(0), ctx.x(1), ctx.out
    kernel = [int(d) for d in (ctx.a("kernel_shape") or w.shape[2:])]
    win, _, pb, _ = convt_geometry(x.shape[2:], kernel, ctx.attrs)
    g, nd = int(ctx.a("group", 1)), len(kernel)
    cg, mg = int(x.shape[1]) // g if g > 1 else x.shape[1], w.shape[1]
    acc = acc_dtype(out.dtype)
    rvars = ("rc", *(f"r{i}" for i in range(nd)))

    def body(idx, rs, vals):
        n, co, sp = idx[0], idx[1], idx[2:]
        ci, cm = rs[0], co
        if g > 1:
            ci = add(mul(floordiv(co, Const(mg)), Const(cg)), rs[0])
            cm = mod(co, Const(mg))
        src, cond = [], None
        for i, (o, r) in enumerate(zip(sp, rs[1:], strict=True)):
            s, p = win.strides[i], sub(add(o, Const(pb[i])), mul(r, Const(win.dilations[i])))
            src.append(floordiv(p, Const(s)))
            inside = BinOp(BinaryOp.AND, p >= Const(0), p < mul(dim(x.shape[2 + i]), Const(s)))
            if s > 1:
                inside = BinOp(BinaryOp.AND, inside, Cmp(CmpOp.EQ, mod(p, Const(s)), Const(0)))
            cond = _and(cond, inside)
        prod = cast_to(x.at((n, ci, *src)), acc) * cast_to(w.at((ci, cm, *rs[1:])), acc)
        return Select(cond, prod, k(0, acc))

    return _conv_sum(ctx, acc, rvars, cg, kernel, body)


def _pool(avg: bool):
    def build(ctx: Ctx) -> Reduction:
        x, out = ctx.x(0), ctx.out
        kernel = [int(d) for d in ctx.a("kernel_shape")]
        win, pb, pe = _window(ctx, kernel)
        nd, dt = len(kernel), out.dtype
        leave = _may_leave(win, pb, out.shape[2:], x.shape[2:])
        rvars = tuple(f"r{i}" for i in range(nd))
        zeros, sizes = [Const(0)] * nd, [dim(d) for d in x.shape[2:]]

        def body(idx, rs, vals):
            pos = _positions(win, pb, idx[2:], rs)
            cond = _inside(pos, zeros, sizes, leave)
            v = x.at((idx[0], idx[1], *pos))
            if cond is None:
                return v
            return Select(cond, v, k(0 if avg else ReduceOp.MAX.identity(dt), dt))

        extents = tuple(Const(kk) for kk in kernel)
        if not avg:
            stage = Stage("acc", ReduceOp.MAX, dt, rvars, extents, body)
            return Reduction(out, tuple(range(out.rank)), (stage,), lambda idx, v: v["acc"])
        acc = acc_dtype(dt)
        stages = [Stage("acc", ReduceOp.SUM, acc, rvars, extents, body)]
        if not any(leave):
            count = k(int(np.prod(kernel)), acc)
        else:
            include = bool(ctx.a("count_include_pad", 0))
            lo = [Const(-b) for b in pb] if include else zeros
            hi = [add(s, Const(e)) for s, e in zip(sizes, pe, strict=False)] if include else sizes
            cvars = tuple(f"c{i}" for i in range(nd))

            def counted(idx, rs, vals):
                cond = _inside(_positions(win, pb, idx[2:], rs), lo, hi, leave)
                return Select(cond, k(1, acc), k(0, acc))

            stages.append(Stage("count", ReduceOp.SUM, acc, cvars, extents, counted))
            count = None

        def final(idx, v):
            return cast_to(v["acc"] / (count if count is not None else v["count"]), dt)

        return Reduction(out, tuple(range(out.rank)), tuple(stages), final)

    return build


# ---------------------------------------------------------------------------------- reductions
def _axes_reduction(ctx: Ctx, axes, keep: bool, stages_of, final_of) -> Reduction:
    """Reduce ``axes`` of input 0: output index -> input index with stage vars on ``axes``."""
    x, out = ctx.x(0), ctx.out
    rank = x.type.rank

    def src(idx, rs):
        it, rit, res = iter(idx), iter(rs), []
        for a in range(rank):
            if a in axes:
                if keep:
                    next(it)
                res.append(next(rit))
            else:
                res.append(next(it))
        return tuple(res)

    stages = stages_of(x, src, tuple(dim(x.shape[a]) for a in axes))
    return Reduction(out, tuple(range(out.rank)), stages, final_of(x, axes))


def _reduce_axes(ctx: Ctx) -> tuple[int, ...] | None:
    rank = ctx.x(0).type.rank
    axes = ints(ctx.const(1, "axes")) if ctx.has(1) else ctx.a("axes")
    if axes is None or len(axes) == 0:
        return None if ctx.a("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted({norm_axis(int(a), rank) for a in axes}))


_REDUCE = {  # op -> (combine, square the input, finalize)
    "ReduceSum": (ReduceOp.SUM, False, None),
    "ReduceMean": (ReduceOp.SUM, False, "mean"),
    "ReduceMax": (ReduceOp.MAX, False, None),
    "ReduceMin": (ReduceOp.MIN, False, None),
    "ReduceProd": (ReduceOp.PROD, False, None),
    "ReduceSumSquare": (ReduceOp.SUM, True, None),
    "ReduceL2": (ReduceOp.SUM, True, "sqrt"),
}


def _reduce(op: str):
    combine, square, fin = _REDUCE[op]

    def build(ctx: Ctx) -> Reduction | list[View]:
        axes = _reduce_axes(ctx)
        if axes is None:
            return [View(ctx.out, ctx.x(0).at)]
        dt = ctx.out.dtype
        acc = acc_dtype(dt) if combine is ReduceOp.SUM else dt
        if acc == "bool":  # any / all: max / min over 0 and 1 (the IR accumulates numbers)
            acc = "uint8"
        names = tuple(f"r{a}" for a in axes)

        def stages_of(x, src, extents):
            def body(idx, rs, vals):
                v = cast_to(x.at(src(idx, rs)), acc)
                return v * v if square else v

            return (Stage("acc", combine, acc, names, extents, body),)

        def final_of(x, axes):
            n = [x.shape[a] for a in axes]

            def final(idx, v):
                r = v["acc"]
                if fin == "mean":
                    r = (
                        r / count_of(n, acc)
                        if is_float(acc)
                        else BinOp(BinaryOp.FLOORDIV, r, cast_to(product(n), acc))
                    )
                elif fin == "sqrt":
                    r = call("sqrt", r)
                return cast_to(r, dt)

            return final

        return _axes_reduction(ctx, axes, bool(ctx.a("keepdims", 1)), stages_of, final_of)

    return build


def _global(op: ReduceOp):
    def build(ctx: Ctx) -> Reduction:
        x = ctx.x(0)
        axes = tuple(range(2, x.type.rank))
        dt = ctx.out.dtype
        acc = acc_dtype(dt) if op is ReduceOp.SUM else dt
        names = tuple(f"r{a}" for a in axes)

        def stages_of(x, src, extents):
            body = lambda idx, rs, vals: cast_to(x.at(src(idx, rs)), acc)  # noqa: E731
            return (Stage("acc", op, acc, names, extents, body),)

        def final_of(x, axes):
            n = [x.shape[a] for a in axes]
            if op is ReduceOp.SUM:
                return lambda idx, v: cast_to(v["acc"] / count_of(n, acc), dt)
            return lambda idx, v: v["acc"]

        return _axes_reduction(ctx, axes, True, stages_of, final_of)

    return build


def _arg(largest: bool):
    def build(ctx: Ctx) -> Reduction:
        x = ctx.x(0)
        axis = norm_axis(int(ctx.a("axis", 0)), x.type.rank)
        last = bool(ctx.a("select_last_index", 0))
        best = ReduceOp.MAX if largest else ReduceOp.MIN

        def stages_of(x, src, extents):
            def pick(idx, rs, vals):
                hit = Cmp(CmpOp.EQ, x.at(src(idx, rs)), vals["best"])
                return Select(hit, rs[0], Const(-1 if last else np.iinfo("int64").max))

            return (
                Stage("best", best, x.dtype, ("j0",), extents, lambda i, r, v: x.at(src(i, r))),
                Stage("arg", ReduceOp.MAX if last else ReduceOp.MIN, INDEX, ("j1",), extents, pick),
            )

        return _axes_reduction(
            ctx, (axis,), bool(ctx.a("keepdims", 1)), stages_of, lambda x, a: lambda i, v: v["arg"]
        )

    return build


def _cumsum(ctx: Ctx) -> Reduction:
    x, out = ctx.x(0), ctx.out
    axis = norm_axis(int(ints(ctx.const(1, "axis"))[0]), x.type.rank)
    excl, rev = bool(ctx.a("exclusive", 0)), bool(ctx.a("reverse", 0))
    acc = acc_dtype(out.dtype)

    def body(idx, rs, vals):
        j, i = rs[0], idx[axis]
        cond = {(0, 0): j <= i, (1, 0): j < i, (0, 1): j >= i, (1, 1): j > i}[(excl, rev)]
        src = (*idx[:axis], j, *idx[axis + 1 :])
        return Select(cond, cast_to(x.at(src), acc), k(0, acc))

    stage = Stage("acc", ReduceOp.SUM, acc, ("j",), (dim(x.shape[axis]),), body)
    return Reduction(
        out, tuple(range(out.rank)), (stage,), lambda i, v: cast_to(v["acc"], out.dtype)
    )


TABLE: dict[str, Compute] = {
    "MatMul": Compute("gemm", matmul),
    "Gemm": Compute("gemm", _gemm),
    "Conv": Compute("conv", conv),
    "ConvTranspose": Compute("conv", conv_transpose),
    "MaxPool": Compute("pool", _pool(False)),
    "AveragePool": Compute("pool", _pool(True)),
    "GlobalAveragePool": Compute("reduction", _global(ReduceOp.SUM)),
    "GlobalMaxPool": Compute("reduction", _global(ReduceOp.MAX)),
    **{op: Compute("reduction", _reduce(op), data=(0,)) for op in _REDUCE},
    "ArgMax": Compute("reduction", _arg(True)),
    "ArgMin": Compute("reduction", _arg(False)),
    "CumSum": Compute("scan", _cumsum, data=(0,)),
}
