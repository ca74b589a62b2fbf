"""Bounded Z3 proofs of the Python-driven rules (:class:`~eqsat.rules.base.PyRule`), on witnesses.

Consumes a PyRule; produces a :class:`~eqsat.verify.ledger.Verdict`. A Python-driven rule is code
(it reads a snapshot of the e-graph and computes its right-hand side), so it has no printed form
to evaluate. It is checked the way it is used instead: for each witness model of the rule (a
small graph that contains its left-hand side) and each size 1..3 of the witness,

1. the model is encoded and the rule alone runs on it (it must fire on at least one size);
2. extraction takes every e-node the rule made (``prefer_rewrites``), so the extracted graph is
   the rule's right-hand side in place of its left-hand side;
3. both graphs are evaluated with the Z3 semantics of :mod:`.z3_ops` — graph inputs *and float
   weights* are fresh real symbols (the rule must hold for every weight value), integer weights
   (shapes, bounds) keep their values — and Z3 proves every output equal.

BatchNorm folding divides by ``sqrt(var + eps)``: its proof assumes each such square root is
positive (``var >= 0`` and ``eps > 0``, as BatchNormalization requires), stated as hypotheses.
The scope says which witness sizes were proved; the guards (what the rule must *not* rewrite)
are tested in ``tests/unit/rules/test_fold.py``, ``test_merge.py`` and ``test_layout.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import onnx
from onnx import helper, numpy_helper

from eqsat.egraph.encode import encode
from eqsat.egraph.ir import TensorGraph
from eqsat.egraph.onnx_io import import_onnx
from eqsat.egraph.saturate import saturate
from eqsat.extract.cost import AstSize
from eqsat.extract.extraction import extract
from eqsat.verify import z3_ops
from eqsat.verify.ledger import Verdict, rule_hash

SIZES = (1, 2, 3)
F = onnx.TensorProto.FLOAT


# ---------------------------------------------------------------------------- witnesses


def _w(name, shape):
    return numpy_helper.from_array(np.ones(shape, np.float32), name)  # values are symbols


def _i(name, values):
    return numpy_helper.from_array(np.array(values, np.int64), name)


def _model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(
        nodes,
        "witness",
        [helper.make_tensor_value_info(n, F, s) for n, s in inputs],
        [helper.make_tensor_value_info(n, F, None) for n in outputs],
        list(inits),
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _n(op, ins, outs, **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def _conv_then(d, tail, inits, bias=True):
    ins = ["x", "w", "b"] if bias else ["x", "w"]
    nodes = [_n("Conv", ins, ["c"], pads=[1, 1, 1, 1]), *tail]
    base = [_w("w", [3, 2, 3, 3])] + ([_w("b", [3])] if bias else [])
    return _model(nodes, [("x", [1, 2, d + 1, d + 1])], ["y"], base + inits)


def _bn(inp):
    return _n("BatchNormalization", [inp, "s", "be", "m", "v"], ["y"], epsilon=1e-3)


BN = [_w("s", [3]), _w("be", [3]), _w("m", [3]), _w("v", [3])]


def _lit(name, a):
    return numpy_helper.from_array(np.asarray(a, np.float32), name)  # kept: see KEEP_VALUES


def _eye_kernel(c, kernel, begins):
    k = np.zeros((c, c, *kernel), np.float32)
    for o in range(c):
        k[(o, o, *begins)] = 1.0
    return k


def _unary_wrap(core, x_shape, inits=()):
    nodes = [_n("Sigmoid", ["x"], ["sx"]), _n("Relu", ["x"], ["rx"]), *core]
    return _model(nodes, [("x", x_shape)], ["y"], inits)


WITNESSES: dict[str, Callable[[int], onnx.ModelProto]] = {
    # a Conv's bias-free residual epilogue and a MatMul's SiLU (x * sigmoid(x)) times a product
    "fuse-epilogue": lambda d: _model(
        [
            _n("Conv", ["x", "w"], ["c"]),
            _n("Add", ["c", "r"], ["a"]),
            _n("Relu", ["a"], ["y"]),
            _n("MatMul", ["p", "v"], ["m"]),
            _n("Sigmoid", ["m"], ["s"]),
            _n("Mul", ["m", "s"], ["g"]),
            _n("Mul", ["g", "q"], ["z"]),
        ],
        [("x", [1, 1, d, 2]), ("r", [1, 2, d, 2]), ("p", [d, 2]), ("q", [d, 2])],
        ["y", "z"],
        [_w("w", [2, 1, 1, 1]), _w("v", [2, 2])],
    ),
    "dropout-elim": lambda d: _model(
        [_n("Sigmoid", ["x"], ["s"]), _n("Dropout", ["s", "r"], ["y"])],
        [("x", [d, 2])],
        ["y"],
        [numpy_helper.from_array(np.float32(0.5), "r")],
    ),
    "fold-batchnorm-into-conv": lambda d: _conv_then(d, [_bn("c")], BN, bias=d != 2),
    "fold-batchnorm-into-gemm": lambda d: _model(
        [_n("Gemm", ["a", "w", "g0"], ["g"], alpha=0.5, beta=2.0, transB=d % 2), _bn("g")],
        [("a", [d, 2])],
        ["y"],
        [_w("w", [3, 2] if d % 2 else [2, 3]), _w("g0", [3]), *BN],
    ),
    "fold-mul-into-conv": lambda d: _conv_then(
        d, [_n("Mul", ["k", "c"], ["y"])], [_w("k", [3, 1, 1])], bias=d != 2
    ),
    "fold-add-into-conv": lambda d: _conv_then(
        d, [_n("Add", ["c", "k"], ["y"])], [_w("k", [1, 3, 1, 1])], bias=d != 2
    ),
    "matmul-add-to-gemm": lambda d: _model(
        [_n("MatMul", ["a", "w"], ["mm"]), _n("Add", ["mm", "c"], ["y"])],
        [("a", [d, 2])],
        ["y"],
        [_w("w", [2, 3]), _w("c", [3])],
    ),
    "merge-matmul-shared-rhs": lambda d: _model(
        [_n("MatMul", ["x0", "w"], ["y"]), _n("MatMul", ["x1", "w"], ["z"])],
        [("x0", [d, 2]), ("x1", [2, 2])],
        ["y", "z"],
        [_w("w", [2, 3])],
    ),
    "merge-matmul-shared-lhs": lambda d: _model(
        [_n("MatMul", ["x", "w0"], ["y"]), _n("MatMul", ["x", "w1"], ["z"])],
        [("x", [d, 2])],
        ["y", "z"],
        [_w("w0", [2, 2]), _w("w1", [2, 3])],
    ),
    "merge-matmul-add": lambda d: _model(
        [
            _n("MatMul", ["x", "a"], ["xa"]),
            _n("MatMul", ["h", "b"], ["hb"]),
            _n("Add", ["xa", "hb"], ["y"]),
        ],
        [("x", [d, 2]), ("h", [d, 3])],
        ["y"],
        [_w("a", [2, 2]), _w("b", [3, 2])],
    ),
    "merge-conv-shared-input": lambda d: _model(
        [
            _n("Conv", ["x", "w3", "b3"], ["y"], pads=[1, 1, 1, 1]),
            _n("Conv", ["x", "w1", "b1"], ["z"]),
        ],
        [("x", [1, 2, d + 1, d + 1])],
        ["y", "z"],
        [_w("w3", [2, 2, 3, 3]), _w("b3", [2]), _w("w1", [1, 2, 1, 1]), _w("b1", [1])],
    ),
    "merge-conv-add": lambda d: _model(
        [
            _n("Conv", ["x1", "wa", "ba"] if d != 2 else ["x1", "wa"], ["p"], pads=[1, 1, 1, 1]),
            _n("Conv", ["x2", "wb", "bb"], ["q"], pads=[1, 1, 1, 1]),
            _n("Add", ["p", "q"], ["y"]),
        ],
        [("x1", [1, 2, d + 1, d]), ("x2", [1, 1, d + 1, d])],
        ["y"],
        [_w("wa", [2, 2, 3, 3]), _w("ba", [2]), _w("wb", [2, 1, 3, 3]), _w("bb", [2])],
    ),
    "conv-add-shared-input": lambda d: _unary_wrap(
        [
            _n("Conv", ["sx", "wa", "ba"], ["p"], pads=[1, 1, 1, 1], group=1 + d % 2),
            _n(
                "Conv",
                ["sx", "wb"] if d != 2 else ["sx", "wb", "bb"],
                ["q"],
                pads=[1, 1, 1, 1],
                group=1 + d % 2,
            ),
            _n("Add", ["q", "p"], ["y"]),
        ],
        [1, 2, d + 1, d],
        [
            _w("wa", [2, 2 - d % 2, 3, 3]),
            _w("ba", [2]),
            _w("wb", [2, 2 - d % 2, 3, 3]),
            _w("bb", [2]),
        ],
    ),
    "conv-concat-split": lambda d: _unary_wrap(
        [
            _n("Concat", ["sx", "rx", "sx"], ["c"], axis=1),
            _n("Conv", ["c", "w", "b"], ["y"], pads=[1, 1, 1, 1]),
        ],
        [1, 1, d + 1, d],
        [_w("w", [2, 3, 3, 3]), _w("b", [2])],
    ),
    "avgpool-as-conv": lambda d: _unary_wrap(
        [
            _n(
                "AveragePool",
                ["sx"],
                ["y"],
                kernel_shape=[2, 3],
                pads=[1, 1, 0, 1] if d != 2 else [0, 0, 0, 0],
                strides=[1, 2] if d == 3 else [1, 1],
                count_include_pad=1 if d != 2 else 0,
            )
        ],
        [1, 2, d + 1, d + 2],
    ),
    # Inception's pool branch (pool, then a 1x1 conv with bias; count_include_pad=0, padded),
    # the same bias-free with count_include_pad=1, and the other way round (a conv, then a
    # strided pooling: DenseNet's transition)
    "conv1x1-avgpool-commute": lambda d: _unary_wrap(
        [
            _n(
                "AveragePool",
                ["sx"],
                ["p"],
                kernel_shape=[2, 2],
                pads=[1, 0, 0, 1],
                count_include_pad=int(d == 2),
            ),
            _n("Conv", ["p", "w", "b"] if d != 2 else ["p", "w"], ["y"]),
        ]
        if d != 3
        else [
            _n("Conv", ["sx", "w", "b"], ["c"]),
            _n("AveragePool", ["c"], ["y"], kernel_shape=[2, 2], strides=[2, 1]),
        ],
        [1, 2, d + 1, d + 1],
        [_w("w", [3, 2, 1, 1]), _w("b", [3])],
    ),
    "conv-residual-identity": lambda d: _unary_wrap(
        [
            _n("Conv", ["sx", "w", "b"] if d != 2 else ["sx", "w"], ["c"], pads=[1, 0, 1, 1]),
            _n("Add", ["sx", "c"] if d != 3 else ["c", "sx"], ["y"]),
        ],
        [1, 2, d + 1, d],
        [_w("w", [2, 2, 3, 2]), _w("b", [2])],
    ),
    "matmul-residual-identity": lambda d: _unary_wrap(
        [_n("MatMul", ["sx", "w"], ["m"]), _n("Add", ["m", "sx"], ["y"])],
        [d, 3],
        [_w("w", [3, 3])],
    ),
    "merge-grouped-conv-shared-input": lambda d: _unary_wrap(
        [
            _n("Conv", ["sx", "wa", "ba"], ["p"], group=2, pads=[1, 1, 1, 1]),
            _n("Conv", ["sx", "wb", "bb"], ["q"], group=2, pads=[1, 1, 1, 1]),
            _n("Concat", ["q", "p"], ["y"], axis=1),
        ],
        [1, 2, d + 1, d],
        [_w("wa", [2, 1, 3, 3]), _w("ba", [2]), _w("wb", [2 * d, 1, 3, 3]), _w("bb", [2 * d])],
    ),
    "matmul-identity-elim": lambda d: _unary_wrap(
        [
            _n("MatMul", ["sx", "eye"] if d != 2 else ["eye", "sx"], ["m"]),
            _n("Relu", ["m"], ["y"]),
        ],
        [3, 3],
        [_lit("eye", np.eye(3))],
    ),
    "conv-identity-elim": lambda d: _unary_wrap(
        [_n("Conv", ["sx", "eye"], ["c"], pads=[1, 0, 1, 0]), _n("Relu", ["c"], ["y"])],
        [1, 2, d + 1, d],
        [_lit("eye", _eye_kernel(2, [3, 1], [1, 0]))],
    ),
    # linear in the input (eqsat/rules/linear.py's last section)
    "conv-add-shared-weight": lambda d: _unary_wrap(
        [
            _n("Conv", ["sx", "w", "b"], ["p"], pads=[1, 0, 1, 1], group=1 + d % 2),
            _n("Conv", ["rx", "w"], ["q"], pads=[1, 0, 1, 1], group=1 + d % 2),
            _n("Add", ["p", "q"] if d != 2 else ["q", "p"], ["y"]),
        ],
        [1, 2, d + 1, d],
        [_w("w", [2, 2 - d % 2, 3, 2]), _w("b", [2])],
    ),
    "conv-enlarge-kernel": lambda d: _unary_wrap(
        [
            _n(
                "Conv",
                ["sx", "w", "b"] if d != 2 else ["sx", "w"],
                ["p"],
                pads=[0, 1, 0, 1],
                strides=[1, 1 + d % 2],
            ),
            _n("Conv", ["rx", "k"], ["q"], pads=[1, 1, 1, 1], strides=[1, 1 + d % 2]),
            _n("Add", ["p", "q"], ["y"]),
        ],
        [1, 2, d + 1, d + 1],
        [_w("w", [2, 2, 1, 3]), _w("b", [2]), _w("k", [2, 2, 3, 3])],
    ),
    "scalar-mul-through-linear": lambda d: _model(
        [
            _n("Sigmoid", ["x"], ["sx"]),
            _n("MatMul", ["sx", "w"], ["m"]),
            _n("Mul", ["m", "s"] if d != 2 else ["s", "m"], ["y1"]),
            _n("Reshape", ["sx", "r4"], ["x4"]),
            _n("Conv", ["x4", "k"], ["c"], pads=[1, 0, 1, 0]),
            _n("Mul", ["c", "s"], ["y2"]),
            _n("AveragePool", ["x4"], ["p"], kernel_shape=[1, 2], strides=[1, 1]),
            _n("Mul", ["s", "p"], ["y3"]),
            _n("Concat", ["sx", "x"], ["cat"], axis=d % 2),
            _n("Mul", ["cat", "s"], ["y4"]),
            _n("Transpose", ["sx"], ["t"], perm=[1, 0]),
            _n("Mul", ["t", "s"], ["y5"]),
            _n("MatMul", ["sx", "w2"], ["m2"]),
            _n("Concat", ["x", "m2"], ["cat2"], axis=1),
            _n("Mul", ["s", "cat2"], ["y6"]),
            _n("Mul", ["x4", "s"], ["xs"]),
            _n("Conv", ["xs", "k"], ["y7"], pads=[1, 0, 1, 0]),
        ],
        [("x", [d, 3]), ("s", [])],
        ["y1", "y2", "y3", "y4", "y5", "y6", "y7"],
        [_w("w", [3, 2]), _i("r4", [1, 1, d, 3]), _w("k", [2, 1, 3, 1]), _w("w2", [3, 3])],
    ),
    "pool-concat-distribute": lambda d: _model(
        [
            _n("Sigmoid", ["x"], ["sx"]),
            _n("Concat", ["sx", "x"], ["c"], axis=d % 2),
            _n("MaxPool", ["c"], ["y"], kernel_shape=[2, 2], pads=[1, 0, 0, 1]),
            _n("AveragePool", ["c"], ["z"], kernel_shape=[1, 2], strides=[1, 2]),
        ],
        [("x", [1, 2, d + 1, d + 1])],
        ["y", "z"],
    ),
    "conv-concat-batch": lambda d: _unary_wrap(
        [
            _n("Concat", ["sx", "rx"], ["c"], axis=0),
            _n("Conv", ["c", "w", "b"] if d != 2 else ["c", "w"], ["y"], pads=[1, 0, 1, 1]),
        ],
        [d, 2, 3, d + 1],
        [_w("w", [2, 2, 3, 2]), _w("b", [2])],
    ),
    "binary-concat-distribute": lambda d: _model(
        [
            _n("Sigmoid", ["x"], ["sx"]),
            _n("Relu", ["x"], ["rx"]),
            _n("Add", ["sx", "rx"], ["p"]),
            _n("Add", ["x", "sx"], ["q"]),
            _n("Concat", ["p", "q"], ["y"], axis=d % 2),
            _n("Mul", ["rx", "x"], ["m"]),
            _n("Mul", ["sx", "sx"], ["n"]),
            _n("Concat", ["m", "n", "m"], ["z"], axis=-1),
        ],
        [("x", [d, 2])],
        ["y", "z"],
    ),
    "transpose-concat-distribute": lambda d: _unary_wrap(
        [
            _n("Concat", ["sx", "rx"], ["c"], axis=-1 if d != 2 else 0),
            _n("Transpose", ["c"], ["y"], perm=[1, 2, 0]),
        ],
        [d, 2, 3],
    ),
    "mul-ones-elim": lambda d: _unary_wrap(
        [_n("Mul", ["sx", "ones"] if d != 2 else ["ones", "sx"], ["m"]), _n("Relu", ["m"], ["y"])],
        [d, 3],
        [_lit("ones", np.ones([3] if d == 3 else [d, 3]))],
    ),
    "matmul-add-shared-rhs": lambda d: _unary_wrap(
        [
            _n("MatMul", ["sx", "w"], ["p"]),
            _n("MatMul", ["rx", "w"], ["q"]),
            _n("Add", ["p", "q"], ["y"]),
        ],
        [d, 3],
        [_w("w", [3, 2])],
    ),
    "matmul-add-shared-lhs": lambda d: _unary_wrap(
        [
            _n("MatMul", ["w", "sx"], ["p"]),
            _n("MatMul", ["w", "rx"], ["q"]),
            _n("Add", ["q", "p"], ["y"]),
        ],
        [3, d],
        [_w("w", [2, 3])],
    ),
    "matmul-associative-2d": lambda d: _model(
        [
            _n("MatMul", ["x", "a"], ["p"]),
            _n("Relu", ["z"], ["rz"]),
            _n("MatMul", ["p", "rz"], ["y"]),
        ],
        [("x", [d, 3]), ("z", [2, d + 1])],
        ["y"],
        [_w("a", [3, 2])],
    ),
    "transpose-compose": lambda d: _unary_wrap(
        [
            _n("Transpose", ["sx"], ["t"], perm=[2, 0, 1]),
            _n("Transpose", ["t"], ["y"], perm=[1, 0, 2] if d != 2 else [1, 2, 0]),
        ],
        [d, 2, 3],
    ),
    "reshape-compose": lambda d: _unary_wrap(
        [_n("Reshape", ["sx", "s1"], ["r"]), _n("Reshape", ["r", "s2"], ["y"])],
        [d, 2, 3],
        [_i("s1", [d * 6]), _i("s2", [2, -1])],
    ),
    "reshape-noop": lambda d: _unary_wrap(
        [_n("Reshape", ["sx", "s"], ["y"])], [d, 2], [_i("s", [d, -1])]
    ),
    "slice-slice-commute": lambda d: _unary_wrap(
        [
            _n("Concat", ["sx", "rx"], ["c"], axis=1),
            _n("Slice", ["c", "r0", "r1", "a0"], ["r"]),
            _n("Slice", ["r", "c0", "c1", "a1"], ["y"]),
        ],
        [d + 1, 3],
        [
            _i("r0", [1]),
            _i("r1", [d + 1]),
            _i("a0", [0]),
            _i("c0", [2]),
            _i("c1", [5]),
            _i("a1", [1]),
        ],
    ),
    "binary-slice-commute": lambda d: _unary_wrap(
        [
            _n("Slice", ["sx", "b", "e", "ax"], ["p"]),
            _n("Slice", ["rx", "b", "e", "ax"], ["q"]),
            _n("Add", ["p", "q"], ["y"]),
        ],
        [d, 4],
        [_i("b", [1]), _i("e", [3]), _i("ax", [-1])],
    ),
    "unary-concat-distribute": lambda d: _unary_wrap(
        [_n("Concat", ["sx", "rx"], ["c"], axis=0), _n("Tanh", ["c"], ["y"])], [d, 2]
    ),
    "slice-of-concat": lambda d: _unary_wrap(
        [_n("Concat", ["sx", "rx"], ["c"], axis=1), _n("Slice", ["c", "b", "e", "ax"], ["y"])],
        [d, 3],
        [_i("b", [3]), _i("e", [6]), _i("ax", [1])],
    ),
    "concat-flatten": lambda d: _unary_wrap(
        [
            _n("Concat", ["rx", "sx"], ["c0"], axis=1),
            _n("Concat", ["sx", "c0"], ["c1"], axis=-1),
            _n("Concat", ["c1", "rx"], ["y"], axis=1),
        ],
        [d, 2],
    ),
    "concat-of-slices": lambda d: _unary_wrap(
        [
            _n("Slice", ["sx", "z", "m", "ax"], ["p"]),
            _n("Slice", ["sx", "m", "big", "ax"], ["q"]),
            _n("Concat", ["p", "q"], ["y"], axis=-1),
        ],
        [d, 3],
        [_i("z", [0]), _i("m", [1]), _i("big", [2**62]), _i("ax", [-1])],
    ),
}


# float weights that keep their value in a proof: the rules that recognise a literal (an
# identity matrix or kernel) hold for that value only; every other float weight is a symbol
KEEP_VALUES: dict[str, frozenset[str]] = {
    "mul-ones-elim": frozenset({"ones"}),
    "matmul-identity-elim": frozenset({"eye"}),
    "conv-identity-elim": frozenset({"eye"}),
}


# ---------------------------------------------------------------------------- evaluation


def evaluate(graph: TensorGraph, symbolic: set[str]) -> list[np.ndarray]:
    """The graph's outputs under the Z3 semantics: inputs and the float weights named in
    ``symbolic`` (the model's own) are symbols; other weights (literals a rule introduced, such
    as BatchNorm's epsilon) keep their values."""
    env: dict[str, np.ndarray] = {}
    for name in graph.inputs:
        env[name] = z3_ops.symbols(name, graph.types[name].shape)
    for name, w in graph.weights.items():
        w = np.asarray(w)
        if w.dtype.kind == "f":
            env[name] = z3_ops.symbols(name, w.shape) if name in symbolic else z3_ops.real(w)
        else:
            env[name] = w
    for node in graph.nodes:
        ins = [env[i] if i else None for i in node.inputs]
        while ins and ins[-1] is None:
            ins.pop()
        if node.op == "Dropout":  # inference: the identity (training_mode is not given)
            outs = [ins[0]]
        else:
            outs = z3_ops.run(node.op, dict(node.attr), ins, len(node.outputs))
        for name, value in zip(node.outputs, outs, strict=False):
            if name:
                env[name] = value
    return [env[o] for o in graph.outputs]


def verify_pyrule(rule) -> Verdict:
    t0 = time.perf_counter()
    build = WITNESSES.get(rule.name) or rule.witness
    if build is None:
        return Verdict(rule.name, "unknown", "", 0, 0.0, "no witness for this rule")
    proved = []
    for d in SIZES:
        graph = import_onnx(build(d))
        sat = saturate(encode(graph), (), rewrites=[rule])
        if not sat.matches.get(rule.name):
            continue
        rewritten = extract(sat, AstSize(), extractor="ilp", prefer_rewrites=True).graph
        if _structure(rewritten) == _structure(graph):
            continue  # fired, but nothing extractable changed at this size
        weights = {k for k, w in graph.weights.items() if np.asarray(w).dtype.kind == "f"}
        weights -= KEEP_VALUES.get(rule.name, frozenset())
        before, after = evaluate(graph, weights), evaluate(rewritten, weights)
        hyps = z3_ops.sqrt_hypotheses([e for o in before + after for e in o.reshape(-1)])
        for a, b in zip(before, after, strict=True):
            verdict, detail = z3_ops.equal(np.asarray(a, object), np.asarray(b, object), hyps)
            if verdict != "proved":
                return Verdict(
                    rule.name,
                    verdict,
                    "",
                    len(proved),
                    time.perf_counter() - t0,
                    f"witness size {d}: {detail}",
                )
        proved.append(d)
    if not proved:
        return Verdict(
            rule.name,
            "unknown",
            "",
            0,
            time.perf_counter() - t0,
            "the rule rewrote none of its witnesses",
        )
    kept = sorted(KEEP_VALUES.get(rule.name, ()))
    but = f" but the literal {', '.join(kept)}" if kept else ""
    scope = f"bounded: witness sizes {proved}, weights symbolic{but}"
    return Verdict(
        rule.name, "proved", scope, len(proved), time.perf_counter() - t0, "", rule_hash(rule)
    )


def _structure(g: TensorGraph) -> list[tuple]:
    return [(n.op, n.inputs, n.outputs, tuple(sorted(n.attr.items()))) for n in g.nodes]
