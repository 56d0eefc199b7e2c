"""Opening a store from its URL: ``memory://``, ``etcd://host[:port],host[:port]`` or
``etcds://...`` (etcd over TLS).

``memory://`` is the embedded memory store (one process). ``etcd://`` (or ``http://``)
lists etcd members, ``etcds://`` (``https://``, ``etcd+https://``) members over TLS; a
member without a port is on etcd's client port 2379. The etcd store needs the ``etcd``
extra: without it, opening one raises ImportError naming ``pip install
'clustercore[etcd]'``. A URL of neither kind raises ValidationError.
"""

from __future__ import annotations

from clustercore.errors import ValidationError
from clustercore.store.base import Store
from clustercore.store.memory import MemoryStore

ETCD_SCHEMES = ("etcd://", "http://", "etcds://", "https://", "etcd+https://")
SCHEMES = ("memory://", *ETCD_SCHEMES)
ETCD_EXTRA = "pip install 'clustercore[etcd]'"


def open_store(url: str, prefix: str = "/clustercore/", *, ca: str | None = None, cert: str | None = None,
               key: str | None = None, user: str | None = None, password_file: str | None = None) -> Store:
    """The store ``url`` names; ``prefix`` is the cluster's key prefix in etcd; the rest
    say how to reach a secured etcd (``ca``, ``cert``, ``key``, ``user``, ``password_file``:
    :meth:`~clustercore.store.etcd_access.EtcdAccess.from_options`, the environment
    filling in what is not given)."""
    if url.startswith("memory://"):
        return MemoryStore()
    if url.startswith(ETCD_SCHEMES):
        try:
            from clustercore.store.etcd import EtcdStore
            from clustercore.store.etcd_access import EtcdAccess
        except ImportError as exc:
            raise ImportError(f"the etcd store needs the etcd extra ({exc}): {ETCD_EXTRA}", name=exc.name) from exc
        return EtcdStore(url, prefix=prefix, access=EtcdAccess.from_options(ca, cert, key, user, password_file))
    raise ValidationError("store URL", "scheme", "must be memory://, etcd://host[:port],host[:port]... or etcds:// "
                          "(TLS)", url)
