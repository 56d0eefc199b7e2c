"""Fence: a NonResponsive host is soft fenced, then hard fenced when the policy allows.

The decision is :func:`~clustercore.fencing.fence_decision` (pure: startup grace, storm
protection, liveness witness, backoff); the acts run off the pass: the flavors' soft fence
and liveness witness on the host's call lane (:mod:`clustercore.reconcile.calls`, with the
cluster's ``call_timeout``: a witness that does not answer in time says nothing), the
hard fence (:class:`~clustercore.fencing.Fencer`, levels of fence devices with power OFF
confirmed) as a job on the controller's executor, one per host. A Fencing host left by a
manager that is gone is finished by checking power first (:meth:`Fencer.resume`).

Self-fencing (:mod:`clustercore.watchdog`): a NonResponsive host that may self-fence and
whose agent armed a watchdog is Down (``self-fenced``) once its lease has expired and its
watchdog timeout plus the margin have passed; until then a host without a fence device
just waits for that, and one with devices is hard fenced as usual meanwhile.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import cast

from clustercore.events import Event
from clustercore.fencing import FencePolicy, Fencer, fence_decision
from clustercore.lifecycle import HostEvent
from clustercore.model import Host, HostState, Workload
from clustercore.plugins import Plugins
from clustercore.reconcile.calls import HostCalls, outcome
from clustercore.reconcile.hosts import Pending
from clustercore.reconcile.observe import View
from clustercore.reconcile.writer import Decision, Writer
from clustercore.state import Versioned
from clustercore.watchdog import self_fence_decision

log = logging.getLogger(__name__)
S = HostState


class Fence:
    def __init__(self, plugins: Plugins, calls: HostCalls, writer: Writer, jobs: Executor,
                 may_act: Callable[[], bool], started: float,
                 workloads_on: Callable[[str], Sequence[Workload]] = lambda host: ()) -> None:
        """``workloads_on(host)``: the workloads placed there (for the liveness witness)."""
        self.plugins = plugins
        self.workloads_on = workloads_on
        self.calls = calls
        self.writer = writer
        self.jobs = jobs
        self.may_act = may_act
        self.fencer = Fencer(secrets=writer.secrets)
        self.started = started  # no fencing in the first minutes after the manager starts
        self._skip_reason: dict[str, str] = {}
        self._answers: dict[tuple[str, str], tuple[float, object]] = {}  # this pass's answers

    def decide(self, current: Versioned[Host], view: View, workloads: int) -> Decision | None:
        host = current.value
        if host.state not in (S.NON_RESPONSIVE, S.FENCING):
            if host.name in self.fencer.episodes:
                self.forget(host.name)
            return None
        policy = view.config.fencing
        episode = self.fencer.episode(host.name)
        now = view.now
        if host.state is S.FENCING:
            return self._fencing(host, policy, now)
        report = view.reports.get(host.name)
        armed = max(host.watchdog, report.watchdog if report is not None else 0.0)
        due = self_fence_decision(host, armed, view.lease_gone.get(host.name), now, policy.watchdog_margin)
        if policy.enabled and due.fence:
            return Decision(host, HostEvent.SELF_FENCED, due.reason)
        if policy.enabled and due.at is not None and not host.fence_devices:
            self._skipped(host, now, due.reason)  # nothing to do but wait for its watchdog
            return None
        hosts = [v.value for v in view.hosts.values()]
        alive = self._ask(host, "alive", lambda: self.plugins.host_alive(host, self.workloads_on(host.name)),
                          view)
        decision = fence_decision(host, hosts, now, self.started, policy, alive is True, episode.failed_at)
        if decision.fence and alive is None:
            raise Pending((host.name, "alive"))  # the witness has not answered yet
        if not decision.fence:
            self._skipped(host, now, decision.reason)
            return None
        if policy.soft_first and episode.soft_at is None:
            tried = self._ask(host, "soft", lambda: self.plugins.soft_fence(host), view)
            if tried is None:
                raise Pending((host.name, "soft"))
            episode.soft_at = now
            episode.soft_tried = bool(tried)
            if tried:
                by = ", ".join(cast(list[str], tried))
                self.writer.record(Event(now, f"host/{host.name}", "soft-fence",
                                         f"tried by {by}; waiting {policy.soft_wait:.0f} s"))
                return None
        if episode.soft_tried and episode.soft_at is not None and now - episode.soft_at < policy.soft_wait:
            return None
        return Decision(host, HostEvent.FENCE, decision.reason)

    def _skipped(self, host: Host, now: float, reason: str) -> None:
        kind = re.sub(r"\d+", "#", reason)  # one event per kind of reason, not per pass
        if self._skip_reason.get(host.name) != kind:
            self._skip_reason[host.name] = kind
            self.writer.record(Event(now, f"host/{host.name}", "fence-skipped", reason))

    def launch(self, host: Host, policy: FencePolicy) -> None:
        """The host was just made Fencing by this manager: run the hard fence."""
        if self.may_act():
            self.fencer.episode(host.name).job = self.jobs.submit(self.fencer.run, host, policy)

    def _fencing(self, host: Host, policy: FencePolicy, now: float) -> Decision | None:
        episode = self.fencer.episode(host.name)
        job = episode.job
        if job is None:  # another manager began and died: finish it (no power-off if already off)
            if self.may_act():
                episode.job = self.jobs.submit(self.fencer.resume, host, policy)
                self.writer.record(Event(now, f"host/{host.name}", "fence-resumed",
                                         "fencing begun by a manager that is gone: checking power first"))
            return None
        if not job.done():
            return None
        episode.job = None
        try:
            attempts = job.result()
        except Exception as exc:
            episode.failed_at, episode.failures = now, episode.failures + 1
            return Decision(host, HostEvent.FENCE_FAILED, str(exc))
        self.fencer.forget(host.name)
        return Decision(host, HostEvent.FENCED, "powered off, confirmed by status: " + "; ".join(attempts))

    def _ask(self, host: Host, what: str, fn: Callable[[], object], view: View) -> object:
        """A flavor's answer about ``host`` (witness, soft fence): asked off the pass, once
        per pass at most; None while it runs; False when it did not answer in time. On a
        lane of its own, not the host's: a call the hung host never answers (a probe)
        must not hold up the decision about that host."""
        answered = self._answers.get((host.name, what))
        if answered is not None and answered[0] == view.now:
            return answered[1]
        key = ("fence", host.name, what)
        call = self.calls.get(key)
        if call is None:
            call = self.calls.submit(f"{host.name}/fencing", key, fn, view.config.call_timeout)
        if call.overdue():
            self.calls.forget(key)
            log.warning("%s of %s did not answer within %.0f s", what, host.name, view.config.call_timeout)
            result: object = False
        else:
            finished = self.calls.take(key)
            if finished is None:
                return None
            result, error = outcome(finished)
            if error is not None:
                log.warning("%s of %s failed: %s", what, host.name, error)
                result = False
        self._answers[(host.name, what)] = (view.now, result)
        return result

    def forget(self, host: str) -> None:
        self.fencer.forget(host)
        self._skip_reason.pop(host, None)
        self._answers.pop((host, "alive"), None)
        self._answers.pop((host, "soft"), None)
        self.calls.forget(("fence", host, "alive"))
        self.calls.forget(("fence", host, "soft"))

    def take_over(self, now: float) -> None:
        """A new leadership: grace starts now; episodes without a running job start afresh."""
        self.started = now
        for host, episode in list(self.fencer.episodes.items()):
            if episode.job is None:
                self.fencer.forget(host)

    def cancel(self) -> None:
        """Deposed: jobs not yet running are dropped (a running one ends unheard: its
        writes are refused by the store's leader guard)."""
        for episode in self.fencer.episodes.values():
            if episode.job is not None:
                episode.job.cancel()
                episode.job = None
