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
  ``B`` channels, no per-pixel or residual operand), or a plain kernel over ``T``'s
  ``[N, C, H, W]`` (:func:`_lane_form`: a pool, an element-wise op) whose rank-4 inputs are
  all blocked, and
* each of its other readers is a ``tensorize=nchwc`` kernel reading ``T`` as its convolution
  input only (not in its epilogue), or such a plain kernel whose output is blocked too;

decided to a fixed point (a candidate that fails drops, which may fail others). A blocked
plain kernel runs with its channel loop split and the ``B`` lanes innermost in every statement
(:func:`_lanes_inner`), so the default schedule vectorizes the lanes: VGG's MaxPools then
read and write whole blocks. Any other reader (a GEMM's packer, which computes row-major
addresses itself; a Concat; a residual add in an epilogue) keeps ``T`` row-major. The backend
refuses a GEMM kernel with a blocked parameter (``codegen._emit_kernel``), so a program this
pass did not make cannot mix them silently.

Measured (issue 18, VGG, no e-graph, each kernel's native function timed in model order, sum
of the kernels' minima over 15 runs, 1 thread, one process, loadavg 6-7): row-major between
the convs 8.86 ms, blocked (6 temps: both sides of the first two pools, the two conv→conv
temps) 8.52 ms; the convs 0.05-0.15 ms each faster, the pools within noise.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from eqsat.backends.llvm.tensorize_plan import FusedEpilogue, fused_epilogue
from eqsat.lower.analysis import free_vars, loops, outer_nest, replace_buffer, substitute, walk
from eqsat.lower.contraction import match_contraction, tensorized
from eqsat.lower.conv_direct import DirectConv, match_direct_conv
from eqsat.lower.loops import (
    Accumulate,
    BinaryOp,
    BinOp,
    Buffer,
    Const,
    For,
    Kernel,
    Load,
    LoopKind,
    LoopProgram,
    Seq,
    Store,
    Var,
)


def epilogue_form(d: DirectConv) -> FusedEpilogue | None:
    """The conv's epilogue as a :class:`~eqsat.backends.llvm.tensorize_plan.FusedEpilogue`
    with the image axis a batch axis (``out[off + n * sb + oc * ldb + oh * OW + ow]``: the
    flat N of one image is contiguous, of several it is not), or None."""
    c = d.c
    img = [ax for ax in c.n if ax[0] == d.names[0]]
    return fused_epilogue(dataclasses.replace(c, batch=c.batch + tuple(img), n=tuple(
        ax for ax in c.n if ax[0] != d.names[0])))


def blocked_epilogue(d: DirectConv) -> FusedEpilogue | None:
    """The conv's epilogue as the blocked store applies it (a
    :class:`~eqsat.backends.llvm.tensorize_plan.FusedEpilogue` whose operands are all
    per-channel with stride 1), or None."""
    fe = epilogue_form(d)
    if fe is None or fe.cols or fe.likes or any(s != 1 for _, _, _, s in fe.rows):
        return None
    return fe


def _names(stmt, kinds) -> set[str]:
    return {n.buffer.name for n in walk(stmt) if isinstance(n, kinds)}


@dataclasses.dataclass(frozen=True)
class _LaneForm:
    """A plain kernel over its output's ``[N, C, H, W]`` (a pool, an element-wise op): the
    output, and the rank-4 buffers it reads at the output's own channel."""

    out: Buffer
    inputs: frozenset[str]


def _lane_form(k: Kernel, vw: int) -> _LaneForm | None:
    """``k`` as :class:`_LaneForm` when its channel loop can be moved inside every statement
    (:func:`_lanes_inner`): an unscheduled perfect nest of 4 constant loops whose statements
    all store (or accumulate) the one output at exactly the nest's index, reading it only
    there; inner loops whose extents do not depend on the channel; every rank-4 buffer it
    reads at the nest's channel variable (others may be read any way that does not depend on
    the channel, or rank < 4 at any index)."""
    if tensorized(k) is not None:
        return None
    nest, body = outer_nest(k.body)
    if len(nest) != 4 or any(f.kind is not LoopKind.SERIAL or f.annotations
                             or not isinstance(f.extent, Const) for f in nest):
        return None
    idx = tuple(Var(f.var) for f in nest)
    c = nest[1].var
    if nest[1].extent.value % vw or any(
            f.kind is not LoopKind.SERIAL or c in free_vars(f.extent) for f in loops(body)):
        return None
    writes = [n for n in walk(body) if isinstance(n, Store | Accumulate)]
    outs = {n.buffer for n in writes}
    if len(outs) != 1 or any(n.index != idx for n in writes):
        return None
    (out,) = outs
    inputs = set()
    for ld in (n for n in walk(body) if isinstance(n, Load)):
        if ld.buffer == out:
            if ld.index != idx:
                return None
        elif ld.buffer.rank == 4 and ld.index[1] == idx[1]:
            inputs.add(ld.buffer.name)
        elif ld.buffer.rank == 4 and any(c in free_vars(i) for i in ld.index):
            return None
    return _LaneForm(out, frozenset(inputs))


def _lanes_inner(k: Kernel, vw: int) -> Kernel:
    """``k`` (a :class:`_LaneForm`) with its channel loop ``c`` split into blocks ``c.b`` (in
    its place) and lanes ``c.l`` (``c = c.b * vw + c.l``), the lane loop moved inside every
    statement: ``for c: {init; for r: acc}`` becomes ``for c.b: {for c.l: init; for r: for c.l:
    acc}`` — the same work per channel, in the same order per channel (each channel writes
    only its own output elements), so that the innermost loop walks the blocked layout's
    ``vw`` contiguous lanes (``codegen_expr.address`` reads ``c.b * vw + c.l<i>`` as block and
    lane)."""
    nest, body = outer_nest(k.body)
    c = nest[1].var
    cb, leaves = f"{c}.b", []

    def sink(s):  # one lane loop per statement (loop names are unique in a kernel)
        if isinstance(s, Seq):
            return Seq(tuple(sink(x) for x in s.stmts))
        if isinstance(s, For):
            return dataclasses.replace(s, body=sink(s.body))
        lane = f"{c}.l{len(leaves)}"
        leaves.append(lane)
        whole = BinOp(BinaryOp.ADD, BinOp(BinaryOp.MUL, Var(cb), Const(vw)), Var(lane))
        return For(lane, Const(vw), substitute(s, {c: whole}))

    inner = sink(body)
    for f in reversed(nest):
        inner = For(cb, Const(f.extent.value // vw), inner) if f.var == c else \
            dataclasses.replace(f, body=inner)
    return dataclasses.replace(k, body=inner)


def block_layouts(program: LoopProgram, vw: int, fixed: Collection[str] = ()) -> LoopProgram:
    """``program`` with the temps between direct convolutions blocked by ``vw`` (see the
    module docstring); the same program when there are none. ``fixed``: kernels whose schedule
    is chosen elsewhere (a tuning log's, replayed on their loops as lowered): never rewritten,
    so no temp they read or write is blocked unless they are direct convs."""
    direct: dict[str, DirectConv] = {}
    lane: dict[str, _LaneForm] = {}
    for k in program.kernels:
        if tensorized(k) == "nchwc" and (c := match_contraction(k)) is not None:
            d = match_direct_conv(c)
            if d is not None:
                direct[k.name] = d
        elif k.name not in fixed and (f := _lane_form(k, vw)) is not None:
            lane[k.name] = f
    writers: dict[str, list[Kernel]] = {}
    readers: dict[str, list[Kernel]] = {}
    for k in program.kernels:
        for name in _names(k.body, (Store, Accumulate)):
            writers.setdefault(name, []).append(k)
        for name in _names(k.body, Load):
            readers.setdefault(name, []).append(k)
    cand = {}
    for t in program.temps:
        ws = writers.get(t.name, [])
        if (t.rank == 4 and t.dtype == "float32" and not t.blocked and len(ws) == 1
                and all(isinstance(x, int) for x in t.shape) and t.shape[1] % vw == 0
                and readers.get(t.name)):
            cand[t.name] = (t, ws[0], [r for r in readers[t.name] if r.name != ws[0].name])

    def lane_ok(name: str) -> bool:  # a lane-form kernel whose output and inputs all block
        f = lane.get(name)
        return f is not None and f.out.name in cand and f.inputs <= cand.keys()

    def ok(t: Buffer, w: Kernel, rs: list[Kernel]) -> bool:
        if w.name in direct:
            d = direct[w.name]
            if d.c.out != t or blocked_epilogue(d) is None:
                return False
        elif not lane_ok(w.name):
            return False
        return bool(rs) and all(
            lane_ok(r.name) if r.name not in direct else (
                direct[r.name].x == t and t.name not in _names(direct[r.name].c.epilogue, Load))
            for r in rs)

    while bad := [n for n, v in cand.items() if not ok(*v)]:  # to a fixed point
        for n in bad:
            del cand[n]
    if not cand:
        return program
    new = {n: dataclasses.replace(t, blocked=vw) for n, (t, _, _) in cand.items()}
    kernels = []
    for k in program.kernels:
        body, params = k.body, k.params
        for p in params:
            if p.name in new:
                body = replace_buffer(body, p, new[p.name])
        k = dataclasses.replace(k, body=body, params=tuple(new.get(p.name, p) for p in params))
        kernels.append(_lanes_inner(k, vw) if lane_ok(k.name) else k)
    buffers = tuple(new.get(b.name, b) for b in program.buffers)
    return dataclasses.replace(program, buffers=buffers, kernels=tuple(kernels))


def blocked_buffers(program: LoopProgram) -> tuple[Buffer, ...]:
    """The program's blocked temps (for reports and tests)."""
    return tuple(b for b in program.buffers if b.blocked)
