"""Every egglog rule, alone, on random concrete inputs: its printed left- and right-hand sides are
evaluated with the op table's numpy reference semantics and must agree (bit-exactly where the
rule claims ``fp_exact``, within float tolerance where it reorders arithmetic).

The printed form of a rule (``Tensor.add(Tensor.mul(a, b), c)``) is Python: it is evaluated
with ``Tensor`` bound to :class:`Eval`, whose constructors run the reference kernels, and the
pattern variables bound to random arrays. Shapes are drawn per trial (ranks 1-6, broadcasting
and matmul-compatible variants); a trial whose left-hand side is ill-typed is skipped, and each
rule must have enough well-typed trials. This checks the rule itself, both directions at once
(equality is symmetric), independent of extraction."""

import itertools

import numpy as np
import pytest

from eqsat.egraph.ir import Node, make_attrs
from eqsat.egraph.lang import BY_CTOR
from eqsat.egraph.opdefs.base import ShapeError
from eqsat.egraph.ops import run_node
from eqsat.rules import schedule
from eqsat.rules.base import Rule
from eqsat.verify.rules import _Sym

# generated rules are typed patterns (concat views, shape guards): test_discover checks each one
EGGLOG_RULES = [
    r
    for r in schedule.select(tuple(schedule.FAMILIES))
    if isinstance(r, Rule) and r.origin != "generated"
]


def _run(op, *args, **attrs):
    node = Node(op, tuple(f"i{k}" for k in range(len(args))), ("y",), make_attrs(attrs))
    return run_node(node, list(args))[0]


class Eval:
    """``Tensor``'s constructors, evaluated."""

    @staticmethod
    def scalar(v, dtype):
        return np.array(v, dtype=dtype)

    @staticmethod
    def transpose(x, perm):
        if len(perm) != x.ndim:
            raise ShapeError("perm rank")
        return _run("Transpose", x, perm=list(perm))

    @staticmethod
    def slice(x, starts, ends, axes, steps):
        return _run("Slice", x, starts, ends, axes, steps)

    @staticmethod
    def concat(xs, axis):
        return _run("Concat", *xs, axis=axis)

    # what generated rules print (test_discover's spot check): literals, as the verifier reads
    # them, and window ops, from the op table's constructor specs (below)
    ints = _Sym.ints
    none = _Sym.none


def _from_spec(spec):
    """A constructor that runs the op table's reference kernel: inputs, then attributes."""

    def ctor(*args):
        k = len(spec.inputs)
        inputs = list(args[:k])
        while inputs and inputs[-1] is None:
            inputs.pop()
        attrs = {
            a.name: (list(v) if isinstance(v, tuple) else v)
            for a, v in zip(spec.attrs, args[k:], strict=True)
        }
        return _run(spec.op, *inputs, **attrs)

    return staticmethod(ctor)


for _name in ("conv", "max_pool", "average_pool", "pad"):
    setattr(Eval, _name, _from_spec(BY_CTOR[_name]))

for _ctor, _op in {
    "add": "Add",
    "sub": "Sub",
    "mul": "Mul",
    "div": "Div",
    "matmul": "MatMul",
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "erf": "Erf",
    "sqrt": "Sqrt",
    "exp": "Exp",
    "neg": "Neg",
    "reciprocal": "Reciprocal",
    "identity": "Identity",
}.items():
    setattr(Eval, _ctor, staticmethod(lambda *a, _op=_op: _run(_op, *a)))


class _Vec:
    def __getitem__(self, _):
        return lambda *xs: tuple(xs)


NAMESPACE = {"Tensor": Eval, "Vec": _Vec(), "i64": int, "f64": float, "String": str}


def _shapes(rng, names, rank, matmul):
    """Shapes for the tensor variables: equal, or broadcasting (some dims 1), or matmul-chained
    (always, for a rule with a matmul)."""
    base = [int(d) for d in rng.integers(2, 5, size=rank)]
    kind = 2 if matmul else rng.integers(0, 3)
    out = {}
    for k, n in enumerate(names):
        if kind == 0:
            out[n] = base
        elif kind == 1:
            out[n] = [d if rng.random() < 0.6 else 1 for d in base]
        else:  # chained matrices: a [m, k], b [k, n], c [n, p]
            dims = [int(d) for d in rng.integers(2, 5, size=len(names) + 1)]
            out[n] = [*base[:-2], dims[k], dims[k + 1]] if rank >= 2 else base
    return out


def _trials(rule: Rule, seed: int = 0, n: int = 200):
    rng = np.random.default_rng(seed)
    text_l, text_r = str(rule.lhs), str(rule.rhs)
    names = sorted({v for v in "abcx" if f"{v}," in text_l or f"{v})" in text_l})
    uses_perm = ", p)" in text_l
    # ONNX arithmetic needs one dtype: the rule's literal's, if it names one
    dtype = next((d for d in ("float16", "float64") if f'"{d}"' in text_l), "float32")
    for _ in range(n):
        rank = int(rng.integers(2, 4)) if "matmul" in text_l else int(rng.integers(1, 7))
        env = {
            k: rng.standard_normal(s).astype(dtype)
            for k, s in _shapes(rng, names, rank, "matmul" in text_l).items()
        }
        if uses_perm:
            env["p"] = tuple(int(i) for i in rng.permutation(rank))
        if "Tensor.slice(x, s, e, a, st)" in text_l:  # one axis, any bounds and step
            axis = int(rng.integers(0, rank))
            d = env["x"].shape[axis]
            for k, v in (("s", rng.integers(-d, d)), ("e", rng.integers(-d, d + 2))):
                env[k] = np.array([v], np.int64)
            env["a"] = np.array([axis], np.int64)
            env["st"] = np.array([rng.choice([1, 2, -1])], np.int64)
        try:
            lhs = eval(text_l, dict(NAMESPACE), env)
        except (ShapeError, ValueError):
            continue  # an ill-typed instance: the rule cannot match it
        rhs = eval(text_r, dict(NAMESPACE), env)
        yield lhs, rhs


@pytest.mark.parametrize("rule", EGGLOG_RULES, ids=[r.name for r in EGGLOG_RULES])
def test_rule_lhs_equals_rhs_on_random_inputs(rule):
    checked = 0
    for lhs, rhs in _trials(rule):
        assert lhs.shape == rhs.shape and lhs.dtype == rhs.dtype
        if rule.fp_exact:
            np.testing.assert_array_equal(lhs, rhs)
        else:
            np.testing.assert_allclose(lhs, rhs, rtol=1e-5, atol=1e-6)
        checked += 1
    assert checked >= 10, f"only {checked} well-typed instances of {rule.name}"


def test_a_wrong_rule_is_caught():
    from egglog import Vec, i64, var

    from eqsat.egraph.lang import Tensor

    x = var("x", Tensor)
    p = Vec[i64](i64(1), i64(2), i64(0))  # not an involution: T_p(T_p(x)) != x
    wrong = Rule("wrong", "test", Tensor.transpose(Tensor.transpose(x, p), p), x)
    mismatches = 0
    for lhs, rhs in itertools.islice(_trials(wrong), 50):
        mismatches += lhs.shape != rhs.shape or not np.array_equal(lhs, rhs)
    assert mismatches > 0
