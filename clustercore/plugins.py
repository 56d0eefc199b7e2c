"""Loading flavors and calling them: a typed facade over pluggy.

``Plugins()`` loads every flavor installed under the entry-point group
``clustercore.flavors`` (built-in ones included), plus any passed explicitly, checks that
no hook implementation is unknown (``check_pending``), and collects what flavors register.
An installed flavor whose imports fail (an extra not installed) is skipped with one
:class:`FlavorSkipped` warning naming the extra to install. Callers use the typed methods;
nobody outside this module calls ``pm.hook``.

Every hook call goes through pluggy's own call path, so hook wrappers
(``@hookimpl(wrapper=True)``), ``pm.enable_tracing()`` and ``pm.add_hookcall_monitoring()``
apply. Each flavor is called through a subset of the hook holding only its own
implementations (``pm.subset_hook_caller``): its wrappers wrap its own call, a failure is
attributed to the flavor that raised it, and where one flavor's failure must not stop the
others (bootstrap, soft fence, liveness, transitions) the others are still called.
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from clustercore import hookspecs
from clustercore.driver import VolumeDriver, WorkloadDriver
from clustercore.errors import FlavorError, UnknownFlavor, ValidationError
from clustercore.model import RESOURCE_RE, FrozenMap, Host, Workload, freeze
from clustercore.scheduling.engine import Filter, HostFilter, HostWeigher, Weigher, as_filter, as_weigher
from clustercore.scheduling.policies import POLICIES, Policy
from clustercore.statistics import Sample

if TYPE_CHECKING:
    from clustercore.config import ClusterConfig
    from clustercore.storage import StorageView

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "clustercore.flavors"
hookimpl = pluggy.HookimplMarker(hookspecs.PROJECT)


@attrs.frozen
class HostDescription:
    """What one flavor discovered on a host (see ``clustercore_describe_host``)."""

    facts: FrozenMap[str, Any] = attrs.field(factory=FrozenMap, converter=freeze)
    extended: FrozenMap[str, int] = attrs.field(factory=FrozenMap, converter=freeze)


@attrs.frozen
class HostProbe:
    """What a flavor found a host to reach (see ``clustercore_probe_host``)."""

    storage: frozenset[str] = frozenset()
    networks: frozenset[str] = frozenset()
    free: FrozenMap[str, int] = attrs.field(factory=FrozenMap, converter=freeze)
    """MiB free on each reached domain, as the host sees it (where the flavor can tell)."""


class Registry:
    """Where flavors hand over their objects (``clustercore_register``)."""

    def __init__(self) -> None:
        self.drivers: dict[str, WorkloadDriver] = {}
        self.filters: list[Filter | HostFilter] = []
        self.weighers: list[Weigher | HostWeigher] = []
        self.policies: dict[str, Policy] = {}
        self.volume_drivers: list[tuple[str, VolumeDriver]] = []

    def add_driver(self, driver: WorkloadDriver) -> None:
        if not isinstance(driver, WorkloadDriver):
            raise TypeError(f"{driver!r} is not a WorkloadDriver (needs flavor, live_migration, start, stop, "
                            "migrate, inspect)")
        if driver.flavor in self.drivers:
            raise ValueError(f"a driver for flavor {driver.flavor!r} is already registered")
        self.drivers[driver.flavor] = driver

    def add_volume_driver(self, driver: VolumeDriver) -> None:
        """What keeps volumes' data on the flavor's hosts (:mod:`clustercore.volumes`)."""
        if not isinstance(driver, VolumeDriver):
            raise TypeError(f"{driver!r} is not a VolumeDriver (needs create_volume, delete_volume, resize_volume)")
        self.volume_drivers.append((type(driver).__name__, driver))

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


class FlavorSkipped(UserWarning):
    """An installed flavor could not be imported (its extra is not installed): ``flavor``
    is its entry-point name, ``problem`` the import error, ``install`` what to run."""

    def __init__(self, flavor: str, problem: str, install: str) -> None:
        self.flavor = flavor
        self.problem = problem
        self.install = install
        super().__init__(f"flavor {flavor!r} skipped: {problem}; install it with {install}")


def install_hint(entry_point: importlib.metadata.EntryPoint) -> str:
    """What to install for ``entry_point``'s flavor: ``pip install 'dist[extra]'`` from the
    extras written in the entry point (``virt = "flavors.virt:flavor [virt]"``), else the
    distribution's extra named like the entry point, else the distribution itself."""
    dist = entry_point.dist
    if dist is None:
        return "its missing dependencies"
    extras = list(entry_point.extras)
    if not extras and entry_point.name in (dist.metadata.get_all("Provides-Extra") or ()):
        extras = [entry_point.name]
    return f"pip install '{dist.name}[{','.join(extras)}]'" if extras else f"pip install '{dist.name}'"


