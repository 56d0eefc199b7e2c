"""examples/vm.yaml (the complete example of docs/vm-spec.md) is a valid VM document: its
``vm`` part reads as a VMSpec with every rule met, and the VM runs on libvirt's test driver.
(Created through the API and the CLI: tests/test_cli_api.py.)"""

from __future__ import annotations

import uuid
from pathlib import Path

import attrs
import yaml

from clustercore import Cluster, FakeClock, Plugins
from flavors.virt import VirtFlavor, vm_workload
from flavors.virt.spec import VMSpec, parts

EXAMPLE = Path(__file__).parent.parent / "examples" / "vm.yaml"


def test_the_example_is_a_complete_vm_that_runs() -> None:
    document = yaml.safe_load(EXAMPLE.read_text())
    assert set(document) == {"name", "flavor", "ha", "priority", "labels", "vm"} and document["flavor"] == "vm"
    spec = VMSpec.from_dict({**document["vm"], "name": document["name"], "uuid": str(uuid.uuid4())})
    assert spec.requests().cpu == 2 and spec.requests().memory == 2048 and spec.migratable
    documented = (Path(__file__).parent.parent / "docs" / "vm-spec.md").read_text()
    for field in document["vm"]:
        assert f"`{field}" in documented, field
    cluster = Cluster(plugins=Plugins([VirtFlavor()], entry_points=False), clock=FakeClock())
    cluster.register_host({"name": "h1", "address": "test:///default", "capacity": {"cpu": 8, "memory": 8192}})
    cluster.heartbeat("h1")
    cluster.step()
    cluster.step()
    workload = vm_workload(spec, ha=document["ha"], priority=document["priority"], labels=document["labels"])
    assert cluster.submit(workload).host == "h1"
    cluster.delete("web1")


def test_every_field_of_the_spec_is_documented() -> None:
    documented = (Path(__file__).parent.parent / "docs" / "vm-spec.md").read_text()
    classes = [VMSpec, *(c for c in vars(parts).values() if isinstance(c, type) and attrs.has(c))]
    missing = [f"{c.__name__}.{f.name}" for c in classes for f in attrs.fields(c)
               if not any(f"{before}{f.name}{after}" in documented for before in "`.{ " for after in "`,:} ")]
    assert missing == []
