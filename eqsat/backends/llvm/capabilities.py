"""What the host CPU offers the code generator: the one object schedulers read.

Consumes: llvmlite's host queries (``get_host_cpu_name()``, ``get_host_cpu_features()``) and
``os.sched_getaffinity`` (the cores this process may run on, which is what a thread pool can
use — not ``os.cpu_count()``).
Produces: a frozen :class:`Capabilities` (CPU name, LLVM feature string, vector width in
float32 lanes, FMA, cores) with a stable :meth:`Capabilities.key` for caches, and the GEMM tile
it implies (:meth:`Capabilities.gemm_tile`).

Why: docs/architecture.md, "Lowering and backends": schedulers read a backend's capabilities, never
its name, so the micro-kernel's vector width and tile come from here. CODEGEN_NOTES measured the
AVX2 tile (6 rows × 2 vectors of 8, 12 ``<8 x float>`` accumulators: 78–83 GFLOP/s on Zen 3);
with AVX-512's 32 registers and embedded broadcasts the tile grows (see ``gemm_tile``).
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass, replace

import llvmlite
import llvmlite.binding as llvm


@functools.cache
def init_native() -> None:
    """Initialize LLVM's native target once (llvmlite 0.50: ``llvm.initialize()`` raises)."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()


def _features_flat(features: dict[str, bool]) -> str:
    return ",".join(f"{'+' if on else '-'}{name}" for name, on in sorted(features.items()))


@dataclass(frozen=True)
class Capabilities:
    """The host as the code generator sees it; ``features`` is LLVM's ``+a,-b,…`` string."""

    cpu_name: str
    features: str
    triple: str
    vector_width: int  # float32 lanes of the widest usable vector register
    has_fma: bool
    cores: int
    llvmlite_version: str = llvmlite.__version__

    @classmethod
    def host(cls) -> Capabilities:
        """The machine this process runs on (detected once, then cached)."""
        return _host()

    @classmethod
    def detect(cls) -> Capabilities:
        init_native()
        feats = dict(llvm.get_host_cpu_features())
        width = 16 if feats.get("avx512f") else 8 if feats.get("avx2") or feats.get("avx") else 4
        return cls(
            cpu_name=llvm.get_host_cpu_name(),
            features=_features_flat(feats),
            triple=llvm.get_process_triple(),
            vector_width=width,
            has_fma=bool(feats.get("fma")),
            cores=len(os.sched_getaffinity(0)),
        )

    def has(self, feature: str) -> bool:
        return f"+{feature}" in self.features.split(",")

    def with_vector_width(self, width: int) -> Capabilities:
        """The same CPU restricted to narrower vectors (e.g. AVX2 code on an AVX-512 host)."""
        if width > self.vector_width:
            raise ValueError(f"vector width {width} exceeds the host's {self.vector_width}")
        return replace(self, vector_width=width)

    @property
    def scalar_calls(self) -> tuple[str, ...]:
        """Intrinsics the code generator emits as scalar libm calls (``codegen_expr``): a loop
        calling one cannot be vectorized, so schedulers should not ask for it. An entry is a
        name (every dtype) or ``name.dtype``: float32 (and float16) tanh and erf are vector
        arithmetic (``vmath``), only float64 calls libm (``tanh``, ``erf``)."""
        return ("tanh.float64", "erf.float64")

    @property
    def registers(self) -> int:
        """Vector registers available to the register allocator (zmm0-31 with AVX-512)."""
        return 32 if self.vector_width >= 16 else 16

    def gemm_tile(self) -> tuple[int, int]:
        """The float32 micro-kernel tile (MR rows, NR columns): NR = 2 vectors, MR × 2
        accumulators — the default tile of the float32 row of ``tensorize_targets.TARGETS``
        that fits this vector width (its measurements are there).

        AVX2 (16 ymm): 6 × 16 — 12 accumulators + 2 B vectors + 1 broadcast (CODEGEN_NOTES).
        AVX-512 (32 zmm): 12 × 32 — 24 accumulators; the A broadcast folds into the FMA's
        memory operand, so 14 fits too; MR 8-14, KC 128-512 and MC 96-384 all measured
        155-166 GFLOP/s at n = 512 / 1024 here (``gemm_bench.py --sweep``, within noise).
        """
        return self.gemm_tiles()[0]

    def gemm_tiles(self) -> tuple[tuple[int, int], ...]:
        """The micro-tiles a contraction may pick from (``tensorize_plan.choose_plan``), the
        default :meth:`gemm_tile` first: on AVX-512 also 8 × 48 (3 vectors, the same 24
        accumulators; measured as fast on L1-resident panels), which fits 8-multiple channel
        counts without padding."""
        from eqsat.backends.llvm.tensorize_targets import select

        t = select(self, ("float32", "float32"))
        if t is None:  # no FMA target (SSE, or a width no row has): a 4-row, 2-vector tile
            return ((4, 2 * self.vector_width),)
        return t.tiles

    def key(self) -> str:
        """A stable hex digest of everything that changes the machine code for the same IR."""
        text = "\n".join(
            [self.cpu_name, self.features, self.triple, str(self.vector_width),
             self.llvmlite_version]
        )
        return hashlib.sha256(text.encode()).hexdigest()[:32]


@functools.cache
def _host() -> Capabilities:
    return Capabilities.detect()
