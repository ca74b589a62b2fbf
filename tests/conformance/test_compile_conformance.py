"""ONNX backend node tests through ``eqsat compile`` (LLVM) for every op the compiler claims:
prints the summary line, fails on any failure not in the documented known gaps, and checks that
every lowering refusal is one of the documented ones (``compile_harness.REFUSALS``, each with
its reason): a new refusal is a regression too.

The full run (~900 cases, ~660 compiled) takes about 25 s with a cold object cache and 10 s
with a warm one on two cores, so it is part of the default test run; no subset is needed."""

import pytest

from eqsat.lower.compute import CLAIMED
from tests.conformance import compile_harness as harness

# Known failures, each with its reason. Anything failing outside this list fails the test.
KNOWN_FAILURES: dict[str, str] = {}


@pytest.fixture(scope="module")
def results():
    return harness.run_all()


def test_compile_conformance(results, report_line):
    failed = [r for r in results if r.status == "failed"]
    unexpected = [r for r in failed if r.name not in KNOWN_FAILURES]
    report_line(harness.summary_line(results))
    assert not unexpected, "\n".join(f"{r.name}: {r.message}" for r in unexpected[:40])


def test_every_refusal_is_documented(results):
    refused = [
        r for r in results if r.status == "skipped" and r.message.startswith(harness.REFUSED)
    ]
    undocumented = [r for r in refused if harness.refusal(r.message) is None]
    assert not undocumented, "\n".join(f"{r.name}: {r.message}" for r in undocumented[:40])


def test_every_claimed_op_passes_a_case(results):
    passed = {op for r in results if r.status == "passed" for op in r.ops}
    assert sorted(CLAIMED - passed) == []
