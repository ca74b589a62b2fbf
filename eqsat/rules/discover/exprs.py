"""Typed expressions for rule discovery: enumeration, shape inference, fingerprints, printing.

An expression is a nested tuple: a leaf ``("x",)`` (tensor variables ``x``, ``y``, ``z``, ``w``) or
``(op, child, ...)``. ``("smul", e)`` is ``e`` times the 0-d scalar variable ``c``.

**Shapes are symbolic and inferred, not enumerated.** Every variable is a matrix whose two dims
are *dim expressions*: a sum of atoms (``("a",)``, or ``("a", "b")`` for ``a + b``, what a
concatenation makes). Each expression gets its most general typing by unification
(:class:`Typing`): ``matmul`` unifies the contraction dims, element-wise ops unify whole shapes
(no broadcasting: a generated rule is guarded by its operands' shapes, so it never fires on a
broadcast), ``concat`` adds the axis dims. A sum unifies with a sum of the same length
component by component (``a + b = c + d`` as ``a = c, b = d``: a restriction, never unsound,
because the rule then carries that typing as its guard) and with a single atom by binding it.
An expression that cannot be typed is dropped.

**Fingerprints** evaluate an expression on random integer matrices modulo a prime (exact
arithmetic), every atom of size :data:`SIZE`; a variable's values depend on its name and its
concrete shape, so two expressions whose variables have the same concrete shapes are evaluated on
the same inputs. ``relu`` becomes a fixed polynomial (TASO): identities that only move relu
survive, those that depend on what relu is (idempotence) do not.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

PRIME = 2_147_483_647  # 2^31 - 1: a product of two residues fits in int64 before the reduction
SIZE = 3  # every dim atom is this big when fingerprinting
VARS = ("x", "y", "z", "w")  # the first ``variables`` of them are enumerated (default all)
SCALAR = "c"
UNARY = ("relu", "neg", "transpose", "smul")
BINARY = ("add", "sub", "mul", "matmul", "concat0", "concat1")
OPS = UNARY + BINARY
DEFAULT_OPS = ("matmul", "add", "mul", "smul", "transpose", "relu", "concat0", "concat1")
ALIASES = {"concat": ("concat0", "concat1"), "scalar-mul": ("smul",)}

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
        self._fresh = 0

    def fresh(self) -> Dim:
        self._fresh += 1
        return (f"_{self._fresh}",)

    def var(self, name: str) -> Shape:
        if name not in self.shapes:
            self.shapes[name] = () if name == SCALAR else (self.fresh(), self.fresh())
        return self.shapes[name]

    def resolve(self, d: Dim) -> Dim:
        out: list[str] = []
        for a in d:
            out += self.resolve(self.subst[a]) if a in self.subst else [a]
        return tuple(out)

    def unify(self, d1: Dim, d2: Dim) -> None:
        r1, r2 = self.resolve(d1), self.resolve(d2)
        if r1 == r2:
            return
        if len(r1) == 1 and r1[0] not in r2:
            self.subst[r1[0]] = r2
        elif len(r2) == 1 and r2[0] not in r1:
            self.subst[r2[0]] = r1
        elif len(r1) == len(r2):
            for a, b in zip(r1, r2, strict=True):
                self.unify((a,), (b,))
        else:
            raise TypeFail(f"{r1} vs {r2}")

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
        if op in ("relu", "neg"):
            return s[0]
        if op == "smul":
            self.var(SCALAR)
            return s[0]
        if op == "transpose":
            return (s[0][1], s[0][0])
        if op in ("add", "sub", "mul"):
            self.unify_shapes(s[0], s[1])
            return s[0]
        if op == "matmul":
            self.unify(s[0][1], s[1][0])
            return (s[0][0], s[1][1])
        if op == "concat0":
            self.unify(s[0][1], s[1][1])
            return (self.resolve(s[0][0]) + self.resolve(s[1][0]), s[0][1])
        if op == "concat1":
            self.unify(s[0][0], s[1][0])
            return (s[0][0], self.resolve(s[0][1]) + self.resolve(s[1][1]))
        raise ValueError(op)

    def final(self, shape: Shape | None = None) -> dict[str, Shape]:
        """Variable shapes (and ``shape``, under key ``""``) with atoms renamed ``a, b, ...`` in
        order of first appearance (x, y, z, c)."""
        names: dict[str, str] = {}
        out: dict[str, Shape] = {}
        items = [(v, self.shapes[v]) for v in (*VARS, SCALAR) if v in self.shapes]
        if shape is not None:
            items.append(("", shape))
        for v, s in items:
            dims = []
            for d in s:
                atoms = []
                for a in self.resolve(d):
                    names.setdefault(a, "abcdefghijklmnopqrstuvw"[len(names)])
                    atoms.append(names[a])
                dims.append(tuple(atoms))
            out[v] = tuple(dims)
        return out


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
    return tuple(sum((sizes or {}).get(a, SIZE) for a in d) for d in shape)


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


def evaluate(
    e: Expr, shapes: dict[str, Shape], seed: int = 1, mod: bool = True, sizes=None
) -> np.ndarray:
    """``e`` on the inputs its typing ``shapes`` gives; modulo :data:`PRIME` or in float64."""
    env = {v: _values(v, concrete(s, sizes), seed, mod) for v, s in shapes.items() if v}

    def go(t):
        if len(t) == 1:
            return env[t[0]]
        op, *kids = t
        v = [go(c) for c in kids]
        if op == "transpose":
            return v[0].T.copy()
        if op == "concat0":
            return np.concatenate(v, axis=0)
        if op == "concat1":
            return np.concatenate(v, axis=1)
        if mod:
            return {
                "add": lambda: (v[0] + v[1]) % PRIME,
                "sub": lambda: (v[0] - v[1]) % PRIME,
                "mul": lambda: v[0] * v[1] % PRIME,
                "smul": lambda: v[0] * env[SCALAR] % PRIME,
                "neg": lambda: (-v[0]) % PRIME,
                "relu": lambda: _relu_mod(v[0]),
                "matmul": lambda: _matmul_mod(v[0], v[1]),
            }[op]()
        return {
            "add": lambda: v[0] + v[1],
            "sub": lambda: v[0] - v[1],
            "mul": lambda: v[0] * v[1],
            "smul": lambda: v[0] * env[SCALAR],
            "neg": lambda: -v[0],
            "relu": lambda: np.maximum(v[0], 0),
            "matmul": lambda: v[0] @ v[1],
        }[op]()

    return go(e)


def fingerprint(e: Expr) -> tuple | None:
    """(hash of the value mod PRIME, concrete shapes of the variables and of the result); None
    when ``e`` is ill-typed."""
    shapes = typing(e)
    if shapes is None:
        return None
    value = evaluate(e, shapes)
    sig = tuple(sorted((v, concrete(s)) for v, s in shapes.items()))
    digest = hashlib.blake2b(value.tobytes(), digest_size=8).hexdigest()
    return (digest, sig)  # not hash(): it differs between worker processes


# ---------------------------------------------------------------------------- printing


def to_text(e: Expr) -> str:
    """The printed form of a side, as :class:`~eqsat.rules.base.Rule` prints it."""
    if len(e) == 1:
        return e[0]
    op, *kids = e
    k = [to_text(c) for c in kids]
    if op == "smul":
        return f"Tensor.mul({k[0]}, {SCALAR})"
    if op == "transpose":
        return f"Tensor.transpose({k[0]}, Vec[i64](i64(1), i64(0)))"
    if op in ("concat0", "concat1"):
        return f"Tensor.concat(Vec[Tensor]({k[0]}, {k[1]}), i64({op[-1]}))"
    return f"Tensor.{op}({', '.join(k)})"


def rename(e: Expr, names: dict[str, str]) -> Expr:
    if len(e) == 1:
        return (names.get(e[0], e[0]),)
    return (e[0], *(c if isinstance(c, str) else rename(c, names) for c in e[1:]))


def canonical(a: Expr, b: Expr) -> tuple[Expr, Expr]:
    """The pair with its tensor variables renamed jointly in order of first use."""
    seen = [v for v in variables(a) + variables(b) if v in VARS]
    order = list(dict.fromkeys(seen))
    names = dict(zip(order, VARS, strict=False))
    return rename(a, names), rename(b, names)


@dataclass(frozen=True)
class Candidate:
    lhs: Expr
    rhs: Expr
    shapes: tuple  # ((var, Shape), ...) sorted

    def key(self):
        return (size(self.lhs) + size(self.rhs), size(self.lhs), repr(self.lhs), repr(self.rhs))

    def atoms(self) -> list[str]:
        """The dim atoms of the typing, sorted."""
        return sorted({a for _, s in self.shapes for d in s for a in d})

    def both_ways(self) -> bool:
        """Whether the rule is also used right to left: its sides are equally big (neither way
        is the simplification) and the reverse is not the rule itself renamed."""
        return size(self.lhs) == size(self.rhs) and canonical(self.rhs, self.lhs) != (
            self.lhs,
            self.rhs,
        )
