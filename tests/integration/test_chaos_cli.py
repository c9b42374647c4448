"""``fivenines chaos`` end to end: a real fivenines, real faults, the report, and the restore guarantees."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest

from fivenines.runtime.supervisor import die_with_parent
from tests.helpers import PY, demo_spec, pid_alive, require_binary, wait_until, write_spec

pytestmark = pytest.mark.slow


def chaos(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PY, "-m", "fivenines", "chaos", *args], capture_output=True, text=True, timeout=timeout,
                          preexec_fn=die_with_parent(os.getpid()))  # a killed test run leaves nothing behind


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    # a target ejected by passive detection is out for base_ejection_time: short, so the run is short
    spec = demo_spec(outlier_detection={"base_ejection_time": "1s"})
    spec["state_dir"] = str(tmp_path / "state")
    return write_spec(tmp_path / "fivenines.yaml", spec)


def test_dry_run_prints_the_schedule_and_starts_nothing(spec_file: Path, tmp_path: Path) -> None:
    args = [str(spec_file), "--dry-run", "--seed", "11", "--duration", "60s", "--mtbf", "5s", "--faults", "kill,hang,error"]
    r = chaos(*args)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("fivenines chaos t: 500 requests/s for 60s to group web; faults kill, hang, error")
    assert "seed 11" in lines[0]
    items = [ln for ln in lines if re.match(r"^\s+\d+\s+at\s+[\d.]+s\s+(kill|hang|error) ", ln)]
    assert len(items) >= 3
    assert all(5.0 <= float(re.search(r"at\s+([\d.]+)s", ln).group(1)) < 50.0 for ln in items)  # type: ignore[union-attr]
    assert any("hang a serving target for 5s" in ln for ln in items)
    assert chaos(*args).stdout == r.stdout  # one seed, one schedule
    assert not (tmp_path / "state").exists()


def test_dry_run_of_a_fixed_schedule(spec_file: Path) -> None:
    r = chaos(str(spec_file), "--dry-run", "--schedule", "9s:error, 3s:hang:web-2", "--fault-duration", "2s")
    assert r.returncode == 0, r.stderr
    assert "faults hang, error (fixed schedule)" in r.stdout
    assert "\n  1  at   3.00s  hang web-2 for 2s\n  2  at   9.00s  error a serving target for 2s\n" in r.stdout


@pytest.mark.parametrize("args, message", [
    (["--faults", "kill,nuke"], "--faults: unknown fault 'nuke'; valid: kill, hang, error, slow, reset, lb"),
    (["--faults", "lb"], "--faults lb kills a data-plane worker: it needs workers: 2 or more"),
    (["--schedule", "soon:kill"], "--schedule: schedule item 'soon:kill'"),
    (["--duration", "10s"], "--duration 10s leaves no time for faults"),
    (["--duration", "ten"], "'ten' is not a duration"),
])
def test_usage_errors_exit_2(spec_file: Path, args: list[str], message: str) -> None:
    r = chaos(str(spec_file), "--dry-run", *args)
    assert r.returncode == 2
    assert message in r.stderr


def test_a_group_of_external_targets_is_refused(tmp_path: Path) -> None:
    spec = demo_spec()
    del spec["target_groups"]["web"]["instances"]
    spec["target_groups"]["web"]["targets"] = ["127.0.0.1:9"]
    r = chaos(str(write_spec(tmp_path / "f.yaml", spec)), "--dry-run")
    assert r.returncode == 2
    assert "target_groups.web lists targets: fivenines does not run them" in r.stderr


def _png_pixels(data: bytes) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(data), format="png")


def _has_colour(img: Any, rgb: tuple[int, int, int], tol: float = 0.03) -> bool:
    import numpy as np

    target = np.array(rgb, dtype=float) / 255.0
    return bool((np.abs(img[..., :3] - target) < tol).all(axis=-1).any())


def test_short_run_writes_the_report_and_restores_every_target(spec_file: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    r = chaos(str(spec_file), "--duration", "15s", "--rate", "200", "--seed", "5", "--fault-duration", "2s",
              "--schedule", "3s:kill, 6s:hang, 10s:error", "--report", str(report), timeout=90)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "predicted vs measured (web)" in r.stdout
    assert f"report: {report / 'report.html'}" in r.stdout

    s = json.loads((report / "summary.json").read_text())
    m = s["measured"]
    assert 0.9 < m["request_availability"] <= 1.0
    assert 0.0 < m["time_availability"] <= 1.0
    assert m["requests"]["scheduled"] == 3000
    assert m["requests"]["valid"] + m["requests"]["errors"].get("unsent", 0) >= 2990
    assert m["request_availability_ci95"][0] <= m["request_availability"] <= m["request_availability_ci95"][1]
    assert 0.0 < s["predicted"]["availability"] <= 1.0
    assert {row["quantity"] for row in s["predicted"]["table"]} >= {"detection time", "repair time (MTTR)",
                                                                    "availability during this run"}
    faults = s["faults"]
    assert [f["kind"] for f in faults] == ["kill", "hang", "error"]
    for f in faults:
        assert f["skipped"] is None, f
        assert f["target"].startswith("web-") and isinstance(f["pid"], int)
        assert f["detection_s"] is not None and 0 <= f["detection_s"] < 2.0, f
        assert f["repair_s"] is not None and f["repair_s"] > f["detection_s"], f
        assert isinstance(f["failed_requests"], int) and f["covered"] == (f["failed_requests"] == 0)
    kill, hang, error = faults
    # the exit is noticed at once, through the process (pidfd), not by the checks; how fast is
    # bench/timings_bench.py's to measure
    seen = [e for e in s["events"] if e["kind"] == "health" and e["target"] == kill["target"]
            and e["new"] == "unhealthy" and e["t_s"] >= kill["injected_at_s"]]
    assert seen and "ProcessExited" in seen[0]["reason"], seen[:3]
    assert hang["restored_at_s"] == pytest.approx(hang["injected_at_s"] + 2.0, abs=0.3)
    assert error["restored_at_s"] == pytest.approx(error["injected_at_s"] + 2.0, abs=0.3)
    # repaired after the restore: SIGCONT and /_recover were done and the checks passed again
    assert hang["injected_at_s"] + hang["repair_s"] >= hang["restored_at_s"]
    assert error["injected_at_s"] + error["repair_s"] >= error["restored_at_s"]
    assert m["mttr_s"] == pytest.approx(sum(f["repair_s"] for f in faults) / 3, abs=1e-3)
    assert m["faults"] == 3 and m["covered_faults"] == sum(f["covered"] for f in faults)
    assert s["restore"]["stopped_left"] == [] and s["restore"]["pending_undo"] == []
    kinds = {e["kind"] for e in s["events"]}
    assert {"health", "serving"} <= kinds
    assert len(s["series"]["t_s"]) == 15

    # everything chaos started is gone
    ready = json.loads((report / "ready.json").read_text())
    wait_until(lambda: not pid_alive(ready["pid"]), 10, what="fivenines stopped")
    for f in faults:
        assert not pid_alive(f["pid"])

    page = (report / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == 2
    assert "http://" not in page.replace(s["listener"], "")  # nothing to fetch from a network
    for b64 in images:
        assert base64.b64decode(b64).startswith(b"\x89PNG")
    # the target plot shows healthy (green) and unhealthy (red) spans
    targets_png = _png_pixels(base64.b64decode(images[1]))
    assert _has_colour(targets_png, (0x2E, 0x9E, 0x44)) and _has_colour(targets_png, (0xD0, 0x31, 0x2D))

    # and a browser renders it, plots included
    chromium = require_binary("chromium")
    shot = tmp_path / "shot.png"
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--window-size=1200,2400", f"--screenshot={shot}", (report / "report.html").as_uri()],
                   capture_output=True, timeout=60, check=True)
    img = _png_pixels(shot.read_bytes())
    assert _has_colour(img, (0x2E, 0x9E, 0x44)), "the embedded plot did not render"


def test_ctrl_c_restores_the_hung_target_then_stops(spec_file: Path, tmp_path: Path) -> None:
    report = tmp_path / "report"
    err = tmp_path / "chaos.err"
    with err.open("w") as ef:
        p = subprocess.Popen([PY, "-m", "fivenines", "chaos", str(spec_file), "--duration", "60s", "--rate", "100",
                              "--schedule", "2s:hang", "--fault-duration", "50s", "--report", str(report)],
                             stdout=subprocess.DEVNULL, stderr=ef, preexec_fn=die_with_parent(os.getpid()))
    try:
        line = wait_until(lambda: re.search(r"hang\s+(web-\d): SIGSTOP pid (\d+)", err.read_text()), 30,
                          what="the hang to be injected")
        pid = int(line.group(2))
        wait_until(lambda: Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T", 5,
                   what="the instance stopped")
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 130
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = err.read_text()
    assert "restore on exit: SIGCONT 1 process(es)" in text
    assert "interrupted: injection stopped, every target restored, fivenines stopped." in text
    # fivenines stopped its instances gracefully: none had to be SIGKILLed for being stopped
    log = (report / "fivenines.log").read_text()
    assert "SIGKILL" not in log, log[-2000:]
    assert not pid_alive(pid)
    assert not (report / "summary.json").exists()
    assert os.path.exists(report / "fivenines.log")


# --------------------------------------------------------------------------- the wipe (docs/chaos.md, docs/backup.md)


def test_wipe_usage_errors_exit_2(spec_file: Path, tmp_path: Path) -> None:
    r = chaos(str(spec_file), "--dry-run", "--faults", "wipe,kill")
    assert r.returncode == 2 and "--faults wipe is a run of its own" in r.stderr, r.stderr
    r = chaos(str(spec_file), "--dry-run", "--faults", "wipe")
    assert r.returncode == 2 and "a replicated redis group with a backup: section" in r.stderr, r.stderr
    from tests.redis_helpers import backup_spec

    spec = backup_spec(schedule="0 0 1 1 *")
    spec["state_dir"] = str(tmp_path / "state")
    wipe_spec = write_spec(tmp_path / "wipe.yaml", spec)
    r = chaos(str(wipe_spec), "--dry-run", "--schedule", "5s:wipe, 8s:wipe")
    assert r.returncode == 2 and "a wipe run has one fault" in r.stderr, r.stderr
    r = chaos(str(wipe_spec), "--dry-run", "--schedule", "5s:wipe", "--fault-duration", "2s")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("fivenines chaos r: wipe of group cache at 5.00s, restore 2s later")
    assert not (tmp_path / "state").exists()


def test_wipe_counts_every_acknowledged_write_and_measures_rpo_and_rto(tmp_path: Path) -> None:
    from tests.redis_helpers import backup_spec

    spec = backup_spec(schedule="0 0 1 1 *")  # no scheduled backup: chaos takes one during the warm-up
    spec["state_dir"] = str(tmp_path / "state")
    spec_path = write_spec(tmp_path / "wipe.yaml", spec)
    report = tmp_path / "report"
    r = chaos(str(spec_path), "--faults", "wipe", "--schedule", "6s:wipe", "--fault-duration", "1s",
              "--duration", "12s", "--warmup", "2s", "--seed", "3", "--report", str(report), timeout=120)
    assert r.returncode == 0, r.stderr
    s = json.loads((report / "summary.json").read_text())
    m = s["measured"]
    assert s["kind"] == "wipe" and s["group"] == "cache" and s["backup"]["taken_by"] == "chaos"
    assert s["restore"]["state"] == "ok", s["restore"]
    assert s["restore"]["result"]["steps"][0]["step"] == "verify"
    assert m["acknowledged"] > 100 and s["writers"]["clients"] == 4
    # writes newer than the backup and writes the wiped primary took are lost, each counted; nothing else
    assert m["lost_before_wipe"] > 0 and m["lost_after_wipe"] > 0
    assert m["lost"] == m["lost_before_wipe"] + m["lost_after_wipe"]
    assert m["missing_before_backup"] == m["missing_after_restore"] == m["wrong_value"] == 0
    # the restored data is the backup's: its newest write a little before the backup's time
    assert 0 < m["rpo_s"] < 6.0
    assert m["rto_s"] > 1.0 and m["restore_s"] > 0  # the operator waited 1s, then the restore ran
    assert m["declared_rpo_s"] == 366 * 86400 and m["expected_rto_s"] > 0  # the schedule's; the drill's
    kinds = [(e["kind"], e["new"]) for e in s["events"]]
    assert ("backup", "ok") in kinds and ("drill", "ok") in kinds and ("recovery", "restored") in kinds
    assert "RPO measured" in r.stdout and f"lost                 {m['lost']}" in r.stdout, r.stdout
    page = (report / "report.html").read_text()
    assert f"{m['lost']} of {m['acknowledged']} acknowledged writes lost" in page
    assert "fivenines.log" in {p.name for p in report.iterdir()}
