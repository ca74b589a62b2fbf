"""The B packer of a guarded window read (:class:`~eqsat.backends.llvm.tensorize_plan.WindowB`):
a padded convolution's im2col, packed with masked vector loads (stride 1: one vector; stride s:
s vectors' worth, every s-th float kept by a permute).

Consumes a ``WindowB``, the plan's tile (``nr``, ``vw``, ``kc``, rows mode and the innermost N
extent) and a builder positioned in the ``pack_b`` helper's entry with its arguments; emits the
same layout as :func:`~eqsat.backends.llvm.tensorize_plan.pack_b` (slice ``pc`` at
``pc * ncpad``, panel ``p`` at ``p * kc * NR``, row ``kk`` at ``kk * NR``, columns past the
block zero).

How: the block's columns are ``(o, w)`` pairs, ``nw`` per output row. A vector of ``vw``
consecutive columns touches at most ``ceil((vw - 1) / nw) + 1`` output rows ("pieces"); in
one piece the lanes read floats ``s`` apart (``w`` has the coefficient ``s``, the stride) and
each guard ``f >= 0`` / ``f < 0`` with ``w`` in it bounds the lanes to a range, one without
``w`` is on or off for the whole piece. So a piece is one ``llvm.masked.load`` (a lane
range mask) whose pass-through is the previous pieces' result, starting from zero: the
Select's value, read only where the guard holds, with no per-element index arithmetic or
branch. Everything that
depends on the column only (the piece's row, its lane range inside the block, the N part of
the address and of each guard) is computed per panel, outside the K loop.

When the outermost K axis (a conv's input channel) is in no guard, the rows are packed by
inner K index (kernel tap) first: its lane ranges and pointers are computed once, and each
channel's row is then a pointer add and the loads (:func:`_hoisted_rows`).

Why: the generic packer evaluates the guarded expression per element (div/mod of the column,
four compares); it was 20-28 % of ResNet's 3×3 convs (compile_bench --conv). Per K row, the
guards and lane ranges were still 22 % of an Inception 3×3 conv's time (perf, 96 channels on
35×35, K = 864); per tap, 11 %, and the conv ran 133 → 151 GFLOP/s (onnxruntime: 171).

A stride ``s`` over 1 reads the ``s * vw`` floats from lane 0's to the last lane's with one
wide masked load (lanes ``[s*lo, s*(hi-1)]``: between two floats the guard allows, so inside
the buffer) and keeps every ``s``-th by a ``shufflevector``, then selects the piece's lanes:
it was a ``llvm.masked.gather`` (one load per lane). SqueezeNet's first conv (3 channels,
stride 2, K = 27), 1 thread, the two builds in one process, kernel min of 30: 0.452 → 0.415
ms (a second run 0.412 → 0.390); that conv is mostly its 3 MB output's stores, not packing.
"""

from __future__ import annotations

import llvmlite.ir as ir

