"""The Ganeti IAllocator adapter: hail's answers' shape, Ganeti's rules, bad input."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clustercore.adapters.ganeti import answer, hmetrics
from clustercore.adapters.ganeti.hload import load, parse_instance
from clustercore.adapters.ganeti.hnode import NodeFail, add_pri

# shared/ sits beside the checkout (here and in CI).
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ganeti-iallocator"
HAIL = Path("/usr/lib/ganeti/3.0/usr/lib/ganeti/iallocators/hail")
SAMPLES = sorted(p.name for p in DATA.glob("*.json")) if DATA.exists() else []
pytestmark = pytest.mark.skipif(not SAMPLES, reason=f"no IAllocator samples at {DATA}")


def sample(name: str) -> dict[str, Any]:
    return json.loads((DATA / name).read_text())  # type: ignore[no-any-return]


def shape(value: Any) -> Any:
    """The structure of an answer: types and nesting, not the node names chosen."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(v) for v in value[:1]]
    return type(value).__name__


@pytest.mark.parametrize("name", SAMPLES)
def test_samples_answer_successfully_in_hails_shape(name: str) -> None:
    ours = answer(sample(name))
    assert ours["success"] is True, ours["info"]
    assert set(ours) == {"success", "info", "result"}
    if not HAIL.exists():
        pytest.skip("hail is not installed (./dev test installs ganeti-htools-3.0)")
    run = subprocess.run([str(HAIL), str(DATA / name)], capture_output=True, text=True, timeout=60, check=True)
    theirs = json.loads(run.stdout)
    assert theirs["success"] is True
    assert shape(ours) == shape(theirs)
    assert type(ours["result"]) is type(theirs["result"]) and len(ours["result"]) == len(theirs["result"])
    assert ours["info"].split(":")[0] == theirs["info"].split(":")[0] == "Request successful"


def test_allocate_drbd_picks_two_distinct_usable_nodes_with_room() -> None:
    data = sample("hail-alloc-drbd.json")
    primary, secondary = answer(data)["result"]
    assert primary != secondary
    for node in (primary, secondary):
        n = data["nodes"][node]
        assert not n["offline"] and not n["drained"] and n["free_disk"] >= data["request"]["disk_space_total"]
    assert data["nodes"][primary]["free_memory"] >= data["request"]["memory"]


def test_offline_and_drained_nodes_are_never_chosen() -> None:
    data = sample("hail-alloc-drbd.json")
    data["nodes"]["node1"]["drained"] = True
    data["nodes"]["node2"]["offline"] = True
    assert sorted(answer(data)["result"]) == ["node3", "node4"]
    data["nodes"]["node3"]["drained"] = True
    result = answer(data)
    assert result["success"] is False and result["result"] == []
    assert "Request failed" in result["info"]


def test_exclusion_tags_keep_tagged_instances_apart() -> None:
    data = sample("hail-alloc-drbd.json")
    for node in ("node1", "node2"):
        data["nodes"][node]["drained"] = True
    request = data["request"]
    request.update(required_nodes=1, disk_template="plain", tags=["test:test"])
    # instance9 (tag test:test) has node3 as its primary, so node3 is excluded.
    assert answer(data)["result"] == ["node4"]
    request["tags"] = []
    assert answer(copy.deepcopy(data))["success"] is True


def test_ipolicy_limits_are_enforced_with_the_reason() -> None:
    data = sample("hail-alloc-drbd.json")
    data["request"]["memory"] = 65536
    result = answer(data)
    assert result["success"] is False
    # hail's words: one failure per candidate pair, memory above the ipolicy's maximum
    assert result["info"].endswith("No valid allocation solutions, failure reasons: FailMem: 12")
    data = sample("hail-alloc-drbd.json")
    data["nodegroups"]["uuid-group-1"]["ipolicy"]["disk-templates"] = ["plain"]
    assert answer(data)["info"].endswith("failure reasons: FailDisk: 12")


def test_vcpu_ratio_limits_cpu() -> None:
    data = sample("hail-alloc-drbd.json")
    data["request"].update(required_nodes=1, disk_template="plain", vcpus=8)
    data["nodegroups"]["uuid-group-1"]["ipolicy"]["vcpu-ratio"] = 1.0
    result = answer(data)
    assert result["success"] is False and result["info"].endswith("failure reasons: FailCPU: 4")


def with_second_group(policy: str) -> dict[str, Any]:
    data = sample("hail-alloc-drbd.json")
    group = copy.deepcopy(data["nodegroups"]["uuid-group-1"])
    group.update(name="spare", alloc_policy=policy)
    data["nodegroups"]["uuid-group-2"] = group
    for name in ("spare1", "spare2"):
        node = copy.deepcopy(data["nodes"]["node1"])
        node.update(group="uuid-group-2", free_memory=32000)
        data["nodes"][name] = node
    return data


