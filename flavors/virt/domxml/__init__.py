"""Libvirt domain XML: :func:`build` writes a :class:`VMSpec` in XML order, :func:`parse`
reads back everything ``build`` writes, and libvirt's own rendering of it, so VMs already
running on a host can be adopted.

Builder code is explicit and follows the document (Nova style): one function per part.
What libvirt adds on its own (controllers, addresses, aliases, the emulator path, a video
card for graphics, clock and lifecycle defaults) is ignored when parsing; anything else
the spec cannot express is rejected with :class:`UnsupportedXML` naming where it is, so
adopting a domain never silently loses a device.

What libvirt's XML has no room for (the guaranteed memory, which host devices were asked
for by resource name, cloud-init documents) is kept in ``<metadata>`` under
:data:`NAMESPACE`.

Each element group has its module, its writer beside its reader (as Nova's ``config.py``):
:mod:`~.domain` (``build``, ``parse``), :mod:`~.metadata`, :mod:`~.memory`, :mod:`~.cpu`,
:mod:`~.boot` (``<os>``), :mod:`~.devices`, :mod:`~.disks`, :mod:`~.interfaces`,
:mod:`~.hostdevs`; :mod:`~.common` holds the errors and helpers. The public names are
importable from here.
"""

from flavors.virt.domxml.common import SCHEMA, UnboundDevice, UnsupportedXML, validate
from flavors.virt.domxml.devices import AGENT, SEED_TARGET
from flavors.virt.domxml.disks import disk_element
from flavors.virt.domxml.domain import build, parse
from flavors.virt.domxml.hostdevs import hostdev_element, read_hostdev
from flavors.virt.domxml.interfaces import nic_element
from flavors.virt.domxml.memory import dimm_element
from flavors.virt.domxml.metadata import NAMESPACE, NS

__all__ = [
    "AGENT",
    "NAMESPACE",
    "NS",
    "SCHEMA",
    "SEED_TARGET",
    "UnboundDevice",
    "UnsupportedXML",
    "build",
    "dimm_element",
    "disk_element",
    "hostdev_element",
    "nic_element",
    "parse",
    "read_hostdev",
    "validate",
]
