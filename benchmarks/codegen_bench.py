"""The LLVM code generator, measured: a fused element-wise chain, a row reduction, compile time.

    python benchmarks/codegen_bench.py [--n 16777216] [--rounds 15]

1. ``y = relu(a * x + b)`` over n float32 (a, x, b, y arrays: 16 bytes moved per element) in
   GB/s: eqsat's kernel as a plain loop (O3 vectorizes it by itself), the loop marked VECTORIZED
   (loop metadata, what codegen emits), a hand-written explicit ``<8 x float>`` kernel (to decide
   between the two), the same split over 2 threads (PARALLEL), and numpy's three unfused ops
   (allocating, and with ``out=`` into preallocated arrays).
2. ``r[i] = sum_j x[i, j]`` over a 4096 × 4096 float32 matrix, in GB/s, vs ``np.sum(axis=-1)``.
3. Transcendentals: ``y = f(x)`` for exp, log, tanh, erf, sigmoid over ``--n / 16`` float32
   (the loop VECTORIZED, as the default schedule marks it) in ns per element against numpy /
   scipy, and Softmax rows (64 × 1000 and 1024 × 64, the default schedule) against numpy's.
4. Compile time (emit + O3 + machine code) per kernel.

``--sections 3`` runs the transcendentals alone (1, 2 and 4 run together).

Timing (CODEGEN_NOTES): candidates interleaved round by round in one process; min and median of
``--rounds``; thread time beside wall time for the one-thread runs (a gap means preemption).
Outputs are preallocated and touched once before timing, so page faults are not measured.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from llvmlite import ir

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eqsat.backends.llvm.jit import compile_ir  # noqa: E402
from eqsat.backends.llvm.runtime import compile  # noqa: E402
from eqsat.lower.loops import (  # noqa: E402
    Accumulate,
    Buffer,
    BufferKind,
    Const,
    Kernel,
    LoopProgram,
    Store,
    Var,
    call,
    loop,
    maximum,
    seq,
)
from eqsat.lower.schedule import Parallel, Split, Vectorize, apply  # noqa: E402

UNARY = ("exp", "log", "tanh", "erf", "sigmoid")

IN, OUT = BufferKind.INPUT, BufferKind.OUTPUT
i, j = Var("i"), Var("j")


def fma_relu(n: int) -> LoopProgram:
    A, X, B = (Buffer(s, (n,), "float32", IN) for s in "AXB")
    Y = Buffer("Y", (n,), "float32", OUT)
    body = loop("i", n, Store(Y, (i,), maximum(A[i] * X[i] + B[i], Const(0.0, "float32"))))
    return LoopProgram("fma_relu", (A, X, B, Y), (Kernel("fma_relu", (A, X, B, Y), body),))


def row_sum(m: int, n: int) -> LoopProgram:
    X, R = Buffer("X", (m, n), "float32", IN), Buffer("R", (m,), "float32", OUT)
    body = loop(
        "i",
        m,
        seq(Store(R, (i,), Const(0.0, "float32")), loop("j", n, Accumulate(R, (i,), X[i, j]))),
    )
    return LoopProgram("row_sum", (X, R), (Kernel("row_sum", (X, R), body),))


def unary(name: str, n: int) -> LoopProgram:
    X, Y = Buffer("X", (n,), "float32", IN), Buffer("Y", (n,), "float32", OUT)
    body = loop("i", n, Store(Y, (i,), call(name, X[i])))
    return LoopProgram(name, (X, Y), (Kernel(name, (X, Y), body),))


def numpy_unary(name: str):
    import scipy.special  # noqa: PLC0415

    return {
        "exp": lambda x, y: np.exp(x, out=y),
        "log": lambda x, y: np.log(x, out=y),
        "tanh": lambda x, y: np.tanh(x, out=y),
        "erf": lambda x, y: scipy.special.erf(x, out=y),
        "sigmoid": lambda x, y: scipy.special.expit(x, out=y),
    }[name]


def default_scheduled(p: LoopProgram) -> LoopProgram:
    from eqsat.backends.llvm.capabilities import Capabilities  # noqa: PLC0415
    from eqsat.compiled import target_caps  # noqa: PLC0415
    from eqsat.lower.default_schedule import schedule_program  # noqa: PLC0415

    return schedule_program(p, target_caps(Capabilities.host(), 1))


def transcendentals(n: int, rounds: int) -> None:
    from tests.unit.lower.programs import softmax  # noqa: PLC0415

    rng = np.random.default_rng(1)
    x = (rng.standard_normal(n) * 3).astype(np.float32)
    xpos = np.abs(x) + np.float32(1e-3)
    y = np.empty(n, np.float32)
    cases, checks = {}, []
    for name in UNARY:
        xin = xpos if name == "log" else x
        c = compile(default_scheduled(unary(name, n)), threads=1)
        arrays, dims = c.bind({"X": xin})
        cases[f"eqsat {name}"] = lambda c=c, arrays=arrays, dims=dims: c.call(arrays, dims)
        ref = numpy_unary(name)
        cases[f"numpy {name}"] = lambda ref=ref, xin=xin: ref(xin, y)
        checks.append((name, c, xin, ref))
    res = measure(cases, rounds)
    for _, c, xin, ref in checks:
        want = np.empty_like(xin)
        ref(xin, want)
        np.testing.assert_allclose(c.run({"X": xin})["Y"], want, rtol=1e-5, atol=1e-6)
    print(f"\ny = f(x), n = {n} float32, 1 thread")
    print(f"  {'case':<34}{'min ms':>9}{'med ms':>9}{'ns/elem':>9}")
    for name, (wall, _) in res.items():
        lo = min(wall)
        print(f"  {name:<34}{lo * 1e3:9.3f}{statistics.median(wall) * 1e3:9.3f}{lo / n * 1e9:9.3f}")

    cases, checks = {}, []
    for m, k in ((64, 1000), (1024, 64)):
        xs = rng.standard_normal((m, k)).astype(np.float32)
        c = compile(default_scheduled(softmax(m, k)), threads=1)
        arrays, dims = c.bind({"X": xs})
        cases[f"eqsat softmax {m}x{k}"] = lambda c=c, arrays=arrays, dims=dims: c.call(arrays, dims)
        out = np.empty_like(xs)

        def np_softmax(xs=xs, out=out):
            np.subtract(xs, xs.max(-1, keepdims=True), out=out)
            np.exp(out, out=out)
            out /= out.sum(-1, keepdims=True)

        cases[f"numpy softmax {m}x{k}"] = np_softmax
        checks.append((c, xs))
    res = measure(cases, rounds)
    for c, xs in checks:
        e = np.exp(xs - xs.max(-1, keepdims=True))
        np.testing.assert_allclose(c.run({"X": xs})["Y"], e / e.sum(-1, keepdims=True), 1e-5)
    print("\nsoftmax over the last axis, 1 thread")
    print(f"  {'case':<34}{'min ms':>9}{'med ms':>9}")
    for name, (wall, _) in res.items():
        print(f"  {name:<34}{min(wall) * 1e3:9.3f}{statistics.median(wall) * 1e3:9.3f}")


def with_schedule(p: LoopProgram, *prims) -> LoopProgram:
    return dataclasses.replace(p, kernels=(apply(p.kernels[0], prims),))


def explicit_vector_kernel():
    """``y = max(a * x + b, 0)`` written as ``<8 x float>`` IR (n a multiple of 8)."""
    f32x8, i64, ptr = ir.VectorType(ir.FloatType(), 8), ir.IntType(64), ir.PointerType()
    m = ir.Module("explicit")
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [ptr] * 4 + [i64]), "k")
    for a in fn.args[:4]:
        a.add_attribute("noalias")
    vmax = ir.Function(m, ir.FunctionType(f32x8, [f32x8, f32x8]), "llvm.maximum.v8f32")
    entry, body, done = (fn.append_basic_block(s) for s in ("entry", "body", "done"))
    b = ir.IRBuilder(entry)
    b.branch(body)
    b.position_at_end(body)
    iv = b.phi(i64)
    iv.add_incoming(ir.Constant(i64, 0), entry)
    va, vx, vb = (
        b.load(b.gep(p, [iv], inbounds=True, source_etype=ir.FloatType()), typ=f32x8, align=4)
        for p in fn.args[:3]
    )
    y = b.call(vmax, [b.fadd(b.fmul(va, vx), vb), ir.Constant(f32x8, [0.0] * 8)])
    b.store(y, b.gep(fn.args[3], [iv], inbounds=True, source_etype=ir.FloatType()), align=4)
    nxt = b.add(iv, ir.Constant(i64, 8))
    iv.add_incoming(nxt, body)
    b.cbranch(b.icmp_signed("<", nxt, fn.args[4]), body, done)
    b.position_at_end(done)
    b.ret_void()
    engine = compile_ir(m, opt=3, use_cache=False).engine
    cfn = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 4, ctypes.c_int64)(
        engine.get_function_address("k")
    )
    return engine, cfn


def measure(cases: dict, rounds: int) -> dict[str, tuple[list[float], list[float]]]:
    """Interleaved: each round runs every case once. Returns wall and thread times."""
    out = {name: ([], []) for name in cases}
    for fn in cases.values():
        fn()  # warm: first touch, caches, pool threads
    for _ in range(rounds):
        for name, fn in cases.items():
            w0, t0 = time.perf_counter(), time.thread_time()
            fn()
            out[name][1].append(time.thread_time() - t0)
            out[name][0].append(time.perf_counter() - w0)
    return out


def report(title: str, results, nbytes: int) -> None:
    print(f"\n{title}  ({nbytes / 1e6:.0f} MB moved per call)")
    print(f"  {'case':<34}{'min ms':>9}{'med ms':>9}{'GB/s best':>11}{'GB/s med':>10}{'cpu ms':>9}")
    for name, (wall, cpu) in results.items():
        lo, med = min(wall), statistics.median(wall)
        print(
            f"  {name:<34}{lo * 1e3:9.2f}{med * 1e3:9.2f}{nbytes / lo / 1e9:11.2f}"
            f"{nbytes / med / 1e9:10.2f}{min(cpu) * 1e3:9.2f}"
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1 << 24)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--sections", default="1,2,3,4")
    args = ap.parse_args()
    n, rounds = args.n, args.rounds
    sections = {int(s) for s in args.sections.split(",")}
    if 3 in sections:
        transcendentals(max(n // 16, 1024), rounds)
    if sections & {1, 2, 4}:
        throughput_and_compile(n, rounds)


def throughput_and_compile(n: int, rounds: int) -> None:
    """Sections 1, 2 and 4 (they run together: 4 compiles the kernels of 1 and 2)."""
    rng = np.random.default_rng(0)

    # 1. fused element-wise chain
    p = fma_relu(n)
    variants = {
        "eqsat plain loop (O3 auto-vec)": (p, 1),
        "eqsat VECTORIZED (metadata)": (with_schedule(p, Vectorize("i")), 1),
        "eqsat PARALLEL x2 + VECTORIZED": (
            with_schedule(p, Split("i", 1 << 16), Parallel("i.o"), Vectorize("i.i")),
            2,
        ),
    }
    feeds = {s: rng.standard_normal(n).astype(np.float32) for s in "AXB"}
    cases, compiled = {}, {}
    for name, (prog, threads) in variants.items():
        c = compiled[name] = compile(prog, threads=threads)
        arrays, dims = c.bind(feeds)
        cases[name] = lambda c=c, arrays=arrays, dims=dims: c.call(arrays, dims)
    engine, vec = explicit_vector_kernel()
    y = np.empty(n, np.float32)
    a, x, b = feeds["A"], feeds["X"], feeds["B"]
    cases["explicit <8 x float> (hand IR)"] = lambda: vec(
        a.ctypes.data, x.ctypes.data, b.ctypes.data, y.ctypes.data, n
    )
    t = np.empty(n, np.float32)
    cases["numpy maximum(a*x+b, 0)"] = lambda: np.maximum(a * x + b, 0)
    cases["numpy unfused, out= prealloc"] = lambda: (
        np.multiply(a, x, out=t),
        np.add(t, b, out=t),
        np.maximum(t, 0, out=y),
    )
    res = measure(cases, rounds)
    want = np.maximum(a * x + b, 0)
    for name, c in compiled.items():
        got = c.run(feeds)["Y"]
        assert np.allclose(got, want, rtol=1e-6, atol=1e-6), name
    cases["explicit <8 x float> (hand IR)"]()
    assert np.allclose(y, want, rtol=1e-6, atol=1e-6)
    report(f"relu(a*x+b), n = {n}", res, 16 * n)

    # 2. reduction over the last axis
    m = int(np.sqrt(n / 4)) if n >= 1 << 16 else 64
    r = row_sum(m, n // m)
    xr = rng.standard_normal((m, n // m)).astype(np.float32)
    cr = compile(r, threads=1)
    arrays, dims = cr.bind({"X": xr})
    out = np.empty(m, np.float32)
    res = measure(
        {
            "eqsat row sum (reassoc, O3)": lambda: cr.call(arrays, dims),
            "numpy sum(axis=-1)": lambda: np.sum(xr, axis=-1, out=out),
        },
        rounds,
    )
    np.testing.assert_allclose(cr.run({"X": xr})["R"], xr.sum(-1), rtol=1e-3, atol=1e-3)
    report(f"row sum, {m} x {n // m}", res, 4 * n)

    # 4. compile time per kernel (emit + O3 + codegen)
    from tests.unit.lower.programs import elementwise, matmul, softmax  # noqa: PLC0415

    kernels = {
        "fma_relu": p,
        "row_sum": r,
        "elementwise (tanh/erf/exp/select)": elementwise(),
        "softmax (3 nests)": softmax(),
        "matmul 64x48x32": matmul(),
    }
    print("\ncompile time per kernel (min / median of 5, ms)")
    for name, prog in kernels.items():
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            compile(prog, threads=1)
            times.append(time.perf_counter() - t0)
        print(f"  {name:<36}{min(times) * 1e3:8.1f}{statistics.median(times) * 1e3:8.1f}")
    del engine


if __name__ == "__main__":
    main()
