"""The reference backend: runs any LoopProgram with the numpy interpreter.

Consumes a LoopProgram (:mod:`eqsat.lower.loops`); produces a callable with the same interface
as the LLVM backend's compiled program (``run(feeds, sizes)`` → ``{output name: array}``), by
delegating to :func:`eqsat.lower.interpret.interpret`. It is the oracle the other backends are
tested against and the fallback that runs programs nothing else compiles; it is slow on purpose
(clarity over speed) and does no compilation beyond checking the program once.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from eqsat.lower.check import check_program
from eqsat.lower.interpret import interpret
from eqsat.lower.loops import LoopProgram


class RefProgram:
    """A LoopProgram bound to the interpreter; ``threads`` is accepted and ignored."""

    def __init__(self, program: LoopProgram):
        check_program(program)
        self.program = program

    def run(
        self, feeds: Mapping[str, np.ndarray], sizes: Mapping[str, int] | None = None
    ) -> dict[str, np.ndarray]:
        return interpret(self.program, feeds, sizes)

    __call__ = run


def compile(program: LoopProgram, threads: int | None = None) -> RefProgram:  # noqa: A001
    """``program`` as a callable running :func:`~eqsat.lower.interpret.interpret`."""
    return RefProgram(program)
