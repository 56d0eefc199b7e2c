"""Loading flavors and calling them: a typed facade over pluggy.

``Plugins()`` loads every flavor installed under the entry-point group
``clustercore.flavors`` (built-in ones included), plus any passed explicitly, checks that
no hook implementation is unknown (``check_pending``), and collects what flavors register.
Callers use its typed methods; nobody outside this module touches ``pm.hook``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
import pluggy

from clustercore import hookspecs
from clustercore.driver import WorkloadDriver
from clustercore.errors import FlavorError, UnknownFlavor
from clustercore.model import RESOURCE_RE, FrozenMap, Host, Workload, freeze
from clustercore.scheduling.engine import Filter, HostFilter, HostWeigher, Weigher, as_filter, as_weigher
from clustercore.scheduling.policies import POLICIES, Policy

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "clustercore.flavors"
hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)


@attrs.frozen
class HostDescription:
    """What one flavor discovered on a host (see ``clustercore_describe_host``)."""

    facts: FrozenMap[str, Any] = attrs.field(factory=FrozenMap, converter=freeze)
    extended: FrozenMap[str, int] = attrs.field(factory=FrozenMap, converter=freeze)


class Registry:
    """Where flavors hand over their objects (``clustercore_register``)."""

    def __init__(self) -> None:
        self.drivers: dict[str, WorkloadDriver] = {}
        self.filters: list[Filter | HostFilter] = []
        self.weighers: list[Weigher | HostWeigher] = []
        self.policies: dict[str, Policy] = {}

    def add_driver(self, driver: WorkloadDriver) -> None:
        if not isinstance(driver, WorkloadDriver):
            raise TypeError(f"{driver!r} is not a WorkloadDriver (needs flavor, live_migration, start, stop, "
                            "migrate, inspect)")
        if driver.flavor in self.drivers:
            raise ValueError(f"a driver for flavor {driver.flavor!r} is already registered")
        self.drivers[driver.flavor] = driver

    def add_filter(self, host_filter: Filter | HostFilter) -> None:
        """A vectorised ``Filter`` or a per-host ``HostFilter`` (see clustercore.scheduling)."""
        as_filter(host_filter)  # TypeError now rather than at the first placement
        self.filters.append(host_filter)

    def add_weigher(self, weigher: Weigher | HostWeigher) -> None:
        """A vectorised ``Weigher`` or a per-host ``HostWeigher`` (which brings its multiplier)."""
        as_weigher(weigher)
        self.weighers.append(weigher)

    def add_policy(self, policy: Policy) -> None:
        """A scheduling policy clusters can select by name."""
        if policy.name in POLICIES or policy.name in self.policies:
            raise ValueError(f"a policy named {policy.name!r} exists already")
        self.policies[policy.name] = policy


def flavor_name(plugin: object) -> str:
    """A flavor's name: its ``name`` attribute (or a module's ``NAME``)."""
    name = getattr(plugin, "name", None) or getattr(plugin, "NAME", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"flavor {plugin!r} needs a non-empty string attribute 'name'")
    return name


class Plugins:
    """The loaded flavors, with a typed method for every hook."""

    def __init__(self, flavors: Iterable[object] = (), *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        if entry_points:
            self.pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        for flavor in flavors:
            self.pm.register(flavor, name=flavor_name(flavor))
        self.pm.check_pending()
        self.pm.hook.clustercore_register.call_historic(kwargs={"registry": self.registry})

    def add(self, flavor: object) -> None:
        """Load one more flavor (it receives ``clustercore_register`` at once)."""
        self.pm.register(flavor, name=flavor_name(flavor))
        self.pm.check_pending()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(name for name, _ in self.pm.list_name_plugin()))

    def driver(self, flavor: str) -> WorkloadDriver:
        try:
            return self.registry.drivers[flavor]
        except KeyError:
            raise UnknownFlavor(flavor, sorted(self.registry.drivers)) from None

    @property
    def filters(self) -> tuple[Filter | HostFilter, ...]:
        return tuple(self.registry.filters)

    @property
    def weighers(self) -> tuple[Weigher | HostWeigher, ...]:
        return tuple(self.registry.weighers)

    def policy(self, name: str) -> Policy:
        """A built-in or flavor-registered policy; ValueError naming the known ones."""
        found = POLICIES.get(name) or self.registry.policies.get(name)
        if found is None:
            known = ", ".join(sorted({*POLICIES, *self.registry.policies}))
            raise ValueError(f"unknown scheduling policy {name!r} (known: {known})")
        return found

    def _each(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Call every implementation of ``hook``; (flavor, result) pairs, failures wrapped."""
        results = []
        caller = getattr(self.pm.hook, hook)
        for impl in reversed(caller.get_hookimpls()):
            args = {name: kwargs[name] for name in impl.argnames}
            try:
                results.append((impl.plugin_name, impl.function(**args)))
            except Exception as exc:
                raise FlavorError(impl.plugin_name, hook, f"{type(exc).__name__}: {exc}") from exc
        return results

    def describe_host(self, host: Host) -> dict[str, HostDescription]:
        """Each flavor's description of ``host``; FlavorError when one fails or answers nonsense."""
        out = {}
        for flavor, desc in self._each("clustercore_describe_host", host=host):
            if desc is None:
                continue
            if not isinstance(desc, HostDescription):
                raise FlavorError(flavor, "clustercore_describe_host", f"returned {desc!r}, not a HostDescription")
            for name, count in desc.extended.items():
                if not RESOURCE_RE.match(name) or isinstance(count, bool) or not isinstance(count, int) or count < 0:
                    raise FlavorError(flavor, "clustercore_describe_host", f"bad extended resource {name!r}={count!r}")
            out[flavor] = desc
        return out

    def bootstrap_host(self, host: Host) -> dict[str, str]:
        """Every flavor's reason to refuse ``host`` (empty when all accept)."""
        problems: dict[str, str] = {}
        for impl in reversed(self.pm.hook.clustercore_bootstrap_host.get_hookimpls()):
            try:
                answer = impl.function(**({"host": host} if "host" in impl.argnames else {}))
            except Exception as exc:  # a crashing bootstrap is a failed bootstrap
                log.warning("flavor %s failed bootstrapping %s", impl.plugin_name, host.name, exc_info=True)
                answer = f"{type(exc).__name__}: {exc}"
            if answer is not None:
                problems[impl.plugin_name] = str(answer)
        return problems

    def maintenance_vetoes(self, host: Host, workloads: Sequence[Workload]) -> dict[str, str]:
        return {
            flavor: str(answer)
            for flavor, answer in self._each("clustercore_maintenance_veto", host=host, workloads=tuple(workloads))
            if answer is not None
        }

    def prepare_maintenance(self, host: Host) -> None:
        self._each("clustercore_prepare_maintenance", host=host)

    def soft_fence(self, host: Host) -> list[str]:
        """The flavors that tried a soft fence of ``host`` (failures are logged, not raised)."""
        return [flavor for flavor, answer in self._each_quiet("clustercore_soft_fence", host=host) if answer]

    def host_alive(self, host: Host) -> bool:
        """Whether any flavor's liveness witness says ``host`` is alive."""
        return any(bool(answer) for _, answer in self._each_quiet("clustercore_host_alive", host=host))

    def _each_quiet(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        results = []
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            try:
                results.append((impl.plugin_name, impl.function(**{n: kwargs[n] for n in impl.argnames})))
            except Exception:
                log.exception("flavor %s failed in %s", impl.plugin_name, hook)
        return results

    def upgrade_host(self, host: Host) -> bool:
        """Every flavor upgrades ``host``; True when one of them started a reboot."""
        return any(bool(answer) for _, answer in self._each("clustercore_upgrade_host", host=host))

    def host_transition(self, old: Host, new: Host, event: str, reason: str) -> list[FlavorError]:
        """Tell every flavor; returns the failures (logged) instead of raising."""
        failures = []
        for impl in reversed(self.pm.hook.clustercore_host_transition.get_hookimpls()):
            kwargs = {"old": old, "new": new, "event": event, "reason": reason}
            try:
                impl.function(**{name: kwargs[name] for name in impl.argnames})
            except Exception as exc:
                error = FlavorError(impl.plugin_name, "clustercore_host_transition", f"{type(exc).__name__}: {exc}")
                log.error("%s", error, exc_info=True)
                failures.append(error)
        return failures

