"""Z3 semantics of the ops, over small concrete shapes with symbolic real-valued elements.

Consumes an op name, its attributes and its inputs; produces its outputs. A float tensor is a
numpy *object* array of Z3 real expressions (one per element, so a shape is always concrete);
integer tensors (shapes, axes, slice bounds, pads) are plain numpy int arrays, because rules only
ever hold them as literals. Keyed by the op table's names (``Add``, ``MatMul``, ...):

- arithmetic is Z3 arithmetic over the reals (``Div`` is Z3's real division; ``Reciprocal`` is
  ``1 / x``), broadcasting is numpy's (object arrays broadcast like any other);
- ``Relu`` is ``If(x > 0, x, 0)``; ``Sigmoid``, ``Tanh``, ``Erf``, ``Exp``, ``Sqrt``, ``Log`` are
  *uninterpreted* functions (one per op): sound for rules that only move or share them, and a
  rule that needs a property of one (``sqrt(v) > 0``) must state it as a hypothesis;
- ``MatMul`` and ``Gemm`` are sums of products (``np.matmul`` on object arrays); ``Conv`` is the
  sum over its window, written out; ``MaxPool`` a nested ``If``, ``AveragePool`` a sum over
  a count (no ceil_mode, no auto_pad SAME);
- data movement (every op of kind ``INJECTIVE`` in the op table: ``Transpose``, ``Reshape``,
  ``Concat``, ``Slice``, ``Split``, ``Pad``, ...) runs the op table's own numpy reference
  implementation on the object arrays: an index map is the same map whatever the elements are.

Which ops have which semantics is derived from the op table, not listed again: the interpreted
element-wise ops are the keys of :data:`POINTWISE` (the one table of scalar semantics, which
:mod:`eqsat.verify.generic` reads too), every other attribute-free unary element-wise op is
uninterpreted, every injective op is structural. Shapes are checked, and output and window sizes
computed, by the op table's shape inference and :class:`~eqsat.egraph.opdefs.window.Window`:
an instance whose operands do not fit raises ShapeError there, as in the importer.

Everything is real-valued: a proof here says "equal over the reals", which is what a rule that
reassociates floating point can claim at best; whether it is also bit-exact is the rule's
``fp_exact`` flag, justified in its doc (it only moves or copies values).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import z3

from eqsat.egraph.ir import Node, TensorType, make_attrs
from eqsat.egraph.opdefs.base import Kind, ShapeError
from eqsat.egraph.opdefs.window import Window
from eqsat.egraph.ops import OPS, infer_node, op_attrs

SEMANTICS_VERSION = 1  # bump when a semantics below changes: ledger entries name it


def _relu(v):
    return z3.If(v > 0, v, z3.RealVal(0))


# The interpreted element-wise ops: each a function of Z3 reals (one argument per input).
POINTWISE = {
    "Add": lambda a, b: a + b,
    "Sub": lambda a, b: a - b,
    "Mul": lambda a, b: a * b,
    "Div": lambda a, b: a / b,  # Z3's real division
    "Neg": lambda v: -v,
    "Reciprocal": lambda v: 1 / _z(v),
    "Relu": _relu,
}
# Uninterpreted (one function symbol each): the other element-wise ops of one input and no
# attribute. Sound for any function: a proof never uses what the function is.
UNINTERPRETED = tuple(
    d.name
    for d in OPS.values()
    if d.kind is Kind.ELEMENTWISE and d.inputs == (1, 1) and not d.attrs
    if d.name not in POINTWISE
)
STRUCTURAL = tuple(d.name for d in OPS.values() if d.kind is Kind.INJECTIVE)
_BINARY = {op: np.frompyfunc(f, 2, 1) for op, f in POINTWISE.items() if f.__code__.co_argcount == 2}
_UF: dict[str, z3.FuncDeclRef] = {}


class Unsupported(Exception):
    """An op (or an attribute of one) that has no Z3 semantics here."""


def symbols(name: str, shape: Sequence[int]) -> np.ndarray:
    """A tensor of fresh real symbols ``name[i,j,...]``."""
    out = np.empty(tuple(shape), dtype=object)
    for idx in itertools.product(*(range(d) for d in shape)):
        out[idx] = z3.Real(f"{name}[{','.join(map(str, idx))}]")
    return out


def real(a) -> np.ndarray:
    """A numeric array (or scalar) as an object array of Z3 real constants."""
    a = np.asarray(a)
    out = np.empty(a.shape, dtype=object)
    for idx in itertools.product(*(range(d) for d in a.shape)):
        out[idx] = z3.RealVal(str(float(a[idx])))
    return out


def _z(x):
    return x if isinstance(x, z3.ExprRef) else z3.RealVal(str(x))


def _lift(a: np.ndarray) -> np.ndarray:
    """Python numbers that numpy put in an object array (a pad value, a 0) as Z3 constants."""
    if a.dtype != object:
        return a
    return np.vectorize(_z, otypes=[object])(a) if a.size else a


def _uf(op: str) -> z3.FuncDeclRef:
    if op not in _UF:
        _UF[op] = z3.Function(op.lower(), z3.RealSort(), z3.RealSort())
    return _UF[op]


def _map(f, x: np.ndarray) -> np.ndarray:
    return np.vectorize(f, otypes=[object])(x) if x.size else x.copy()


def run(
    op: str, attrs: Mapping, inputs: Sequence[np.ndarray | None], n_outputs: int = 1
) -> list[np.ndarray]:
    """The outputs of ``op`` on symbolic (object) and literal (int) inputs; ShapeError when the
    inputs do not fit (the instance is ill-typed), Unsupported when there is no semantics."""
    a = dict(attrs)
    outs = tuple(f"y{k}" for k in range(n_outputs))
    node = Node(op, tuple(f"i{k}" for k in range(len(inputs))), outs, make_attrs(a))
    if op not in OPS:
        raise Unsupported(f"no Z3 semantics for {op}")
    full = op_attrs(node)
    out_types = _infer(node, inputs)  # ShapeError: the operands do not fit
    x = inputs[0] if inputs else None
    if op in _BINARY:
        return [_BINARY[op](inputs[0], inputs[1])]
    if op in POINTWISE:
        return [_map(POINTWISE[op], x)]
    if op in UNINTERPRETED:
        f = _uf(op)
        return [_map(lambda v: f(v), x)]
    if op == "MatMul":
        return [_lift(np.asarray(np.matmul(inputs[0], inputs[1]), dtype=object))]
    if op == "Gemm":
        return [_gemm(inputs, full)]
    if op == "Conv":
        return [_conv(inputs, full, out_types[0].shape)]
    if op == "BatchNormalization":
        return [_batchnorm(inputs, full)]
    if op in ("MaxPool", "AveragePool"):
        return [_pool(op, x, full, out_types[0].shape)]
    if op in STRUCTURAL:
        try:
            outs = OPS[op].run(list(inputs), full)
        except (ValueError, IndexError) as e:
            raise ShapeError(str(e)) from e
        except TypeError as e:  # the reference implementation needs numbers here
            raise Unsupported(f"{op} on symbolic elements: {e}") from e
        return [_lift(np.asarray(o, dtype=object)) if o.dtype == object else o for o in outs]
    raise Unsupported(f"no Z3 semantics for {op}")


def _infer(node: Node, inputs: Sequence[np.ndarray | None]) -> list[TensorType]:
    """The output types of ``node`` by the op table's shape inference: symbolic (object) inputs
    typed float32, literal (int) inputs typed and passed as constants."""
    types = [
        None if v is None else TensorType("float32" if v.dtype == object else v.dtype.name, v.shape)
        for v in inputs
    ]
    consts = [None if v is None or v.dtype == object else v for v in inputs]
    return infer_node(node, types, consts)


def _gemm(inputs, attrs) -> np.ndarray:
    a, b = inputs[0], inputs[1]
    c = inputs[2] if len(inputs) > 2 else None
    a = a.T if attrs.get("transA", 0) else a
    b = b.T if attrs.get("transB", 0) else b
    y = np.matmul(a, b)
    alpha, beta = float(attrs.get("alpha", 1.0)), float(attrs.get("beta", 1.0))
    if alpha != 1.0:
        y = y * z3.RealVal(str(alpha))
    if c is not None:
        y = y + (c if beta == 1.0 else c * z3.RealVal(str(beta)))
    return _lift(np.asarray(y, dtype=object))


def _window(x: np.ndarray, ks, attrs, out_shape):
    """A Conv's or pool's (strides, dilations, pads as begins then ends, output spatial sizes)
    for input ``x`` and kernel sizes ``ks``, by the op table's window arithmetic."""
    win = Window.of(attrs, ks)
    _, begins, ends = win.resolve(x.shape[2:])
    if any(int(o) <= 0 for o in out_shape[2:]):
        raise ShapeError("the window's output is empty")
    return list(win.strides), list(win.dilations), begins + ends, [int(o) for o in out_shape[2:]]


