"""The CLI's own settings: the config file (0600), and flags over environment over file;
a missing API and a missing extra are one line each. (The API itself: test_cli_api.py.)"""

from __future__ import annotations

import argparse
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from clustercore.cli import main, parser
from clustercore.cli.login import Target, target


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conf" / "config.json"
    monkeypatch.setenv("CLUSTERCORE_CONFIG", str(path))
    monkeypatch.delenv("CLUSTERCORE_API", raising=False)
    monkeypatch.delenv("CLUSTERCORE_TOKEN", raising=False)
    return path


def test_config_set_writes_a_private_file(config: Path) -> None:
    assert main(["config", "set", "api", "https://m1:8443/"]) == 0
    assert main(["config", "set", "token", "cc_abc_secretsecret"]) == 0
    assert json.loads(config.read_text()) == {"api": "https://m1:8443", "token": "cc_abc_secretsecret"}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert stat.S_IMODE(config.parent.stat().st_mode) == 0o700
    assert main(["config", "unset", "token"]) == 0
    assert json.loads(config.read_text()) == {"api": "https://m1:8443"}
    assert stat.S_IMODE(config.stat().st_mode) == 0o600


def test_config_show_hides_the_token(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["config", "set", "api", "https://m1:8443"])
    main(["config", "set", "token", "cc_abcdefgh_verysecret"])
    capsys.readouterr()
    assert main(["config", "show", "-o", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["file"] == str(config)
    assert shown["stored"] == {"api": "https://m1:8443", "token": "cc_abcdefgh_..."}
    assert shown["effective"]["api"] == "https://m1:8443" and "verysecret" not in json.dumps(shown)
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "https://m1:8443" in out and "verysecret" not in out


def test_flags_then_environment_then_file(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config.parent.mkdir()
    config.write_text(json.dumps({"api": "https://file:1", "token": "file-token", "ca": "/pinned.pem",
                                  "pinned": True}))
    top = parser()
    assert target(top.parse_args(["host", "list"])) == Target("https://file:1", "file-token", "/pinned.pem", True)
    monkeypatch.setenv("CLUSTERCORE_TOKEN", "env-token")
    assert target(top.parse_args(["host", "list"])).token == "env-token"
    monkeypatch.setenv("CLUSTERCORE_API", "https://env:2/")
    assert target(top.parse_args(["host", "list"])) == Target("https://env:2", "env-token")  # another server: no pin
    t = target(top.parse_args(["host", "list", "--api", "https://flag:3", "--token", "flag-token", "--ca", "/ca.pem"]))
    assert t == Target("https://flag:3", "flag-token", "/ca.pem", False)
    t = target(top.parse_args(["--api", "https://file:1", "host", "list"]))  # before the subcommand works too
    assert t == Target("https://file:1", "env-token", "/pinned.pem", True)
    assert "env-token" not in repr(t)


def test_no_api_anywhere_is_a_usage_error(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["host", "list"]) == 2
    err = capsys.readouterr().err
    assert err == "clustercore: error: no API given: use --api URL, CLUSTERCORE_API, or clustercore login\n"


def test_a_broken_config_file_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config.parent.mkdir()
    config.write_text("{nope")
    assert main(["host", "list"]) == 1
    assert capsys.readouterr().err.startswith(f"clustercore: error: cannot read the config file {config}: ")


def test_an_unreachable_api_is_one_line(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["host", "list", "--api", "https://127.0.0.1:9", "--timeout", "5"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("clustercore: error: https://127.0.0.1:9: ") and err.count("\n") == 1


@pytest.mark.parametrize("args", [["host", "list"], ["vm", "create", "-f", "x.yaml"], ["events", "--follow"],
                                  ["login", "--api", "https://m:1", "--token", "t"]])
def test_without_the_api_extra_one_line_names_it(tmp_path: Path, args: list[str]) -> None:
    blocked = ("import sys; sys.modules['httpx'] = None; sys.argv[0] = 'clustercore'; "
               "from clustercore.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {"CLUSTERCORE_CONFIG": str(tmp_path / "c.json"), "CLUSTERCORE_API": "https://m:1", "PATH": "/usr/bin"}
    result = subprocess.run([sys.executable, "-c", blocked, *args], capture_output=True, text=True, timeout=60,
                            env=env, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, result.stderr
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
    assert "pip install 'clustercore[api]'" in result.stderr


@pytest.mark.parametrize("args", [
    ["host", "maintenance"], ["vm", "migrate"], ["op", "wait"], ["token", "revoke"],
    ["host", "list", "-o", "yaml"], ["vm", "stop", "w", "--wait-timeout", "0"],
    ["manager", "status", "--listen", "127.0.0.1:1"], ["manager", "run", "--cert", "c.pem"],
    ["agent", "--host", "h1"], ["agent", "--host", "h1", "--store", "memory://", "--api", "https://m:1"],
    ["agent", "--host", "h1", "--store", "memory://", "--join", "cc_join"],
    ["cluster", "frobnicate"],
])
def test_bad_arguments_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"clustercore {args[0]}")


def test_every_command_is_in_the_docs() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    top = parser()
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for name, sub in commands.choices.items():
        if name == "workload":  # vm's alias
            continue
        actions = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        choices = [c for a in sub._actions if a.dest == "action" and a.choices for c in a.choices]
        words = [f"{name} {c}" for a in actions for c in a.choices] or [f"{name} {c}" for c in choices] or [name]
        missing += [w for w in words if f"clustercore {w}" not in docs]
    assert missing == []
