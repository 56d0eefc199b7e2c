"""Hostile fence device input (issue 14, items 1 and 9): every field that reaches a fence
agent's stdin is free of control characters, options are allow-listed per agent, the
agents re-check what they are given, a timed-out agent dies with its whole process group,
the password stays off command lines, and Redfish verifies https by default."""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clustercore import Cluster, FakeClock, Plugins
from clustercore import fence_agents as fa
from clustercore.errors import ValidationError
from clustercore.fencing import AgentError, IpmiAgent, ProcessAgent, RedfishAgent, check_device, default_agent
from clustercore.model import FenceDevice, Host
from clustercore.testing import FakeFlavor

GOOD = {"agent": "fence_ipmilan", "address": "10.0.0.11", "username": "admin", "password": "s3cret",
        "options": {"lanplus": "1"}}


def cluster() -> Cluster:
    return Cluster(plugins=Plugins([FakeFlavor("fake")], entry_points=False), clock=FakeClock())


def attacks(marker: Path) -> list[tuple[dict[str, Any], str]]:
    """The five variants that ran a command before: each would ``touch`` the marker."""
    run = f"password_script=touch {marker}"
    return [
        ({**GOOD, "address": f"10.0.0.11\n{run}"}, "fence_devices[0].address"),
        ({**GOOD, "username": f"admin\n{run}"}, "fence_devices[0].username"),
        ({**GOOD, "password": f"s3cret\n{run}"}, "fence_devices[0].password"),
        ({**GOOD, "options": {"password_script": f"touch {marker}"}}, "fence_devices[0].options.password_script"),
        ({**GOOD, "options": {"ipmitool_path": str(marker)}}, "fence_devices[0].options.ipmitool_path"),
    ]


@pytest.mark.parametrize("n", range(5))
def test_each_injection_is_refused_naming_the_field_and_nothing_is_written(tmp_path: Path, n: int) -> None:
    marker = tmp_path / "ran"
    device, field = attacks(marker)[n]
    c = cluster()
    with pytest.raises(ValidationError) as info:
        c.register_host({"name": "h1", "capacity": {"cpu": 4, "memory": 4096}, "fence_devices": [device]})
    assert info.value.field == field
    assert info.value.kind == "host"
    assert "s3cret" not in str(info.value)  # the password is never echoed, even when it is the culprit
    assert c.store.list("hosts/") == []
    assert not c.hosts()
    assert not marker.exists()


def test_a_typed_fence_device_is_checked_too() -> None:
    with pytest.raises(ValidationError) as info:
        FenceDevice("fence_ipmilan", "10.0.0.1", password="pw\nipmitool_path=/tmp/x")
    assert info.value.field == "password" and "pw" not in str(info.value)
    with pytest.raises(ValidationError) as info:
        Host("h1", fence_devices=(FenceDevice("fence_ipmilan\n", "10.0.0.1"),))
    assert info.value.field == "agent"


