"""Tensorized codegen (backends/llvm/tensorize.py): every contraction form, edge sizes and
epilogues, compiled as packed GEMM, equals interpret(); the parallel path, weights packed once
(and again when the weight buffer changes), and every example model through the pipeline's
verification gate with the default schedule."""

from __future__ import annotations

import numpy as np
import pytest

from eqsat import pipeline
from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.runtime import compile as llvm_compile
from eqsat.backends.llvm.tensorize_plan import (
    SPLIT_BYTES,
    TASK_MULTIPLE,
    _split,
    choose_plan,
    edge_vectors,
    orient,
    padded_share,
    piecewise_b,
    plain_b,
    window_b,
)
from eqsat.examples import example_names
from eqsat.lower.contraction import match_contraction
from eqsat.lower.interpret import interpret

from ..lower.contraction_models import (
    CASES,
    concat_conv,
    conv,
    force_tensorize,
    gemm_transb,
    matmul,
)

rng = np.random.default_rng(3)


def _feeds(p, weights):
    feeds = dict(weights)
    for b in p.inputs:
        feeds[b.name] = rng.standard_normal(b.shape).astype(np.float32)
    return feeds


def _check(p, weights, threads=1, runs=1):
    t = force_tensorize(p)
    assert "tensorize" in str(t.kernels)
    compiled = llvm_compile(t, threads=threads, use_cache=False)
    for _ in range(runs):
        feeds = _feeds(p, weights)
        want, got = interpret(p, feeds), compiled.run(feeds)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)
    return compiled


@pytest.mark.parametrize("name", sorted(CASES))
def test_forms(name):
    _check(*CASES[name]())


@pytest.mark.parametrize("m, n, k", [(1, 1, 1), (7, 13, 17), (13, 1, 33), (33, 17, 7),
                                     (17, 7, 1)])
def test_edge_sizes(m, n, k):
    _check(*matmul(m, n, k, weight=False, epilogue="residual"))


@pytest.mark.parametrize("extra", [1, 15, 17, 33])
@pytest.mark.parametrize("epilogue", [None, "bias_relu", "residual"])
def test_edge_panels_on_narrow_kernels(extra, epilogue):
    """A last panel with 1, 15, 17 or 33 real columns runs on the micro-kernel of 1, 1, 2 or 3
    vectors (of the packed panel's first columns, ``_call_by_width``): the same floats as
    interpret() with a bare store, a fused epilogue and a residual read at the tile."""
    nr = Capabilities.host().gemm_tiles()[0][1]
    _check(*matmul(13, 2 * nr + extra, 9, weight=False, epilogue=epilogue))


# 55x55 and 27x27 by 128 (the file's slowest after the conv below) run in `make test-slow`
@pytest.mark.parametrize("hw, co", [pytest.param(55, 64, marks=pytest.mark.slow),
                                    pytest.param(27, 128, marks=pytest.mark.slow),
                                    (35, 64), (16, 64)])
