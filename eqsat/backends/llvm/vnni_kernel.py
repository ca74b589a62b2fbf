"""An int8 GEMM kernel (``tensorize=igemm``) on the VNNI micro-kernel, inside a compiled program.

Consumes a kernel that :func:`eqsat.lower.schedule_int8.match_int8_gemm` recognizes (a 2-D
MatMulInteger / QLinearMatMul with a weight B and constant scalar zero points) and the kernel
function codegen declared (buffer params; the extents are constants); produces its body:

1. B packed once (on the first call, and again whenever the weight's address changes) into the
   module global ``<k>.pk.b`` — ``vnni.pack_b``'s ``[K/4][NR][4]`` panels, a uint8 B shifted
   to int8 by -128 — followed by its column sums (int32), which the compensation needs; the
   program's ``release`` frees it as it frees the float GEMM's packed weights;
2. A used in place when it is uint8 with K a multiple of 4 and M of MR, else copied into a
   padded workspace (an int8 A shifted to uint8 by +128); A's row sums are taken only where
   the compensation needs them (B's zero point, after the shift, is not 0);
3. the VNNI loops of :func:`eqsat.backends.llvm.vnni.emit_gemm_loops` into an int32
   workspace C, with the zero points and shifts as the micro-kernel's two rank-1 store terms;
4. the kernel's epilogue (QLinearMatMul's requantization, or the int32 store) run by the
   ordinary statement emitter over C.

The result is bit-equal to the plain loops (int32 arithmetic wraps the same way).
"""

from __future__ import annotations

import llvmlite.ir as ir

from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.codegen_expr import I64, PTR
from eqsat.backends.llvm.codegen_stmt import FunctionEmitter
from eqsat.backends.llvm.emit import I32, i64, loop
from eqsat.backends.llvm.tensorize import packed_globals
from eqsat.backends.llvm.tensorize_targets import select
from eqsat.backends.llvm.vnni import emit_gemm_loops
from eqsat.lower.analysis import rebuild
from eqsat.lower.loops import Buffer, BufferKind, Const, For, Kernel, Load, Store, Var
from eqsat.lower.schedule_int8 import match_int8_gemm

I8 = ir.IntType(8)


def _byte_at(b: ir.IRBuilder, base, row, col, rows: int, cols: int, flip) -> ir.Value:
    """The byte ``base[row, col]`` of a row-major ``rows × cols`` matrix, 0 outside it (the
    padding of a packed or copied operand), its sign bit flipped when ``flip`` (the +128 /
    -128 shift that makes the operand the unsigned / signed side of ``vpdpbusd``)."""
    inb = b.and_(b.icmp_signed("<", row, i64(rows)), b.icmp_signed("<", col, i64(cols)))
    idx = b.select(inb, b.add(b.mul(row, i64(cols)), col), i64(0))
    x = b.load(_at(b, base, idx, I8), typ=I8)
    if flip:
        x = b.xor(x, ir.Constant(I8, 0x80))
    return b.select(inb, x, ir.Constant(I8, 0))


def _with_load(node, buf: Buffer, value):
    """``node`` with every load of ``buf`` replaced by ``value``."""
    if isinstance(node, Load) and node.buffer == buf:
        return value
    return rebuild(node, lambda c: _with_load(c, buf, value))


