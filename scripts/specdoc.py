"""Print ``docs/spec.md``, the spec reference, generated from the pydantic model itself.

    python scripts/specdoc.py > docs/spec.md   (or: make spec-doc; a test fails when the
                                                committed file is out of date)

so the reference cannot drift from the code.
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from fivenines.spec import Spec, format_duration, parse_duration, parse_size

HEADER = """# `fivenines.yaml` reference

Generated from the pydantic model in `src/fivenines/spec.py` by
`python scripts/specdoc.py > docs/spec.md`; do not edit by hand.
`fivenines schema` prints the same model as JSON Schema (for editors).

Durations are written `500ms`, `1s`, `2m`, `1h`, `30d` or as a number of seconds;
sizes as `8192` (bytes), `64KiB`, `10MB`, `1GiB`.
Unknown keys are errors. Every error names the file and the field path, e.g.
`fivenines.yaml: target_groups.web.health_check.timeout: timeout (2s) must be less than interval (1s)`,
and exits with status 2 before anything starts.
"""


def _type_name(ann: Any) -> str:
    origin = get_origin(ann)
    if origin is typing.Annotated:
        base = get_args(ann)[0]
        return "duration" if base is float else _type_name(base)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(ann) if a is not type(None)) + (
            " (optional)" if type(None) in get_args(ann) else ""
        )
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(ann))
    if origin is list:
        return f"list of {_type_name(get_args(ann)[0])}"
    if origin is dict:
        k, v = get_args(ann)
        return f"map of {_type_name(k)} to {_type_name(v)}"
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return f"[{ann.__name__}](#{ann.__name__.lower()})"
    return getattr(ann, "__name__", str(ann))


def _is_duration(field: FieldInfo) -> bool:
    return any(getattr(m, "func", None) is parse_duration for m in field.metadata)


def _is_size(field: FieldInfo) -> bool:
    return any(getattr(m, "func", None) is parse_size for m in field.metadata)


def _field_type(field: FieldInfo) -> str:
    if _is_duration(field):
        return "duration"
    return "size" if _is_size(field) else _type_name(field.annotation)


def _default(field: FieldInfo) -> str:
    if field.default is not PydanticUndefined:
        d = field.default
    elif field.default_factory is not None:
        try:
            d = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return ""
        if isinstance(d, BaseModel):
            return "(defaults below)"
    else:
        return "**required**"
    if d is None:
        return ""
    if _is_duration(field) and isinstance(d, int | float):
        return f"`{format_duration(d)}`"
    if isinstance(d, list):  # e.g. default policies: show what was set in each
        d = [x.model_dump(exclude_none=True) if isinstance(x, BaseModel) else x for x in d]
    return f"`{json.dumps(d)}`"


def _models(root: type[BaseModel]) -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []

    def visit(ann: Any) -> None:
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if ann not in seen:
                seen.append(ann)
                for f in ann.model_fields.values():
                    visit(f.annotation)
            return
        for a in get_args(ann):
            visit(a)

    visit(root)
    return seen


def render() -> str:
    parts = [HEADER]
    for model in _models(Spec):
        parts.append(f"\n## {model.__name__}\n")
        doc = (model.__doc__ or "").strip()
        if doc and not doc.startswith("!!!") and "Usage docs" not in doc:
            parts.append(doc.splitlines()[0] + "\n")
        parts.append("| key | type | default | meaning |\n| --- | --- | --- | --- |")
        for name, f in model.model_fields.items():
            desc = (f.description or "").replace("|", "\\|")
            parts.append(f"| `{name}` | {_field_type(f)} | {_default(f)} | {desc} |")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    print(render(), end="")
