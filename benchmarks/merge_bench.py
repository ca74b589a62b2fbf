"""Candidate merges (TASO/Tensat's) measured under eqsat's own compiler, before any rule.

    .venv/bin/python benchmarks/merge_bench.py [--cases squeezenet-direct,...] [--reps 15]
                                               [--threads 1,2] [--egraph]
    .venv/bin/python benchmarks/merge_bench.py --rules linear [--cases inception,resnext]

Consumes the bundled examples; produces, per case, the example rewritten by hand (plain
``onnx`` protos, no e-graph) and the latency ratio original / rewritten (> 1: the rewrite pays),
both compiled with ``Options(egraph=False)`` for ``--target llvm`` (min of ``--reps`` calls,
interleaved in runs as in ``compile_bench.py``), the outputs checked equal first. This is how a
rewrite earns a place in the compiler cost model (issue 19): measure it where the compiler runs
it, then make extraction see the same trade.

Cases (``CASES``):

- ``squeezenet-slices``: each fire module's expand1x1 (zero-padded to 3x3) and expand3x3 merged
  into one conv, each branch a channel Slice of it (what ``merge-conv-shared-input`` builds);
- ``squeezenet-direct``: the same, the Concat of the two Relu'd slices replaced by the Relu of
  the merged conv (what the layout rules make of it: the conv writes the concatenation);
- ``inception-1x1``: each module's three 1x1 convs of one input merged, branches sliced, their
  Relus moved before the slices (into the merged conv's epilogue, as ``relu-slice-commute``
  allows);
- ``inception-pool``: also the pool branch's 1x1 conv moved before its AveragePool (which then
  averages its 32 or 64 channels, not the module's input's 192) and merged with the others;
- ``resnext-1x1``: the first block's conv1 and downsample 1x1 convs (same input) merged.

``--rules FAMILIES`` instead compiles each example of ``--cases`` with the e-graph twice: the
default families (``pipeline.DEFAULT_RULES``) and those plus ``FAMILIES``, extraction under the
compiler cost model choosing (the ops of each are printed): the rewrite as ``eqsat compile``
takes it.

Each graph is compiled twice (A B A' B', all interleaved): ``cpu ratio`` is min(A, A') /
min(B, B') of the calling thread's CPU time (at 1 thread: robust to other processes taking the
core), ``A/A noise`` the spread between A and A' (two builds of one graph measured up to 1.2x
apart in one run on this shared machine: a ratio inside it is no result). ``/proc/loadavg`` is
printed beside the numbers.

Measured (1 thread, min of 20, loadavg 5-7 on 2 cores, CPU-time ratio, two runs each):
squeezenet-slices 0.64x / 0.79x, squeezenet-direct 0.74x / 0.88x, inception-1x1 0.95x / 1.02x,
inception-pool 1.02x / 1.06x, resnext-1x1 0.93x / 0.88x; ``--rules linear``: inception 1.21x /
1.09x (conv1x1-avgpool-commute), resnext 1.005x / 1.14x (merge-conv-add), the others the same
graph. 2-thread figures at that load were slower than 1-thread ones (the second core was
taken): not reported.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from compile_bench import _feeds, _runs  # noqa: E402

from eqsat import pipeline  # noqa: E402


def _nodes_by_output(g: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in g.node for o in n.output}


def _attrs(n: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in n.attribute}


def merge_convs(model: onnx.ModelProto, outs: list[str], tag: str) -> str:
    """Merge the convs producing ``outs`` (one input, group 1, equal strides) into one conv
    over their output channels, smaller kernels zero-padded (centred) to the largest; each
    original output becomes a channel Slice of it. Returns the merged output's name."""
    g = model.graph
    by_out = _nodes_by_output(g)
    init = {i.name: i for i in g.initializer}
    convs = [by_out[o] for o in outs]
    ws = [numpy_helper.to_array(init[c.input[1]]) for c in convs]
    big = max(range(len(ws)), key=lambda i: ws[i].shape[2])
    kh, kw = ws[big].shape[2:]
    padded = []
    for w in ws:
        ph, pw = (kh - w.shape[2]) // 2, (kw - w.shape[3]) // 2
        padded.append(np.pad(w, ((0, 0), (0, 0), (ph, ph), (pw, pw))))
    weight = np.concatenate(padded, axis=0)
    has_bias = [len(c.input) > 2 and c.input[2] for c in convs]
    bias = None
    if any(has_bias):
        bias = np.concatenate([
            numpy_helper.to_array(init[c.input[2]]) if b else np.zeros(w.shape[0], np.float32)
            for c, b, w in zip(convs, has_bias, ws, strict=True)])
    m_out = f"{tag}_merged"
    g.initializer.append(numpy_helper.from_array(weight.astype(np.float32), f"{tag}_w"))
    inputs = [convs[0].input[0], f"{tag}_w"]
    if bias is not None:
        g.initializer.append(numpy_helper.from_array(bias.astype(np.float32), f"{tag}_b"))
        inputs.append(f"{tag}_b")
    merged = helper.make_node("Conv", inputs, [m_out], name=f"{tag}_conv",
                              **_attrs(convs[big]))
    first = min(list(g.node).index(c) for c in convs)
    g.node.insert(first, merged)
    off = 0
    for c, w in zip(convs, ws, strict=True):
        n = w.shape[0]
        names = [f"{c.output[0]}_{k}" for k in ("s", "e", "a")]
        for name, v in zip(names, (off, off + n, 1), strict=True):
            g.initializer.append(numpy_helper.from_array(np.array([v], np.int64), name))
        sl = helper.make_node("Slice", [m_out, *names], [c.output[0]])
        idx = list(g.node).index(c)
        g.node.remove(c)
        g.node.insert(idx, sl)
        off += n
    return m_out


