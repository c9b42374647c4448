"""The event log: bounded ring, JSON-lines file with rotation, live followers; log formats."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import stat
from pathlib import Path

from fivenines.runtime.events import EventLog, iso
from fivenines.runtime.logs import AccessLog, JsonFormatter, clf_time, request_line, setup_logging


def emit(log: EventLog, n: int, kind: str = "health") -> None:
    for i in range(n):
        log.emit(1_800_000_000.0 + i, kind, "web", f"web-{i}", "initial", "healthy", f"reason {i}")


def test_ring_is_bounded_and_read_by_seq() -> None:
    log = EventLog(size=5)
    emit(log, 12)
    kept = log.recent(100)
    assert [e.seq for e in kept] == [8, 9, 10, 11, 12] and log.last_seq == 12
    assert [e.seq for e in log.recent(2)] == [11, 12] and log.recent(0) == []
    assert [e.seq for e in log.recent(100, since=10)] == [11, 12]
    assert repr(log) == "<EventLog 5 kept, last seq 12, file None>"


def test_event_json_and_text() -> None:
    log = EventLog()
    ev = log.emit(0.25, "health", "web", "web-1", "healthy", "unhealthy", "Target.Timeout")
    d = ev.to_json()
    assert d == {"seq": 1, "time": 0.25, "kind": "health", "group": "web", "target": "web-1", "old": "healthy",
                 "new": "unhealthy", "reason": "Target.Timeout", "at": "1970-01-01T00:00:00.250Z"}
    assert str(ev) == "web/web-1 health healthy -> unhealthy: Target.Timeout"
    assert iso(1_800_000_000.0) == "2027-01-15T08:00:00.000Z"


def test_subscribers_see_every_event_until_they_unsubscribe() -> None:
    log = EventLog()
    seen: list[int] = []
    unsubscribe = log.subscribe(lambda e: seen.append(e.seq))
    emit(log, 2)
    unsubscribe()
    unsubscribe()  # twice is harmless
    emit(log, 1)
    assert seen == [1, 2]


def test_file_gets_one_json_line_per_event_owner_only_and_rotates(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    log = EventLog()
    log.open_file(path, max_bytes=1000)
    emit(log, 3)
    lines = path.read_text().splitlines()
    assert [json.loads(x)["target"] for x in lines] == ["web-0", "web-1", "web-2"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    emit(log, 5)  # past 1000 bytes (about 6 lines): rotated once
    rotated = tmp_path / "events.jsonl.1"
    assert rotated.exists()
    seqs = [json.loads(x)["seq"] for f in (rotated, path) for x in f.read_text().splitlines()]
    assert seqs == list(range(1, 9))  # nothing lost across the rotation
    log.close()
    emit(log, 1)  # after close: kept in memory only
    assert log.last_seq == 9 and len(path.read_text().splitlines()) + len(rotated.read_text().splitlines()) == 8


def test_reopening_appends(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    for _ in range(2):
        log = EventLog()
        log.open_file(path)
        emit(log, 2)
        log.close()
    assert len(path.read_text().splitlines()) == 4


def test_follow_streams_backlog_then_live_events_and_ends_on_close() -> None:
    async def main() -> list[int | None]:
        log = EventLog()
        emit(log, 3)
        got: asyncio.Queue[int | None] = asyncio.Queue()

        async def follower() -> None:
            async for ev in log.follow(since=1, heartbeat=0.05):
                got.put_nowait(ev.seq if ev else None)

        async def take() -> int | None:
            return await asyncio.wait_for(got.get(), 2)

        task = asyncio.create_task(follower())
        seen = [await take(), await take()]  # the backlog after seq 1
        emit(log, 2)
        seen += [await take(), await take()]  # then live events
        seen.append(await take())  # quiet: a heartbeat
        log.close()
        await asyncio.wait_for(task, 2)
        return seen

    assert asyncio.run(main()) == [2, 3, 4, 5, None]


def test_follow_ends_when_its_stop_event_is_set() -> None:
    async def main() -> None:
        log = EventLog()
        stop = asyncio.Event()

        async def follower() -> None:
            async for _ in log.follow(stop=stop, heartbeat=30):
                pass

        task = asyncio.create_task(follower())
        await asyncio.sleep(0)
        stop.set()
        log.wake_all()
        await asyncio.wait_for(task, 2)

    asyncio.run(main())


# ----------------------------------------------------------------------------- logs


def test_json_log_lines_carry_the_event() -> None:
    rec = logging.LogRecord("fivenines", logging.INFO, __file__, 1, "%s", ("web/web-1 health",), None)
    rec.event = {"kind": "health", "target": "web-1"}
    out = json.loads(JsonFormatter().format(rec))
    assert out["level"] == "info" and out["logger"] == "fivenines" and out["message"] == "web/web-1 health"
    assert out["event"] == {"kind": "health", "target": "web-1"} and out["time"].endswith("Z")


def test_setup_logging_switches_format() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        setup_logging("info", "json", stream)
        logging.getLogger("fivenines").info("hello %s", "there", extra={"target": "web-1"})
        logging.getLogger("fivenines").debug("not shown")
        setup_logging("debug", "text", stream)
        logging.getLogger("fivenines").debug("plain")
    finally:
        for h in list(root.handlers):
            root.removeHandler(h)
        for h in saved[0]:
            root.addHandler(h)
        root.setLevel(saved[1])
    first, second = stream.getvalue().splitlines()
    assert json.loads(first)["message"] == "hello there" and json.loads(first)["target"] == "web-1"
    assert second.endswith("DEBUG   plain")


def test_access_log_formats_in_batches(tmp_path: Path) -> None:
    from fivenines.core.exchange import Exchange

    async def main() -> None:
        log = AccessLog(tmp_path / "access.log", flush_every=60)
        log.open()
        ex = Exchange(b"GET", b'GET /a?"x" HTTP/1.1\r\nHost: h\r\n\r\n', False, True, False)
        ex.status = 200
        log.record(b"127.0.0.1", ex, "web-1")
        ex2 = Exchange(b"POST", b"POST /b HTTP/1.1\r\n\r\n", False, True, False)
        ex2.status = 503
        log.record(b"10.0.0.9", ex2, "-")
        assert log.written == 0 and log._timer is not None  # formatted later, off the request path
        log.flush()
        assert log.written == 2 and log._timer is None
        log.close()

    asyncio.run(main())
    lines = (tmp_path / "access.log").read_text().splitlines()
    assert lines[0].startswith('127.0.0.1 - - [') and '"GET /a?%22x%22 HTTP/1.1" 200 - target=web-1 duration=-' in lines[0]
    assert lines[1].startswith("10.0.0.9 - - [") and '"POST /b HTTP/1.1" 503 - target=- duration=-' in lines[1]
    assert clf_time(86400 * 31) == "01/Feb/1970:00:00:00 +0000"
    assert request_line(b"HEAD / HTTP/1.1\r\n") == "HEAD / HTTP/1.1"
