"""The etcd store on a secured etcd (issue 18, item 1): a real 3-member etcd whose clients
must speak TLS with a certificate from its CA and authenticate as an etcd user. The store
contract passes there; each wrong credential (CA, client certificate, password, none) and
a plain URL to it fail with one line that names what was wrong, from Python and from the
``clustercore`` command; a token etcd no longer accepts is renewed. Ports 23920..23925."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from clustercore.certs import LabCA
from clustercore.errors import StoreAccessError, StoreError, ValidationError
from clustercore.store.etcd import EtcdStore, parse_url
from clustercore.store.etcd_access import EtcdAccess
from clustercore.testing import EtcdCluster

from . import test_store_etcd as plain

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(3, base_port=23920, tls=True, auth=True) as cluster:
        yield cluster


def fresh(etcd: EtcdCluster, access: EtcdAccess | None = None) -> EtcdStore:
    return EtcdStore(etcd.url, prefix=f"/secure/{uuid.uuid4().hex[:8]}/", access=access or etcd.access())


class TestSecureEtcdStore(plain.TestEtcdStore):
    """The store contract, with the plain etcd's real-time lease tests."""

    @pytest.fixture
    def store(self, etcd: EtcdCluster) -> Iterator[EtcdStore]:
        store = fresh(etcd)
        yield store
        store.close()

    @pytest.fixture
    def fresh_store(self, etcd: EtcdCluster) -> Callable[[], EtcdStore]:
        return lambda: fresh(etcd)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> LabCA:
    """Another CA: its certificates are no one etcd knows."""
    return LabCA(tmp_path_factory.mktemp("stranger"))


def wrong(etcd: EtcdCluster, stranger: LabCA) -> dict[str, tuple[str, EtcdAccess]]:
    """URL and access for each way of getting it wrong, with the words the error must say."""
    good = etcd.access()
    cert, key = stranger.issue("root", client=True, common_name=False)
    return {
        f"does not verify against the CA {stranger.cert}": (etcd.url, attrs.evolve(good, ca=str(stranger.cert))),
        f"etcd refused the client certificate {cert}": (etcd.url, attrs.evolve(good, cert=str(cert), key=str(key))),
        "it needs a client certificate": (etcd.url, attrs.evolve(good, cert=None, key=None)),
        "authentication as 'root' failed: invalid user or password": (etcd.url, attrs.evolve(good, password="nope")),
        "etcd requires authentication": (etcd.url, attrs.evolve(good, user=None, password=None)),
        "an etcd that speaks TLS refuses plain requests": (etcd.url.replace("etcds://", "etcd://"), EtcdAccess()),
    }


def test_each_wrong_credential_fails_naming_what_was_wrong(etcd: EtcdCluster, stranger: LabCA) -> None:
    for words, (url, access) in wrong(etcd, stranger).items():
        with pytest.raises(StoreError) as failed:
            EtcdStore(url, prefix="/secure/x/", access=access).get("k")
        assert words in str(failed.value), (words, str(failed.value))
        assert etcd.root_password not in str(failed.value)


