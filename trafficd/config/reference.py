"""The configuration reference of docs/configuration.md, generated from the model.

Documentation end of the configuration layer: `python -m trafficd.config.reference`
prints the Markdown that docs/configuration.md holds between its markers, and a
test fails when the two differ, so no key goes undocumented.
"""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from trafficd.config.model import ACTUATOR_TYPES, Config
from trafficd.config.storage import DRIVERS, QUAY_RELEASE
from trafficd.config.types import format_duration

BEGIN = "<!-- BEGIN CONFIG REFERENCE (python -m trafficd.config.reference) -->"
END = "<!-- END CONFIG REFERENCE -->"


def _is_duration(info: FieldInfo) -> bool:
    return any("parse_duration" in repr(m) for m in info.metadata)


def _type_name(annotation: Any, info: FieldInfo | None = None) -> str:
    if info is not None and _is_duration(info):
        return "duration"
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        base, *meta = get_args(annotation)
        if any("duration" in repr(m) for m in meta):
            return "duration"
        return _type_name(base)
    if origin in (Union, types.UnionType):
        parts = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(parts)
    if origin is Literal:
        return " \\| ".join(f"`{a}`" for a in get_args(annotation))
    if origin is list:
        return f"list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return "mapping"
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "required"
    if info.default_factory is not None or info.default is PydanticUndefined:
        return ""
    value = info.default
    if value is None:
        return ""
    if _is_duration(info) and isinstance(value, float):
        return f"`{format_duration(value)}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _submodel(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        inner = _submodel(arg)
        if inner is not None:
            return inner
    return None


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, info in model.model_fields.items():
        if name == "type" and model in ACTUATOR_TYPES.values():
            continue
        path = f"{prefix}{name}"
        rows.append(
            f"| `{path}` | {_type_name(info.annotation, info)} | {_default(info)} "
            f"| {info.description or ''} |"
        )
        sub = _submodel(info.annotation)
        if sub is None or name == "storage":
            continue
        if get_origin(info.annotation) is dict:
            rows += _rows(sub, f"{path}.<name>.")
        elif name == "actuators":
            continue
        elif get_origin(info.annotation) is list:
            rows += _rows(sub, f"{path}[].")
        else:
            rows += _rows(sub, f"{path}.")
    return rows


HEADER = ["| key | type | default | meaning |", "|---|---|---|---|"]


def render() -> str:
    out = [BEGIN, "", "### Top level, sites, probes, policy and optional sections", ""]
    out += HEADER + _rows(Config, "")
    out += ["", "### Actuators (`actuators[]`, chosen by `type`)", ""]
    for kind, cls in ACTUATOR_TYPES.items():
        out += [f"`type: {kind}`", "", *HEADER, *_rows(cls, ""), ""]
    out += [
        f"### Storage drivers (`storage.<location>: [Driver, {{params}}]`, Quay {QUAY_RELEASE})",
        "",
        "| driver | required | optional |",
        "|---|---|---|",
    ]
    for driver, params in DRIVERS.items():
        required = [n for n, f in params.model_fields.items() if f.is_required()]
        optional = [n for n, f in params.model_fields.items() if not f.is_required()]
        out.append(
            f"| `{driver}` | {', '.join(f'`{n}`' for n in required)} "
            f"| {', '.join(f'`{n}`' for n in optional)} |"
        )
    out += ["", END]
    return "\n".join(out)


if __name__ == "__main__":  # pragma: no cover
    print(render())
