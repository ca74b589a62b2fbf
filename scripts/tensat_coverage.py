"""How much of TASO's and Tensat's substitutions eqsat's rules prove: classify Tensat's rule files
into substitution classes, and check each rule (or one per class) by saturation.

    .venv/bin/python scripts/tensat_coverage.py single_rules.txt multi_rules.txt
    .venv/bin/python scripts/tensat_coverage.py --check single_rules.txt multi_rules.txt
    .venv/bin/python scripts/tensat_coverage.py --check --list single_rules.txt  # per rule

The files are Tensat's (github.com/uwplse/tensat, ``single_rules.txt``: TASO's generated
single-pattern substitutions; ``multi_rules.txt``: its multi-pattern ones); they are not part of
this repository, so the default tests never read them: they check one representative of each
class (tests/unit/rules/test_substitutions.py), and docs/rules.md gives the counts this script
printed. Both of TASO's spellings are read: ``lhs==rhs`` back to back (no separator between
rules) and Tensat's s-expressions ``(op a b)=>(op ...)``, one a line. In a file whose name has
``multi`` in it, two rules make one multi-pattern rule (as Tensat's ``main.rs`` reads them): its
sides are ``("&", t1, t2)`` and each pair must meet. Bad input: one line on stderr, exit 2.

Consumes a rule (two terms over TASO's operators); produces

- :func:`classify`: the substitution class, the first of :data:`CLASSES` whose test the rule
  passes (the classes are ordered from the most specific operator a rule uses — a literal
  kernel, ``enlarge``, split, concat — to the plainest algebra, so each rule counts once);
- :func:`to_onnx`: one ONNX model computing both sides over shared inputs (outputs ``lhs`` and
  ``rhs``), with TASO's generator's shapes (``src/generator/generator.cc``: matrices ``x`` 2x4
  and ``w`` 4x4, activations 2x4x5x5, kernels 4x4x3x3, 4x4x1x3, 4x4x3x1, a depthwise 4x1x3x3, a
  scalar), weights as initializers and activations and the scalar as graph inputs;
- :func:`proved_equal`: whether saturation with the named rule families puts ``lhs`` and
  ``rhs`` in one e-class (the e-graph proves the two graphs equal).

TASO's semantics, and how they read in ONNX: ``conv2d(sh, sw, pad, act, x, w)`` is a Conv with
"same" padding (``pad`` 0) whose group is ``C_in / w.shape[1]``, followed by a Relu where
``act`` is 2 (ONNX has no fused activation); ``poolavg``/``poolmax`` are 3x3 stride-1 "same"
poolings (AveragePool with ``count_include_pad=1``: TASO's generator sums the window, and its
``Cpool`` kernel is the matching constant, here ``1/9``); ``enlarge(kh, kw, w)`` pads a kernel
to ``kh x kw`` (a Pad of the weight); ``Iconv`` is the identity kernel, ``Imatmul`` the identity
matrix, ``Iewmul`` a tensor of ones; ``smul(x, s)`` multiplies by a scalar; ``split_i(split(a,
x))`` is the i-th part of ``x`` cut where the concatenation that made it joined (a Slice), as
TASO's split follows the concat boundaries through the ops.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

Term = tuple  # (op, arg, ...) with int attributes and Term operands; a leaf is (name,)

# TASO's generator (src/generator/generator.cc): the shape of each variable of its rules
SHAPES = {
    **{f"input_{i}": (2, 4) for i in (1, 2, 3)},
    **{f"input_{i}": (4, 4) for i in (4, 5, 6)},
    **{f"input_{i}": (2, 4, 5, 5) for i in (7, 8, 9)},
    **{f"input_{i}": (4, 4, 3, 3) for i in (10, 11, 12)},
    **{f"input_{i}": (4, 4, 1, 3) for i in (13, 14, 15)},
    **{f"input_{i}": (4, 4, 3, 1) for i in (16, 17, 18)},
    "input_19": (4, 1, 3, 3),
    "input_20": (),
}
# the generator's weights ("w1".."w13"): constants, so initializers here; x, i, s are inputs
WEIGHTS = {f"input_{i}" for i in (4, 5, 6, *range(10, 20))}


# ------------------------------------------------------------------------------ parsing


def split_rules(text: str) -> list[tuple[str, str]]:
    """The (lhs, rhs) texts of a rules file in either spelling."""
    if "=>" in text:
        return [tuple(line.split("=>", 1)) for line in text.splitlines() if "=>" in line]
    text = "".join(text.split())
    out, i = [], 0
    while i < len(text):
        j = _term_end(text, i)
        if text[j : j + 2] != "==":
            raise ValueError(f"no '==' after the term at offset {i}: {text[i : i + 60]!r}")
        k = _term_end(text, j + 2)
        out.append((text[i:j], text[j + 2 : k]))
        i = k
    return out


def _term_end(text: str, i: int) -> int:
    j = i
    while j < len(text) and (text[j].isalnum() or text[j] == "_"):
        j += 1
    if j < len(text) and text[j] == "(":
        depth = 0
        for k in range(j, len(text)):
            depth += {"(": 1, ")": -1}.get(text[k], 0)
            if depth == 0:
                return k + 1
        raise ValueError(f"unbalanced term at offset {i}")
    return j


def parse(text: str) -> Term:
    """A term in TASO's ``op(a,b)`` or Tensat's ``(op a b)`` spelling, normalized to TASO's
    argument lists (Tensat's ``matmul`` activation and ``concat`` rank are dropped); ``t1 & t2``
    (the sides of a multi-pattern rule) is ``("&", t1, t2)``."""
    if " & " in text:
        return ("&", *(parse(t) for t in text.split(" & ")))
    text = text.strip()
    if text.startswith("("):
        tokens = text.replace("(", " ( ").replace(")", " ) ").split()
        try:
            term, rest = _sexp(tokens, 0)
        except IndexError:
            rest = -1
        if rest != len(tokens):
            raise ValueError(f"not a term: {text!r}")
    else:
        try:
            term, rest = _call(text, 0)
        except (IndexError, ValueError):
            rest = -1
        if rest != len(text):
            raise ValueError(f"not a term: {text!r}")
    return _normalize(term)


def _sexp(tokens: list[str], i: int):
    if tokens[i] != "(":
        return _atom(tokens[i].lstrip("?")), i + 1
    op, i, args = tokens[i + 1], i + 2, []
    while tokens[i] != ")":
        a, i = _sexp(tokens, i)
        args.append(a)
    return (op, *args), i + 1


def _call(text: str, i: int):
    j = _term_end(text, i)
    name_end = text.find("(", i, j)
    if name_end < 0:
        return _atom(text[i:j]), j
    op, args, k = text[i:name_end], [], name_end + 1
    while text[k] != ")":
        a, k = _call(text, k)
        args.append(a)
        if text[k] == ",":
            k += 1
    return (op, *args), k + 1


def _atom(tok: str):
    return int(tok) if tok.lstrip("-").isdigit() else (tok,)


def _normalize(t):
    if isinstance(t, int) or len(t) == 1:
        return t
    op, args = t[0], [_normalize(a) for a in t[1:]]
    if op == "matmul" and len(args) == 3:  # Tensat: (matmul act a b)
        args = args[1:]
    if op == "concat" and len(args) == 4:  # multi rules: concat(axis, ndim, a, b)
        args = [args[0], *args[2:]]
    if op in ("split_0", "split_1") and len(args) == 2:  # Tensat's hand rules: split_0(a, x)
        args = [("split", *args)]
    return (op, *args)


def ops_of(t) -> Counter:
    """Operator (and literal) names of a term, with multiplicity."""
    if isinstance(t, int):
        return Counter()
    c = Counter([t[0]] if len(t) > 1 or not t[0].startswith("input_") else [])
    for a in t[1:]:
        c += ops_of(a)
    return c


def variables(t) -> set[str]:
    if isinstance(t, int):
        return set()
    if len(t) == 1:
        return {t[0]} if t[0].startswith("input_") else set()
    return set().union(*(variables(a) for a in t[1:]))


# ------------------------------------------------------------------------------ classes


@dataclass(frozen=True)
class Class:
    key: str
    title: str
    test: object  # (lhs Term, rhs Term, ops Counter) -> bool


def _conv_act_only(lhs, rhs, ops) -> bool:
    """The two sides differ only by where a conv's Relu is written (``act`` flag vs ``relu``)."""
    return _fused(lhs) == _fused(rhs)


def _fused(t):
    """A term with every ``conv2d(.., 2, x, w)`` written as ``relu(conv2d(.., 0, x, w))``."""
    if isinstance(t, int) or len(t) == 1:
        return t
    args = tuple(_fused(a) for a in t[1:])
    if t[0] == "conv2d" and args[3] == 2:
        return ("relu", ("conv2d", *args[:3], 0, *args[4:]))
    return (t[0], *args)


def _has(*names):
    return lambda lhs, rhs, ops: any(ops[n] for n in names)


def _conv_linear(lhs, rhs, ops) -> bool:
    return bool(ops["conv2d"]) and bool(ops["ewadd"] or ops["smul"])


CLASSES = (
    Class(
        "same",
        "both sides alike as the file writes them (TASO's transposes that differ only in the "
        "output-shuffle flag the file does not record)",
        lambda lhs, rhs, ops: lhs == rhs,
    ),
    Class(
        "split",
        "split of a merged op (multi-pattern: two ops merged by concat, then split)",
        _has("split_0", "split_1"),
    ),
    Class(
        "enlarge", "enlarge a kernel to 3x3 (1x3 / 3x1 -> 3x3) so convs can merge", _has("enlarge")
    ),
    Class(
        "cpool", "average pooling as a depthwise conv with the constant kernel Cpool", _has("Cpool")
    ),
    Class(
        "iconv",
        "identity kernel Iconv (x = conv(x, I); x + conv(x, w) = conv(x, w + I))",
        _has("Iconv"),
    ),
    Class(
        "imatmul",
        "identity matrix / ones literal (X·I = X, x + x*y = x*(y + 1))",
        _has("Imatmul", "Iewmul"),
    ),
    Class("conv-act", "conv with the fused Relu flag = relu(conv)", _conv_act_only),
    Class(
        "pool",
        "pooling through concat, add, scalar multiplication, relu",
        _has("poolavg", "poolmax"),
    ),
    Class(
        "concat-conv",
        "concat of convs = conv of a concat (merge along batch / out channels)",
        lambda lhs, rhs, ops: bool(ops["concat"] and ops["conv2d"]),
    ),
    Class(
        "concat-matmul",
        "concat of matmuls = matmul of a concat (merge along rows / columns)",
        lambda lhs, rhs, ops: bool(ops["concat"] and ops["matmul"]),
    ),
    Class(
        "concat-ew",
        "concat through element-wise ops, relu, scalar multiplication, transpose",
        _has("concat"),
    ),
    Class(
        "conv-linear", "conv is linear in its input and its kernel (sums, scalars)", _conv_linear
    ),
    Class(
        "conv-compose",
        "convs, relu: re-association of element-wise ops inside conv operands",
        _has("conv2d"),
    ),
    Class(
        "transpose", "transpose through matmul, add, mul, scalars; involution", _has("transpose")
    ),
    Class("matmul", "matmul associativity, distributivity over add, scalars", _has("matmul")),
    Class("smul", "scalar multiplication commuting with / distributing over ew ops", _has("smul")),
    Class(
        "ew", "ewadd / ewmul associativity, commutativity, distributivity", _has("ewadd", "ewmul")
    ),
    Class("relu", "relu", _has("relu")),
)
BY_KEY = {c.key: c for c in CLASSES}


def classify(lhs: Term, rhs: Term) -> str:
    ops = ops_of(lhs) + ops_of(rhs)
    for c in CLASSES:
        if c.test(lhs, rhs, ops):
            return c.key
    return "other"


# ------------------------------------------------------------------------------ ONNX


def literal_value(t) -> np.ndarray:
    """The value of one of TASO's literals, with its generator's shapes."""
    if t[0] == "Imatmul":
        return np.eye(4, dtype=np.float32)
    if t[0] == "Iewmul":
        return np.ones((2, 4, 5, 5), np.float32)
    kh, kw = t[1:]
    if t[0] == "Iconv":
        k = np.zeros((4, 4, kh, kw), np.float32)
        k[np.arange(4), np.arange(4), kh // 2, kw // 2] = 1
        return k
    return np.full((4, 1, kh, kw), 1.0 / (kh * kw), np.float32)  # Cpool


class _Builder:
    def __init__(self, literal_terms: bool = False) -> None:
        self.literal_terms = literal_terms
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, np.ndarray] = {}
        self.inputs: dict[str, tuple] = {}
        self.memo: dict = {}
        self.n = 0

    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{base}_{self.n}"

    def const(self, a: np.ndarray, base: str) -> str:
        name = self.fresh(base)
        self.inits[name] = a
        return name

    def ints(self, values) -> str:
        return self.const(np.asarray(values, np.int64), "i")

    def scalar(self, v: float) -> str:
        return self.const(np.asarray(v, np.float32), "s")

    def ones(self, shape) -> str:
        """A tensor of ones as eqsat's rules build one (:func:`eqsat.rules.linear.ones`): a
        one-element tensor padded with ones."""
        one = self.scalar(1.0)
        x = self.node("Reshape", [one, self.ints([1] * len(shape))])
        pads = [0] * len(shape) + [d - 1 for d in shape]
        return self.node("Pad", [x, self.ints(pads), one])

    def eye(self, n: int, shape) -> str:
        """:func:`eqsat.rules.linear.eye` in ONNX ops."""
        wide = self.node("Pad", [self.ones([n, 1]), self.ints([0, 0, 0, n])])
        flat = self.node("Reshape", [wide, self.ints([n * (n + 1)])])
        cut = self.node("Slice", [flat, self.ints([0]), self.ints([n * n]), self.ints([0])])
        return self.node("Reshape", [cut, self.ints(shape)])

    def literal_term(self, t) -> str:
        """A literal written the way eqsat's rules write it (the e-graph knows a constant by
        its term: a weight and the term that computes the same value are different e-classes
        until something unions them)."""
        if t[0] == "Imatmul":
            return self.eye(4, [4, 4])
        if t[0] == "Iewmul":
            return self.ones([2, 4, 5, 5])
        kh, kw = t[1:]
        if t[0] == "Iconv":
            center = self.eye(4, [4, 4, 1, 1])
            top, left = kh // 2, kw // 2
            pads = [0, 0, top, left, 0, 0, kh - 1 - top, kw - 1 - left]
            return self.node("Pad", [center, self.ints(pads)])
        return self.node("Div", [self.ones([4, 1, kh, kw]), self.scalar(float(kh * kw))])

    def node(self, op: str, ins: list[str], **attrs) -> str:
        out = self.fresh(op.lower())
        self.nodes.append(helper.make_node(op, ins, [out], **attrs))
        return out

    def emit(self, t) -> tuple[str, tuple, tuple]:
        """(value name, shape, per-axis split point or None) of a term."""
        if t not in self.memo:
            self.memo[t] = self._emit(t)
        return self.memo[t]

    def _emit(self, t):
        op, args = t[0], t[1:]
        if len(t) == 1 and op.startswith("input_"):
            if op not in SHAPES:
                raise ValueError(f"no shape for {op} in TASO's generator")
            shape = SHAPES[op]
            if op in WEIGHTS:
                rng = np.random.default_rng(int(op[6:]))
                self.inits.setdefault(op, rng.standard_normal(shape).astype(np.float32))
            else:
                self.inputs[op] = shape
            return op, shape, (None,) * len(shape)
        if op in ("Imatmul", "Iewmul", "Iconv", "Cpool"):
            value = literal_value(t)
            if self.literal_terms:
                return self.literal_term(t), value.shape, (None,) * value.ndim
            return self.const(value, op.lower()), value.shape, (None,) * value.ndim
        if op in ("ewadd", "ewmul"):
            (a, sa, pa), (b, sb, pb) = (self.emit(x) for x in args)
            if sa != sb:
                raise ValueError(f"{op} of {sa} and {sb}")
            split = tuple(x if y is None else y for x, y in zip(pa, pb, strict=True))
            return self.node("Add" if op == "ewadd" else "Mul", [a, b]), sa, split
        if op == "smul":
            (a, sa, pa), (s, ss, _) = (self.emit(x) for x in args)
            if ss != ():
                raise ValueError("smul by a non-scalar")
            return self.node("Mul", [a, s]), sa, pa
        if op == "relu":
            a, sa, pa = self.emit(args[0])
            return self.node("Relu", [a]), sa, pa
        if op == "transpose":
            a, sa, pa = self.emit(args[0])
            if len(sa) != 2:
                raise ValueError("transpose of a non-matrix")
            return self.node("Transpose", [a], perm=[1, 0]), sa[::-1], pa[::-1]
        if op == "matmul":
            (a, sa, pa), (b, sb, pb) = (self.emit(x) for x in args)
            if len(sa) != 2 or len(sb) != 2 or sa[1] != sb[0]:
                raise ValueError(f"matmul of {sa} and {sb}")
            return self.node("MatMul", [a, b]), (sa[0], sb[1]), (pa[0], pb[1])
        if op == "concat":
            axis, *xs = args
            parts = [self.emit(x) for x in xs]
            shapes = [p[1] for p in parts]
            if len({len(s) for s in shapes}) != 1 or any(
                s[:axis] + s[axis + 1 :] != shapes[0][:axis] + shapes[0][axis + 1 :] for s in shapes
            ):
                raise ValueError(f"concat of {shapes} on axis {axis}")
            shape = list(shapes[0])
            shape[axis] = sum(s[axis] for s in shapes)
            split = list(parts[0][2])
            split[axis] = shapes[0][axis]
            out = self.node("Concat", [p[0] for p in parts], axis=axis)
            return out, tuple(shape), tuple(split)
        if op in ("split_0", "split_1"):
            _, axis, x = args[0]
            a, sa, pa = self.emit(x)
            cut = pa[axis]
            if cut is None:
                raise ValueError("split of a tensor that no concat joined on that axis")
            lo, hi = (0, cut) if op == "split_0" else (cut, sa[axis])
            out = self.node("Slice", [a, self.ints([lo]), self.ints([hi]), self.ints([axis])])
            shape = list(sa)
            shape[axis] = hi - lo
            split = list(pa)
            split[axis] = None
            return out, tuple(shape), tuple(split)
        if op == "enlarge":
            kh, kw, w = args
            a, sa, pa = self.emit(w)
            if len(sa) != 4 or sa[2] > kh or sa[3] > kw:
                raise ValueError(f"enlarge of {sa}")
            top, left = (kh - sa[2]) // 2, (kw - sa[3]) // 2
            pads = [0, 0, top, left, 0, 0, kh - sa[2] - top, kw - sa[3] - left]
            return self.node("Pad", [a, self.ints(pads)]), (*sa[:2], kh, kw), pa
        if op == "conv2d":
            sh, sw, pad, act, x, w = args
            (a, sa, pa), (b, sb, pb) = self.emit(x), self.emit(w)
            if len(sa) != 4 or len(sb) != 4 or sa[1] % sb[1] or sb[0] % (sa[1] // sb[1]):
                raise ValueError(f"conv2d of {sa} by {sb}")
            if (sh, sw, pad) != (1, 1, 0):
                raise ValueError("only stride-1 'same' convolutions are translated")
            kh, kw = sb[2], sb[3]
            pads = [(kh - 1) // 2, (kw - 1) // 2, kh - 1 - (kh - 1) // 2, kw - 1 - (kw - 1) // 2]
            out = self.node("Conv", [a, b], group=sa[1] // sb[1], pads=pads)
            if act == 2:
                out = self.node("Relu", [out])
            elif act != 0:
                raise ValueError(f"conv activation {act}")
            return out, (sa[0], sb[0], sa[2], sa[3]), (pa[0], pb[0], None, None)
        if op in ("poolavg", "poolmax"):
            kh, kw, sh, sw, pad, x = args
            a, sa, pa = self.emit(x)
            if (sh, sw, pad) != (1, 1, 0) or len(sa) != 4:
                raise ValueError("only stride-1 'same' poolings of rank 4 are translated")
            attrs = {"kernel_shape": [kh, kw], "pads": [kh // 2, kw // 2, kh // 2, kw // 2]}
            if op == "poolavg":
                out = self.node("AveragePool", [a], count_include_pad=1, **attrs)
            else:
                out = self.node("MaxPool", [a], **attrs)
            return out, sa, (pa[0], pa[1], None, None)
        raise ValueError(f"no ONNX translation of {op!r}")


def sides(t: Term) -> tuple:
    """The terms a side stands for: several for a multi-pattern rule (``("&", t1, t2)``)."""
    return t[1:] if t[0] == "&" else (t,)


def output_pairs(m: onnx.ModelProto) -> list[tuple[str, str]]:
    """(``lhs<k>``, ``rhs<k>``) of a model of :func:`to_onnx`."""
    names = [o.name for o in m.graph.output]
    return [(a, b) for a, b in zip(names[0::2], names[1::2], strict=True)]


def to_onnx(lhs: Term, rhs: Term, literal_terms: bool = False) -> onnx.ModelProto:
    """One model computing both sides (outputs ``lhs0``, ``rhs0``, and ``lhs1``, ``rhs1``.. for
    a multi-pattern rule) over shared inputs; ValueError where a side does not type-check with
    TASO's shapes or uses an operator with no translation here. TASO's literals are
    initializers, or with ``literal_terms`` the ONNX ops that compute them the way eqsat's rules
    build them."""
    b = _Builder(literal_terms)
    outs = []
    for k, (left, right) in enumerate(zip(sides(lhs), sides(rhs), strict=True)):
        for name, t in ((f"lhs{k}", left), (f"rhs{k}", right)):
            v, shape, _ = b.emit(t)
            outs.append((b.node("Identity", [v]), name, shape))
    for v, name, _ in outs:  # rename the identities' outputs to the interface names
        for n in b.nodes:
            if n.output[0] == v:
                n.output[0] = name
    ins = [
        helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in b.inputs.items()
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for _, n, s in outs]
    inits = [numpy_helper.from_array(a, k) for k, a in b.inits.items()]
    g = helper.make_graph(b.nodes, "tensat-rule", ins, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def agree(m: onnx.ModelProto, seed: int = 0) -> bool:
    """Whether onnxruntime computes the same ``lhs<k>`` and ``rhs<k>`` on random inputs (the
    translation keeps the rule true)."""
    import onnxruntime as ort

    # graph optimizations off: onnxruntime 1.x's constant folding of a padded initializer left
    # a dangling input name ("Invalid model"), on the enlarge rules
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    feeds = {
        i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(
            np.float32
        )
        for i in m.graph.input
    }
    for left, right in output_pairs(m):
        a, b = s.run([left, right], feeds)
        if not np.allclose(a, b, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(a).max()))):
            return False
    return True


# ------------------------------------------------------------------------------ proving


@cache
def proved_rules(families: tuple[str, ...], disabled: tuple[str, ...] = ()) -> list:
    """The rules of ``families`` but ``disabled`` that the proof ledger proves as written (what
    ``optimize`` keeps without ``--allow-unproved``)."""
    from eqsat.rules import schedule
    from eqsat.verify.ledger import holds, load_ledger

    ledger = load_ledger()
    return [r for r in schedule.select(families, disabled) if holds(r, ledger)]


def saturated(
    m: onnx.ModelProto,
    families: Sequence[str],
    disabled: Sequence[str] = (),
    iter_limit: int = 12,
    node_limit: int = 20_000,
):
    """``m`` saturated as ``optimize`` saturates it — the proved rules of ``families`` (but
    ``disabled``) that can fire on it, the shape analysis, each Python-driven rewrite once —
    bounded by iterations and e-nodes only (no time limit): (the encoding, the serialized
    e-graph)."""
    from eqsat.egraph import shapes
    from eqsat.egraph.encode import encode
    from eqsat.egraph.lang import SPECS
    from eqsat.egraph.onnx_io import import_onnx
    from eqsat.egraph.saturate import saturate
    from eqsat.egraph.serialized import serialize
    from eqsat.rules import schedule

    graph = import_onnx(m)
    rules = proved_rules(tuple(families), tuple(disabled))
    rules = schedule.relevant(rules, {SPECS[n.op].ctor for n in graph.nodes if n.op in SPECS})
    enc = encode(graph)
    shapes.seed(enc)
    rulesets = [shapes.shape_rules(sizes=schedule.reads_sizes(rules)), *schedule.rulesets(rules)]
    saturate(
        enc,
        rulesets,
        iter_limit=iter_limit,
        node_limit=node_limit,
        time_limit=float("inf"),
        rewrites=schedule.rewrites(rules),
    )
    return enc, serialize(enc.egraph)


def proved_equal(m: onnx.ModelProto, families: Sequence[str], disabled: Sequence[str] = ()) -> bool:
    """Whether :func:`saturated` puts each pair of :func:`output_pairs` in one e-class."""
    enc, eg = saturated(m, families, disabled)
    return all(eg.lets[enc.lets[a]] == eg.lets[enc.lets[b]] for a, b in output_pairs(m))


LITERALS = ("Imatmul", "Iewmul", "Iconv", "Cpool")


def check(lhs: Term, rhs: Term, families: Sequence[str], disabled: Sequence[str] = ()) -> bool:
    """Whether eqsat proves the rule: with TASO's literals as weights (what rules that read a
    weight's value match), or, for a rule that has literals, written as eqsat's rules write
    them (what rules that build one make)."""
    if proved_equal(to_onnx(lhs, rhs), families, disabled):
        return True
    ops = ops_of(lhs) + ops_of(rhs)
    if not any(ops[k] for k in LITERALS):
        return False
    return proved_equal(to_onnx(lhs, rhs, True), families, disabled)


# ------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", type=Path, help="Tensat rule files")
    ap.add_argument("--check", action="store_true", help="saturate each rule with eqsat's rules")
    ap.add_argument(
        "--families",
        default="cleanup,algebra,fold,merge,layout,merge-conv,linear",
        help="rule families for --check (comma-separated)",
    )
    ap.add_argument("--list", action="store_true", help="print one line per rule")
    a = ap.parse_args(argv)
    families = a.families.split(",")
    rows = []
    for f in a.files:
        try:
            pairs = split_rules(f.read_text())
        except (OSError, ValueError) as e:
            print(f"error: {f}: {e}", file=sys.stderr)
            return 2
        if "multi" in f.name:  # Tensat's main.rs: every two lines are one multi-pattern rule
            pairs = [
                (f"{a[0]} & {b[0]}", f"{a[1]} & {b[1]}")
                for a, b in zip(pairs[0::2], pairs[1::2], strict=True)
            ]
        for k, (lt, rt) in enumerate(pairs):
            try:
                lhs, rhs = parse(lt), parse(rt)
            except ValueError as e:
                print(f"error: {f}: rule {k}: {e}", file=sys.stderr)
                return 2
            cls, verdict = classify(lhs, rhs), ""
            if a.check:
                try:
                    m = to_onnx(lhs, rhs)
                except ValueError as e:
                    verdict = f"untranslated ({e})"
                else:
                    if not agree(m):
                        verdict = "false-in-onnx"
                    else:
                        verdict = "proved" if check(lhs, rhs, families) else "not-proved"
            rows.append((f.name, k, cls, verdict, lt, rt))
            if a.list:
                print(f"{f.name}:{k}\t{cls}\t{verdict}\t{lt} == {rt}", flush=True)
    print(f"\n{'class':14} {'file':18} {'rules':>5}" + ("  proved" if a.check else ""))
    for c in [*CLASSES, Class("other", "", None)]:
        for fname in dict.fromkeys(r[0] for r in rows):
            mine = [r for r in rows if r[0] == fname and r[2] == c.key]
            if mine:
                proved = sum(r[3] == "proved" for r in mine)
                print(f"{c.key:14} {fname:18} {len(mine):5}" + (f"  {proved}" if a.check else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
