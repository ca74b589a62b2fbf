"""Blocked channel layouts between direct convolutions: which temps stay in NCHW[x]c.

Consumes a LoopProgram whose contraction kernels are scheduled (the ``tensorize`` annotations of
:func:`eqsat.lower.schedule_gemm.tensorize_contractions`); produces the same program in which
some temps are :class:`~eqsat.lower.loops.Buffer` records with ``blocked = B`` (the host's
vector width, 16 floats on AVX-512): the same elements, stored ``[N][C/B][H][W][B]``. Every
declaration, kernel parameter, load and store of such a temp refers to the blocked record; the
loop IR still indexes it as ``[N, C, H, W]``, so ``interpret()`` and the schedules are
unchanged, and the LLVM backend's addressing (``codegen_expr.address``) reads and writes it in
blocks. The transforms between the layouts are thus placed at the layout boundaries only: a
direct conv whose input is row-major copies it into its zero-padded blocked workspace (a
transpose), one whose input is blocked copies whole ``B``-float vectors; a direct conv whose
output is row-major transposes its row workspace in registers, one whose output is blocked
stores it as it is (:mod:`eqsat.backends.llvm.direct_conv`).

A temp ``T`` ``[N, C, H, W]`` (float32, constant shape, ``B`` dividing ``C``) is blocked when

* its one writer is a ``tensorize=nchwc`` kernel (:func:`~eqsat.lower.conv_direct.
  match_direct_conv`) whose output is ``T`` and whose epilogue the blocked store applies
  (:func:`blocked_epilogue`: bias / BatchNorm / ReLU — per-channel operands read as vectors of
  ``B`` channels, no per-pixel or residual operand), and
* each of its other readers is a ``tensorize=nchwc`` kernel reading ``T`` as its convolution
  input only (not in its epilogue).

Any other reader (a GEMM's packer, which computes row-major addresses itself; a pool) keeps
``T`` row-major. The backend refuses a GEMM kernel with a blocked parameter
(``codegen._emit_kernel``), so a program this pass did not make cannot mix them silently.
"""

from __future__ import annotations

import dataclasses

from eqsat.backends.llvm.tensorize_plan import FusedEpilogue, fused_epilogue
from eqsat.lower.analysis import replace_buffer, walk
from eqsat.lower.contraction import match_contraction, tensorized
from eqsat.lower.conv_direct import DirectConv, match_direct_conv
from eqsat.lower.loops import Accumulate, Buffer, Kernel, Load, LoopProgram, Store


def blocked_epilogue(d: DirectConv) -> FusedEpilogue | None:
    """The conv's epilogue as the blocked store applies it (a
    :class:`~eqsat.backends.llvm.tensorize_plan.FusedEpilogue` whose operands are all
    per-channel with stride 1), or None."""
    fe = fused_epilogue(d.c)
    if fe is None or fe.cols or fe.likes or any(s != 1 for _, _, _, s in fe.rows):
        return None
    return fe


def _names(stmt, kinds) -> set[str]:
    return {n.buffer.name for n in walk(stmt) if isinstance(n, kinds)}


def block_layouts(program: LoopProgram, vw: int) -> LoopProgram:
    """``program`` with the temps between direct convolutions blocked by ``vw`` (see the
    module docstring); the same program when there are none."""
    direct: dict[str, DirectConv] = {}
    for k in program.kernels:
        if tensorized(k) == "nchwc" and (c := match_contraction(k)) is not None:
            d = match_direct_conv(c)
            if d is not None:
                direct[k.name] = d
    writers: dict[str, list[Kernel]] = {}
    readers: dict[str, list[Kernel]] = {}
    for k in program.kernels:
        for name in _names(k.body, (Store, Accumulate)):
            writers.setdefault(name, []).append(k)
        for name in _names(k.body, Load):
            readers.setdefault(name, []).append(k)
    chosen = []
    for t in program.temps:
        if not (t.rank == 4 and t.dtype == "float32" and not t.blocked
                and all(isinstance(x, int) for x in t.shape) and t.shape[1] % vw == 0):
            continue
        ws = writers.get(t.name, [])
        if len(ws) != 1 or ws[0].name not in direct:
            continue
        dw = direct[ws[0].name]
        if dw.c.out != t or blocked_epilogue(dw) is None:
            continue
        rs = [r for r in readers.get(t.name, []) if r.name != ws[0].name]
        if rs and all(r.name in direct and direct[r.name].x == t
                      and t.name not in _names(direct[r.name].c.epilogue, Load) for r in rs):
            chosen.append(t)
    if not chosen:
        return program
    kernels = []
    for k in program.kernels:
        body, params = k.body, k.params
        for t in chosen:
            if t in params:
                new = dataclasses.replace(t, blocked=vw)
                body = replace_buffer(body, t, new)
                params = tuple(new if p == t else p for p in params)
        kernels.append(dataclasses.replace(k, params=params, body=body))
    blocked = {t.name for t in chosen}
    buffers = tuple(dataclasses.replace(b, blocked=vw) if b.name in blocked else b
                    for b in program.buffers)
    return dataclasses.replace(program, buffers=buffers, kernels=tuple(kernels))


def blocked_buffers(program: LoopProgram) -> tuple[Buffer, ...]:
    """The program's blocked temps (for reports and tests)."""
    return tuple(b for b in program.buffers if b.blocked)
