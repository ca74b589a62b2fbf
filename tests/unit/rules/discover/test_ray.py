"""``eqsat rules discover --ray ADDRESS`` on a real (local) Ray cluster: the rules it writes are
the local run's. Slow (a cluster starts in ~10 s); skipped where ray is not installed
(``pip install 'eqsat[ray]'``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from eqsat.cli import main
from eqsat.rules.discover import search

ray = pytest.importorskip("ray", reason="ray is not installed: pip install 'eqsat[ray]'")

OPS = "matmul,add,transpose"


def _rules(path) -> list[dict]:
    return json.loads(path.read_text())["rules"]


@pytest.mark.slow
def test_discovery_on_a_local_ray_cluster_writes_the_local_runs_rules(
    tmp_path, capsys, monkeypatch
):
    local = tmp_path / "local.json"
    argv = ["rules", "discover", "--ops", OPS, "--max-ops", "2", "--json"]
    assert main([*argv, "--workers", "1", "-o", str(local)]) == 0
    capsys.readouterr()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        # another process, as a user runs it: it connects to this cluster by its address
        remote = tmp_path / "ray.json"
        r = subprocess.run(
            [sys.executable, "-m", "eqsat", *argv, "--ray", address, "-o", str(remote)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        # and in this process, through the driver that started it: the phases map on Ray
        mapped: list[str] = []
        ray_map = search.RayRunner.map

        def spy(self, fn, units, done=None):
            mapped.append(fn.__name__)
            return ray_map(self, fn, units, done)

        monkeypatch.setattr(search.RayRunner, "map", spy)
        again = tmp_path / "again.json"
        assert main([*argv, "--ray", address, "-o", str(again)]) == 0
    finally:
        ray.shutdown()
    rules = _rules(local)
    assert len(rules) >= 3  # commutativity, associativity, transposes through matmul
    assert _rules(remote) == rules and _rules(again) == rules
    summary = json.loads(r.stdout)
    assert summary["proved"] > 0 and summary["kept"] == len(rules) - summary["widened"]
    assert {"fingerprint_unit", "numeric_unit", "prove_unit"} <= set(mapped), mapped
