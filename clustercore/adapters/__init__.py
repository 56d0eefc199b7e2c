"""Embedding clustercore in other orchestrators: Ganeti (IAllocator)."""
