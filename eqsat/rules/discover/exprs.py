"""Typed expressions for rule discovery: enumeration, shape inference, fingerprints, printing.

An expression is a nested tuple: a leaf ``("x",)`` or ``(op, child, ...)``. ``("smul", e)`` is
``e`` times the 0-d scalar variable ``c``. Two worlds of variables, never mixed by an op:
matrices ``x, y, z, w`` (matmul, transpose) and rank-4 tensors ``X, Y, Z`` (NCHW images and
OIHW kernels: convolutions, pools, enlarge); element-wise ops, concat and split work on both.

**Shapes are symbolic and inferred, not enumerated.** Every dim is a *dim expression*: a sum
of atoms (``("a",)``, or ``("a", "b")`` for ``a + b``, what a concatenation makes), or a
literal size (``("3",)``: a convolution's kernel is 3x3 or 1x1). Each expression gets its most
general typing by unification (:class:`Typing`): ``matmul`` unifies the contraction dims,
element-wise ops unify whole shapes (no broadcasting: a generated rule is guarded by its
operands' shapes, so it never fires on a broadcast), ``concat`` adds the axis dims, a split
takes the first atom of the axis (``split0l``, rows ``0..a``) or the rest (``split0r``, rows
``a..a+b``), making a plain dim a sum of two fresh atoms first. A sum unifies with a sum of the
same length component by component (``a + b = c + d`` as ``a = c, b = d``: a restriction, never
unsound, because the rule then carries that typing as its guard) and with a single atom by
binding it. A split's first piece stays one atom (*rigid*): binding it to a sum later would
move the split point. An expression that cannot be typed is dropped.

**Convolutions** have stride 1. ``conv3`` and ``conv1`` are "same" (padding ``(k - 1) / 2``, so
the output keeps the input's H and W), ``conv3v`` is "valid" (no padding): its input's H and W
are typed ``h + 2`` (a sum with the literal 2) and its output's ``h``. The kernel's spatial dims
are the literal 3 or 1; ``enlarge`` zero-pads a 1x1 kernel to 3x3 (TASO's enlarge). The pools
are 3x3 with stride 1 and padding 1 (the average over the window's inside: ONNX's
``count_include_pad=0``) or none (``maxpoolv``, ``avgpoolv``: typed like ``conv3v``).

**Fingerprints** evaluate an expression on random integer tensors modulo a prime (exact
arithmetic), every atom of size :data:`SIZE`; a variable's values depend on its name and its
concrete shape. ``relu`` becomes a fixed polynomial (TASO): identities that only move relu
survive, those that depend on what relu is (idempotence) do not. Max pooling compares residues:
identities that only move it survive, those that depend on order (``max(x) + y``) do not.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from eqsat.egraph.opdefs.base import Kind
from eqsat.egraph.ops import OPS as TABLE

PRIME = 2_147_483_647  # 2^31 - 1: a product of two residues fits in int64 before the reduction
SIZE = 3  # every dim atom is this big when fingerprinting
VARS = ("x", "y", "z", "w")  # matrices; the first ``variables`` of them are enumerated
VARS4 = ("X", "Y", "Z", "W")  # rank-4 tensors (NCHW images, OIHW kernels), for the conv ops
SCALAR = "c"
SPLITS = ("split0l", "split0r", "split1l", "split1r")  # the two pieces of a split, per axis
CONV = ("conv3", "conv1", "conv3v")  # stride 1: "same" 3x3 and 1x1, and "valid" 3x3
# 3x3, stride 1: padding 1 (avgpool: count_include_pad=0) and "valid" (no padding)
POOLS = ("maxpool", "avgpool", "maxpoolv", "avgpoolv")
UNARY = ("relu", "neg", "transpose", "smul", *SPLITS, *POOLS, "enlarge")
BINARY = ("add", "sub", "mul", "matmul", "concat0", "concat1", *CONV)
OPS = UNARY + BINARY
RANK2_OPS = ("matmul", "transpose")
RANK4_OPS = (*CONV, *POOLS, "enlarge")
OP_RANK = {**dict.fromkeys(RANK2_OPS, 2), **dict.fromkeys(RANK4_OPS, 4)}  # operands' rank
VALID = ("conv3v", "maxpoolv", "avgpoolv")  # "valid" windows (no padding): TASO's other padding
DEFAULT_OPS = (
    "matmul", "add", "mul", "smul", "transpose", "relu", "concat0", "concat1", *SPLITS,
    "conv3", "conv1", "maxpool", "avgpool", "enlarge", *VALID,
)  # fmt: skip
ALIASES = {
    "concat": ("concat0", "concat1"),
    "scalar-mul": ("smul",),
    "split": SPLITS,
    "slice": SPLITS,
    "conv": ("conv3", "conv1"),
    "pooling": ("maxpool", "avgpool"),
    "pool": ("maxpool", "avgpool"),
    "valid": VALID,
}


def worlds(ops: Sequence[str]) -> tuple[int, ...]:
    """The variable ranks an op set is enumerated over: matrices unless only rank-4 ops are
    asked for, rank-4 tensors when any rank-4 op is (element-wise ops, concat and split work
    on both; no op mixes them, so a mixed expression is ill-typed anyway)."""
    out = []
    if any(o in RANK2_OPS for o in ops) or not any(o in RANK4_OPS for o in ops):
        out.append(2)
    if any(o in RANK4_OPS for o in ops):
        out.append(4)
    return tuple(out)


MAX_VARS4 = 3  # rank-4 variables enumerated at most (a fourth: measured below)


def leaves(ops: Sequence[str], variables: int) -> list[Expr]:
    names = {2: VARS[:variables], 4: VARS4[: min(variables, MAX_VARS4)]}
    return [(v,) for r in worlds(ops) for v in names[r]]


def family(op: str) -> str:
    """The op family a rule is named after: ``concat0`` -> concat, ``split1r`` -> split."""
    named = {**dict.fromkeys(SPLITS, "split"), **dict.fromkeys(CONV, "conv")}
    named.update(dict.fromkeys(POOLS, "pool"))
    return named.get(op, op.removesuffix("0").removesuffix("1"))


Expr = tuple
Dim = tuple  # a sum of atoms
Shape = tuple  # of Dims; () for the scalar


def size(e: Expr) -> int:
    return 0 if len(e) == 1 else 1 + sum(size(c) for c in e[1:])


def variables(e: Expr) -> list[str]:
    """Variables in order of first use (the scalar ``c`` of ``smul`` included)."""
    out: list[str] = []

    def go(t):
        if len(t) == 1:
            if t[0] not in out:
                out.append(t[0])
            return
        for c in t[1:]:
            go(c)
        if t[0] == "smul" and SCALAR not in out:
            out.append(SCALAR)

    go(e)
    return out


def expand_ops(ops: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for o in ops:
        for x in ALIASES.get(o, (o,)):
            if x not in OPS:
                raise ValueError(f"unknown op {o!r}; known: {sorted(set(OPS) | set(ALIASES))}")
            if x not in out:
                out.append(x)
    return tuple(out)


# ---------------------------------------------------------------------------- typing


class TypeFail(Exception):
    pass


class Typing:
    """Unification of dim expressions; variables get matrices of fresh atoms."""

    def __init__(self) -> None:
        self.subst: dict[str, Dim] = {}
        self.shapes: dict[str, Shape] = {}
        self.rigid: set[str] = set()  # the first piece of every split: never a sum later
        self._fresh = 0

    def fresh(self) -> Dim:
        self._fresh += 1
        return (f"_{self._fresh}",)

    def var(self, name: str) -> Shape:
        if name not in self.shapes:
            rank = 0 if name == SCALAR else 4 if name in VARS4 else 2
            self.shapes[name] = tuple(self.fresh() for _ in range(rank))
        return self.shapes[name]

    def resolve(self, d: Dim) -> Dim:
        out: list[str] = []
        for a in d:
            out += self.resolve(self.subst[a]) if a in self.subst else [a]
        return tuple(out)

    def _fixed(self, a: str) -> int:
        """0: a free atom; 1: a split's first piece (stays one atom); 2: a literal size."""
        return 2 if a.isdigit() else 1 if a in self.rigid else 0

    def unify(self, d1: Dim, d2: Dim) -> None:
        r1, r2 = self.resolve(d1), self.resolve(d2)
        if r1 == r2:
            return
        if len(r1) > 1 and len(r2) > 1:  # a sum with a sum: part by part (a restriction)
            if len(r1) != len(r2):
                raise TypeFail(f"{r1} vs {r2}")
            for a, b in zip(r1, r2, strict=True):
                self.unify((a,), (b,))
            return
        if len(r1) > 1 or (len(r2) == 1 and self._fixed(r2[0]) < self._fixed(r1[0])):
            r1, r2 = r2, r1  # bind the freest atom
        a, fixed = r1[0], self._fixed(r1[0])
        if a in r2 or (fixed and (len(r2) > 1 or fixed == 2 or self._fixed(r2[0]) == 2)):
            raise TypeFail(f"{a} vs {r2}")
        self.subst[a] = r2

    def unify_shapes(self, s1: Shape, s2: Shape) -> None:
        if len(s1) != len(s2):
            raise TypeFail("ranks")
        for a, b in zip(s1, s2, strict=True):
            self.unify(a, b)

    def infer(self, e: Expr) -> Shape:
        if len(e) == 1:
            return self.var(e[0])
        op, *kids = e
        s = [self.infer(k) for k in kids]
        if op in OP_RANK and any(len(x) != OP_RANK[op] for x in s):
            raise TypeFail(f"{op} takes rank {OP_RANK[op]}")
        if op == "smul":
            self.var(SCALAR)
        elif op in ("add", "sub", "mul"):
            self.unify_shapes(s[0], s[1])
        elif op == "matmul":
            self.unify(s[0][1], s[1][0])
        elif op in ("concat0", "concat1"):
            ax = int(op[-1])
            self.unify_shapes(s[0][:ax] + s[0][ax + 1 :], s[1][:ax] + s[1][ax + 1 :])
        elif op in SPLITS:
            ax = int(op[5])
            if len(s[0]) <= ax:
                raise TypeFail("split of a scalar")
            d = self.resolve(s[0][ax])
            if len(d) == 1:  # split a plain dim: it becomes a sum of two fresh atoms
                self.unify(d, self.fresh() + self.fresh())
                d = self.resolve(d)
            self.rigid.add(d[0])
            s[0] = s[0][:ax] + (d,) + s[0][ax + 1 :]  # out_shape reads the split dim's atoms
        elif op in CONV:  # x: N C H W, k: O C K K
            k = (_kernel(op),)
            self.unify(s[1][2], k)
            self.unify(s[1][3], k)
            self.unify(s[0][1], s[1][1])
        elif op == "enlarge":  # a 1x1 kernel zero-padded to 3x3
            self.unify(s[0][2], ("1",))
            self.unify(s[0][3], ("1",))
        elif op not in ("relu", "neg", "transpose", *POOLS):
            raise ValueError(op)
        if op in (*CONV, *POOLS) and _valid(op):
            # no padding: H and W are (out + 2); the output reads them resolved
            for ax in (2, 3):
                self.unify(s[0][ax], self.fresh() + ("2",))
            s[0] = s[0][:2] + tuple(self.resolve(d) for d in s[0][2:])
        return out_shape(op, s)  # a sum of unresolved dims resolves like the resolved ones

    def final(self, shape: Shape | None = None) -> dict[str, Shape]:
        """Variable shapes (and ``shape``, under key ``""``) with atoms renamed ``a, b, ...`` in
        order of first appearance (x, y, z, c)."""
        names: dict[str, str] = {}
        out: dict[str, Shape] = {}
        items = [(v, self.shapes[v]) for v in (*VARS, *VARS4, SCALAR) if v in self.shapes]
        if shape is not None:
            items.append(("", shape))
        for v, s in items:
            dims = []
            for d in s:
                atoms = []
                for a in self.resolve(d):
                    if not a.isdigit():  # a literal size keeps its name
                        names.setdefault(a, atom_name(len(names)))
                    atoms.append(names.get(a, a))
                dims.append(tuple(atoms))
            out[v] = tuple(dims)
        return out


