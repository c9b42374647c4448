"""Chaos on a cluster, the pure parts: which faults a spec allows, the rig's copy of the spec, and what
each node fault did to the VIP and the clients (chaos/takeover.py, compare.measure_cluster)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fivenines.chaos.cluster_run import rig_spec
from fivenines.chaos.compare import compare, measure_cluster
from fivenines.chaos.schedule import (
    CLUSTER_KINDS,
    LOAD_KINDS,
    FaultKind,
    cluster_fault_problem,
    parse_schedule,
)
from fivenines.chaos.stats import Proportion
from fivenines.chaos.takeover import longest_gap, measure_fault, taken_after
from fivenines.chaos.timeline import Injected, analyse_all
from fivenines.spec import load_spec
from tests.helpers import write_spec


def test_cluster_kinds_need_a_cluster_and_a_cluster_takes_only_them() -> None:
    for kind in (FaultKind.NODE, FaultKind.PARTITION):
        msg = cluster_fault_problem((FaultKind.KILL, kind), spec_file="demo.yaml", clustered=False)
        assert msg is not None and msg.startswith(f"--faults {kind.value}:") and "demo.yaml" in msg
    assert cluster_fault_problem((FaultKind.LB, FaultKind.KILL), spec_file="d", clustered=False) is None
    assert cluster_fault_problem(CLUSTER_KINDS, spec_file="c.yaml", clustered=True) is None
    for kind in LOAD_KINDS:
        if kind not in CLUSTER_KINDS:
            msg = cluster_fault_problem((kind,), spec_file="c.yaml", clustered=True)
            assert msg is not None and msg.startswith(f"--faults {kind.value}:")
    msg = cluster_fault_problem(CLUSTER_KINDS, spec_file="c.yaml", clustered=True,
                                rig_unavailable="network namespaces need root")
    assert msg is not None and "run it as root" in msg and msg.startswith("--faults node,lb,partition:")


def test_node_and_partition_are_not_in_the_default_faults_of_one_fivenines() -> None:
    assert FaultKind.NODE not in LOAD_KINDS and FaultKind.PARTITION not in LOAD_KINDS
    assert not FaultKind.NODE.on_target and not FaultKind.PARTITION.on_target
    plan = parse_schedule("3s:node:a, 9s:partition", duration=2.0)
    assert [(f.kind, f.target, f.duration) for f in plan] == [(FaultKind.NODE, "a", 2.0),
                                                             (FaultKind.PARTITION, None, 2.0)]
    assert plan[1].describe() == "partition the VIP holder for 2s"


def test_rig_spec_keeps_everything_but_the_addresses() -> None:
    raw: dict[str, Any] = {"name": "c", "listeners": [{"port": 8080}], "cluster": {
        "nodes": [{"name": "a", "address": "192.0.2.1"}, {"name": "b", "address": "192.0.2.2"}],
        "vip": "192.0.2.100/24", "interface": "ens3", "coordination": "vrrp", "vrrp": {"advert_int": "100ms"}}}
    out = rig_spec(raw, {"a": "10.199.0.11", "b": "10.199.0.12"}, [], "10.199.0.100")
    assert out["cluster"]["nodes"] == [{"name": "a", "address": "10.199.0.11"}, {"name": "b", "address": "10.199.0.12"}]
    assert out["cluster"]["vrrp"] == {"advert_int": "100ms"} and "etcd" not in out["cluster"]
    assert out["listeners"] == raw["listeners"] and raw["cluster"]["interface"] == "ens3"


def test_measure_fault_takeover_gap_and_failures() -> None:
    changes = [(0.0, ("a",)), (10.4, ()), (12.6, ("b",)), (20.0, ("b", "a")), (20.1, ("b",))]
    ok = [9.0, 9.9, 12.7] + [13.0 + i * 0.5 for i in range(30)]
    failed = [10.0, 10.5, 12.0, 12.65]
    f = measure_fault(1, "node", "a", 10.0, 25.0, changes, ok, failed, repaired_at=17.0)
    assert (f.old_holder, f.new_holder, f.dropped_s, f.takeover_s) == ("a", "b", pytest.approx(0.4), pytest.approx(2.6))
    assert f.failed_requests == 4 and f.longest_gap_s == pytest.approx(2.8)
    assert f.to_json()["repaired_s"] == 7.0
    # nobody else took it: no takeover, whatever happened later
    assert measure_fault(2, "lb", "a", 10.0, 12.0, changes, ok, failed).takeover_s is None


@given(st.lists(st.floats(0, 100, allow_nan=False), min_size=2, max_size=40), st.floats(0, 100), st.floats(0, 50))
def test_longest_gap_is_the_longest_gap_between_successes_ending_in_the_window(ok: list[float], lo: float,
                                                                              span: float) -> None:
    ok = sorted(ok)
    gap = longest_gap(ok, lo, lo + span)
    ending = [y - x for x, y in itertools.pairwise(ok) if lo < y <= lo + span]
    if gap is None:
        assert not ending
    else:
        assert gap == pytest.approx(max(ending), abs=1e-6)


@given(st.lists(st.tuples(st.floats(0, 50), st.sampled_from([(), ("a",), ("b",), ("a", "b")])), max_size=20))
def test_taken_after_names_another_node_holding_it_then(raw: list[tuple[float, tuple[str, ...]]]) -> None:
    changes = sorted(raw)
    got = taken_after(changes, "a", 10.0, 40.0)
    if got is None:
        assert all("b" not in h for t, h in changes if 10.0 <= t < 40.0)
    else:
        t, node = got
        assert node == "b" and 10.0 <= t < 40.0
        assert all("b" not in h for u, h in changes if 10.0 <= u < t)
        assert any(u == t and "b" in h for u, h in changes)


def cluster_yaml(tmp: Any) -> str:
    return str(write_spec(tmp / "c.yaml", {
        "name": "c", "listeners": [{"port": 8080, "default_target_group": "web"}],
        "target_groups": {"web": {"instances": {"command": ["python", "-m", "fivenines.demo", "--port", "{port}"],
                                                "count": 2, "standby": 1, "ports": "9101-9199"}}},
        "cluster": {"nodes": [{"name": "a", "address": "10.199.0.11"}, {"name": "b", "address": "10.199.0.12"}],
                    "vip": "10.199.0.100/24", "interface": "eth0", "etcd": ["http://10.199.0.13:2379"],
                    "lease_ttl": "2s"}}))


def test_compare_puts_the_models_takeover_beside_the_measured_one(tmp_path: Any) -> None:
    spec = load_spec(cluster_yaml(tmp_path))
    faults = [Injected(1, "node", 10.0, "web", "a", 10.0, repaired_at=18.0),
              Injected(2, "partition", 30.0, "web", "b", 30.0, repaired_at=35.0),
              Injected(3, "node", 50.0, "web", "", 50.0, skipped="no node held the VIP")]
    changes = [(0.0, ("a",)), (10.2, ()), (12.5, ("b",)), (31.0, ()), (32.9, ("a",))]
    ok = [i / 10 for i in range(600) if not (10.0 <= i / 10 < 12.6 or 31.0 <= i / 10 < 33.0)]
    failed = [i / 10 for i in range(600) if i / 10 not in set(ok)]
    cl = measure_cluster(spec, "etcd", faults, changes, ok, failed, 60.0, 600)
    assert [f.takeover_s for f in cl.faults] == [pytest.approx(2.5), pytest.approx(2.9)]
    assert cl.failed_requests == len(failed) == 46 and cl.predicted_takeover == pytest.approx(2.6)
    results = analyse_all(faults, {}, [], failed, 60.0, 10.0)
    cmp = compare(spec, "web", results, 60.0, Proportion(600 - 46, 600), rate=10.0, cluster=cl)
    rows = {r["quantity"]: r for r in cmp.rows()}
    assert rows["VIP takeover time (etcd)"]["declared"] == "2.600 s"
    assert rows["VIP takeover time (etcd)"]["measured"].startswith("2.700 s")
    # declared: every request of each of the 2 predicted takeovers fails; measured: what failed
    assert cmp.run_declared_availability == pytest.approx(1 - 2 * 2.6 / 60.0)
    assert cmp.run_measured_availability == pytest.approx(1 - 46 / 600)
    assert cmp.measured.faults == 0  # node faults are not the group's instance faults
    assert cmp.production_measured.cluster is not None
    assert cmp.production_measured.cluster.params.takeover_time == pytest.approx(2.7)
