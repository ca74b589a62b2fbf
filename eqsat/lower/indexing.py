"""Index arithmetic for lowering: graph dims as loop-IR expressions, folded integer arithmetic,
and the index maps that turn broadcasting and reshapes into arithmetic instead of copies.

Consumes TensorGraph dims (``int`` or ``str`` symbols, including products such as
``"batch*8"`` that shape inference writes for reshaped symbolic dims); produces int64
:class:`~eqsat.lower.loops.Expr` nodes.

Design choices (why):
- A symbolic dim becomes a size param of the LoopProgram. Buffer dims must be identifiers, so a
  product dim ``"batch*8"`` is named ``batch_x8`` (:func:`size_name`), but in index arithmetic it
  is written over its factors (``batch * 8``, :func:`dim`): a reshape that splits ``batch*8``
  into ``batch`` and ``8`` then needs no division. ``lower`` rewrites a factor that no param of
  a kernel carries in terms of one that does (``batch_x8 // 8``), because a kernel only sees the
  sizes of its own params; :func:`size_values` binds the product params from their factors at
  run time.
- Builders fold constants and identities (``x * 1``, ``x + 0``, ``x // 1``, ``x % 1``) so
  printed programs stay readable and the interpreter does not do useless work.
- A reshape maps indices group by group: runs of input and output dims with equal products
  (``[b, 8, 32] -> [b, 8, 4, 8]`` has groups ``b``, ``8``, ``32 | 4, 8``) are flattened and
  unflattened separately, so dims a reshape keeps stay plain loop variables.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from eqsat.lower.loops import INDEX, BinaryOp, BinOp, Const, Expr, Select, Var, as_expr

Dim = int | str


# ------------------------------------------------------------------------------- size params
def _factors(d: str) -> list[str] | None:
    parts = d.split("*")
    if all(p.isidentifier() or p.isdigit() for p in parts):
        return parts
    return None


def size_name(d: str) -> str:
    """The size-param name of a symbolic dim: itself when an identifier, else a sanitized form
    (``batch*8`` -> ``batch_x8``)."""
    if d.isidentifier():
        return d
    name = re.sub(r"\W+", "_", d.replace("*", "_x")).strip("_")
    return name if name and name[0].isalpha() else f"d_{name}"


def dim(d: Dim) -> Expr:
    """A graph dim as an int64 expression (products written over their factors)."""
    if isinstance(d, int):
        return Const(d)
    parts = _factors(d)
    if parts is None or len(parts) == 1:
        return Var(size_name(d))
    out: Expr = Const(1)
    for p in parts:
        out = mul(out, Const(int(p)) if p.isdigit() else Var(p))
    return out


def size_values(names: Sequence[str], dims: Mapping[str, int]) -> dict[str, int]:
    """Values of the product size params ``names`` (``batch_x8``) from the bound atoms."""
    out = {}
    for d in names:
        parts = _factors(d)
        if parts is None or len(parts) < 2 or not all(p.isdigit() or p in dims for p in parts):
            continue
        v = 1
        for p in parts:
            v *= int(p) if p.isdigit() else dims[p]
        out[size_name(d)] = v
    return out


def atom_rewrites(needed: set[str], have: Sequence[Dim]) -> dict[str, Expr]:
    """For each size atom in ``needed`` that no dim of ``have`` names directly, an expression
    over a product dim of ``have`` that contains it (``batch`` -> ``batch_x8 // 8``)."""
    direct = {size_name(d) for d in have if isinstance(d, str)}
    out: dict[str, Expr] = {}
    for atom in sorted(needed - direct):
        for d in have:
            parts = _factors(d) if isinstance(d, str) else None
            if not parts or atom not in parts:
                continue
            rest = list(parts)
            rest.remove(atom)
            if all(p.isdigit() for p in rest):
                k = 1
                for p in rest:
                    k *= int(p)
                out[atom] = floordiv(Var(size_name(d)), Const(k))
                break
    return out


# ------------------------------------------------------------------------ folded arithmetic
def _int(e: Expr) -> int | None:
    return e.value if isinstance(e, Const) and e.dtype == INDEX else None


def add(a, b) -> Expr:
    a, b = as_expr(a), as_expr(b)
    x, y = _int(a), _int(b)
    if x is not None and y is not None:
        return Const(x + y)
    if y == 0:
        return a
    if x == 0:
        return b
    if y is not None and y < 0:
        return BinOp(BinaryOp.SUB, a, Const(-y))
    return BinOp(BinaryOp.ADD, a, b)


def sub(a, b) -> Expr:
    b = as_expr(b)
    y = _int(b)
    if y is not None:
        return add(a, Const(-y))
    a = as_expr(a)
    if a == b:
        return Const(0)
    return BinOp(BinaryOp.SUB, a, b)


def mul(a, b) -> Expr:
    a, b = as_expr(a), as_expr(b)
    x, y = _int(a), _int(b)
    if x is not None and y is not None:
        return Const(x * y)
    if x == 0 or y == 0:
        return Const(0)
    if x == 1:
        return b
    if y == 1:
        return a
    if x is not None:
        return BinOp(BinaryOp.MUL, b, a)
    return BinOp(BinaryOp.MUL, a, b)


def floordiv(a, b) -> Expr:
    a, b = as_expr(a), as_expr(b)
    x, y = _int(a), _int(b)
    if x is not None and y is not None:
        return Const(x // y)
    if y == 1 or x == 0:
        return a
    if a == b:
        return Const(1)
    return BinOp(BinaryOp.FLOORDIV, a, b)


def mod(a, b) -> Expr:
    a, b = as_expr(a), as_expr(b)
    x, y = _int(a), _int(b)
    if x is not None and y is not None:
        return Const(x % y)
    if y == 1 or x == 0 or a == b:
        return Const(0)
    return BinOp(BinaryOp.MOD, a, b)


def product(dims: Sequence[Dim]) -> Expr:
    out: Expr = Const(1)
    for d in dims:
        out = mul(out, dim(d))
    return out


def wrap_negative(i: Expr, n: Dim) -> Expr:
    """A Gather-style index that may be negative (counted from the end)."""
    if (v := _int(i)) is not None:
        return i if v >= 0 else add(dim(n), i)
    return Select(i < Const(0), add(i, dim(n)), i)


# ------------------------------------------------------------------------------ index maps
def broadcast_index(idx: Sequence[Expr], in_shape: Sequence[Dim], out_shape: Sequence[Dim]):
    """The index into an input of ``in_shape`` broadcast to ``out_shape`` (numpy rules)."""
    lead = len(out_shape) - len(in_shape)
    return tuple(
        Const(0) if d == 1 and out_shape[lead + k] != 1 else idx[lead + k]
        for k, d in enumerate(in_shape)
    )


def flatten(idx: Sequence[Expr], shape: Sequence[Dim]) -> Expr:
    """Row-major flat offset of ``idx`` in ``shape``."""
    flat: Expr = Const(0)
    for i, d in zip(idx, shape, strict=True):
        flat = add(mul(flat, dim(d)), i)
    return flat


def unflatten(flat: Expr, shape: Sequence[Dim]) -> tuple[Expr, ...]:
    """The row-major index of a flat offset into ``shape`` (the outermost needs no modulo)."""
    out: list[Expr] = []
    stride: Expr = Const(1)
    for k in range(len(shape) - 1, -1, -1):
        q = floordiv(flat, stride)
        out.append(q if k == 0 else mod(q, dim(shape[k])))
        stride = mul(stride, dim(shape[k]))
    return tuple(reversed(out))


def _size(dims: Sequence[Dim]) -> tuple[float, tuple[int, tuple[str, ...]]]:
    """(a comparable magnitude, the exact symbolic product) of ``dims``."""
    from eqsat.egraph.opdefs.base import sym_product

    k, syms = sym_product(dims)
    return k * 1e6 ** len(syms), (k, syms)


def _groups(a: Sequence[Dim], b: Sequence[Dim]) -> list[tuple[int, int, int, int]] | None:
    """Runs ``(a0, a1, b0, b1)`` with ``prod(a[a0:a1]) == prod(b[b0:b1])``, covering both;
    a dim of size 1 is a run of its own."""
    out, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        if i < len(a) and a[i] == 1:
            out.append((i, i + 1, j, j))
            i += 1
            continue
        if j < len(b) and b[j] == 1:
            out.append((i, i, j, j + 1))
            j += 1
            continue
        if i == len(a) or j == len(b):
            return None
        i0, j0 = i, j
        i, j = i + 1, j + 1
        while _size(a[i0:i])[1] != _size(b[j0:j])[1]:
            if _size(a[i0:i])[0] < _size(b[j0:j])[0] and i < len(a):
                i += 1
            elif j < len(b):
                j += 1
            else:
                return None
        out.append((i0, i, j0, j))
    return out


def reshape_index(idx: Sequence[Expr], in_shape: Sequence[Dim], out_shape: Sequence[Dim]):
    """The input index of a reshape's output element ``idx``, group by group."""
    groups = _groups(list(in_shape), list(out_shape))
    if groups is None:  # products that cannot be matched symbolically: one group
        groups = [(0, len(in_shape), 0, len(out_shape))]
    res: list[Expr] = []
    for a0, a1, b0, b1 in groups:
        if a1 - a0 == 1 and b1 - b0 == 1:
            res.append(idx[b0])
        elif a1 > a0:
            flat = flatten(idx[b0:b1], out_shape[b0:b1])
            res.extend(unflatten(flat, in_shape[a0:a1]))
    return tuple(res)