def atom_name(k: int) -> str:
    """The ``k``-th dim atom's name in a rule's typing: ``a, b, .., z``, then ``a1, ..``."""
    letters = "abcdefghijkmnopqrstuvwxyz"  # not l: it reads like the literal size 1
    return letters[k % len(letters)] + ("" if k < len(letters) else str(k // len(letters)))


def typing(*es: Expr) -> dict[str, Shape] | None:
    """The most general typing under which every expression is well-typed, or None (the first
    expression's shape under ``""``; with two expressions their shapes must agree)."""
    t = Typing()
    try:
        shapes = [t.infer(e) for e in es]
        for s in shapes[1:]:
            t.unify_shapes(shapes[0], s)
    except TypeFail:
        return None
    return t.final(shapes[0])


def concrete(shape: Shape, sizes: dict[str, int] | None = None) -> tuple[int, ...]:
    """Concrete dims: literal atoms are their size, the others ``sizes`` (default SIZE)."""
    return tuple(
        sum(int(a) if a.isdigit() else (sizes or {}).get(a, SIZE) for a in d) for d in shape
    )


# ---------------------------------------------------------------------------- enumeration


def grow(op: str, by_size: dict[int, list[Expr]], n: int) -> list[Expr]:
    """Every expression with ``op`` at the root and ``n`` ops in all."""
    out = []
    if op in UNARY:
        out = [(op, c) for c in by_size[n - 1]]
    else:
        for k in range(n):
            out += [(op, a, b) for a in by_size[k] for b in by_size[n - 1 - k]]
    return out


def well_typed(exprs: Sequence[Expr]) -> list[Expr]:
    return [e for e in exprs if typing(e) is not None]


# ---------------------------------------------------------------------------- evaluation


def _values(name: str, shape: tuple[int, ...], seed: int, mod: bool) -> np.ndarray:
    rng = np.random.default_rng([seed, zlib.crc32(f"{name}{shape}".encode())])
    if mod:
        return rng.integers(1, PRIME, shape, dtype=np.int64)
    return rng.standard_normal(shape)


def _relu_mod(a: np.ndarray) -> np.ndarray:
    return (a * a % PRIME * 7 + a * 3 + 11) % PRIME  # a fixed pseudo-random polynomial


def _matmul_mod(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.int64)
    for k in range(a.shape[1]):  # one rank-1 product at a time: no int64 overflow
        out = (out + np.outer(a[:, k], b[k, :]) % PRIME) % PRIME
    return out


def _windows(x: np.ndarray, k: int, valid: bool = False):
    """The k x k windows of ``x`` (N C H W) padded by (k - 1) / 2 (none when ``valid``): per
    offset, the shifted input and where it is inside (not padding)."""
    p = 0 if valid else (k - 1) // 2
    h, w = (n + 2 * p - k + 1 for n in x.shape[2:])
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    inside = np.pad(np.ones(x.shape[2:], dtype=bool), p)
    for dy in range(k):
        for dx in range(k):
            yield dy, dx, xp[:, :, dy : dy + h, dx : dx + w], inside[dy : dy + h, dx : dx + w]


def _kernel(op: str) -> str:
    """A convolution's kernel size, a literal: ``conv3``, ``conv3v`` -> ``"3"``."""
    return op[4]


def _valid(op: str) -> bool:
    return op.endswith("v")


def _conv_mod(x: np.ndarray, w: np.ndarray, valid: bool = False) -> np.ndarray:
    windows = list(_windows(x, w.shape[2], valid))
    out = np.zeros((x.shape[0], w.shape[0], *windows[0][2].shape[2:]), dtype=x.dtype)
    for dy, dx, xs, _ in windows:
        for ci in range(x.shape[1]):  # one channel at a time: no int64 overflow
            out = (out + xs[:, None, ci] * w[None, :, ci, dy, dx, None, None] % PRIME) % PRIME
    return out


_INVERSE = {n: pow(n, PRIME - 2, PRIME) for n in range(1, 10)}  # 1 / n modulo PRIME


def _pool_mod(x: np.ndarray, op: str) -> np.ndarray:
    """3x3 pooling, stride 1, padding 1 or none (valid), on residues: the largest residue of
    the window's inside, or their sum times the inverse of the inside's count (ONNX
    count_include_pad=0)."""
    windows = list(_windows(x, 3, _valid(op)))
    if op.startswith("maxpool"):
        best = None
        for _, _, xs, inside in windows:
            v = np.where(inside, xs, -1)  # residues are >= 0
            best = v if best is None else np.maximum(best, v)
        return best
    total = np.zeros_like(windows[0][2])
    count = np.zeros(total.shape[2:], dtype=np.int64)
    for _, _, xs, inside in windows:
        total = (total + xs) % PRIME
        count += inside
    return total * np.vectorize(_INVERSE.get)(count) % PRIME


def as_op(op: str, e: Expr, shapes: dict[str, Shape], sizes=None) -> tuple[str, dict, list]:
    """The op-table op a discovery op stands for: (ONNX op, attributes, literal inputs after
    the operands). :func:`evaluate` runs the op table's numpy semantics through it."""
    if op == "transpose":
        return "Transpose", {"perm": (1, 0)}, []
    if op in ("concat0", "concat1"):
        return "Concat", {"axis": int(op[-1])}, []
    if op in SPLITS:
        lo, hi = (concrete((b,), sizes)[0] for b in split_bounds(e, shapes))
        return "Slice", {}, [np.array([b], dtype=np.int64) for b in (lo, hi, int(op[5]))]
    if op == "enlarge":
        return "Pad", {"mode": "constant"}, [np.array([0, 0, 1, 1, 0, 0, 1, 1], dtype=np.int64)]
    if op in CONV:
        k, p = int(_kernel(op)), 0 if _valid(op) else (int(_kernel(op)) - 1) // 2
        return "Conv", {"kernel_shape": (k, k), "pads": (p,) * 4}, []
    if op in POOLS:
        p = 0 if _valid(op) else 1
        name = "MaxPool" if op.startswith("maxpool") else "AveragePool"
        return name, {"kernel_shape": (3, 3), "pads": (p,) * 4, "count_include_pad": 0}, []
    name = {"smul": "Mul", "add": "Add", "sub": "Sub", "mul": "Mul", "neg": "Neg"}.get(op)
    return name or {"relu": "Relu", "matmul": "MatMul"}[op], {}, []


def out_shape(op: str, s: list[Shape]) -> Shape:
    """The shape of ``op`` on operands of shapes ``s``, already unified (a split's dim
    resolved): a split's pieces are the first atom of its dim and the rest (the typing keeps
    that first atom one atom: it is rigid). :meth:`Typing.infer` and :func:`shape_of` share it."""
    if op == "transpose":
        return (s[0][1], s[0][0])
    if op == "matmul":
        return (s[0][0], s[1][1])
    if op in ("concat0", "concat1"):
        ax = int(op[-1])
        return s[0][:ax] + (s[0][ax] + s[1][ax],) + s[0][ax + 1 :]
    if op in SPLITS:
        ax, d = int(op[5]), s[0][int(op[5])]
        return s[0][:ax] + ((d[:1] if op[-1] == "l" else d[1:]),) + s[0][ax + 1 :]
    if op in CONV:
        if _valid(op):  # H + 2 -> H: the dim's last atom is the literal 2 (the typing's)
            return (s[0][0], s[1][0], s[0][2][:-1], s[0][3][:-1])
        return (s[0][0], s[1][0], s[0][2], s[0][3])
    if op in POOLS and _valid(op):
        return (*s[0][:2], s[0][2][:-1], s[0][3][:-1])
    if op == "enlarge":
        return (s[0][0], s[0][1], ("3",), ("3",))
    return s[0]


def shape_of(e: Expr, shapes: dict[str, Shape]) -> Shape:
    """The symbolic shape of ``e`` under a final typing (variable shapes, atoms named): no
    unification left to do."""
    if len(e) == 1:
        return shapes[e[0]]
    return out_shape(e[0], [shape_of(k, shapes) for k in e[1:]])


def split_bounds(e: Expr, shapes: dict[str, Shape]) -> tuple[tuple, tuple]:
    """A split's (start, end) on its axis, each a tuple of atoms summed (``()`` is 0)."""
    d = shape_of(e[1], shapes)[int(e[0][5])]
    return ((), d[:1]) if e[0][-1] == "l" else (d[:1], d)


def evaluate(
    e: Expr, shapes: dict[str, Shape], seed: int = 1, mod: bool = True, sizes=None
) -> np.ndarray:
    """``e`` on the inputs its typing ``shapes`` gives; modulo :data:`PRIME` or in float64.

    In float64 every op runs the op table's numpy semantics (:func:`as_op`). Modulo PRIME the
    injective ops do too (an index map commutes with taking residues: the same elements move),
    and the arithmetic is the residue arithmetic below, the fingerprint's own semantics: relu
    is a fixed polynomial and max pooling compares residues (see the module's docstring)."""
    env = {v: _values(v, concrete(s, sizes), seed, mod) for v, s in shapes.items() if v}

    def go(t):
        if len(t) == 1:
            return env[t[0]]
        op, *kids = t
        v = [go(c) for c in kids] + ([env[SCALAR]] if op == "smul" else [])
        name, attrs, literals = as_op(op, t, shapes, sizes)
        d = TABLE[name]
        if not mod or d.kind is Kind.INJECTIVE:
            return d.run([*v, *literals], attrs)[0]
        if name in ("MaxPool", "AveragePool"):
            return _pool_mod(v[0], op)
        if name == "Conv":
            return _conv_mod(v[0], v[1], _valid(op))
        return _MOD[name](*v)

    return go(e)


# residue arithmetic of the element-wise ops and matmul, keyed by the op table's names
_MOD = {
    "Add": lambda a, b: (a + b) % PRIME,
    "Sub": lambda a, b: (a - b) % PRIME,
    "Mul": lambda a, b: a * b % PRIME,
    "Neg": lambda a: (-a) % PRIME,
    "Relu": _relu_mod,
    "MatMul": _matmul_mod,
}


def fingerprint(e: Expr) -> tuple | None:
    """(hash of the value mod PRIME, the value's shape); None when ``e`` is ill-typed. The
    variables' shapes are not part of it: a variable's values depend on its concrete shape, so
    expressions that use it at other shapes differ anyway, and ``split0l(concat0(x, y))`` must
    meet ``x`` although it also reads ``y``."""
    shapes = typing(e)
    if shapes is None:
        return None
    value = evaluate(e, shapes)
    digest = hashlib.blake2b(value.tobytes(), digest_size=8).hexdigest()
    return (digest, value.shape)  # not hash(): it differs between worker processes


# ---------------------------------------------------------------------------- printing


def _ivec(*xs) -> str:
    return f"Vec[i64]({', '.join(f'i64({x})' for x in xs)})"


def _size_text(atoms: tuple) -> str:
    return " + ".join(f"size_{a}" for a in atoms) or "i64(0)"


def to_text(e: Expr, shapes: dict[str, Shape] | None = None) -> str:
    """The printed form of a side, as :class:`~eqsat.rules.base.Rule` prints it. A split is a
    one-axis Slice whose bounds name the atoms' sizes (``size_a``): the typing ``shapes`` is
    needed for those. The namespace that evaluates the text binds them (an egglog ``i64`` in
    a rule, an int in a proof)."""
    if len(e) == 1:
        return e[0]
    op, *kids = e
    k = [to_text(c, shapes) for c in kids]
    if op == "smul":
        return f"Tensor.mul({k[0]}, {SCALAR})"
    if op == "transpose":
        return f"Tensor.transpose({k[0]}, Vec[i64](i64(1), i64(0)))"
    if op in ("concat0", "concat1"):
        return f"Tensor.concat(Vec[Tensor]({k[0]}, {k[1]}), i64({op[-1]}))"
    if op in CONV:
        kk = _kernel(op)
        p = 0 if _valid(op) else (int(kk) - 1) // 2
        return (
            f"Tensor.conv({k[0]}, {k[1]}, Tensor.none(), i64(1), {_ivec(1, 1)}, "
            f"{_ivec(p, p, p, p)}, {_ivec(1, 1)}, {_ivec(kk, kk)})"
        )
    if op in POOLS:  # the last flag: storage_order (max) or count_include_pad (average)
        ctor = "max_pool" if op.startswith("maxpool") else "average_pool"
        p = 0 if _valid(op) else 1
        return (
            f"Tensor.{ctor}({k[0]}, {_ivec(3, 3)}, {_ivec(1, 1)}, {_ivec(p, p, p, p)}, "
            f"{_ivec(1, 1)}, i64(0), i64(0))"
        )
    if op == "enlarge":
        pads = _ivec(0, 0, 1, 1, 0, 0, 1, 1)
        return f'Tensor.pad({k[0]}, Tensor.ints({pads}), Tensor.none(), Tensor.none(), "constant")'
    if op in SPLITS:
        if shapes is None:
            raise ValueError("printing a split needs the typing")
        lo, hi = (_size_text(b) for b in split_bounds(e, shapes))
        ints = [f"Tensor.ints(Vec[i64]({b}))" for b in (lo, hi, f"i64({op[5]})")]
        return f"Tensor.slice({k[0]}, {', '.join(ints)}, Tensor.none())"
    return f"Tensor.{op}({', '.join(k)})"


def rename(e: Expr, names: dict[str, str]) -> Expr:
    if len(e) == 1:
        return (names.get(e[0], e[0]),)
    return (e[0], *(c if isinstance(c, str) else rename(c, names) for c in e[1:]))


def canonical(a: Expr, b: Expr) -> tuple[Expr, Expr]:
    """The pair with its tensor variables renamed jointly in order of first use."""
    names = {}
    for group in (VARS, VARS4):
        order = list(dict.fromkeys(v for v in variables(a) + variables(b) if v in group))
        names.update(zip(order, group, strict=False))
    return rename(a, names), rename(b, names)


@dataclass(frozen=True)
class Candidate:
    lhs: Expr
    rhs: Expr
    shapes: tuple  # ((var, Shape), ...) sorted

    def key(self):
        return (size(self.lhs) + size(self.rhs), size(self.lhs), repr(self.lhs), repr(self.rhs))

    def texts(self) -> tuple[str, str]:
        """The printed sides (:func:`to_text` under the candidate's typing)."""
        shapes = dict(self.shapes)
        return to_text(self.lhs, shapes), to_text(self.rhs, shapes)

    def atoms(self) -> list[str]:
        """The dim atoms of the typing, sorted (not the literal sizes)."""
        return sorted({a for _, s in self.shapes for d in s for a in d if not a.isdigit()})

    def both_ways(self) -> bool:
        """Whether the rule is also used right to left: its sides are equally big (neither way
        is the simplification), read the same variables (``split0l(concat0(x, y)) = x`` cannot
        make ``y`` up) and the reverse is not the rule itself renamed."""
        return (
            size(self.lhs) == size(self.rhs)
            and set(variables(self.lhs)) == set(variables(self.rhs))
            and canonical(self.rhs, self.lhs) != (self.lhs, self.rhs)
        )
