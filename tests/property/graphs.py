"""The hypothesis strategy for small random ONNX models, shared by the property tests, the e-graph
round trip and the fuzzer (``make fuzz``).

:func:`graphs` draws a rank-2 float graph over one or two inputs whose batch (and, with
``symbolic_width``, width) may be symbolic. Besides element-wise, contraction, layout and
normalization ops it draws what real models have and small hand-made tests tend to miss:
nodes with several outputs (Split, Dropout with its mask, TopK), *shared subterms* (a value
used by several consumers, a node repeated verbatim, several graph outputs, an input or an
intermediate value returned as an output), integer values (ArgMax, TopK's indices), a
rank-4 path (a row as a column image through Conv, BatchNorm, per-channel Mul/Add, pooling,
Flatten), rank 3 and back (Unsqueeze/Squeeze), Constant nodes, negative Gather indices,
backwards slices, Pad modes, Tile, Expand, CumSum and, with ``opaque=True``, ops outside
eqsat's op table, which eqsat keeps as opaque nodes.

Only shapes that onnxruntime accepts are drawn: each value's shape (ints, or a dim name) is
tracked as the graph grows, and a draw that does not fit the current value is skipped.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st
from onnx import TensorProto, helper

from tests.helpers import init, model

UNARY = [
    "Relu", "Sigmoid", "Tanh", "Neg", "Abs", "Erf", "Sin", "Cos", "Softplus", "Elu",
    "HardSigmoid", "Selu", "HardSwish", "Identity",
]  # fmt: skip
BINARY = ["Add", "Sub", "Mul", "Max", "Min"]
# ONNX ops outside eqsat's op table that onnxruntime runs (a test checks they stay outside):
# single-output element-wise or row-wise ones, and TopK (two outputs, one of them int64)
OPAQUE_UNARY = ["Softsign", "Atan", "Asinh", "Round"]
OPAQUE_ROW = ["Hardmax", "LpNormalization"]

KINDS = [
    "unary", "binary", "weight", "div", "clip", "matmul", "gemm", "transpose", "concat",
    "split", "slice", "softmax", "reduce", "reshape", "layernorm", "where", "argmax",
    "dropout", "repeat", "conv", "gather", "constant", "pad", "tile", "sum", "pow", "cumsum",
    "unsqueeze", "expand",
]  # fmt: skip
OPAQUE_KINDS = ["opaque", "opaque-row", "topk"]

F, I64 = TensorProto.FLOAT, TensorProto.INT64


@st.composite
def graphs(draw, opaque: bool = False, max_nodes: int = 8, symbolic_width: bool = False):
    batch = draw(st.sampled_from([2, "N"]))
    width = draw(st.sampled_from([1, 2, 3, 4, *(["W"] if symbolic_width else [])]))
    inputs = ["x"] + (["y"] if draw(st.booleans()) else [])
    # (name, shape, elem type) of every value a node may read; floats feed the ops
    values: list[tuple[str, tuple, int]] = [(n, (batch, width), F) for n in inputs]
    nodes, inits = [], []
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))

    def fresh(prefix):
        return f"{prefix}{len(nodes)}_{len(inits)}"

    def weight(shape, array=None):
        name = fresh("w")
        a = rng.standard_normal(shape).astype(np.float32) if array is None else array
        inits.append(init(name, a))
        return name

    def ints(*v):
        return weight(None, np.array(v, np.int64))

    def node(op, ins, n_out=1, **attrs):
        outs = [fresh("v") + (f"_{k}" if k else "") for k in range(n_out)]
        nodes.append(helper.make_node(op, ins, outs, **attrs))
        return outs

    def known(d):
        return isinstance(d, int)

    kinds = KINDS + (OPAQUE_KINDS if opaque else [])
    for _ in range(draw(st.integers(1, max_nodes))):
        floats = [(v, s) for v, s, t in values if t == F]
        src, shape = draw(st.sampled_from(floats))
        kind = draw(st.sampled_from(kinds))
        rows, cols = shape
        new: list[tuple[str, tuple, int]] = []
        if kind == "unary":
            op = draw(st.sampled_from(UNARY))
            attrs = {"alpha": 0.2} if op == "Elu" else {}
            new = [(node(op, [src], **attrs)[0], shape, F)]
        elif kind == "binary":
            other = draw(st.sampled_from([v for v, s in floats if s == shape]))
            new = [(node(draw(st.sampled_from(BINARY)), [src, other])[0], shape, F)]
        elif kind == "weight":  # broadcast against a row, a scalar or a [1, 1] weight
            form = draw(st.sampled_from(["row", "scalar", "one"]))
            wshape = {"row": (cols,) if known(cols) else (1,), "scalar": (), "one": (1, 1)}[form]
            w = weight(wshape)
            ins = [w, src] if draw(st.booleans()) else [src, w]
            new = [(node(draw(st.sampled_from(BINARY)), ins)[0], shape, F)]
        elif kind == "div":  # by a weight kept away from zero
            mag = rng.uniform(0.5, 2.0, (cols,) if known(cols) else (1,))
            w = weight(None, (mag * rng.choice([-1, 1], mag.shape)).astype(np.float32))
            new = [(node("Div", [src, w])[0], shape, F)]
        elif kind == "clip":
            lo, hi = sorted(rng.uniform(-1.5, 1.5, 2).astype(np.float32))
            bounds = [weight(None, np.array(lo)), weight(None, np.array(hi))]
            new = [(node("Clip", [src, *bounds])[0], shape, F)]
        elif kind == "matmul" and known(cols):
            k = draw(st.integers(1, 4))
            new = [(node("MatMul", [src, weight((cols, k))])[0], (rows, k), F)]
        elif kind == "gemm" and known(cols):
            k = draw(st.integers(1, 4))
            trans_b = draw(st.booleans())
            w = weight((k, cols) if trans_b else (cols, k))
            ins = [src, w] + ([weight((k,))] if draw(st.booleans()) else [])
            out = node("Gemm", ins, alpha=0.5, beta=1.5, transB=int(trans_b))[0]
            new = [(out, (rows, k), F)]
        elif kind == "transpose":
            new = [(node("Transpose", [src], perm=[1, 0])[0], (cols, rows), F)]
        elif kind == "concat":
            axis = draw(st.sampled_from([0, 1]))
            keep = 1 - axis  # the other dim must match
            others = [(v, s) for v, s in floats if s[keep] == shape[keep] and known(s[axis])]
            if not known(shape[axis]) or not others:
                continue
            other, oshape = draw(st.sampled_from(others))
            size = shape[axis] + oshape[axis]
            out = node("Concat", [src, other], axis=axis)[0]
            new = [(out, (size, cols) if axis == 0 else (rows, size), F)]
        elif kind == "split" and known(cols) and cols >= 2:
            first = draw(st.integers(1, cols - 1))
            outs = node("Split", [src, ints(first, cols - first)], n_out=2, axis=1)
            new = [(outs[0], (rows, first), F), (outs[1], (rows, cols - first), F)]
        elif kind == "slice" and known(cols):
            start, stop = sorted(draw(st.lists(st.integers(0, cols), min_size=2, max_size=2)))
            if start == stop:
                continue
            if draw(st.booleans()):  # backwards: from stop - 1 down to start
                sl = [ints(stop - 1), ints(start - 1 if start else -cols - 1), ints(1), ints(-1)]
            else:
                sl = [ints(start), ints(stop), ints(1), ints(1)]
            new = [(node("Slice", [src, *sl])[0], (rows, stop - start), F)]
        elif kind == "softmax":
            op = draw(st.sampled_from(["Softmax", "LogSoftmax"]))
            new = [(node(op, [src], axis=draw(st.sampled_from([-1, 0])))[0], shape, F)]
        elif kind == "reduce":
            axis = draw(st.sampled_from([0, 1]))
            op = draw(st.sampled_from(["ReduceSum", "ReduceMean", "ReduceMax"]))
            if op == "ReduceSum":  # axes are an input from opset 13, an attribute for the rest
                out = node(op, [src, ints(axis)], keepdims=1)[0]
            else:
                out = node(op, [src], axes=[axis], keepdims=1)[0]
            new = [(out, (1, cols) if axis == 0 else (rows, 1), F)]
        elif kind == "reshape":
            if known(rows) and known(cols):
                target, shape2 = (cols, rows), (cols, rows)
            else:  # 0 copies the input's dim, -1 is inferred
                target, shape2 = (0, -1), shape
            new = [(node("Reshape", [src, ints(*target)])[0], shape2, F)]
        elif kind == "layernorm" and known(cols):
            ins = [src, weight((cols,))] + ([weight((cols,))] if draw(st.booleans()) else [])
            new = [(node("LayerNormalization", ins, axis=-1, epsilon=1e-5)[0], shape, F)]
        elif kind == "where":
            other = draw(st.sampled_from([v for v, s in floats if s == shape]))
            cond = node("Greater", [src, weight(())])[0]
            new = [(node("Where", [cond, src, other])[0], shape, F)]
        elif kind == "argmax":
            idx = node("ArgMax", [src], axis=1, keepdims=1)[0]
            new = [(idx, (rows, 1), I64), (node("Cast", [idx], to=F)[0], (rows, 1), F)]
        elif kind == "dropout":  # inference: the identity, and an all-true mask
            outs = node("Dropout", [src], n_out=draw(st.sampled_from([1, 2])))
            new = [(outs[0], shape, F)] + [(o, shape, TensorProto.BOOL) for o in outs[1:]]
        elif kind == "repeat":  # a node again, verbatim but for its outputs: a shared subterm
            kinds_of = {v: (s, t) for v, s, t in values}
            live = [n for n in nodes if all(o in kinds_of for o in n.output)]
            if not live:
                continue
            again = draw(st.sampled_from(live))
            copy = helper.make_node(again.op_type, list(again.input), [], domain=again.domain)
            copy.attribute.extend(again.attribute)
            outs = [fresh("r") + f"_{k}" for k in range(len(again.output))]
            copy.output.extend(outs)
            nodes.append(copy)
            new = [(o, *kinds_of[a]) for o, a in zip(outs, again.output, strict=True)]
        elif kind == "conv" and known(cols):  # the row as a column image: [rows, 1, cols, 1]
            x4 = node("Reshape", [src, ints(0, 1, cols, 1)])[0]
            k, kh = draw(st.integers(1, 3)), draw(st.sampled_from([1, 3]))
            ins = [x4, weight((k, 1, kh, 1))] + ([weight((k,))] if draw(st.booleans()) else [])
            h = node("Conv", ins, pads=[kh // 2, 0, kh // 2, 0])[0]
            after = draw(st.sampled_from(["", "bn", "mul", "add", "pool"]))
            if after == "bn":  # foldable into the conv
                var = weight(None, rng.uniform(0.5, 2.0, k).astype(np.float32))
                h = node("BatchNormalization", [h, weight((k,)), weight((k,)), weight((k,)), var])
                h = h[0]
            elif after in ("mul", "add"):  # per-channel: foldable too
                h = node(after.capitalize(), [h, weight((1, k, 1, 1))])[0]
            elif after == "pool":
                op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
                h = node(op, [h], kernel_shape=[3, 1], pads=[1, 0, 1, 0])[0]
            if draw(st.booleans()):
                h = node("Relu", [h])[0]
            new = [(node("Flatten", [h], axis=1)[0], (rows, k * cols), F)]
        elif kind == "gather" and known(cols):  # column indices, negative ones among them
            idx = draw(st.lists(st.integers(-cols, cols - 1), min_size=1, max_size=4))
            out = node("Gather", [src, ints(*idx)], axis=1)[0]
            new = [(out, (rows, len(idx)), F)]
        elif kind == "constant":  # a Constant node, as exporters write weights
            c = fresh("c")
            value = rng.standard_normal((cols,) if known(cols) else (1,)).astype(np.float32)
            nodes.append(helper.make_node("Constant", [], [c], value=init(c, value)))
            new = [(node(draw(st.sampled_from(BINARY)), [src, c])[0], shape, F)]
        elif kind == "pad" and known(cols):
            mode = draw(st.sampled_from(["constant", "reflect", "edge"]))
            before, after = draw(st.integers(0, 2)), draw(st.integers(0, 2))
            if mode == "reflect" and max(before, after) >= cols:
                continue
            out = node("Pad", [src, ints(0, before, 0, after)], mode=mode)[0]
            new = [(out, (rows, before + cols + after), F)]
        elif kind == "tile" and known(cols):
            reps = draw(st.integers(1, 3))
            new = [(node("Tile", [src, ints(1, reps)])[0], (rows, cols * reps), F)]
        elif kind == "sum":
            same = [v for v, s in floats if s == shape]
            terms = draw(st.lists(st.sampled_from(same), min_size=1, max_size=3))
            new = [(node("Sum", [src, *terms])[0], shape, F)]
        elif kind == "pow":  # a square, or the square root of a magnitude
            if draw(st.booleans()):
                new = [(node("Pow", [src, weight(None, np.array(2.0, np.float32))])[0], shape, F)]
            else:
                mag = node("Abs", [src])[0]
                new = [(node("Sqrt", [mag])[0], shape, F)]
        elif kind == "cumsum":
            axis = draw(st.sampled_from([0, 1]))
            attrs = {"exclusive": int(draw(st.booleans())), "reverse": int(draw(st.booleans()))}
            new = [(node("CumSum", [src, ints(axis)], **attrs)[0], shape, F)]
        elif kind == "unsqueeze":  # through rank 3 and back
            axis = draw(st.sampled_from([0, 1, 2, -1]))
            up = node("Unsqueeze", [src, ints(axis)])[0]
            mid = node(draw(st.sampled_from(UNARY)), [up])[0]
            new = [(node("Squeeze", [mid, ints(axis)])[0], shape, F)]
        elif kind == "expand" and known(cols) and cols == 1:
            m = draw(st.integers(1, 3))
            new = [(node("Expand", [src, ints(1, m)])[0], (rows, m), F)]
        elif kind == "opaque":
            new = [(node(draw(st.sampled_from(OPAQUE_UNARY)), [src])[0], shape, F)]
        elif kind == "opaque-row":
            new = [(node(draw(st.sampled_from(OPAQUE_ROW)), [src], axis=1)[0], shape, F)]
        elif kind == "topk" and known(cols):
            k = draw(st.integers(1, cols))
            vals, idx = node("TopK", [src, ints(k)], n_out=2, axis=1)
            new = [(vals, (rows, k), F), (idx, (rows, k), I64)]
            new.append((node("Cast", [idx], to=F)[0], (rows, k), F))
        else:
            continue
        values.extend(new)
        dead = next((v for v, _, t in new if t == F), None)  # a repeated ArgMax has none
        if dead and draw(st.booleans()):  # dead branches for DCE
            nodes.append(helper.make_node("Relu", [dead], [fresh("dead")]))
    if len(values) == len(inputs):
        values.append((node("Relu", ["x"])[0], (batch, width), F))
    # the last value, and any others (an input among them): several outputs share subterms
    extra = draw(st.lists(st.sampled_from(values[:-1]), max_size=2, unique_by=lambda v: v[0]))
    outs = [values[-1], *extra]
    return model(
        nodes,
        [helper.make_tensor_value_info(n, F, [batch, width]) for n in inputs],
        [helper.make_tensor_value_info(n, t, list(s)) for n, s, t in outs],
        inits,
    )
