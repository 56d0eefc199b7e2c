"""Stop the lab's running labs when the process gets SIGTERM or SIGINT (Ctrl-C), then do
what the handlers they replaced would have done (SIGINT's default raises
KeyboardInterrupt; SIGTERM's default kills the process by that signal). The handlers are
installed when the first lab enters its ``with`` block and the previous ones restored
when the last leaves; only the main thread can (elsewhere, labs rely on atexit)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from types import FrameType
from typing import Any, Protocol


class Stoppable(Protocol):
    def stop(self) -> None: ...

_ACTIVE: list[Stoppable] = []  # the labs inside their ``with`` blocks
_PREVIOUS: dict[int, Any] = {}  # the handlers ours replaced, by signal


def guard(lab: Stoppable, enter: bool) -> None:
    """Track ``lab``; install the signal handlers with the first lab, restore the previous
    ones with the last. Only the main thread can (elsewhere the labs rely on atexit)."""
    if enter:
        _ACTIVE.append(lab)
    elif lab in _ACTIVE:
        _ACTIVE.remove(lab)
    if threading.current_thread() is not threading.main_thread():
        return
    if enter and not _PREVIOUS:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous = signal.getsignal(sig)
            if previous is not signal.SIG_IGN:  # a process that ignores it keeps its lab
                _PREVIOUS[sig] = previous
                signal.signal(sig, _on_signal)
    elif not _ACTIVE:
        for number, previous in _PREVIOUS.items():
            signal.signal(number, signal.SIG_DFL if previous is None else previous)
        _PREVIOUS.clear()


def _on_signal(sig: int, frame: FrameType | None) -> None:
    """Stop every lab, then do what the replaced handler would have done."""
    previous = _PREVIOUS.get(sig)
    for lab in list(_ACTIVE):
        with contextlib.suppress(Exception):
            lab.stop()
    if callable(previous):
        previous(sig, frame)  # SIGINT's default raises KeyboardInterrupt
    elif previous is not signal.SIG_IGN:  # the default action (SIGTERM: die by it)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
