"""Kernel signatures (stable across processes, name-blind, shape-sensitive) and the tuning log
(round trip, corrupt and torn lines skipped with a warning)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from eqsat.autoschedule import log as tlog
from eqsat.autoschedule.signature import kernel_signature, machine_key
from eqsat.egraph.onnx_io import import_onnx
from eqsat.lower.lower import lower
from tests.unit.autoschedule.models import conv_mlp


def _kernels(seed: int = 0):
    return lower(import_onnx(conv_mlp(seed))).program.kernels


def test_signature_same_in_another_process():
    here = [kernel_signature(k) for k in _kernels()]
    code = ("from eqsat.autoschedule.signature import kernel_signature\n"
            "from eqsat.egraph.onnx_io import import_onnx\n"
            "from eqsat.lower.lower import lower\n"
            "from tests.unit.autoschedule.models import conv_mlp\n"
            "print(' '.join(kernel_signature(k) for k in lower(import_onnx(conv_mlp())).program"
            ".kernels))\n")  # fmt: skip
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": "123", "PATH": ""})  # fmt: skip
    assert r.stdout.split() == here
    assert len(set(here)) == len(here)  # three different computations, three keys


def test_signature_ignores_names_and_weights_but_not_shapes():
    k = _kernels()[0]
    renamed = dataclasses.replace(k, name="another_name")
    assert kernel_signature(renamed) == kernel_signature(k)
    # other weight values, same shapes: the same kernel
    assert [kernel_signature(x) for x in _kernels(seed=1)] == [
        kernel_signature(x) for x in _kernels()]
    p = k.params[0]
    bigger = dataclasses.replace(p, shape=tuple(d * 2 if isinstance(d, int) else d
                                                for d in p.shape))  # fmt: skip
    other = dataclasses.replace(k, params=(bigger, *k.params[1:]))
    assert kernel_signature(other) != kernel_signature(k)


def test_signature_tells_weights_from_activations_only():
    from eqsat.autoschedule.measure import standalone
    from eqsat.lower.loops import BufferKind

    k = _kernels()[0]  # the conv: x is an input, w a weight, the output an output
    assert kernel_signature(standalone(k).kernels[0]) == kernel_signature(k)
    kinds = {p.kind for p in k.params}
    assert BufferKind.WEIGHT in kinds
    w = next(p for p in k.params if p.kind is BufferKind.WEIGHT)
    from eqsat.lower.analysis import replace_buffer

    act = dataclasses.replace(w, kind=BufferKind.INPUT)
    other = dataclasses.replace(k, params=tuple(act if p == w else p for p in k.params),
                                body=replace_buffer(k.body, w, act))  # fmt: skip
    assert kernel_signature(other) != kernel_signature(k)


def test_machine_key_names_threads():
    assert machine_key(1) != machine_key(2)
    assert machine_key(1) == machine_key(1)


def _rec(sig="s", seconds=1e-3, default=False, sched="[]"):
    return tlog.Record(sig, machine_key(1), sched, seconds, default, work=2e6,
                       knobs={"vec": 1}, kernel="k0")  # fmt: skip


def test_log_round_trip_and_best(tmp_path):
    path = tmp_path / "sub" / "t.jsonl"
    recs = [_rec(seconds=2e-3, default=True), _rec(seconds=None), _rec(seconds=1e-3, sched="[1]")]
    tlog.append(path, recs[:1])
    tlog.append(path, recs[1:])
    back = tlog.read(path)
    assert [dataclasses.asdict(r) for r in back] == [dataclasses.asdict(r) for r in recs]
    log = tlog.TuningLog.load(path)
    best = log.best("s", machine_key(1))
    assert best.schedule == "[1]" and best.rate == pytest.approx(2.0)
    assert log.best("s", machine_key(2)) is None
    assert not back[1].ok and back[1].rate == 0.0


def test_log_ignores_records_of_kernels_timed_alone(tmp_path):
    """Version 1 records (an older eqsat timed kernels alone, hot) are ignored, with a warning
    of their own."""
    path = tmp_path / "t.jsonl"
    tlog.append(path, [_rec(), dataclasses.replace(_rec(), version=1)])
    with pytest.warns(UserWarning, match="ignored 1 record"):
        assert len(tlog.read(path)) == 1


def test_log_skips_corrupt_and_torn_lines(tmp_path):
    path = tmp_path / "t.jsonl"
    tlog.append(path, [_rec()])
    with path.open("a") as f:
        f.write("not json at all\n")
        f.write(json.dumps({"sig": "x"}) + "\n")  # a JSON object, but not a record
        f.write('{"sig": "s", "machine": "m", "sched')  # a torn last line (a killed run)
    with pytest.warns(UserWarning, match="skipped 3 line"):
        back = tlog.read(path)
    assert len(back) == 1 and back[0].sig == "s"
    tlog.append(path, [_rec(sig="after")])  # after a torn line: the new record stays whole
    with pytest.warns(UserWarning, match="skipped 3 line"):
        assert [r.sig for r in tlog.read(path)] == ["s", "after"]
    assert tlog.read(tmp_path / "missing.jsonl") == []