def _conv(inputs, attrs, out_shape) -> np.ndarray:
    x, w = inputs[0], inputs[1]
    b = inputs[2] if len(inputs) > 2 else None
    group = int(attrs.get("group", 1))
    nd = x.ndim - 2
    ks = w.shape[2:]
    strides, dil, pads, outs = _window(x, ks, attrs, out_shape)
    n, c_in = x.shape[:2]
    c_out, c_per = w.shape[:2]
    zero = z3.RealVal(0)
    xp = np.full(
        (n, c_in, *(x.shape[2 + i] + pads[i] + pads[nd + i] for i in range(nd))), zero, dtype=object
    )
    xp[
        (slice(None), slice(None), *(slice(pads[i], pads[i] + x.shape[2 + i]) for i in range(nd)))
    ] = x
    y = np.empty((n, c_out, *outs), dtype=object)
    per_group = c_out // group
    for bi, co in itertools.product(range(n), range(c_out)):
        g = co // per_group
        for pos in itertools.product(*(range(o) for o in outs)):
            terms = []
            for ci, kpos in itertools.product(range(c_per), itertools.product(*map(range, ks))):
                src = tuple(pos[i] * strides[i] + kpos[i] * dil[i] for i in range(nd))
                terms.append(xp[(bi, g * c_per + ci, *src)] * w[(co, ci, *kpos)])
            s = z3.Sum(terms) if terms else zero
            y[(bi, co, *pos)] = s + b[co] if b is not None else s
    return y


