"""lower(): fusion into kernels (element-wise chains, epilogues, softmax, views as index
arithmetic), memory planning, the unclaimed-op error, a golden printed program, and lowered
kernels accepting schedules."""

from __future__ import annotations

import numpy as np
import pytest

from eqsat.egraph.interpret import interpret as interpret_graph
from eqsat.egraph.ir import Node, TensorGraph, TensorType, make_attrs
from eqsat.lower.analysis import walk
from eqsat.lower.interpret import interpret
from eqsat.lower.loops import Allocate, BufferKind, Load
from eqsat.lower.lower import LoweringError, lower
from eqsat.lower.printer import print_kernel, print_program
from eqsat.lower.schedule import Split, apply

RNG = np.random.default_rng(1)
F32 = "float32"


def graph(inputs: dict, weights: dict, nodes: list[tuple], outputs: list[str]) -> TensorGraph:
    """``nodes``: (op, inputs, outputs, attrs); types inferred by the op table."""
    from eqsat.egraph.ops import infer_node

    types = {k: TensorType(F32, s) for k, s in inputs.items()}
    types |= {k: TensorType(v.dtype.name, v.shape) for k, v in weights.items()}
    built = []
    for op, ins, outs, attrs in nodes:
        n = Node(op, tuple(ins), tuple(outs), make_attrs(attrs), name=outs[0])
        consts = [weights.get(i) for i in ins]
        for o, t in zip(outs, infer_node(n, [types.get(i) for i in ins], consts), strict=False):
            types[o] = t
        built.append(n)
    g = TensorGraph(tuple(inputs), tuple(outputs), tuple(built), types, weights)
    g.check()
    return g


def feeds_of(g: TensorGraph, batch: int = 2) -> dict[str, np.ndarray]:
    return {
        i: RNG.standard_normal(
            [d if isinstance(d, int) else batch for d in g.types[i].shape]
        ).astype(g.types[i].dtype)
        for i in g.inputs
    }


def check_equal(g: TensorGraph, lowered=None, atol=1e-5):
    lowered = lowered or lower(g)
    feeds = feeds_of(g)
    want, got = interpret_graph(g, feeds), lowered.run(feeds)
    for o in g.outputs:
        np.testing.assert_allclose(got[o], want[o], rtol=1e-5, atol=atol)
    return lowered


def wt(*shape):
    return RNG.standard_normal(shape).astype(F32)


def mlp() -> TensorGraph:
    return graph(
        {"x": (2, 4)},
        {"w1": wt(4, 3), "b1": wt(3), "w2": wt(3, 2), "b2": wt(2)},
        [
            ("MatMul", ["x", "w1"], ["h"], {}),
            ("Add", ["h", "b1"], ["hb"], {}),
            ("Relu", ["hb"], ["a"], {}),
            ("MatMul", ["a", "w2"], ["o"], {}),
            ("Add", ["o", "b2"], ["y"], {}),
        ],
        ["y"],
    )


GOLDEN_MLP = """\
program mlp
  input x: float32[2, 4]
  weight w1: float32[4, 3]
  weight b1: float32[3]
  weight w2: float32[3, 2]
  weight b2: float32[2]
  temp a: float32[2, 3]
  output y: float32[2, 2]
  kernel k0_matmul(x, w1, b1, a):
    for i0 in range(2):
      for i1 in range(3):
        a[i0, i1] = float32(0.0)
        for k in range(4):
          a[i0, i1] += x[i0, k] * w1[k, i1]
        a[i0, i1] = max(a[i0, i1] + b1[i1], float32(0.0))
  kernel k1_matmul(w2, b2, a, y):
    for i0 in range(2):
      for i1 in range(2):
        y[i0, i1] = float32(0.0)
        for k in range(3):
          y[i0, i1] += a[i0, k] * w2[k, i1]
        y[i0, i1] = y[i0, i1] + b2[i1]"""


def test_golden_mlp():
    g = mlp()
    lowered = check_equal(g, lower(g, name="mlp"))
    assert print_program(lowered.program) == GOLDEN_MLP
    assert [k.ops for k in lowered.report.kernels] == [("MatMul", "Add", "Relu"), ("MatMul", "Add")]
    assert lowered.report.peak_temp_bytes == 64  # a: 24 bytes, aligned to 64
    assert set(lowered.weights) == {"w1", "b1", "w2", "b2"}


