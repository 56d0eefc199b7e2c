"""Ganeti IAllocator adapter: clustercore's scheduler answering Ganeti's allocator protocol.

``clustercore-iallocator FILE`` reads an IAllocator request (version 2) and prints
``{"success", "info", "result"}`` exactly as Ganeti's ``hail`` does, for ``allocate`` (one
node, or two for DRBD: primary and secondary), ``relocate`` (a new DRBD secondary),
``multi-allocate`` and ``node-evacuate`` (with the opcodes Ganeti runs).

How Ganeti's cluster maps onto the scheduler's snapshot (one host per node):

* memory: allocatable is the node's free memory above its N+1 reserve (``rMem``: the
  most memory any one primary would fail over onto it as a DRBD secondary), so the
  generic resource filter refuses what would break N+1;
* cpu: allocatable is ``total_cpus - reserved_cpus``, used the vCPUs of its primaries,
  with the group's ``vcpu-ratio`` as the CPU overcommit ratio;
* ``disk`` (MiB) and ``spindles`` (with exclusive storage) are extended resources;
* offline nodes are Down, drained or non-vm-capable ones unschedulable;
* Ganeti's own rules are filters (exclusion tags), and the weigher is a Ganeti-style
  cluster score (lower is better; see :func:`group_score`), so the engine picks what hail
  would: the placement leaving the group best balanced.

A DRBD secondary takes the instance's disk and raises its N+1 reserve; that is recorded as
a second reservation on the secondary, so later decisions in a batch see it.
Malformed input gives ``success: false`` with what was wrong; never a traceback. Every
value is read through :mod:`~clustercore.adapters.ganeti.validate` (its docstring lists the
limits and where we deliberately differ from hail).
"""

from clustercore.adapters.ganeti.allocator import Allocator, Choice, ExclusionTagsFilter
from clustercore.adapters.ganeti.cli import main
from clustercore.adapters.ganeti.cluster import (
    EXCLUSION_PREFIX,
    MIRRORED,
    SHARED,
    UNLIMITED,
    GanetiCluster,
    Group,
    RequestError,
    Spec,
    need,
)
from clustercore.adapters.ganeti.handlers import HANDLERS, answer, answer_text, reply
from clustercore.adapters.ganeti.score import RAW, WEIGHTS, GanetiScoreWeigher, group_score, node_metrics, score_after
from clustercore.adapters.ganeti.validate import (
    MAX_CPUS,
    MAX_DISK,
    MAX_MEMORY,
    MAX_REQUEST_BYTES,
    check_document,
    decode,
)

__all__ = [
    "EXCLUSION_PREFIX",
    "HANDLERS",
    "MAX_CPUS",
    "MAX_DISK",
    "MAX_MEMORY",
    "MAX_REQUEST_BYTES",
    "MIRRORED",
    "RAW",
    "SHARED",
    "UNLIMITED",
    "WEIGHTS",
    "Allocator",
    "Choice",
    "ExclusionTagsFilter",
    "GanetiCluster",
    "GanetiScoreWeigher",
    "Group",
    "RequestError",
    "Spec",
    "answer",
    "answer_text",
    "check_document",
    "decode",
    "group_score",
    "main",
    "need",
    "node_metrics",
    "reply",
    "score_after",
]