def _pool(op: str, x: np.ndarray, attrs, out_shape) -> np.ndarray:
    """MaxPool (the largest element of the window's inside, as nested ``If``) and AveragePool
    (their sum over the count: the inside, or the whole window with count_include_pad)."""
    nd = x.ndim - 2
    ks = list(attrs["kernel_shape"])
    if int(attrs.get("ceil_mode", 0)):
        raise Unsupported(f"{op} with ceil_mode")
    strides, dil, pads, outs = _window(x, ks, attrs, out_shape)
    include_pad = op == "AveragePool" and int(attrs.get("count_include_pad", 0))
    y = np.empty(x.shape[:2] + tuple(outs), dtype=object)
    for lead in itertools.product(*map(range, x.shape[:2])):
        for pos in itertools.product(*(range(o) for o in outs)):
            vals = []
            for kpos in itertools.product(*map(range, ks)):
                src = [pos[i] * strides[i] + kpos[i] * dil[i] - pads[i] for i in range(nd)]
                if all(0 <= src[i] < x.shape[2 + i] for i in range(nd)):
                    vals.append(_z(x[(*lead, *src)]))
            if op == "MaxPool":
                best = vals[0]
                for v in vals[1:]:
                    best = z3.If(v > best, v, best)
                y[(*lead, *pos)] = best
            else:
                count = int(np.prod(ks)) if include_pad else len(vals)
                y[(*lead, *pos)] = z3.Sum(vals) / z3.RealVal(count)
    return y


def _batchnorm(inputs, attrs) -> np.ndarray:
    x, scale, bias, mean, var = inputs[:5]
    eps = z3.RealVal(str(float(attrs.get("epsilon", 1e-5))))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    sq = _map(lambda v: _uf("Sqrt")(v + eps), var)
    f = np.reshape(scale / sq, shape)
    return (x - np.reshape(mean, shape)) * f + np.reshape(bias, shape)


def sqrt_hypotheses(exprs: Sequence[z3.ExprRef]) -> list[z3.BoolRef]:
    """``sqrt(t) > 0`` for every ``sqrt(t)`` application in ``exprs`` whose argument is
    positive — what BatchNorm folding needs (``var + eps > 0`` is assumed of ``var >= 0``)."""
    seen: set = set()
    out: list[z3.BoolRef] = []
    sqrt = _uf("Sqrt")

    def walk(e):
        if e.get_id() in seen:
            return
        seen.add(e.get_id())
        if z3.is_app(e) and e.decl() == sqrt:
            out.append(sqrt(e.arg(0)) > 0)
        for k in e.children():
            walk(k)

    for e in exprs:
        walk(e)
    return out


