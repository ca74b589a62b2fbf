"""The float32 vector math (:mod:`eqsat.backends.llvm.vmath`): accuracy in ulp against the true
value (float64 numpy/scipy) and against the interpreter's numpy float32 reference, special values
bit for bit, Softmax and GELU models compiled and compared with interpret(), and the evidence
that an exp loop vectorizes (``<N x float>`` in the optimized IR, no ``expf`` left)."""

from __future__ import annotations

import ctypes
import re
import warnings

import numpy as np
import onnx
import pytest
import scipy.special
from llvmlite import ir
from onnx import TensorProto, helper

from eqsat import pipeline
from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.codegen import emit
from eqsat.backends.llvm.jit import compile_ir, optimized_ir
from eqsat.backends.llvm.vmath import FUNCTIONS, emit_f32
from eqsat.compiled import target_caps
from eqsat.lower.default_schedule import schedule_program
from eqsat.lower.interpret import interpret
from eqsat.lower.intrinsics import INTRINSICS
from eqsat.lower.loops import Buffer, BufferKind, Kernel, LoopKind, LoopProgram, Store, Var, call
from eqsat.lower.loops import loop as make_loop

F32, I64, PTR = ir.FloatType(), ir.IntType(64), ir.PointerType()

# max error against the correctly rounded result, in float32 ulp (measured: vmath's docstring)
BOUND = {"exp": 1.25, "log": 1.0, "tanh": 2.0, "erf": 1.5, "sigmoid": 2.0}
NUMPY_BOUND = 4  # ulp apart from the interpreter's numpy float32 result

EDGES = np.array(
    [0.0, -0.0, 2.0**-149, -(2.0**-149), 1e-40, -1e-40, 2.0**-126, 1e-30, -1e-30, 1e-7, 0.5,
     0.625, -0.625, 0.921875, -0.921875, 1.0, -1.0, 3.92, 4.0, 9.02, 10.0, -10.0, 87.4, -87.4,
     88.7, -88.7, 88.73, 89.0, -89.0, 100.0, -100.0, 103.9, -103.9, 104.0, -104.0, 1e30,
     -1e30, 3.4e38, -3.4e38, np.inf, -np.inf, np.nan],
    dtype=np.float32,
)  # fmt: skip


def _module(name: str, fused: bool) -> ir.Module:
    """``void f(ptr noalias x, ptr noalias y, i64 n)``: y[i] = name(x[i]), a plain loop."""
    m = ir.Module()
    fn = ir.Function(m, ir.FunctionType(ir.VoidType(), [PTR, PTR, I64]), "f")
    x, y, n = fn.args
    x.add_attribute("noalias")
    y.add_attribute("noalias")
    entry, head, body, done = (fn.append_basic_block(s) for s in ("entry", "head", "body", "done"))
    b = ir.IRBuilder(entry)
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    b.cbranch(b.icmp_signed("<", i, n), body, done)
    b.position_at_end(body)
    v = b.load(b.gep(x, [i], inbounds=True, source_etype=F32), typ=F32)
    b.store(emit_f32(b, name, v, fused), b.gep(y, [i], inbounds=True, source_etype=F32))
    i.add_incoming(b.add(i, ir.Constant(I64, 1)), body)
    b.branch(head)
    b.position_at_end(done)
    b.ret_void()
    return m


_KERNELS: dict = {}


