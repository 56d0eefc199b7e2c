"""Live migration that never gets stuck and never corrupts: :class:`Migrator` applies a
:class:`~flavors.virt.migration_policy.MigrationPolicy` (bandwidth cap, downtime schedule,
auto-converge, post-copy, timeouts; the pure :func:`decide` and the measurements behind
the defaults are in :mod:`flavors.virt.migration_policy`, re-exported here).

:class:`Migrator` runs ``virDomainMigrate3`` in a thread, samples the job every ``poll``
seconds, applies the decisions, reports progress, honours a cancel (not after the switch
to post-copy), and returns only once the destination runs the VM and the source does not.
A failed or aborted migration leaves the VM running on its source: libvirt guarantees it
for pre-copy, and post-copy is never aborted. Concurrency is limited per source host and
per cluster by :class:`Limits`.

**Storage migration** (``copy_disks``): libvirt mirrors each listed disk over NBD before
the memory copy begins (``VIR_MIGRATE_PARAM_MIGRATE_DISKS``; ``NON_SHARED_INC`` copies
only the top of a chain whose backing the destination holds, ``NON_SHARED_DISK`` the
whole disk into a file the destination has, or that its ``dir`` storage pool on that path
creates). Read in libvirt's ``qemu_migration.c``: ``VIR_MIGRATE_PARAM_BANDWIDTH`` sets
``migMaxBandwidth``, which is the memory stream's cap and also each disk mirror's speed
(per disk: two disks copy at twice the cap, libvirt issue 467); measured on the lab, a
64 MiB disk mirrors in about 4 s at 16 MiB/s, 1 s at 64 MiB/s, under 0.2 s uncapped.
The destination's NBD server takes a port of its ``migration_port_min..max`` range and
the source connects to the migration URI's host, so on loopback lab hosts (each with its
own range, URI ``tcp://127.0.0.1``) neither ``VIR_MIGRATE_PARAM_DISKS_PORT`` nor
``DISKS_URI`` is needed.
``shared_disks`` (the disks not copied are on storage both hosts share) adds
``VIR_MIGRATE_UNSAFE``: libvirt 9.0 refuses a local directory it cannot see is shared.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import libvirt

from clustercore.errors import ClusterError
from flavors.virt.migration_policy import SHRINK, Act, Decision, MigrationPolicy, Sample, Seen, decide, encrypted

__all__ = ["SHRINK", "Act", "Decision", "Limits", "MigrationFailed", "MigrationPolicy", "Migrator", "Progress",
           "Sample", "Seen", "check_disks", "decide", "encrypted", "flags", "params"]

log = logging.getLogger(__name__)


class MigrationFailed(ClusterError):
    """A migration did not complete; the VM still runs on ``source`` unless ``post_copy``:
    it failed after the switch, when only the destination had the current memory (libvirt
    leaves both ends paused; a post-copy recovery is not attempted here)."""

    def __init__(self, vm: str, source: str, target: str, reason: str, samples: int = 0,
                 post_copy: bool = False) -> None:
        self.vm, self.source, self.target, self.reason, self.samples = vm, source, target, reason, samples
        self.post_copy = post_copy
        after = " after the switch to post-copy" if post_copy else ""
        super().__init__(f"migration of {vm} from {source} to {target} failed{after}: {reason}")


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
    disk_remaining_mib: float = 0.0


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


_DEVICE = re.compile(r"[a-z][a-z0-9]{0,31}\Z")


def check_disks(copy_disks: tuple[str, ...], incremental: bool) -> None:
    """ValueError unless ``copy_disks`` are distinct target device names (``vda``) and
    ``incremental`` comes with disks to copy."""
    for dev in copy_disks:
        if not isinstance(dev, str) or not _DEVICE.match(dev):
            raise ValueError(f"disk to copy {dev!r}: a target device name such as 'vda'")
    if len(set(copy_disks)) != len(copy_disks):
        raise ValueError(f"disks to copy {copy_disks!r}: named twice")
    if incremental and not copy_disks:
        raise ValueError("incremental storage migration without disks to copy")


def flags(policy: MigrationPolicy, may_post_copy: bool, copy_disks: tuple[str, ...] = (), incremental: bool = False,
          shared_disks: bool = False, live: bool = True, tls: bool = False) -> int:
    """libvirt's migration flags. Not ``live``: the guest is paused for the copy.
    ``copy_disks`` adds NON_SHARED_INC (``incremental``: the destination holds an overlay
    with the same backing, only the top is copied) or NON_SHARED_DISK (the whole chain,
    into a file the destination has or its storage pool creates); ``shared_disks`` (every
    disk not copied is on storage both hosts share, as the cluster knows) adds UNSAFE,
    which libvirt needs for a shared directory it cannot detect as shared. ``tls``
    (:func:`encrypted`) adds TLS: the stream, disks' mirrors included, is encrypted."""
    check_disks(copy_disks, incremental)
    f: int = libvirt.VIR_MIGRATE_PERSIST_DEST | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
    if live:
        f |= libvirt.VIR_MIGRATE_LIVE
    if policy.auto_converge:
        f |= libvirt.VIR_MIGRATE_AUTO_CONVERGE
    if policy.compression:
        f |= libvirt.VIR_MIGRATE_COMPRESSED
    if policy.parallel > 1:
        f |= libvirt.VIR_MIGRATE_PARALLEL
    if policy.post_copy and may_post_copy:
        f |= libvirt.VIR_MIGRATE_POSTCOPY
    if copy_disks:
        f |= libvirt.VIR_MIGRATE_NON_SHARED_INC if incremental else libvirt.VIR_MIGRATE_NON_SHARED_DISK
    if shared_disks:
        f |= libvirt.VIR_MIGRATE_UNSAFE
    if tls:
        f |= libvirt.VIR_MIGRATE_TLS
    return f


