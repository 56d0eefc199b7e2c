"""Live migration that never gets stuck: a policy, a pure decision function, a monitor.

The policy follows oVirt's migration policies and KubeVirt's migration settings:

* ``bandwidth`` (MiB/s, None = unlimited), ``parallel`` connections, ``compression`` and
  ``auto_converge`` (libvirt throttles the guest's vCPUs when copying does not converge);
* a **downtime schedule**: the allowed final pause starts small and is raised one step each
  time ``stall_iterations`` memory-copy passes go by without the remaining memory shrinking
  (oVirt's "convergence schedule");
* **post-copy** once the schedule is exhausted, when allowed, and never for a VM with
  passthrough devices (its pages cannot be fetched after the switch);
* **progress timeout** (no progress for that long: abort, KubeVirt's ``progressTimeout``,
  150 s) and **completion timeout per GiB** of guest memory (KubeVirt's
  ``completionTimeoutPerGiB``, 150 s/GiB): abort.

:func:`decide` is pure: given the policy, what was seen so far and the latest sample, it
says what to do next. :class:`Migrator` runs ``virDomainMigrate3`` in a thread, samples the
job every ``poll`` seconds, applies the decisions, reports progress, honours a cancel, and
returns only once the destination runs the VM and the source does not. A failed or
aborted migration leaves the VM running on its source: libvirt guarantees it for
pre-copy, and post-copy is never started for a VM that must not lose its source.
Concurrency is limited per source host and per cluster by :class:`Limits`.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import libvirt

from clustercore.errors import ClusterError


class MigrationFailed(ClusterError):
    """A migration did not complete; the VM still runs on ``source``."""

    def __init__(self, vm: str, source: str, target: str, reason: str, samples: int = 0) -> None:
        self.vm, self.source, self.target, self.reason, self.samples = vm, source, target, reason, samples
        super().__init__(f"migration of {vm} from {source} to {target} failed: {reason}")


@attrs.frozen
class MigrationPolicy:
    bandwidth: int | None = None  # MiB/s
    downtime_schedule: tuple[int, ...] = (100, 150, 200, 300, 400, 500, 1000, 2000, 5000)  # ms, oVirt-like
    stall_iterations: int = 2
    auto_converge: bool = True
    compression: bool = False
    parallel: int = 1
    post_copy: bool = False
    progress_timeout: float = 150.0  # s without the remaining memory shrinking
    completion_timeout_per_gib: float = 150.0  # s per GiB of guest memory
    poll: float = 0.2  # s between job samples

    def completion_timeout(self, memory_mib: int) -> float:
        return self.completion_timeout_per_gib * max(memory_mib / 1024, 1.0)


@attrs.frozen
class Sample:
    """One look at the migration job (libvirt's job stats)."""

    elapsed: float  # s since the migration began
    iteration: int  # memory-copy pass
    remaining: int  # bytes of memory left to copy
    total: int  # bytes of guest memory
    downtime: int | None = None  # ms, the expected final pause


class Act(enum.Enum):
    CONTINUE = "continue"
    RAISE_DOWNTIME = "raise-downtime"
    POST_COPY = "post-copy"
    ABORT = "abort"


@attrs.frozen
class Decision:
    act: Act
    downtime: int | None = None  # the new limit for RAISE_DOWNTIME
    reason: str = ""


@attrs.frozen
class Seen:
    """What :func:`decide` remembers between samples."""

    step: int = 0  # index into the downtime schedule
    best_remaining: int | None = None
    best_at: float = 0.0  # when the remaining memory last shrank
    stall_from_iteration: int = 0  # iteration at which the current stall began
    post_copy: bool = False


def decide(policy: MigrationPolicy, seen: Seen, sample: Sample, memory_mib: int, may_post_copy: bool
           ) -> tuple[Decision, Seen]:
    """The next action and the updated memory. Pure: time comes from the sample."""
    if seen.best_remaining is None or sample.remaining < seen.best_remaining:
        seen = attrs.evolve(seen, best_remaining=sample.remaining, best_at=sample.elapsed,
                            stall_from_iteration=sample.iteration)
    if sample.elapsed > policy.completion_timeout(memory_mib):
        return Decision(Act.ABORT, reason=f"not complete after {sample.elapsed:.0f} s "
                        f"(limit {policy.completion_timeout(memory_mib):.0f} s for {memory_mib} MiB)"), seen
    if sample.elapsed - seen.best_at > policy.progress_timeout:
        return Decision(Act.ABORT, reason=f"no progress for {sample.elapsed - seen.best_at:.0f} s "
                        f"(limit {policy.progress_timeout:.0f} s)"), seen
    stalled = sample.iteration - seen.stall_from_iteration >= policy.stall_iterations
    if stalled and not seen.post_copy:
        seen = attrs.evolve(seen, stall_from_iteration=sample.iteration)
        if seen.step + 1 < len(policy.downtime_schedule):
            seen = attrs.evolve(seen, step=seen.step + 1)
            return Decision(Act.RAISE_DOWNTIME, policy.downtime_schedule[seen.step],
                            f"{policy.stall_iterations} passes without progress"), seen
        if policy.post_copy and may_post_copy:
            return Decision(Act.POST_COPY, reason="downtime schedule exhausted"), attrs.evolve(seen, post_copy=True)
    return Decision(Act.CONTINUE), seen


@attrs.frozen
class Progress:
    """What the caller's progress callback receives."""

    vm: str
    elapsed: float
    percent: float
    remaining_mib: float
    iteration: int
    downtime_limit: int
    post_copy: bool


class Limits:
    """At most ``per_host`` outgoing migrations per source host and ``total`` in the
    cluster at once (oVirt and KubeVirt default to 2 per node and 5 in the cluster)."""

    def __init__(self, per_host: int = 2, total: int = 5) -> None:
        self.per_host, self.total = per_host, total
        self._active: dict[str, int] = {}
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def slot(self, source: str, timeout: float | None = None) -> Iterator[None]:
        with self._cond:
            ok = self._cond.wait_for(lambda: self._active.get(source, 0) < self.per_host
                                     and sum(self._active.values()) < self.total, timeout)
            if not ok:
                raise TimeoutError(f"no migration slot for {source} within {timeout} s")
            self._active[source] = self._active.get(source, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._active[source] -= 1
                self._cond.notify_all()

    def active(self) -> dict[str, int]:
        with self._cond:
            return {k: v for k, v in self._active.items() if v}


def flags(policy: MigrationPolicy, may_post_copy: bool) -> int:
    f: int = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
         | libvirt.VIR_MIGRATE_ABORT_ON_ERROR)
    if policy.auto_converge:
        f |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if policy.compression:
        f |= libvirt.VIR_MIGRATE_COMPRESSED
    if policy.parallel > 1:
        f |= libvirt.VIR_MIGRATE_PARALLEL
    if policy.post_copy and may_post_copy:
        f |= libvirt.VIR_MIGRATE_POSTCOPY
    return f


def params(policy: MigrationPolicy, uri: str | None) -> dict[str, Any]:
    p: dict[str, Any] = {}
    if uri:
        p[libvirt.VIR_MIGRATE_PARAM_URI] = uri
    if policy.bandwidth:
        p[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = policy.bandwidth
    if policy.parallel > 1:
        p[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = policy.parallel
    return p


class Migrator:
    """Runs one migration under a policy (see the module docstring)."""

    def __init__(self, policy: MigrationPolicy | None = None, limits: Limits | None = None,
                 monotonic: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep) -> None:
        self.policy = policy or MigrationPolicy()
        self.limits = limits or Limits()
        self._monotonic, self._sleep = monotonic, sleep

    def migrate(self, dom: libvirt.virDomain, dest: libvirt.virConnect, *, vm: str, source: str, target: str,
                memory_mib: int, passthrough: bool, uri: str | None = None,
                progress: Callable[[Progress], None] | None = None, cancel: threading.Event | None = None,
                slot_timeout: float | None = None) -> list[Sample]:
        """Migrate ``dom`` to ``dest``; returns the samples seen. Raises MigrationFailed
        (aborted, cancelled or refused by libvirt) with the VM still on its source."""
        policy = self.policy
        may_post_copy = not passthrough
        with self.limits.slot(source, slot_timeout):
            outcome: dict[str, BaseException | None] = {}

            def run() -> None:
                try:
                    dom.migrate3(dest, params(policy, uri), flags(policy, may_post_copy))
                    outcome["error"] = None
                except BaseException as exc:  # reported to the caller below
                    outcome["error"] = exc

            worker = threading.Thread(target=run, name=f"migrate-{vm}", daemon=True)
            started = self._monotonic()
            worker.start()
            samples: list[Sample] = []
            seen = Seen()
            limit = policy.downtime_schedule[0]
            with contextlib.suppress(libvirt.libvirtError):
                dom.migrateSetMaxDowntime(limit, 0)
            why = ""
            while worker.is_alive():
                worker.join(policy.poll)
                if not worker.is_alive():
                    break
                if cancel is not None and cancel.is_set():
                    why = "cancelled"
                    _abort(dom)
                    break
                sample = _sample(dom, self._monotonic() - started)
                if sample is None:
                    continue
                samples.append(sample)
                decision, seen = decide(policy, seen, sample, memory_mib, may_post_copy)
                if decision.act is Act.RAISE_DOWNTIME and decision.downtime is not None:
                    limit = decision.downtime
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.migrateSetMaxDowntime(limit, 0)
                elif decision.act is Act.POST_COPY:
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.migrateStartPostCopy(0)
                elif decision.act is Act.ABORT:
                    why = decision.reason
                    _abort(dom)
                    break
                if progress is not None:
                    done = 100.0 * (1 - sample.remaining / sample.total) if sample.total else 0.0
                    progress(Progress(vm, sample.elapsed, done, sample.remaining / 2**20, sample.iteration, limit,
                                      seen.post_copy))
            worker.join()
            error = outcome.get("error")
            if why or error is not None:
                reason = why or str(error)
                raise MigrationFailed(vm, source, target, reason, len(samples)) from error
            return samples


def _abort(dom: libvirt.virDomain) -> None:
    with contextlib.suppress(libvirt.libvirtError):
        dom.abortJob()


def _sample(dom: libvirt.virDomain, elapsed: float) -> Sample | None:
    try:
        stats = dom.jobStats(0)
    except libvirt.libvirtError:
        return None
    if not stats or stats.get("type", 0) == libvirt.VIR_DOMAIN_JOB_NONE:
        return None
    return Sample(elapsed=elapsed, iteration=int(stats.get("memory_iteration", 0)),
                  remaining=int(stats.get("memory_remaining", 0)), total=int(stats.get("memory_total", 0)),
                  downtime=stats.get("downtime"))
