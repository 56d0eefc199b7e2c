"""Kubernetes scheduler extender: clustercore's scheduler answering kube-scheduler.

kube-scheduler calls an extender over HTTP (``KubeSchedulerConfiguration.extenders``) with
the types of ``k8s.io/kube-scheduler/extender/v1``: :mod:`.wire` reads and writes them as
Go does; :mod:`.mapping` turns Pod and Node documents into a Workload and Hosts;
:mod:`.rules` holds kube-scheduler's filter plugins (and two scores) as clustercore
filters and weighers, with the reasons kube-scheduler shows; :mod:`.extender` answers the
verbs filter, prioritize, bind and preempt through the
:class:`~clustercore.scheduling.engine.Scheduler`; :mod:`.binder` creates Bindings
through the Kubernetes API; :mod:`.server` serves it all (``clustercore extender
--listen``). See docs/kubernetes.md.
"""

from clustercore.adapters.kube.binder import BindRefused, KubeApiBinder
from clustercore.adapters.kube.extender import UNKNOWN_NODE, Binder, Extender, node_list_items, node_table
from clustercore.adapters.kube.mapping import FLAVOR, NodeInfo, PodInfo, node_host, pod_requests, pod_workload, quantity
from clustercore.adapters.kube.rules import NodeTable, insufficient, untolerated_taint
from clustercore.adapters.kube.server import MAX_BODY, ExtenderServer, create_app
from clustercore.adapters.kube.wire import (
    MAX_PRIORITY,
    ExtenderArgs,
    ExtenderBindingArgs,
    ExtenderFilterResult,
    ExtenderPreemptionArgs,
    HostPriority,
    HostPriorityList,
    MetaVictims,
    field,
)

__all__ = [
    "FLAVOR",
    "MAX_BODY",
    "MAX_PRIORITY",
    "UNKNOWN_NODE",
    "BindRefused",
    "Binder",
    "Extender",
    "ExtenderArgs",
    "ExtenderBindingArgs",
    "ExtenderFilterResult",
    "ExtenderPreemptionArgs",
    "ExtenderServer",
    "HostPriority",
    "HostPriorityList",
    "KubeApiBinder",
    "MetaVictims",
    "NodeInfo",
    "NodeTable",
    "PodInfo",
    "create_app",
    "field",
    "insufficient",
    "node_host",
    "node_list_items",
    "node_table",
    "pod_requests",
    "pod_workload",
    "quantity",
    "untolerated_taint",
]
