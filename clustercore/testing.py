"""Tools for testing clusters and flavors: ``FakeClock``, ``FakeFlavor`` and ``check_flavor``.

``check_flavor(flavor, host, workload)`` is the conformance suite every flavor author runs
(the built-in flavors run it too). It loads the flavor the way the core does, calls every
hook it implements and drives its workload driver through start, inspect, (migrate) and
stop on the host the author names, then either returns the list of checks that passed or
raises :class:`~clustercore.errors.ConformanceError` listing every broken promise.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence

import attrs
import numpy as np

from clustercore import hookspecs
from clustercore.clock import FakeClock
from clustercore.driver import CAPABILITIES, MovabilityDriver, WorkloadDriver, WorkloadState
from clustercore.errors import ConformanceError
from clustercore.etcdcluster import EtcdCluster
from clustercore.model import Host, HostState, Workload
from clustercore.plugins import HostDescription, Plugins, Registry, flavor_name, hookimpl
from clustercore.scheduling.engine import Filter, HostFilter, HostWeigher, Weigher, as_filter, as_weigher
from clustercore.scheduling.snapshot import Snapshot
from clustercore.statistics import Counters, Sample

__all__ = ["EtcdCluster", "FakeClock", "FakeDriver", "FakeFlavor", "check_flavor"]


class FakeDriver:
    """Runs nothing: remembers which workload runs on which host. ``fail`` holds
    ``(operation, host)`` pairs that raise, for fault injection."""

    live_migration = True

    def __init__(self, flavor: str = "fake") -> None:
        self.flavor = flavor
        self.running: dict[str, set[str]] = {}
        self.fail: set[tuple[str, str]] = set()

    def _check(self, operation: str, host: Host) -> None:
        if (operation, host.name) in self.fail:
            raise RuntimeError(f"injected failure: {operation} on {host.name}")

    def where(self, workload: str) -> list[str]:
        """Every host the workload runs on (more than one would be a disaster)."""
        return sorted(h for h, names in self.running.items() if workload in names)

    def start(self, workload: Workload, host: Host) -> None:
        self._check("start", host)
        self.running.setdefault(host.name, set()).add(workload.name)

    def stop(self, workload: Workload, host: Host, force: bool = False) -> None:
        self._check("stop", host)
        self.running.get(host.name, set()).discard(workload.name)

    def migrate(self, workload: Workload, source: Host, target: Host) -> None:
        self._check("migrate", source)
        self._check("migrate", target)
        self.running.setdefault(target.name, set()).add(workload.name)
        self.running.get(source.name, set()).discard(workload.name)

    def inspect(self, workload: Workload, host: Host) -> WorkloadState:
        return WorkloadState.RUNNING if workload.name in self.running.get(host.name, ()) else WorkloadState.ABSENT


class FakeFlavor:
    """A flavor for tests and simulations: hosts need nothing, workloads run nowhere.

    ``refuse`` maps host names to a bootstrap refusal; ``veto`` is a maintenance veto for
    every host; ``extended`` is offered on every host; ``transitions`` records what the
    flavor was told. With a ``clock`` the flavor measures its hosts
    (``clustercore_sample_host``): each running workload keeps ``usage[name]`` CPUs busy
    (0 when unset) and has ``resident[name]`` MiB resident (its requested memory when unset);
    a host's other CPUs are idle."""

    def __init__(self, name: str = "fake", *, refuse: dict[str, str] | None = None, veto: str | None = None,
                 extended: dict[str, int] | None = None, clock: Callable[[], float] | None = None) -> None:
        self.name = name
        self.clock = clock
        self.usage: dict[str, float] = {}
        self.resident: dict[str, float] = {}
        self._meters: dict[str, tuple[float, float, dict[str, float]]] = {}  # host -> (at, busy s, cpu s each)
        self.driver = FakeDriver(name)
        self.refuse = dict(refuse or {})
        self.veto = veto
        self.extended = dict(extended or {})
        self.transitions: list[tuple[str, str, str]] = []

    @hookimpl
    def clustercore_register(self, registry: Registry) -> None:
        registry.add_driver(self.driver)

    @hookimpl
    def clustercore_bootstrap_host(self, host: Host) -> str | None:
        return self.refuse.get(host.name)

    @hookimpl
    def clustercore_describe_host(self, host: Host) -> HostDescription:
        return HostDescription(facts={"simulated": True}, extended=self.extended)

    @hookimpl
    def clustercore_maintenance_veto(self, host: Host) -> str | None:
        return self.veto

    @hookimpl
    def clustercore_host_transition(self, old: Host, new: Host, event: str) -> None:
        self.transitions.append((new.name, event, str(new.state)))

    @hookimpl
    def clustercore_sample_host(self, host: Host, workloads: Sequence[Workload]) -> Sample | None:
        if self.clock is None:
            return None
        now = self.clock()
        at, busy, each = self._meters.get(host.name, (now, 0.0, {}))
        running = self.driver.running.get(host.name, set())
        ours = {w.name: w for w in workloads if w.name in running}
        for name in ours:
            each[name] = each.get(name, 0.0) + self.usage.get(name, 0.0) * (now - at)
        busy += min(host.capacity.cpu, sum(self.usage.get(n, 0.0) for n in ours)) * (now - at)
        self._meters[host.name] = (now, busy, each)
        resident = {n: self.resident.get(n, float(w.requests.memory)) for n, w in ours.items()}
        return Sample(now, int(host.capacity.cpu), int(busy * 1e9), int((host.capacity.cpu * now - busy) * 1e9),
                      float(host.capacity.memory), float(host.capacity.memory - sum(resident.values())),
                      workloads={n: Counters(int(each[n] * 1e9), resident[n]) for n in ours})


