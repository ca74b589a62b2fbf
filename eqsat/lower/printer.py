"""The stable text form of a LoopProgram, for logs and golden tests (read like TVM's TIR script).

Consumes LoopProgram / Kernel / Stmt / Expr nodes; produces text. Example::

    program mm
      input A: float32[64, 32]
      output C: float32[64, 48]
      kernel mm(A, B, C):
        for i in parallel(64):
          for j in range(48):
            C[i, j] = float32(0.0)
            for k in range(32):
              C[i, j] += A[i, k] * B[k, j]

Choices: int64 constants print bare (they are index arithmetic), other constants as
``dtype(value)``; binary operators are infix with the fewest parentheses that keep the tree
unambiguous (a right operand of equal precedence is parenthesized, so ``a - (b - c)`` survives);
``min``/``max``/intrinsics/``select``/``cast`` print as calls; a loop's kind is the iterator's name
(``range``, ``parallel``, ``vectorized``, ``unrolled``) and annotations follow in brackets.
Lines are indented by two spaces per level; nothing depends on dict or set order.
"""

from __future__ import annotations

from eqsat.lower.loops import (
    INDEX,
    Accumulate,
    Allocate,
    BinaryOp,
    BinOp,
    Call,
    Cast,
    Cmp,
    Const,
    Expr,
    For,
    If,
    Kernel,
    Let,
    Load,
    LoopKind,
    LoopProgram,
    ReduceOp,
    Select,
    Seq,
    Stmt,
    Store,
    Var,
)

_PREC = {
    BinaryOp.OR: 1,
    BinaryOp.AND: 2,
    BinaryOp.ADD: 4,
    BinaryOp.SUB: 4,
    BinaryOp.MUL: 5,
    BinaryOp.DIV: 5,
    BinaryOp.FLOORDIV: 5,
    BinaryOp.MOD: 5,
}
_CMP_PREC = 3
_ATOM = 9
_ITER = {
    LoopKind.SERIAL: "range",
    LoopKind.PARALLEL: "parallel",
    LoopKind.VECTORIZED: "vectorized",
    LoopKind.UNROLLED: "unrolled",
    LoopKind.GPU_BLOCK: "gpu_blocks",
    LoopKind.GPU_THREAD: "gpu_threads",
}
_ACC = {ReduceOp.SUM: "+=", ReduceOp.PROD: "*=", ReduceOp.MAX: "max=", ReduceOp.MIN: "min="}


def _prec(e: Expr) -> int:
    if isinstance(e, BinOp):
        return _PREC.get(e.op, _ATOM)
    return _CMP_PREC if isinstance(e, Cmp) else _ATOM


def print_expr(e: Expr) -> str:
    if isinstance(e, Const):
        if e.dtype == INDEX:
            return str(e.value)
        return f"{e.dtype}({e.value!r})"
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Load):
        return f"{e.buffer.name}[{_index(e.index)}]"
    if isinstance(e, BinOp | Cmp):
        if isinstance(e, BinOp) and e.op in (BinaryOp.MIN, BinaryOp.MAX):
            return f"{e.op.value}({print_expr(e.a)}, {print_expr(e.b)})"
        p = _prec(e)
        a, b = print_expr(e.a), print_expr(e.b)
        a = f"({a})" if _prec(e.a) < p else a
        b = f"({b})" if _prec(e.b) <= p else b
        return f"{a} {e.op.value} {b}"
    if isinstance(e, Select):
        return f"select({print_expr(e.cond)}, {print_expr(e.a)}, {print_expr(e.b)})"
    if isinstance(e, Cast):
        return f"cast({e.dtype}, {print_expr(e.value)})"
    if isinstance(e, Call):
        return f"{e.intrinsic}({', '.join(print_expr(a) for a in e.args)})"
    raise TypeError(f"not an expression: {e!r}")


def _index(index: tuple[Expr, ...]) -> str:
    return ", ".join(print_expr(i) for i in index)


def print_stmt(s: Stmt, indent: int = 0) -> list[str]:
    pad = "  " * indent
    if isinstance(s, Seq):
        return [line for c in s.stmts for line in print_stmt(c, indent)]
    if isinstance(s, For):
        notes = "".join(f" [{k}={v}]" for k, v in s.annotations)
        head = f"{pad}for {s.var} in {_ITER[s.kind]}({print_expr(s.extent)}){notes}:"
        return [head, *print_stmt(s.body, indent + 1)]
    if isinstance(s, Store):
        return [f"{pad}{s.buffer.name}[{_index(s.index)}] = {print_expr(s.value)}"]
    if isinstance(s, Accumulate):
        return [f"{pad}{s.buffer.name}[{_index(s.index)}] {_ACC[s.op]} {print_expr(s.value)}"]
    if isinstance(s, Let):
        head = f"{pad}let {s.var.name}: {s.var.dtype} = {print_expr(s.value)}:"
        return [head, *print_stmt(s.body, indent + 1)]
    if isinstance(s, If):
        lines = [f"{pad}if {print_expr(s.cond)}:", *print_stmt(s.then, indent + 1)]
        if s.orelse is not None:
            lines += [f"{pad}else:", *print_stmt(s.orelse, indent + 1)]
        return lines
    if isinstance(s, Allocate):
        return [f"{pad}allocate {s.buffer}:", *print_stmt(s.body, indent + 1)]
    raise TypeError(f"not a statement: {s!r}")


def print_kernel(k: Kernel, indent: int = 0) -> str:
    head = f"{'  ' * indent}kernel {k.name}({', '.join(p.name for p in k.params)}):"
    return "\n".join([head, *print_stmt(k.body, indent + 1)])


def print_program(p: LoopProgram) -> str:
    sizes = f"  # sizes: {', '.join(p.sizes)}" if p.sizes else ""
    lines = [f"program {p.name}{sizes}"]
    lines += [f"  {b.kind.value} {b}" for b in p.buffers]
    lines += [print_kernel(k, 1) for k in p.kernels]
    return "\n".join(lines)


def to_text(ir: Kernel | LoopProgram) -> str:
    """The printed form of a kernel or a whole program."""
    return print_kernel(ir) if isinstance(ir, Kernel) else print_program(ir)
