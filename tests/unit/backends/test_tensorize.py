"""Tensorized codegen (backends/llvm/tensorize.py): every contraction form, edge sizes and
epilogues, compiled as packed GEMM, equals interpret(); the parallel path, weights packed once
(and again when the weight buffer changes), and every example model through the pipeline's
verification gate with the default schedule."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from eqsat import pipeline
from eqsat.backends.llvm import runtime
from eqsat.backends.llvm.capabilities import Capabilities
from eqsat.backends.llvm.codegen import PARALLEL_FOR
from eqsat.backends.llvm.microkernel import CACHE_LINE_FLOATS, prefetch_lines
from eqsat.backends.llvm.runtime import compile as llvm_compile
from eqsat.backends.llvm.tensorize import PARALLEL_BYTES, PARALLEL_FLOP
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


def _same_at_one_and_two_threads(p, weights, runs=1):
    """``p`` tensorized and compiled at 1 and at 2 threads: the same floats bit for bit (the
    same blocks, whichever thread runs them), and near :func:`interpret`'s, over ``runs`` calls
    on fresh inputs (the claim flags are fresh per call)."""
    t = force_tensorize(p)
    one = llvm_compile(t, threads=1, use_cache=False)
    two = llvm_compile(t, threads=2, use_cache=False)
    for _ in range(runs):
        feeds = _feeds(p, weights)
        want, got1, got2 = interpret(p, feeds), one.run(feeds), two.run(feeds)
        for name in want:
            np.testing.assert_array_equal(got2[name], got1[name])
            np.testing.assert_allclose(got1[name], want[name], rtol=1e-4, atol=1e-3)


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


def test_prefetch_only_for_weights_packed_once():
    """The micro-kernel prefetches the next B panel where B is a weight packed once (streamed
    from L3 or memory every call), not where B is packed per call (in L2); both stay exact,
    with several strips, panels and K slices (each strip's share of the next panel)."""
    with_weight = _check(*matmul(20, 40, 300, epilogue="bias"))
    assert "llvm.prefetch" in with_weight.ir
    many = _check(*matmul(64, 200, 600))  # M 64: 8 strips; N 200: 5 panels; K 600: 3 slices
    assert "llvm.prefetch" in many.ir
    per_call = _check(*matmul(20, 40, 300, weight=False))
    assert "llvm.prefetch" not in per_call.ir


@pytest.mark.parametrize("nr, unroll, strips", [
    (48, 2, 8), (48, 2, 1), (32, 2, 12), (16, 4, 3), (48, 2, 5), (64, 1, 2), (48, 8, 16)])
def test_prefetch_lines_cover_the_next_panel(nr, unroll, strips):
    """The strips' shares (``lines`` per iteration of ``unroll`` k steps, over KC steps) cover
    the next KC × NR panel, and no strip takes more than one line per iteration beyond it."""
    lines = prefetch_lines(nr, unroll, strips)
    kc = 256
    panel = kc * -(-nr // CACHE_LINE_FLOATS)
    assert strips * (kc // unroll) * lines >= panel
    assert lines == 1 or strips * (kc // unroll) * (lines - 1) < panel


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
    _same_at_one_and_two_threads(*case(), runs=3)


class _ChunkOrder:
    """A stand-in for the runtime's pool: runs a launch's chunk function on the calling thread
    over the given ranges of ``[0, n)``, in that order (each ``(lo, hi)`` as fractions)."""

    def __init__(self, ranges):
        self.ranges, self.launches = ranges, 0

    def parallel_for(self, fn, args, start, end):
        self.launches += 1
        n = end - start
        for lo, hi in self.ranges:
            fn(*args, start + int(lo * n), start + int(hi * n))


@pytest.mark.parametrize("ranges", [
    [(0.75, 1.0)],  # one chunk, the last quarter: its own tasks, then steals all the others
    [(0.5, 1.0), (0.0, 0.5)],  # the worker's chunk runs first and steals the caller's
    [(0.25, 0.5), (0.0, 1.0), (0.0, 0.25)],  # a late chunk finds every task taken
])
def test_tasks_run_once_from_any_chunks(ranges):
    """Each call of a kernel's task function runs its own chunk's tasks, then steals the rest
    (tensorize.py, "Task order"): whatever ranges the pool hands out, and in whatever order
    its threads get to them, every task runs and the output equals interpret()."""
    p, weights = matmul(200, 300, 520, epilogue="bias_relu")
    t = force_tensorize(p)
    compiled = llvm_compile(t, threads=1, use_cache=False)
    pool = _ChunkOrder(ranges)
    launcher = runtime._Launcher(pool)
    callback = runtime._LAUNCH(launcher)
    slot = compiled.engine.get_global_value_address(PARALLEL_FOR)
    ctypes.c_void_p.from_address(slot).value = ctypes.cast(callback, ctypes.c_void_p).value
    for _ in range(2):
        feeds = _feeds(p, weights)
        want, got = interpret(p, feeds), compiled.run(feeds)
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)
    assert launcher.error is None and pool.launches == 2


@pytest.mark.parametrize("n", [256, 100, 48, 512])
def test_gemv_weight_split_for_threads(n):
    """A GEMV (one output row) with a weight over SPLIT_BYTES is memory bound at few FLOPs:
    its row is cut into pieces so that the threads stream the weight together (at most one
    piece per NR panel); the pieces give the same floats at 1 and 2 threads. 512: NasRNN's
    512 x 512 (1 MiB, PARALLEL_BYTES: launched on the threads at 0.5 MFLOP)."""
    k = 512 if n == 512 else -(-SPLIT_BYTES // (4 * n))
    p, weights = matmul(1, n, k, epilogue="bias_relu")
    plan = choose_plan(_contraction(p), Capabilities.host())
    pieces = min(TASK_MULTIPLE, -(-n // plan.nr))  # 48: one panel of the 8 x 48 tile
    if n != 512:
        assert plan.rows_mode == (pieces == 1) and -(-n // plan.ncb) == pieces
    else:
        assert 4 * n * k >= PARALLEL_BYTES and 2 * n * k < PARALLEL_FLOP and -(-n // plan.ncb) > 1
    _same_at_one_and_two_threads(p, weights)


def test_weights_repacked_when_they_change():
    p, weights = matmul(19, 37, 23, epilogue="bias")
    compiled = _check(p, weights)
    other = {k: v + 1 for k, v in weights.items()}  # new arrays: new addresses
    feeds = _feeds(p, other)
    want, got = interpret(p, feeds), compiled.run(feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4)


def _rnn_model(n: int = 192):
    """Two steps of ``h = tanh(x_t @ W + h @ U)``, then ``h @ V``: W and U applied twice (``n``
    large enough for the GEMM, ``schedule_gemm.MIN_MACS``)."""
    import onnx
    from onnx import TensorProto, helper

    w = {name: rng.standard_normal((n, n)).astype(np.float32) / n for name in "WUV"}
    nodes, h = [], "h0"
    for t in range(2):
        nodes += [helper.make_node("MatMul", [f"x{t}", "W"], [f"a{t}"]),
                  helper.make_node("MatMul", [h, "U"], [f"b{t}"]),
                  helper.make_node("Add", [f"a{t}", f"b{t}"], [f"s{t}"]),
                  helper.make_node("Tanh", [f"s{t}"], [f"h{t + 1}"])]
        h = f"h{t + 1}"
    nodes.append(helper.make_node("MatMul", [h, "V"], ["y"]))
    ins = [helper.make_tensor_value_info(i, TensorProto.FLOAT, [1, n]) for i in ("x0", "x1", "h0")]
    graph = helper.make_graph(nodes, "rnn", ins,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [onnx.numpy_helper.from_array(a, k) for k, a in w.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_kernels_packing_one_weight_share_its_copy():
    """The step kernels of an RNN apply the same weights: each weight is packed once, into one
    copy (``packed_copy_symbol``), whichever kernel runs first; the results are unchanged, at
    the first call (the first kernel packs) and the next (every kernel reuses)."""
    model, w = _rnn_model()
    result = pipeline.compile(model, pipeline.Options(target="llvm", egraph=False, cache=False))
    assert result.verdict.ok
    ex = result.compiled.executable
    gemms = [k for k in ex.program.kernels if match_contraction(k) is not None]
    assert len(gemms) == 5
    packed = [g.name for g in ex.module.global_values if g.name.endswith((".pk.a", ".pk.b"))]
    assert len(packed) == 3  # W, U, V
    feeds = {k: rng.standard_normal((1, 192)).astype(np.float32) for k in ("x0", "x1", "h0")}
    h = feeds["h0"]
    for t in range(2):
        h = np.tanh(feeds[f"x{t}"] @ w["W"] + h @ w["U"])
    for _ in range(2):
        (got,) = result.compiled.run(feeds)
        np.testing.assert_allclose(got, h @ w["V"], rtol=1e-4, atol=1e-5)


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

    from eqsat.backends.llvm.codegen import RELEASE

    p, weights = matmul(64, 96, 80)
    compiled = _check(p, weights)
    (name,) = [g.name for g in compiled.module.global_values if g.name.endswith(".pk.b")]
    glob = compiled.engine.get_global_value_address(name)
    assert ctypes.c_void_p.from_address(glob).value  # packed at the first call
    ctypes.CFUNCTYPE(None)(compiled.engine.get_function_address(RELEASE))()
    assert not ctypes.c_void_p.from_address(glob).value
    feeds = _feeds(p, weights)
    got, want = compiled.run(feeds), interpret(p, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)
    assert ctypes.c_void_p.from_address(glob).value  # packed again


def test_packed_copies_in_one_huge_page_arena():
    """Weights packed once go to one arena (``tensorize.ARENA``); from 2 MiB of copies on it
    starts on a huge-page boundary, and on Linux its mapping is advised for transparent huge
    pages (``hg`` in the VMA's flags) before the copies are written."""
    import ctypes
    import sys

    from eqsat.backends.llvm.tensorize import ARENA, HUGE_PAGE

    p, weights = matmul(3, 256, 2048)  # a 2 MiB weight
    compiled = _check(p, weights)
    arena = ctypes.c_void_p.from_address(compiled.engine.get_global_value_address(ARENA)).value
    (name,) = [g.name for g in compiled.module.global_values if g.name.endswith(".pk.b")]
    copy = ctypes.c_void_p.from_address(compiled.engine.get_global_value_address(name)).value
    assert arena % HUGE_PAGE == 0 and arena <= copy < arena + HUGE_PAGE
    if not sys.platform.startswith("linux"):
        return
    with open("/proc/self/smaps") as f:
        lines = f.read().splitlines()
    for i, line in enumerate(lines):
        lo, _, hi = line.split(" ", 1)[0].partition("-")
        if hi and all(c in "0123456789abcdef" for c in lo + hi) and \
                int(lo, 16) <= arena < int(hi, 16):
            flags = next(x for x in lines[i + 1:] if x.startswith("VmFlags"))
            assert " hg" in flags
            return
    raise AssertionError("the arena is in no mapping")


@pytest.mark.parametrize("m, n, k", [(64, 512, 1376), (64, 1376, 512), (96, 600, 512)])
def test_weight_row_pieces_split_rows_when_few_column_blocks(m, n, k):
    """A weight packed once, N cut into row pieces (``split`` mode): with fewer pieces than
    TASK_MULTIPLE (SwiGLU's down projection, 512 wide: 288 + 224 columns, a 6 : 5 share of the
    panels at 2 threads) M is cut into row blocks too, the task count a multiple of it; with
    enough pieces (its 1376-wide gate and up projections: 6) M stays one block. The split gives
    the same floats at 1 and 2 threads."""
    p, weights = matmul(m, n, k)
    plan = choose_plan(_contraction(p), Capabilities.host())
    assert plan.prepack_b and not plan.rows_mode
    pieces, row_blocks = -(-n // plan.ncb), -(-m // plan.mc)
    if pieces < TASK_MULTIPLE:
        assert row_blocks > 1 and (pieces * row_blocks) % TASK_MULTIPLE == 0
    else:
        assert row_blocks == 1
    _same_at_one_and_two_threads(p, weights)


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


def _exchanged(p, mr: int, mc_strips: int):
    """``p`` with its conv kernel tensorized exchanged (``swap=1``) on MR ``mr`` and row blocks
    of ``mc_strips`` strips (an explicit ``gemm.plan``)."""
    import dataclasses

    from eqsat.backends.llvm.plan_choice import PLAN_KEY, encode
    from eqsat.backends.llvm.tensorize_plan import swapped
    from eqsat.lower.schedule import Annotate, Tensorize, apply

    caps = Capabilities.host()
    kernels = []
    for k in p.kernels:
        c = match_contraction(k)
        if c is not None:
            plan = choose_plan(swapped(c), caps)
            nr = max(n for m, n in caps.gemm_tiles() if m >= mr)  # the accumulators fit
            ncb = plan.ncb if plan.rows_mode else -(-plan.ncb // nr) * nr
            knobs = {"swap": 1, "mr": mr, "nr": nr, "unroll": plan.unroll, "kc": plan.kc,
                     "mc": mr * mc_strips, "rows_mode": int(plan.rows_mode), "ncb": ncb,
                     "rows": plan.rows}
            k = apply(k, (Tensorize(k.body.var, "gemm"),
                          Annotate(k.body.var, PLAN_KEY, encode(knobs))))
        kernels.append(k)
    return dataclasses.replace(p, kernels=tuple(kernels))


@pytest.mark.parametrize("mr, mc_strips", [(8, 2), (12, 1), (4, 3), (12, 8)])
@pytest.mark.parametrize("hw, kernel, stride, pad, batch", [(7, 3, 1, 1, 1), (9, 3, 1, 1, 2),
                                                            (14, 3, 2, 1, 1), (6, 1, 1, 0, 1),
                                                            (11, 5, 1, 2, 1)])
def test_window_a_exchanged_convs(mr, mc_strips, hw, kernel, stride, pad, batch):
    """An exchanged conv packs its im2col A (rows = output pixels) with masked loads
    (``window_a``, ``tensorize._window_pack_a``): row blocks that start inside an output row
    (MC not a multiple of W), strips spanning two or more rows, strides, batch, partial last
    strips; the same floats as interpret() at 1 and 2 threads."""
    from eqsat.backends.llvm.tensorize_plan import a_lanes, swapped, window_a

    p, weights = conv(ci=20, co=40, hw=hw, kernel=kernel, stride=stride, pad=pad, batch=batch)
    c = swapped(_contraction(p))
    assert window_a(c) is not None and a_lanes(choose_plan(c, Capabilities.host()), 16)
    t = _exchanged(p, mr, mc_strips)
    feeds = _feeds(p, weights)
    want = interpret(p, feeds)
    for threads in (1, 2):
        got = llvm_compile(t, threads=threads, use_cache=False).run(feeds)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("threads", [2, 4])
def test_workspace_slots_for_more_threads_than_cores(threads):
    """The driver allocates min(tasks, host cores) workspace slots; a chunk past them (a pool
    wider than the host) allocates its own. A conv and a MatMul with an input B (A, B and C
    workspaces all in a slot) equal interpret() at 2 and 4 threads, call after call."""
    for p, weights in (conv(ci=24, co=40, hw=30, pad=1), matmul(200, 300, 270, weight=False)):
        _check(p, weights, threads=threads, runs=3)
