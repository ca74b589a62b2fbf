"""Printed terms as data: the one parser of rule text, and a fold that interprets it.

Consumes the printed form of a :mod:`eqsat.egraph.lang` term, as egglog prints it and as the
generated rules file stores a rule's sides::

    Tensor.matmul(x, Tensor.transpose(y, Vec[i64](i64(1), i64(0))))
    Tensor.scalar(f64(1.0), String("float32"))
    Tensor.slice(x, Vec[i64](size_a), Vec[i64](size_a + size_b), Vec[i64](i64(1)), Tensor.none())

and produces a small immutable tree: a :class:`Term` (a head and its arguments), a
:class:`Var` (a pattern variable, or a size such as ``size_a``), or a literal (``int``,
``float``, ``str``). :func:`evaluate` folds a tree bottom-up with a namespace that gives each
head its meaning; each consumer brings its own: egglog constructors (the generated rules'
loader, :mod:`eqsat.rules.generated.rulefile`), Z3 tensors (:mod:`eqsat.verify.rules`) or
index functions (:mod:`eqsat.verify.generic`).

Why a parser and not ``eval()``: the text is Python syntax, and ``eval`` ran whatever a rules
file held with the full builtins. :func:`parse` accepts only the node kinds a printed term has
(calls on ``Tensor.<ctor>``, ``Vec[<sort>]``, ``i64``, ``f64``, ``String``; names; numeric and
string constants, negated numbers; ``+`` of sizes; tuples and lists) and rejects anything else
with a one-line ValueError. The heads are kept as the text spells them (``"Tensor.matmul"``,
``"Vec[i64]"``) and resolved by :func:`evaluate` the way Python would have resolved them in
the same namespace, so every consumer computes what its ``eval`` computed, call for call and in
the same order (the loader's fresh variables are numbered in that order).

It lives in ``egraph/`` because the terms are ``lang``'s and every reader may import this
layer: ``rules/`` (the loader, the lifted merges) and ``verify/`` (the proofs).
"""

from __future__ import annotations

import ast
import functools
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# the heads a call may have besides ``Tensor.<ctor>`` and ``Vec[<sort>]``
SCALARS = frozenset({"i64", "f64", "String"})
# heads that are not calls: ``a + b`` (a sum of sizes), tuple and list displays
ADD, TUPLE, LIST = "+", "tuple", "list"


@dataclass(frozen=True)
class Var:
    """A name in a printed term: a pattern variable (``x``) or a size (``size_a``)."""

    name: str


@dataclass(frozen=True)
class Term:
    """A call ``head(*args)`` (``head`` as printed: ``"Tensor.add"``, ``"Vec[i64]"``,
    ``"i64"``), or a sum (``head`` :data:`ADD`), tuple or list of its ``args``."""

    head: str
    args: tuple = ()

    @property
    def is_call(self) -> bool:
        """Whether this is a call (not a sum, tuple or list)."""
        return self.head not in (ADD, TUPLE, LIST)

    @property
    def ctor(self) -> str | None:
        """The ``Tensor`` constructor's name (``"add"`` for ``Tensor.add``), else None."""
        return self.head[len("Tensor.") :] if self.head.startswith("Tensor.") else None


Node = Term | Var | int | float | str


@functools.lru_cache(maxsize=8192)
def parse(text: str) -> Node:
    """The tree of a printed term; ValueError naming the first construct that is not one.

    Cached: a side is parsed once however often it is evaluated (a proof evaluates each side
    for up to 200 shape instances)."""
    try:
        body = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as e:
        raise ValueError(f"not a printed term: {e.msg} in {text[:80]!r}") from None
    return _node(body, text)


def _node(n: ast.expr, text: str) -> Node:
    match n:
        case ast.Name(id=name):
            return Var(name)
        case ast.Constant(value=bool()):
            pass  # True/False are no literal of a term
        case ast.Constant(value=int() | float() | str() as v):
            return v
        case ast.UnaryOp(op=ast.USub(), operand=ast.Constant(value=int() | float() as v)):
            if not isinstance(v, bool):
                return -v
        case ast.BinOp(left=left, op=ast.Add(), right=right):
            return Term(ADD, (_node(left, text), _node(right, text)))
        case ast.Tuple(elts=items) | ast.List(elts=items):
            head = TUPLE if isinstance(n, ast.Tuple) else LIST
            return Term(head, tuple(_node(x, text) for x in items))
        case ast.Call(func=func, args=args, keywords=[]):
            head = _head(func)
            if head is not None and not any(isinstance(a, ast.Starred) for a in args):
                return Term(head, tuple(_node(a, text) for a in args))
    raise ValueError(f"not a printed term: {ast.unparse(n)[:60]!r} in {text[:80]!r}")


def _head(func: ast.expr) -> str | None:
    match func:
        case ast.Attribute(value=ast.Name(id="Tensor"), attr=ctor):
            return f"Tensor.{ctor}"
        case ast.Subscript(value=ast.Name(id="Vec"), slice=ast.Name(id=sort)):
            return f"Vec[{sort}]"
        case ast.Name(id=name) if name in SCALARS:
            return name
    return None


def evaluate(node: Node, namespace: Mapping[str, object]):
    """Fold ``node`` bottom-up: a literal is itself, a :class:`Var` ``namespace[name]``, a call
    its head applied to its evaluated arguments (left to right, innermost first, as Python
    evaluates a call). A head resolves as Python resolves it in ``namespace``:
    ``Tensor.add`` is ``getattr(namespace["Tensor"], "add")``, ``Vec[i64]`` is
    ``namespace["Vec"][namespace["i64"]]``, ``i64`` is ``namespace["i64"]``. NameError for a
    name the namespace lacks, as ``eval`` raised."""
    if isinstance(node, Var):
        return _lookup(namespace, node.name)
    if not isinstance(node, Term):
        return node
    if node.head == ADD:
        left, right = (evaluate(a, namespace) for a in node.args)
        return left + right
    if node.head in (TUPLE, LIST):
        items = [evaluate(a, namespace) for a in node.args]
        return tuple(items) if node.head == TUPLE else items
    f = _resolve(node.head, namespace)
    return f(*[evaluate(a, namespace) for a in node.args])


def _resolve(head: str, namespace: Mapping[str, object]):
    if head.startswith("Tensor."):
        return getattr(_lookup(namespace, "Tensor"), head[len("Tensor.") :])
    if head.startswith("Vec["):
        return _lookup(namespace, "Vec")[_lookup(namespace, head[len("Vec[") : -1])]
    return _lookup(namespace, head)


def _lookup(namespace: Mapping[str, object], name: str):
    try:
        return namespace[name]
    except KeyError:
        raise NameError(f"name {name!r} is not defined") from None


def walk(node: Node) -> Iterator[Node]:
    """Every subtree of ``node``, breadth first (the order of :func:`ast.walk`, which the
    readers of pattern variables followed: where a variable has two roles, the last seen
    wins)."""
    todo = deque([node])
    while todo:
        n = todo.popleft()
        if isinstance(n, Term):
            todo.extend(n.args)
        yield n


def calls(node: Node, ctor: str | None = None) -> Iterator[Term]:
    """The ``Tensor`` constructor calls in ``node`` (those of ``ctor`` only, when given),
    breadth first."""
    for n in walk(node):
        if isinstance(n, Term) and n.ctor is not None and (ctor is None or n.ctor == ctor):
            yield n
