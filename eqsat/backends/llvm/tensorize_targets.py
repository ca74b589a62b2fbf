"""The tensorize targets: one small declarative record per CPU-family micro-kernel.

Consumes: a :class:`~eqsat.backends.llvm.capabilities.Capabilities` (its LLVM feature string
and vector width).
Produces: :data:`TARGETS`, the table, and :func:`select` / :func:`available`, the entries a
host can run. Each :class:`Target` names the CPU features it needs, its element types (inputs
and accumulator), its vector lanes, its micro-tiles (MR rows × NR columns, the default first)
and its emitter (the module whose function writes the micro-kernel's IR).

The rows (:data:`TARGETS`): ``fma-avx512-f32x16`` and ``fma-avx2-f32x8`` (float32 FMA,
``microkernel.emit_microkernel``), ``vnni-avx512-u8s8-s32x16`` and ``vnni-avx2-u8s8-s32x8``
(u8 × s8 → s32 ``vpdpbusd``, ``vnni.emit_vnni_microkernel``; AVX-VNNI is the VEX form).

Why a table: docs/architecture.md, "Lowering and backends": schedulers read capabilities, never
a backend's name; the float tile used to be an ``if`` on the vector width inside
``Capabilities.gemm_tile``, and a second element type (int8 dot products, ``vpdpbusd``) would
have been a second ``if``. Here each family is one row; ``Capabilities.gemm_tile`` /
``gemm_tiles`` read the float32 row that fits the capabilities' vector width, so an AVX2 entry
is chosen on an AVX-512 host with ``Capabilities.with_vector_width(8)``. The float tiles are
the ones CODEGEN_NOTES and ``gemm_bench.py --sweep`` measured (see ``gemm_tile``'s history); the
VNNI tiles keep 16 (AVX-512: 32 registers) / 8 (AVX2: 16 registers) accumulators beside the
B vectors and the broadcast A word.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    features: tuple[str, ...]  # LLVM feature names the host must have (all of them)
    in_dtypes: tuple[str, str]  # A, B element types
    acc_dtype: str
    lanes: int  # accumulator lanes per vector register
    tiles: tuple[tuple[int, int], ...]  # (MR, NR), the default first
    # the module whose emitter writes the micro-kernel: "microkernel" (``emit_microkernel``,
    # fp32 FMA) or "vnni" (``emit_vnni_microkernel``); a name, not the function, because the
    # emitters' modules import this table (and capabilities reads it)
    emitter: str
    k_group: int = 1  # consecutive k elements one instruction reduces per lane

    @property
    def tile(self) -> tuple[int, int]:
        return self.tiles[0]

    def runs_on(self, caps) -> bool:
        """The host has every feature, and vectors this wide are allowed."""
        return self.lanes <= caps.vector_width and all(caps.has(f) for f in self.features)

    def missing(self, caps) -> list[str]:
        """Why not (empty when :meth:`runs_on`)."""
        why = [f for f in self.features if not caps.has(f)]
        if self.lanes > caps.vector_width:
            why.append(f"{self.lanes} lanes > vector width {caps.vector_width}")
        return why


TARGETS: tuple[Target, ...] = (
    Target("fma-avx512-f32x16", ("avx512f", "fma"), ("float32", "float32"), "float32", 16,
           ((12, 32), (8, 48)), "microkernel"),
    Target("fma-avx2-f32x8", ("avx2", "fma"), ("float32", "float32"), "float32", 8,
           ((6, 16),), "microkernel"),
    Target("vnni-avx512-u8s8-s32x16", ("avx512vnni", "avx512bw"), ("uint8", "int8"), "int32",
           16, ((8, 32),), "vnni", k_group=4),
    Target("vnni-avx2-u8s8-s32x8", ("avxvnni",), ("uint8", "int8"), "int32", 8,
           ((4, 16),), "vnni", k_group=4),
)  # fmt: skip

BY_NAME: dict[str, Target] = {t.name: t for t in TARGETS}


def available(caps, in_dtypes: tuple[str, str] | None = None) -> list[Target]:
    """The entries ``caps`` can run (for these input types, if given), widest first."""
    return sorted(
        (t for t in TARGETS if t.runs_on(caps) and (in_dtypes is None or t.in_dtypes == in_dtypes)),
        key=lambda t: -t.lanes,
    )


def select(caps, in_dtypes: tuple[str, str]) -> Target | None:
    """The widest entry for these input types that ``caps`` runs (its vector width bounds the
    lanes), or None: then the plain loop."""
    return next(iter(available(caps, in_dtypes)), None)
