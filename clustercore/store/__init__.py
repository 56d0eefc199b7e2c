"""State stores: the contract (:mod:`.base`) and the embedded memory store (:mod:`.memory`)."""

from clustercore.store.base import Check, Delete, EventType, KeyValue, Put, Store, StoreEvent, Watch

__all__ = ["Check", "Delete", "EventType", "KeyValue", "Put", "Store", "StoreEvent", "Watch"]
