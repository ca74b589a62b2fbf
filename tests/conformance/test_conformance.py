"""ONNX backend node tests for every op the table claims: prints the conformance summary and
fails on any failure that is not in the documented list of known gaps below."""

from collections import Counter

import pytest

from eqsat.egraph.ops import OPS
from tests.conformance import harness

# Known gaps, each with its reason. Anything failing outside this list fails the test.
_TRAINING = "training mode is not supported: eqsat optimizes inference graphs (random/stateful)"
KNOWN_FAILURES: dict[str, str] = {
    "test_batchnorm_example_training_mode": _TRAINING,
    "test_batchnorm_epsilon_training_mode": _TRAINING,
    "test_training_dropout": _TRAINING,
    "test_training_dropout_mask": _TRAINING,
    "test_training_dropout_default": _TRAINING,
    "test_training_dropout_default_mask": _TRAINING,
    # float16 MatMul/Softmax accumulate in float32 and round once; the reference rounds after
    # every op: one float16 ULP (4.9e-4) apart, against an absolute tolerance of 1e-7.
    "test_attention_4d_causal_fp16_expanded": "float16 rounding: 1 ULP from the reference",
}


@pytest.fixture(scope="module")
def results():
    return harness.run_all()


def test_every_table_op_has_backend_cases_or_is_listed(results):
    covered = {
        op
        for r in results
        if r.status != "skipped" or r.message != "op outside the table"
        for op in r.ops
    }
    untested = sorted(set(OPS) - covered)
    # Ops with no node test in onnx.backend.test (nothing to check against there).
    assert untested == sorted(NO_BACKEND_CASES), untested


NO_BACKEND_CASES: set[str] = set()


def summary_line(results) -> str:
    """``conformance: N passed, M expected failures (k reason, ...), U unexpected failures``: the
    known failures are named by their reason (:data:`KNOWN_FAILURES`), so that a green run does
    not print "7 failed" unexplained."""
    failed = [r for r in results if r.status == "failed"]
    expected = Counter(
        KNOWN_FAILURES[r.name].split(":")[0] for r in failed if r.name in KNOWN_FAILURES
    )
    unexpected = sum(r.name not in KNOWN_FAILURES for r in failed)
    passed = sum(r.status == "passed" for r in results)
    skipped = [r for r in results if r.status == "skipped" and r.message != "op outside the table"]
    reasons = ", ".join(f"{n} {why}" for why, n in expected.most_common())
    return (
        f"conformance: {passed} passed, {sum(expected.values())} expected failures"
        + (f" ({reasons}; listed in tests/conformance/test_conformance.py)" if reasons else "")
        + f", {unexpected} unexpected failures, {len(skipped)} skipped for unsupported "
        "dtypes/graph attributes"
    )


def test_conformance(results, report_line):
    failed = [r for r in results if r.status == "failed"]
    unexpected = [r for r in failed if r.name not in KNOWN_FAILURES]
    report_line(summary_line(results))
    assert not unexpected, "\n".join(f"{r.name}: {r.message}" for r in unexpected[:40])


def test_the_summary_line_names_the_expected_failures():
    r = harness.CaseResult
    results = [
        r("test_a", ("Relu",), "passed"),
        r("test_training_dropout", ("Dropout",), "failed", "x"),
        r("test_batchnorm_example_training_mode", ("BatchNormalization",), "failed", "x"),
        r("test_new", ("Relu",), "failed", "x"),
    ]
    line = summary_line(results)
    assert line.startswith("conformance: 1 passed, 2 expected failures (2 training mode is not")
    assert ", 1 unexpected failures," in line and "7 failed" not in line