@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        ({"agent": "fence_ipmilan\n"}, "agent", "must match"),  # `$` would have let it through
        ({"address": ""}, "address", "empty"),
        ({"address": "10.0.0.1 -I open"}, "address", "host name"),  # fence_ipmilan splits its command on blanks
        ({"address": "-oProxyCommand=x"}, "address", "host name"),
        ({"username": "ad\tmin"}, "username", "control"),
        ({"password": "pw\x7f"}, "password", "control"),
        ({"options": {"lanplus\n": "1"}}, "options.lanplus\n", "control"),
        ({"options": {"lanplus": "1\nexec=id"}}, "options.lanplus", "control"),
        ({"options": {"ipmitool-path": "/bin/sh"}}, "options.ipmitool-path", "lower-case"),
        ({"options": {"sudo_path": "/bin/sh"}}, "options.sudo_path", "run a program"),
        ({"options": {"use_sudo": "1"}}, "options.use_sudo", "run a program"),
        ({"options": {"exec": "id"}}, "options.exec", "run a program"),
        ({"options": {"ip": "10.6.6.6"}}, "options.ip", "not an option of agent fence_ipmilan"),
        ({"options": {"cipher": "3 -o x"}}, "options.cipher", "must match"),
        ({"agent": "fence_virsh", "options": {"ssh_options": "-o ProxyCommand=id"}}, "options.ssh_options",
         "run a program"),
        ({"agent": "ipmi", "options": {"lanplus": "1"}}, "options.lanplus", "allowed: none"),
        ({"agent": "redfish", "options": {"verify": "maybe"}}, "options.verify", "must match"),
    ],
)
def test_each_field_is_checked(change: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        FenceDevice.from_dict({**GOOD, **change}, "fence_devices[0]")
    assert info.value.field == f"fence_devices[0].{field}"
    assert problem in str(info.value)


def test_known_options_of_each_agent_pass() -> None:
    for data in (GOOD, {"agent": "ipmi", "address": "bmc-1", "port": 623},
                 {"agent": "redfish", "address": "[fe80::1]", "options": {"scheme": "http", "verify": "false"}},
                 {"agent": "fence_redfish", "address": "bmc.example.com", "options": {"ssl_insecure": "1",
                                                                                      "systems_uri": "/redfish/v1/1"}},
                 {"agent": "fence_virsh", "address": "kvm1", "options": {"plug": "guest-1", "secure": "1",
                                                                          "identity_file": "/root/.ssh/id_ed25519"}},
                 {"agent": "fence_apc", "address": "pdu-a", "options": {"plug": "3", "switch": "1"}},
                 {**GOOD, "options": {"lanplus": "1", "cipher": "17", "privlvl": "operator", "method": "onoff"}}):
        FenceDevice.from_dict(data)


def test_check_device_wants_an_agent_that_exists_here() -> None:
    for agent in ("ipmi", "redfish", "fence_ipmilan"):
        check_device(FenceDevice(agent, "10.0.0.1"))
    for agent in ("fence_nonexistent_agent", "ipmitool"):
        with pytest.raises(ValidationError) as info:
            check_device(FenceDevice(agent, "10.0.0.1"), "fence_devices[0]")
        assert info.value.field == "fence_devices[0].agent"


# --------------------------------------------------------------------------- the agents


def script(path: Path, body: str) -> Path:
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def bypassed(**fields: str) -> FenceDevice:
    """A device whose fields were changed around validation (as a corrupt store value
    or a careless caller could)."""
    device = FenceDevice("fence_ipmilan", "10.0.0.1", username="admin", password="s3cret")
    for name, value in fields.items():
        object.__setattr__(device, name, value)
    return device


@pytest.mark.parametrize("field", ["address", "username", "password", "agent"])
def test_an_agent_refuses_a_device_built_around_validation(tmp_path: Path, field: str) -> None:
    seen = tmp_path / "stdin"
    agent = ProcessAgent(str(script(tmp_path / "fence_record", f"cat > {seen}\n")))
    agent.power(FenceDevice("fence_ipmilan", "10.0.0.1", username="admin", password="s3cret",
                            options={"lanplus": "1"}), "off", 10)
    assert seen.read_text() == "action=off\nip=10.0.0.1\nusername=admin\npassword=s3cret\nlanplus=1\n"
    seen.unlink()
    with pytest.raises(AgentError, match="refusing an invalid fence device") as info:
        agent.power(bypassed(**{field: "x\npassword_script=id"}), "off", 10)
    assert "s3cret" not in str(info.value)
    assert not seen.exists()  # the agent never ran
    device = bypassed()
    object.__setattr__(device, "options", {"ipmitool_path": "/tmp/evil"})
    with pytest.raises(AgentError, match=r"options\.ipmitool_path"):
        agent.power(device, "off", 10)
    with pytest.raises(AgentError):
        IpmiAgent().power(bypassed(password="x\ny"), "status", 10)
    assert not seen.exists()


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie no longer runs
    except FileNotFoundError:
        return True


def wait_for(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def hanging_agent(tmp_path: Path) -> tuple[ProcessAgent, Path]:
    pidfile = tmp_path / "child.pid"
    agent = script(tmp_path / "fence_hang", f"sleep 1000 &\necho $! > {pidfile}.tmp\nmv {pidfile}.tmp {pidfile}\n"
                                            "wait\n")
    return ProcessAgent(str(agent)), pidfile


def test_a_timeout_kills_the_agents_whole_process_group(tmp_path: Path) -> None:
    agent, pidfile = hanging_agent(tmp_path)
    started = time.monotonic()
    with pytest.raises(AgentError, match="no answer in 1 s"):
        agent.power(FenceDevice("fence_ipmilan", "10.0.0.1"), "status", 1)
    assert time.monotonic() - started < 5
    child = int(pidfile.read_text())
    assert wait_for(lambda: gone(child)), "the agent's child (ipmitool's stand-in) was orphaned"


def test_stopping_the_manager_kills_running_agents(tmp_path: Path) -> None:
    agent, pidfile = hanging_agent(tmp_path)
    errors: list[Exception] = []

    def fence() -> None:
        try:
            agent.power(FenceDevice("fence_ipmilan", "10.0.0.1"), "off", 600)
        except AgentError as exc:
            errors.append(exc)

    thread = threading.Thread(target=fence)
    thread.start()
    assert wait_for(pidfile.exists)
    cluster().controller.fencer.stop()
    thread.join(10)
    assert not thread.is_alive() and errors  # the agent died: an exit, not a success
    assert wait_for(lambda: gone(int(pidfile.read_text())))


def test_the_password_never_reaches_a_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], str]] = []

    def run(argv: list[str], stdin: str, timeout: float, env: Any = None) -> Any:
        calls.append((argv, stdin))
        raise OSError("not run")

    monkeypatch.setattr(fa, "run_agent", run)
    device = FenceDevice("fence_ipmilan", "10.0.0.1", username="admin", password="s3cret")
    for agent in (ProcessAgent("fence_ipmilan"), IpmiAgent()):
        with pytest.raises((AgentError, OSError)):
            agent.power(device, "status", 5)
    assert len(calls) == 2
    assert all("s3cret" not in " ".join(argv) and "s3cret" in stdin for argv, stdin in calls)
    assert isinstance(default_agent("ipmi"), IpmiAgent)


