"""libvirt over TLS and SSH (issue 18, item 3): lab hosts reached as ``qemu+ssh://`` and
``qemu+tls://`` (certificates made by the lab's CA, verified both ways), and migration
encrypted by policy: ``VIR_MIGRATE_TLS`` on by default between two ``qemu+tls://`` hosts,
proved by QEMU's own TLS handshake (a destination whose certificate another CA signed is
refused) and by a live migration of the real guest whose memory and disk are checked after.

The lab here is ``base_port=17320``: the ssh lab first, then (module fixture, set up on
first use) the TLS lab with a cluster on it; they never run at once.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from clustercore import ClusterConfig, Host, HostState
from clustercore.certs import LabCA
from clustercore.errors import FlavorError
from flavors.virt.connections import Connections, VirtError
from flavors.virt.guest import GuestImage
from flavors.virt.lab import Lab, LabHost, domain_type
from flavors.virt.labcluster import LabCluster
from flavors.virt.labtransport import server_names
from flavors.virt.migration import MigrationFailed, MigrationPolicy, Migrator, encrypted, flags

BASE = 17320
TCP, TLS, SSH = "qemu+tcp://127.0.0.1:1/system", "qemu+tls://127.0.0.1:2/system?pkipath=/x", "qemu+ssh://h/system"


def test_migration_is_encrypted_by_policy_or_when_both_hosts_are_tls() -> None:
    auto = MigrationPolicy()
    assert encrypted(auto, TLS, TLS)
    assert not encrypted(auto, TLS, TCP) and not encrypted(auto, TCP, TLS) and not encrypted(auto, SSH, SSH)
    assert not encrypted(MigrationPolicy(tls=False), TLS, TLS)
    assert encrypted(MigrationPolicy(tls=True), TCP, SSH)
    assert flags(auto, True, tls=True) & libvirt.VIR_MIGRATE_TLS
    assert not flags(auto, True) & libvirt.VIR_MIGRATE_TLS


def osless(name: str) -> str:
    return (f"<domain type='{domain_type()}'><name>{name}</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
            "<os><type arch='x86_64'>hvm</type><boot dev='network'/></os>"
            "<devices><serial type='pty'/></devices></domain>")


def host_uuid(conn: libvirt.virConnect) -> str:
    """The host uuid libvirtd reports: the lab host's own, so the URI reached that host."""
    return str(etree.fromstring(conn.getCapabilities().encode()).findtext("host/uuid"))


def lab_host(host: LabHost) -> Host:
    return Host(host.name, address=host.uri, state=HostState.UP)


@pytest.mark.slow
def test_ssh_hosts_run_and_migrate_a_guest() -> None:
    with Lab(2, base_port=BASE, transport="ssh") as lab:
        one, two = lab.hosts
        assert one.uri.startswith("qemu+ssh://root@127.0.0.1:62920/system?keyfile=")
        conns = Connections()
        try:
            a, b = conns.connect(lab_host(one)), conns.connect(lab_host(two))
            assert (host_uuid(a), host_uuid(b)) == (one.host_uuid, two.host_uuid)
            dom = a.createXML(osless("s1"), 0)
            Migrator().migrate(dom, b, vm="s1", source="lab1", target="lab2", memory_mib=64, passthrough=False,
                               uri="tcp://127.0.0.1", addresses=(one.uri, two.uri))  # ssh: unencrypted
            assert one.active_domains() == [] and two.active_domains() == ["s1"]
            assert b.lookupByName("s1").state()[0] == libvirt.VIR_DOMAIN_RUNNING
            # The host key is checked: a host whose key the lab's known_hosts does not hold is refused.
            known = lab.access.known_hosts
            known.write_text("".join(line for line in known.read_text().splitlines(keepends=True)
                                     if not line.startswith("[127.0.0.1]:62920 ")))
            with pytest.raises(VirtError, match="Host key verification failed"):
                Connections().connect(lab_host(one))
        finally:
            conns.close()