def test_node_groups_and_their_alloc_policy() -> None:
    preferred = answer(with_second_group("last_resort"))
    assert set(preferred["result"]) <= {"node1", "node2", "node3", "node4"}, "last resort only when needed"
    full = with_second_group("last_resort")
    for name in ("node1", "node2", "node3", "node4"):
        full["nodes"][name]["drained"] = True
    spilled = answer(full)
    assert sorted(spilled["result"]) == ["spare1", "spare2"] and "Selected group: spare" in spilled["info"]
    never = with_second_group("unallocable")
    for name in ("node1", "node2", "node3", "node4"):
        never["nodes"][name]["drained"] = True
    assert answer(never)["success"] is False


def test_multi_allocate_never_overcommits_a_node() -> None:
    data = sample("hail-multialloc-dedicated.json")
    template = data["request"]["instances"][0]
    data["request"]["instances"] = [dict(template, name=f"i{i}") for i in range(9)]  # as many as fit
    allocated, failed = answer(data)["result"]
    assert len(allocated) == 9 and not failed
    used: dict[str, int] = {}
    for _, nodes in allocated:
        used[nodes[0]] = used.get(nodes[0], 0) + template["memory"]
    for node, memory in used.items():
        assert memory <= data["nodes"][node]["free_memory"], node
    assert "node4-full" not in used
    # One more does not fit: hail 3.0.2 then fails the whole request, and so do we.
    data["request"]["instances"].append(dict(template, name="i9"))
    assert answer(data) == {"success": False, "result": [], "info": "Request failed: Group default (preferred): "
                            "No valid allocation solutions, failure reasons: FailMem: 4"}


def test_relocate_keeps_the_primary_and_avoids_the_old_secondary() -> None:
    data = sample("hail-reloc-drbd.json")
    (new,) = answer(data)["result"]
    assert new not in ("node3", "node4")
    plain = sample("hail-reloc-drbd.json")
    plain["request"]["name"] = "instance13"
    result = answer(plain)
    assert result == {"success": False, "info": "Request failed: Can't relocate non-mirrored instances",
                      "result": []}  # hail's words


def test_node_evacuate_moves_off_both_nodes_with_ganetis_opcodes() -> None:
    data = sample("hail-node-evac.json")
    moved, failed, jobs = answer(data)["result"]
    assert failed == []
    [[name, group, nodes]] = moved
    assert name == "instance2" and group == "default" and not set(nodes) & {"node3", "node4"}
    ops = [op["OP_ID"] for op in jobs[0]]
    assert ops == ["OP_INSTANCE_REPLACE_DISKS", "OP_INSTANCE_MIGRATE", "OP_INSTANCE_REPLACE_DISKS"]
    assert jobs[0][0]["remote_node"] == nodes[0] and jobs[0][2]["remote_node"] == nodes[1]
    data["request"]["instances"] = ["instance13"]
    _, failed, _ = answer(data)["result"]
    assert failed == [["instance13", "Instances of type plain cannot be relocated"]]


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda d: d.pop("nodes"), "missing 'nodes'"),
        (lambda d: d["request"].pop("type"), "missing 'type'"),
        (lambda d: d["request"].update(type="teleport"), "unsupported 'teleport'"),
        (lambda d: d["request"].update(memory="lots"), "request.memory: expected int"),
        (lambda d: d["request"].update(required_nodes=3), "required_nodes: must be 1 or 2"),
        (lambda d: d["nodes"]["node1"].update(group="nowhere"), "unknown node group 'nowhere'"),
        (lambda d: d["instances"]["instance2"].update(nodes=["ghost"]), "unknown node 'ghost'"),
        (lambda d: d.update(request=[]), "expected dict"),
    ],
)
def test_malformed_requests_fail_cleanly_naming_the_problem(mutate: Any, says: str) -> None:
    data = sample("hail-alloc-drbd.json")
    mutate(data)
    result = answer(data)
    assert result["success"] is False and result["result"] == []
    assert says in result["info"]


def test_the_command_never_prints_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for path in (bad, tmp_path / "missing.json", DATA / "hail-alloc-drbd.json"):
        run = subprocess.run([sys.executable, "-m", "clustercore.adapters.ganeti", str(path)], capture_output=True,
                             text=True, timeout=60, check=False)
        assert run.returncode == 0 and "Traceback" not in run.stderr
        assert set(json.loads(run.stdout)) == {"success", "info", "result"}


def places(node: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) inside a JSON document."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    out = []
    for key, child in items:
        out.append((node, key))
        out += places(child)
    return out


junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.text(max_size=5), st.lists(st.integers(),
                 max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SAMPLES or ["none"]), st.lists(st.tuples(st.integers(0, 10**6), junk), min_size=1,
                                                      max_size=3))
