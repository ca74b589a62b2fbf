"""The result of lowering: the LoopProgram with what travels beside it, and the report.

Consumes nothing; produced by :func:`eqsat.lower.lower.lower`. A :class:`Lowered` holds the
program, the weight values by buffer name (values stay outside the program so that it remains
hashable and comparable), the graph-name to buffer-name maps, the memory plan and a
:class:`Report` (kernels with the ops fused into each, inlined values, peak temporary bytes).
:meth:`Lowered.run` interprets the program on graph-named feeds, binding the product size
params (``batch_x8``) from the input shapes: the end-to-end check of a lowering.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from eqsat.lower.indexing import size_values
from eqsat.lower.interpret import interpret
from eqsat.lower.loops import LoopProgram
from eqsat.lower.memory import MemoryPlan


class LoweringError(ValueError):
    """The graph cannot be lowered (an op without a compute definition, an unsupported
    attribute variant); the message is one line naming the ops or the node."""


@dataclass(frozen=True)
class KernelInfo:
    name: str
    ops: tuple[str, ...]  # root op first, then the fused epilogue ops
    nodes: tuple[str, ...]  # node names (or first outputs) in the same order
    stores: str  # the graph value it stores


@dataclass(frozen=True)
class Report:
    kernels: tuple[KernelInfo, ...]
    inlined: tuple[str, ...]  # values computed inside their consumers, never stored
    peak_temp_bytes: int
    unshared_temp_bytes: int

    def fused_into(self) -> dict[str, str]:
        """node -> the kernel that computes it (roots and epilogues)."""
        return {n: ki.name for ki in self.kernels for n in ki.nodes}

    def summary(self) -> str:
        """One line: kernel count, fused nodes, peak temporary bytes."""
        fused = sum(len(k.ops) for k in self.kernels)
        return (
            f"{len(self.kernels)} kernels computing {fused} nodes "
            f"({len(self.inlined)} more inlined), peak temporaries {self.peak_temp_bytes} B "
            f"(unshared {self.unshared_temp_bytes} B)"
        )


@dataclass(frozen=True)
class Lowered:
    program: LoopProgram
    weights: dict[str, np.ndarray]  # by buffer name
    names: dict[str, str]  # graph value -> buffer name (inputs, weights, temps)
    outputs: dict[str, str]  # graph output -> its output buffer's name
    memory: MemoryPlan
    report: Report
    products: tuple[str, ...] = field(default=())  # symbolic product dims ("batch*8")

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Interpret the program on graph-named feeds; outputs by graph name."""
        named = {self.names[k]: v for k, v in feeds.items() if k in self.names}
        named.update(self.weights)
        dims: dict[str, int] = {}
        for b in self.program.inputs:
            for d, n in zip(b.shape, np.shape(named[b.name]), strict=False):
                if isinstance(d, str):
                    dims[d] = n
        res = interpret(self.program, named, size_values(self.products, dims))
        return {g: res[b] for g, b in self.outputs.items()}
