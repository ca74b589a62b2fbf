"""A model's CUDA code: the GPU-scheduled program and one :class:`GpuKernel` per kernel.

Consumes a GPU-scheduled LoopProgram (:mod:`eqsat.lower.gpu_schedule`); produces
:class:`CudaProgram`, the executable of a ``CompiledModel`` whose target is ``cuda``: the PTX of
each kernel for each architecture and its launch configuration. ``run`` refuses in one line:
there is no runtime yet (no GPU to test one on); see :data:`eqsat.backends.cuda.NO_GPU`.
"""

from __future__ import annotations

from eqsat.backends.cuda import NO_GPU
from eqsat.backends.cuda.codegen import GpuKernel, compile_program
from eqsat.backends.cuda.toolchain import ARCHS
from eqsat.errors import InputError
from eqsat.lower.loops import LoopProgram


class CudaProgram:
    def __init__(self, program: LoopProgram, archs: tuple[str, ...] = tuple(ARCHS)):
        self.program, self.archs = program, archs
        self.kernels: list[GpuKernel] = compile_program(program, archs)

    def files(self, what: str) -> dict[str, str]:
        """File name -> text: ``llvm`` one ``.ll`` a kernel (as generated), ``asm`` one ``.ptx``
        a kernel and architecture."""
        if what == "llvm":
            return {f"{k.symbol}.ll": k.ir for k in self.kernels}
        return {f"{k.symbol}.{a}.ptx": k.ptx[a] for k in self.kernels for a in self.archs}

    def run(self, *_args) -> dict:
        raise InputError(f"cannot run CUDA code here: {NO_GPU}")
