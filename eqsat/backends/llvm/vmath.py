"""Vectorizable float32 exp, log, tanh, erf and sigmoid as straight-line LLVM IR.

Consumes: a float32 scalar ``ir.Value`` and the ``IRBuilder`` of the function being emitted
(:mod:`eqsat.backends.llvm.codegen_expr` calls :func:`emit_f32` for a ``Call`` of float32 or
float16 type).
Produces: the function's value, computed in place by arithmetic, integer bit operations,
``llvm.fmuladd`` and ``select``: no calls to libm and no branches.

Why: ``llvm.exp``/``llvm.log`` are lowered by the x86 backend to one scalar ``expf``/``logf``
call per lane, and ``tanhf``/``erff`` are opaque calls the loop vectorizer cannot widen at all,
so a Softmax row or a GELU epilogue ran one libm call per element (Softmax 0.35 ms against
onnxruntime's 0.028 ms). Written out as arithmetic, the loop vectorizer and SLP turn the same
scalar IR into ``<8 x float>`` code (AVX2, and AVX-512 CPUs LLVM tunes for 256-bit vectors,
this host's Rocket Lake among them) or ``<16 x float>``. float64 keeps the
libm calls (no kernel here is float64-bound); float16 runs in float32 (codegen_expr).

No fast-math flags: every operation rounds as IEEE says, so the error bounds below hold on any
target. The one licence taken is ``llvm.fmuladd`` (fused where the CPU has FMA, else multiply
then add) in polynomial steps and range reductions; the bounds were measured both ways
(``tests/unit/backends/test_vmath.py`` sweeps both: ``emit_f32(..., fused=False)``).
Constants in hex are the float32 bit patterns the code relies on.

Algorithms (x float32; error = |result - true value| in ulp, the float32 spacing at the true
value, 2^-149 below 2^-126). Measured max error over every 7th float32 bit pattern (6.1e8
values: both signs, subnormals to inf) plus the edge values 0, -0, ±2^-149, ±1e-30, ±1, ±10,
±88.7, ±89, ±100, ±inf, NaN, with ``llvm.fmuladd`` fused (FMA host); "mul-add" is the unfused
build over every 61st pattern (sigmoid: every 61st in both):

- ``exp``: Cody-Waite. x is clamped to [-104, 89] (below, the result rounds to 0; above, to
  inf — the clamped value still over/underflows, so no special-case select is needed, and NaN
  passes through the ordered compares). n = round(x·log2 e) by the 1.5·2^23 shifter (its low
  bits are n as an integer), r = x - n·ln2_hi - n·ln2_lo (ln2_hi has 9 significant bits, so
  n·ln2_hi is exact and the first subtraction is exact by Sterbenz), |r| ≤ 0.35;
  exp(r) = 1 + r + r²·P(r), P Cephes' degree-5 ``expf`` minimax. The result is scaled by
  2^(n>>1) then 2^(n - (n>>1)) so that both factors are normal floats: subnormal results round
  once, in the last product, and n = 128 overflows to inf as it must. Max error 1.01 ulp
  (mul-add 0.97), subnormal results included.
- ``log``: a subnormal x is first scaled by 2^23. The bits give x = 2^k·m with m in
  [sqrt(1/2), sqrt 2) (the exponent is taken after adding 1 - sqrt(1/2) to the mantissa bits),
  f = m - 1 in [-0.293, 0.415]; log x = k·ln2_hi + (f - f²/2 + f³·P(f) + k·ln2_lo), P Cephes'
  degree-8 ``logf`` polynomial. Selects: x < 0 or NaN → NaN, ±0 → -inf, +inf → +inf. Max
  error 0.81 ulp (both builds).
- ``tanh``: |x| < 0.625: x + x·x²·P(x²), Cephes' degree-4 odd polynomial (it keeps tanh x = x
  for tiny and subnormal x, and -0.0); otherwise, with e = exp(-2|x|) ≤ 0.287,
  tanh|x| = (1 - e) / (1 + e); the sign is copied from x at the end (so tanh(-0) = -0;
  |x| ≥ 9.02 gives exactly ±1). Max error 1.51 ulp (both builds).
- ``sigmoid``: e = exp(-|x|); q = num / (1 + e) with num = 1 for x ≥ 0 and e for x < 0, then
  one correction step that removes the roundings of 1 + e and of the division (1 + e = d + dl
  exactly by Fast2Sum, num - q·d exactly by the fused multiply-add; q += (num - q·d - q·dl) / d):
  what is left is exp's error. Accurate down to the subnormal results below x = -87 that the
  plain 1 / (1 + exp(-x)) flushes to 0. Max error 1.47 ulp (mul-add 1.86).
- ``erf``: |x| < 0.921875: x + x·R(x²), R a degree-5 polynomial (relative minimax of
  erf(x)/x - 1, fitted here); otherwise erf|x| = 1 - exp(Q(t)), t = min(|x|, 4), Q a degree-7
  polynomial fitted to log erfc(t) on [0.921875, 4] with weight erfc(t) (the error that reaches
  erf), sign copied from x; for |x| ≥ 3.92 the result rounds to exactly 1. Max error 1.17 ulp
  (mul-add 1.38).

Against the interpreter's numpy float32 results (numpy's own SIMD exp/log/tanh are not
correctly rounded: its log is off by up to ~3.5 ulp) the largest distances over the same sweep
are exp 3, log 4, tanh 2, erf 1, sigmoid 3 ulp. ``tests/unit/backends/test_vmath.py`` asserts
these bounds (with a little margin) on a thinner sweep.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from llvmlite import ir

F32 = ir.FloatType()
I32 = ir.IntType(32)

FUNCTIONS = ("exp", "log", "tanh", "erf", "sigmoid")

LOG2E = 1.4426950408889634
SHIFTER = 12582912.0  # 1.5 * 2^23: x + SHIFTER rounds x to an integer held in the low bits
LN2_HI = 0.693359375  # 0x3f318000: 9 significant bits, n * LN2_HI is exact for |n| < 2^15
LN2_LO = -2.12194440e-4  # ln 2 - LN2_HI
EXP_MAX, EXP_MIN = 89.0, -104.0  # exp rounds to inf above 88.73 and to 0 below -103.98
# exp(r) = 1 + r + r^2 * P(r) on |r| <= ln2/2 (Cephes expf), highest degree first
EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
         1.6666665459e-1, 5.0000001201e-1)  # fmt: skip
# log(1 + f) = f - f^2/2 + f^3 * P(f) on f in [sqrt(1/2) - 1, sqrt(2) - 1] (Cephes logf)
LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
         1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
         3.3333331174e-1)  # fmt: skip
SQRT_HALF_BITS = 0x3F3504F3
# tanh(x) = x + x^3 * P(x^2) on |x| < 0.625 (Cephes tanhf)
TANH_SMALL = 0.625
TANH_P = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1,
          -3.33332819422e-1)  # fmt: skip
# erf(x) = x + x * R(x^2) on |x| < ERF_SPLIT; erf(t) = 1 - exp(Q(t)) on [ERF_SPLIT, 4]
ERF_SPLIT = 0.921875
# (float32 coefficients, highest degree first; fitted by Lawson's weighted minimax iteration)
ERF_R = (-6.0133735e-4, 4.997997e-3, -2.6770229e-2, 1.1281927e-1, -3.7612507e-1,
         1.2837915e-1)  # fmt: skip
ERF_Q = (-2.1184098e-5, 4.354762e-4, -4.1758935e-3, 2.5131928e-2, -1.0829908e-1, -6.3333e-1,
         -1.1295232, 1.7635907e-4)  # fmt: skip
ERF_CLAMP = 4.0


def _f32(v: float) -> float:
    """``v`` rounded to float32 (what an IR float constant holds)."""
    return struct.unpack("<f", struct.pack("<f", v))[0]


def _bits(v: float) -> int:
    return struct.unpack("<I", struct.pack("<f", v))[0]


class _Emitter:
    """Straight-line float32 arithmetic on one builder (``fused``: polynomial steps as
    ``llvm.fmuladd``, else a multiply and an add)."""

    def __init__(self, b: ir.IRBuilder, fused: bool = True):
        self.b = b
        self.fused = fused
        module = b.block.function.module
        self._fmuladd = _declare(module, "llvm.fmuladd.f32", F32, [F32, F32, F32])
        self._copysign = _declare(module, "llvm.copysign.f32", F32, [F32, F32])
        self._fabs = _declare(module, "llvm.fabs.f32", F32, [F32])

    # -------------------------------------------------------------- primitives
    def k(self, v: float) -> ir.Constant:
        return ir.Constant(F32, _f32(v))

    def ki(self, v: int) -> ir.Constant:
        return ir.Constant(I32, v)

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        if self.fused:
            return self.b.call(self._fmuladd, [a, b, c])
        return self.b.fadd(self.b.fmul(a, b), c)

    def poly(self, x: ir.Value, coeffs: Sequence[float]) -> ir.Value:
        """Horner's rule, ``coeffs`` highest degree first."""
        acc = self.k(coeffs[0])
        for c in coeffs[1:]:
            acc = self.fma(acc, x, self.k(c))
        return acc

    def abs(self, x: ir.Value) -> ir.Value:
        return self.b.call(self._fabs, [x])

    def copysign(self, mag: ir.Value, sign: ir.Value) -> ir.Value:
        return self.b.call(self._copysign, [mag, sign])

    def clamp(self, x: ir.Value, lo: float, hi: float) -> ir.Value:
        """Ordered compares: NaN passes through unchanged."""
        b = self.b
        x = b.select(b.fcmp_ordered(">", x, self.k(hi)), self.k(hi), x)
        return b.select(b.fcmp_ordered("<", x, self.k(lo)), self.k(lo), x)

    def pow2(self, n: ir.Value) -> ir.Value:
        """2^n as a float for an i32 n in [-126, 127]."""
        b = self.b
        return b.bitcast(b.shl(b.add(n, self.ki(127)), self.ki(23)), F32)

    # -------------------------------------------------------------- functions
    def exp(self, x: ir.Value) -> ir.Value:
        b = self.b
        x = self.clamp(x, EXP_MIN, EXP_MAX)
        t = self.fma(x, self.k(LOG2E), self.k(SHIFTER))
        n = b.sub(b.bitcast(t, I32), self.ki(_bits(SHIFTER)))  # round(x log2 e), as i32
        nf = b.fsub(t, self.k(SHIFTER))
        r = self.fma(nf, self.k(-LN2_HI), x)
        r = self.fma(nf, self.k(-LN2_LO), r)
        p = self.fma(self.poly(r, EXP_P), b.fmul(r, r), r)
        y = b.fadd(p, self.k(1.0))
        n1 = b.ashr(n, self.ki(1))  # n in [-150, 128]: both halves are normal powers of two
        y = b.fmul(y, self.pow2(n1))
        return b.fmul(y, self.pow2(b.sub(n, n1)))

    def log(self, x: ir.Value) -> ir.Value:
        b = self.b
        subnormal = b.fcmp_ordered("<", x, self.k(2.0**-126))
        xs = b.select(subnormal, b.fmul(x, self.k(2.0**23)), x)
        bias = b.select(subnormal, self.ki(-23), self.ki(0))
        ix = b.add(b.bitcast(xs, I32), self.ki(0x3F800000 - SQRT_HALF_BITS))
        k = b.add(b.sub(b.ashr(ix, self.ki(23)), self.ki(127)), bias)
        m = b.bitcast(b.add(b.and_(ix, self.ki(0x007FFFFF)), self.ki(SQRT_HALF_BITS)), F32)
        f = b.fsub(m, self.k(1.0))
        kf = b.sitofp(k, F32)
        z = b.fmul(f, f)
        y = b.fmul(b.fmul(f, z), self.poly(f, LOG_P))
        y = self.fma(kf, self.k(LN2_LO), y)
        y = self.fma(z, self.k(-0.5), y)
        y = self.fma(kf, self.k(LN2_HI), b.fadd(f, y))
        inf = self.k(float("inf"))
        y = b.select(b.fcmp_ordered("==", x, inf), inf, y)
        y = b.select(b.fcmp_ordered("==", x, self.k(0.0)), self.k(float("-inf")), y)
        return b.select(b.fcmp_unordered("<", x, self.k(0.0)), self.k(float("nan")), y)

    def tanh(self, x: ir.Value) -> ir.Value:
        b = self.b
        a = self.abs(x)
        z = b.fmul(x, x)
        small = self.fma(b.fmul(x, z), self.poly(z, TANH_P), x)
        e = self.exp(b.fmul(a, self.k(-2.0)))
        one = self.k(1.0)
        big = b.fdiv(b.fsub(one, e), b.fadd(one, e))
        y = b.select(b.fcmp_ordered("<", a, self.k(TANH_SMALL)), small, big)
        return self.copysign(y, x)  # odd; also -0.0 for -0.0 (x + (-0 * p) would be +0)

    def sigmoid(self, x: ir.Value) -> ir.Value:
        b = self.b
        one = self.k(1.0)
        e = self.exp(b.fneg(self.abs(x)))
        num = b.select(b.fcmp_ordered("<", x, self.k(0.0)), e, one)
        d = b.fadd(one, e)
        q = b.fdiv(num, d)
        # one correction step: d + dl = 1 + e exactly (Fast2Sum, e <= 1) and r = num - q d
        # exactly (fused), so q + (r - q dl) / d leaves only the error of e
        dl = b.fsub(e, b.fsub(d, one))
        r = self.fma(b.fneg(q), d, num)
        return b.fadd(q, b.fdiv(self.fma(b.fneg(q), dl, r), d))

    def erf(self, x: ir.Value) -> ir.Value:
        b = self.b
        a = self.abs(x)
        small = self.fma(self.poly(b.fmul(x, x), ERF_R), x, x)
        t = b.select(b.fcmp_ordered(">", a, self.k(ERF_CLAMP)), self.k(ERF_CLAMP), a)
        e = self.exp(self.poly(t, ERF_Q))
        big = b.fsub(self.k(1.0), e)
        y = b.select(b.fcmp_ordered("<", a, self.k(ERF_SPLIT)), small, big)
        return self.copysign(y, x)


def _declare(module: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    fn = module.globals.get(name)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(ret, args), name)
    return fn


def emit_f32(b: ir.IRBuilder, name: str, x: ir.Value, fused: bool = True) -> ir.Value:
    """``name``(x) for a float32 ``x``, emitted at the builder's position (``name`` in
    :data:`FUNCTIONS`)."""
    if name not in FUNCTIONS:
        raise KeyError(f"no vector math for {name!r}")
    return getattr(_Emitter(b, fused), name)(x)