def vm(name: str, x: np.ndarray, fused: bool = True) -> np.ndarray:
    key = (name, fused)
    if key not in _KERNELS:
        c = compile_ir(_module(name, fused), opt=3)
        _KERNELS[key] = c.function("f", None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.empty_like(x)
    _KERNELS[key](x.ctypes.data, y.ctypes.data, x.size)
    return y


def true_value(name: str, x: np.ndarray) -> np.ndarray:
    f = {"exp": np.exp, "log": np.log, "tanh": np.tanh, "erf": scipy.special.erf,
         "sigmoid": scipy.special.expit}[name]  # fmt: skip
    with np.errstate(all="ignore"):
        return f(x.astype(np.float64))


def ulp_error(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|y - ref| in units of the float32 spacing at ref (2^-149 at least); a y equal to ref
    rounded to float32 (inf included) counts as exact, NaN against NaN too."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r32 = ref.astype(np.float32)
        ulp = np.maximum(np.spacing(np.abs(r32)).astype(np.float64), 2.0**-149)
        err = np.abs(y.astype(np.float64) - ref) / ulp
    err[y == r32] = 0.0
    err[np.isnan(y) & np.isnan(ref)] = 0.0
    return np.nan_to_num(err, nan=np.inf)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many float32 values lie between a and b (0 for equal values and for NaN, NaN)."""

    def ordered(v):
        i = v.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)

    d = np.abs(ordered(a) - ordered(b))
    d[np.isnan(a) & np.isnan(b)] = 0
    d[np.isnan(a) != np.isnan(b)] = 1 << 40
    return d


def sweep(name: str) -> np.ndarray:
    """Every 4099th float32 bit pattern (both signs, subnormals to inf) and a fine grid where
    the function bends, plus the edge values."""
    bits = np.arange(0, 2**32, 4099, dtype=np.uint64).astype(np.uint32).view(np.float32)
    lo, hi = {"exp": (-104, 89), "log": (0, 4)}.get(name, (-10, 10))
    grid = np.linspace(lo, hi, 1_000_001, dtype=np.float32)
    x = np.concatenate([bits[~np.isnan(bits)], grid, EDGES])
    return x


@pytest.mark.parametrize("fused", [True, False], ids=["fmuladd", "mul-add"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_accuracy_against_the_true_value(name, fused):
    x = sweep(name)
    err = ulp_error(vm(name, x, fused), true_value(name, x))
    k = int(np.argmax(err))
    assert err[k] <= BOUND[name], f"{name}({x[k]!r}): {err[k]:.2f} ulp"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_within_4_ulp_of_the_numpy_reference(name):
    x = sweep(name)
    with np.errstate(all="ignore"):
        want = INTRINSICS[name].numpy(x)
    d = ulp_distance(vm(name, x), want)
    k = int(np.argmax(d))
    assert d[k] <= NUMPY_BOUND, f"{name}({x[k]!r}): {vm(name, x[k : k + 1])[0]!r} vs {want[k]!r}"


def test_special_values_exactly():
    inf, nan = np.inf, np.nan
    cases = {
        "exp": [(-inf, 0.0), (inf, inf), (0.0, 1.0), (-0.0, 1.0), (89.0, inf), (-104.0, 0.0),
                (-103.9, 2.0**-149)],
        "log": [(0.0, -inf), (-0.0, -inf), (-1.0, nan), (-inf, nan), (inf, inf), (1.0, 0.0),
                (2.0**-149, np.log(2.0**-149))],
        "tanh": [(0.0, 0.0), (-0.0, -0.0), (inf, 1.0), (-inf, -1.0), (10.0, 1.0),
                 (2.0**-149, 2.0**-149), (-1e-30, -1e-30)],
        "erf": [(0.0, 0.0), (-0.0, -0.0), (inf, 1.0), (-inf, -1.0), (4.0, 1.0), (-100.0, -1.0),
                (2.0**-149, scipy.special.erf(2.0**-149))],
        "sigmoid": [(0.0, 0.5), (-0.0, 0.5), (inf, 1.0), (-inf, 0.0), (100.0, 1.0),
                    (-100.0, scipy.special.expit(-100.0))],
    }  # fmt: skip
    for name, pairs in cases.items():
        x = np.array([p[0] for p in pairs] + [nan], dtype=np.float32)
        want = np.array([p[1] for p in pairs] + [nan], dtype=np.float32)
        got = vm(name, x)
        same = (got.view(np.int32) == want.view(np.int32)) | (np.isnan(got) & np.isnan(want))
        assert same.all(), f"{name}: {x[~same]} -> {got[~same]}, want {want[~same]}"


# ------------------------------------------------------------------ models through the compiler
def _model(node: onnx.NodeProto, shape: list[int]) -> onnx.ModelProto:
    g = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def _compile_and_compare(model: onnx.ModelProto, x: np.ndarray, reference: np.ndarray):
    opts = pipeline.Options(target="llvm", verify=False, egraph=False, threads=1)
    cm = pipeline.compile(model, opts).compiled
    (got,) = cm.run({"x": x})
    bound = dict(cm.weights) | {cm.inputs[0].buffer: x}
    want = interpret(cm.program, bound)[cm.outputs[0].buffer]
    # GELU's 1 + erf(x) and 1 + tanh(...) cancel: an ulp of erf near -1 is 1e-7 of y's scale
    atol = 4 * float(np.spacing(np.float32(np.abs(reference).max())))
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=atol)
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=atol)
    return cm


def _vectorized_loops(cm) -> int:
    from eqsat.lower.analysis import loops

    return sum(f.kind is LoopKind.VECTORIZED for k in cm.program.kernels for f in loops(k.body))


def test_softmax_model_vectorized_and_equal_to_interpret():
    x = np.random.default_rng(0).standard_normal((16, 1000)).astype(np.float32) * 4
    x[0, :3] = [80.0, -80.0, 0.0]
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    cm = _compile_and_compare(
        _model(helper.make_node("Softmax", ["x"], ["y"], axis=-1), [16, 1000]),
        x, e / e.sum(-1, keepdims=True),
    )  # fmt: skip
    assert _vectorized_loops(cm) > 0
    assert not re.search(r"@(expf|llvm\.exp\.)", cm.executable.ir)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_model_vectorized_and_equal_to_interpret(approximate):
    x = np.linspace(-12, 12, 4096, dtype=np.float32).reshape(4, 1024)
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        ref = 0.5 * x64 * (1 + np.tanh(np.sqrt(2 / np.pi) * (x64 + 0.044715 * x64**3)))
    else:
        ref = 0.5 * x64 * (1 + scipy.special.erf(x64 / np.sqrt(2)))
    node = helper.make_node("Gelu", ["x"], ["y"], approximate=approximate)
    cm = _compile_and_compare(_model(node, [4, 1024]), x, ref)
    assert _vectorized_loops(cm) > 0  # scalar_calls no longer holds float32 tanh / erf back
    assert not re.search(r"@(erff|tanhf)\b", cm.executable.ir)


@pytest.mark.parametrize("dtype, vectorized", [("float32", True), ("float64", False)])
def test_only_float64_tanh_calls_libm_and_stays_unvectorized(dtype, vectorized):
    caps = Capabilities.host()
    assert "tanh.float64" in caps.scalar_calls and "tanh" not in caps.scalar_calls
    X = Buffer("X", (64,), dtype, BufferKind.INPUT)
    Y = Buffer("Y", (64,), dtype, BufferKind.OUTPUT)
    i = Var("i")
    p = LoopProgram("t", (X, Y), (Kernel("t", (X, Y), make_loop("i", 64, Store(Y, (i,),
                    call("tanh", X[i])))),))  # fmt: skip
    assert bool(re.search(r'@"?tanh"?\(', str(emit(p)))) is not vectorized
    (k,) = schedule_program(p, target_caps(caps, 1)).kernels
    assert (k.body.kind is LoopKind.VECTORIZED) is vectorized


# ------------------------------------------------------------------ the IR the vectorizer makes
@pytest.mark.parametrize("name", FUNCTIONS)
def test_loop_vectorizes_without_libm_calls(name):
    """After O3 the loop body is ``<N x float>`` arithmetic (N = the host's widest float
    vector, 16 with AVX-512) and no libm call is left."""
    text = optimized_ir(_module(name, fused=True))
    width = Capabilities.host().vector_width
    # the main loop at the full width (a narrower epilogue loop may follow for the remainder)
    lanes = re.findall(r"fmul <(\d+) x float>", text)
    assert lanes and max(map(int, lanes)) >= width, f"{name}: no full-width vector fmul in the IR"
    calls = set(re.findall(r"call [^@]*@\"?([\w.]+)\"?\(", text))
    assert all(c.startswith("llvm.") for c in calls), f"{name} calls {calls}"