def test_an_elementwise_chain_is_one_kernel():
    g = graph(
        {"x": (3, 5), "y": (5,)},
        {"two": np.float32(2.0).reshape(())},
        [
            ("Relu", ["x"], ["r"], {}),
            ("Mul", ["r", "two"], ["m"], {}),
            ("Add", ["m", "y"], ["s"], {}),
            ("Sigmoid", ["s"], ["out"], {}),
        ],
        ["out"],
    )
    lowered = check_equal(g)
    (k,) = lowered.program.kernels
    assert set(lowered.report.inlined) == {"r", "m", "s"}
    assert not lowered.program.temps and not lowered.weights  # the scalar 2 became a constant
    assert "sigmoid(max(x[i0, i1], float32(0.0)) * float32(2.0) + y[i1])" in print_kernel(k)


def test_matmul_bias_relu_is_one_kernel():
    g = mlp()
    lowered = lower(g)
    assert lowered.report.fused_into()["hb"] == lowered.report.fused_into()["h"] == "k0_matmul"
    assert lowered.report.kernels[0].stores == "a"


def test_softmax_and_layernorm_are_one_kernel_each():
    g = graph(
        {"x": (2, 3, 8)},
        {"scale": wt(8), "bias": wt(8)},
        [
            ("Softmax", ["x"], ["p"], {"axis": -1}),
            ("LayerNormalization", ["p", "scale", "bias"], ["y"], {}),
        ],
        ["y"],
    )
    lowered = check_equal(g)
    assert [k.ops for k in lowered.report.kernels] == [("Softmax",), ("LayerNormalization",)]
    locals_ = [
        n.buffer.name for n in walk(lowered.program.kernels[0].body) if isinstance(n, Allocate)
    ]
    assert locals_ == ["k0_softmax_max", "k0_softmax_sum"]


def test_views_are_index_arithmetic_not_copies():
    """Reshape + Transpose between two MatMuls (attention head plumbing): no kernel, no temp."""
    g = _attention_like()
    lowered = check_equal(g)
    assert [k.ops for k in lowered.report.kernels] == [("MatMul",), ("MatMul",)]
    assert [b.name for b in lowered.program.temps] == ["h"]
    assert {"r", "t", "tt"} <= set(lowered.report.inlined)


def _attention_like() -> TensorGraph:
    return graph(
        {"x": (2, 4, 6)},
        {"w": wt(6, 6), "shape": np.array([2, 4, 2, 3])},
        [
            ("MatMul", ["x", "w"], ["h"], {}),
            ("Reshape", ["h", "shape"], ["r"], {}),
            ("Transpose", ["r"], ["t"], {"perm": (0, 2, 1, 3)}),
            ("Transpose", ["t"], ["tt"], {"perm": (0, 1, 3, 2)}),
            ("MatMul", ["t", "tt"], ["y"], {}),
        ],
        ["y"],
    )


def test_conv_batchnorm_relu_residual_is_one_kernel_with_packed_weights():
    c = 4
    g = graph(
        {"x": (1, c, 5, 5)},
        {
            "w": wt(c, c, 3, 3),
            "s": wt(c),
            "b": wt(c),
            "m": wt(c),
            "v": RNG.uniform(0.5, 2, c).astype(F32),
        },
        [
            ("Conv", ["x", "w"], ["c"], {"pads": (1, 1, 1, 1)}),
            ("BatchNormalization", ["c", "s", "b", "m", "v"], ["bn"], {}),
            ("Add", ["bn", "x"], ["res"], {}),
            ("Relu", ["res"], ["y"], {}),
        ],
        ["y"],
    )
    lowered = check_equal(g, atol=1e-4)
    assert [k.ops for k in lowered.report.kernels] == [
        ("Conv", "BatchNormalization", "Add", "Relu")
    ]
    assert {"bn_scale", "bn_shift"} <= set(lowered.weights)  # folded once at compile time
    assert not lowered.program.temps


def test_a_value_read_twice_is_materialized_once():
    g = graph(
        {"x": (3, 4)},
        {},
        [
            ("Tanh", ["x"], ["t"], {}),
            ("Exp", ["t"], ["e"], {}),
            ("Sin", ["t"], ["s"], {}),
            ("Add", ["e", "s"], ["y"], {}),
        ],
        ["y"],
    )
    lowered = check_equal(g)
    assert [k.stores for k in lowered.report.kernels] == ["t", "y"]


def test_elementwise_before_a_matmul_is_materialized_not_recomputed():
    g = graph(
        {"x": (3, 4)},
        {"w": wt(4, 5)},
        [("Erf", ["x"], ["e"], {}), ("MatMul", ["e", "w"], ["y"], {})],
        ["y"],
    )
    lowered = check_equal(g)
    assert [k.ops for k in lowered.report.kernels] == [("Erf",), ("MatMul",)]


def test_an_epilogue_whose_other_input_depends_on_the_root_is_not_fused():
    g = graph(
        {"x": (4, 4)},
        {"w": wt(4, 4)},
        [
            ("MatMul", ["x", "w"], ["h"], {}),
            ("Transpose", ["h"], ["t"], {}),
            ("Add", ["h", "t"], ["y"], {}),
        ],
        ["y"],
    )
    lowered = check_equal(g)
    assert [k.ops for k in lowered.report.kernels] == [("MatMul",), ("Add",)]


