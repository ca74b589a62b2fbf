"""The int8 GEMM on VNNI dot products: ``C[M,N] int32 = (A - za) @ (B - zb)`` via ``vpdpbusd``.

Consumes: a VNNI row of :data:`~eqsat.backends.llvm.tensorize_targets.TARGETS` (its lanes and
its MR × NR tile), a constant B (K × N, int8 or uint8) and, per call, A (M × K, uint8 or int8)
with ONNX MatMulInteger's zero points (scalars, A's per row, B's per column).
Produces: the micro-kernel (:func:`emit_vnni_microkernel`), the module around it
(:func:`build_module`: the exported ``<name>(A, lda, Bp, C, ldc, Mp, Np, KG)`` runs every NR
panel × MR strip) and :class:`Int8Gemm`, the Python driver.

The instruction: ``vpdpbusd acc, a, b`` adds, per 32-bit lane, the four products of the
lane's unsigned bytes of ``a`` with the signed bytes of ``b`` to ``acc`` (no saturation: the
non-``s`` form wraps, and four u8 × s8 products never overflow an int32). So k is consumed in
groups of 4 (``k_group``): B is packed per NR-column panel as ``[K/4][NR][4]`` bytes (one
vector = ``lanes`` columns × 4 k), and A needs no packing: row ``r``'s group ``g`` is the
little-endian int32 at ``A + r*lda + 4g``, broadcast to every lane. The LLVM intrinsic is
``llvm.x86.avx512.vpdpbusd.{512,256}`` (AVX-512 VNNI; with AVX-VNNI the 256-bit form is
the VEX encoding of the same instruction); tests check the assembly contains ``vpdpbusd``.

Signedness (ONNX allows int8 or uint8 for both operands): the instruction wants u8 × s8, so
an int8 A is shifted by +128 (``a ^ 0x80``) and a uint8 B by -128, and the shifts join the zero
points in one compensation, exactly:
``(A_u - α)(B_s - β) = A_u·B_s - α·colsum(B_s) - rowsum(A_u)·β + K·α·β`` with
``α = za + 128·[A int8]`` and ``β = zb - 128·[B uint8]``, i.e. the two rank-1 terms
``-α ⊗ colsum(B_s)`` and ``-(rowsum(A_u) - K·α) ⊗ β``, which the micro-kernel adds in its store
(int32 arithmetic wraps mod 2³², which is what the op table's reference gets by wrapping its
int64 result). B's column sums are computed once with its packing; A's row sums per call (only
when B has a zero point).

Edges: M and N are padded to the tile (rows of zeros, zero columns), K to a multiple of 4 (zero
bytes add nothing); the padded C is sliced. The whole K is one block: a KC × NR panel of B
(K bytes × NR) stays in L1 for K up to ~1500 at NR = 32.
"""

from __future__ import annotations

import ctypes

import llvmlite.ir as ir
import numpy as np

from eqsat.backends.llvm import jit
from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.emit import I32, I64, PTR, i64, loop, splat
from eqsat.backends.llvm.tensorize_targets import Target, select

I8 = ir.IntType(8)


def _bgep(b: ir.IRBuilder, base, index) -> ir.Value:
    """``base + index`` bytes."""
    index = index if isinstance(index, ir.Value) else i64(index)
    return b.gep(base, [index], source_etype=I8)


def _dot(module: ir.Module, lanes: int) -> ir.Function:
    name = f"llvm.x86.avx512.vpdpbusd.{lanes * 32}"
    if name in module.globals:
        return module.globals[name]
    vi, vb = ir.VectorType(I32, lanes), ir.VectorType(I8, 4 * lanes)
    return ir.Function(module, ir.FunctionType(vi, [vi, vb, vb]), name=name)


