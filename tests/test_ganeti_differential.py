"""clustercore-iallocator against the real hail on random clusters and requests.

Each example builds a cluster and a request (``tests/ganeti_diff.py``), runs the installed
hail and ours on the same file with the same options and asserts the same success, the
same failure text (with its counts) and the same nodes or nodes whose cluster score, as
hinfo computes it, ties hail's. ``CLUSTERCORE_DIFF_EXAMPLES`` sets the number of examples
(300 by default, about 20 s; 20,000 by hand).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from clustercore.adapters.ganeti import answer
from tests.ganeti_diff import HAIL, KINDS, compare, flags, requests, run_hail

EXAMPLES = int(os.environ.get("CLUSTERCORE_DIFF_EXAMPLES", "300"))
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not HAIL.exists(), reason="hail is not installed")]
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None,
                    suppress_health_check=list(HealthCheck))


@SETTINGS
@given(requests(KINDS), flags())
def test_every_request_type_answers_as_hail(data: dict[str, Any], flags: tuple[str, ...]) -> None:
    assert compare(data, flags) is None


def even_cluster(nodes: int, request: dict[str, Any]) -> dict[str, Any]:
    """``nodes`` identical empty nodes (as hail's ``--simulate`` builds them): every candidate
    ties but for the last bits of hail's float arithmetic, which decide."""
    node = {"total_memory": 65536, "reserved_memory": 0, "free_memory": 65536, "total_disk": 953674,
            "free_disk": 953674, "total_cpus": 16, "reserved_cpus": 1, "total_spindles": 1, "free_spindles": 0,
            "group": "g1", "offline": False, "drained": False, "vm_capable": True, "master_candidate": False,
            "tags": [], "ndparams": {"spindle_count": 1, "exclusive_storage": False}}
    low = {"memory-size": 128, "cpu-count": 1, "disk-size": 1024, "disk-count": 1, "nic-count": 1, "spindle-use": 1}
    high = {"memory-size": 32768, "cpu-count": 8, "disk-size": 1048576, "disk-count": 16, "nic-count": 8,
            "spindle-use": 12}
    ipolicy = {"std": low, "minmax": [{"min": low, "max": high}], "vcpu-ratio": 4.0, "spindle-ratio": 32.0,
               "disk-templates": ["diskless", "file", "sharedfile", "plain", "blockdev", "drbd", "rbd", "ext"]}
    group = {"name": "group-01", "alloc_policy": "preferred", "networks": [], "tags": [], "ipolicy": ipolicy}
    return {"version": 2, "cluster_name": "even", "cluster_tags": [], "enabled_hypervisors": ["kvm"],
            "ipolicy": ipolicy,
            "nodegroups": {"g1": group}, "nodes": {f"node-{i:03d}": node for i in range(1, nodes + 1)},
            "instances": {}, "request": request}


INSTANCE = {"disks": [{"mode": "rw", "size": 20480, "spindles": 1}], "disk_space_total": 20480, "memory": 2048,
            "vcpus": 2, "nics": [], "tags": [], "spindle_use": 1, "hypervisor": "kvm", "os": "debian"}


@pytest.mark.parametrize(("nodes", "request_", "flags"), [
    (100, {"type": "allocate", "name": "new0", "disk_template": "plain", "required_nodes": 1} | INSTANCE, ()),
    (100, {"type": "allocate", "name": "new0", "disk_template": "plain", "required_nodes": 1} | INSTANCE,
     ("--no-capacity-checks",)),
    (40, {"type": "allocate", "name": "new0", "disk_template": "drbd", "required_nodes": 2} | INSTANCE, ()),
    (60, {"type": "multi-allocate", "instances": [
        {"name": f"new{i}", "disk_template": "plain", "required_nodes": 1} | INSTANCE for i in range(30)]},
     ("--no-capacity-checks",)),
])
def test_float_ties_on_larger_clusters_break_as_hails(nodes: int, request_: dict[str, Any],
                                                       flags: tuple[str, ...]) -> None:
    """Exactly hail's answer, nodes included, where only rounding separates the candidates
    (the random clusters above are small and accept a tied score instead): hail scores a
    single-node candidate afresh, and so must ours, bit for bit."""
    data = even_cluster(nodes, request_)
    with tempfile.TemporaryDirectory(prefix="ganeti-ties-") as tmp:
        path = Path(tmp) / "request.json"
        path.write_text(json.dumps(data))
        hail = run_hail(path, flags, Path(tmp) / "state")
    assert answer(data, flags) == hail
