import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).parents[2]
DOC = ROOT / "docs" / "spec.md"
SCRIPT = ROOT / "scripts" / "specdoc.py"


def _specdoc() -> ModuleType:
    spec = importlib.util.spec_from_file_location("specdoc", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_spec_reference_is_current() -> None:
    """docs/spec.md is generated from the model: regenerate with `python scripts/specdoc.py > docs/spec.md`."""
    out = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout == DOC.read_text(), "regenerate: python scripts/specdoc.py > docs/spec.md (or make spec-doc)"


def test_reference_mentions_every_health_check_field() -> None:
    text = _specdoc().render()
    for key in ("interval", "timeout", "healthy_threshold", "unhealthy_threshold", "matcher"):
        assert f"| `{key}` |" in text
    assert "| `interval` | duration | `1s` |" in text
