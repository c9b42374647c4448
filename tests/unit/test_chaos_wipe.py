"""chaos/wipe.py: acknowledged writes lost to a wipe and a restore, counted one by one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fivenines.chaos.wipe import Ack, account

acks_st = st.lists(st.tuples(st.floats(0, 100), st.sampled_from(["present", "absent", "other"])), max_size=60)


@given(acks_st, st.floats(0, 100), st.floats(0, 20), st.floats(0, 20), st.none() | st.floats(0, 100))
def test_every_acknowledged_write_is_counted_once(raw: list[tuple[float, str]], wipe_at: float, gap: float,
                                                   took: float, backup_began: float | None) -> None:
    started, ended = wipe_at + gap, wipe_at + gap + took
    acks = [Ack(f"k{i}", "v", t) for i, (t, _) in enumerate(raw)]
    final = {f"k{i}": ("v" if fate == "present" else "w") for i, (_, fate) in enumerate(raw) if fate != "absent"}
    r = account(acks, final, wipe_at=wipe_at, restore_started=started, restore_ended=ended,
                complete_before=backup_began)
    survivors = [a for a, (_, fate) in zip(acks, raw, strict=True) if fate == "present"]
    assert r.lost_before_wipe + r.lost_after_wipe + r.missing_after_restore + r.wrong_value + len(survivors) == len(acks)
    assert r.wrong_value == sum(fate == "other" for _, fate in raw)
    absent = [a for a, (_, fate) in zip(acks, raw, strict=True) if fate == "absent"]
    assert r.lost_before_wipe == sum(a.at < wipe_at for a in absent)
    assert r.missing_before_backup == (0 if backup_began is None else
                                       sum(a.at < min(wipe_at, backup_began) for a in absent))
    assert r.missing_before_backup <= r.lost_before_wipe
    assert r.missing_after_restore == sum(a.at >= ended for a in absent)
    assert r.lost == len(absent) - r.missing_after_restore
    before = [a.at for a in survivors if a.at < wipe_at]
    assert r.backup_point == (max(before) if before else None)
    assert r.rpo_s == (None if not before else wipe_at - max(before))
    assert r.rto_s == ended - wipe_at


def test_report_lines() -> None:
    r = account([Ack("a", "1", 1.0), Ack("b", "1", 5.0)], {"a": "1"}, wipe_at=6.0, restore_started=7.0,
                restore_ended=9.0, declared_rpo_s=3600.0, expected_rto_s=2.5)
    text = "\n".join(r.lines())
    assert "lost                 1 (1 newer than the backup, 0 taken between the wipe and the restore)" in text
    assert "RPO measured         5.000s  declared (schedule) 1h" in text
    assert "RTO measured         3.000s  (restore itself 2.000s; last drill 2.500s)" in text
