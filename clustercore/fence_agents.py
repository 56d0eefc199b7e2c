"""Fence agents: the programs and libraries that power a host off, and what a fence
device may tell them.

**Agents** (:class:`FenceAgent`, chosen by :func:`default_agent` from
``FenceDevice.agent``): ``ipmi`` (IPMI 2.0 lanplus through pyghmi, in a child process;
the recommended agent for IPMI: the password never reaches a command line), ``redfish``
(sushy; https with certificate verification unless the device's options say otherwise)
and ClusterLabs fence agents (``fence_ipmilan``, ``fence_redfish``, any ``fence_*``)
through their stdin ``key=value`` protocol (:class:`ProcessAgent`). Every child runs in
its own process group, killed whole on timeout and by :func:`stop_agents`. A private CA:
option ``ca_file`` (sushy's ``verify``; fence_redfish's ``REQUESTS_CA_BUNDLE``).

**What a device may say** (:func:`device_problem`, used by ``FenceDevice`` itself and
re-checked by the agents): no control character in any field (a newline would add a line
to a fence agent's stdin); an agent name and an address of plain characters; options only
from the agent's allow-list (:data:`AGENT_OPTIONS`; never a ``*_script``, a ``*_path`` or
anything else that makes the agent run a program), each value of the expected form.
:func:`check_device` checks at registration that the agent exists on this machine.
Credentials go to the agent only: never to argv, logs, reprs or errors.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import attrs

from clustercore.errors import ClusterError, ValidationError

if TYPE_CHECKING:
    from clustercore.model import FenceDevice

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
AGENT_RE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
#: A host name, an IPv4 or an IPv6 address (bare or in brackets): nothing an agent that
#: splits a command line on blanks (fence_ipmilan does) could take for another argument.
ADDRESS_RE = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9._:-]{0,252}|\[[0-9A-Fa-f:.]{2,62}\])\Z")
OPTION_KEY_RE = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
#: Built-in agents (always available).
BUILTIN = frozenset({"ipmi", "redfish"})
#: Option names that make a ClusterLabs agent run a program or write a file, whatever
#: the agent: refused with that reason (``*_script`` and ``*_path`` too).
RUNS_PROGRAMS = frozenset({"exec", "use_sudo", "sudo", "ssh_options", "debug", "debug_file", "telnet",
                           "command_prompt", "cmd_prompt", "session_url"})
#: Options whose values are secrets (never shown in an error).
SECRET_OPTIONS = frozenset({"hexadecimal_kg"})

_BOOL = re.compile(r"(?:0|1|yes|no|on|off|true|false)\Z")
_NUMBER = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,3})?\Z")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+,=/-]{0,254}\Z")
_FILE = re.compile(r"/[A-Za-z0-9._/-]{1,255}\Z")
_URI = re.compile(r"/[A-Za-z0-9._/-]{0,255}\Z")


def _choice(*names: str) -> re.Pattern[str]:
    return re.compile(f"(?:{'|'.join(names)})\\Z")


#: Options every ClusterLabs agent takes (fencing.py's "default" group), minus those that
#: run programs or write files.
COMMON: Mapping[str, re.Pattern[str]] = {
    "delay": _NUMBER, "power_timeout": _NUMBER, "power_wait": _NUMBER, "shell_timeout": _NUMBER,
    "login_timeout": _NUMBER, "stonith_status_sleep": _NUMBER, "retry_on": _NUMBER, "disable_timeout": _BOOL,
}
#: fence_ipmilan and its aliases (ipmitool's ``-I lanplus``, ``-C``, ``-L``...).
IPMILAN: Mapping[str, re.Pattern[str]] = {
    **COMMON, "lanplus": _BOOL, "auth": _choice("md5", "password", "none"), "cipher": re.compile(r"[0-9]{1,2}\Z"),
    "privlvl": _choice("callback", "user", "operator", "administrator"), "ipmitool_timeout": _NUMBER,
    "method": _choice("onoff", "cycle"), "target": re.compile(r"(?:0x[0-9A-Fa-f]{1,2}|[0-9]{1,3})\Z"),
    "hexadecimal_kg": re.compile(r"[0-9A-Fa-f]{1,40}\Z"),
}
#: Agents that log in over ssh/telnet (fence_virsh, fence_apc...): the plug, ssh on/off and
#: an identity file; never ``ssh_options`` (``ProxyCommand`` runs a program) or a path.
SHELL: Mapping[str, re.Pattern[str]] = {
    **COMMON, "plug": _WORD, "port": _WORD, "secure": _BOOL, "ssh": _BOOL, "identity_file": _FILE,
    "inet4_only": _BOOL, "inet6_only": _BOOL, "missing_as_off": _BOOL,
}
#: TLS switches of the agents that speak https (fence_redfish and most REST agents).
TLS: Mapping[str, re.Pattern[str]] = {"ssl": _BOOL, "ssl_secure": _BOOL, "ssl_insecure": _BOOL, "notls": _BOOL}
#: The options each agent accepts; any other ``fence_*`` agent takes :data:`GENERIC`.
AGENT_OPTIONS: Mapping[str, Mapping[str, re.Pattern[str]]] = {
    "ipmi": {},
    "redfish": {"scheme": _choice("https", "http"), "verify": _BOOL, "ca_file": _FILE},
    **dict.fromkeys(("fence_ipmilan", "fence_ipmilanplus", "fence_idrac", "fence_ilo3", "fence_ilo4", "fence_ilo5",
                     "fence_imm"), IPMILAN),
    "fence_redfish": {**COMMON, **TLS, "plug": _WORD, "redfish_uri": _URI, "systems_uri": _URI,
                      "inet4_only": _BOOL, "inet6_only": _BOOL, "ca_file": _FILE},
    "fence_virsh": SHELL,
    "fence_apc": {**SHELL, "switch": _NUMBER},
}
GENERIC: Mapping[str, re.Pattern[str]] = {**COMMON, **TLS, **SHELL}
#: Device options a ClusterLabs agent reads from its environment, not stdin: fence_redfish
#: has no CA option but speaks https through python-requests, which verifies against the
#: CA bundle that REQUESTS_CA_BUNDLE names (a private CA's file, ``ca_file``).
ENV_OPTIONS: Mapping[str, Mapping[str, str]] = {"fence_redfish": {"ca_file": "REQUESTS_CA_BUNDLE"}}


def allowed_options(agent: str) -> Mapping[str, re.Pattern[str]]:
    """The options ``agent`` accepts (none for an agent clustercore does not know)."""
    if agent in AGENT_OPTIONS:
        return AGENT_OPTIONS[agent]
    return GENERIC if agent.startswith("fence_") else {}


def _string_problem(value: object, secret: bool = False) -> tuple[str, object] | None:
    if not isinstance(value, str):
        return "must be a string", value
    limit = 2048 if secret and value.startswith("sealed:") else 1024  # a sealed 1024 is about 1,450
    if len(value) > limit:
        return f"must be at most {limit} characters", f"{len(value)} characters"
    if CONTROL_RE.search(value):
        return "must not hold control characters (newline, tab, NUL...)", "<secret>" if secret else value
    return None


def option_problem(agent: str, key: object, value: object) -> tuple[str, object] | None:
    """Why ``agent`` must not be given option ``key=value`` (None when it may)."""
    if isinstance(key, str) and CONTROL_RE.search(key):
        return "option names must not hold control characters", key
    if not isinstance(key, str) or not OPTION_KEY_RE.match(key):
        return "option names are lower-case words (a-z, 0-9, _)", key
    name = key.replace("-", "_")
    if name.endswith(("_script", "_path")) or name in RUNS_PROGRAMS:
        return "makes the agent run a program or write a file: not allowed", value
    allowed = allowed_options(agent)
    if key not in allowed:
        return f"is not an option of agent {agent} (allowed: {', '.join(sorted(allowed)) or 'none'})", value
    bad = _string_problem(value, secret=key in SECRET_OPTIONS)
    if bad is not None:
        return bad
    assert isinstance(value, str)
    if not allowed[key].match(value):
        return f"must match {allowed[key].pattern}", "<secret>" if key in SECRET_OPTIONS else value
    return None


def device_problem(device: FenceDevice) -> tuple[str, str, object] | None:
    """The first thing wrong with ``device`` as (field, problem, value), or None. The field
    is relative to the device (``address``, ``options.password_script``)."""
    checks: list[tuple[str, object, bool]] = [("agent", device.agent, False), ("address", device.address, False),
                                              ("username", device.username, False),
                                              ("password", device.password, True)]
    for name, value, secret in checks:
        bad = _string_problem(value, secret)
        if bad is not None:
            return name, *bad
    if not AGENT_RE.match(device.agent):
        return "agent", f"must match {AGENT_RE.pattern}", device.agent
    if not device.address:
        return "address", "must not be empty", device.address
    if not ADDRESS_RE.match(device.address):
        return "address", "must be a host name or an IP address", device.address
    port = device.port
    if port is not None and (isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536):
        return "port", "must be a TCP/UDP port number", port
    if isinstance(device.level, bool) or not isinstance(device.level, int) or not 1 <= device.level <= 1000:
        return "level", "must be an integer in [1, 1000]", device.level
    if not isinstance(device.options, Mapping):
        return "options", "must be a mapping of strings", device.options
    for key, value in device.options.items():
        bad = option_problem(device.agent, key, value)
        if bad is not None:
            return f"options.{key}", *bad
    return None


def validate_device(device: FenceDevice, path: str = "") -> None:
    """Raise ValidationError naming the field (under ``path``) when ``device`` is invalid."""
    problem = device_problem(device)
    if problem is not None:
        field, what, value = problem
        raise ValidationError("fence device", f"{path}.{field}" if path else field, what, value)


def check_device(device: FenceDevice, path: str = "") -> None:
    """At registration: the device is valid and its agent exists on this machine (the
    built-in ``ipmi`` and ``redfish`` always; ``fence_*`` programs on ``PATH``).
    ValidationError naming ``agent`` (under ``path``, e.g. ``fence_devices[0]``) otherwise."""
    validate_device(device, path)
    if device.agent in BUILTIN or (device.agent.startswith("fence_") and shutil.which(device.agent)):
        return
    where = "is not installed on this machine (no such program on PATH)" if device.agent.startswith("fence_") \
        else "is not a fence agent (ipmi, redfish or a fence_* program)"
    raise ValidationError("fence device", f"{path}.agent" if path else "agent", where, device.agent)


# --------------------------------------------------------------------------- agents


class AgentError(ClusterError):
    """A fence agent failed (the message never holds a credential)."""


class FenceAgent(Protocol):
    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        """``action`` is on, off, reboot or status; returns "on" or "off" for status."""


ACTIONS = ("on", "off", "reboot", "status")


def _redact(text: str, device: FenceDevice) -> str:
    for secret in (device.password, *(device.options.get(k, "") for k in SECRET_OPTIONS)):
        if secret:
            text = text.replace(secret, "***")
    return text


def _recheck(device: FenceDevice, action: str, who: str) -> None:
    """The agents' own check: a device built around validation is refused, not run."""
    if action not in ACTIONS:
        raise AgentError(f"{who}: unknown action {action!r}")
    problem = device_problem(device)
    if problem is not None:
        raise AgentError(f"{who}: refusing an invalid fence device: {problem[0]} {problem[1]}")


