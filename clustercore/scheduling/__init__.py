"""Placement: filters say where a workload may run, weighers say where it runs best."""

from clustercore.scheduling.engine import (
    DEFAULT_FILTERS,
    DEFAULT_WEIGHERS,
    HostFilter,
    HostView,
    HostWeigher,
    build_views,
    place,
)

__all__ = ["DEFAULT_FILTERS", "DEFAULT_WEIGHERS", "HostFilter", "HostView", "HostWeigher", "build_views", "place"]
