"""LLVM IR text → native functions in this process, through an on-disk object cache.

Consumes: LLVM IR (text, or a ``llvmlite.ir.Module``) with opaque pointers, and the host's
:class:`~eqsat.backends.llvm.capabilities.Capabilities`.
Produces: a :class:`Compiled` holding the loaded machine code: function addresses and ``ctypes``
wrappers (``CFUNCTYPE`` calls release the GIL, so a thread pool can run kernels in parallel), and
:class:`CompileStats` (parse / IR-optimization / codegen / load seconds, cache hit or not).

How (llvmlite 0.50 / LLVM 22, measured in CODEGEN_NOTES): parse → the new pass manager at
``opt`` (explicit-vector IR needs only O0–O1: 80–82 GFLOP/s at any level while compile time
falls from 158–310 ms at O3 to 53–88 ms at O0) → ``TargetMachine.emit_object`` at codegen O3 →
the object bytes, which are cached on disk and loaded with ``add_object_file`` into an MCJIT
engine built on an empty module (the object-cache round trip CODEGEN_NOTES verified). Hit and
miss load the same bytes the same way, so a cached function is the very same code.

Cache: one file per sha256 of (IR text, CPU name, features, triple, llvmlite version, opt
levels); folder ``cache_dir`` argument, else ``objects/`` in the user's cache folder
(:func:`eqsat.paths.user_cache_dir`: ``$EQSAT_CACHE_DIR``, else ``$XDG_CACHE_HOME/eqsat`` or
``~/.cache/eqsat``). Files are written atomically
(temporary file + ``os.replace``) and carry a magic header and a sha256 of the payload, so a
truncated or corrupt file is detected before LLVM sees it, ignored and rewritten.

Each :class:`Compiled` owns its own MCJIT engine: objects that define the same symbol (every
GEMM module exports ``gemm_rows``) would otherwise shadow each other in one engine.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm
import llvmlite.ir as ir

from eqsat.backends.llvm.capabilities import Capabilities, init_native
from eqsat.paths import user_cache_dir

MAGIC = b"EQSATOBJ1\n"
_DIGEST = 32


def default_cache_dir() -> Path:
    return user_cache_dir() / "objects"


@functools.cache
def target_machine(caps: Capabilities, codegen_opt: int = 3) -> llvm.TargetMachine:
    """The shared machine for codegen; never hand it to an engine (see ``_new_target``)."""
    return _new_target(caps, codegen_opt)


def _new_target(caps: Capabilities, codegen_opt: int) -> llvm.TargetMachine:
    """A fresh target machine: ``create_mcjit_compiler`` takes ownership of the one it gets
    and frees it with the engine, so each engine needs its own."""
    init_native()
    target = llvm.Target.from_triple(caps.triple)
    return target.create_target_machine(
        cpu=caps.cpu_name, features=codegen_features(caps), opt=codegen_opt, jit=True
    )


def codegen_features(caps: Capabilities) -> str:
    """The target features the code generator gets: the host's, and on AVX-512 hosts without
    LLVM's ``prefer-256-bit`` tuning. LLVM sets that tuning on Intel cores so that its loop
    vectorizer picks 256-bit vectors (older cores lowered their clock for 512-bit ones); the
    kernels here are long runs of vector arithmetic, which the explicit ``<16 x float>``
    micro-kernel already runs in 512-bit registers, and the vectorized element-wise,
    reduction and epilogue loops ran with half-width vectors beside it."""
    if caps.vector_width >= 16 and os.environ.get("EQSAT_PREFER_256", "0") != "1":
        return caps.features + ",-prefer-256-bit"
    return caps.features


@dataclass
class CompileStats:
    key: str
    cache_hit: bool
    parse_s: float = 0.0
    opt_s: float = 0.0
    codegen_s: float = 0.0
    load_s: float = 0.0
    object_bytes: int = 0
    cache_file: Path | None = None

    @property
    def total_s(self) -> float:
        return self.parse_s + self.opt_s + self.codegen_s + self.load_s


@dataclass
class Compiled:
    """Machine code loaded into this process; keep it alive while its functions are used."""

    engine: llvm.ExecutionEngine
    stats: CompileStats
    object: bytes = b""  # the relocatable object code (what an artifact stores)

    def address(self, name: str) -> int:
        addr = self.engine.get_function_address(name)
        if not addr:
            raise KeyError(f"no function {name!r} in the compiled module")
        return addr

    def function(self, name: str, restype, *argtypes):
        """A ``ctypes`` callable for ``name`` (it releases the GIL while it runs).

        The callable keeps this ``Compiled`` (its engine and machine code) alive.
        """
        fn = ctypes.CFUNCTYPE(restype, *argtypes)(self.address(name))
        fn.compiled = self
        return fn


def cache_key(ir_text: str, caps: Capabilities, opt: int, codegen_opt: int) -> str:
    h = hashlib.sha256()
    for part in (ir_text, caps.cpu_name, codegen_features(caps), caps.triple, caps.llvmlite_version,
                 f"opt={opt}", f"codegen={codegen_opt}"):
        h.update(part.encode())
        h.update(b"\0")
    return h.hexdigest()


def _read_cached(path: Path) -> bytes | None:
    """The object bytes in ``path``, or None if absent, truncated or corrupt."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    head = len(MAGIC) + _DIGEST
    if len(data) <= head or not data.startswith(MAGIC):
        return None
    payload = data[head:]
    if hashlib.sha256(payload).digest() != data[len(MAGIC):head]:
        return None
    return payload