def test_edge_vectors_are_the_blocks_partial_panels(hw, co):
    """``edge_vectors``: the widths (in vectors) of the last panel of every column block,
    enumerated block by block here; only those narrow kernels are emitted, and the conv
    still equals interpret()."""
    p, weights = conv(ci=8, co=co, hw=hw, pad=1)
    c, plan = orient(_contraction(p), Capabilities.host())
    assert plan.rows_mode
    want = set()
    for o in range(0, hw, plan.rows):
        cols = min(plan.rows, hw - o) * hw
        if cols % plan.nr:
            want.add(-(-(cols % plan.nr) // plan.vw))
    assert edge_vectors(c, plan) == want
    _check(p, weights)


def test_parallel_blocks_and_k_slices():
    # 2·M·N·K ≥ the parallel threshold, K > KC (two slices), M > MC, N > one column block
    _check(*matmul(200, 300, 520, epilogue="bias_relu"), threads=2)


@pytest.mark.parametrize("m, mc, no, rows, w, tasks", [
    (64, 72, 56, 9, 56, 8), (128, 132, 28, 16, 28, 4), (256, 192, 14, 14, 14, 4),
    (512, 192, 7, 7, 7, 4), (100, 108, 3, 1, 100, 3)])  # the ResNet 3x3 convs; no even 4
def test_split_balanced_blocks(m, mc, no, rows, w, tasks):
    mr, nr = 12, 32
    mcb, rb = _split(m, mr, mc, no, rows, True, False, w, 2 * nr)
    nib, njb = -(-m // mcb), -(-no // rb)
    assert mcb % mr == 0 and mcb <= mc and rb <= rows
    assert nib * njb == tasks and (tasks % TASK_MULTIPLE == 0 or tasks == 3)
    assert m - (nib - 1) * mcb > mcb - 2 * mr and no - (njb - 1) * rb >= rb - 1  # last not short
    assert njb == -(-no // rows) or rb * w >= 2 * nr


@pytest.mark.parametrize("case", [
    # M=100, N=23x23: both uneven, 61 MFLOP (the slowest test of the file: `make test-slow`;
    # the two matmuls below keep the check in the default run)
    pytest.param(lambda: conv(ci=64, co=100, hw=23, pad=1), marks=pytest.mark.slow),
    lambda: matmul(517, 99, 600),  # B a weight packed once: M split first
    lambda: matmul(250, 77, 300, weight=False),  # above the threshold, below the split
])
def test_two_threads_equal_one_thread(case):
    p, weights = case()
    t = force_tensorize(p)
    one = llvm_compile(t, threads=1, use_cache=False)
    two = llvm_compile(t, threads=2, use_cache=False)
    for _ in range(3):  # the counter is reset per call
        feeds = _feeds(p, weights)
        want, got1, got2 = interpret(p, feeds), one.run(feeds), two.run(feeds)
        for k in want:
            np.testing.assert_array_equal(got2[k], got1[k])  # the same blocks, any thread
            np.testing.assert_allclose(got2[k], want[k], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("n", [256, 100, 48])
def test_gemv_weight_split_for_threads(n):
    """A GEMV (one output row) with a weight over SPLIT_BYTES is memory bound at few FLOPs:
    its row is cut into pieces so that the threads stream the weight together (at most one
    piece per NR panel); the pieces give the same floats at 1 and 2 threads."""
    k = -(-SPLIT_BYTES // (4 * n))
    p, weights = matmul(1, n, k, epilogue="bias_relu")
    plan = choose_plan(_contraction(p), Capabilities.host())
    pieces = min(TASK_MULTIPLE, -(-n // plan.nr))  # 48: one panel of the 8 x 48 tile
    assert plan.rows_mode == (pieces == 1) and -(-n // plan.ncb) == pieces
    one = llvm_compile(force_tensorize(p), threads=1, use_cache=False)
    two = llvm_compile(force_tensorize(p), threads=2, use_cache=False)
    feeds = _feeds(p, weights)
    want, got1, got2 = interpret(p, feeds), one.run(feeds), two.run(feeds)
    for name in want:
        np.testing.assert_array_equal(got2[name], got1[name])
        np.testing.assert_allclose(got1[name], want[name], rtol=1e-4, atol=1e-3)


def test_weights_repacked_when_they_change():
    p, weights = matmul(19, 37, 23, epilogue="bias")
    compiled = _check(p, weights)
    other = {k: v + 1 for k, v in weights.items()}  # new arrays: new addresses
    feeds = _feeds(p, other)
    want, got = interpret(p, feeds), compiled.run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


# bert and inception (the slowest two) in `make test-slow`: test_default_schedule compiles every
# example (e-graph on) by default, this one with the e-graph off
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow)
                                  if n in ("bert", "inception") else n for n in example_names()])
def test_example_models_pass_the_gate(name):
    model = pipeline.example_model(name, "small")
    result = pipeline.compile(model, pipeline.Options(target="llvm", egraph=False))
    assert result.verdict.ok


@pytest.mark.parametrize("case", [
    lambda: conv(kernel=1, ci=20, co=30, hw=40, bn=True, residual=True),  # several row blocks
    lambda: matmul(9, 600, 300, weight=False, epilogue="residual"),  # split blocks, 2 K slices
    lambda: matmul(5, 37, 3, weight=False),
])
def test_plain_b_packed_in_place(case):
    p, weights = case()
    (c,) = [x for x in map(match_contraction, p.kernels) if x is not None]
    assert plain_b(c) is not None
    _check(p, weights)


def test_plain_b_only_for_affine_unguarded_reads():
    for p, _ in (conv(pad=1), conv(stride=2), gemm_transb()):
        (c,) = [x for x in map(match_contraction, p.kernels) if x is not None]
        assert plain_b(c) is None


# W = 5 (a vector spans output rows) and 13 (an odd row) run by default: 10 compiles; the other
# widths (20 more compiles, each ~0.4 s idle) in `make test-slow`
@pytest.mark.parametrize("hw", [5, 13, *(pytest.param(w, marks=pytest.mark.slow)
                                         for w in (7, 14, 16, 56))])
@pytest.mark.parametrize("kernel, pad, group, batch", [(3, 1, 1, 2), (5, 2, 1, 1), (3, 1, 2, 1),
                                                       (5, 2, 3, 2), (3, 2, 1, 1)])
def test_window_b_padded_convs(hw, kernel, pad, group, batch):
    """Padded stride-1 convs pack B with masked loads (pack_window.py): edge panels, vectors
    spanning several output rows (W < vw), batch and groups; the same floats as interpret()
    (a packer copies values: only the GEMM's summation order differs)."""
    ci, co = 6 * group, 5 * group
    p, weights = conv(ci=ci, co=co, hw=hw, kernel=kernel, pad=pad, group=group, batch=batch)
    (c,) = [x for x in map(match_contraction, p.kernels) if x is not None]
    assert plain_b(c) is None and window_b(c) is not None
    _check(p, weights)


@pytest.mark.parametrize("hw", [7, 13])
def test_window_b_dilated_padded_conv(hw):
    """A dilated padded conv matches the window form too (the matcher reads the general affine
    read; dilation moves the kernel taps, not the unit step along w)."""
    p, weights = conv(ci=6, co=5, hw=hw, kernel=3, pad=2, dilation=2, batch=2)
    (c,) = [x for x in map(match_contraction, p.kernels) if x is not None]
    assert window_b(c) is not None
    _check(p, weights)


@pytest.mark.parametrize("hw", [7, 14, 23])
@pytest.mark.parametrize("kernel, stride, pad, batch", [(3, 2, 1, 1), (3, 2, 0, 2), (7, 2, 3, 1),
                                                        (3, 3, 1, 1), (3, 1, 0, 1),
                                                        (5, 2, 2, 2)])
def test_window_b_strided_and_unpadded_convs(hw, kernel, stride, pad, batch):
    """Strided convs (lanes ``stride`` floats apart: a wide masked load and a permute) and
    unpadded ones (no guard) pack through the window form too: the same floats as
    interpret()."""
    p, weights = conv(ci=6, co=5, hw=hw, kernel=kernel, stride=stride, pad=pad, batch=batch)
    (c,) = [x for x in map(match_contraction, p.kernels) if x is not None]
    wb = window_b(c)
    assert wb is not None and wb.stride == stride
    _check(p, weights)


def test_window_b_not_for_transposed_reads():
    """A transposed operand (w's stride a whole row) stays on the generic packer."""
    (c,) = [x for x in map(match_contraction, gemm_transb()[0].kernels) if x is not None]
    assert window_b(c) is None


def _contraction(p):
    (c,) = [x for x in map(match_contraction, p.kernels) if x is not None]
    return c


@pytest.mark.parametrize("parts, batch", [((5, 3, 9), 1), ((16, 16), 1), ((1, 40, 2, 7), 1),
                                           ((200, 100), 1)])
def test_piecewise_b_concat_into_1x1_conv(parts, batch):
    """A channel concat read by a 1×1 conv packs per K row from the piece that holds it
    (PiecewiseB), pieces inside and across KC slices; the same floats as interpret()."""
    p, weights = concat_conv(parts=parts, hw=11, batch=batch)
    pw = piecewise_b(_contraction(p))
    assert pw is not None and len(pw.pieces) == len(parts)
    assert pw.starts == tuple(sum(parts[:i]) for i in range(len(parts)))
    _check(p, weights)


def test_piecewise_b_not_for_windows():
    """A concat read by a 3×3 conv is a window per piece, not a plain read: not piecewise."""
    p, _ = concat_conv(kernel=3)
    assert piecewise_b(_contraction(p)) is None


@pytest.mark.parametrize("ci, hw, co, swap", [(64, 56, 64, False), (256, 14, 256, True),
                                               (512, 7, 512, True), (64, 55, 16, False)])
def test_orient_exchanges_only_padded_wide_contractions(ci, hw, co, swap):
    """Convs on 14×14 / 7×7 images pad a 2-vector column tile by 23 %: with 256+ output
    channels they run exchanged (channels on the vector axis); 56×56 or 16 channels do not."""
    p, _ = conv(ci=ci, co=co, hw=hw, pad=1)
    c = _contraction(p)
    caps = Capabilities.host()
    oc, plan = orient(c, caps)
    assert (oc.m == c.n) is swap
    if swap:
        assert padded_share(oc, plan) > padded_share(c, choose_plan(c, caps))


def test_orient_exchanged_conv_matches():
    _check(*conv(ci=24, co=160, hw=7, pad=1, bn=True, residual=True))


def test_release_frees_the_packed_weights():
    """The module's release() frees what the first call packed (so a dropped program gives
    the memory back: the runtime runs it from a finalizer); the next call packs again."""
    import ctypes

    from eqsat.backends.llvm.codegen import RELEASE, kernel_symbol

    p, weights = matmul(64, 96, 80)
    compiled = _check(p, weights)
    (k,) = [k for k in compiled.program.kernels if match_contraction(k) is not None]
    glob = compiled.engine.get_global_value_address(f"{kernel_symbol(k)}.pk.b")
    assert ctypes.c_void_p.from_address(glob).value  # packed at the first call
    ctypes.CFUNCTYPE(None)(compiled.engine.get_function_address(RELEASE))()
    assert not ctypes.c_void_p.from_address(glob).value
    feeds = _feeds(p, weights)
    got, want = compiled.run(feeds), interpret(p, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)
    assert ctypes.c_void_p.from_address(glob).value  # packed again


def test_tile_choice_by_padding():
    """On AVX-512 a 64-channel conv runs 8 × 48 strips (12 × 32 would compute 8 zero rows);
    132 channels are 11 strips of 12 exactly and stay 12 × 32."""
    caps = Capabilities.host()
    if caps.vector_width < 16:
        pytest.skip("one micro-tile on this host")
    p64, w64 = conv(ci=16, co=64, hw=20, pad=1)
    plan = choose_plan(_contraction(p64), caps)
    assert (plan.mr, plan.nr) == (8, 48)
    _check(p64, w64)
    p128, _ = conv(ci=16, co=132, hw=16, pad=1)
    plan = choose_plan(_contraction(p128), caps)
    assert (plan.mr, plan.nr) == (12, 32)


def test_fused_epilogues_read_rows_columns_and_the_output_layout():
    """Bias / BN per output channel (rows), a MatMul bias per column, a residual laid out as
    the output (likes) and ReLU go into the micro-kernel's final store, written into the
    output itself (over two KC slices too). Each compiled result equals interpret()."""
    from eqsat.backends.llvm.tensorize_plan import fused_epilogue
    from eqsat.lower.contraction import ACC

    p, w = conv(ci=8, co=20, hw=9, pad=1, bn=True, residual=True)
    fe = fused_epilogue(_contraction(p))
    assert fe is not None and fe.rows and fe.likes and not fe.cols
    _check(p, w)
    p, w = matmul(33, 40, 17, epilogue="bias_relu")
    fe = fused_epilogue(_contraction(p))
    assert fe is not None and fe.cols and not fe.rows
    _check(p, w)
    p, w = matmul(33, 40, 300, epilogue="residual")  # two KC slices: partial sums in place
    assert fused_epilogue(_contraction(p)).likes
    _check(p, w)
    p, w = matmul(17, 33, 13)  # a bare store: the tiles only
    fe = fused_epilogue(_contraction(p))
    assert fe is not None and fe.value == ACC and not (fe.rows or fe.cols or fe.likes)
    _check(p, w)


def test_fused_epilogue_with_a_symbolic_batch():
    """A MatMul + bias + residual over a symbolic batch (BERT's layers) still writes its tiles
    straight into the output: only the outermost dim is symbolic, and no stride depends on it."""
    from onnx import helper

    from eqsat.backends.llvm.tensorize_plan import fused_epilogue

    from ..lower.contraction_models import _w, build

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y0"]),
             helper.make_node("Add", ["y0", "b"], ["y1"]),
             helper.make_node("Add", ["y1", "r"], ["y"])]
    p, weights = build(nodes, [("x", ["batch", 7, 13]), ("r", ["batch", 7, 40])], "y",
                       ["batch", 7, 40], [_w("w", [13, 40]), _w("b", [40])])
    fe = fused_epilogue(_contraction(p))
    assert fe is not None and fe.cols and fe.likes
    compiled = llvm_compile(force_tensorize(p), threads=1, use_cache=False)
    for batch in (1, 3):
        feeds = dict(weights)
        feeds["x"] = rng.standard_normal((batch, 7, 13)).astype(np.float32)
        feeds["r"] = rng.standard_normal((batch, 7, 40)).astype(np.float32)
        got, want = compiled.run(feeds, {"batch": batch}), interpret(p, feeds, {"batch": batch})
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)


def test_kernels_of_the_same_shape_share_their_helpers():
    """Two GEMMs of one shape, plan and parameter layout (a transformer's layers) emit one copy
    of each helper (packers, epilogue, task loop; ``codegen_stmt.shared``); one of another
    shape keeps its own, and the module still computes its output."""
    from onnx import helper

    from eqsat.backends.llvm.codegen import emit

    from ..lower.contraction_models import _w, build

    nodes = [helper.make_node("MatMul", ["x", "w1"], ["y1"]),
             helper.make_node("MatMul", ["x", "w2"], ["y2"]),  # k1: k0's shapes and params
             helper.make_node("Concat", ["y1", "y2"], ["y3"], axis=1),
             helper.make_node("MatMul", ["y3", "w3"], ["y"])]  # k2: its own
    p, weights = build(nodes, [("x", [24, 40])], "y", [24, 56],
                       [_w("w1", [40, 40]), _w("w2", [40, 40]), _w("w3", [80, 56])])
    t = force_tensorize(p)
    assert sum("tensorize" in str(k) for k in t.kernels) == 3
    names = {f.name for f in emit(t).functions if not f.is_declaration}
    for part in ("pack_a", "pack_b", "epi", "tasks"):
        assert f"eqsat.k.k0_matmul.{part}" in names and f"eqsat.k.k2_matmul.{part}" in names
        assert f"eqsat.k.k1_matmul.{part}" not in names
    assert {"eqsat.k.k0_matmul", "eqsat.k.k1_matmul", "eqsat.k.k2_matmul"} <= names
    _check(p, weights)


def test_symbolic_batch_blocked_for_a_batch_of_one():
    """A MatMul over a symbolic batch (BERT's batch x 128 rows, 1.7e7 FLOP at batch 1) is
    split into row blocks as if the batch were 1, so that threads get tasks; any batch still
    computes the same, at 1 and 2 threads."""
    from onnx import helper

    from ..lower.contraction_models import _w, build

    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"])]
    p, weights = build(nodes, [("x", ["batch", 128, 256])], "y", ["batch", 128, 256],
                       [_w("w", [256, 256])])
    _, plan = orient(_contraction(p), Capabilities.host())
    assert plan.mc < 128  # several row blocks at batch 1 (unhinted: MC = 192, one block)
    one = llvm_compile(force_tensorize(p), threads=1, use_cache=False)
    two = llvm_compile(force_tensorize(p), threads=2, use_cache=False)
    for batch in (1, 3):
        feeds = dict(weights)
        feeds["x"] = rng.standard_normal((batch, 128, 256)).astype(np.float32)
        want = interpret(p, feeds, {"batch": batch})
        got1, got2 = one.run(feeds, {"batch": batch}), two.run(feeds, {"batch": batch})
        for name in want:
            np.testing.assert_array_equal(got2[name], got1[name])
            np.testing.assert_allclose(got1[name], want[name], rtol=1e-4, atol=1e-3)
