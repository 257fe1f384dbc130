"""The configuration reference in Markdown, generated from the config model.

docs/configuration.md holds the prose; the MkDocs hook docs/hooks/config_reference.py puts
these tables into it at build time, so a key, a type or a default shown there is always the
code's. Every field needs a description (its attribute docstring in model.py): a field
without one is an error here, which fails `mkdocs build`.
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic.functional_validators import BeforeValidator

from lyoncam_daemon.config.model import (
    CameraConfig,
    Config,
    Tuning,
    parse_count,
    parse_duration,
    parse_size,
)
from lyoncam_daemon.config.shard import Shard

#: Where the tables go in docs/configuration.md: everything between the two markers is
#: replaced, so the page can say there what a reader on GitHub (no build) should read instead.
MARKER = "<!-- config-reference -->"
END_MARKER = "<!-- /config-reference -->"

#: Field types read through one of model.py's parsers, by that parser.
_PARSED: dict[Callable[[Any], Any], str] = {
    parse_duration: "duration",
    parse_size: "size",
    parse_count: "integer",
}
_PLAIN = {bool: "boolean", int: "integer", float: "number", str: "text", Path: "path",
          Shard: "`I/N`"}
_LIMITS: tuple[tuple[type[Any], str, str], ...] = (
    (annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"),
    (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<"),
)


def type_name(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> str:
    """How a field's type reads in the reference: `duration`, `integer, ≥ 1`, `list of path`."""
    # A no-break space keeps a limit such as "≥ 1" on one line in a narrow column.
    bounds = {attr: _number(getattr(m, attr)) for m in metadata
              for kind, attr, _ in _LIMITS if isinstance(m, kind)}
    if "ge" in bounds and "le" in bounds:
        limits = [f"{bounds['ge']}\u00a0to\u00a0{bounds['le']}"]
    else:
        limits = [f"{sign}\u00a0{bounds[attr]}" for _, attr, sign in _LIMITS if attr in bounds]
    parsed = [_PARSED[m.func] for m in metadata
              if isinstance(m, BeforeValidator) and m.func in _PARSED]
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Annotated:
        return type_name(args[0], [*args[1:], *metadata])
    if origin in (Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        inner = type_name(rest[0], metadata) if len(rest) == 1 else "value"
        return f"{inner} or `null`"
    if parsed:
        name = parsed[0]
    elif origin is Literal:
        name = _choices([f"`{a}`" for a in args])
    elif origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        name = f"list of {type_name(args[0])}"
    elif origin is tuple:
        name = "`[x, y, w, h]`" if len(args) == 4 else f"list of {len(args)} values"
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        name = "section"
    else:
        name = _PLAIN.get(annotation, getattr(annotation, "__name__", str(annotation)))
    return ", ".join([name, *limits])


def _choices(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _number(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def yaml_value(value: object) -> str:
    """A default as it would be written in cameras.yaml: `null`, `true`, `10`, `[]`."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # `interval: 60`, as people write it; the model reads it as 60.0
    if isinstance(value, Path | Shard):
        value = str(value)
    if isinstance(value, tuple):
        value = [list(v) if isinstance(v, tuple) else (str(v) if isinstance(v, Path) else v)
                 for v in value]
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=1000)
    return text.removesuffix("\n").removesuffix("\n...")


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    return f"`{yaml_value(field.get_default(call_default_factory=True))}`"


def _description(model: type[BaseModel], name: str, field: FieldInfo) -> str:
    if not field.description:
        raise ValueError(f"config reference: {model.__name__}.{name} has no description "
                         "(an attribute docstring in lyoncam_daemon/config/model.py)")
    return " ".join(field.description.split()).replace("|", "\\|")


def _rows(model: type[BaseModel], prefix: str, names: list[str]) -> Iterator[str]:
    yield "| key | type | default | description |"
    yield "| --- | --- | --- | --- |"
    for name in names:
        field = model.model_fields[name]
        yield (f"| `{prefix}{name}` | {type_name(field.annotation, field.metadata)} | "
               f"{_default(field)} | {_description(model, name, field)} |")


def _is_section(field: FieldInfo) -> bool:
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)


def config_reference(config: type[Config] = Config) -> str:
    """Markdown tables of every key of `cameras.yaml`, section by section."""
    fields = config.model_fields
    top = [n for n, f in fields.items() if not _is_section(f) and n != "cameras"]
    out = ["### Top level", "", *_rows(config, "", top)]
    for name, field in fields.items():
        if not _is_section(field):
            continue
        section = field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        out += ["", f"### `{name}`", ""]
        if issubclass(section, Tuning):  # `defaults:`: the camera table's keys
            keys = ", ".join(f"`{k}`" for k in section.model_fields)
            out.append(f"{_description(config, name, field)} Keys: {keys}, with the "
                       "types and defaults of the [per-camera table](#cameras) below.")
            continue
        out += [_description(config, name, field), ""]
        out += _rows(section, f"{name}.", list(section.model_fields))
    camera = _camera_model(fields["cameras"])
    own = [n for n in camera.model_fields if n not in Tuning.model_fields]
    out += ["", "### `cameras`", "", _description(config, "cameras", fields["cameras"]), "",
            *_rows(camera, "", [*own, *Tuning.model_fields])]
    return "\n".join(out) + "\n"


def _camera_model(field: FieldInfo) -> type[CameraConfig]:
    args = get_args(field.annotation)
    assert args and isinstance(args[0], type) and issubclass(args[0], CameraConfig)
    return args[0]


def fill(page: str) -> str:
    """`page` with the text between MARKER and END_MARKER replaced by the reference;
    ValueError unless the page holds each marker once, in that order."""
    start, end = page.find(MARKER), page.find(END_MARKER)
    if page.count(MARKER) != 1 or page.count(END_MARKER) != 1 or end < start:
        raise ValueError(f"the page must hold {MARKER} and then {END_MARKER}, once each")
    return f"{page[:start]}{config_reference()}{page[end + len(END_MARKER):]}"
