"""The ``clustercore`` command (console entry point ``clustercore.cli:main``).

Local commands: ``demo``, ``manager run|status|clear-leader`` (``run --listen`` serves the
HTTP API too), ``agent`` (a host's heartbeat, through the API or the store) and
``token create --store`` (the first admin token). Every other command calls a manager's
API through :mod:`clustercore.client`: ``host``, ``vm``, ``events``, ``explain``, ``op``,
``token``, ``cluster``, ``whoami``; ``login`` and ``config`` say which API and token.

One module per concept: :mod:`~clustercore.cli.main` (the parser and ``main``; exit codes in
its docstring), :mod:`~clustercore.cli.base` (shared pieces), :mod:`~clustercore.cli.output`
(tables, ``-o json``, progress bars), :mod:`~clustercore.cli.login` (the config file and the
connection), :mod:`~clustercore.cli.hosts`, :mod:`~clustercore.cli.vms`,
:mod:`~clustercore.cli.events`, :mod:`~clustercore.cli.ops`, :mod:`~clustercore.cli.tokens`,
:mod:`~clustercore.cli.cluster`, :mod:`~clustercore.cli.manager`, :mod:`~clustercore.cli.agent`.
The ``api`` extra (httpx, rich, PyYAML, platformdirs) is imported only by the commands
that need it; without it they fail with one line naming ``pip install 'clustercore[api]'``.
"""

from clustercore.cli.base import INTERRUPTED, CliError, Parser, SignalStop, exit_code, seconds, stop_on_signals
from clustercore.cli.main import main, parser

__all__ = ["INTERRUPTED", "CliError", "Parser", "SignalStop", "exit_code", "main", "parser", "seconds",
           "stop_on_signals"]