def test_any_corruption_gives_an_answer_not_an_exception(name: str, edits: list[tuple[int, Any]]) -> None:
    data = sample(name)
    for pick, value in edits:
        paths = places(data)
        container, key = paths[pick % len(paths)]
        container[key] = value
    result = answer(data)
    assert isinstance(result["success"], bool) and isinstance(result["info"], str)
    json.dumps(result)


HBAL = Path("/usr/lib/ganeti/3.0/usr/bin/hbal")


def hbal_initial_score(state: Path, group: str) -> float:
    out = subprocess.run([str(HBAL), "-t", str(state), "-l", "0", "-G", group], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    return float(out.split("Initial score: ")[1].split()[0])


@pytest.mark.parametrize("name", SAMPLES)
def test_group_score_is_hbals_score(name: str, tmp_path: Path) -> None:
    """Our score of each group of the request's cluster equals what hbal prints for hail's
    view of it."""
    if not (HAIL.exists() and HBAL.exists()):
        pytest.skip("hail/hbal are not installed (./dev test installs ganeti-htools-3.0)")
    subprocess.run([str(HAIL), "-S", str(tmp_path / "state"), str(DATA / name)], capture_output=True, timeout=60,
                   check=True)
    model = load(sample(name))
    for gdx, group in enumerate(model.groups):
        ours = hmetrics.cluster_score(n for n in model.nodes if n.group == gdx)
        assert ours == pytest.approx(hbal_initial_score(tmp_path / "state.pre-ialloc", group.name), abs=1e-7)


@pytest.mark.parametrize("small", [True, False])
@pytest.mark.parametrize("name", SAMPLES)
def test_candidates_scored_at_once_as_afresh(name: str, small: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every single-node candidate's score computed at once (_afresh) is, to the bit, the
    score of the whole node list computed afresh with that node replaced (pure Python and
    numpy folds alike); scores_replacing ranks the candidates exactly as those do."""
    monkeypatch.setattr(hmetrics, "SMALL", 10**9 if small else 0)
    data = sample(name)
    model = load(data)
    kind = data["request"]["type"]
    requests = {"allocate": [data["request"]], "multi-allocate": data["request"].get("instances")}.get(kind) or \
        [next(iter(data["instances"].values())) | {"name": "probe"}]
    for raw in requests:
        inst = parse_instance(raw, raw["name"], (model.excl_prefixes, model.dsrd_prefixes))
        changes = []
        for node in model.nodes:
            if node.offline:
                continue
            try:
                changes.append(add_pri(node, attrs.evolve(inst, pnode=node.idx, snode=-1), True))
            except NodeFail:
                continue
        assert changes
        afresh = [hmetrics.cluster_score([c if n.idx == c.idx else n for n in model.nodes]) for c in changes]
        assert hmetrics._afresh(list(model.nodes), changes) == afresh
        scores = hmetrics.scores_replacing(model.nodes, changes)
        assert scores == pytest.approx(afresh, rel=1e-12, abs=1e-12)
        ranked = sorted(range(len(changes)), key=scores.__getitem__)
        assert ranked == sorted(range(len(changes)), key=afresh.__getitem__)  # ties broken as afresh


def test_dedicated_room_is_what_adding_one_by_one_gives() -> None:
    """hail counts how many minimal instances a node still takes by adding them one at a
    time; ours computes the count from htools' own checks: the two agree."""
    import random

    import attrs

    from clustercore.adapters.ganeti.hdedicated import _count
    from clustercore.adapters.ganeti.hnode import Inst, Node, NodeFail, add_pri

    rng = random.Random(7)
    for _ in range(150):
        node = Node(name="n", idx=0, group=0, t_mem=float(rng.choice([4096, 8192])), n_mem=rng.choice([0, 512]),
                    f_mem=rng.randint(-100, 8000), t_dsk=10000.0, f_dsk=rng.randint(-10, 10000),
                    t_cpu=float(rng.choice([0, 1, 4])), n_cpu=0, t_spindles=4, f_spindles=rng.randint(-1, 4),
                    offline=False, excl=rng.random() < 0.5)
        node = attrs.evolve(node, i_mem=rng.randint(0, 3000), u_cpu=rng.randint(0, 9),
                            f_mem_forth=rng.randint(-10, 9000), r_mem=rng.randint(0, 3000),
                            fail_n1=rng.random() < 0.5, vcpu_ratio=rng.choice([1.0, 4.0]),
                            hi_spindles=rng.choice([1.0, 32.0]), inst_spindles=float(rng.randint(0, 5)))
        inst = Inst(name="t", mem=rng.choice([0, 128, 1024]), dsk=rng.choice([0, 128, 1024]), disks=(),
                    disk_spindles=(), vcpus=rng.choice([0, 1, 2]), state="running", template="plain",
                    spindle_use=rng.choice([0, 1, 2]))
        count, current = 0, node
        while count < 100:
            try:
                current = add_pri(current, inst)
            except NodeFail:
                break
            count += 1
        assert min(_count(inst, node), 100) == count, (node, inst)