# --------------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def lc(image: GuestImage) -> Iterator[LabCluster]:
    """A TLS lab of two hosts and a cluster on it whose migrations are live (post-copy: a
    TCG guest is otherwise moved paused, see migration_policy)."""
    with Lab(2, base_port=BASE, transport="tls") as lab:
        cluster = LabCluster(lab, ClusterConfig(), migrator=Migrator(MigrationPolicy(post_copy=True)))
        try:
            cluster.up()
            cluster.storage(image)
            yield cluster
        finally:
            cluster.close()


def client_dir(where: Path, ca_files: list[Path], cert: Path, key: Path) -> Path:
    """A ``pkipath`` directory: trusted CAs, a client certificate and its key."""
    where.mkdir()
    (where / "cacert.pem").write_bytes(b"".join(p.read_bytes() for p in ca_files))
    shutil.copyfile(cert, where / "clientcert.pem")
    shutil.copyfile(key, where / "clientkey.pem")
    return where


@pytest.mark.slow
def test_tls_connections_are_verified_both_ways(lc: LabCluster, tmp_path: Path) -> None:
    lab = lc.lab
    one = lab.hosts[0]
    assert one.uri == f"qemu+tls://127.0.0.1:61720/system?pkipath={lab.root}/access/client"
    assert host_uuid(lc.driver.connect(lab_host(one))) == one.host_uuid
    assert lab.access.ca is not None
    other = LabCA(tmp_path / "other", "another CA")
    cert, key = other.issue("stranger", ["127.0.0.1"], client=True)
    plain = one.uri.split("?")[0]
    # A client whose certificate another CA signed (it trusts both CAs, so its own checks pass):
    # libvirtd refuses it during the handshake.
    stranger = client_dir(tmp_path / "stranger", [lab.access.ca.cert, other.cert], cert, key)
    with pytest.raises(VirtError, match=r"connect - on lab1: cannot open qemu\+tls://.*the host refused this "
                       "client's certificate") as refused:
        Connections().connect(Host("lab1", address=f"{plain}?pkipath={stranger}"))
    assert isinstance(refused.value.__cause__, libvirt.libvirtError)
    # A client that trusts another CA only does not accept the host's certificate.
    wary_cert, wary_key = other.issue("wary", ["127.0.0.1"], client=True)
    wary = client_dir(tmp_path / "wary", [other.cert], wary_cert, wary_key)
    with pytest.raises(VirtError, match="Failed to verify peer's certificate"):
        Connections().connect(Host("lab1", address=f"{plain}?pkipath={wary}"))


@pytest.mark.slow
def test_live_migration_between_tls_hosts_is_encrypted_and_verified(lc: LabCluster, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "flavors.virt.migration")
    lc.guest("t1", host="lab1", ha=False, dirty_mib=16)
    lc.wait_booted("t1")
    # The destination's migration certificate signed by another CA: QEMU's TLS handshake
    # fails (no plaintext fallback), the guest stays on its source, intact.
    migrate = lc.lab.hosts[1].root / "pki" / "migrate"
    kept = tmp_path / "kept"
    shutil.copytree(migrate, kept)
    other = LabCA(tmp_path / "other", "another CA")
    cert, key = other.issue("impostor", server_names(), server=True, client=True)
    for name, source in {"ca-cert.pem": other.cert, "server-cert.pem": cert, "server-key.pem": key,
                         "client-cert.pem": cert, "client-key.pem": key}.items():
        shutil.copyfile(source, migrate / name)
    with pytest.raises(FlavorError, match="certificate hasn't got a known issuer") as failed:
        lc.cluster.migrate("t1", "lab2")
    assert isinstance(failed.value.__cause__, MigrationFailed) and not failed.value.__cause__.post_copy
    assert lc.running_once(["t1"]) == {"t1": "lab1"}
    lc.check_guest("t1")
    # The lab's own certificates back: the same migration succeeds, live, and the guest's
    # memory (the dirtier's checks) and disk (its counter file) are intact on lab2.
    for name in kept.iterdir():
        shutil.copyfile(name, migrate / name.name)
    assert lc.cluster.migrate("t1", "lab2").host == "lab2"
    assert "migration of t1 from lab1 to lab2: live, encrypted (TLS)" in caplog.messages
    assert lc.running_once(["t1"]) == {"t1": "lab2"}
    lc.check_guest("t1")
    lc.cluster.delete("t1")