def emit_vnni_microkernel(module: ir.Module, mr: int, nr: int, lanes: int,
                          name: str = "vnni_micro") -> ir.Function:
    """``micro(kg, A, lda, Bp, C, ldc, u1, u2, v1, v2)``: the full MR × NR int32 tile
    ``C[r, j] = sum_k A[r, k] * B[k, j] + u1[r]·v1[j] + u2[r]·v2[j]`` over ``kg`` groups of 4
    k (A u8 rows ``lda`` bytes apart, Bp one packed panel, C int32 rows ``ldc`` elements apart,
    overwritten; u* int32 per row of the tile, v* int32 per column: the two rank-1
    zero-point / sign compensation terms, wrapping as int32 arithmetic does)."""
    assert nr % lanes == 0
    nv = nr // lanes
    vi, vb = ir.VectorType(I32, lanes), ir.VectorType(I8, 4 * lanes)
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [I64, PTR, I64, PTR, PTR, I64]
                                             + [PTR] * 4), name=name)
    fn.linkage = "internal"
    kg, a, lda, bp, c, ldc, u1, u2, v1, v2 = fn.args
    for arg, n in zip(fn.args, ["kg", "A", "lda", "Bp", "C", "ldc", "u1", "u2", "v1", "v2"],
                      strict=True):
        arg.name = n
    for p in (a, bp, c):
        p.add_attribute("noalias")
    dot = _dot(module, lanes)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    rows = [_bgep(b, a, b.mul(i64(r), lda)) for r in range(mr)]
    pre = b.block
    head, body, done = (fn.append_basic_block(x) for x in ("k.head", "k.body", "k.done"))
    b.branch(head)
    b.position_at_end(head)
    g = b.phi(I64, "g")
    pb = b.phi(PTR, "pb")
    accs = [b.phi(vi, f"acc{r}_{v}") for r in range(mr) for v in range(nv)]
    g.add_incoming(i64(0), pre)
    pb.add_incoming(bp, pre)
    for acc in accs:
        acc.add_incoming(ir.Constant(vi, [0] * lanes), pre)
    b.cbranch(b.icmp_signed("<", g, kg), body, done)
    b.position_at_end(body)
    bv = [b.load(_bgep(b, pb, v * 4 * lanes), typ=vb, align=64) for v in range(nv)]
    off = b.mul(g, i64(4))
    cur = list(accs)
    for r in range(mr):
        word = b.load(_bgep(b, rows[r], off), typ=I32, align=1)
        av = b.bitcast(splat(b, word, lanes), vb)
        for v in range(nv):
            cur[r * nv + v] = b.call(dot, [cur[r * nv + v], av, bv[v]])
    g.add_incoming(b.add(g, i64(1)), b.block)
    pb.add_incoming(_bgep(b, pb, 4 * nr), b.block)
    for phi, val in zip(accs, cur, strict=True):
        phi.add_incoming(val, b.block)
    b.branch(head)
    b.position_at_end(done)
    col = [[b.load(b.gep(p, [i64(v * lanes)], source_etype=I32), typ=vi, align=4)
            for v in range(nv)] for p in (v1, v2)]
    for r in range(mr):
        row = b.gep(c, [b.mul(i64(r), ldc)], source_etype=I32)
        ur = [splat(b, b.load(b.gep(p, [i64(r)], source_etype=I32), typ=I32), lanes)
              for p in (u1, u2)]
        for v in range(nv):
            x = b.add(accs[r * nv + v], b.mul(ur[0], col[0][v]))
            x = b.add(x, b.mul(ur[1], col[1][v]))
            b.store(x, b.gep(row, [i64(v * lanes)], source_etype=I32), align=4)
    b.ret_void()
    return fn


def build_module(target: Target, caps: Capabilities, name: str = "igemm") -> ir.Module:
    """``name(A, lda, Bp, C, ldc, Mp, Np, KG, u1, u2, v1, v2)``: C (Mp × Np int32, both
    multiples of the tile) from A (Mp rows of ``lda`` bytes, 4·KG used) and B packed in panels
    (``pack_b``), plus the rank-1 terms ``u1 v1ᵀ + u2 v2ᵀ`` (u*: Mp int32, v*: Np int32)."""
    module = ir.Module(name=name)
    module.triple = caps.triple
    emit_gemm_loops(module, target, name)
    return module


def emit_gemm_loops(module: ir.Module, target: Target, name: str,
                    internal: bool = False) -> ir.Function:
    """The function of :func:`build_module` (and its micro-kernel) in ``module``."""
    if target.emitter != "vnni":
        raise ValueError(f"{target.name} is not an int8 dot-product target")
    mr, nr = target.tile
    micro = emit_vnni_microkernel(module, mr, nr, target.lanes, name=f"{name}_micro")
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), [PTR, I64, PTR, PTR, I64, I64, I64,
                                                               I64] + [PTR] * 4), name=name)
    if internal:
        fn.linkage = "internal"
    a, lda, bp, c, ldc, mp, np_, kg, u1, u2, v1, v2 = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def i32at(p, i):
        return b.gep(p, [i], source_etype=I32)

    with loop(b, 0, np_, nr, name="jr") as jr:
        panel = _bgep(b, bp, b.mul(jr, b.mul(kg, i64(4))))
        with loop(b, 0, mp, mr, name="ir") as ir_:
            pa = _bgep(b, a, b.mul(ir_, lda))
            pc = b.gep(c, [b.add(b.mul(ir_, ldc), jr)], source_etype=I32)
            b.call(micro, [kg, pa, lda, panel, pc, ldc, i32at(u1, ir_), i32at(u2, ir_),
                           i32at(v1, jr), i32at(v2, jr)])
    b.ret_void()
    return fn