class Plugins:
    """The loaded flavors, with a typed method for every hook. ``skipped`` holds the
    installed flavors that could not be imported, by entry-point name."""

    def __init__(self, flavors: Iterable[object] = (), *, entry_points: bool = True) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.skipped: dict[str, FlavorSkipped] = {}
        self._callers: dict[str, list[tuple[str, pluggy.HookCaller]]] = {}
        if entry_points:
            self._load_entry_points()
        for flavor in flavors:
            self.pm.register(flavor, name=flavor_name(flavor))
        self.pm.check_pending()
        self.pm.hook.clustercore_register.call_historic(kwargs={"registry": self.registry})

    def _load_entry_points(self) -> None:
        for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            name = entry_point.name
            if self.pm.get_plugin(name) is not None or self.pm.is_blocked(name):
                continue
            try:
                plugin = entry_point.load()
            except ImportError as exc:  # ModuleNotFoundError too: an extra that is not installed
                skipped = FlavorSkipped(name, str(exc), install_hint(entry_point))
                log.debug("%s", skipped, exc_info=True)
                self.skipped[name] = skipped
                warnings.warn(skipped, stacklevel=3)
                continue
            self.pm.register(plugin, name=name)

    def add(self, flavor: object) -> None:
        """Load one more flavor (it receives ``clustercore_register`` at once)."""
        self.pm.register(flavor, name=flavor_name(flavor))
        self._callers.clear()  # every flavor's subset callers now have one more to leave out
        self.pm.check_pending()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(name for name, plugin in self.pm.list_name_plugin() if plugin is not None))

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

    # ------------------------------------------------------------------ calling hooks

    def callers(self, hook: str) -> list[tuple[str, pluggy.HookCaller]]:
        """``(flavor, caller)`` for every flavor implementing ``hook``, in pluggy's call
        order; each caller is ``pm.hook.<hook>`` restricted to that flavor's implementations
        (its wrappers included). Built once per hook, again after :meth:`add`."""
        found = self._callers.get(hook)
        if found is None:
            everyone = [(name, plugin) for name, plugin in self.pm.list_name_plugin() if plugin is not None]
            order: list[str] = []
            for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
                if impl.plugin_name not in order:
                    order.append(impl.plugin_name)
            found = [(flavor, self.pm.subset_hook_caller(hook, [p for name, p in everyone if name != flavor]))
                     for flavor in order]
            self._callers[hook] = found
        return found

    def _call(self, flavor: str, caller: pluggy.HookCaller, **kwargs: Any) -> Any:
        """One flavor's answer to a hook (None when it has none); FlavorError when it raises
        or answers more than once."""
        try:
            results = caller(**kwargs)
        except Exception as exc:
            raise FlavorError(flavor, caller.name, f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(results, list) or len(results) > 1:
            raise FlavorError(flavor, caller.name, f"answered {results!r}, not one answer (a wrapper must "
                                                   "return the list it got)")
        return results[0] if results else None

    def _each(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Every flavor's answer to ``hook``: (flavor, answer) pairs; the first failure raises."""
        return [(flavor, self._call(flavor, caller, **kwargs)) for flavor, caller in self.callers(hook)]

    def _each_quiet(self, hook: str, **kwargs: Any) -> list[tuple[str, Any]]:
        """Like :meth:`_each`, but a failing flavor is logged and left out."""
        results = []
        for flavor, caller in self.callers(hook):
            try:
                results.append((flavor, self._call(flavor, caller, **kwargs)))
            except FlavorError:
                log.exception("flavor %s failed in %s", flavor, hook)
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
        for flavor, caller in self.callers("clustercore_bootstrap_host"):
            try:
                answer = self._call(flavor, caller, host=host)
            except FlavorError as exc:  # a crashing bootstrap is a failed bootstrap
                log.warning("flavor %s failed bootstrapping %s", flavor, host.name, exc_info=True)
                answer = exc.problem
            if answer is not None:
                problems[flavor] = str(answer)
        return problems

    def complete_workload(self, workload: Workload, workloads: Mapping[str, Workload], config: ClusterConfig,
                          storage: StorageView) -> Workload:
        """``workload`` with what the flavors fill in (each flavor's answer handed to the
        next), checked again as a definition; ValidationError, FlavorError."""
        for flavor, caller in self.callers("clustercore_complete_workload"):
            answer = self._checked(flavor, caller, workload=workload, workloads=workloads, config=config,
                                   storage=storage)
            if answer is None:
                continue
            if not isinstance(answer, Workload) or (answer.name, answer.flavor) != (workload.name, workload.flavor):
                raise FlavorError(flavor, "clustercore_complete_workload",
                                  f"returned {answer!r}, not the workload {workload.name!r} completed")
            workload = Workload.from_dict(answer.to_dict())
        return workload

    def validate_workload(self, workload: Workload, workloads: Mapping[str, Workload],
                          config: ClusterConfig, storage: StorageView | None = None) -> None:
        """Every flavor checks ``workload`` before it is written: ValidationError (naming the
        field) when one refuses, FlavorError when one fails."""
        if storage is None:
            from clustercore.storage import StorageView

            storage = StorageView()
        for flavor, caller in self.callers("clustercore_validate_workload"):
            refusal = self._checked(flavor, caller, workload=workload, workloads=workloads, config=config,
                                    storage=storage)
            if refusal is not None:
                raise ValidationError("workload", "spec", f"{flavor}: {refusal}", workload.name)

    def _checked(self, flavor: str, caller: pluggy.HookCaller, **kwargs: Any) -> Any:
        """One flavor's answer where a ValidationError it raises is the user's, as is."""
        try:
            answer = caller(**kwargs)
        except ValidationError:
            raise
        except Exception as exc:
            raise FlavorError(flavor, caller.name, f"{type(exc).__name__}: {exc}") from exc
        return next((a for a in answer if a is not None), None) if isinstance(answer, list) else answer

    def configure(self, config: ClusterConfig) -> None:
        """Every flavor takes the cluster's config (failures logged)."""
        self._each_quiet("clustercore_configure", config=config)

    def implements(self, hook: str) -> bool:
        """Whether any loaded flavor implements ``hook``."""
        return bool(self.callers(hook))

    def probe_host(self, host: Host, storage: Sequence[Any], networks: Sequence[Any]) -> HostProbe | None:
        """The flavors' probes of ``host`` merged (None when none knows); FlavorError when one fails."""
        found: HostProbe | None = None
        for flavor, answer in self._each("clustercore_probe_host", host=host, storage=tuple(storage),
                                         networks=tuple(networks)):
            if answer is None:
                continue
            if not isinstance(answer, HostProbe):
                raise FlavorError(flavor, "clustercore_probe_host", f"returned {answer!r}, not a HostProbe")
            found = answer if found is None else HostProbe(found.storage | answer.storage,
                                                           found.networks | answer.networks,
                                                           {**found.free, **answer.free})
        return found

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

    def host_alive(self, host: Host, workloads: Sequence[Workload] = ()) -> bool:
        """Whether any flavor's liveness witness says ``host`` (running ``workloads``) is alive."""
        return any(bool(answer) for _, answer in self._each_quiet("clustercore_host_alive", host=host,
                                                                  workloads=tuple(workloads)))

    def sample_host(self, host: Host, workloads: Sequence[Workload] = ()) -> Sample | None:
        """The flavors' samples of ``host`` merged: the first one's host counters, every
        one's workloads (None when none measures it); FlavorError when one fails."""
        found: Sample | None = None
        for flavor, answer in self._each("clustercore_sample_host", host=host, workloads=tuple(workloads)):
            if answer is None:
                continue
            if not isinstance(answer, Sample):
                raise FlavorError(flavor, "clustercore_sample_host", f"returned {answer!r}, not a Sample")
            found = answer if found is None else attrs.evolve(found, workloads={**found.workloads,
                                                                                **answer.workloads})
        return found

    def upgrade_host(self, host: Host) -> bool:
        """Every flavor upgrades ``host``; True when one of them started a reboot."""
        return any(bool(answer) for _, answer in self._each("clustercore_upgrade_host", host=host))

    def host_transition(self, old: Host, new: Host, event: str, reason: str) -> list[FlavorError]:
        """Tell every flavor; returns the failures (logged) instead of raising."""
        failures = []
        for flavor, caller in self.callers("clustercore_host_transition"):
            try:
                self._call(flavor, caller, old=old, new=new, event=event, reason=reason)
            except FlavorError as error:
                log.error("%s", error, exc_info=True)
                failures.append(error)
        return failures