def _up(n: int, m: int) -> int:
    return -(-n // m) * m


def _at(b: ir.IRBuilder, p, off, etype):
    return b.gep(p, [off if isinstance(off, ir.Value) else i64(off)], source_etype=etype)


def emit_int8_kernel(module: ir.Module, fn: ir.Function, k: Kernel,
                     sizes: tuple[str, ...]) -> ir.Function:
    spec = match_int8_gemm(k)
    caps = Capabilities.host()
    target = select(caps, ("uint8", "int8"))
    if spec is None or target is None:
        raise ValueError(f"kernel {k.name}: tensorize=igemm, but no int8 GEMM / VNNI target")
    mr, nr = target.tile
    m, n, kk = spec.m, spec.n, spec.k
    mp, np_, kp = _up(m, mr), _up(n, nr), _up(kk, 4)
    sa = 128 if spec.a.dtype == "int8" else 0
    sb = 128 if spec.b.dtype == "uint8" else 0
    alpha, beta = spec.za + sa, spec.zb - sb
    for arg, p in zip(fn.args, k.params, strict=False):
        arg.name = p.name
    bufs = {p.name: a for p, a in zip(k.params, fn.args, strict=False)}
    em = FunctionEmitter(module, fn, bufs)
    em.env.update(zip(sizes, fn.args[len(k.params):], strict=True))
    b = em.b
    a_ptr, b_ptr = bufs[spec.a.name], bufs[spec.b.name]
    alloc = em.declare("aligned_alloc", PTR, [I64, I64])
    free = em.declare("free", ir.VoidType(), [PTR])

    # 1. B packed once per weight address, with its column sums after the panels
    pk, src = packed_globals(module, fn.name, "b")
    with b.if_then(b.icmp_unsigned("!=", b.load(src, typ=PTR), b_ptr)):
        b.call(free, [b.load(pk, typ=PTR)])
        mem = b.call(alloc, [i64(64), i64(_up(np_ * kp + 4 * np_, 64))])
        cs = _at(b, mem, np_ * kp, I8)
        with loop(b, 0, np_, name="cs0") as c:
            b.store(ir.Constant(I32, 0), _at(b, cs, c, I32))
        with loop(b, 0, np_ // nr, name="pp") as p, loop(b, 0, kp // 4, name="pg") as g, \
                loop(b, 0, nr, name="pj") as j, loop(b, 0, 4, name="pt") as t:
            row = b.add(b.mul(g, i64(4)), t)
            col = b.add(b.mul(p, i64(nr)), j)
            x = _byte_at(b, b_ptr, row, col, kk, n, sb)
            dst = b.add(b.mul(b.add(b.mul(b.add(b.mul(p, i64(kp // 4)), g), i64(nr)), j),
                              i64(4)), t)
            b.store(x, _at(b, mem, dst, I8))
            cp = _at(b, cs, col, I32)
            b.store(b.add(b.load(cp, typ=I32), b.sext(x, I32)), cp)
        b.store(mem, pk)
        b.store(b_ptr, src)
    bp = b.load(pk, typ=PTR)
    v1 = _at(b, bp, np_ * kp, I8)

    # 2. workspaces: C, u1, u2, v2 (and A's padded copy)
    copy_a = bool(sa) or kp != kk or mp != m
    size = 4 * (mp * np_ + 2 * mp + np_) + (mp * kp if copy_a else 0)
    work = b.call(alloc, [i64(64), i64(_up(size, 64))])
    cw = work
    u1 = _at(b, work, 4 * mp * np_, I8)
    u2 = _at(b, u1, 4 * mp, I8)
    v2 = _at(b, u2, 4 * mp, I8)
    ac = _at(b, v2, 4 * np_, I8)
    with loop(b, 0, np_, name="v2") as c:
        b.store(ir.Constant(I32, beta), _at(b, v2, c, I32))
    rowsum = em.alloca(I32)
    with loop(b, 0, mp, name="ar") as r:
        b.store(ir.Constant(I32, -alpha), _at(b, u1, r, I32))
        b.store(ir.Constant(I32, 0), rowsum)
        if copy_a or beta:
            with loop(b, 0, kp, name="ak") as q:
                x = _byte_at(b, a_ptr, r, q, m, kk, sa)
                if copy_a:
                    b.store(x, _at(b, ac, b.add(b.mul(r, i64(kp)), q), I8))
                b.store(b.add(b.load(rowsum, typ=I32), b.zext(x, I32)), rowsum)
        u2v = b.sub(ir.Constant(I32, kk * alpha), b.load(rowsum, typ=I32)) if beta else \
            ir.Constant(I32, 0)
        b.store(u2v, _at(b, u2, r, I32))

    # 3. the VNNI loops
    gemm = module.globals.get(f"{fn.name}.igemm") or emit_gemm_loops(
        module, target, f"{fn.name}.igemm", internal=True)
    b.call(gemm, [ac if copy_a else a_ptr, i64(kp), bp, cw, i64(np_), i64(mp), i64(np_),
                  i64(kp // 4), u1, u2, v1, v2])

    # 4. the epilogue over C
    ws = Buffer(f"{fn.name}.c", (mp, np_), "int32", BufferKind.LOCAL)
    em.bufs[ws.name] = cw
    at = Load(ws, (Var(spec.i), Var(spec.j)))
    body = (Store(spec.out, (Var(spec.i), Var(spec.j)), at) if spec.epilogue is None
            else _with_load(spec.epilogue, spec.acc, at))
    em.stmt(For(spec.i, Const(m), For(spec.j, Const(n), body)))
    em.b.call(free, [work])
    em.finish()
    return fn