def _up(n: int, m: int) -> int:
    return -(-n // m) * m


def pack_b(bmat: np.ndarray, nr: int) -> np.ndarray:
    """B (K × N int8) as NR-column panels of ``[K/4][NR][4]`` bytes (zero-padded)."""
    k, n = bmat.shape
    kp, np_ = _up(k, 4), _up(n, nr)
    padded = np.zeros((kp, np_), np.int8)
    padded[:k, :n] = bmat
    # (kp/4, 4, np_/nr, nr) -> (np_/nr, kp/4, nr, 4)
    p = padded.reshape(kp // 4, 4, np_ // nr, nr).transpose(2, 0, 3, 1)
    out = np.empty(p.size + 64, np.int8)  # 64-byte aligned for the vector loads
    off = -out.ctypes.data % 64
    out = out[off:off + p.size]
    out[:] = p.reshape(-1)
    return out


_VP, _I = ctypes.c_void_p, ctypes.c_int64


class Int8Gemm:
    """``gemm(a, a_zero_point=0)``: ONNX MatMulInteger ``(a - za) @ (b - zb)`` in int32, with B
    (and its zero point) fixed at construction and packed once."""

    def __init__(self, b: np.ndarray, b_zero_point=0, *, target: Target | None = None,
                 caps: Capabilities | None = None, cache_dir=None, use_cache: bool = True):
        self.caps = caps or Capabilities.host()
        self.target = target or select(self.caps, ("uint8", "int8"))
        if self.target is None or not self.target.runs_on(self.caps):
            raise ValueError("this host has no VNNI target")
        b = np.asarray(b)
        if b.dtype not in (np.int8, np.uint8) or b.ndim != 2:
            raise ValueError(f"B must be a 2-D int8/uint8 matrix, got {b.dtype}{list(b.shape)}")
        self.k, self.n = b.shape
        self.mr, self.nr = self.target.tile
        shift = 128 if b.dtype == np.uint8 else 0
        bs = (b.astype(np.int16) - shift).astype(np.int8)
        self.bp = pack_b(bs, self.nr)
        self.beta = np.broadcast_to(
            np.asarray(b_zero_point, np.int64).reshape(-1) - shift, (self.n,))  # per column
        np_ = _up(self.n, self.nr)
        self.v1 = np.zeros(np_, np.int32)  # column sums of the shifted B
        self.v1[:self.n] = bs.astype(np.int64).sum(axis=0).astype(np.int32)
        self.v2 = np.zeros(np_, np.int32)
        self.v2[:self.n] = self.beta.astype(np.int32)
        mod = build_module(self.target, self.caps)
        self.compiled = jit.compile_ir(mod, opt=1, caps=self.caps, cache_dir=cache_dir,
                                       use_cache=use_cache)
        self._fn = self.compiled.function("igemm", None, _VP, _I, _VP, _VP, _I, _I, _I, _I,
                                            *[_VP] * 4)

    def raw(self, au: np.ndarray, u1=None, u2=None) -> np.ndarray:
        """``au @ b_shifted + u1 v1ᵀ + u2 βᵀ`` for a uint8 A (M × K), int32 (wrapping), with
        ``v1`` B's column sums; u1, u2 (int32 per row) default to 0: the plain product."""
        m = au.shape[0]
        mp, np_, kp = _up(m, self.mr), _up(self.n, self.nr), _up(self.k, 4)
        if (mp, kp) != au.shape or not au.flags.c_contiguous:
            padded = np.zeros((mp, kp), np.uint8)
            padded[:m, :self.k] = au
            au = padded
        us = []
        for u in (u1, u2):
            full = np.zeros(mp, np.int32)
            if u is not None:
                full[:m] = u
            us.append(full)
        c = np.empty((mp, np_), np.int32)
        self._fn(au.ctypes.data, kp, self.bp.ctypes.data, c.ctypes.data, np_, mp, np_, kp // 4,
                 us[0].ctypes.data, us[1].ctypes.data, self.v1.ctypes.data, self.v2.ctypes.data)
        return c if (mp, np_) == (m, self.n) else c[:m, :self.n]

    def __call__(self, a: np.ndarray, a_zero_point=0) -> np.ndarray:
        a = np.asarray(a)
        if a.ndim != 2 or a.shape[1] != self.k or a.dtype not in (np.int8, np.uint8):
            raise ValueError(f"A must be int8/uint8 M × {self.k}, got {a.dtype}{list(a.shape)}")
        shift = 128 if a.dtype == np.int8 else 0
        au = a.view(np.uint8) ^ np.uint8(0x80) if shift else a
        m = a.shape[0]
        alpha = np.broadcast_to(np.asarray(a_zero_point, np.int64).reshape(-1) + shift, (m,))
        u1 = (-alpha).astype(np.int32)  # times the column sums of B
        u2 = None
        if self.beta.any():  # times beta: -(rowsum(A) - K·alpha)
            rowsum = au.sum(axis=1, dtype=np.int64)
            u2 = (self.k * alpha - rowsum).astype(np.int32)
        return self.raw(au, u1 if alpha.any() else None, u2)
