"""A generated SGEMM: ``C[M,N] (+)= A[M,K] @ B[K,N]`` (row-major float32) with a fused epilogue.

Consumes: a :class:`GemmConfig` (tile from ``Capabilities.gemm_tile``, cache blocking KC / MC /
NC, k-unroll, accumulate or overwrite, :class:`~eqsat.backends.llvm.microkernel.Epilogue`).
Produces: an LLVM module (:func:`build_module`, built with llvmlite's IR builder) exporting

* ``<name>_pack_b(B, ldb, K, N, Bp, p0, p1)`` — pack B's panels ``[p0, p1)`` (``pack.py``);
* ``<name>_rows(A, lda, Bp, C, ldc, M, N, K, bias, Aws, m0, m1)`` — rows ``[m0, m1)`` of C;
* ``<name>_cols(A, lda, Bp, C, ldc, M, N, K, bias, Aws, n0, n1)`` — columns ``[n0, n1)`` of C
  (``n0`` a multiple of NR);

all taking M, N, K and the leading dimensions at run time, and :class:`Gemm`, the Python driver
that compiles them (``jit.compile_ir``, object-cached), packs constant B once
(:meth:`Gemm.pack_b` — generated code, at compile time) and splits the rows (or, when M is
small, the columns) over the persistent :class:`~eqsat.backends.llvm.threads.ThreadPool`, each
thread with its own A-packing workspace. ``*_rows`` / ``*_cols`` end in ``(start, end)`` so a
later lowering can call them from its own schedule the same way.

Loop nest (GotoBLAS/BLIS, CODEGEN_NOTES "GEMM"): ``jc`` over NC columns → ``pc`` over KC → ``ic``
over MC rows (pack A) → ``jr`` over NR panels → ``ir`` over MR strips → micro-kernel. The packed
B micro-panel (KC × NR) stays in L1 across the MC/MR strips, the packed A block in L2.
KC = 256, MC = 96 are CODEGEN_NOTES' AVX2 values; the AVX-512 defaults were measured here with
``benchmarks/gemm_bench.py --sweep``. The IR pipeline runs at O1, codegen at O3 (explicit
vector IR: 80–82 GFLOP/s at any IR level, compile time 53–88 ms at O0 vs 158–310 ms at O3).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field, replace

import llvmlite.ir as ir
import numpy as np

from eqsat.backends.llvm import jit
from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.emit import I64, PTR, gep, i64, loop, smin
from eqsat.backends.llvm.microkernel import Epilogue, emit_microkernel
from eqsat.backends.llvm.pack import emit_pack_a, emit_pack_b
from eqsat.backends.llvm.threads import ThreadPool, shared_pool

ALIGN = 64  # bytes: packed buffers are aligned for the widest (zmm) vector loads


@dataclass(frozen=True)
class GemmConfig:
    mr: int = 6
    nr: int = 16
    vw: int = 8
    kc: int = 256
    mc: int = 96
    nc: int = 4096
    unroll: int = 4
    accumulate: bool = False  # C += A @ B (else C = A @ B)
    epilogue: Epilogue = field(default_factory=Epilogue)
    name: str = "gemm"

    @classmethod
    def for_caps(cls, caps: Capabilities | None = None, **overrides) -> GemmConfig:
        caps = caps or Capabilities.host()
        mr, nr = caps.gemm_tile()
        if caps.vector_width >= 16:
            base = cls(mr=mr, nr=nr, vw=caps.vector_width, kc=256, mc=mr * 16, unroll=2)
        else:
            base = cls(mr=mr, nr=nr, vw=caps.vector_width, kc=256, mc=mr * 16)
        return replace(base, **overrides)

    def __post_init__(self):
        if self.nr % self.vw or self.mc % self.mr or self.nc % self.nr:
            raise ValueError(f"inconsistent GEMM blocking {self}")


def build_module(cfg: GemmConfig, caps: Capabilities | None = None) -> ir.Module:
    caps = caps or Capabilities.host()
    module = ir.Module(name=cfg.name)
    module.triple = caps.triple
    micro = emit_microkernel(module, cfg.mr, cfg.nr, cfg.vw, cfg.unroll, cfg.epilogue,
                             name=f"{cfg.name}_micro")
    pack_a = emit_pack_a(module, cfg.mr, name=f"{cfg.name}_pack_a")
    emit_pack_b(module, cfg.nr, cfg.vw, cfg.kc, name=f"{cfg.name}_pack_b")

    names = ["A", "lda", "Bp", "C", "ldc", "M", "N", "K", "bias", "Aws"]
    types = [PTR, I64, PTR, PTR, I64, I64, I64, I64, PTR, PTR]
    block = ir.Function(module, ir.FunctionType(ir.VoidType(), types + [I64] * 4),
                        name=f"{cfg.name}_block")
    block.linkage = "internal"
    for arg, n in zip(block.args, names + ["m0", "m1", "n0", "n1"], strict=True):
        arg.name = n
    a, lda, bp, c, ldc, mdim, ndim, kdim, bias, aws, m0, m1, n0, n1 = block.args
    b = ir.IRBuilder(block.append_basic_block("entry"))
    nr = i64(cfg.nr)
    npad = b.mul(b.sdiv(b.add(ndim, i64(cfg.nr - 1)), nr), nr, name="npad")
    acc = i64(1 if cfg.accumulate else 0)
    with loop(b, n0, n1, cfg.nc, name="jc") as jc:
        jend = smin(b, b.add(jc, i64(cfg.nc)), n1, name="jend")
        with loop(b, 0, kdim, cfg.kc, name="pc") as pc:
            kc = smin(b, i64(cfg.kc), b.sub(kdim, pc), name="kc")
            load_c = b.select(b.icmp_signed(">", pc, i64(0)), i64(1), acc, name="load_c")
            last = b.zext(b.icmp_signed(">=", b.add(pc, kc), kdim), I64, name="last")
            bblk = gep(b, bp, b.mul(pc, npad), name="bblk")
            with loop(b, m0, m1, cfg.mc, name="ic") as ic:
                mc = smin(b, i64(cfg.mc), b.sub(m1, ic), name="mc")
                b.call(pack_a, [gep(b, a, b.add(b.mul(ic, lda), pc)), lda, mc, kc, aws])
                crow = gep(b, c, b.mul(ic, ldc))
                with loop(b, jc, jend, cfg.nr, name="jr") as jr:
                    nrr = smin(b, nr, b.sub(n1, jr), name="nr")
                    bpan = gep(b, bblk, b.mul(b.sdiv(jr, nr), b.mul(kc, nr)))
                    cpan = gep(b, crow, jr)
                    bcol = gep(b, bias, jr)
                    with loop(b, 0, mc, cfg.mr, name="ir") as i_r:
                        mrr = smin(b, i64(cfg.mr), b.sub(mc, i_r), name="mr")
                        b.call(micro, [kc, gep(b, aws, b.mul(i_r, kc)), bpan,
                                       gep(b, cpan, b.mul(i_r, ldc)), ldc, mrr, nrr,
                                       load_c, last, bcol])
    b.ret_void()

    for suffix, split_rows in (("rows", True), ("cols", False)):
        f = ir.Function(module, ir.FunctionType(ir.VoidType(), types + [I64, I64]),
                        name=f"{cfg.name}_{suffix}")
        for arg, n in zip(f.args, names + ["start", "end"], strict=True):
            arg.name = n
        fb = ir.IRBuilder(f.append_basic_block("entry"))
        *args, start, end = f.args
        md, nd = args[5], args[6]
        rng = [start, end, i64(0), nd] if split_rows else [i64(0), md, start, end]
        fb.call(block, [*args, *rng])
        fb.ret_void()
    return module


def aligned_empty(n: int) -> np.ndarray:
    """A float32 buffer of ``n`` elements whose data is ``ALIGN``-byte aligned."""
    raw = np.empty(n + ALIGN // 4, dtype=np.float32)
    off = (-raw.ctypes.data % ALIGN) // 4
    return raw[off:off + n]


@dataclass
class PackedB:
    """B packed into NR-column panels per KC block (see ``pack.py``), for one ``Gemm``."""

    data: np.ndarray
    k: int
    n: int


_VP, _I = ctypes.c_void_p, ctypes.c_int64


class Gemm:
    """A compiled GEMM with its driver: ``gemm(A, B or PackedB, bias=None, out=None)``."""

    def __init__(self, cfg: GemmConfig | None = None, *, caps: Capabilities | None = None,
                 threads: int | None = None, pool: ThreadPool | None = None,
                 cache_dir=None, use_cache: bool = True, opt: int = 1,
                 min_parallel_flop: float = 1e8):
        self.caps = caps or Capabilities.host()
        # Below this much work a call stays on one thread (CODEGEN_NOTES: under ~0.5-1 ms the
        # fork/join and a woken worker's cold start cost more than they save; measured here:
        # 256^3 (34 MFLOP, ~0.2 ms) ran at 129 GFLOP/s on 2 threads vs 156 on 1).
        self.min_parallel_flop = min_parallel_flop
        self.cfg = cfg or GemmConfig.for_caps(self.caps)
        self.threads = threads or self.caps.cores
        self.pool = pool if pool is not None or self.threads == 1 else shared_pool(self.threads)
        mod = build_module(self.cfg, self.caps)
        self.compiled = jit.compile_ir(mod, opt=opt, caps=self.caps, cache_dir=cache_dir,
                                       use_cache=use_cache)
        n = self.cfg.name
        self._pack_b = self.compiled.function(f"{n}_pack_b", None, _VP, _I, _I, _I, _VP, _I, _I)
        kargs = [_VP, _I, _VP, _VP, _I, _I, _I, _I, _VP, _VP, _I, _I]
        self._rows = self.compiled.function(f"{n}_rows", None, *kargs)
        self._cols = self.compiled.function(f"{n}_cols", None, *kargs)
        self._aws: list[np.ndarray] = []

    @property
    def stats(self) -> jit.CompileStats:
        return self.compiled.stats

    def _run(self, fn, args, start, end, grain, threads):
        if self.pool is None or threads == 1:
            fn(*args, start, end)
        else:
            self.pool.parallel_for(fn, args, start, end, grain, threads=threads)

    def pack_b(self, bmat: np.ndarray, threads: int | None = None) -> PackedB:
        """Pack ``bmat`` (K × N, float32, unit column stride) with the generated packer."""
        bmat = np.asarray(bmat, dtype=np.float32)
        if bmat.ndim != 2 or bmat.strides[1] != 4:
            bmat = np.ascontiguousarray(bmat)
        k, n = bmat.shape
        panels = -(-n // self.cfg.nr)
        data = aligned_empty(max(1, k * panels * self.cfg.nr))
        args = (bmat.ctypes.data, bmat.strides[0] // 4, k, n, data.ctypes.data)
        self._run(self._pack_b, args, 0, panels, 1, threads or self.threads)
        return PackedB(data, k, n)

    def _workspaces(self, count: int) -> list[np.ndarray]:
        while len(self._aws) < count:
            self._aws.append(aligned_empty(self.cfg.mc * self.cfg.kc))
        return self._aws[:count]

    def __call__(self, a: np.ndarray, b: np.ndarray | PackedB, bias: np.ndarray | None = None,
                 out: np.ndarray | None = None, threads: int | None = None) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        if a.ndim != 2 or a.strides[1] != 4:
            a = np.ascontiguousarray(a)
        threads = min(threads or self.threads, self.threads)
        packed = b if isinstance(b, PackedB) else self.pack_b(
            b, threads if 2.0 * a.shape[0] * np.size(b) >= self.min_parallel_flop else 1)
        m, k = a.shape
        if k != packed.k:
            raise ValueError(f"inner dimensions differ: A {a.shape}, B {packed.k}×{packed.n}")
        n = packed.n
        if out is None:
            out = (np.zeros if self.cfg.accumulate else np.empty)((m, n), np.float32)
        if out.shape != (m, n) or out.dtype != np.float32 or (out.size and out.strides[1] != 4):
            raise ValueError("out must be a float32 (M, N) array with unit column stride")
        if self.cfg.epilogue.bias:
            if bias is None or np.asarray(bias).shape != (n,):
                raise ValueError(f"this GEMM fuses a bias: pass a length-{n} vector")
            bias = np.ascontiguousarray(bias, dtype=np.float32)
        if m == 0 or n == 0:
            return out
        if k == 0:
            raise ValueError("K = 0 is not supported")
        grains_m = -(-m // self.cfg.mr)
        by_rows = grains_m >= 2 * threads or grains_m >= -(-n // self.cfg.nr)
        fn, extent, grain = (self._rows, m, self.cfg.mr) if by_rows else (self._cols, n,
                                                                           self.cfg.nr)
        base = (a.ctypes.data, a.strides[0] // 4, packed.data.ctypes.data, out.ctypes.data,
                out.strides[0] // 4, m, n, k, 0 if bias is None else bias.ctypes.data)
        if 2.0 * m * n * k < self.min_parallel_flop:
            threads = 1
        if threads == 1 or self.pool is None:
            fn(*base, self._workspaces(1)[0].ctypes.data, 0, extent)
        else:
            ws = [w.ctypes.data for w in self._workspaces(threads)]
            self.pool.parallel_for(fn, base, 0, extent, grain, threads=threads,
                                   thread_args=[(w,) for w in ws])
        return out
