"""What a saved state record may restore at start-up (core.restore): every case, and properties."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fivenines.core.health import HealthState, Reason
from fivenines.core.restore import MAX_AGE, NOTHING, AdminState, SavedTarget, decide, fingerprint
from fivenines.spec import TargetGroupSpec

H, U, INI, D, X = (HealthState.HEALTHY, HealthState.UNHEALTHY, HealthState.INITIAL, HealthState.DRAINING,
                 HealthState.UNUSED)


def static_group(**kw: object) -> TargetGroupSpec:
    return TargetGroupSpec.model_validate({"targets": ["127.0.0.1:9001"], **kw})


def instance_group(**inst: object) -> TargetGroupSpec:
    return TargetGroupSpec.model_validate({"instances": {"command": ["python", "app.py"], **inst}})


def test_no_record_restores_nothing() -> None:
    assert decide(None, "f", False, 0.0, 1.0) is NOTHING
    assert not NOTHING.anything


def test_healthy_and_unhealthy_static_targets_are_restored_with_their_reason() -> None:
    r = decide(SavedTarget("f", H), "f", supervised=False, saved_at=100.0, now=102.5)
    assert (r.state, r.reason, r.admin_state, r.why) == (H, None, None, "restored healthy (saved 2.5s ago)")
    r = decide(SavedTarget("f", U, Reason.TIMEOUT, "no response in 0.5s"), "f", False, 100.0, 101.0)
    assert (r.state, r.reason, r.detail) == (U, Reason.TIMEOUT, "no response in 0.5s")


def test_initial_is_not_worth_restoring() -> None:
    r = decide(SavedTarget("f", INI), "f", False, 100.0, 101.0)
    assert r.state is None and not r.anything and r.why.startswith("was still initial")


def test_stale_or_future_or_changed_records_are_ignored() -> None:
    s = SavedTarget("f", H, admin_state=AdminState.MAINTENANCE, weight=3)
    assert decide(s, "f", False, 100.0, 100.0 + MAX_AGE + 1).why == "stale: saved 61s ago (more than 60s)"
    assert decide(s, "f", False, 100.0, 90.0).why == "saved in the future (clock moved back)"
    assert decide(s, "g", False, 100.0, 101.0).why == "definition changed since it was saved"
    for r in (decide(s, "f", False, 100.0, 200.0), decide(s, "g", False, 100.0, 101.0)):
        assert not r.anything


def test_operator_state_is_restored_for_every_kind_of_target() -> None:
    for supervised in (False, True):
        r = decide(SavedTarget("f", H, admin_state=AdminState.MAINTENANCE, weight=0), "f", supervised, 100.0, 101.0)
        assert (r.state, r.reason, r.admin_state, r.weight) == (X, Reason.NOT_IN_USE, AdminState.MAINTENANCE, 0)
        assert r.why == "maintenance by an operator (saved 1.0s ago)"


def test_stopped_mid_drain_counts_as_drained() -> None:
    for state in (D, X):
        r = decide(SavedTarget("f", state), "f", False, 100.0, 101.0)
        assert (r.state, r.admin_state) == (X, AdminState.DRAINED)


def test_a_supervised_instance_starts_its_checks_over_but_keeps_its_weight() -> None:
    r = decide(SavedTarget("f", H, weight=7), "f", supervised=True, saved_at=100.0, now=101.0)
    assert (r.state, r.weight) == (None, 7)
    assert r.why == "instance restarted: health checks start over (saved 1.0s ago)"


@given(state=st.sampled_from(list(HealthState)), admin=st.sampled_from([None, *AdminState]),
       supervised=st.booleans(), same=st.booleans(), age=st.floats(-20, 200))
def test_restore_properties(state: HealthState, admin: AdminState | None, supervised: bool, same: bool,
                            age: float) -> None:
    r = decide(SavedTarget("f", state, admin_state=admin), "f" if same else "g", supervised, 1000.0, 1000.0 + age)
    if not same or age > MAX_AGE or age < -5:
        assert not r.anything  # stale, from the future or for another definition: nothing
        return
    if supervised and r.state is not None:
        assert r.state is X and r.admin_state is not None  # an instance's health is never carried over
    if r.state in (H, U):
        assert not supervised and r.state is state
    assert (r.admin_state is not None) == (admin is not None or state in (D, X))


def test_fingerprint_covers_what_the_target_is_and_how_it_is_checked() -> None:
    base = fingerprint("web", static_group(), "127.0.0.1:9001")
    assert base == fingerprint("web", static_group(algorithm="round_robin", deregistration_delay="5s",
                                                   retries={"attempts": 3}), "127.0.0.1:9001")
    assert base != fingerprint("web", static_group(), "127.0.0.1:9002")
    assert base != fingerprint("api", static_group(), "127.0.0.1:9001")
    assert base != fingerprint("web", static_group(health_check={"path": "/ready"}), "127.0.0.1:9001")
    assert base != fingerprint("web", static_group(health_check={"healthy_threshold": 3}), "127.0.0.1:9001")
    inst = fingerprint("web", instance_group(), None)
    assert inst == fingerprint("web", instance_group(count=3, standby=2, stop_timeout="1s"), None)
    assert inst != fingerprint("web", instance_group(env={"A": "1"}), None)
    assert inst != fingerprint("web", instance_group(command=["python", "other.py"]), None)
