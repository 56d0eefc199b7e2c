"""Ganeti IAllocator adapter: ``clustercore-iallocator`` answering Ganeti's allocator protocol
as hail 3.0.2 does.

``clustercore-iallocator [OPTION...] FILE`` reads an IAllocator request (version 2) and
prints ``{"success", "info", "result"}``: the answer, info text and failure counts hail gives
for ``allocate``, ``multi-allocate``, ``relocate``, ``node-evacuate``, ``change-group`` and
``allocate-secondary``, with hail's options (``--no-capacity-checks``,
``--ignore-soft-errors``, ``--restrict-allocation-to=``, ``--static-kvm-node-memory=``).
docs/ganeti.md describes it, the differential tests against the real hail, and the cases
where parity is knowingly not attempted.

The modules: :mod:`.hnode` (htools' node and instance bookkeeping), :mod:`.hload` (the
request's cluster as hail loads it), :mod:`.hmetrics` (hbal's cluster score), :mod:`.hail`
(allocation, group choice, global N+1 capacity checks), :mod:`.hevac` (moves and
evacuations), :mod:`.hdedicated` (dedicated clusters), :mod:`.hmodes` (requests and
answers); :mod:`.validate` reads every value first (its docstring lists the limits), so
malformed input gives ``success: false`` with what was wrong, never a traceback.

Dedicated clusters (every usable node with exclusive storage) are answered by
:mod:`.hdedicated`, as hail does, by lost allocations. :mod:`.cluster` checks the request
file first, :mod:`.handlers` dispatches it, :mod:`.cli` is the program.
"""

from clustercore.adapters.ganeti.cli import main
from clustercore.adapters.ganeti.cluster import MIRRORED, SHARED, RequestError, Spec, check, need
from clustercore.adapters.ganeti.handlers import HANDLERS, answer, answer_text, reply
from clustercore.adapters.ganeti.validate import (
    MAX_CPUS,
    MAX_DISK,
    MAX_MEMORY,
    MAX_REQUEST_BYTES,
    check_document,
    decode,
)

__all__ = [
    "HANDLERS",
    "MAX_CPUS",
    "MAX_DISK",
    "MAX_MEMORY",
    "MAX_REQUEST_BYTES",
    "MIRRORED",
    "SHARED",
    "RequestError",
    "Spec",
    "answer",
    "answer_text",
    "check",
    "check_document",
    "decode",
    "main",
    "need",
    "reply",
]
