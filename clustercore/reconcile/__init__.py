"""The reconcilers the controller composes, one module per concern.

``observe`` (informers, heartbeats, reboots -> a frozen View), ``hosts`` (join, liveness,
connectivity), ``drain`` (maintenance moves), ``fence`` (soft then hard fencing),
``recovery`` (HA restart of Failed placements), ``settle`` (placements a dead manager left
in flight); ``calls`` runs every call into a flavor or a host off the pass, per host, with
a deadline; ``writer`` holds every store transaction.
"""
