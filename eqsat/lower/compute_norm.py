"""Multi-stage reductions in one kernel: Softmax, LogSoftmax, LayerNormalization and
InstanceNormalization.

Consumes a :class:`~eqsat.lower.compute.Ctx` of one of these REDUCTION ops; produces a
:class:`~eqsat.lower.compute.Reduction` whose rows are the axes *not* reduced and whose stages
run one after the other per row: Softmax takes the row max, then the sum of ``exp(x - max)``
(the max makes ``exp`` overflow-free), then stores ``exp(x - max) * (1 / sum)`` (LogSoftmax:
``x - max - log(sum)``) in a loop over the reduced axis; the normalizations take the sum, then
the sum of squared deviations from the mean (two passes: numerically safer than E[x²] - E[x]²),
then store the normalized, scaled and shifted value. The statistics live in kernel-local
scalars, so each op is one kernel that reads its input once per stage; LayerNormalization's
optional Mean and InvStdDev outputs, when used, are one more reduction each (a list of
reductions, one per named output: each becomes its own kernel storing that statistic).
LayerNormalization computes its statistics in ``stash_type`` and casts back before scale and
bias, as the op table's reference does.
"""

from __future__ import annotations

from eqsat.egraph.opdefs.base import norm_axis
from eqsat.lower.compute_base import Compute, Ctx, Reduction, Stage
from eqsat.lower.compute_ew import k
from eqsat.lower.compute_reduce import acc_dtype, cast_to, count_of
from eqsat.lower.indexing import broadcast_index, dim
from eqsat.lower.loops import ReduceOp, call


def _softmax(log: bool):
    def build(ctx: Ctx) -> Reduction:
        x, out = ctx.x(0), ctx.out
        axis = norm_axis(int(ctx.a("axis", -1)), out.rank)
        n, acc = dim(x.shape[axis]), acc_dtype(out.dtype)

        def at(idx, j):
            return cast_to(x.at((*idx[:axis], j, *idx[axis + 1 :])), acc)

        stages = (
            Stage("max", ReduceOp.MAX, acc, ("j0",), (n,), lambda i, r, v: at(i, r[0])),
            Stage(
                "sum",
                ReduceOp.SUM,
                acc,
                ("j1",),
                (n,),
                lambda i, r, v: call("exp", at(i, r[0]) - v["max"]),
            ),
        )

        def final(idx, v):
            z = at(idx, idx[axis]) - v["max"]
            # exp(z) times the row's 1 / sum (loop-invariant: hoisted out of the row), not a
            # division per element: a vector divide costs ~16 cycles per 16 lanes here, a third
            # of BERT's softmax kernel; the result differs from exp(z) / sum by at most an ulp
            return cast_to(
                z - call("log", v["sum"]) if log else call("exp", z) * (k(1, acc) / v["sum"]),
                out.dtype,
            )

        rows = tuple(a for a in range(out.rank) if a != axis)
        return Reduction(out, rows, stages, final)

    return build


def _normalize(first: int, last: int, ctx: Ctx, stat: str, affine) -> list[Reduction]:
    """(x - mean) / sqrt(var + eps) over axes ``first..last-1``, then ``affine(idx, y)``; one
    reduction per named output (the statistics outputs after the normalized value)."""
    x, out = ctx.x(0), ctx.out
    axes = tuple(range(first, last))
    eps = float(ctx.a("epsilon", 1e-5))
    n = count_of([x.shape[a] for a in axes], stat)

    def at(idx, rs):
        src = list(idx)
        for a, r in zip(axes, rs, strict=True):
            src[a] = r
        return cast_to(x.at(tuple(src)), stat)

    def mean(v):
        return v["sum"] / n

    def dev(idx, rs, v):
        d = at(idx, rs) - mean(v)
        return d * d

    ext = tuple(dim(x.shape[a]) for a in axes)
    stages = (
        Stage(
            "sum", ReduceOp.SUM, stat, tuple(f"s{a}" for a in axes), ext, lambda i, r, v: at(i, r)
        ),
        Stage("var", ReduceOp.SUM, stat, tuple(f"v{a}" for a in axes), ext, dev),
    )

    def inv_std(v):
        return k(1, stat) / call("sqrt", v["var"] / n + k(eps, stat))

    def final(idx, v):
        y = (cast_to(x.at(idx), stat) - mean(v)) * inv_std(v)
        return cast_to(affine(idx, y), out.dtype)

    rows = tuple(a for a in range(out.rank) if a not in axes)
    res = [Reduction(out, rows, stages, final)]
    # LayerNormalization's optional outputs Mean and InvStdDev (the reduced axes kept as 1s):
    # the same stages in a kernel of their own, storing a statistic instead
    stats = {1: mean, 2: inv_std}
    for p, o in enumerate(ctx.node.outputs[1:], 1):
        if o:
            t = ctx.out_types[len([q for q in ctx.node.outputs[:p] if q])]
            res.append(Reduction(t, rows, stages, _stat(stats[p], t.dtype)))
    return res


def _stat(f, dtype: str):
    return lambda idx, v: cast_to(f(v), dtype)


def _layer_norm(ctx: Ctx) -> list[Reduction]:
    out = ctx.out
    axis = norm_axis(int(ctx.a("axis", -1)), out.rank)
    stat = {1: "float32", 11: "float64", 10: "float16"}.get(int(ctx.a("stash_type", 1)), "float32")
    scale = ctx.x(1)
    bias = ctx.ins[2] if ctx.has(2) else None

    def affine(idx, y):
        y = cast_to(y, out.dtype) * scale.at(broadcast_index(idx, scale.shape, out.shape))
        return y if bias is None else y + bias.at(broadcast_index(idx, bias.shape, out.shape))

    return _normalize(axis, out.rank, ctx, stat, affine)


def _instance_norm(ctx: Ctx) -> list[Reduction]:
    scale, bias, acc = ctx.x(1), ctx.x(2), acc_dtype(ctx.out.dtype)

    def affine(idx, y):
        return y * cast_to(scale.at((idx[1],)), acc) + cast_to(bias.at((idx[1],)), acc)

    return _normalize(2, ctx.out.rank, ctx, acc, affine)


TABLE: dict[str, Compute] = {
    "Softmax": Compute("softmax", _softmax(False)),
    "LogSoftmax": Compute("softmax", _softmax(True)),
    "LayerNormalization": Compute("norm", _layer_norm, outputs=3),
    "InstanceNormalization": Compute("norm", _instance_norm),
}
