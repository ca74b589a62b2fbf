"""A model's CUDA code: the GPU-scheduled program and one :class:`GpuKernel` per kernel.

Consumes a GPU-scheduled LoopProgram (:mod:`eqsat.lower.gpu_schedule`); produces
:class:`CudaProgram`, the executable of a ``CompiledModel`` whose target is ``cuda``: the PTX of
each kernel for each architecture and its launch configuration. ``run_inputs`` runs it through
:mod:`eqsat.backends.cuda.runtime` (UNTESTED: no GPU was available), which refuses in one line
where there is no CUDA driver. Weights stay on the host until the first run, then live in
device memory.
"""

from __future__ import annotations

from eqsat.backends.cuda.codegen import GpuKernel, compile_program
from eqsat.backends.cuda.toolchain import ARCHS
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

    def prepare(self, weights: dict) -> None:
        """Keep the weights (``CompiledModel`` calls it once); uploaded on the first run."""
        self.weights, self.session = dict(weights), None

    def run_inputs(self, inputs: dict, sizes: dict[str, int]) -> dict:
        from eqsat.backends.cuda.runtime import Session

        if self.session is None:
            self.session = Session(self, self.weights)
        return self.session.run(inputs, sizes)
