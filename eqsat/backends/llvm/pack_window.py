"""The B packer of a guarded window read (:class:`~eqsat.backends.llvm.tensorize_plan.WindowB`):
a padded convolution's im2col, packed with masked vector loads (stride 1) or masked gathers.

Consumes a ``WindowB``, the plan's tile (``nr``, ``vw``, ``kc``, rows mode and the innermost N
extent) and a builder positioned in the ``pack_b`` helper's entry with its arguments; emits the
same layout as :func:`~eqsat.backends.llvm.tensorize_plan.pack_b` (slice ``pc`` at
``pc * ncpad``, panel ``p`` at ``p * kc * NR``, row ``kk`` at ``kk * NR``, columns past the
block zero).

How: the block's columns are ``(o, w)`` pairs, ``nw`` per output row. A vector of ``vw``
consecutive columns touches at most ``ceil((vw - 1) / nw) + 1`` output rows ("pieces"); in
one piece the lanes read floats ``s`` apart (``w`` has the coefficient ``s``, the stride) and
each guard ``f >= 0`` / ``f < 0`` with ``w`` in it bounds the lanes to a range, one without
``w`` is on or off for the whole piece. So a piece is one ``llvm.masked.load`` (a
``llvm.masked.gather`` for a stride over 1; a lane range mask) whose pass-through is the
previous pieces' result, starting from zero: the Select's value, read only where the guard
holds, with no per-element index arithmetic or branch. Everything that
depends on the column only (the piece's row, its lane range inside the block, the N part of
the address and of each guard) is computed per panel, outside the K loop.

Why: the generic packer evaluates the guarded expression per element (div/mod of the column,
four compares); it was 20-28 % of ResNet's 3×3 convs (compile_bench --conv).
"""

from __future__ import annotations

import llvmlite.ir as ir

from eqsat.backends.llvm.emit import (
    I32,
    I64,
    PTR,
    Intrinsics,
    gep,
    i64,
    loop,
    smin,
    splat,
    vec,
)
from eqsat.backends.llvm.tensorize_plan import WindowB


def _smax(b: ir.IRBuilder, x, y):
    return b.select(b.icmp_signed(">", x, y), x, y)


def _floordiv(b: ir.IRBuilder, x, s: int):
    """``floor(x / s)`` for a positive constant ``s`` (``sdiv`` rounds toward zero)."""
    if s == 1:
        return x
    neg = b.icmp_signed("<", x, i64(0))
    return b.sdiv(b.select(neg, b.sub(x, i64(s - 1)), x), i64(s))


def _decompose(b: ir.IRBuilder, x, axes) -> dict[str, ir.Value]:
    """Row-major axis values of the flat index ``x`` (non-negative, constant extents)."""
    out = {}
    for name, ext in reversed(axes):
        out[name] = b.urem(x, i64(ext)) if ext > 1 else i64(0)
        x = b.udiv(x, i64(ext)) if ext > 1 else x
    return out


def _part(b: ir.IRBuilder, f: dict[str, int], env: dict[str, ir.Value], const: bool):
    """``Σ f[v] * env[v]`` over the variables of ``f`` bound in ``env`` (+ the constant)."""
    acc = i64(f.get("", 0) if const else 0)
    for v, k in f.items():
        if v and v in env and k:
            acc = b.add(acc, env[v] if k == 1 else b.mul(env[v], i64(k)))
    return acc


