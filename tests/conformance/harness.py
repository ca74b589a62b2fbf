"""Run the ONNX backend node tests (``onnx.backend.test``) against the op table.

For every test case whose nodes are all ops of the table, each node is built as an eqsat Node
(the same conversion import uses), its output types are inferred with the table (input values
known, as constant folding would see them) and it is run with the table's numpy semantics; types
must match the expected outputs exactly and values within the case's tolerances.
"""

from __future__ import annotations

import functools
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np

from eqsat.egraph.ir import TensorType
from eqsat.egraph.onnx_io import constant_value, node_from_proto
from eqsat.egraph.ops import OPS, infer_node, run_node

UNSUPPORTED_DTYPES = {"bfloat16", "float8", "int4", "uint4", "float4", "str", "object", "<U"}


@dataclass
class CaseResult:
    name: str
    ops: tuple[str, ...]
    status: str  # passed | failed | skipped
    message: str = ""


@functools.cache
def all_cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(collect_testcases(None))


def _array(v):
    """Test data comes as numpy arrays or TensorProtos."""
    from onnx import TensorProto, numpy_helper

    return numpy_helper.to_array(v) if isinstance(v, TensorProto) else v


def _unsupported(arrays) -> str | None:
    for a in arrays:
        a = np.asarray(a) if not isinstance(a, (list, dict)) else None
        if a is None:
            return "sequence/map value"
        name = a.dtype.name if a.dtype.names is None else "struct"
        if a.dtype.kind in "OUSV" or any(u in name for u in UNSUPPORTED_DTYPES if u != "<U"):
            return f"dtype {a.dtype}"
        if a.dtype.fields:
            return f"dtype {a.dtype}"
    return None


def _match(ty: TensorType, v: np.ndarray) -> bool:
    return ty.dtype == v.dtype.name and ty.shape == tuple(v.shape)


def run_case(case) -> CaseResult:
    g = case.model.graph
    ops = tuple(n.op_type for n in g.node)
    known = set(OPS) | {"Constant"}
    if not g.node or any(n.domain not in ("", "ai.onnx") or n.op_type not in known for n in g.node):
        return CaseResult(case.name, ops, "skipped", "op outside the table")
    for inputs, outputs in case.data_sets:
        inputs, outputs = [_array(v) for v in inputs], [_array(v) for v in outputs]
        bad = _unsupported(list(inputs) + list(outputs))
        if bad:
            return CaseResult(case.name, ops, "skipped", f"unsupported {bad}")
        env = {vi.name: np.asarray(v) for vi, v in zip(g.input, inputs, strict=False)}
        for t in g.initializer:
            from onnx import numpy_helper

            env[t.name] = numpy_helper.to_array(t)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                for p in g.node:
                    if p.op_type == "Constant":  # import turns these into weights
                        env[p.output[0]] = constant_value(p)
                        continue
                    node = node_from_proto(p)
                    if node.opaque is not None:
                        return CaseResult(case.name, ops, "skipped", "graph attribute")
                    args = [env[i] if i else None for i in node.inputs]
                    types = [
                        TensorType(a.dtype.name, a.shape) if a is not None else None for a in args
                    ]
                    opset = next(
                        (o.version for o in case.model.opset_import if o.domain in ("", "ai.onnx")),
                        17,
                    )
                    out_types = infer_node(node, types, args, opset)
                    vals = run_node(node, args)
                    for name, ty, v in zip(node.outputs, out_types, vals, strict=False):
                        if not name:
                            continue
                        v = np.asarray(v)
                        if not _match(ty, v):
                            return CaseResult(
                                case.name,
                                ops,
                                "failed",
                                f"{p.op_type}: inferred {ty} but ran to "
                                f"{v.dtype.name}{list(v.shape)}",
                            )
                        env[name] = v
        except Exception as e:  # any failure of the op is a conformance failure
            return CaseResult(case.name, ops, "failed", f"{type(e).__name__}: {e}"[:300])
        rtol = getattr(case, "rtol", 1e-3) or 1e-3
        atol = getattr(case, "atol", 1e-7) or 1e-7
        for vi, want in zip(g.output, outputs, strict=False):
            got, want = env.get(vi.name), np.asarray(want)
            if got is None or got.shape != want.shape or got.dtype != want.dtype:
                return CaseResult(
                    case.name,
                    ops,
                    "failed",
                    f"output {vi.name}: got {None if got is None else got.dtype}"
                    f"{None if got is None else list(got.shape)}, "
                    f"want {want.dtype}{list(want.shape)}",
                )
            if want.dtype.kind in "fc":
                ok = np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
            else:
                ok = np.array_equal(got, want)
            if not ok:
                err = np.nanmax(np.abs(got.astype(np.float64) - want.astype(np.float64)))
                return CaseResult(
                    case.name, ops, "failed", f"output {vi.name}: max abs error {err:.3g}"
                )
    return CaseResult(case.name, ops, "passed")


def run_all() -> list[CaseResult]:
    return [run_case(c) for c in all_cases()]


def summary(results: list[CaseResult]) -> dict[str, Counter]:
    per_op: dict[str, Counter] = {}
    for r in results:
        if r.status == "skipped" and r.message == "op outside the table":
            continue
        key = r.ops[0] if len(set(r.ops)) == 1 else "(multi-node)"
        per_op.setdefault(key, Counter())[r.status] += 1
    return per_op


if __name__ == "__main__":
    res = run_all()
    for op, c in sorted(summary(res).items()):
        print(f"{op:24s} passed {c['passed']:3d} failed {c['failed']:3d} skipped {c['skipped']:3d}")
    for r in res:
        if r.status == "failed":
            print(f"FAIL {r.name}: {r.message}")
    from tests.conformance.test_conformance import summary_line  # the known failures' reasons

    print(summary_line(res))
