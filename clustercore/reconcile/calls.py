"""Calls into flavors and hosts, off the reconcile pass, each with a deadline.

A pass never waits on a host. Every call into a flavor or a host (bootstrap, describe,
soft fence, liveness witness, driver start/inspect/settle...) goes through
:class:`HostCalls`: it runs on that host's own lane (one worker thread at a time per host,
calls in order), so a host that hangs holds up only its own lane. The pass that launched a
call waits for it at most ``wait`` seconds, all its calls together (fast hosts answer in the
same pass, as a simulation or a test expects); a call still running then is collected by a
later pass. A call running past its ``timeout`` (real seconds, by the injected
``monotonic``: a call into a host takes real time even when the cluster's clock is
simulated) is *overdue*: the
reconciler that launched it treats the host as not answering. Python cannot stop a thread:
the overdue call goes on in its lane, and nothing more is started on that host until it
returns. :meth:`HostCalls.cancel` drops every queued call (a deposed leader).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Future, wait
from typing import Any

import attrs

log = logging.getLogger(__name__)
IDLE = 10.0  # seconds an idle worker waits for another host before it ends


@attrs.define(eq=False)
class Call:
    """One call on a host's lane: what, when queued and started (monotonic seconds), its future."""

    host: str
    key: Hashable
    timeout: float
    queued: float
    monotonic: Callable[[], float]
    future: Future[Any] = attrs.field(factory=Future)
    started: float | None = None

    def overdue(self) -> bool:
        """Running (or queued behind a hung call) for longer than its timeout."""
        return not self.future.done() and self.monotonic() - (self.started if self.started is not None
                                                              else self.queued) > self.timeout


class HostCalls:
    """Per-host lanes of calls. ``submit`` queues one (or returns the one with the same key
    already there); ``take`` hands back a finished one and forgets it."""

    def __init__(self, monotonic: Callable[[], float] = time.monotonic, wait: float = 2.0) -> None:
        self.monotonic = monotonic
        self.wait = wait
        self._lock = threading.Lock()
        self._queues: dict[str, deque[tuple[Call, Callable[[], Any]]]] = {}
        self._busy: set[str] = set()
        self._calls: dict[Hashable, Call] = {}
        self._launched: list[Call] = []
        self._idle: list[queue.SimpleQueue[str]] = []  # workers waiting for a host to serve

    def submit(self, host: str, key: Hashable, fn: Callable[[], Any], timeout: float, settled: bool = True) -> Call:
        """Queue ``fn()`` on ``host``'s lane under ``key`` (one call per key at a time);
        ``settled=False``: not among the calls :meth:`settle` waits for."""
        with self._lock:
            existing = self._calls.get(key)
            if existing is not None:
                return existing
            call = Call(host, key, timeout, self.monotonic(), self.monotonic)
            self._calls[key] = call
            self._queues.setdefault(host, deque()).append((call, fn))
            if settled:
                self._launched.append(call)
            start = host not in self._busy
            worker = None
            if start:
                self._busy.add(host)
                worker = self._idle.pop() if self._idle else None
        if worker is not None:
            worker.put(host)
        elif start:
            threading.Thread(target=self._worker, args=(host,), name="host-calls", daemon=True).start()
        return call

    def _worker(self, host: str) -> None:
        """Serve one host's lane, then wait (up to IDLE seconds) to serve another: a worker
        is held by one host at a time, so a hung host holds only its own."""
        inbox: queue.SimpleQueue[str] = queue.SimpleQueue()
        while True:
            self._lane(host)
            with self._lock:
                self._idle.append(inbox)
            try:
                host = inbox.get(timeout=IDLE)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        return
                host = inbox.get()  # handed a host just as the wait ended

    def _lane(self, host: str) -> None:
        while True:
            with self._lock:
                queue = self._queues.get(host)
                if not queue:
                    self._busy.discard(host)
                    self._queues.pop(host, None)
                    return
                call, fn = queue.popleft()
            if not call.future.set_running_or_notify_cancel():
                continue
            call.started = self.monotonic()
            try:
                call.future.set_result(fn())
            except BaseException as exc:  # handed to whoever takes the call
                call.future.set_exception(exc)

    def launched(self) -> bool:
        """Calls were launched since the last :meth:`settle`."""
        with self._lock:
            return bool(self._launched)

    def settle(self) -> None:
        """Wait (at most ``wait`` seconds of real time) for the calls launched since the last
        settle: fast hosts answer within the pass that asked."""
        with self._lock:
            launched, self._launched = self._launched, []
        pending = [c.future for c in launched if not c.future.done()]
        if pending:
            wait(pending, timeout=self.wait)

    def get(self, key: Hashable) -> Call | None:
        with self._lock:
            return self._calls.get(key)

    def take(self, key: Hashable) -> Call | None:
        """The call under ``key`` once it has finished (then forgotten); None while it runs."""
        with self._lock:
            call = self._calls.get(key)
            if call is None or not call.future.done():
                return None
            del self._calls[key]
            return call

    def forget(self, key: Hashable) -> None:
        """Stop tracking ``key`` (an overdue call: its result, whenever it comes, is ignored)."""
        with self._lock:
            call = self._calls.pop(key, None)
        if call is not None:
            call.future.cancel()

    def busy(self, host: str) -> bool:
        """A call is running or queued on ``host``'s lane."""
        with self._lock:
            return host in self._busy

    def hung(self, host: str) -> bool:
        """A call on ``host``'s lane is overdue."""
        with self._lock:
            return any(c.host == host and c.overdue() for c in self._calls.values())

    def keys(self) -> set[Hashable]:
        with self._lock:
            return set(self._calls)

    def cancel(self) -> int:
        """Drop every queued call and forget every call (a deposed leader's jobs); returns
        how many were dropped. Running calls finish in their lanes, unheard."""
        with self._lock:
            calls, self._calls = list(self._calls.values()), {}
            self._launched = []
        return sum(1 for c in calls if c.future.cancel())


def outcome(call: Call) -> tuple[Any, BaseException | None]:
    """(result, None) or (None, the exception) of a finished call."""
    error = call.future.exception()
    return (None, error) if error is not None else (call.future.result(), None)
