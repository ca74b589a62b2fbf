"""Direct convolution: recognize a contraction that is a plain 2-D Conv over an NCHW input.

Consumes a :class:`~eqsat.lower.contraction.Contraction` (a Conv kernel as
:func:`~eqsat.lower.contraction.match_contraction` reads it: M = the output channel, N = batch,
output row, output column, K = input channel, kernel row, kernel column); produces a
:class:`DirectConv` (or None): the input and weight buffers, the sizes, and the stride, the
top/left padding and the dilation per spatial axis, read off the input's affine index
``oh * stride - pad + kh * dilation``. The LLVM backend compiles a kernel annotated
``tensorize=nchwc`` from it (:mod:`eqsat.backends.llvm.direct_conv`: weights packed once into
``[OC/16][IC/16][KH][KW][16ic][16oc]``, the input transformed into a zero-padded NCHW16c copy,
a register tile of output columns × output-channel blocks).

What is accepted: groups = 1, constant shapes, float32, the weight a model weight read as
``w[oc, ic, kh, kw]``, the input read directly (no view in between) as
``x[n, ic, ih, iw]``, under guards that are only the bounds of ``ih`` / ``iw`` (the padded
copy's zeros stand for them). Anything else (grouped / depthwise convs, a concatenated input
as SqueezeNet's fire modules feed their 1×1 squeeze convs) stays on the implicit GEMM.
"""

from __future__ import annotations

from dataclasses import dataclass

from eqsat.lower.analysis import affine
from eqsat.lower.contraction import Contraction
from eqsat.lower.loops import (
    BinaryOp,
    BinOp,
    Buffer,
    BufferKind,
    Cmp,
    CmpOp,
    Const,
    Expr,
    Load,
    Select,
    Var,
)

MIN_CHANNELS = 16  # prefer_direct(): input and output channels, at least


def prefer_direct(d: DirectConv) -> bool:
    """The default schedule's choice: the direct path for a conv with a window (not 1×1) and at
    least ``MIN_CHANNELS`` input and output channels (a whole 16-channel block on AVX-512); the
    implicit GEMM otherwise.

    Measured (``benchmarks/conv_direct_bench.py --models squeezenet,vgg --threads 1,2``, Conv +
    bias + Relu alone, GFLOP/s min of 15 interleaved rounds, AVX-512 host, 2 cores, quiet:
    loadavg 0.4-0.6, at 00e6ec9, after the transposing epilogue of
    :mod:`eqsat.backends.llvm.direct_conv`; direct / implicit GEMM, 1 thread then 2 threads):
    3×3 pad 1 64×56×56→64 1.10 / 1.08, 128×28→128 1.25 / 1.26, 256×14→256 1.07 / 1.11,
    512×7→512 0.89 / 1.07, 64×64→64 1.05 / 1.33, 64×32→128 1.08 / 1.26, 128×32→128
    1.15 / 1.13, 128×16→256 1.03 / 1.23, 256×16→256 1.07 / 1.15; SqueezeNet's 3×3 expand
    convs 16×55→64 1.14 / 1.38 and 32×27→128 1.08 / 1.18. Only 512×7→512 at 1 thread loses,
    and it still takes the direct path (one rule, no per-shape table: the auto-scheduler
    chooses per kernel). Not taken: 3 input channels (the stems: 13 of 16 block lanes are
    zero) 0.28-0.57; 1×1 convs (a plain GEMM, no window to reuse) 0.68-1.18, mostly below 1.
    (An earlier table here, taken at loadavg 9-10 before that epilogue, claimed 1.13-1.14 for
    VGG's 32-wide shapes 64→128 and 128→128; alone they then measured 0.75 and 0.92.)"""
    return d.kh * d.kw > 1 and min(d.ic, d.oc) >= MIN_CHANNELS


