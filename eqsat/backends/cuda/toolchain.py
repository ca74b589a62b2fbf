"""The NVIDIA pieces the CUDA backend uses without a GPU: libdevice, ptxas, the NVPTX target.

Consumes: files on this machine (libdevice.10.bc, the ptxas binary) and PTX text.
Produces: the libdevice bitcode, llvmlite target machines for the supported architectures and
:class:`PtxasReport` (registers, shared memory, spills ptxas reports with ``-v``).

Where they are found, first hit wins (``$EQSAT_LIBDEVICE`` / ``$EQSAT_PTXAS`` override):
the ``nvidia-cuda-nvcc`` wheel (``nvidia/cuda_nvcc/...`` in site-packages), ``$CUDA_HOME``, then
``/usr/local/cuda*``; ptxas also on ``$PATH``. Neither is needed to *generate* PTX: libdevice
only when a kernel calls a math function, ptxas only to check the PTX (tests skip without it).

Architectures (CODEGEN_NOTES, "NVPTX"): sm_80 with PTX ISA 7.0 and sm_90 with PTX ISA 8.0
(without ``+ptxNN`` sm_90 defaults to 7.8); per-SM limits are what :func:`check_launch` checks a
kernel's ptxas report against.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import llvmlite.binding as llvm

from eqsat.errors import InputError

TRIPLE = "nvptx64-nvidia-cuda"
# arch -> (LLVM features, registers per block, shared memory per block (static) in bytes)
ARCHS: dict[str, tuple[str, int, int]] = {
    "sm_80": ("+ptx70", 65536, 48 * 1024),
    "sm_90": ("+ptx80", 65536, 48 * 1024),
}


def _candidates(*tails: str) -> list[Path]:
    roots = [Path(sysconfig.get_paths()["purelib"]) / "nvidia" / "cuda_nvcc"]
    if os.environ.get("CUDA_HOME"):
        roots.append(Path(os.environ["CUDA_HOME"]))
    roots += [Path(p) for p in sorted(glob.glob("/usr/local/cuda*"), reverse=True)]
    return [r / t for r in roots for t in tails]


@functools.cache
def libdevice_path() -> Path | None:
    env = os.environ.get("EQSAT_LIBDEVICE")
    if env:
        return Path(env) if Path(env).is_file() else None
    return next((p for p in _candidates("nvvm/libdevice/libdevice.10.bc") if p.is_file()), None)


@functools.cache
def libdevice_bitcode() -> bytes:
    path = libdevice_path()
    if path is None:
        raise InputError(
            "libdevice.10.bc not found (install nvidia-cuda-nvcc or the CUDA toolkit, or set "
            "EQSAT_LIBDEVICE): the CUDA backend needs it for math functions"
        )
    return path.read_bytes()


@functools.cache
def ptxas_path() -> str | None:
    env = os.environ.get("EQSAT_PTXAS")
    if env:
        return env if Path(env).is_file() else None
    found = next((str(p) for p in _candidates("bin/ptxas") if p.is_file()), None)
    return found or shutil.which("ptxas")


@functools.cache
def init_nvptx() -> None:
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()


@functools.cache
def target_machine(arch: str) -> llvm.TargetMachine:
    if arch not in ARCHS:
        raise InputError(f"unknown CUDA architecture {arch!r}; known: {', '.join(ARCHS)}")
    init_nvptx()
    target = llvm.Target.from_triple(TRIPLE)
    return target.create_target_machine(cpu=arch, features=ARCHS[arch][0], opt=3)


@dataclass(frozen=True)
class PtxasReport:
    """What ``ptxas -v`` says of one entry function."""

    kernel: str
    arch: str
    registers: int
    shared_bytes: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int


_FUNC = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")


def ptxas(ptx: str, arch: str, timeout: float = 120) -> list[PtxasReport]:
    """Assemble ``ptx`` for ``arch`` (``ptxas -O3 -v``); one report per entry function.
    RuntimeError with ptxas's message when it refuses the PTX."""
    exe = ptxas_path()
    if exe is None:
        raise RuntimeError("ptxas not found")
    proc = subprocess.run(
        [exe, f"-arch={arch}", "-O3", "-v", "-", "-o", os.devnull],
        input=ptx.encode(),
        capture_output=True,
        timeout=timeout,
    )
    text = proc.stderr.decode(errors="replace") + proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas -arch={arch} failed: {text.strip()[:2000]}")
    reports, current, spills = [], None, (0, 0, 0)
    for line in text.splitlines():
        if m := _FUNC.search(line):
            current, spills = m.group(1), (0, 0, 0)
        elif (m := _PROPS.search(line)) and current:
            spills = tuple(int(g) for g in m.groups())
        elif (m := _USED.search(line)) and current:
            regs, smem = int(m.group(1)), int(m.group(2) or 0)
            reports.append(PtxasReport(current, arch, regs, smem, *spills))
            current = None
    return reports


def check_launch(report: PtxasReport, threads_per_block: int, dynamic_shared: int = 0) -> None:
    """ValueError unless a block of ``threads_per_block`` fits the architecture: registers ×
    threads within the register file a block may use, static + dynamic shared memory within
    the static per-block limit."""
    _, regs_per_block, smem = ARCHS[report.arch]
    if report.registers * threads_per_block > regs_per_block:
        raise ValueError(
            f"{report.kernel} ({report.arch}): {report.registers} registers × "
            f"{threads_per_block} threads > {regs_per_block}"
        )
    if report.shared_bytes + dynamic_shared > smem:
        raise ValueError(
            f"{report.kernel} ({report.arch}): {report.shared_bytes + dynamic_shared} B of "
            f"shared memory > {smem}"
        )