# --------------------------------------------------------------------------- conformance


@attrs.frozen
class ConformanceReport:
    flavor: str
    passed: tuple[str, ...]


class _Checker:
    def __init__(self) -> None:
        self.passed: list[str] = []
        self.failures: list[str] = []

    def expect(self, ok: bool, check: str, problem: str) -> bool:
        (self.passed if ok else self.failures).append(check if ok else f"{check}: {problem}")
        return ok


def _hook_names(flavor: object) -> list[str]:
    return [n for n in dir(flavor) if n.startswith("clustercore_")]


def check_flavor(flavor: object, host: Host, workload: Workload, target: Host | None = None) -> ConformanceReport:
    """Check that ``flavor`` keeps the flavor contract, using ``host`` (a host it can run
    ``workload`` on) and, when the driver moves workloads, ``target`` (a second one).

    Raises ConformanceError listing every failure; returns the passed checks otherwise.
    The workload is stopped again at the end, whatever happened.
    """
    c = _Checker()
    try:
        name = flavor_name(flavor)
    except TypeError as exc:
        raise ConformanceError(repr(flavor), [f"name: {exc}"]) from None
    known = {n for n in dir(hookspecs) if n.startswith("clustercore_")}
    unknown = sorted(set(_hook_names(flavor)) - known)
    c.expect(not unknown, "hook names",
             f"{', '.join(unknown)} is not a clustercore hook (known: {', '.join(sorted(known))})")
    try:
        plugins = Plugins([flavor], entry_points=False)
    except Exception as exc:
        c.failures.append(f"loading: {type(exc).__name__}: {exc}")
        raise ConformanceError(name, c.failures) from None
    c.passed.append("loading")

    drivers = plugins.registry.drivers
    c.expect(bool(drivers), "registers a driver", "clustercore_register added no WorkloadDriver")
    driver = drivers.get(workload.flavor)
    c.expect(driver is not None, "driver for the workload", f"no driver for flavor {workload.flavor!r} "
             f"(registered: {', '.join(sorted(drivers)) or 'none'})")
    if driver is not None:
        c.expect(isinstance(getattr(driver, "live_migration", None), bool), "driver.live_migration",
                 "must be True or False")
        _check_capabilities(c, driver, workload)

    snap = Snapshot.build([attrs.evolve(host, state=HostState.UP), attrs.evolve(host, name=f"{host.name}-twin")])
    _check_plugins(c, plugins.filters, plugins.weighers, workload, snap)

    _check_hooks(c, plugins, host, workload)

    if driver is not None:
        _check_driver(c, driver, host, workload, target)
    if c.failures:
        raise ConformanceError(name, c.failures)
    return ConformanceReport(name, tuple(c.passed))


def _check_hooks(c: _Checker, plugins: Plugins, host: Host, workload: Workload) -> None:
    """Every hook answers the sample host without raising, in the documented form."""
    try:
        refused = plugins.bootstrap_host(host)
        c.expect(not refused, "clustercore_bootstrap_host", f"refused the sample host {host.name!r}: {refused}")
        plugins.describe_host(host)  # validates the answer's form, raising FlavorError
        c.passed.append("clustercore_describe_host")
        plugins.maintenance_vetoes(host, [workload])
        c.passed.append("clustercore_maintenance_veto")
    except Exception as exc:
        c.failures.append(f"{type(exc).__name__}: {exc}")
    failed = plugins.host_transition(host, attrs.evolve(host, state=HostState.UP), "initialized", "conformance check")
    c.expect(not failed, "clustercore_host_transition", "; ".join(str(f) for f in failed))


