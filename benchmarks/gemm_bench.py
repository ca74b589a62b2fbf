"""GEMM benchmark: eqsat's generated SGEMM (backends/llvm) against numpy's OpenBLAS.

    .venv/bin/python benchmarks/gemm_bench.py [--reps 15] [--shapes 256,512,1024,128x768x3072]
                                              [--threads 1,2] [--sweep] [--no-avx2]

Per shape (M×K×N, or n for n×n×n), interleaved in one process (A, B, A, B, …), min and median
of ``--reps`` repetitions, in GFLOP/s (2·M·N·K / s):

    eqsat packed   B packed once beforehand (the inference case: B is a constant weight)
    eqsat          B packed inside every call (generated packer + GEMM)
    eqsat avx2     the same packed kernel restricted to 8-wide vectors (6×16 tile), for the
                   AVX2-only machines CODEGEN_NOTES measured (only on an AVX-512 host)
    numpy          OpenBLAS sgemm (``np.matmul`` into a preallocated output)

at each thread count (numpy's via ``openblas_set_num_threads``; ``OPENBLAS_NUM_THREADS=1`` is
set before numpy is imported, as CODEGEN_NOTES requires). Also printed: the thread pool's
fork/join cost (an empty generated kernel through ``parallel_for`` at 2 threads vs a direct
call), and GEMM compile time cold (no cache) vs from the object cache. ``--sweep`` times
KC / MC / MR variants of the packed kernel at 512 and 1024 (how the defaults were chosen).

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when the environment sets them, slow a current numpy
(see /work/.library/env/README.md): unset both in the benchmark's command alone; the core
OpenBLAS picked is printed. The machine is shared: record ``/proc/loadavg`` beside the numbers.
"""

from __future__ import annotations

import os

os.environ["OPENBLAS_NUM_THREADS"] = "1"  # before numpy is imported

import argparse  # noqa: E402
import ctypes  # noqa: E402
import glob  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from functools import partial  # noqa: E402

import numpy as np  # noqa: E402

from eqsat.backends.llvm import jit  # noqa: E402
from eqsat.backends.llvm.capabilities import Capabilities  # noqa: E402
from eqsat.backends.llvm.gemm import Gemm, GemmConfig  # noqa: E402
from eqsat.backends.llvm.threads import ThreadPool  # noqa: E402


