"""What every part of the domain XML code shares: its errors, the element helper,
memory units, bounded integers, the check for unsupported children and attributes, the
hardened XML parser, and validation against libvirt's schema."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from lxml import etree

from clustercore.errors import ValidationError

SCHEMA = Path("/usr/share/libvirt/schemas/domain.rng")


class UnsupportedXML(ValidationError):
    """The domain XML holds something a VMSpec cannot express; ``field`` is its path."""

    def __init__(self, field: str, problem: str, value: Any = None) -> None:
        super().__init__("domain XML", field, problem, value)


class UnboundDevice(ValidationError):
    """A host device asked for by resource name has no concrete device yet."""

    def __init__(self, field: str, resource: str) -> None:
        super().__init__("vm", field, "asked for by resource name and not bound to a device yet; "
                         "allocate it on the host first (flavors.virt.devices)", resource)


def el(parent: etree._Element, tag: str, text: str | None = None, **attrib: str) -> etree._Element:
    """A child ``tag`` of ``parent`` with ``text`` and attributes (a trailing ``_`` is dropped: ``id_``)."""
    node = etree.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrib.items()})
    if text is not None:
        node.text = text
    return node


UNITS = {"b": 1, "bytes": 1, "k": 1024, "kib": 1024, "kb": 1000, "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
         "g": 1024**3, "gib": 1024**3, "gb": 1000**3, "t": 1024**4, "tib": 1024**4, "tb": 1000**4}


MAX_INT = 1 << 62
"""No integer the domain XML holds is larger (memory in bytes fits; the spec bounds the rest)."""


def integer(text: str | None, where: str, low: int = 0, high: int = MAX_INT, base: int = 10) -> int:
    """``text`` as an integer in ``low..high``; UnsupportedXML naming ``where`` otherwise
    (never a bare ValueError)."""
    raw = (text or "").strip()
    if base == 16 and raw.lower().startswith("0x"):
        raw = raw[2:]
    digits = "0123456789abcdefABCDEF" if base == 16 else "0123456789"
    if not raw or len(raw) > 20 or any(c not in digits for c in raw):
        raise UnsupportedXML(where, "must be an integer", (text or "")[:50])
    value = int(raw, base)
    if not low <= value <= high:
        raise UnsupportedXML(where, f"must lie in {low}..{high}", value)
    return value


PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False,
                         remove_comments=True, remove_pis=True)
"""No entities, DTDs or network: a domain XML is data (libvirt writes none of them)."""


def parse_xml(xml: str) -> etree._Element:
    """The root of ``xml``, parsed with :data:`PARSER`: UnsupportedXML when it is not
    well-formed or holds a DTD."""
    try:
        root = etree.fromstring(xml.encode(), PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise UnsupportedXML("<domain>", f"not well-formed XML: {exc}") from None
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise UnsupportedXML("<!DOCTYPE>", "a domain XML holds no DTD")
    return root


def attributes(node: etree._Element, known: set[str], where: str) -> None:
    """Reject any attribute of ``node`` not in ``known``: what the spec does not carry is
    refused by name, never dropped."""
    for key in node.attrib:
        name = key.decode() if isinstance(key, bytes) else key
        if name not in known:
            raise UnsupportedXML(f"{where}/@{name}", "not carried by the VM spec (adopting would drop it)",
                                 node.get(name))


def mib(node: etree._Element, where: str) -> int:
    """The size in ``node`` (its text and ``unit``) in whole MiB."""
    unit = (node.get("unit") or "KiB").lower()
    if unit not in UNITS:
        raise UnsupportedXML(where, "unknown unit", unit)
    value = integer(node.text, where) * UNITS[unit]
    if value % (1024**2):
        raise UnsupportedXML(where, "memory must be a whole number of MiB", node.text)
    return value // (1024**2)


def only(parent: etree._Element | None, known: set[str], where: str) -> None:
    """Reject any child of ``parent`` not in ``known``, naming where it is."""
    for node in parent if parent is not None else ():
        if isinstance(node.tag, str) and node.tag not in known:  # comments have no str tag
            raise UnsupportedXML(f"{where}/{node.tag}", "not supported by the VM spec",
                                 etree.tostring(node, encoding="unicode")[:200])


@functools.cache
def _schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def validate(xml: str) -> None:
    """Check ``xml`` against libvirt's RelaxNG schema; raise UnsupportedXML with its log."""
    schema = _schema()
    if not schema.validate(parse_xml(xml)):
        raise UnsupportedXML("<domain>", f"does not validate against {SCHEMA}: {schema.error_log.last_error}")
