"""core/backup*.py and core/restore_plan.py: schedules, retention, the catalogue, verdicts, restore choice and plan."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fivenines.core.backup import (
    BackupError,
    BackupRecord,
    CatalogueError,
    Kind,
    RestoreRefused,
    ScheduleError,
    Verdict,
    dump_catalogue,
    new_backup_id,
    parse_catalogue,
    parse_time,
)
from fivenines.core.backup_retention import Retention, retained, to_delete
from fivenines.core.backup_schedule import (
    Cron,
    Interval,
    next_fire,
    next_run,
    parse_schedule,
    promised_rpo,
)
from fivenines.core.backup_verify import (
    AofCheck,
    AofFile,
    Checks,
    SourceView,
    choose_source,
    first_timestamp,
    judge,
    parse_check_aof,
    parse_manifest,
    rdb_ctime,
    torn_tail,
)
from fivenines.core.restore_plan import (
    Choice,
    StepKind,
    aof_rewritten,
    choose_backup,
    in_sync,
    latest_verified,
    restore_plan,
    source_ok,
)

DAY = 86400.0
T0 = datetime(2025, 3, 3, tzinfo=UTC).timestamp()  # a Monday


def rec(i: str, t: float, verified: Verdict = Verdict.OK, kind: Kind = Kind.RDB, group: str = "g",
        covers_from: float | None = None, keys: int | None = 5) -> BackupRecord:
    return BackupRecord(i, group, t, kind, "g-2", f"{i}.{kind.value}", size=10, offset=1, sha256="ab",
                        keys=keys, verified=verified, covers_from=covers_from)


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(("text", "seconds"), [
    ("6h", 21600.0), ("every 30m", 1800.0), ("90s", 90.0), ("1d", 86400.0), ("every 2w", 1209600.0),
    ("  every   1.5h ", 5400.0),
])
def test_intervals(text: str, seconds: float) -> None:
    assert parse_schedule(text) == Interval(seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("", "a schedule is an interval"),
    ("0.5s", "at least 1s"),
    ("0 25 * * *", "hour field: 25 is out of range 0-23"),
    ("61 * * * *", "minute field: 61 is out of range 0-59"),
    ("* * 0 * *", "day of month field: 0 is out of range 1-31"),
    ("* * * 13 *", "month field: 13 is out of range 1-12"),
    ("* * * * 8", "day of week field: 8 is out of range 0-7"),
    ("*/0 * * * *", "step '0' must be a whole number of at least 1"),
    ("5-1 * * * *", "range '5-1' goes backwards"),
    ("x * * * *", "minute field: 'x' is not a number; use 0-59"),
    ("* * * foo *", "month field: 'foo' is not a number; use 1-12 or a name (jan"),
    ("1,,2 * * * *", "empty item"),
    ("* * * *", "cron has 5 fields (minute hour day-of-month month day-of-week), got 4"),
    ("0 0 30 2 *", "never fires"),
    ("every day", "neither an interval"),
])
def test_schedule_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ScheduleError, match=None) as exc:
        parse_schedule(text)
    assert message in str(exc.value)


def test_cron_fields_names_steps_and_sunday_as_7() -> None:
    c = parse_schedule("*/20 1-3/2 * jan,jul sun")
    assert isinstance(c, Cron)
    assert c.minutes == {0, 20, 40} and c.hours == {1, 3} and c.months == {1, 7} and c.weekdays == {0}
    assert parse_schedule("0 0 * * 7") == parse_schedule("0 0 * * 0").__class__(
        "0 0 * * 7", *[getattr(parse_schedule("0 0 * * 0"), f) for f in
                       ("minutes", "hours", "days", "months", "weekdays", "any_day", "any_weekday")])
    assert parse_schedule("@daily") == parse_schedule("0 0 * * *")
    c5 = parse_schedule("5/15 * * * *")
    assert isinstance(c5, Cron) and c5.minutes == {5, 20, 35, 50}


def test_day_of_month_and_week_both_restricted_fire_on_either() -> None:
    c = parse_schedule("0 12 13 * fri")
    fires = []
    t = T0
    for _ in range(12):
        t = next_fire(c, t)
        fires.append(datetime.fromtimestamp(t, UTC))
    assert all(f.hour == 12 and f.minute == 0 for f in fires)
    assert all(f.day == 13 or f.weekday() == 4 for f in fires)
    assert any(f.day == 13 and f.weekday() != 4 for f in fires)
    assert any(f.weekday() == 4 and f.day != 13 for f in fires)


def _reference_next(c: Cron, after: float) -> float:
    """Day by day, then the first (hour, minute) of a matching day after ``after``."""
    start = datetime.fromtimestamp(after, UTC)
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(366 * 9):
        if day.month in c.months and c.day_matches(day):
            for h in sorted(c.hours):
                for m in sorted(c.minutes):
                    t = day.replace(hour=h, minute=m)
                    if t.timestamp() > after:
                        return t.timestamp()
        day += timedelta(days=1)
    raise AssertionError("no fire")


def _field(lo: int, hi: int) -> st.SearchStrategy[str]:
    single = st.integers(lo, hi).map(str)
    rng = st.tuples(st.integers(lo, hi), st.integers(lo, hi)).map(lambda ab: f"{min(ab)}-{max(ab)}")
    step = st.tuples(st.sampled_from(["*", f"{lo}-{hi}"]), st.integers(1, hi - lo + 1)).map(lambda x: f"{x[0]}/{x[1]}")
    item = st.one_of(st.just("*"), single, rng, step)
    return st.lists(item, min_size=1, max_size=3).map(",".join)


crons = st.tuples(_field(0, 59), _field(0, 23), st.one_of(st.just("*"), _field(1, 28)), st.just("*"),
                  st.one_of(st.just("*"), _field(0, 6))).map(" ".join)


@settings(max_examples=150, deadline=None)
@given(crons, st.floats(0, 2e9))
def test_next_fire_is_the_first_matching_minute_after(text: str, after: float) -> None:
    c = parse_schedule(text)
    assert isinstance(c, Cron)
    got = next_fire(c, after)
    assert got > after and got % 60 == 0
    assert got == _reference_next(c, after)


@given(st.floats(1, 1e6), st.floats(0, 1e9), st.floats(0, 1e9), st.floats(1, 1e4))
def test_next_run_interval(seconds: float, last: float, since: float, retry: float) -> None:
    s = Interval(seconds)
    assert next_run(s, last_ok=None, last_try=None, since=since, retry=retry) == since
    assert next_run(s, last_ok=last, last_try=last, since=since, retry=retry) == last + seconds
    # a failure after the last success: not before retry seconds have passed
    failed = last + 1
    assert next_run(s, last_ok=last, last_try=failed, since=since, retry=retry) == max(last + seconds, failed + retry)


def test_next_run_cron_counts_from_the_later_of_start_and_last_success() -> None:
    c = parse_schedule("0 3 * * *")
    assert next_run(c, last_ok=None, last_try=None, since=T0, retry=60) == T0 + 3 * 3600
    assert next_run(c, last_ok=T0 + 3 * 3600, last_try=None, since=T0, retry=60) == T0 + DAY + 3 * 3600


@pytest.mark.parametrize(("text", "rpo"), [
    ("6h", 21600), ("*/15 * * * *", 900), ("0 3 * * *", DAY), ("0 0 * * 0", 7 * DAY), ("0 0 1 * *", 31 * DAY),
    ("30 1,13 * * *", 12 * 3600), ("0 0 1 1 *", 366 * DAY), ("0 0 29 2 *", (4 * 365 + 1) * DAY),
    ("0 0 1 1,7 *", 184 * DAY),
])
def test_promised_rpo_is_the_longest_gap(text: str, rpo: float) -> None:
    assert promised_rpo(parse_schedule(text)) == rpo


# --------------------------------------------------------------------------- retention

records_st = st.lists(
    st.tuples(st.floats(0, 60 * DAY), st.sampled_from(list(Verdict))), min_size=0, max_size=40
).map(lambda xs: [rec(f"g-{i}", T0 + t, v) for i, (t, v) in enumerate(xs)])
rules_st = st.builds(Retention, keep_last=st.integers(1, 6), daily=st.integers(0, 8), weekly=st.integers(0, 5))


def _reference_kept(records: list[BackupRecord], rules: Retention) -> set[str]:
    good = sorted((r for r in records if r.verified is Verdict.OK), key=lambda r: (r.time, r.id))
    kept = {r.id for r in good[-rules.keep_last:]}
    for n, key in ((rules.daily, lambda r: datetime.fromtimestamp(r.time, UTC).strftime("%Y-%m-%d")),
                   (rules.weekly, lambda r: "{}-{:02d}".format(*datetime.fromtimestamp(r.time, UTC).isocalendar()[:2]))):
        newest_of: dict[str, BackupRecord] = {}
        for r in good:  # oldest first: the last one written wins
            newest_of[key(r)] = r
        for b in sorted(newest_of)[::-1][:n]:
            kept.add(newest_of[b].id)
    return kept


@settings(max_examples=300)
@given(records_st, rules_st)
def test_retention_keeps_exactly_what_the_rules_say(records: list[BackupRecord], rules: Retention) -> None:
    gone = to_delete(records, rules)
    gone_ids = {r.id for r in gone}
    assert retained(records, rules) == _reference_kept(records, rules)
    good = [r for r in records if r.verified is Verdict.OK]
    if good:
        newest = max(good, key=lambda r: (r.time, r.id))
        assert newest.id not in gone_ids  # never the newest verified backup
    assert not any(r.verified is Verdict.PENDING for r in gone)  # never one being verified
    for r in good:
        assert (r.id in gone_ids) == (r.id not in _reference_kept(records, rules))
    newest_all = max(records, key=lambda r: (r.time, r.id), default=None)
    for r in records:
        if r.verified is Verdict.FAILED:
            assert (r.id in gone_ids) == (newest_all is not None and r.id != newest_all.id)
    assert [r.id for r in gone] == [r.id for r in sorted(gone, key=lambda r: (r.time, r.id))]
    # applying it twice deletes nothing more
    left = [r for r in records if r.id not in gone_ids]
    assert to_delete(left, rules) == []


def test_retention_daily_and_weekly_examples() -> None:
    # two backups a day for 21 days, Monday 2025-03-03 onwards
    rs = [rec(f"g-{d:02d}-{h:02d}", T0 + d * DAY + h * 3600) for d in range(21) for h in (1, 13)]
    keep = retained(rs, Retention(keep_last=2, daily=3, weekly=2))
    # newest two; newest of the 3 last days; newest of the 2 last weeks (week of day 14..20, and 7..13)
    assert keep == {"g-20-13", "g-20-01", "g-19-13", "g-18-13", "g-13-13"}
    with pytest.raises(ValueError):
        Retention(keep_last=0)


# --------------------------------------------------------------------------- catalogue

record_st = st.builds(
    BackupRecord, id=st.text(min_size=1, max_size=12), group=st.text(min_size=1, max_size=8),
    time=st.floats(0, 4e9), kind=st.sampled_from(list(Kind)), source=st.text(max_size=8), key=st.text(max_size=20),
    size=st.integers(0, 1 << 40), offset=st.none() | st.integers(0, 1 << 50), sha256=st.text(max_size=64),
    keys=st.none() | st.integers(0, 1 << 30), verified=st.sampled_from(list(Verdict)), detail=st.text(max_size=30),
    covers_from=st.none() | st.floats(0, 4e9), source_keys=st.none() | st.integers(0, 1 << 30),
    took=st.floats(0, 1e4).map(lambda x: round(x, 3)),
)


@given(st.lists(record_st, max_size=6))
def test_catalogue_round_trip(records: list[BackupRecord]) -> None:
    import json

    doc = json.loads(json.dumps(dump_catalogue("g", records)))
    assert parse_catalogue(doc, "g") == sorted(records, key=lambda r: (r.time, r.id))


@pytest.mark.parametrize(("doc", "message"), [
    ([], "expected {version, group, backups"),
    ({"version": 2, "backups": []}, "version 2 is not 1"),
    ({"version": 1, "backups": [3]}, "catalogue.backups.0: expected a mapping"),
    ({"version": 1, "backups": [{"id": "x"}]}, "catalogue.backups.0: kind is missing"),
    ({"version": 1, "backups": [{**rec("a", 1).to_json(), "size": "big"}]}, "catalogue.backups.0.size: 'big' is not a int"),
    ({"version": 1, "backups": [{**rec("a", 1).to_json(), "kind": "zip"}]}, "'zip' is not a valid Kind"),
])
def test_catalogue_errors_name_the_record_and_field(doc: object, message: str) -> None:
    with pytest.raises(CatalogueError) as exc:
        parse_catalogue(doc, "g")
    assert message in str(exc.value)


def test_ids_are_unique_and_name_their_group() -> None:
    ids: list[str] = []
    for _ in range(3):
        ids.append(new_backup_id("cache", T0, ids))
    assert ids == ["cache-20250303T000000Z", "cache-20250303T000000Z-2", "cache-20250303T000000Z-3"]


# --------------------------------------------------------------------------- source, verdicts


def test_source_is_the_most_advanced_healthy_linked_replica_never_the_primary_by_default() -> None:
    m = [SourceView("c-1", True, True, False, 100), SourceView("c-2", True, False, True, 90),
         SourceView("c-3", True, False, True, 95), SourceView("c-4", False, False, True, 99),
         SourceView("c-5", True, False, False, 99)]
    assert choose_source(m)[0] == "c-3"
    none, why = choose_source([m[0], m[3], m[4]])
    assert none is None and "c-4 unhealthy" in why and "c-5 not linked" in why and "c-1 is the primary" in why
    assert choose_source([m[0], m[3]], allow_primary=True)[0] == "c-1"
    assert choose_source([SourceView("c-1", False, True, False, 1)], allow_primary=True)[0] is None


@pytest.mark.parametrize(("checks", "kw", "verdict", "fragment"), [
    (Checks(True, "", "aa", 3), {"expected_sha256": "aa", "expected_keys": 3}, Verdict.OK, "3 keys loaded"),
    (Checks(True, "", "aa", 3), {}, Verdict.OK, "sha256 aa"),
    (Checks(False, "CRC64 mismatch", "aa", 3), {}, Verdict.FAILED, "check tool failed: CRC64 mismatch"),
    (Checks(True, "", "bb", 3), {"expected_sha256": "aa"}, Verdict.FAILED, "sha256 bb, expected aa"),
    (Checks(True, "", "aa", 2), {"expected_keys": 3}, Verdict.FAILED, "2 keys loaded, the catalogue says 3"),
    (Checks(True, "", "aa", None, "exited 1"), {}, Verdict.FAILED, "not loadable: exited 1"),
    (Checks(True, "", "aa", 0), {"source_keys": 40}, Verdict.FAILED, "empty but its source held 40 keys"),
    (Checks(True, "", "aa", 0), {"source_keys": 0}, Verdict.OK, "0 keys loaded"),
    (Checks(True, "", None, 3), {}, Verdict.FAILED, "no checksum"),
    (Checks(True, "", "aa", None), {}, Verdict.FAILED, "not loaded"),
])
def test_judge(checks: Checks, kw: dict[str, object], verdict: Verdict, fragment: str) -> None:
    v, why = judge(checks, **kw)  # type: ignore[arg-type]
    assert v is verdict and fragment in why


# --------------------------------------------------------------------------- AOF pieces

def test_check_aof_output_torn_tail_and_times() -> None:
    out = """[offset 53] AUX FIELD ctime = '1796587577'