def openblas():
    """numpy's OpenBLAS library (for its core name and thread count), or None."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    if not libs:
        return None
    lib = ctypes.CDLL(libs[0])
    for prefix in ("scipy_openblas", "openblas"):
        for suffix in ("64_", ""):
            name = f"{prefix}_get_corename{suffix}"
            if hasattr(lib, name):
                lib.corename = getattr(lib, name)
                lib.corename.restype = ctypes.c_char_p
                lib.set_threads = getattr(lib, f"{prefix}_set_num_threads{suffix}")
                return lib
    return None


def parse_shape(s: str) -> tuple[int, int, int]:
    parts = [int(x) for x in s.split("x")]
    return (parts[0],) * 3 if len(parts) == 1 else tuple(parts)


def interleave(cands: dict, reps: int) -> dict[str, tuple[float, float]]:
    """Run the candidates round-robin; per name (min, median) seconds."""
    times: dict[str, list[float]] = {k: [] for k in cands}
    for f in cands.values():  # warm-up
        f()
    for _ in range(reps):
        for k, f in cands.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: (min(v), statistics.median(v)) for k, v in times.items()}


def bench_shapes(args, caps, blas) -> None:
    default = Gemm(GemmConfig.for_caps(caps), caps=caps, use_cache=False)
    gemms = {"eqsat": default}
    if caps.vector_width > 8 and not args.no_avx2:
        c8 = caps.with_vector_width(8)
        gemms["eqsat avx2"] = Gemm(GemmConfig.for_caps(c8, name="g8"), caps=c8, use_cache=False)
    print(f"tile {default.cfg.mr}x{default.cfg.nr} (vector {default.cfg.vw}), KC {default.cfg.kc}"
          f", MC {default.cfg.mc}; GFLOP/s min (median) of {args.reps}, interleaved\n")
    header = f"{'M×K×N':>16} {'thr':>3} " + " ".join(
        f"{k:>16}" for k in ["eqsat packed", "eqsat", *list(gemms)[1:], "numpy", "packed/numpy"])
    print(header)
    rng = np.random.default_rng(0)
    for m, k, n in map(parse_shape, args.shapes.split(",")):
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        out = np.empty((m, n), np.float32)
        packed = {name: g.pack_b(b) for name, g in gemms.items()}
        np.testing.assert_allclose(default(a, packed["eqsat"]), a @ b, rtol=1e-3, atol=1e-3)
        for t in map(int, args.threads.split(",")):
            if blas is not None:
                blas.set_threads(t)
            elif t > 1:
                continue
            cands = {
                "eqsat packed": partial(default, a, packed["eqsat"], out=out, threads=t),
                "eqsat": partial(default, a, b, out=out, threads=t),
            }
            for name, g in list(gemms.items())[1:]:
                cands[name] = partial(g, a, packed[name], out=out, threads=t)
            cands["numpy"] = partial(np.matmul, a, b, out=out)
            res = interleave(cands, args.reps)
            flop = 2.0 * m * n * k
            cells = [f"{flop / lo / 1e9:7.1f} ({flop / med / 1e9:5.1f})"
                     for lo, med in res.values()]
            ratio = res["numpy"][0] / res["eqsat packed"][0]
            print(f"{f'{m}×{k}×{n}':>16} {t:>3} " + " ".join(f"{c:>16}" for c in cells)
                  + f" {ratio:>16.2f}")
    if blas is not None:
        blas.set_threads(1)


def bench_pool(reps: int) -> None:
    empty = jit.compile_ir(
        "define void @nop(i64 %s, i64 %e) {\n  ret void\n}\n", use_cache=False
    ).function("nop", None, ctypes.c_int64, ctypes.c_int64)
    pool = ThreadPool(2)
    one = ThreadPool(1)
    res = interleave({
        "direct ctypes call": lambda: empty(0, 100),
        "pool, threads=1 (inline)": lambda: one.parallel_for(empty, (), 0, 100),
        "pool, threads=2 (fork/join)": lambda: pool.parallel_for(empty, (), 0, 100),
    }, max(reps, 200))
    print("\nthread pool, empty generated kernel: µs min (median)")
    for k, (lo, med) in res.items():
        print(f"  {k:<30} {lo * 1e6:8.1f} ({med * 1e6:6.1f})")
    pool.close()


def bench_compile(caps) -> None:
    cfg = GemmConfig.for_caps(caps, name="gcompile")
    with tempfile.TemporaryDirectory() as d:
        cold = [Gemm(cfg, caps=caps, threads=1, use_cache=False).stats for _ in range(3)]
        Gemm(cfg, caps=caps, threads=1, cache_dir=d)
        warm = [Gemm(cfg, caps=caps, threads=1, cache_dir=d).stats for _ in range(3)]
    best = min(cold, key=lambda s: s.total_s)
    print(f"\nGEMM module compile (min of 3): cold {best.total_s * 1e3:.0f} ms (parse "
          f"{best.parse_s * 1e3:.0f}, IR O1 {best.opt_s * 1e3:.0f}, codegen O3 "
          f"{best.codegen_s * 1e3:.0f}, load {best.load_s * 1e3:.1f}; {best.object_bytes} B "
          f"object); cached {min(s.total_s for s in warm) * 1e3:.1f} ms "
          f"(hit: {all(s.cache_hit for s in warm)})")


def sweep(args, caps) -> None:
    base = GemmConfig.for_caps(caps)
    mr0 = base.mr
    variants = {"default": base}
    for kc in (128, 192, 384, 512):
        variants[f"KC {kc}"] = replace(base, kc=kc)
    for mcm in (8, 12, 24, 32):
        variants[f"MC {mr0 * mcm}"] = replace(base, mc=mr0 * mcm)
    if caps.vector_width >= 16:
        for mr in (8, 10, 14):
            variants[f"MR {mr}"] = replace(base, mr=mr, mc=mr * (base.mc // mr0))
    for u in (1, 4):
        variants[f"unroll {u}"] = replace(base, unroll=u)
    gemms = {k: Gemm(replace(c, name=f"s{i}"), caps=caps, threads=1, use_cache=False)
             for i, (k, c) in enumerate(variants.items())}
    rng = np.random.default_rng(1)
    for n in (512, 1024):
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        out = np.empty((n, n), np.float32)
        packed = {k: g.pack_b(b) for k, g in gemms.items()}
        res = interleave({k: partial(g, a, packed[k], out=out, threads=1)
                          for k, g in gemms.items()}, args.reps)
        print(f"\nsweep n={n} (1 thread, packed B): GFLOP/s min (median)")
        for k, (lo, med) in res.items():
            print(f"  {k:<12} {2 * n**3 / lo / 1e9:7.1f} ({2 * n**3 / med / 1e9:5.1f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--shapes", default="256,512,1024,128x768x3072,512x3072x768")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--no-avx2", action="store_true")
    args = p.parse_args()
    caps = Capabilities.host()
    blas = openblas()
    core = blas.corename().decode() if blas is not None else "?"
    print(f"host {caps.cpu_name}, vector width {caps.vector_width}, {caps.cores} cores; "
          f"OpenBLAS core {core}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"loadavg {open('/proc/loadavg').read().split()[:3]}")
    if args.sweep:
        sweep(args, caps)
        return
    bench_shapes(args, caps, blas)
    bench_pool(args.reps)
    bench_compile(caps)


if __name__ == "__main__":
    main()