from eqsat.backends.llvm.emit import (
    I32,
    I64,
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
                     nr: int, vw: int, kcb: int, rows_mode: bool, start=None,
                     ncols=None) -> None:
    """Pack the column block ``(o0, nrows, w0, nw)`` of batch ``bi``, all of K, into ``dst``.

    ``start`` / ``ncols`` (rows mode): the block is instead the ``ncols`` flat columns from
    ``o0 * W + start`` (``0 <= start < W``), which need not be whole rows — the exchanged
    A operand's row block (``tensorize._window_pack_a``: then ``nr`` is MR and ``vw`` the
    lanes of one strip's vector)."""
    intr = Intrinsics(b.module)
    nv = nr // vw
    if rows_mode:  # whole rows: w0 = 0 and nw = W (constants divide cheaply)
        w0, nw = i64(0), i64(wb.width)
        # a vector starts at a multiple of vw from a row's start: with W a multiple of vw it
        # never crosses into the next row (VGG's 64, 32 and 16 wide images)
        pieces = 1 if wb.width % vw == 0 and start is None else -(-(vw - 1) // wb.width) + 1
    else:  # a piece of one row
        pieces = 1
    nc = b.mul(nrows, nw, name="nc") if ncols is None else ncols
    npan = b.sdiv(b.add(nc, i64(nr - 1)), i64(nr), name="npan")
    ncpad = b.mul(npan, i64(nr))
    iota = ir.Constant(ir.VectorType(I64, vw), list(range(vw)))
    zero = ir.Constant(vec(vw), [0.0] * vw)
    benv = _decompose(b, bi, wb.batch)
    forms = [wb.addr, *wb.lower, *wb.upper]
    ctx = _Reads(b, intr, wb, forms, src, vw, iota, zero)
    outer, cext = wb.k[0]
    # The outermost K axis (a conv's input channel) in no guard: its rows read the same lanes
    # at an address ``coef`` apart, so lane ranges and pointers are computed once per inner K
    # index (kernel tap) and panel, then each channel is a pointer add and the loads.
    hoist = len(wb.k) > 1 and not any(f.get(outer, 0) for f in forms[1:])
    inner = 1
    for _, ext in wb.k[1:]:
        inner *= ext
    coef = wb.addr.get(outer, 0)
    with loop(b, 0, kdim, kcb, name="pc") as pc:
        kc = smin(b, i64(kcb), b.sub(kdim, pc), name="kc")
        with loop(b, 0, npan, name="p") as p:
            dst0 = gep(b, dst, b.add(b.mul(pc, ncpad), b.mul(p, b.mul(kc, i64(nr)))))
            cols = []  # per vector, per piece: (lo, hi, N part of each form)
            for v in range(nv):
                c0 = b.add(b.mul(p, i64(nr)), i64(v * vw))
                at = c0 if start is None else b.add(c0, start)  # from the row o0's start
                first = b.sdiv(at, nw) if rows_mode else i64(0)
                per = []
                for q in range(pieces):
                    ol = b.add(first, i64(q))
                    rs = b.mul(ol, nw)
                    lo = b.sub(rs, at)  # lanes [lo, hi) of this output row, inside the block
                    hi = smin(b, b.add(lo, nw), b.sub(nc, c0))
                    env = _decompose(b, b.add(o0, ol), wb.outer)
                    env[wb.w] = b.sub(w0, lo)  # w at lane 0
                    per.append((lo, hi, [_part(b, f, env, False) for f in forms]))
                cols.append(per)
            if hoist:
                _hoisted_rows(b, ctx, wb, benv, cols, pc, kc, dst0, nr, inner, cext, coef)
            else:
                with loop(b, 0, kc, name="kk") as kk:
                    env = dict(benv)
                    env.update(_decompose(b, b.add(pc, kk), wb.k))
                    reads = ctx.lane_reads([_part(b, f, env, True) for f in forms], cols)
                    ctx.store(reads, gep(b, dst0, b.mul(kk, i64(nr))), i64(0))


def _hoisted_rows(b, ctx, wb, benv, cols, pc, kc, dst0, nr, inner, cext, coef) -> None:
    """The K rows of slice ``[pc, pc + kc)`` by inner index ``r``, then channel ``c``
    (``k = c * inner + r``): lane ranges and pointers once per ``r``."""
    with loop(b, 0, inner, name="r") as r:
        env = dict(benv)
        env.update(_decompose(b, r, wb.k[1:]))  # the outer axis at 0
        reads = ctx.lane_reads([_part(b, f, env, True) for f in ctx.forms], cols)
        c_lo = _smax(b, i64(0), b.sub(i64(0), _floordiv(b, b.sub(r, pc), inner)))
        c_hi = smin(b, i64(cext), b.sub(i64(0), _floordiv(b, b.sub(b.sub(r, pc), kc), inner)))
        with loop(b, c_lo, c_hi, name="c") as c:
            kk = b.sub(b.add(b.mul(c, i64(inner)), r), pc)
            ctx.store(reads, gep(b, dst0, b.mul(kk, i64(nr))), b.mul(c, i64(coef)))


class _Reads:
    """The loads of one K row of a panel: per vector, per piece, a pointer and a lane mask."""

    def __init__(self, b, intr, wb: WindowB, forms, src, vw, iota, zero):
        self.b, self.intr, self.wb, self.forms, self.src = b, intr, wb, forms, src
        self.vw, self.iota, self.zero = vw, iota, zero
        n = vw * wb.stride
        self.iota_wide = ir.Constant(ir.VectorType(I64, n), list(range(n)))

    def lane_reads(self, kpart, cols):
        """Per vector, per piece: (pointer at lane 0, mask) for the K part ``kpart``."""
        b, wb, vw = self.b, self.wb, self.vw
        nlow = len(wb.lower)
        out = []
        for per in cols:
            reads = []
            for lo, hi, npart in per:
                vals = [b.add(k, n) for k, n in zip(kpart, npart, strict=True)]
                ok = ir.Constant(ir.IntType(1), 1)
                for i, f in enumerate(self.forms[1:]):
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
                        ok = b.and_(ok, b.icmp_signed(">=" if lower else "<", val, i64(0)))
                hi = b.select(ok, hi, i64(-1))
                mask = b.and_(b.icmp_signed(">=", self.iota, splat(b, lo, vw)),
                              b.icmp_signed("<", self.iota, splat(b, hi, vw)))
                wide = None
                if wb.stride > 1:  # floats [s*lo, s*(hi-1)]: between two read ones, in bounds
                    s, n = wb.stride, vw * wb.stride
                    wide = b.and_(
                        b.icmp_signed(">=", self.iota_wide, splat(b, b.mul(lo, i64(s)), n)),
                        b.icmp_signed("<", self.iota_wide,
                                      splat(b, b.sub(b.mul(hi, i64(s)), i64(s - 1)), n)))
                reads.append((gep(b, self.src, vals[0]), mask, wide))
            out.append(reads)
        return out

    def store(self, reads, dst, off) -> None:
        """Load each vector's pieces (pointers moved by ``off`` floats) and store it at
        ``dst``."""
        b, vw, s = self.b, self.vw, self.wb.stride
        align = ir.Constant(I32, 4)
        for v, per in enumerate(reads):
            acc = self.zero
            for ptr, mask, wide in per:
                ptr = gep(b, ptr, off)
                if s == 1:
                    acc = b.call(self.intr.masked_load(vw), [ptr, align, mask, acc])
                else:  # s * vw consecutive floats, every s-th kept (a permute, not a gather)
                    n = s * vw
                    got = b.call(self.intr.masked_load(n), [ptr, align, wide,
                                                            ir.Constant(vec(n), [0.0] * n)])
                    picked = b.shuffle_vector(got, ir.Constant(vec(n), None),
                                              ir.Constant(ir.VectorType(I32, vw),
                                                          [j * s for j in range(vw)]))
                    acc = b.select(mask, picked, acc)
            b.store(acc, gep(b, dst, v * vw), align=4 * vw)
