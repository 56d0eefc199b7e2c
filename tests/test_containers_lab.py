"""What only the containers flavor does on a cluster of real podman hosts
(flavors.containers.labcluster): on hosts without CRIU a checkpointed container holds the
maintenance back (the flavor's veto, naming it) while one that moves by restart is started
anew elsewhere. The scenarios every flavor shares (drain by checkpoint/restore keeping the
count, cancel, destination lost, power cut and HA, rolling upgrade) are in
tests/test_flavor_e2e.py. The podman lab uses API ports 17130..17132."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("podman", reason="the containers extra (podman-py) is not installed")

from clustercore import ClusterError, HostState
from flavors.containers.lab import PodmanLab
from flavors.containers.labcluster import PodLabCluster, counter
from flavors.virt.labcluster import FAST

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(subprocess.run(["which", "podman"], capture_output=True).returncode != 0,
                                 reason="podman is not installed (./dev test installs it)")]
S = HostState


@pytest.fixture(scope="module")
def lab() -> Iterator[PodmanLab]:
    with PodmanLab(3, base_port=17130, bmc=True) as lab:
        yield lab


def test_without_criu_checkpointed_containers_hold_the_drain_and_restartable_ones_move(lab: PodmanLab) -> None:
    lc = PodLabCluster(lab, FAST, criu=False)
    try:
        lc.up()
        lc.only_on("pod1", [counter("frozen"), counter("fresh", move="restart")])
        with pytest.raises(ClusterError, match="frozen"):
            lc.cluster.start_maintenance("pod1")
        assert lc.cluster.host("pod1").state is S.UP and lc.running()["frozen"] == ["pod1"]
        lc.cluster.stop("frozen")
        time.sleep(1)
        before = lc.count("fresh")
        lc.cluster.start_maintenance("pod1")
        lc.until(lambda: lc.cluster.host("pod1").state is S.MAINTENANCE)
        assert lc.running()["fresh"] != ["pod1"] and len(lc.running()["fresh"]) == 1
        assert lc.count("fresh") < before  # started anew: its count from 0
    finally:
        lc.close()