def _write_cached(path: Path, obj: bytes) -> None:
    """Write atomically; a cache that cannot be written is not an error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".o")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + hashlib.sha256(obj).digest() + obj)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass


def load_object(obj: bytes, caps: Capabilities | None = None) -> Compiled:
    """Load object code compiled earlier (an artifact's) into this process."""
    caps = caps or Capabilities.host()
    init_native()
    t0 = time.perf_counter()
    engine = _load(obj, caps, 3)
    stats = CompileStats(key="", cache_hit=True, load_s=time.perf_counter() - t0)
    stats.object_bytes = len(obj)
    return Compiled(engine=engine, stats=stats, object=obj)


def _load(obj: bytes, caps: Capabilities, codegen_opt: int) -> llvm.ExecutionEngine:
    empty = llvm.parse_assembly(f'target triple = "{caps.triple}"\n')
    engine = llvm.create_mcjit_compiler(empty, _new_target(caps, codegen_opt))
    engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    engine.finalize_object()
    return engine


def compile_ir(
    module: str | ir.Module,
    *,
    opt: int = 1,
    codegen_opt: int = 3,
    caps: Capabilities | None = None,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
) -> Compiled:
    """Compile ``module`` for ``caps`` (default: the host) and load it.

    ``opt`` is the IR pipeline's speed level (0–3), ``codegen_opt`` the backend's. With
    ``use_cache`` the object is looked up in / stored to the cache folder (see module doc).
    """
    caps = caps or Capabilities.host()
    init_native()
    text = str(module)
    if isinstance(module, ir.Module) and not module.triple:
        text = f'target triple = "{caps.triple}"\n' + text
    key = cache_key(text, caps, opt, codegen_opt)
    path = Path(cache_dir or default_cache_dir()) / f"{key}.o" if use_cache else None
    stats = CompileStats(key=key, cache_hit=False, cache_file=path)

    obj = _read_cached(path) if path is not None else None
    if obj is not None:
        stats.cache_hit = True
    else:
        tm = target_machine(caps, codegen_opt)
        t0 = time.perf_counter()
        mod = llvm.parse_assembly(text)
        mod.triple = caps.triple
        mod.data_layout = str(tm.target_data)
        mod.verify()
        t1 = time.perf_counter()
        if opt > 0:
            pto = llvm.create_pipeline_tuning_options(speed_level=opt)
            pto.slp_vectorization = opt >= 2  # off by default at every level in llvmlite 0.50
            pb = llvm.create_pass_builder(tm, pto)
            pb.getModulePassManager().run(mod, pb)
        t2 = time.perf_counter()
        obj = tm.emit_object(mod)
        t3 = time.perf_counter()
        stats.parse_s, stats.opt_s, stats.codegen_s = t1 - t0, t2 - t1, t3 - t2
        if path is not None:
            _write_cached(path, obj)
    stats.object_bytes = len(obj)
    t4 = time.perf_counter()
    engine = _load(obj, caps, codegen_opt)
    stats.load_s = time.perf_counter() - t4
    return Compiled(engine=engine, stats=stats, object=obj)


def _optimized(module: str | ir.Module, opt: int, caps: Capabilities | None):
    caps = caps or Capabilities.host()
    init_native()
    tm = target_machine(caps)
    mod = llvm.parse_assembly(str(module))
    mod.triple, mod.data_layout = caps.triple, str(tm.target_data)
    if opt > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=opt)
        pto.slp_vectorization = opt >= 2
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(mod, pb)
    return tm, mod


def assembly(module: str | ir.Module, opt: int = 3, caps: Capabilities | None = None) -> str:
    """The assembly ``module`` compiles to for ``caps`` (default: the host), after the IR
    pipeline at ``opt``: what ``eqsat compile --emit asm`` writes."""
    tm, mod = _optimized(module, opt, caps)
    return tm.emit_assembly(mod)


def optimized_ir(module: str | ir.Module, opt: int = 3, caps: Capabilities | None = None) -> str:
    """The LLVM IR of ``module`` after the IR pipeline at ``opt`` for ``caps`` (what the
    vectorizer made of it: ``<16 x float>`` …)."""
    return str(_optimized(module, opt, caps)[1])
