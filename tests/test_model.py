"""Value objects: arithmetic, round trips, and bad input named by field."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clustercore.errors import ValidationError
from clustercore.model import (
    STATUS,
    FenceDevice,
    FrozenMap,
    Host,
    HostState,
    NonOperationalReason,
    Placement,
    Resources,
    Taint,
    TaintEffect,
    Workload,
)
from clustercore.state import encode
from clustercore.values import dumps

names = st.from_regex(r"[a-z][a-z0-9-]{0,15}", fullmatch=True)
resources = st.builds(
    Resources,
    cpu=st.integers(0, 512),
    memory=st.integers(0, 1 << 22),
    extended=st.dictionaries(st.sampled_from(["pci/10de:1eb8", "hugepages-1G", "proc/slots"]), st.integers(0, 16)),
)


@given(resources, resources)
def test_resources_add_then_subtract_is_identity(a: Resources, b: Resources) -> None:
    assert (a + b) - b == a


@given(resources, resources)
def test_fits_exactly_when_no_shortfall(a: Resources, b: Resources) -> None:
    assert a.fits(b) == (not a.shortfall(b))
    assert a.fits(a + b)
    for name in a.shortfall(b):
        assert a.get(name) > b.get(name)


@given(resources)
def test_resources_round_trip_through_dict_and_json(r: Resources) -> None:
    assert Resources.from_dict(json.loads(json.dumps(r.to_dict()))) == r


@given(names, resources, st.dictionaries(names, names, max_size=3), st.sampled_from(list(HostState)))
def test_host_round_trips(name: str, capacity: Resources, labels: dict[str, str], state: HostState) -> None:
    host = Host(name, capacity=capacity, labels=labels, state=state,
                fence_devices=(FenceDevice("fence_ipmilan", "127.0.0.1", 6230, "admin", "secret"),),
                facts={"virt": {"models": ["Haswell", "Skylake"], "numa": {"cells": 2}}})
    again = Host.from_dict(json.loads(json.dumps(host.to_dict())))
    assert again == host
    assert hash(again) == hash(host)


_STATUS_CHANGE = st.tuples(st.just("status"), st.sampled_from(list(HostState)), st.floats(0, 1e9),
                           st.text(max_size=20), st.sampled_from([None, *HostState]))
_DEFINITION_CHANGE = st.tuples(st.just("definition"), resources, st.dictionaries(names, names, max_size=2),
                               st.dictionaries(names, st.integers(), max_size=2))


@given(st.lists(st.one_of(_STATUS_CHANGE, _DEFINITION_CHANGE), max_size=8))
def test_stored_host_reads_back_through_status_and_definition_changes(changes: list[tuple[Any, ...]]) -> None:
    """The definition's JSON a host keeps across status changes never goes stale: after any
    mix of transitions (``with_status``) and new definitions (``attrs.evolve``), the stored
    form reads back as the host and equals that of a fresh copy (which encodes everything)."""
    host = Host("h1", capacity=Resources(cpu=4), facts={"virt": {"models": ["Haswell"]}})
    for change in changes:
        encode(host)  # what the writer does before the next change: the definition's JSON is made
        if change[0] == "status":
            _, state, since, reason, previous = change
            host = host.with_status(state, since, reason, previous, None)
        else:
            _, capacity, labels, facts = change
            host = attrs.evolve(host, capacity=capacity, allocatable=capacity, labels=labels, facts={"x": facts})
        stored = encode(host)
        assert Host.from_dict(json.loads(stored)) == host
        assert stored == encode(attrs.evolve(host))


def test_with_status_keeps_every_field_of_the_definition() -> None:
    host = Host("h1", capacity=Resources(cpu=8, memory=64), allocatable=Resources(cpu=6, memory=32),
                address="10.0.0.1", labels={"tier": "gold"}, location={"rack": "r1"},
                fence_devices=(FenceDevice("fence_ipmilan", "127.0.0.1", 6230, "admin", "secret"),),
                taints=(Taint("gpu", "", TaintEffect.NO_SCHEDULE),), schedulable=False,
                facts={"virt": {"models": ["Haswell"]}}, self_fence=True, watchdog=60.0)
    defaults = Host("h0")
    definition = [f.name for f in attrs.fields(Host) if f.init and f.name not in STATUS]
    unset = [n for n in definition if getattr(host, n) == getattr(defaults, n)]
    assert not unset, f"give {unset} a value other than its default in this test"
    new = host.with_status(HostState.MAINTENANCE, 5.0, "operator", HostState.UP, NonOperationalReason.OPERATOR)
    assert [getattr(new, n) for n in definition] == [getattr(host, n) for n in definition]
    assert (new.state, new.since, new.reason, new.previous, new.non_operational) == (
        HostState.MAINTENANCE, 5.0, "operator", HostState.UP, NonOperationalReason.OPERATOR)
    assert sorted(STATUS) == sorted(f.name for f in attrs.fields(Host) if f.init and f.name not in definition)


def test_frozen_values_are_immutable_and_hashable() -> None:
    w = Workload("w", "fake", labels={"app": "db"}, spec={"disks": [{"size": 10}]})
    with pytest.raises(AttributeError):
        w.name = "x"  # type: ignore[misc]
    assert isinstance(w.spec["disks"][0], FrozenMap)
    assert {w: 1}[Workload("w", "fake", labels={"app": "db"}, spec={"disks": [{"size": 10}]})] == 1


def test_fence_password_never_in_repr() -> None:
    host = Host("h", fence_devices=(FenceDevice("fence_ipmilan", "10.0.0.1", password="hunter2"),))
    assert "hunter2" not in repr(host)
    assert "hunter2" not in str(host)


def test_allocatable_defaults_to_capacity() -> None:
    assert Host("h", capacity=Resources(4, 1024)).allocatable == Resources(4, 1024)


@pytest.mark.parametrize(
    ("data", "field", "problem"),
    [
        ({}, "name", "is required"),
        ({"name": "bad name!"}, "name", "must match"),
        ({"name": "h", "capacity": {"memory": -1}}, "capacity.memory", ">= 0"),
        ({"name": "h", "capacity": {"memory": "lots"}}, "capacity.memory", "integer"),
        ({"name": "h", "capacity": {"extended": {"BAD NAME": 1}}}, "capacity.extended.BAD NAME", "resource names"),
        ({"name": "h", "capacity": {"cpu": 2}, "allocatable": {"cpu": 4}}, "allocatable", "exceeds capacity in cpu"),
        ({"name": "h", "labels": {"a": 1}}, "labels.a", "strings"),
        ({"name": "h", "state": "Sleeping"}, "state", "must be one of"),
        ({"name": "h", "fence_devices": [{"agent": "fence_ipmilan"}]}, "fence_devices[0].address", "required"),
        ({"name": "h", "fence_devices": [{"agent": "x", "address": "a", "port": 70000}]}, "fence_devices[0].port",
         "port"),
        ({"name": "h", "capcity": {}}, "capcity", "unknown field"),
        ("h1", "<root>", "mapping"),
    ],
)
def test_malformed_host_names_the_field(data: object, field: str, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        Host.from_dict(data)
    assert info.value.field == field
    assert problem in str(info.value)
    assert info.value.kind == "host"


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "w"}, "flavor"),
        ({"name": "w", "flavor": "Virt!"}, "flavor"),
        ({"name": "w", "flavor": "virt", "priority": 1.5}, "priority"),
        ({"name": "w", "flavor": "virt", "ha": "yes"}, "ha"),
        ({"name": "w", "flavor": "virt", "requests": {"cpu": -2}}, "requests.cpu"),
        ({"name": "w", "flavor": "virt", "affinity": [{"selector": {}}]}, "affinity[0].selector"),
        ({"name": "w", "flavor": "virt", "affinity": [{"selector": {"a": "b"}, "max_per_scope": 0}]},
         "affinity[0].max_per_scope"),
        ({"name": "w", "flavor": "virt", "spec": ["not", "a", "map"]}, "spec"),
    ],
)
def test_malformed_workload_names_the_field(data: object, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        Workload.from_dict(data)
    assert info.value.field == field and info.value.kind in ("workload", "resources", "affinity rule")


def test_placement_round_trip() -> None:
    p = Placement("w", "h1", target="h2", reason="drain")
    assert Placement.from_dict(p.to_dict()) == p


JSON_DATA = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)


@given(JSON_DATA)
def test_dumps_reads_back_as_the_json_module_writes_it(data: object) -> None:
    """What the store keeps (orjson, or json for what orjson refuses: integers beyond 64
    bits) parses to what json.dumps gives, keys sorted, compact."""
    out = dumps(data)
    assert json.loads(out) == json.loads(json.dumps(data)) == data

    def keys_sorted(value: object) -> bool:
        if isinstance(value, dict):
            return list(value) == sorted(value) and all(keys_sorted(v) for v in value.values())
        return not isinstance(value, list) or all(keys_sorted(v) for v in value)

    assert keys_sorted(json.loads(out))


def test_dumps_sorts_keys_unless_told_and_falls_back_for_what_orjson_refuses() -> None:
    assert dumps({"b": 1, "a": [1.5, None, "é"]}) == '{"a":[1.5,null,"é"],"b":1}'.encode()
    assert dumps({"b": 1, "a": 2}, sort_keys=False) == b'{"b":1,"a":2}'
    assert dumps({"n": 2**70}) == b'{"n":1180591620717411303424}'  # beyond 64 bits: json writes it
    assert dumps({1: "x"}) == b'{"1":"x"}'  # a key not a string: json's way
