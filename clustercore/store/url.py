"""Opening a store from its URL: ``memory://`` or ``etcd://host[:port],host[:port]``.

``memory://`` is the embedded memory store (one process). ``etcd://`` (or ``http://``)
lists etcd members; a member without a port is on etcd's client port 2379. The etcd store
needs the ``etcd`` extra: without it, opening one raises ImportError naming
``pip install 'clustercore[etcd]'``. A URL of neither kind raises ValidationError.
"""

from __future__ import annotations

from clustercore.errors import ValidationError
from clustercore.store.base import Store
from clustercore.store.memory import MemoryStore

SCHEMES = ("memory://", "etcd://", "http://")
ETCD_EXTRA = "pip install 'clustercore[etcd]'"


def open_store(url: str, prefix: str = "/clustercore/") -> Store:
    """The store ``url`` names; ``prefix`` is the cluster's key prefix in etcd."""
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith(("etcd://", "http://")):
        try:
            from clustercore.store.etcd import EtcdStore
        except ImportError as exc:
            raise ImportError(f"the etcd store needs the etcd extra ({exc}): {ETCD_EXTRA}", name=exc.name) from exc
        return EtcdStore(url, prefix=prefix)
    raise ValidationError("store URL", "scheme", "must be memory:// or etcd://host[:port],host[:port]...", url)