def emit_window_pack(b: ir.IRBuilder, wb: WindowB, src, dst, bi, o0, nrows, w0, nw, kdim, *,
                     nr: int, vw: int, kcb: int, rows_mode: bool) -> None:
    """Pack the column block ``(o0, nrows, w0, nw)`` of batch ``bi``, all of K, into ``dst``."""
    intr = Intrinsics(b.module)
    nv = nr // vw
    if rows_mode:  # whole rows: w0 = 0 and nw = W (constants divide cheaply)
        w0, nw = i64(0), i64(wb.width)
        pieces = -(-(vw - 1) // wb.width) + 1
    else:  # a piece of one row
        pieces = 1
    nc = b.mul(nrows, nw, name="nc")
    npan = b.sdiv(b.add(nc, i64(nr - 1)), i64(nr), name="npan")
    ncpad = b.mul(npan, i64(nr))
    iota = ir.Constant(ir.VectorType(I64, vw), list(range(vw)))
    lanes = ir.Constant(ir.VectorType(I64, vw), [4 * j * wb.stride for j in range(vw)])  # bytes
    zero = ir.Constant(vec(vw), [0.0] * vw)
    benv = _decompose(b, bi, wb.batch)
    forms = [wb.addr, *wb.lower, *wb.upper]
    nlow = len(wb.lower)
    with loop(b, 0, kdim, kcb, name="pc") as pc:
        kc = smin(b, i64(kcb), b.sub(kdim, pc), name="kc")
        with loop(b, 0, npan, name="p") as p:
            dst0 = gep(b, dst, b.add(b.mul(pc, ncpad), b.mul(p, b.mul(kc, i64(nr)))))
            cols = []  # per vector, per piece: (lo, hi, N part of each form)
            for v in range(nv):
                c0 = b.add(b.mul(p, i64(nr)), i64(v * vw))
                first = b.sdiv(c0, nw) if pieces > 1 else i64(0)
                per = []
                for q in range(pieces):
                    ol = b.add(first, i64(q))
                    rs = b.mul(ol, nw)
                    lo = b.sub(rs, c0)  # lanes [lo, hi) of this output row, inside the block
                    hi = smin(b, b.add(lo, nw), b.sub(nc, c0))
                    env = _decompose(b, b.add(o0, ol), wb.outer)
                    env[wb.w] = b.sub(w0, lo)  # w at lane 0
                    per.append((lo, hi, [_part(b, f, env, False) for f in forms]))
                cols.append(per)
            with loop(b, 0, kc, name="kk") as kk:
                env = dict(benv)
                env.update(_decompose(b, b.add(pc, kk), wb.k))
                kpart = [_part(b, f, env, True) for f in forms]
                dst1 = gep(b, dst0, b.mul(kk, i64(nr)))
                for v in range(nv):
                    acc = zero
                    for lo, hi, npart in cols[v]:
                        vals = [b.add(k, n) for k, n in zip(kpart, npart, strict=True)]
                        ok = ir.Constant(ir.IntType(1), 1)
                        for i, f in enumerate(forms[1:]):
                            val = vals[1 + i]
                            lower = i < nlow
                            if f.get(wb.w, 0):  # lane j has val + s*j: bound the lane range
                                # val + s*j >= 0 <=> j >= -floor(val / s); val + s*j < 0 <=>
                                # j < -floor(val / s) (for integer j)
                                edge = b.sub(i64(0), _floordiv(b, val, wb.stride))
                                if lower:
                                    lo = _smax(b, lo, edge)
                                else:
                                    hi = smin(b, hi, edge)
                            else:
                                ok = b.and_(ok, b.icmp_signed(">=" if lower else "<", val,
                                                              i64(0)))
                        hi = b.select(ok, hi, i64(-1))
                        mask = b.and_(b.icmp_signed(">=", iota, splat(b, lo, vw)),
                                      b.icmp_signed("<", iota, splat(b, hi, vw)))
                        ptr = gep(b, src, vals[0])
                        if wb.stride == 1:
                            acc = b.call(intr.masked_load(vw), [ptr, ir.Constant(I32, 4), mask,
                                                                 acc])
                        else:
                            base = splat(b, b.ptrtoint(ptr, I64), vw)
                            ptrs = b.inttoptr(b.add(base, lanes), ir.VectorType(PTR, vw))
                            acc = b.call(intr.masked_gather(vw), [ptrs, ir.Constant(I32, 4),
                                                                   mask, acc])
                    b.store(acc, gep(b, dst1, v * vw), align=4 * vw)
