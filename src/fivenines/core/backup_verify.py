"""Taking and checking a copy, the pure part: which member a backup copies from, the verdict on a
copy, and what the Redis check tools and files say. Pure.

* :func:`choose_source`: the healthy replica linked to its primary with the highest
  position (never the primary unless allowed); :func:`missing_writes`: whether it holds
  every write the primary had taken when the backup began;
* :func:`judge`: the check tool's exit, the checksum read back, the key count of a
  scratch server that loaded the copy;
* the AOF pieces: the manifest, ``redis-check-aof``'s per-file report, a torn last
  command, the creation time of the RDB base, the first ``#TS:`` annotation;
  :func:`keyspace_keys` from ``INFO keyspace``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fivenines.core.backup import BackupError, Verdict


@dataclass(frozen=True, slots=True)
class SourceView:
    """A member as a backup sees it: healthy, role, link to its primary, position."""

    id: str
    healthy: bool
    primary: bool
    link_up: bool
    position: int


def choose_source(members: Sequence[SourceView], allow_primary: bool = False) -> tuple[str | None, str]:
    """The member to copy from: the healthy replica, linked to the primary, with the highest
    position (then the first). The primary only when ``allow_primary`` and no replica qualifies:
    copying from it forks the process that takes the writes.

    >>> m = [SourceView("c-1", True, True, False, 90), SourceView("c-2", True, False, True, 80),
    ...      SourceView("c-3", True, False, False, 85)]
    >>> choose_source(m)
    ('c-2', 'c-2: healthy replica at position 80')
    >>> choose_source(m[:1]), choose_source(m[:1], allow_primary=True)[0]
    ((None, 'no healthy replica linked to its primary (c-1 is the primary); not copying from the primary'), 'c-1')
    """
    ok = [m for m in members if m.healthy and not m.primary and m.link_up]
    if ok:
        best = max(ok, key=lambda m: (m.position, -members.index(m)))
        return best.id, f"{best.id}: healthy replica at position {best.position}"
    why = []
    for m in members:
        if m.primary:
            why.append(f"{m.id} is the primary")
        elif not m.healthy:
            why.append(f"{m.id} unhealthy")
        else:
            why.append(f"{m.id} not linked to its primary")
    prim = next((m for m in members if m.primary and m.healthy), None)
    if allow_primary and prim is not None:
        return prim.id, f"{prim.id}: the primary (no healthy replica: {', '.join(why)}; allow_primary)"
    return None, f"no healthy replica linked to its primary ({', '.join(why)}); not copying from the primary"


def missing_writes(source: str, offset: int | None, primary_offset: int | None) -> str | None:
    """Why a copy of ``source`` at replication ``offset`` may lack writes the primary had taken
    (and so may have acknowledged) at ``primary_offset``, when the backup began; None: it holds them.

    A write acknowledged with ``WAIT 1`` is on *one* replica: another may not have it yet. A
    backup copies one replica, so it first waits for that replica to reach the primary's offset
    read when the backup began, and the copy's own offset (``+FULLRESYNC``) must not be lower.
    No primary to ask (``primary_offset`` None): the most advanced replica is the best there is.

    >>> missing_writes("c-2", 120, 100) is None, missing_writes("c-2", 5, None) is None
    (True, True)
    >>> missing_writes("c-2", 90, 100)
    'c-2 at offset 90, the primary at 100 when the backup began: it lacks writes the primary may have acknowledged'
    """
    if primary_offset is None:
        return None
    if offset is None:
        return f"{source}: its replication offset is unknown"
    if offset < primary_offset:
        return (f"{source} at offset {offset}, the primary at {primary_offset} when the backup began: "
                "it lacks writes the primary may have acknowledged")
    return None


# --------------------------------------------------------------------------- verification


@dataclass(frozen=True, slots=True)
class Checks:
    """What the runtime found when it checked a copy. None: not checked."""

    tool_ok: bool | None = None
    tool_detail: str = ""
    sha256: str | None = None
    loaded_keys: int | None = None
    load_error: str = ""


def judge(checks: Checks, *, expected_sha256: str | None = None, expected_keys: int | None = None,
          source_keys: int | None = None, loaded: bool = True) -> tuple[Verdict, str]:
    """The verdict on a copy, and why (every reason found).

    After writing, ``expected_sha256`` is the checksum computed while the copy was taken
    (the stored object is read back and must match); at a restore or a drill, the
    catalogue's checksum and key count (``loaded=False``: the copy was not loaded yet, the
    key count is checked later, as a restore does). ``source_keys``: the source held that many keys
    when the copy began; an empty copy of a non-empty source is refused (it is what a
    replica that had just synced an empty primary would produce).

    >>> judge(Checks(True, "", "ab", 10), expected_sha256="ab", expected_keys=10)
    (<Verdict.OK: 'ok'>, 'check tool ok, sha256 ab matches, 10 keys loaded')
    >>> judge(Checks(False, "CRC error", "ab", None, "exited 1"), expected_sha256="cd")[1]
    'check tool failed: CRC error; sha256 ab, expected cd; not loadable: exited 1'
    """
    bad: list[str] = []
    good: list[str] = []
    if checks.tool_ok is False:
        bad.append(f"check tool failed: {checks.tool_detail}".rstrip(": "))
    elif checks.tool_ok:
        good.append("check tool ok")
    if checks.sha256 is None:
        bad.append("no checksum")
    elif expected_sha256 is not None and checks.sha256 != expected_sha256:
        bad.append(f"sha256 {checks.sha256}, expected {expected_sha256}")
    else:
        good.append(f"sha256 {checks.sha256}" + (" matches" if expected_sha256 is not None else ""))
    if checks.load_error:
        bad.append(f"not loadable: {checks.load_error}")
    elif checks.loaded_keys is None and not loaded:
        pass
    elif checks.loaded_keys is None:
        bad.append("not loaded")
    else:
        if expected_keys is not None and checks.loaded_keys != expected_keys:
            bad.append(f"{checks.loaded_keys} keys loaded, the catalogue says {expected_keys}")
        elif source_keys and checks.loaded_keys == 0:
            bad.append(f"the copy is empty but its source held {source_keys} keys when it began")
        else:
            good.append(f"{checks.loaded_keys} keys loaded")
    if bad:
        return Verdict.FAILED, "; ".join(bad)
    return Verdict.OK, ", ".join(good)


# --------------------------------------------------------------------------- AOF pieces


@dataclass(frozen=True, slots=True)
class AofFile:
    name: str
    seq: int
    type: str  # b (base), h (history), i (increment)


def parse_manifest(text: str) -> list[AofFile]:
    """A Redis 7 AOF manifest (``file NAME seq N type b|h|i`` per line).

    >>> parse_manifest("file appendonly.aof.1.base.rdb seq 1 type b\\nfile appendonly.aof.1.incr.aof seq 1 type i\\n")
    [AofFile(name='appendonly.aof.1.base.rdb', seq=1, type='b'), AofFile(name='appendonly.aof.1.incr.aof', seq=1, type='i')]
    """
    out = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        words = line.split()
        fields = dict(zip(words[::2], words[1::2], strict=False))
        if "file" not in fields or "seq" not in fields or "type" not in fields or not fields["seq"].isdigit():
            raise BackupError(f"AOF manifest line {n}: {line!r} is not 'file NAME seq N type b|h|i'")
        if "/" in fields["file"] or fields["file"].startswith("."):
            raise BackupError(f"AOF manifest line {n}: file name {fields['file']!r} is not a plain name")
        out.append(AofFile(fields["file"], int(fields["seq"]), fields["type"]))
    return out


@dataclass(frozen=True, slots=True)
class AofCheck:
    """One file as ``redis-check-aof`` analysed it: valid up to ``ok_up_to`` of ``size`` bytes."""

    file: str
    size: int
    ok_up_to: int

    @property
    def valid(self) -> bool:
        return self.ok_up_to == self.size


_ANALYZED = re.compile(r"AOF analyzed: filename=(\S+), size=(\d+), ok_up_to=(\d+),")


def parse_check_aof(output: str) -> list[AofCheck]:
    """The per-file lines of ``redis-check-aof`` (Redis 7).

    >>> parse_check_aof("AOF analyzed: filename=a.1.incr.aof, size=1864, ok_up_to=1834, ok_up_to_line=355, diff=30")
    [AofCheck(file='a.1.incr.aof', size=1864, ok_up_to=1834)]
    """
    return [AofCheck(m.group(1), int(m.group(2)), int(m.group(3))) for m in _ANALYZED.finditer(output)]


def torn_tail(checks: Sequence[AofCheck], files: Sequence[AofFile]) -> AofCheck | None:
    """The copy's only fault is a last increment cut inside a command (it was copied while Redis
    appended to it): that file, to be truncated to ``ok_up_to``. None when every file is valid
    or another file is damaged (a real fault: the copy fails verification).

    >>> f = [AofFile("a.1.base.rdb", 1, "b"), AofFile("a.1.incr.aof", 1, "i")]
    >>> torn_tail([AofCheck("a.1.base.rdb", 89, 89), AofCheck("a.1.incr.aof", 1864, 1834)], f)
    AofCheck(file='a.1.incr.aof', size=1864, ok_up_to=1834)
    >>> torn_tail([AofCheck("a.1.base.rdb", 89, 80)], f) is None
    True
    """
    incr = [f.name for f in files if f.type == "i"]
    bad = [c for c in checks if not c.valid]
    if len(bad) == 1 and incr and bad[0].file == incr[-1] and checks and checks[-1] is bad[0]:
        return bad[0]
    return None


def rdb_ctime(output: str) -> float | None:
    """The creation time of an RDB (or of an AOF's RDB base) from the check tool's output.

    >>> rdb_ctime("[offset 53] AUX FIELD ctime = '1796587273'")
    1796587273.0
    """
    m = re.search(r"AUX FIELD ctime = '(\d+)'", output)
    return float(m.group(1)) if m else None


def first_timestamp(head: bytes) -> float | None:
    """The ``#TS:`` annotation an AOF increment starts with (Redis' aof-timestamp-enabled), or None.

    >>> first_timestamp(b"#TS:1796587275\\r\\n*2\\r\\n"), first_timestamp(b"*2\\r\\n")
    (1796587275.0, None)
    """
    m = re.match(rb"#TS:(\d+)\r?\n", head)
    return float(m.group(1)) if m else None

def keyspace_keys(info: Mapping[str, str]) -> int:
    """Total keys from ``INFO keyspace`` (``db0:keys=3,expires=0,avg_ttl=0``).

    >>> keyspace_keys({"db0": "keys=3,expires=0,avg_ttl=0", "db2": "keys=4,expires=1,avg_ttl=9"})
    7
    """
    total = 0
    for k, v in info.items():
        if k.startswith("db") and k[2:].isdigit():
            fields = dict(p.split("=", 1) for p in v.split(",") if "=" in p)
            total += int(fields.get("keys", "0"))
    return total


__all__ = [
    "AofCheck", "AofFile", "Checks", "SourceView", "choose_source", "first_timestamp", "judge", "keyspace_keys",
    "missing_writes", "parse_check_aof", "parse_manifest", "rdb_ctime", "torn_tail",
]
