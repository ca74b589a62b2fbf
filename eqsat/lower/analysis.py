"""Generic traversals of the loop IR: children, rebuilding, substitution, accesses, affine forms.

Consumes LoopProgram nodes (:mod:`eqsat.lower.loops`); produces facts about them (the variables
an expression reads, the buffer accesses under a statement, the affine form of an index) and
rewritten nodes. Shared by the checker, the interpreter (its vectorization test) and the
schedule primitives, so that all three agree on what a loop body touches.

Rewriting is structural (``dataclasses.replace`` over the fields that hold nodes), so a new node
type needs no change here unless it binds a variable.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from eqsat.lower.loops import (
    INDEX,
    Accumulate,
    Allocate,
    BinaryOp,
    BinOp,
    Buffer,
    Const,
    Expr,
    For,
    Let,
    Load,
    Node,
    Stmt,
    Store,
    Var,
)


def children(node: Node) -> Iterator[Node]:
    """The expression and statement children of a node, in field order."""
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        if isinstance(v, Expr | Stmt):
            yield v
        elif isinstance(v, tuple):
            yield from (x for x in v if isinstance(x, Expr | Stmt))


def walk(node: Node) -> Iterator[Node]:
    """Every node under ``node`` (itself included), pre-order."""
    yield node
    for c in children(node):
        yield from walk(c)


def rebuild(node: Node, fn: Callable[[Node], Node]) -> Node:
    """A copy of ``node`` with each child ``c`` replaced by ``fn(c)`` (one level)."""
    changes = {}
    for f in dataclasses.fields(node):
        v = getattr(node, f.name)
        if isinstance(v, Expr | Stmt):
            changes[f.name] = fn(v)
        elif isinstance(v, tuple) and any(isinstance(x, Expr | Stmt) for x in v):
            changes[f.name] = tuple(fn(x) if isinstance(x, Expr | Stmt) else x for x in v)
    return dataclasses.replace(node, **changes) if changes else node


def substitute(node: Node, env: dict[str, Expr]) -> Node:
    """Replace free variables by expressions. Loop and let names are unique in a kernel (the
    checker enforces it), so no capture can happen."""
    if isinstance(node, Var):
        return env.get(node.name, node)
    return rebuild(node, lambda c: substitute(c, env))


def replace_buffer(node: Node, old: Buffer, new: Buffer, shift: Callable | None = None) -> Node:
    """Redirect loads, stores and accumulates of ``old`` to ``new``; ``shift`` maps the index."""
    node = rebuild(node, lambda c: replace_buffer(c, old, new, shift))
    if isinstance(node, Load | Store | Accumulate) and node.buffer == old:
        index = shift(node.index) if shift else node.index
        return dataclasses.replace(node, buffer=new, index=index)
    return node


def free_vars(node: Node) -> set[str]:
    """Names read by ``node`` that it does not bind itself."""
    if isinstance(node, Var):
        return {node.name}
    out: set[str] = set()
    for c in children(node):
        out |= free_vars(c)
    if isinstance(node, For):
        out.discard(node.var)
        out |= free_vars(node.extent)
    elif isinstance(node, Let):
        out = (free_vars(node.body) - {node.var.name}) | free_vars(node.value)
    return out


def outer_nest(body: Stmt) -> tuple[list[For], Stmt]:
    """The perfect loop nest ``body`` starts with (a kernel's output loops) and the statement
    under it."""
    nest: list[For] = []
    while isinstance(body, For):
        nest.append(body)
        body = body.body
    return nest, body


def loops(stmt: Stmt) -> Iterator[For]:
    return (n for n in walk(stmt) if isinstance(n, For))


def has_loop(stmt: Stmt) -> bool:
    return any(True for _ in loops(stmt))


@dataclass(frozen=True)
class Access:
    kind: str  # "load", "store" or "accumulate"
    buffer: Buffer
    index: tuple[Expr, ...]
    op: object = None  # the ReduceOp of an accumulate


def accesses(node: Node) -> list[Access]:
    """Every buffer access under ``node`` in program order (stores after the loads they read)."""
    out: list[Access] = []
    for c in children(node):
        out.extend(accesses(c))
    if isinstance(node, Load):
        out.append(Access("load", node.buffer, node.index))
    elif isinstance(node, Store):
        out.append(Access("store", node.buffer, node.index))
    elif isinstance(node, Accumulate):
        out.append(Access("accumulate", node.buffer, node.index, node.op))
    return out


def private_buffers(stmt: Stmt) -> set[Buffer]:
    """Buffers allocated under ``stmt`` (fresh per entry, hence private to an iteration)."""
    return {n.buffer for n in walk(stmt) if isinstance(n, Allocate)}


def written_buffer_conflicts(body: Stmt) -> dict[Buffer, tuple[str, tuple]]:
    """How each buffer written under ``body`` may be shared between iterations of a loop around
    it: ``buffer -> (how, index tuples)``.

    ``"reduction"``: only accumulated, with one op, never loaded nor stored: the iterations may
    combine in any order. ``"owned"``: anything else; iterations are independent exactly when
    the elements reached through the listed index tuples (over the inner loops) are disjoint
    between iterations. Buffers allocated under ``body`` are private and left out.
    """
    by_buf: dict[Buffer, list[Access]] = {}
    for a in accesses(body):
        by_buf.setdefault(a.buffer, []).append(a)
    private = private_buffers(body)
    out: dict[Buffer, tuple[str, tuple]] = {}
    for buf, accs in by_buf.items():
        if buf in private or all(a.kind == "load" for a in accs):
            continue
        indices = tuple(dict.fromkeys(a.index for a in accs))
        if all(a.kind == "accumulate" for a in accs) and len({a.op for a in accs}) == 1:
            out[buf] = ("reduction", indices)
        else:
            out[buf] = ("owned", indices)
    return out


# ---------------------------------------------------------------------------------- affine forms
def affine(e: Expr, names: set[str]) -> tuple[dict[str, int], Expr] | None:
    """``e`` as ``sum(c[v] * v for v in names) + rest`` with int coefficients and ``rest`` free of
    ``names``; None when ``e`` is not affine in ``names``."""
    if not (free_vars(e) & names):
        return {}, e
    if isinstance(e, Var):
        return {e.name: 1}, Const(0)
    if isinstance(e, BinOp) and e.op in (BinaryOp.ADD, BinaryOp.SUB):
        fa, fb = affine(e.a, names), affine(e.b, names)
        if fa is None or fb is None:
            return None
        sign = 1 if e.op is BinaryOp.ADD else -1
        coeffs = dict(fa[0])
        for v, c in fb[0].items():
            coeffs[v] = coeffs.get(v, 0) + sign * c
        return {v: c for v, c in coeffs.items() if c}, add(fa[1], fb[1], sign)
    if isinstance(e, BinOp) and e.op is BinaryOp.MUL:
        for x, k in ((e.a, e.b), (e.b, e.a)):
            if isinstance(k, Const) and (fx := affine(x, names)) is not None:
                return {v: c * k.value for v, c in fx[0].items()}, mul(fx[1], k.value)
    return None


def add(a: Expr, b: Expr, sign: int = 1) -> Expr:
    """``a + sign * b`` with zero operands folded away (keeps rewritten indices readable)."""
    if isinstance(b, Const) and b.value == 0:
        return a
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value + sign * b.value, a.dtype)
    if sign == 1 and isinstance(a, Const) and a.value == 0:
        return b
    return BinOp(BinaryOp.ADD if sign == 1 else BinaryOp.SUB, a, b)


def mul(a: Expr, k: int) -> Expr:
    if isinstance(a, Const):
        return Const(a.value * k, a.dtype)
    return a if k == 1 else BinOp(BinaryOp.MUL, a, Const(k, INDEX))


def const_int(e: Expr) -> int | None:
    return e.value if isinstance(e, Const) and isinstance(e.value, int) else None
