"""`fivenines model --json` carries the load section's answer (instances needed, availability at min and max)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import demo_spec, write_spec


def test_model_json_reports_the_range(tmp_path: Path) -> None:
    spec = demo_spec(count=2, standby=1, scaling={"min": 2, "max": 6, "policies": [{"requests_per_target": 400}]},
                     load={"mean_rps": 500, "peak_rps": 3000, "per_instance_rps": 450})
    path = write_spec(tmp_path / "s.yaml", spec)
    proc = subprocess.run([sys.executable, "-m", "fivenines", "model", "--json", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    load = json.loads(proc.stdout)["groups"]["web"]["load"]
    assert (load["needed_at_mean"], load["needed_at_peak"], load["peak_fits"]) == (2, 7, False)
    assert load["at_min"]["actives"] == 2 and load["at_max"]["actives"] == 6
    assert 0 < load["at_min"]["availability"] < 1 and 0 < load["at_max"]["availability"] < 1
    assert load["findings"][0] == "the peak (3000 rps) needs 7 instances but max is 6: it overloads the group"


def test_model_text_prints_the_range(tmp_path: Path) -> None:
    spec = demo_spec(count=2, standby=1, scaling={"min": 2, "max": 6, "policies": [{"requests_per_target": 400}]},
                     load={"mean_rps": 500, "peak_rps": 3000, "per_instance_rps": 450})
    path = write_spec(tmp_path / "s.yaml", spec)
    proc = subprocess.run([sys.executable, "-m", "fivenines", "model", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    from fivenines.model.layout import predict
    from fivenines.spec import load_spec

    lines = predict(load_spec(str(path))).load_lines()
    assert lines and all(line in proc.stdout for line in lines), (lines, proc.stdout)
    assert "the peak (3000 rps) needs 7 instances but max is 6" in proc.stdout