def test_redfish_is_https_with_verification_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    import sushy

    seen: list[tuple[str, object]] = []

    def fake(url: str, **kwargs: Any) -> Any:
        seen.append((url, kwargs["verify"]))
        raise RuntimeError("no service here")

    monkeypatch.setattr(sushy, "Sushy", fake)
    for options in ({}, {"verify": "false"}, {"scheme": "http"}):
        with pytest.raises(AgentError):
            RedfishAgent().power(FenceDevice("redfish", "bmc1", port=8443, options=options), "status", 5)
    assert seen == [("https://bmc1:8443/redfish/v1", True), ("https://bmc1:8443/redfish/v1", False),
                    ("http://bmc1:8443/redfish/v1", True)]


# --------------------------------------------------------------------------- hypothesis

FIELDS = ("agent", "address", "port", "username", "password", "level", "options")
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
                           max_leaves=10)
option_keys = st.sampled_from(sorted({k for m in fa.AGENT_OPTIONS.values() for k in m} | {"password_script",
                                                                                           "ipmitool_path"}))
near_valid = st.fixed_dictionaries(
    {"agent": st.sampled_from([*fa.AGENT_OPTIONS, "fence_apc_snmp"]) | st.text(max_size=20),
     "address": st.sampled_from(["10.0.0.1", "bmc-1", "[::1]"]) | st.text(max_size=30)},
    optional={"port": st.integers(-2, 70000) | json_values, "username": st.text(max_size=10) | json_values,
              "password": st.text(max_size=10), "level": st.integers(-2, 2**70) | json_values,
              "options": st.dictionaries(option_keys | st.text(max_size=10), st.text(max_size=10) | json_values,
                                         max_size=4)})
anything = st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=8) | st.integers(), json_values, max_size=8)


@settings(max_examples=400, deadline=None)
@given(near_valid | anything | json_values)
def test_any_input_is_a_fence_device_or_a_validation_error(data: object) -> None:
    started = time.monotonic()
    try:
        device = FenceDevice.from_dict(data, "fence_devices[0]")
    except ValidationError as exc:
        assert exc.field.startswith("fence_devices[0]")
    else:
        assert fa.device_problem(device) is None
        assert FenceDevice.from_dict(device.to_dict()) == device
        assert not any(c in "".join([device.address, device.username, device.password, *device.options.values()])
                       for c in "\n\r\x00")
    assert time.monotonic() - started < 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20), st.text(max_size=30), st.text(max_size=10), st.text(max_size=10),
       st.dictionaries(option_keys | st.text(max_size=10), st.text(max_size=10), max_size=3))
def test_a_typed_device_is_valid_or_a_validation_error(agent: str, address: str, username: str, password: str,
                                                        options: dict[str, str]) -> None:
    started = time.monotonic()
    try:
        FenceDevice(agent, address, username=username, password=password, options=options)
    except ValidationError as exc:
        assert exc.field.split(".")[0] in FIELDS
        assert exc.field != "password" or exc.value == "<secret>"
    assert time.monotonic() - started < 1


def test_no_agent_is_left_running() -> None:
    assert not fa._running