AOF analyzed: filename=a.1.base.rdb, size=89, ok_up_to=89, ok_up_to_line=1, diff=0
0x   746: Expected to read 9 bytes, got 2 bytes
AOF analyzed: filename=a.1.incr.aof, size=1864, ok_up_to=1834, ok_up_to_line=355, diff=30
"""
    checks = parse_check_aof(out)
    files = [AofFile("a.1.base.rdb", 1, "b"), AofFile("a.1.incr.aof", 1, "i")]
    assert [c.valid for c in checks] == [True, False]
    assert torn_tail(checks, files) == AofCheck("a.1.incr.aof", 1864, 1834)
    # a damaged base, or a damaged increment that is not the last one: a real fault
    assert torn_tail([AofCheck("a.1.base.rdb", 89, 10), checks[1]], files) is None
    two = [*files, AofFile("a.2.incr.aof", 2, "i")]
    assert torn_tail([checks[0], checks[1], AofCheck("a.2.incr.aof", 5, 5)], two) is None
    assert torn_tail(checks[:1], files) is None
    assert rdb_ctime(out) == 1796587577.0 and rdb_ctime("") is None
    assert first_timestamp(b"#TS:12\r\n*1\r\n") == 12.0 and first_timestamp(b"") is None


def test_manifest() -> None:
    files = parse_manifest("file a.1.base.rdb seq 1 type b\n\nfile a.1.incr.aof seq 1 type i\n")
    assert [(f.name, f.type) for f in files] == [("a.1.base.rdb", "b"), ("a.1.incr.aof", "i")]
    with pytest.raises(BackupError, match="line 1"):
        parse_manifest("file ../../etc/passwd seq 1 type b")
    with pytest.raises(BackupError, match="is not 'file NAME seq N type"):
        parse_manifest("garbage")


def test_parse_time() -> None:
    assert parse_time("2025-03-03T00:00:00Z") == T0
    assert parse_time("2025-03-03T01:00:00+01:00") == T0
    assert parse_time("2h ago", now=T0) == T0 - 7200
    for bad in ("yesterday", "@x", "2h ago"):
        with pytest.raises(BackupError):
            parse_time(bad)


# --------------------------------------------------------------------------- restore: choice


def test_choose_from_id() -> None:
    rs = [rec("g-20250303T000000Z", T0), rec("g-20250304T000000Z", T0 + DAY, Verdict.FAILED),
          rec("g-20250305T000000Z", T0 + 2 * DAY, Verdict.PENDING),
          rec("h-20250303T000000Z", T0, group="h")]
    assert choose_backup(rs, "g", from_id="g-20250303T000000Z", now=T0 + 9 * DAY).record.id == "g-20250303T000000Z"
    cases = {
        "g-20250304T000000Z": "failed verification",
        "g-20250305T000000Z": "has not been verified yet",
        "h-20250303T000000Z": "belongs to group 'h', not 'g'",
        "other-20250303T000000Z": "belongs to group 'other', not 'g'",
        "g-nope": "no backup 'g-nope' in the catalogue of 'g'; newest: g-20250305T000000Z",
    }
    for bid, message in cases.items():
        with pytest.raises(RestoreRefused) as exc:
            choose_backup(rs, "g", from_id=bid, now=T0 + 9 * DAY)
        assert message in str(exc.value), bid
    with pytest.raises(RestoreRefused, match="exactly one of"):
        choose_backup(rs, "g", now=T0)
    with pytest.raises(RestoreRefused, match="exactly one of"):
        choose_backup(rs, "g", from_id="x", at=T0, now=T0)


def test_choose_at() -> None:
    rs = [rec("r1", T0), rec("r2", T0 + 6 * 3600), rec("bad", T0 + 7 * 3600, Verdict.FAILED),
          rec("a1", T0 + 8 * 3600, kind=Kind.AOF, covers_from=T0 + 5 * 3600),
          rec("a2", T0 + 9 * 3600, kind=Kind.AOF, covers_from=T0 + 5 * 3600)]
    now = T0 + DAY
    c = choose_backup(rs, "g", at=T0 + 7 * 3600 + 0.5, now=now)
    assert (c.record.id, c.truncate_to) == ("a1", T0 + 7 * 3600)  # covering aof with the least to replay
    c = choose_backup(rs, "g", at=T0 + 3 * 3600, now=now)
    assert (c.record.id, c.truncate_to) == ("r1", None) and "3h before the time asked" in c.note
    c = choose_backup(rs, "g", at=T0 + 10 * 3600, now=now)
    assert (c.record.id, c.truncate_to) == ("a2", None)
    with pytest.raises(RestoreRefused, match="in the future"):
        choose_backup(rs, "g", at=now + 1, now=now)
    with pytest.raises(RestoreRefused, match=r"no verified backup of .g. at or before .* the oldest is r1"):
        choose_backup(rs, "g", at=T0 - 1, now=now)
    assert latest_verified(rs, "g").id == "a2"
    with pytest.raises(RestoreRefused, match="no verified backup"):
        latest_verified(rs, "h")


# --------------------------------------------------------------------------- restore: plan


@settings(max_examples=100)
@given(st.integers(0, 4), st.booleans(), st.sampled_from(list(Kind)), st.booleans())
def test_plan_order_guards_the_traps(n: int, aof: bool, kind: Kind, truncate: bool) -> None:
    r = rec("g-1", T0, kind=kind, covers_from=T0 - 10 if kind is Kind.AOF else None)
    choice = Choice(r, T0 - 5 if truncate and kind is Kind.AOF else None, "")
    replicas = [f"g-{i + 2}" for i in range(n)]
    steps = restore_plan(choice, "g-1", replicas, {"g-1": aof})
    kinds = [s.kind for s in steps]
    pos = {k: i for i, k in enumerate(kinds)}
    # nothing changes before the copy is checked and a scratch server holds it
    assert pos[StepKind.VERIFY] < pos[StepKind.START_SOURCE] < pos[StepKind.CHECK_SOURCE] < pos[StepKind.FENCE]
    assert pos[StepKind.FENCE] < pos[StepKind.LOAD_PRIMARY] < pos[StepKind.CHECK_PRIMARY] < pos[StepKind.DETACH_PRIMARY]
    assert kinds[-2:] == [StepKind.UNFENCE, StepKind.STOP_SOURCE]
    assert (StepKind.REWRITE_AOF in pos) == aof
    if aof:
        assert pos[StepKind.DETACH_PRIMARY] < pos[StepKind.REWRITE_AOF] < pos[StepKind.UNFENCE]
    if n:
        # replicas are held before the primary is loaded, re-attached only after it holds the backup
        assert pos[StepKind.HOLD_REPLICAS] < pos[StepKind.LOAD_PRIMARY]
        assert pos[StepKind.CHECK_PRIMARY] < pos[StepKind.RESYNC_REPLICAS] < pos[StepKind.CHECK_REPLICAS] < pos[StepKind.UNFENCE]
        assert steps[pos[StepKind.HOLD_REPLICAS]].targets == tuple(replicas)
    else:
        assert StepKind.HOLD_REPLICAS not in pos and StepKind.RESYNC_REPLICAS not in pos
    assert ("truncated to" in str(steps[1])) == (choice.truncate_to is not None)
    assert ("appendonly no" in str(steps[1])) == (kind is Kind.RDB)


def test_guards() -> None:
    c = Choice(rec("g-1", T0, keys=5), None, "")
    assert source_ok(5, c) is None
    assert "holds 4 keys, the backup 5" in (source_ok(4, c) or "")
    replayed = Choice(rec("g-1", T0, kind=Kind.AOF, keys=5), T0 - 1, "")
    assert source_ok(3, replayed) is None and "empty" in (source_ok(0, replayed) or "")
    p = {"role": "master", "master_repl_offset": "9"}
    r = {"role": "slave", "master_host": "h", "master_port": "1", "master_link_status": "up",
         "master_sync_in_progress": "0", "slave_repl_offset": "9"}
    assert in_sync(p, r, "h:1", 4, 4) is None
    assert in_sync(p, r, "h:2", 4, 4) == "follows h:1, not h:2"
    assert in_sync(p, {**r, "master_link_status": "down"}, "h:1", 4, 4) == "link down or syncing"
    assert in_sync(p, r, "h:1", 4, 3) == "3 keys, the primary 4"
    assert in_sync({"role": "slave"}, r, "h:1", 4, 4) == "the primary does not answer as a primary"
    assert aof_rewritten({}, {"aof_enabled": "0"}) is None
    assert aof_rewritten({"aof_rewrites": "1"}, {"aof_enabled": "1", "aof_rewrites": "1"}) == "AOF not rewritten since the load yet"
    assert "failed" in (aof_rewritten({}, {"aof_enabled": "1", "aof_last_bgrewrite_status": "err"}) or "")
