"""Run the ONNX backend node tests (``onnx.backend.test``) through ``eqsat compile``.

Consumes the node test cases (collected, dtype-filtered and compared with the tolerances of the
op table's conformance harness, :mod:`tests.conformance.harness`); produces one
:class:`~tests.conformance.harness.CaseResult` per case and the summary line
``compile conformance: N passed, M failed (K skipped: reasons)``.

A case is in scope when every node is an op the compiler claims (:data:`eqsat.lower.compute.
CLAIMED`) or a ``Constant``. Its model is compiled through the real path
(:func:`eqsat.pipeline.compile`, target ``llvm``, the e-graph and the onnxruntime gate off: the
gate's random feeds would test nothing the case's own data does not) and run on the case's
inputs; outputs must have the expected dtype and shape and values within the case's tolerances
(NaN where the reference has NaN).

Static shape arguments: eqsat compiles a graph whose shape-like inputs are compile-time
constants, as TVM's frontends freeze them (``relay.frontend.from_onnx`` binds shapes, axes,
pads, slice bounds, repeats, ... to constants before compiling). So an input that the consuming
op's compute definition does not read element by element (:meth:`Compute.is_data` false) is
bound from the case's data as an initializer; the data inputs stay model inputs. This is why
Reshape/Slice/Pad/Tile/... cases compile at all: with a run-time shape argument the output shape
would be unknown at compile time, which this compiler (like TVM without ``Any``) refuses.

Why the whole path rather than :func:`eqsat.lower.lower.lower` plus the interpreter: the
import, folding, lowering, LLVM codegen and the artifact's feed binding are all exercised; a
bug anywhere in them shows up as a failed case.

A case whose lowering refuses it (a :class:`~eqsat.lower.lowered.LoweringError`, surfacing as
the compile path's one-line ``cannot compile this model: ...`` InputError) is counted as skipped,
"refused by lowering", with the reason: refusing is the correct, documented behaviour for an
attribute combination the compiler does not support; a wrong answer is a failure. The refusals
the compiler makes on purpose are listed in :data:`REFUSALS` (each with why); the summary line
counts refusals by their label there.

Cost: about 900 cases, 660 of them compiled, in ~25 s with a cold object cache and ~8 s with a
warm one (two cores); small enough for the default test run, so no batching or subset.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter

import numpy as np
import onnx
from onnx import numpy_helper

from eqsat.errors import InputError
from eqsat.lower.compute import CLAIMED, COMPUTE
from tests.conformance.harness import CaseResult, _array, _unsupported, all_cases

OUTSIDE = "op outside the claimed set"
REFUSED = "refused by lowering"

# What lowering refuses, documented: a pattern of the one-line refusal -> (short label, why).
# A refusal matching none of these is a regression (test_compile_conformance checks).
REFUSALS: dict[str, tuple[str, str]] = {
    r"has dtype uint(16|32|64), which the compiler does not support": (
        "uint16/32/64",
        "the loop IR has no unsigned types but uint8 (unsigned division, comparison and "
        "conversion would need code paths of their own in the backends)",
    ),
    r"is an empty tensor .* \(zero-size tensors are not supported\)": (
        "empty tensor",
        "buffers and loop extents are positive: a zero-size input or output (the *_empty_set "
        "reductions, Split into empty parts, a Slice past the end) is refused",
    ),
    r"^Dropout .*: Dropout in training mode \(ratio [0-9.]+\) drops at random": (
        "training Dropout",
        "eqsat compiles inference graphs; random dropout has no deterministic result",
    ),
    r"^BatchNormalization .*: output output_mean is used": (
        "training BatchNormalization",
        "the running-statistics outputs of training mode: inference only",
    ),
    r"^MaxPool .*: output z is used": ("MaxPool Indices", "the argmax output is not computed"),
    r"the size\(s\) .* of intermediate values do not follow from the input shapes": (
        "run-time size",
        "a size computed from a tensor's value (the *window_expanded cases: a Range over a limit "
        "derived from the window-size input) has no value in the compiled code, which does no "
        "shape arithmetic at run time",
    ),
    r"^Pow .*: Pow of integers$": (
        "integer Pow",
        "numpy's integer power wraps on overflow; a float pow would not, and an exact integer "
        "power by a run-time exponent needs a loop",
    ),
}


def refusal(message: str) -> str | None:
    """The documented refusal ``message`` (a skipped case's) is, by its short label."""
    text = message.removeprefix(REFUSED + ": ")
    return next((label for p, (label, _) in REFUSALS.items() if re.search(p, text)), None)


def in_scope(case) -> bool:
    g = case.model.graph
    return bool(g.node) and all(
        n.domain in ("", "ai.onnx") and (n.op_type in CLAIMED or n.op_type == "Constant")
        for n in g.node
    )


def static_inputs(graph: onnx.GraphProto) -> set[str]:
    """Graph inputs that nodes read only as compile-time constants (shape-like arguments): an
    input that some node also reads element by element stays an input."""
    names = {vi.name for vi in graph.input}
    static, data = set(), set()
    for n in graph.node:
        c = COMPUTE.get(n.op_type)
        for p, i in enumerate(n.input):
            if i in names:
                (data if c is None or c.is_data(p) else static).add(i)
    unread = names - static - data  # read by no node (CastLike's `like`, expanded): inert
    return (static - data) | unread


def bind_static(model: onnx.ModelProto, inputs: list[np.ndarray]) -> tuple[onnx.ModelProto, dict]:
    """``model`` with its static inputs turned into initializers holding this data set's
    values, and the feeds of the remaining (data) inputs."""
    g = model.graph
    static = static_inputs(g)
    out = onnx.ModelProto()
    out.CopyFrom(model)
    feeds = {}
    keep = []
    for vi, v in zip(g.input, inputs, strict=False):
        if vi.name in static:
            out.graph.initializer.append(numpy_helper.from_array(np.asarray(v), vi.name))
        else:
            feeds[vi.name] = np.asarray(v)
            keep.append(vi)
    del out.graph.input[:]
    out.graph.input.extend(keep)
    return out, feeds


def compile_model(model: onnx.ModelProto):
    from eqsat.pipeline import Options, compile

    opts = Options(target="llvm", egraph=False, verify=False, threads=1)
    return compile(model, opts).compiled


def _tolerances(case) -> tuple[float, float]:
    return getattr(case, "rtol", 1e-3) or 1e-3, getattr(case, "atol", 1e-7) or 1e-7


def compare(name: str, got: np.ndarray, want: np.ndarray, rtol: float, atol: float) -> str | None:
    """None when ``got`` matches ``want`` (dtype, shape, values, NaN positions), else why not."""
    if got.dtype != want.dtype or got.shape != want.shape:
        return (
            f"output {name}: got {got.dtype}{list(got.shape)}, want {want.dtype}{list(want.shape)}"
        )
    if want.dtype.kind in "fc":
        if not np.array_equal(np.isnan(got), np.isnan(want)):
            return f"output {name}: NaN positions differ"
        ok = np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
    else:
        ok = np.array_equal(got, want)
    if ok:
        return None
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    err = np.nanmax(diff) if diff.size else 0.0
    return f"output {name}: max abs error {err:.3g}"


def run_case(case) -> CaseResult:
    g = case.model.graph
    ops = tuple(n.op_type for n in g.node)
    if not in_scope(case):
        return CaseResult(case.name, ops, "skipped", OUTSIDE)
    rtol, atol = _tolerances(case)
    for inputs, outputs in case.data_sets:
        inputs, outputs = [_array(v) for v in inputs], [_array(v) for v in outputs]
        bad = _unsupported(list(inputs) + list(outputs))
        if bad:
            return CaseResult(case.name, ops, "skipped", f"unsupported {bad}")
        model, feeds = bind_static(case.model, inputs)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                compiled = compile_model(model)
                got = dict(zip(compiled.output_names, compiled.run(feeds), strict=True))
        except InputError as e:
            msg = str(e).splitlines()[0]
            if msg.startswith("cannot compile this model:"):
                reason = msg.removeprefix("cannot compile this model:").strip()
                return CaseResult(case.name, ops, "skipped", f"{REFUSED}: {reason}")
            return CaseResult(case.name, ops, "failed", f"InputError: {msg}"[:300])
        except Exception as e:  # any other failure of the compile path is a failure
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return CaseResult(case.name, ops, "failed", f"{type(e).__name__}: {first}"[:300])
        for vi, want in zip(g.output, outputs, strict=False):
            if vi.name not in got:
                return CaseResult(case.name, ops, "failed", f"output {vi.name} missing")
            why = compare(vi.name, np.asarray(got[vi.name]), np.asarray(want), rtol, atol)
            if why:
                return CaseResult(case.name, ops, "failed", why)
    return CaseResult(case.name, ops, "passed")


def cases(names: set[str] | None = None):
    return [c for c in all_cases() if in_scope(c) and (names is None or c.name in names)]


def run_all(names: set[str] | None = None) -> list[CaseResult]:
    return [run_case(c) for c in cases(names)]


def summary_line(results: list[CaseResult]) -> str:
    """``compile conformance: N passed, M failed (K skipped: reasons)``; refusals by label."""
    passed = sum(r.status == "passed" for r in results)
    failed = sum(r.status == "failed" for r in results)
    skipped = [r for r in results if r.status == "skipped" and r.message != OUTSIDE]
    refused = Counter(
        refusal(r.message) or "undocumented" for r in skipped if r.message.startswith(REFUSED)
    )
    other = Counter(
        re.sub(r"dtype \S+", "dtype", r.message)  # without the case's detail
        for r in skipped
        if not r.message.startswith(REFUSED)
    )
    parts = [f"{n} {w}" for w, n in other.most_common()]
    if refused:
        labels = ", ".join(f"{n} {w}" for w, n in refused.most_common())
        parts.append(f"{sum(refused.values())} {REFUSED} ({labels})")
    return (
        f"compile conformance: {passed} passed, {failed} failed "
        f"({len(skipped)} skipped{': ' + '; '.join(parts) if parts else ''})"
    )


if __name__ == "__main__":
    import sys
    import time

    t0 = time.perf_counter()
    res = run_all(set(sys.argv[1:]) or None)
    for r in res:
        if r.status == "failed":
            print(f"FAIL {r.name}: {r.message}")
        elif r.status == "skipped" and r.message != OUTSIDE:
            print(f"SKIP {r.name}: {r.message}")
    print(summary_line(res))
    print(f"{len(res)} cases in {time.perf_counter() - t0:.1f} s")
