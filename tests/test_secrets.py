"""Fence passwords sealed at rest (issue 18, item 2; clustercore.secrets): never in clear in
the store or its events, opened only for the fence agent, and re-sealed under a new cluster
key by ``clustercore secrets rotate`` while the managers keep fencing."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustercore import Cluster, FakeClock, Host
from clustercore.errors import ValidationError
from clustercore.fence_agents import FenceAgent
from clustercore.fencing import FencePolicy, Fencer
from clustercore.model import FenceDevice
from clustercore.secrets import PREFIX, Secrets, SecretsError, new_key
from clustercore.store.base import Store
from clustercore.store.etcd import EtcdStore
from clustercore.testing import EtcdCluster

A, B = new_key(), new_key()


@given(st.text(min_size=1, max_size=300))
def test_what_is_sealed_opens_to_itself_and_shows_nothing_of_it(plain: str) -> None:
    sealed = Secrets((A,)).seal(plain)
    assert sealed.startswith(PREFIX) and Secrets((A,)).open(sealed) == plain
    assert Secrets((A,)).seal(sealed) == sealed  # sealed once
    if len(plain) >= 4:
        assert plain not in sealed


def test_keys_rotation_and_refusals(tmp_path: Path) -> None:
    old = Secrets((A,)).seal("pw")
    assert Secrets((B, A)).open(old) == "pw"  # the old key still opens during a rotation
    new = Secrets((B, A)).rotate(old)
    assert Secrets((B,)).open(new) == "pw"
    with pytest.raises(SecretsError, match="none of the cluster keys"):
        Secrets((A,)).open(new)
    with pytest.raises(SecretsError, match="no cluster key"):
        Secrets().open(new)
    assert Secrets().open("in clear") == "in clear"  # from before sealing: opens as itself
    with pytest.raises(ValidationError) as failed:
        Secrets().seal("pw", "fence_devices[0].password")
    assert failed.value.field == "fence_devices[0].password" and "pw" not in str(failed.value)
    with pytest.raises(SecretsError, match="no Fernet key"):
        Secrets(("short",)).seal("pw")
    assert A not in repr(Secrets((A,)))
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"# the cluster key\n{B}\n\n{A}\n")
    assert Secrets.from_env({"CLUSTERCORE_SECRETS_KEY_FILE": str(keyfile)}).keys == (B, A)
    assert Secrets.from_env({"CLUSTERCORE_SECRETS_KEY": A}).keys == (A,)
    assert Secrets.from_env({}).keys == ()


class Recorder:
    """A fence agent that remembers the passwords it was handed."""

    def __init__(self) -> None:
        self.passwords: list[str] = []

    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        self.passwords.append(device.password)
        return "off"


def everything(store: Store) -> bytes:
    return b"\n".join(kv.key.encode() + b"=" + kv.value for kv in store.list(""))


def bmc(password: str) -> dict[str, object]:
    return {"agent": "ipmi", "address": "10.0.0.9", "username": "admin", "password": password}


def test_a_registered_password_is_sealed_in_the_store_and_opened_only_for_the_agent() -> None:
    password = f"hunter2-{uuid.uuid4().hex}"
    cluster = Cluster(clock=FakeClock(), secrets=Secrets((A,)))
    cluster.register_host({"name": "h1", "address": "a", "fence_devices": [bmc(password)]})
    cluster.update_host("h1", {"labels": {"rack": "r1"}})
    cluster.register_host({"name": "h2", "address": "b"})
    stored = cluster.host("h1").fence_devices[0].password
    assert stored.startswith(PREFIX) and password.encode() not in everything(cluster.store)
    assert password not in repr(cluster.host("h1")) and password not in repr(cluster.query_events())
    recorder = Recorder()
    agent: FenceAgent = recorder
    fencer = Fencer(agent_for=lambda name: agent, sleep=lambda s: None, secrets=cluster.writer.secrets)
    fencer.run(cluster.host("h1"), FencePolicy(confirm_timeout=1))
    assert recorder.passwords and set(recorder.passwords) == {password}
    wrong = Fencer(agent_for=lambda name: agent, sleep=lambda s: None, secrets=Secrets((B,)))
    with pytest.raises(Exception, match="none of the cluster keys") as failed:  # FencingFailed, with why
        wrong.run(cluster.host("h1"), FencePolicy(confirm_timeout=1, retries=0))
    assert password not in str(failed.value)


def test_an_etcd_cluster_without_a_key_refuses_a_password(etcd: EtcdCluster) -> None:
    store = EtcdStore(etcd.url, prefix=f"/nokey-{uuid.uuid4().hex[:6]}/")
    cluster = Cluster(store=store, clock=FakeClock(), secrets=Secrets())
    with pytest.raises(ValidationError, match="no cluster key") as failed:
        cluster.register_host({"name": "h1", "address": "a", "fence_devices": [bmc("pw")]})
    assert failed.value.field == "fence_devices[0].password"
    cluster.register_host({"name": "h2", "address": "b"})  # no password: nothing to seal
    store.close()


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with EtcdCluster(1, base_port=23950) as cluster:
        yield cluster


@pytest.mark.slow
def test_rotate_reseals_every_host_under_the_new_key(etcd: EtcdCluster, tmp_path: Path) -> None:
    prefix = f"/rotate-{uuid.uuid4().hex[:6]}/"
    password = f"rotate-{uuid.uuid4().hex}"
    store = EtcdStore(etcd.url, prefix=prefix)
    cluster = Cluster(store=store, clock=FakeClock(), secrets=Secrets((A,)))
    for name in ("h1", "h2", "h3"):
        cluster.register_host({"name": name, "address": name, "fence_devices": [bmc(password)]})
    keys = tmp_path / "keys"
    keys.write_text(f"{B}\n{A}\n")  # the new key first, the old one still there
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLUSTERCORE_SECRETS")}
    done = subprocess.run([sys.executable, "-m", "clustercore.cli", "secrets", "rotate", "--store", etcd.url,
                           "--prefix", prefix], env={**env, "CLUSTERCORE_SECRETS_KEY_FILE": str(keys)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "3 host(s) re-sealed" in done.stdout, done.stderr
    hosts: dict[str, Host] = {n: v.value for n, v in cluster.state.hosts().items()}
    for host in hosts.values():
        sealed = host.fence_devices[0].password
        assert Secrets((B,)).open(sealed) == password
        with pytest.raises(SecretsError):
            Secrets((A,)).open(sealed)
    assert password.encode() not in everything(store)
    recorder = Recorder()
    agent: FenceAgent = recorder
    Fencer(agent_for=lambda name: agent, sleep=lambda s: None, secrets=Secrets((B,))).run(
        hosts["h1"], FencePolicy(confirm_timeout=1))
    assert set(recorder.passwords) == {password}  # fencing goes on with the new key alone
    store.close()