@dataclass(frozen=True)
class DirectConv:
    c: Contraction
    x: Buffer  # [N, C, H, W]
    w: Buffer  # [OC, C, KH, KW]
    n: int
    ic: int
    h: int
    wd: int
    oc: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    pad: tuple[int, int]  # top, left (the bottom/right ones follow from the output size)
    dilation: tuple[int, int]
    names: tuple[str, str, str, str]  # the axis variables of (n, oc, oh, ow)

    @property
    def flops(self) -> int:
        return 2 * self.n * self.oc * self.oh * self.ow * self.ic * self.kh * self.kw

    def padded_hw(self) -> tuple[int, int]:
        """Rows and columns of the zero-padded input copy: exactly what the output reads
        (``(OH - 1) * s + (KH - 1) * d + 1``), starting at ``-pad``."""
        return tuple((o - 1) * s + (k - 1) * d + 1 for o, s, k, d in zip(
            (self.oh, self.ow), self.stride, (self.kh, self.kw), self.dilation, strict=True))


def _const(e: Expr) -> int | None:
    return e.value if isinstance(e, Const) and isinstance(e.value, int) else None


def _guards(cond: Expr) -> list[Expr]:
    if isinstance(cond, BinOp) and cond.op is BinaryOp.AND:
        return _guards(cond.a) + _guards(cond.b)
    return [cond]


def _strip(b: Expr) -> tuple[list[Expr], Expr]:
    """``select(g1, select(g2, load, 0), 0)`` -> ([g1, g2], load)."""
    conds = []
    while isinstance(b, Select) and _const_f(b.b) == 0.0:
        conds += _guards(b.cond)
        b = b.a
    return conds, b


def _const_f(e: Expr):
    return e.value if isinstance(e, Const) else None


def match_direct_conv(c: Contraction) -> DirectConv | None:
    """The direct-convolution view of ``c``, or None (see the module docstring)."""
    if c.batch or len(c.m) != 1 or len(c.n) != 3 or len(c.k) != 3:
        return None
    if any(v != Var(k) for k, v in c.define):
        return None  # a split (grouped) axis
    exts = [_const(e) for _, e in c.m + c.n + c.k]
    if None in exts or c.out.dtype != "float32":
        return None
    (ocv, oc), = ((v, _const(e)) for v, e in c.m)
    rcv, r0v, r1v = (v for v, _ in c.k)
    a = c.a
    if not (isinstance(a, Load) and a.buffer.kind is BufferKind.WEIGHT
            and a.index == (Var(ocv), Var(rcv), Var(r0v), Var(r1v))
            and a.buffer.dtype == "float32"):
        return None
    conds, x = _strip(c.b)
    if not (isinstance(x, Load) and len(x.index) == 4 and x.buffer.dtype == "float32"
            and all(isinstance(d, int) for d in x.buffer.shape)):
        return None
    nidx, cidx, hidx, widx = x.index
    nvars = [v for v, _ in c.n]
    if cidx != Var(rcv) or not isinstance(nidx, Var) or nidx.name not in nvars:
        return None
    spatial = []
    for idx, kv in ((hidx, r0v), (widx, r1v)):
        rest = [v for v in nvars if v != nidx.name]
        form = affine(idx, set(rest) | {kv})
        if form is None or _const(form[1]) is None:
            return None
        coeffs, off = form
        outs = [v for v in coeffs if v != kv]
        if len(outs) != 1 or coeffs.get(kv, 0) < 1 or coeffs[outs[0]] < 1:
            return None
        spatial.append((outs[0], coeffs[outs[0]], -_const(off), coeffs[kv]))
    (ohv, sh, ph, dh), (owv, sw, pw, dw) = spatial
    if ohv == owv or [nidx.name, ohv, owv] != nvars:
        return None  # the output's N axes in (n, oh, ow) order: the epilogue writes rows of ow
    n, ic, h, wd = x.buffer.shape
    ext = dict(c.m + c.n + c.k)
    kh, kw = _const(ext[r0v]), _const(ext[r1v])
    if a.buffer.shape != (oc, ic, kh, kw) or _const(ext[rcv]) != ic or _const(ext[nidx.name]) != n:
        return None
    bounds = {(CmpOp.GE, hidx, 0), (CmpOp.LT, hidx, h), (CmpOp.GE, widx, 0), (CmpOp.LT, widx, wd)}
    for g in conds:
        if not (isinstance(g, Cmp) and (g.op, g.a, _const(g.b)) in bounds):
            return None  # a guard the zero padding does not stand for
    return DirectConv(c, x.buffer, a.buffer, n, ic, h, wd, oc, kh, kw, _const(ext[ohv]),
                      _const(ext[owv]), (sh, sw), (ph, pw), (dh, dw), (nidx.name, ocv, ohv, owv))