def test_outputs_that_are_inputs_or_intermediate_values():
    g = graph(
        {"x": (2, 3)},
        {"w": wt(3, 3)},
        [("MatMul", ["x", "w"], ["h"], {}), ("Relu", ["h"], ["y"], {})],
        ["y", "h", "x"],
    )
    lowered = check_equal(g)
    assert [b.kind for b in lowered.program.outputs] == [BufferKind.OUTPUT] * 3
    assert [k.ops for k in lowered.report.kernels] == [("MatMul",), ("Relu",), ("Identity",)]


def test_memory_plan_reuses_dead_temporaries():
    nodes, prev = [], "x"
    for i in range(6):
        nodes += [("MatMul", [prev, f"w{i}"], [f"m{i}"], {}), ("Erf", [f"m{i}"], [f"e{i}"], {})]
        prev = f"e{i}"
    g = graph({"x": (4, 8)}, {f"w{i}": wt(8, 8) for i in range(6)}, nodes, [prev])
    lowered = check_equal(g)
    mem = lowered.memory
    assert mem.overlaps() == []
    assert [k.ops for k in lowered.report.kernels] == [("MatMul", "Erf")] * 6
    assert len(mem.offsets) == 5  # every kernel but the last stores a temporary
    assert mem.unshared_bytes == 5 * 128 and mem.peak_bytes == 2 * 128
    assert lowered.report.peak_temp_bytes == mem.peak_bytes


def test_an_unclaimed_op_is_a_one_line_error_naming_the_ops():
    g = graph(
        {"x": (2, 3)},
        {},
        [("Relu", ["x"], ["r"], {}), ("Einsum", ["r"], ["y"], {"equation": "ij->ji"})],
        ["y"],
    )
    opaque = Node("FancyOp", ("y",), ("z",), domain="com.example", opaque=b"")
    g = g.replace(
        nodes=(*g.nodes, opaque),
        outputs=("z",),
        types={**g.types, "z": g.types["y"]},
    )
    with pytest.raises(LoweringError) as e:
        lower(g)
    assert str(e.value) == "no compute definition for op(s): Einsum, com.example.FancyOp"


def test_an_unsupported_variant_names_the_node():
    g = graph(
        {"x": (2, 3)},
        {"b": np.array([2, 3, 4], np.int64)},
        [("Cast", ["x"], ["i"], {"to": 7}), ("Pow", ["i", "b"], ["y"], {})],
        ["y"],
    )
    with pytest.raises(LoweringError, match="^Pow y: Pow of integers$"):
        lower(g)


def test_symbolic_batch_and_product_dims():
    """A reshape of [batch, 4, 6] to [batch*4, 6]: the product dim is a size param bound from
    its factors at run time; kernels that lack the factor rewrite it over the product."""
    g = graph(
        {"x": ("batch", 4, 6)},
        {"w": wt(6, 3), "shape": np.array([-1, 6])},
        [
            ("Reshape", ["x", "shape"], ["r"], {}),
            ("MatMul", ["r", "w"], ["h"], {}),
            ("Relu", ["h"], ["y"], {}),
        ],
        ["y"],
    )
    assert g.types["r"].shape == ("batch*4", 6)
    lowered = check_equal(g)
    (k,) = lowered.program.kernels
    assert lowered.program.sizes == ("batch", "batch_x4")
    assert "for i0 in range(batch * 4)" in print_kernel(k)


def test_lowered_kernels_accept_schedules():
    lowered = lower(mlp())
    prog = lowered.program
    k0 = apply(prog.kernels[0], (Split("i1", 2),))
    scheduled = prog.__class__(prog.name, prog.buffers, (k0, *prog.kernels[1:]))
    feeds = feeds_of(mlp())
    want = interpret(prog, feeds | lowered.weights)
    got = interpret(scheduled, feeds | lowered.weights)
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-6)
    assert any(isinstance(n, Load) and n.buffer.name == "a" for n in walk(prog.kernels[1].body))


def test_sizes_that_do_not_follow_from_the_inputs_are_refused():
    """A strided conv over a symbolic width has output dims floor((w-3)/2)+1: the compiled code
    cannot compute them from the inputs (no shape arithmetic at run time), so lowering refuses
    with what to do — it used to fail at the first run with a KeyError (exit 3)."""
    import onnx
    from onnx import TensorProto, helper

    from eqsat.egraph import onnx_io

    w = onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    with pytest.raises(LoweringError, match="--input-shape"):
        lower(onnx_io.import_onnx(m))