_running: set[subprocess.Popen[str]] = set()
_running_lock = threading.Lock()


def _kill_group(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def stop_agents() -> None:
    """Kill every running agent's process group (the manager calls it when it stops;
    also run at exit): no ipmitool is left behind."""
    with _running_lock:
        procs = list(_running)
    for proc in procs:
        if proc.returncode is None:  # not reaped yet, so its group id is still its own
            _kill_group(proc)


atexit.register(stop_agents)


def run_agent(argv: list[str], stdin: str, timeout: float,
              env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a fence agent in its own process group (a new session), ``stdin`` its only
    input (``env`` added to this process's environment); on timeout the whole group is
    killed (the agent and whatever it started)."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, **env} if env else None)
    with _running_lock:
        _running.add(proc)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.communicate()
        raise
    finally:
        with _running_lock:
            _running.discard(proc)
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


@attrs.frozen
class ProcessAgent:
    """A ClusterLabs fence agent (``fence_ipmilan``...), options on stdin as ``key=value``
    lines; exit 0 is success, and for status 0 means on and 2 off. The command line is
    the program's name alone."""

    command: str

    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        _recheck(device, action, self.command)
        lines = {"action": action, "ip": device.address, "username": device.username, "password": device.password}
        if device.port is not None:
            lines["ipport"] = str(device.port)
        environ = ENV_OPTIONS.get(self.command, {})
        lines.update((k, v) for k, v in device.options.items() if k not in environ)
        env = {environ[k]: v for k, v in device.options.items() if k in environ}
        if any(CONTROL_RE.search(f"{k}{v}") for k, v in lines.items()):  # unreachable after _recheck
            raise AgentError(f"{self.command} {action}: refusing a control character on stdin")
        stdin = "".join(f"{k}={v}\n" for k, v in lines.items() if v != "")
        try:
            run = run_agent([self.command], stdin, timeout, env)
        except subprocess.TimeoutExpired:
            raise AgentError(f"{self.command} {action}: no answer in {timeout:.0f} s") from None
        except OSError as exc:
            raise AgentError(f"{self.command}: cannot run: {exc}") from None
        if action == "status":
            if run.returncode == 0:
                return "on"
            if run.returncode == 2:
                return "off"
        elif run.returncode == 0:
            return ""
        text = [line for line in (run.stderr or run.stdout).strip().splitlines()  # the cause, not fencing.py's
                if line.strip() and "Please use '-h' for usage" not in line]  # closing usage hint
        detail = _redact(text[-1] if text else "", device)
        raise AgentError(f"{self.command} {action}: exit {run.returncode}: {detail}")


@attrs.frozen
class IpmiAgent:
    """IPMI over LAN (lanplus) through pyghmi, in a child process per action: pyghmi keeps
    sessions and an I/O thread in process-wide state and a call can hang, so the child
    gives every action a hard timeout and a clean session. Credentials go on stdin (as
    JSON); the command line is ``python -m clustercore.fence_agents``."""

    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        _recheck(device, action, "ipmi")
        request = {"address": device.address, "port": device.port or 623, "username": device.username,
                   "password": device.password, "action": action}
        try:
            run = run_agent([sys.executable, "-m", "clustercore.fence_agents"], json.dumps(request), timeout)
        except subprocess.TimeoutExpired:
            raise AgentError(f"ipmi {action} at {device.address}: no answer in {timeout:.0f} s") from None
        if run.returncode != 0:
            detail = (run.stderr.strip().splitlines() or ["no detail"])[-1]
            raise AgentError(f"ipmi {action} at {device.address}: {_redact(detail, device)}")
        return run.stdout.strip()


def _ipmi_child() -> None:
    """``python -m clustercore.fence_agents``: one pyghmi action, the request as JSON on stdin."""
    from pyghmi.ipmi.command import Command

    request = json.load(sys.stdin)
    cmd = Command(bmc=request["address"], userid=request["username"], password=request["password"],
                  port=request["port"], keepalive=False)
    action = request["action"]
    if action == "status":
        print(cmd.get_power()["powerstate"])
    else:
        cmd.set_power({"on": "on", "off": "off", "reboot": "reset"}[action], wait=False)


@attrs.frozen
class RedfishAgent:
    """Redfish through sushy: the first system of the service. https with the server's
    certificate verified (against the CA in ``ca_file``, else the system's CAs), unless the
    device says ``scheme: http`` or ``verify: false``."""

    def power(self, device: FenceDevice, action: str, timeout: float) -> str:
        _recheck(device, action, "redfish")
        import sushy

        try:
            scheme = device.options.get("scheme", "https")
            verify: bool | str = device.options.get("verify", "true") in ("1", "yes", "on", "true")
            if verify and "ca_file" in device.options:
                verify = device.options["ca_file"]
            port = f":{device.port}" if device.port else ""
            root = sushy.Sushy(f"{scheme}://{device.address}{port}/redfish/v1", username=device.username,
                               password=device.password, verify=verify, read_timeout=timeout,
                               connect_timeout=timeout)
            system = root.get_system(root.get_system_collection().members_identities[0])
            if action == "status":
                return "on" if system.power_state == sushy.POWER_STATE_ON else "off"
            reset = {"on": sushy.RESET_ON, "off": sushy.RESET_FORCE_OFF, "reboot": sushy.RESET_FORCE_RESTART}[action]
            system.reset_system(reset)
            return ""
        except Exception as exc:  # sushy raises many kinds; all mean the same here
            raise AgentError(f"redfish {action} at {device.address}: {_redact(str(exc), device)}") from None


def default_agent(name: str) -> FenceAgent:
    """The agent for ``FenceDevice.agent``. For IPMI prefer ``ipmi`` (pyghmi) over
    ``fence_ipmilan``, which hands the password to ipmitool as ``-P`` on its command line."""
    if name == "ipmi":
        return IpmiAgent()
    if name == "redfish":
        return RedfishAgent()
    if name.startswith("fence_") and AGENT_RE.match(name):
        return ProcessAgent(name)
    raise AgentError(f"unknown fence agent {name!r} (fence_* programs, ipmi, redfish)")


if __name__ == "__main__":
    try:
        _ipmi_child()
    except Exception as exc:
        sys.exit(f"{type(exc).__name__}: {exc}")
