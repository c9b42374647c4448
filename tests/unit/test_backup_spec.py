"""The ``replicated.backup:`` section of the spec: every error names its field path."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from fivenines.errors import SpecError
from fivenines.spec import parse_spec


def spec(backup: dict[str, Any], instances: bool = False, kind: str = "redis") -> dict[str, Any]:
    group: dict[str, Any] = {"replicated": {"kind": kind, "backup": backup}}
    if kind == "custom":
        group["replicated"]["custom"] = {"role_command": ["r"], "promote_command": ["p"], "follow_command": ["f"]}
    if instances:
        group["instances"] = {"command": ["redis-server", "--port", "{port}"], "count": 1, "standby": 1}
    else:
        group["targets"] = ["127.0.0.1:1", "127.0.0.1:2"]
    return {"name": "x", "listeners": [{"port": 0, "protocol": "tcp", "default_target_group": "cache"}],
            "target_groups": {"cache": group}}


P = "target_groups.cache.replicated.backup"


def test_a_full_backup_section_is_accepted() -> None:
    s = parse_spec(spec({"schedule": "0 3 * * *", "to": "s3://my-bucket/fivenines", "point_in_time": True,
                         "retention": {"keep_last": 3, "daily": 7, "weekly": 4}, "drill": "@weekly",
                         "server_side_encryption": "aws:kms", "kms_key_id": "alias/x", "timeout": "20m"},
                        instances=True))
    b = s.target_groups["cache"].replicated.backup  # type: ignore[union-attr]
    assert b is not None and b.retention.daily == 7 and b.timeout == 1200.0 and b.drill == "@weekly"
    d = parse_spec(spec({"schedule": "6h", "to": "backups"})).target_groups["cache"].replicated
    assert d is not None and d.backup is not None and d.backup.retention.keep_last == 7 and not d.backup.point_in_time


@pytest.mark.parametrize(("backup", "kw", "error"), [
    ({"schedule": "0 25 * * *", "to": "d"}, {}, f"{P}.schedule: hour field: 25 is out of range 0-23"),
    ({"schedule": "6h", "to": "d", "drill": "sometimes"}, {}, f"{P}.drill: 'sometimes' is neither an interval"),
    ({"schedule": "6h", "to": "s3://B"}, {}, f"{P}.to: 's3://B' is not s3://BUCKET/PREFIX"),
    ({"schedule": "6h", "to": " "}, {}, f"{P}.to: give a directory or s3://bucket/prefix"),
    ({"to": "d"}, {}, f"{P}.schedule: required but missing"),
    ({"schedule": "6h", "to": "d", "retention": {"keep_last": 0}}, {}, f"{P}.retention.keep_last: Input should be greater than or equal to 1"),
    ({"schedule": "6h", "to": "d", "retention": {"monthly": 2}}, {}, f"{P}.retention.monthly: unknown key; valid keys here: keep_last, daily, weekly"),
    ({"schedule": "6h", "to": "d", "point_in_time": True}, {}, f"{P}.point_in_time: needs instances"),
    ({"schedule": "6h", "to": "d", "server_side_encryption": "AES256"}, {}, f"{P}.server_side_encryption: only used with to: s3://"),
    ({"schedule": "6h", "to": "d", "endpoint_url": "http://x"}, {}, f"{P}.endpoint_url: only used with to: s3://"),
    ({"schedule": "6h", "to": "s3://bucket", "kms_key_id": "k"}, {}, f"{P}.kms_key_id: only used with server_side_encryption: aws:kms"),
    ({"schedule": "6h", "to": "s3://bucket", "server_side_encryption": "DES"}, {}, f"{P}.server_side_encryption: Input should be 'AES256' or 'aws:kms'"),
    ({"schedule": "6h", "to": "d"}, {"kind": "custom"}, f"{P}: backups are built in for kind redis only (kind is custom)"),
])
def test_errors_name_the_field(backup: dict[str, Any], kw: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(copy.deepcopy(spec(backup, **kw)), "f.yaml")
    assert any(str(e).startswith(error) for e in exc.value.errors), exc.value.render()
    assert exc.value.render().startswith("f.yaml: ")
