"""How a live migration converges: the policy and the pure decision (:func:`decide`)
that :class:`~flavors.virt.migration.Migrator` applies to every sample of the job.

The policy follows oVirt's migration policies and KubeVirt's migration settings:

* ``bandwidth``: 64 MiB/s by default (KubeVirt's ``bandwidthPerMigration``), for the
  memory stream and, separately, each copied disk's mirror; ``parallel`` connections,
  ``compression``, ``auto_converge`` (QEMU throttles the vCPUs when copying does not
  converge);
* a **downtime schedule**: the allowed final pause starts small and is raised one step each
  time ``stall_iterations`` memory-copy passes go by without the dirty set (the memory left
  at the start of a pass) shrinking by 10 % (oVirt's "convergence schedule");
* **post-copy**, when allowed (``post_copy``, off by default as in oVirt and KubeVirt: a
  failure after the switch loses the VM) and never for a VM with passthrough devices: once
  the schedule is exhausted, or once ``post_copy_after`` (half) of either timeout has gone
  by, so that it always comes before the deadline. With the defaults a stalled 256 MiB
  guest at 64 MiB/s (3 s a pass) reaches it after 20 passes, about 58 s, long before
  the 150 s deadline; a 16 GiB guest (4 min a pass) after 75 s without progress, where
  the progress timeout would abort it mid-pass. Once in
  post-copy nothing aborts the migration: only the destination has the current memory;
* **progress timeout** (150 s without the data left shrinking, KubeVirt's
  ``progressTimeout``) and **completion timeout** (150 s per GiB of memory and copied
  disks, KubeVirt's ``completionTimeoutPerGiB``): abort, the guest stays on its source.

**TCG guests** (``<domain type='qemu'>``, the lab's real guests: kvm-pvm cannot boot
Linux) lose memory when it is copied while they write it, whatever the bandwidth. Measured
on the lab (libvirt 9.0, QEMU 7.2; the project's real guest, 256 MiB, its dirtier
rewriting 176 MiB, the most that fits, and checking every page each pass):

==========================================================  =========  ===================
live pre-copy converging, no cap, 50-300 ms downtime         2.5-2.9 s  lost in 4 of 5 runs,
                                                                        21,900-45,056 pages
live pre-copy at 64 MiB/s, default schedule: converges at    40 s       13,098 pages lost
the 2000 ms step once auto-converge has throttled the guest
post-copy after 3-5 stalled passes at 50-64 MiB/s            14-17 s    lost in 5 of 6 runs,
                                                                        1,642-3,285 pages
post-copy at the first memory sample (64 MiB/s or no cap)    0.9-2.1 s  0 in 9 runs
not live (paused for the copy, 64 MiB/s)                     4.3-5.6 s  0 in 5 runs
                                                                        (pause about 3.7 s)
a migration aborted at its deadline (the source keeps it)    -          0, always
==========================================================  =========  ===================

A cap alone does not help: the loss comes with every dirty-bitmap sync while the guest
runs (likely QEMU's TCG keeping a page's fast-path TLB entry after the sync cleared its
dirty bit, so later writes to it go unlogged; KVM logs dirty pages in the kernel). A pass
that ends with the guest paused copies nothing that can go stale; post-copy early in the
first pass leaves only the pages sent before the switch at risk (a clean-clone CI run
once found a guest's virtio ring corrupt after it). So by default (``tcg_pre_copy``
False) a TCG guest is never pre-copied: with post-copy allowed :func:`decide` switches at
the first memory sample and the Migrator holds the stream before the switch at 1 MiB/s
(a few dozen pages), else the Migrator migrates it paused (not live: about memory /
bandwidth of pause). KVM guests keep the schedule above.

**Encryption** (``tls``): the migration stream (memory, and the disks' NBD mirrors) goes
over TLS (``VIR_MIGRATE_TLS``: QEMU's ``tls-creds-x509`` from each host's
``migrate_tls_x509_cert_dir``, the destination's certificate checked against the
migration URI's host). ``None`` (the default) decides by the control channel: on when
both hosts' addresses are ``qemu+tls://`` URIs (:func:`encrypted`), as an operator who
set up TLS for libvirt expects the guests' memory to be protected too; ``True`` forces it
(the hosts must have migration certificates: libvirt refuses otherwise, the guest stays
on its source), ``False`` never. Its cost on the lab is in docs/benchmarks.md.
"""

from __future__ import annotations

import enum

import attrs


@attrs.frozen
class MigrationPolicy:
    bandwidth: int | None = 64  # MiB/s for memory and each copied disk; None = unlimited (loses pages under TCG)
    downtime_schedule: tuple[int, ...] = (100, 150, 200, 300, 400, 500, 1000, 2000, 5000)  # ms, oVirt-like
    stall_iterations: int = 2  # passes whose dirty set did not shrink before the next downtime step
    auto_converge: bool = True
    compression: bool = False
    parallel: int = 1
    post_copy: bool = False  # opt-in, as in oVirt and KubeVirt: a failure after the switch loses the VM
    post_copy_after: float = 0.5  # share of either timeout after which post-copy starts anyway
    tcg_pre_copy: bool = False  # copy a TCG guest's memory while it writes it: loses pages (see above)
    progress_timeout: float = 150.0  # s without the remaining data shrinking
    completion_timeout_per_gib: float = 150.0  # s per GiB of guest memory (and copied disks)
    poll: float = 0.2  # s between job samples
    tls: bool | None = None  # encrypt the stream (VIR_MIGRATE_TLS); None: when both hosts are qemu+tls:// URIs

    def completion_timeout(self, memory_mib: int) -> float:
        return self.completion_timeout_per_gib * max(memory_mib / 1024, 1.0)


