"""``eqsat tune --ray ADDRESS`` on a real (local) Ray cluster started by the test: the
candidates are measured as Ray tasks, the log gets the same records a local tune writes, and a
following compile uses it. Slow (a cluster starts in ~10 s); skipped where ray is not installed
(``pip install 'eqsat[ray]'``)."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from eqsat.autoschedule import log as tlog
from eqsat.autoschedule import measure

from .models import conv_mlp

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'eqsat[ray]'")


@pytest.mark.slow
def test_tune_on_a_local_ray_cluster(tmp_path):
    import os

    model = tmp_path / "m.onnx"
    onnx.save(conv_mlp(), model)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # after init: the cluster's authentication token reaches the subprocesses by the environment
    env = dict(os.environ, EQSAT_CACHE_DIR=str(tmp_path / "cache"))
    try:
        address = ray.get_runtime_context().gcs_address
        log = tmp_path / "ray.jsonl"
        # another process, as a user runs it: it connects to this cluster by its address
        r = subprocess.run(
            [sys.executable, "-m", "eqsat", "tune", str(model), "--trials", "5", "--threads",
             "1", "--no-optimize", "--log", str(log), "--ray", address, "--json"],
            capture_output=True, text=True, timeout=900, env=env,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr[-2000:]
        summary = json.loads(r.stdout)
        assert summary["trials"] == 5 == len([x for x in tlog.read(log) if not x.confirm])
        assert all(x.seconds is not None for x in tlog.read(log))  # every task measured
        # and in this process, through the driver that started the cluster: a job as a task
        seconds, error = measure.RayWorker(address).measure(
            measure.Job(_kernels()[0], None, 1, 2))
        assert error == "" and seconds > 0
    finally:
        ray.shutdown()
    c = subprocess.run(
        [sys.executable, "-m", "eqsat", "compile", str(model), "--threads", "1",
         "--no-optimize", "--tuning-log", str(log), "--json"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert c.returncode == 0, c.stderr[-2000:]
    assert "tuned_kernels" in json.loads(c.stdout)["lowering"]


def _kernels():
    from eqsat.egraph.onnx_io import import_onnx
    from eqsat.lower.lower import lower

    return lower(import_onnx(conv_mlp())).program.kernels