# how many times more monomials the simplifier may make when it multiplies sums out (Z3's
# default, 10, left ``x * (sum of 27 products)`` unexpanded: a convolution by a convolution's
# output times a scalar then timed out in the solver at 20 s an element; with 1,000 the
# difference simplifies to 0 in 1 ms)
SOM_BLOWUP = 1_000


def _normal(t):
    return z3.simplify(t, som=True, sort_sums=True, som_blowup=SOM_BLOWUP)


def _zero(t) -> bool:
    return z3.is_rational_value(t) and t.numerator_as_long() == 0


def _identical(a, b) -> bool:
    """A fast sufficient test: ``a - b`` rewrites to 0 in Z3's simplifier (sums of monomials,
    sums sorted, also inside ``If`` conditions and uninterpreted applications). Sound because
    the simplifier preserves equivalence; when it fails the solver decides. Measured on rule
    discovery: a matmul over a relu of a commuted sum took 14 s in nlsat, 1 ms this way."""
    try:
        if not (z3.is_arith(a) and z3.is_arith(b)):
            return False
        if _zero(_normal(a - b)):
            return True
        # each side in its normal form first: ``conv(x + x, conv(y, z))`` against ``conv(x,
        # conv(y, z + z))`` is one sum of 729 monomials either way, but simplifying their
        # difference at once left 729 of them uncancelled for the solver, where the whole
        # convolution timed out and each element took 0.1 s (measured); the difference of the
        # two normal forms simplifies to 0 in 2 ms
        return _zero(_normal(_normal(a) - _normal(b)))
    except z3.Z3Exception:
        return False


def equal(lhs: np.ndarray, rhs: np.ndarray, hypotheses=(), timeout_ms: int = 20_000):
    """(verdict, detail): ``"proved"`` when every element of ``lhs`` equals the one of ``rhs``
    for all values of the symbols (under ``hypotheses``), ``"refuted"`` with a counterexample,
    ``"unknown"`` when Z3 gives up. Different shapes are refuted outright."""
    if lhs.shape != rhs.shape:
        return "refuted", f"shapes differ: {lhs.shape} vs {rhs.shape}"
    pairs = [(_z(a), _z(b)) for a, b in zip(lhs.reshape(-1), rhs.reshape(-1), strict=True)]
    # the solver gets only the elements the simplifier does not settle: a smaller query, and
    # fewer elements to decide one at a time when it times out
    pairs = [(a, b) for a, b in pairs if not _identical(a, b)]
    if not pairs:
        return "proved", ""
    solver = z3.Solver()
    solver.add(*hypotheses)
    # all elements in one query first; when that times out, one element at a time: a max
    # pooling's nested If terms made one query over 225 elements time out at 20 s where each
    # element alone takes milliseconds (measured: maxpool of a valid maxpool, 3x3x5x5)
    if len(pairs) == 1:
        return _differ(solver, [pairs[0][0] != pairs[0][1]], timeout_ms)
    verdict, detail = _differ(solver, [a != b for a, b in pairs], min(timeout_ms, 1_000))
    if verdict != "unknown":
        return verdict, detail
    for a, b in pairs:
        verdict, detail = _differ(solver, [a != b], timeout_ms)
        if verdict != "proved":
            return verdict, detail
    return "proved", ""


def _differ(solver, differences: list, timeout_ms: int) -> tuple[str, str]:
    """Whether any of ``differences`` can hold (on top of the solver's hypotheses): "refuted"
    with the model when one can, "proved" when none can, "unknown" when Z3 gives up."""
    solver.push()
    try:
        solver.set("timeout", timeout_ms)
        solver.add(z3.Or(differences))
        r = solver.check()
        if r == z3.unsat:
            return "proved", ""
        if r == z3.sat:
            model = solver.model()  # sorted by name: Z3's own order varies from run to run
            values = sorted(f"{d.name()} = {model[d]}" for d in model.decls())
            return "refuted", f"[{', '.join(values)}]"[:500]
        return "unknown", solver.reason_unknown()
    finally:
        solver.pop()


__all__ = ["SEMANTICS_VERSION", "Unsupported", "equal", "real", "run", "symbols"]