def _check_capabilities(c: _Checker, driver: WorkloadDriver, workload: Workload) -> None:
    """A driver that defines an optional capability's method (``movable``, ``settle``...)
    keeps that capability's protocol: callable with its arguments; ``movable`` answers a bool."""
    for method, protocol in CAPABILITIES.items():
        if not hasattr(driver, method):
            continue
        wanted = list(inspect.signature(getattr(protocol, method)).parameters)[1:]  # without self
        shape = f"{protocol.__name__}.{method}({', '.join(wanted)})"
        found = getattr(driver, method)
        if not callable(found):
            c.failures.append(f"driver.{method}: is {found!r}, not a method (see {shape})")
            continue
        try:
            inspect.signature(found).bind(*wanted)
        except TypeError as exc:
            c.failures.append(f"driver.{method}: cannot be called as {shape}: {exc}")
            continue
        except ValueError:  # no signature to read (a builtin): trust it
            pass
        c.passed.append(f"driver.{method}")
    if isinstance(driver, MovabilityDriver) and "driver.movable" in c.passed:
        try:
            answer = driver.movable(workload)
            c.expect(isinstance(answer, bool), "driver.movable answers", f"returned {answer!r}, not True or False")
        except Exception as exc:
            c.failures.append(f"driver.movable: raised {type(exc).__name__}: {exc}")


def _check_plugins(c: _Checker, filters: Sequence[Filter | HostFilter], weighers: Sequence[Weigher | HostWeigher],
                   workload: Workload, snap: Snapshot) -> None:
    candidates = np.arange(snap.size)
    for plugin in filters:
        f = as_filter(plugin)
        try:
            verdict = f.filter(workload, snap, candidates)
            ok = all(isinstance(r, str) and r and np.shape(m) == (snap.size,) for r, m in verdict.items())
            c.expect(ok, f"filter {f.name}", f"must give non-empty reasons with one flag per host, got {verdict!r}")
        except Exception as exc:
            c.failures.append(f"filter {f.name}: raised {type(exc).__name__}: {exc}")
    for weigher in weighers:
        w, factor = as_weigher(weigher)
        try:
            scores = np.asarray(w.weigh(workload, snap, candidates), dtype=float)
            c.expect(scores.shape == (snap.size,) and bool(np.isfinite(scores).all()), f"weigher {w.name}",
                     f"must give one finite score per candidate, got {scores!r}")
            c.expect(math.isfinite(factor), f"weigher {w.name} multiplier", f"must be finite, got {factor!r}")
        except Exception as exc:
            c.failures.append(f"weigher {w.name}: raised {type(exc).__name__}: {exc}")


def _state(c: _Checker, driver: WorkloadDriver, workload: Workload, host: Host, step: str) -> WorkloadState | None:
    try:
        state = driver.inspect(workload, host)
    except Exception as exc:
        c.failures.append(f"driver.inspect {step}: raised {type(exc).__name__}: {exc}")
        return None
    if not isinstance(state, WorkloadState):
        c.failures.append(f"driver.inspect {step}: returned {state!r}, not a WorkloadState")
        return None
    return state


def _check_driver(c: _Checker, driver: WorkloadDriver, host: Host, workload: Workload, target: Host | None) -> None:
    where = host
    try:
        before = _state(c, driver, workload, host, "before start")
        c.expect(before is not WorkloadState.RUNNING, "inspect before start", "says RUNNING before start")
        try:
            driver.start(workload, host)
        except Exception as exc:
            c.failures.append(f"driver.start: raised {type(exc).__name__}: {exc}")
            return
        c.expect(_state(c, driver, workload, host, "after start") is WorkloadState.RUNNING,
                 "start then inspect", f"not RUNNING on {host.name} after start returned")
        if target is not None:
            try:
                driver.migrate(workload, host, target)
                where = target
                c.expect(_state(c, driver, workload, target, "after migrate") is WorkloadState.RUNNING,
                         "migrate: runs on target", f"not RUNNING on {target.name} after migrate returned")
                c.expect(_state(c, driver, workload, host, "source after migrate") is not WorkloadState.RUNNING,
                         "migrate: gone from source", f"still RUNNING on {host.name}: it runs twice")
            except Exception as exc:
                c.failures.append(f"driver.migrate: raised {type(exc).__name__}: {exc}")
                if _state(c, driver, workload, host, "source after failed migrate") is not WorkloadState.RUNNING:
                    c.failures.append("driver.migrate: failed and the workload no longer runs on its source")
        try:
            driver.stop(workload, where)
        except Exception as exc:
            c.failures.append(f"driver.stop: raised {type(exc).__name__}: {exc}")
            return
        c.expect(_state(c, driver, workload, where, "after stop") is not WorkloadState.RUNNING,
                 "stop then inspect", f"still RUNNING on {where.name} after stop returned")
        try:
            driver.stop(workload, where)
            c.passed.append("stop is idempotent")
        except Exception as exc:
            c.failures.append(f"driver.stop twice: raised {type(exc).__name__}: {exc} (must be a no-op)")
    finally:
        for h in {host.name: host, where.name: where}.values():
            try:
                if driver.inspect(workload, h) is WorkloadState.RUNNING:
                    driver.stop(workload, h, force=True)
            except Exception:  # cleanup is best effort; failures were reported above
                pass