PRE_SWITCH_MIB = 1  # MiB/s before a TCG guest's immediate switch to post-copy (libvirt's least)


def params(policy: MigrationPolicy, uri: str | None, copy_disks: tuple[str, ...] = (),
           post_copy_at_once: bool = False) -> dict[str, Any]:
    """libvirt's typed migration parameters. The bandwidth caps the memory stream and,
    separately, each copied disk's mirror; the disks' NBD server takes a port of the
    destination's migration range and is reached at the URI's host (see the module
    docstring), so no disk parameter beyond the list is needed.

    ``post_copy_at_once`` (a TCG guest switched to post-copy at the first sample, no disk
    to copy): the pages sent before the switch are the ones that can go stale under TCG
    (a write to one after it was sent may go unlogged, see migration_policy; a clean-clone
    run once found the guest's virtio ring corrupt), so that stream is held at
    ``PRE_SWITCH_MIB`` (about 50 pages per 0.2-s sample instead of 3,300 at 64 MiB/s) and
    the policy's cap applies from the switch (``BANDWIDTH_POSTCOPY``; none = unlimited)."""
    check_disks(copy_disks, False)
    p: dict[str, Any] = {}
    if uri:
        p[libvirt.VIR_MIGRATE_PARAM_URI] = uri
    if post_copy_at_once and not copy_disks:
        p[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = PRE_SWITCH_MIB
        if policy.bandwidth:
            p[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH_POSTCOPY] = policy.bandwidth
    elif policy.bandwidth:
        p[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = policy.bandwidth
    if policy.parallel > 1:
        p[libvirt.VIR_MIGRATE_PARAM_PARALLEL_CONNECTIONS] = policy.parallel
    if copy_disks:
        p[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = list(copy_disks)
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
                slot_timeout: float | None = None, copy_disks: tuple[str, ...] = (), incremental: bool = False,
                shared_disks: bool = False, addresses: tuple[str, str] = ("", "")) -> list[Sample]:
        """Migrate ``dom`` to ``dest``, copying the disks ``copy_disks`` (target device
        names; see :func:`flags` for ``incremental`` and ``shared_disks``); ``addresses``
        are the source's and target's libvirt URIs, from which the policy's ``tls=None``
        decides to encrypt (:func:`encrypted`: both ``qemu+tls://``); returns the
        samples seen. Raises MigrationFailed (aborted, cancelled or refused by libvirt) with
        the VM still on its source, unless it failed after the switch to post-copy
        (``post_copy`` set). The completion timeout counts the copied disks' size too."""
        policy = self.policy
        check_disks(copy_disks, incremental)
        may_post_copy = not passthrough
        size_mib = memory_mib + _disks_mib(dom, copy_disks)
        tcg = _tcg(dom)
        # A TCG guest is never pre-copied (see migration_policy): post-copy at once, else paused.
        at_once = tcg and not policy.tcg_pre_copy and policy.post_copy and may_post_copy
        live = not tcg or policy.tcg_pre_copy or at_once
        tls = encrypted(policy, *addresses)
        log.info("migration of %s from %s to %s: %s, %s", vm, source, target, "live" if live else "paused",
                 "encrypted (TLS)" if tls else "unencrypted")
        with self.limits.slot(source, slot_timeout):
            outcome: dict[str, BaseException | None] = {}

            def run() -> None:
                try:
                    dom.migrate3(dest, params(policy, uri, copy_disks, at_once),
                                 flags(policy, may_post_copy, copy_disks, incremental, shared_disks, live, tls))
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
                if cancel is not None and cancel.is_set() and not seen.post_copy:
                    why = "cancelled"
                    _abort(dom)
                    break
                sample = _sample(dom, self._monotonic() - started)
                if sample is None:
                    continue
                samples.append(sample)
                decision, seen = decide(policy, seen, sample, size_mib, may_post_copy, tcg)
                if decision.act is Act.RAISE_DOWNTIME and decision.downtime is not None:
                    limit = decision.downtime
                    log.info("migration of %s: downtime limit %d ms (%s)", vm, limit, decision.reason)
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.migrateSetMaxDowntime(limit, 0)
                elif decision.act is Act.POST_COPY:
                    try:
                        dom.migrateStartPostCopy(0)
                        log.info("migration of %s: post-copy (%s)", vm, decision.reason)
                    except libvirt.libvirtError as exc:  # not switched: the source still has the VM
                        log.warning("migration of %s: post-copy refused: %s", vm, exc)
                        seen = attrs.evolve(seen, post_copy=False)
                elif decision.act is Act.ABORT:
                    why = decision.reason
                    _abort(dom)
                    break
                if progress is not None:
                    progress(_progress(vm, sample, limit, seen.post_copy))
            worker.join()
            error = outcome.get("error")
            if error is None:  # done, even if an abort came too late (libvirt had begun the switch)
                if why:
                    log.warning("migration of %s completed although aborted (%s): it runs on %s", vm, why, target)
                return samples
            raise MigrationFailed(vm, source, target, why or str(error), len(samples), seen.post_copy) from error


def _tcg(dom: libvirt.virDomain) -> bool:
    """Whether ``dom`` runs under TCG (``<domain type='qemu'>``)."""
    try:
        return bool(re.match(r"\s*<domain[^>]*\stype=['\"]qemu['\"]", dom.XMLDesc(0)))
    except libvirt.libvirtError:
        return False


def _disks_mib(dom: libvirt.virDomain, devices: tuple[str, ...]) -> int:
    """The virtual size of the disks to copy, MiB (0 for one libvirt cannot size)."""
    total = 0
    for dev in devices:
        with contextlib.suppress(libvirt.libvirtError):
            total += int(dom.blockInfo(dev)[0]) // 2**20
    return total


def _progress(vm: str, sample: Sample, limit: int, post_copy: bool) -> Progress:
    if sample.total:
        done = 100.0 * (1 - sample.remaining / sample.total)
    else:
        done = 100.0 * (1 - sample.disk_remaining / sample.disk_total) if sample.disk_total else 0.0
    return Progress(vm, sample.elapsed, done, sample.remaining / 2**20, sample.iteration, limit, post_copy,
                    sample.disk_remaining / 2**20)


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
                  downtime=stats.get("downtime"), disk_remaining=int(stats.get("disk_remaining", 0)),
                  disk_total=int(stats.get("disk_total", 0)))