def relu_before_slices(model: onnx.ModelProto, merged: str) -> str:
    """Where every Slice of ``merged`` is read only by a Relu, Relu(Slice(m)) becomes
    Slice(Relu(m)) (the layout rule ``relu-slice-commute``): the Relu then runs in the merged
    conv's epilogue instead of a pass of its own per branch. Returns the sliced value."""
    g = model.graph
    slices = [n for n in g.node if n.op_type == "Slice" and n.input[0] == merged]
    readers = {s.output[0]: [n for n in g.node if s.output[0] in n.input] for s in slices}
    if not all(len(r) == 1 and r[0].op_type == "Relu" for r in readers.values()):
        return merged
    relu = helper.make_node("Relu", [merged], [f"{merged}_relu"])
    g.node.insert(list(g.node).index(slices[0]), relu)
    for s in slices:
        r = readers[s.output[0]][0]
        s.input[0] = f"{merged}_relu"
        s.output[0] = r.output[0]
        g.node.remove(r)
    return f"{merged}_relu"


def concat_direct(model: onnx.ModelProto, merged: str) -> None:
    """A Concat (channels) of Relu(Slice(merged)) pieces that cover ``merged`` in order
    becomes Relu(merged): the merged conv then writes the concatenation itself."""
    g = model.graph
    by_out = _nodes_by_output(g)
    for cat in list(g.node):
        if cat.op_type != "Concat":
            continue
        relus = [by_out.get(i) for i in cat.input]
        if not all(r is not None and r.op_type == "Relu" for r in relus):
            continue
        slices = [by_out.get(r.input[0]) for r in relus]
        if not all(s is not None and s.op_type == "Slice" and s.input[0] == merged
                   for s in slices):
            continue
        relu = helper.make_node("Relu", [merged], [cat.output[0]])
        g.node.insert(list(g.node).index(cat), relu)
        for n in [cat, *relus, *slices]:
            g.node.remove(n)


def squeezenet(direct: bool) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    base = pipeline.example_model("squeezenet")
    m = onnx.ModelProto()
    m.CopyFrom(base)
    fires = sorted({n.input[1].rsplit(".", 2)[0] for n in m.graph.node
                    if n.op_type == "Conv" and "expand" in n.input[1]})
    for f in fires:
        outs = [n.output[0] for n in m.graph.node if n.op_type == "Conv"
                and n.input[1] in (f"{f}.expand1x1.weight", f"{f}.expand3x3.weight")]
        merged = merge_convs(m, outs, f.replace(".", "_"))
        if direct:
            concat_direct(m, merged)
    return base, m


def pool_after_conv(m: onnx.ModelProto, conv_weight: str) -> None:
    """Conv1x1(AveragePool(x)) -> AveragePool(Conv1x1(x)): a 1x1 conv mixes channels at one
    pixel, the pool averages pixels with a divisor that depends on the pixel only (also with
    ``count_include_pad=0``), and the average of a constant bias is the bias."""
    g = m.graph
    by_out = _nodes_by_output(g)
    conv = next(n for n in g.node if n.op_type == "Conv" and n.input[1] == conv_weight)
    pool = by_out[conv.input[0]]
    assert pool.op_type == "AveragePool"
    nodes = list(g.node)
    pos = nodes.index(pool)
    g.node.remove(pool)
    g.node.remove(conv)
    pooled = helper.make_node("AveragePool", [conv.output[0] + "_unpooled"], [conv.output[0]],
                              **_attrs(pool))
    new_conv = helper.make_node("Conv", [pool.input[0], *conv.input[1:]],
                                [conv.output[0] + "_unpooled"], **_attrs(conv))
    g.node.insert(pos, pooled)
    g.node.insert(pos, new_conv)


