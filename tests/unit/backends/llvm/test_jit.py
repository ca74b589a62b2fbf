"""The JIT: compile, object cache miss then hit, corrupt files, cache folder selection."""

from __future__ import annotations

import ctypes

import llvmlite.ir as ir
import numpy as np

from eqsat.backends.llvm import jit

SAXPY = """
define void @saxpy(ptr noalias %x, ptr noalias %y, float %a, i64 %n) {
entry:
  br label %head
head:
  %i = phi i64 [0, %entry], [%i1, %body]
  %c = icmp slt i64 %i, %n
  br i1 %c, label %body, label %done
body:
  %px = getelementptr float, ptr %x, i64 %i
  %py = getelementptr float, ptr %y, i64 %i
  %vx = load float, ptr %px
  %vy = load float, ptr %py
  %m = fmul float %a, %vx
  %s = fadd float %m, %vy
  store float %s, ptr %py
  %i1 = add i64 %i, 1
  br label %head
done:
  ret void
}
"""


def _run_saxpy(compiled) -> np.ndarray:
    f = compiled.function("saxpy", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_float,
                          ctypes.c_int64)
    x = np.arange(10, dtype=np.float32)
    y = np.ones(10, dtype=np.float32)
    f(x.ctypes.data, y.ctypes.data, 2.0, 10)
    return y


def test_cache_miss_then_hit(tmp_path):
    first = jit.compile_ir(SAXPY, cache_dir=tmp_path)
    assert not first.stats.cache_hit
    assert first.stats.codegen_s > 0 and first.stats.cache_file.exists()
    second = jit.compile_ir(SAXPY, cache_dir=tmp_path)
    assert second.stats.cache_hit and second.stats.key == first.stats.key
    assert second.stats.codegen_s == 0
    np.testing.assert_array_equal(_run_saxpy(first), 2 * np.arange(10) + 1)
    np.testing.assert_array_equal(_run_saxpy(second), _run_saxpy(first))
    assert [p.name for p in tmp_path.iterdir()] == [first.stats.cache_file.name]


def test_key_depends_on_opt_level(tmp_path):
    a = jit.compile_ir(SAXPY, cache_dir=tmp_path, opt=0)
    b = jit.compile_ir(SAXPY, cache_dir=tmp_path, opt=2)
    assert a.stats.key != b.stats.key and not b.stats.cache_hit
    np.testing.assert_array_equal(_run_saxpy(a), _run_saxpy(b))


def test_corrupt_file_ignored_and_rewritten(tmp_path):
    path = jit.compile_ir(SAXPY, cache_dir=tmp_path).stats.cache_file
    good = path.read_bytes()
    for bad in (b"", good[: len(good) // 2], good[:-1] + bytes([good[-1] ^ 0xFF]), b"garbage"):
        path.write_bytes(bad)
        again = jit.compile_ir(SAXPY, cache_dir=tmp_path)
        assert not again.stats.cache_hit
        assert path.read_bytes() == good
        np.testing.assert_array_equal(_run_saxpy(again), 2 * np.arange(10) + 1)
    assert jit.compile_ir(SAXPY, cache_dir=tmp_path).stats.cache_hit


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("EQSAT_CACHE_DIR", str(tmp_path / "env"))
    assert jit.default_cache_dir() == tmp_path / "env" / "objects"
    c = jit.compile_ir(SAXPY)
    assert c.stats.cache_file.parent == tmp_path / "env" / "objects"
    monkeypatch.delenv("EQSAT_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jit.default_cache_dir() == tmp_path / "xdg" / "eqsat" / "objects"


def test_no_cache_and_ir_module(tmp_path):
    mod = ir.Module()
    i32 = ir.IntType(32)
    fn = ir.Function(mod, ir.FunctionType(i32, [i32, i32]), name="mul")
    b = ir.IRBuilder(fn.append_basic_block())
    b.ret(b.mul(*fn.args))
    c = jit.compile_ir(mod, cache_dir=tmp_path, use_cache=False)
    assert c.stats.cache_file is None and not list(tmp_path.iterdir())
    assert c.function("mul", ctypes.c_int32, ctypes.c_int32, ctypes.c_int32)(6, 7) == 42


def test_avx512_hosts_vectorize_loops_at_512_bits(monkeypatch):
    """On an AVX-512 host the loop vectorizer uses zmm registers (LLVM's prefer-256-bit tuning
    is off); with EQSAT_PREFER_256=1 it is back on, and the cache key differs."""
    import pytest

    from eqsat.backends.llvm.capabilities import Capabilities

    caps = Capabilities.host()
    if caps.vector_width < 16:
        pytest.skip("not an AVX-512 host")
    saxpy = SAXPY.replace("br label %head\ndone", "br label %head, !llvm.loop !0\ndone") + (
        '!0 = distinct !{!0, !1}\n!1 = !{!"llvm.loop.vectorize.enable", i1 true}\n')
    keys = {}
    for flag, reg in (("0", "zmm"), ("1", "ymm")):
        monkeypatch.setenv("EQSAT_PREFER_256", flag)
        jit.target_machine.cache_clear()
        asm = jit.assembly(saxpy)
        assert reg in asm and (reg == "ymm" or "prefer-256-bit" in jit.codegen_features(caps))
        keys[flag] = jit.cache_key(saxpy, caps, 1, 3)
    jit.target_machine.cache_clear()
    assert keys["0"] != keys["1"]
