from pathlib import Path

from fivenines.specdoc import render

DOC = Path(__file__).parents[2] / "docs" / "spec.md"


def test_spec_reference_is_current() -> None:
    """docs/spec.md is generated from the model: regenerate with `python -m fivenines.specdoc > docs/spec.md`."""
    assert DOC.read_text() == render()


def test_reference_mentions_every_health_check_field() -> None:
    text = render()
    for key in ("interval", "timeout", "healthy_threshold", "unhealthy_threshold", "matcher"):
        assert f"| `{key}` |" in text
    assert "| `interval` | duration | `1s` |" in text