def test_the_command_says_it_in_one_line(etcd: EtcdCluster, stranger: LabCA, tmp_path: Path) -> None:
    """``clustercore manager run`` with each wrong credential: exit 1 at once, one line on
    stderr (a store that is down is waited for; one that refuses us is a configuration to mend)."""
    for words, (url, access) in wrong(etcd, stranger).items():
        args = [sys.executable, "-m", "clustercore.cli", "manager", "run", "--store", url, "--prefix", "/secure/"]
        for option, value in (("--etcd-ca", access.ca), ("--etcd-cert", access.cert), ("--etcd-key", access.key),
                              ("--etcd-user", access.user)):
            if value:
                args += [option, value]
        if access.password is not None:
            password = tmp_path / "password"
            password.write_text(access.password + "\n")
            args += ["--etcd-password-file", str(password)]
        done = subprocess.run(args, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                              env={"PATH": "/usr/bin:/bin"})
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and len(lines) == 1 and words in lines[0], (words, done.returncode, done.stderr)
    # and with everything right, the status of the (empty) cluster
    good = etcd.access()
    (tmp_path / "password").write_text(good.password + "\n")
    done = subprocess.run([sys.executable, "-m", "clustercore.cli", "manager", "status", "--store", etcd.url,
                           "--prefix", "/secure/", "--etcd-ca", good.ca, "--etcd-cert", good.cert, "--etcd-key",
                           good.key, "--etcd-user", "root", "--etcd-password-file", str(tmp_path / "password")],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr


def test_a_token_etcd_no_longer_accepts_is_renewed(etcd: EtcdCluster) -> None:
    store = fresh(etcd)
    store.put("k", b"1")
    store._session.headers["Authorization"] = "expired.token"  # as after etcd's token TTL
    assert store.get("k") is not None and store._session.headers["Authorization"] != "expired.token"
    store.close()


def test_urls_and_access_are_checked_before_anything_is_sent(tmp_path: Path) -> None:
    assert parse_url("etcds://a:1,b") == ["https://a:1", "https://b:2379"]
    assert parse_url("https://a:1") == ["https://a:1"] and parse_url("etcd+https://a") == ["https://a:2379"]
    assert parse_url("etcd://a:1") == ["http://a:1"] and parse_url("http://a") == ["http://a:2379"]
    for url, field in (("etcd://root:secret@a:1", "user"), ("ftp://a:1", "scheme")):
        with pytest.raises(ValidationError) as failed:
            parse_url(url)
        assert failed.value.field == field and "secret" not in str(failed.value)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    for access, tls, field in ((EtcdAccess(ca=str(ca)), False, "url"), (EtcdAccess(cert=str(ca)), True, "key"),
                               (EtcdAccess(ca=str(tmp_path / "none")), True, "ca"),
                               (EtcdAccess(user="root"), True, "password"), (EtcdAccess(password="p"), True, "user")):
        with pytest.raises(ValidationError) as failed:
            access.check(tls)
        assert failed.value.field == field, (access, failed.value)
    assert "s3cret" not in repr(EtcdAccess(user="root", password="s3cret"))
    password = tmp_path / "pw"
    password.write_text("from-file\n")
    read = EtcdAccess.from_options(user="root", password_file=str(password), environ={"CLUSTERCORE_ETCD_CA": str(ca)})
    assert (read.ca, read.user, read.password) == (str(ca), "root", "from-file")
    env = EtcdAccess.from_options(environ={"CLUSTERCORE_ETCD_USER": "m", "CLUSTERCORE_ETCD_PASSWORD": "p"})
    assert (env.user, env.password) == ("m", "p")
    with pytest.raises(ValidationError, match="cannot be read"):
        EtcdAccess.from_options(password_file=str(tmp_path / "missing"))


def test_the_documented_roles_an_agent_writes_only_its_own_heartbeat(etcd: EtcdCluster) -> None:
    """docs/manager.md's RBAC: a manager reads and writes the cluster's prefix; a host's
    agent may only write its own heartbeat key (on a lease of its own) and read its own
    host record (a watchdog's release), nothing else."""
    prefix = f"/rbac-{uuid.uuid4().hex[:6]}/"
    etcd.add_user("manager-" + prefix[1:-1], "mpw", [("READWRITE", prefix, True)])
    etcd.add_user("agent-" + prefix[1:-1], "apw", [("WRITE", prefix + "heartbeats/node1", False),
                                                   ("READ", prefix + "hosts/node1", False)])
    manager = EtcdStore(etcd.url, prefix=prefix, access=attrs.evolve(etcd.access(), user="manager-" + prefix[1:-1],
                                                                     password="mpw"))
    agent = EtcdStore(etcd.url, prefix=prefix, access=attrs.evolve(etcd.access(), user="agent-" + prefix[1:-1],
                                                                   password="apw"))
    lease = agent.grant(5)
    agent.put("heartbeats/node1", b"beat", lease=lease)
    agent.keepalive(lease)
    assert manager.get("heartbeats/node1") is not None and manager.get("heartbeats/node1").value == b"beat"
    manager.put("hosts/node1", b"{}")
    manager.put("hosts/node2", b"{}")
    assert agent.get("hosts/node1") is not None
    for forbidden in (lambda: agent.put("heartbeats/node2", b"forged"), lambda: agent.get("hosts/node2"),
                      lambda: agent.put("hosts/node1", b"taken over"), lambda: agent.get("heartbeats/node1")):
        with pytest.raises(StoreAccessError, match="permission denied"):
            forbidden()
    outside = EtcdStore(etcd.url, prefix="/elsewhere/", access=manager.access)
    with pytest.raises(StoreAccessError, match="permission denied"):
        outside.get("anything")
    for store in (manager, agent, outside):
        store.close()