def encrypted(policy: MigrationPolicy, source_uri: str, target_uri: str) -> bool:
    """Whether a migration between hosts at these libvirt URIs goes over TLS: the
    policy's ``tls`` when set, else whether both control channels are TLS."""
    if policy.tls is not None:
        return policy.tls
    return all(uri.startswith("qemu+tls://") for uri in (source_uri, target_uri))


@attrs.frozen
class Sample:
    """One look at the migration job (libvirt's job stats). ``total`` is 0 while libvirt
    still copies disks (the memory copy has not begun); ``disk_remaining`` counts the
    copied disks' bytes not yet mirrored."""

    elapsed: float  # s since the migration began
    iteration: int  # memory-copy pass
    remaining: int  # bytes of memory left to copy
    total: int  # bytes of guest memory
    downtime: int | None = None  # ms, the expected final pause
    disk_remaining: int = 0  # bytes of copied disks left to mirror
    disk_total: int = 0  # bytes of copied disks


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
    best_remaining: int | None = None  # least data left seen in the current phase
    best_at: float = 0.0  # when it last shrank
    memory: bool = False  # the memory copy has begun (disks, if any, are mirrored)
    iteration: int = 0  # the last memory-copy pass seen
    pass_low: int | None = None  # the smallest dirty set seen at the start of a pass
    stalled: int = 0  # passes since the dirty set last shrank
    post_copy: bool = False


SHRINK = 0.9  # a pass makes progress when its dirty set is under 90 % of the smallest so far


def decide(policy: MigrationPolicy, seen: Seen, sample: Sample, memory_mib: int, may_post_copy: bool,
           tcg: bool = False) -> tuple[Decision, Seen]:
    """The next action and the updated memory. Pure: time comes from the sample.

    Once post-copy has begun nothing is aborted: only the destination holds the guest's
    current memory, so the migration must finish. Before that: abort at either timeout;
    with post-copy allowed, switch to it at the first memory sample of a ``tcg`` guest
    (unless ``tcg_pre_copy``), or once ``post_copy_after`` of either timeout has gone by
    (a slow guest gets its post-copy before the deadline, whatever its size); and walk the
    downtime schedule, one step per ``stall_iterations`` passes whose dirty set did not
    shrink, then post-copy when the schedule is exhausted."""
    if seen.post_copy:
        return Decision(Act.CONTINUE, reason="post-copy runs until the destination has every page"), seen
    seen = _observe(seen, sample)
    limit = policy.completion_timeout(memory_mib)
    idle = sample.elapsed - seen.best_at
    if sample.elapsed > limit:
        return Decision(Act.ABORT, reason=f"not complete after {sample.elapsed:.0f} s "
                        f"(limit {limit:.0f} s for {memory_mib} MiB)"), seen
    if idle > policy.progress_timeout:
        return Decision(Act.ABORT, reason=f"no progress for {idle:.0f} s "
                        f"(limit {policy.progress_timeout:.0f} s)"), seen
    post_copy = policy.post_copy and may_post_copy and seen.memory
    if post_copy and tcg and not policy.tcg_pre_copy:
        return Decision(Act.POST_COPY, reason="TCG guest: no memory copied while it writes"), \
            attrs.evolve(seen, post_copy=True)
    if post_copy and (sample.elapsed >= policy.post_copy_after * limit
                      or idle >= policy.post_copy_after * policy.progress_timeout):
        return Decision(Act.POST_COPY, reason=f"deadline near ({sample.elapsed:.0f} s, {idle:.0f} s without "
                        "progress)"), attrs.evolve(seen, post_copy=True)
    if seen.stalled >= policy.stall_iterations:
        seen = attrs.evolve(seen, stalled=0)
        if seen.step + 1 < len(policy.downtime_schedule):
            seen = attrs.evolve(seen, step=seen.step + 1)
            return Decision(Act.RAISE_DOWNTIME, policy.downtime_schedule[seen.step],
                            f"{policy.stall_iterations} passes without progress"), seen
        if post_copy:
            return Decision(Act.POST_COPY, reason="downtime schedule exhausted"), attrs.evolve(seen, post_copy=True)
    return Decision(Act.CONTINUE), seen


def _observe(seen: Seen, sample: Sample) -> Seen:
    """Progress (the data left shrinking: disks first, then memory) and stalled passes."""
    memory = sample.total > 0 or sample.iteration > 0
    if memory and not seen.memory:  # disks mirrored, memory copy begun: a new measure of progress
        seen = attrs.evolve(seen, memory=True, best_remaining=None, best_at=sample.elapsed)
    left = sample.remaining if memory else sample.disk_remaining
    if seen.best_remaining is None or left < seen.best_remaining:
        seen = attrs.evolve(seen, best_remaining=left, best_at=sample.elapsed)
    if not memory or sample.iteration <= seen.iteration:
        return seen
    passes = sample.iteration - seen.iteration  # more than one when passes are shorter than a poll
    if seen.pass_low is None or sample.remaining < SHRINK * seen.pass_low:
        return attrs.evolve(seen, iteration=sample.iteration, pass_low=sample.remaining, stalled=0)
    return attrs.evolve(seen, iteration=sample.iteration, stalled=seen.stalled + passes)
