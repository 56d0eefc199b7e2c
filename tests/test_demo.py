"""The demo the README promises tells the story it claims, and the CLI runs it."""

from __future__ import annotations

import io
import subprocess
import sys

from clustercore import HostState
from clustercore.demo import Demo


def test_demo_story() -> None:
    out = io.StringIO()
    demo = Demo(out)
    assert demo.run() == 0
    hosts = demo.cluster.hosts()
    assert hosts["host-1"].state is HostState.MAINTENANCE
    assert hosts["host-3"].state is HostState.NON_RESPONSIVE
    assert {hosts["host-2"].state, hosts["host-4"].state} == {HostState.UP}
    assert not any(p.host == "host-1" for p in demo.cluster.placements().values())
    text = out.getvalue()
    for line in ("5/5 host-1 enters maintenance", "Up -> NonOperational (missing storage shared)",
                 "Connecting -> NonResponsive", "PreparingForMaintenance -> Maintenance", "6 workloads running"):
        assert line in text


def test_cli_demo_runs() -> None:
    result = subprocess.run([sys.executable, "-m", "clustercore.cli", "demo"], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "host-1   Maintenance" in result.stdout
