"""The ``clustercore`` command: every error is one line and a non-zero exit code, never a
traceback; arguments are checked; SIGTERM and Ctrl-C stop a manager cleanly."""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from clustercore.cli import seconds
from clustercore.errors import ValidationError
from clustercore.store.etcd import parse_url
from clustercore.store.memory import MemoryStore
from clustercore.store.url import open_store

CLI = [sys.executable, "-m", "clustercore.cli"]


def run(*args: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """The command with ``args`` (or Python ``code`` that calls it), as a user runs it."""
    argv = [sys.executable, "-c", code, *args] if code else [*CLI, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def one_error(result: subprocess.CompletedProcess[str], exit_code: int = 1) -> str:
    """The only line on stderr, after checking the exit code and that nothing else came out."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == exit_code, (result.returncode, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert result.stdout == ""
    return lines[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_bad_store_url_is_one_line() -> None:
    line = one_error(run("manager", "status", "--store", "bogus://x"))
    assert line.startswith("clustercore: error: invalid store URL") and "memory://, etcd://" in line
    line = one_error(run("manager", "status", "--store", "etcd://h:notaport"))
    assert "invalid etcd URL" in line and "'h:notaport'" in line
    assert "no etcd endpoint in" in one_error(run("manager", "status", "--store", "etcd://"))


def test_etcd_without_its_extra_names_the_extra() -> None:
    blocked = ("import sys; sys.modules['requests'] = None; sys.argv[0] = 'clustercore'; "
               "from clustercore.cli import main; sys.exit(main(sys.argv[1:]))")
    line = one_error(run("manager", "status", "--store", "etcd://h", code=blocked))
    assert "pip install 'clustercore[etcd]'" in line
    line = one_error(run("agent", "--store", "etcd://h", "--host", "h1", code=blocked))
    assert "pip install 'clustercore[etcd]'" in line


def test_an_unreachable_etcd_is_one_line() -> None:
    port = free_port()
    line = one_error(run("manager", "status", "--store", f"etcd://127.0.0.1:{port}"))
    assert line == f"clustercore: error: no etcd endpoint answered: http://127.0.0.1:{port}: ConnectionError"


@pytest.mark.parametrize("args", [
    ["manager", "run", "--interval", "0"],
    ["manager", "run", "--interval", "-1"],
    ["manager", "run", "--interval", "nan"],
    ["manager", "run", "--ttl", "inf"],
    ["manager", "run", "--ttl", "0"],
    ["manager", "run", "--interval", "soon"],
    ["agent", "--store", "memory://", "--host", "h1", "--interval", "0"],
    ["agent", "--store", "memory://", "--host", "h1", "--interval", "5", "--ttl", "5"],
    ["agent", "--store", "memory://", "--host", "h1", "--ttl", "-3"],
    ["manager", "frobnicate"],
])
def test_bad_arguments_are_one_line_and_exit_2(args: list[str]) -> None:
    line = one_error(run(*args), exit_code=2)
    assert line.startswith(f"clustercore {args[0]}: error: ")


def test_seconds_take_finite_numbers_above_zero() -> None:
    assert seconds("0.2") == 0.2 and seconds("10") == 10.0
    for bad in ("0", "-0.0", "-1", "nan", "inf", "-inf", "1e400", "", "ten"):
        with pytest.raises(argparse.ArgumentTypeError):
            seconds(bad)


def test_etcd_endpoints_default_to_port_2379() -> None:
    assert parse_url("etcd://h") == ["http://h:2379"]
    assert parse_url("etcd://h1:2381, h2 ,h3/") == ["http://h1:2381", "http://h2:2379", "http://h3:2379"]
    assert parse_url("http://127.0.0.1:23790") == ["http://127.0.0.1:23790"]
    assert parse_url("etcd://[::1]") == ["http://[::1]:2379"]
    assert parse_url("etcd://[::1]:2400") == ["http://[::1]:2400"]
    assert parse_url("etcd://") == []
    for bad in ("etcd://h:x", "etcd://h:0", "etcd://h:70000", "etcd://:2379", "etcd://h/v3", "etcd://u@h"):
        with pytest.raises(ValidationError, match="etcd URL"):
            parse_url(bad)


def test_open_store() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    assert repr(open_store("etcd://e1,e2:2400", "/x/")) == "EtcdStore(http://e1:2379,http://e2:2400, prefix='/x/')"
    with pytest.raises(ValidationError, match="scheme"):
        open_store("redis://h")


class Manager:
    """``clustercore manager run`` in a subprocess; ``leads`` is set once it says it leads."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen([*CLI, "manager", "run", "--store", "memory://", *args], text=True,
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.leads = threading.Event()
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            if " leads " in line:
                self.leads.set()

    def stop(self, signum: int) -> tuple[int, float]:
        """Send ``signum`` once it leads; its exit code and how long it took to exit."""
        assert self.leads.wait(30), "".join(self.stderr)
        time.sleep(0.5)  # a few passes
        start = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(10)
        finally:
            self.process.kill()
        self.reader.join(5)
        return code, time.monotonic() - start


def test_sigterm_stops_a_manager_promptly_and_it_resigns() -> None:
    manager = Manager("--interval", "0.2", "--name", "m1")
    code, took = manager.stop(signal.SIGTERM)
    output = "".join(manager.stderr)
    assert code == 0, output
    assert took < 3, took
    assert "Traceback" not in output
    assert "resigned" in output


def test_ctrl_c_stops_a_manager_with_130_and_no_traceback() -> None:
    manager = Manager("--interval", "0.2", "--name", "m1")
    code, took = manager.stop(signal.SIGINT)
    output = "".join(manager.stderr)
    assert code == 130, output
    assert "Traceback" not in output and "KeyboardInterrupt" not in output
    assert took < 3, took


def test_sigterm_stops_an_agent() -> None:
    process = subprocess.Popen([*CLI, "agent", "--store", "memory://", "--host", "h1", "--interval", "0.2"],
                               text=True, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(1.5)  # imported and beating
    process.send_signal(signal.SIGTERM)
    try:
        _, err = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert "Traceback" not in err
