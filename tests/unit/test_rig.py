"""The test rig's own rules: what "under CI" means, what a missing binary or module does, and
which tests need what (so that scripts/install-test-deps installs it, and names what will skip)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import helpers
from tests.needs import ROOT, files_needing, needs_by_file


def _outcome(fn: Callable[[str], object], name: str) -> BaseException | None:
    """What ``fn(name)`` raised (skip and fail are BaseExceptions: caught here, not by pytest)."""
    try:
        fn(name)
    except BaseException as exc:
        return exc
    return None


def test_a_missing_binary_or_module_skips_locally_and_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    for ci, outcome in ((False, pytest.skip.Exception), (True, pytest.fail.Exception)):
        monkeypatch.setattr(helpers, "IN_CI", ci)
        for fn, name, says in ((helpers.require_binary, "no-such-server-binary", "is not installed"),
                               (helpers.require_module, "no_such_module_here", "cannot be imported")):
            got = _outcome(fn, name)
            assert isinstance(got, outcome), (ci, fn.__name__, got)
            assert says in str(got) and ("required under CI" in str(got)) == ci
    # present: the path, the module
    assert helpers.require_binary("sh").endswith("/sh")
    assert helpers.require_module("json").__name__ == "json"


def test_needs_follow_helpers_and_imports() -> None:
    by_file = needs_by_file()
    assert "chromium" in by_file["tests/integration/test_dashboard.py"]  # require_binary in the test
    assert "redis-server" in by_file["tests/integration/test_switchover.py"]  # through redis_spec()
    assert by_file["tests/integration/test_lease.py"] >= {"etcd", "redis-server"}  # EtcdServer, RedisServer
    assert "moto.server" in by_file["tests/integration/test_aws_cli.py"]  # imports test_aws, which requires it
    assert "tests/unit/test_replication_io.py" not in by_file  # names redis-server in specs, runs none
    assert "tests/integration/test_lease.py" in files_needing(["etcd"])["etcd"]


def _declared(script: str, array: str) -> dict[str, str]:
    block = re.search(rf"declare -A {array}=\((.*?)\n\)", script, re.S)
    assert block is not None, f"no {array} in scripts/install-test-deps"
    return dict(re.findall(r"\[([\w.-]+)\]=([\w.-]+)", block.group(1)))


def test_install_test_deps_installs_every_binary_a_test_requires() -> None:
    script = (ROOT / "scripts" / "install-test-deps").read_text()
    tests, bench = _declared(script, "test_pkg"), _declared(script, "bench_pkg")
    required = set().union(*needs_by_file(funcs=("require_binary",)).values())
    assert required <= set(tests), f"tests require {sorted(required - set(tests))}, not installed for tests"
    assert not required & set(bench), "a binary the tests need is installed only with --bench"
    # and nothing installed for tests that no test needs
    assert set(tests) <= required, f"installed for tests, needed by none: {sorted(set(tests) - required)}"


def test_the_ci_rule_is_fivenines_own() -> None:
    """One rule: tests/helpers.py, tests/needs.py and scripts/compile all ask fivenines.accel."""
    from fivenines import accel

    assert accel.under_ci() == helpers.IN_CI
    assert "load_accel().under_ci()" in (Path(ROOT) / "scripts" / "compile").read_text()
    makefile = (Path(ROOT) / "Makefile").read_text()
    assert "$(CI)" not in makefile, "the Makefile decides nothing about CI: scripts/compile does"