def inception(pool: bool = False) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    base = pipeline.example_model("inception")
    m = onnx.ModelProto()
    m.CopyFrom(base)
    mods = sorted({n.input[1].split(".")[0] for n in m.graph.node if n.op_type == "Conv"})
    branches = ("branch1x1", "branch3x3_1", "branch3x3dbl_1", *(("branch_pool",) if pool else ()))
    for mod in mods:
        if pool:
            pool_after_conv(m, f"{mod}.branch_pool.weight")
        names = [f"{mod}.{b}.weight" for b in branches]
        outs = [n.output[0] for n in m.graph.node if n.op_type == "Conv" and n.input[1] in names]
        relu_before_slices(m, merge_convs(m, outs, mod))
    return base, m


def resnext() -> tuple[onnx.ModelProto, onnx.ModelProto]:
    base = pipeline.example_model("resnext")
    m = onnx.ModelProto()
    m.CopyFrom(base)
    names = ("layer1.0.conv1.weight", "layer1.0.downsample.0.weight")
    outs = [n.output[0] for n in m.graph.node if n.op_type == "Conv" and n.input[1] in names]
    merge_convs(m, outs, "layer1_0")
    return base, m


CASES = {
    "squeezenet-slices": lambda: squeezenet(False),
    "squeezenet-direct": lambda: squeezenet(True),
    "inception-1x1": inception,
    "inception-pool": lambda: inception(pool=True),
    "resnext-1x1": resnext,
}


def bench(case: str, reps: int, t: int, egraph: bool, rules: str) -> tuple[float, ...]:
    """Minimum wall seconds of the original and the rewritten model, the ratio of their
    minimum calling-thread CPU seconds (at 1 thread: robust to other processes taking the
    core), and the CPU-time spread of the original's two builds (the noise). ``rules``:
    instead, the example ``case`` compiled with the e-graph's default rule
    families and with them plus ``rules`` (the rewrite as extraction chooses it)."""
    if rules:
        base = merged = pipeline.example_model(case)
        variants = [{"rules": pipeline.DEFAULT_RULES},
                    {"rules": (*pipeline.DEFAULT_RULES, *rules.split(","))}]
        egraph = True
    else:
        base, merged = CASES[case]()
        onnx.checker.check_model(merged)
        variants = [{}, {}]
    feeds = _feeds(base, np.random.default_rng(0))
    runners = []
    for m, fields in zip((base, merged), variants, strict=True):
        opts = pipeline.Options(target="llvm", verify=False, threads=t, cache=False,
                                egraph=egraph, **fields)
        res = pipeline.compile(m, opts)
        if rules:
            print(f"  {case} rules {opts.rules[-1]}: {res.graph.op_histogram()}")
        runners.append(res.compiled.run)
    a, b = (r(feeds) for r in runners)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-3, atol=1e-3)
    # each compiled twice more (A B A' B'): the A/A' spread is the noise floor of the ratio
    # (on this shared machine two builds of one graph measured up to 1.2x apart in one run)
    for m, fields in zip((base, merged), variants, strict=True):
        opts = pipeline.Options(target="llvm", verify=False, threads=t, cache=False,
                                egraph=egraph, **fields)
        runners.append(pipeline.compile(m, opts).compiled.run)
    walls, cpus = _runs(runners, feeds, reps)
    w = [min(x) for x in walls]
    c = [min(x) for x in cpus]
    return (min(w[0], w[2]), min(w[1], w[3]), min(c[0], c[2]) / min(c[1], c[3]),
            max(c[0], c[2]) / min(c[0], c[2]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--egraph", action="store_true",
                    help="compile both with the e-graph (compiler costs) instead of without")
    ap.add_argument("--rules", default="",
                    help="families added to the default ones: --cases are then example names, "
                    "each compiled with the e-graph without and with them")
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"loadavg: {f.read().strip()}")
    print(f"{'case':<20}{'thr':>4}{'original ms':>13}{'rewritten ms':>14}{'ratio':>8}"
          f"{'cpu ratio':>10}{'A/A noise':>10}   min of {args.reps}, ratio = original / rewritten")
    for case in args.cases.split(","):
        for t in (int(x) for x in args.threads.split(",")):
            a, b, c, n = bench(case, args.reps, t, args.egraph, args.rules)
            cpu = f"{c:>9.3f}x{n:>9.3f}x" if t == 1 else f"{'-':>10}{'-':>10}"
            print(f"{case:<20}{t:>4}{a * 1e3:>13.3f}{b * 1e3:>14.3f}{a / b:>7.3f}x{cpu}",
                  flush=True)
    with open("/proc/loadavg") as f:
        print(f"loadavg: {f.read().strip()}")


if __name__ == "__main__":
    main()
