"""Launchpad run config derived from a config file's pydantic model (no second list of defaults).

`overrides_config(Model, name)` is a `dg.Config` class with every top-level field of `Model`
(minus `exclude`, or only `include`) made optional with default None, meaning "keep the config
file's value"; the descriptions carry over, and `Literal` choices become enums (the Launchpad
offers them). `Model` may be several models (their fields together) and the base a
`dg.ConfigurableResource` (a resource whose fields override a config file, e.g. the `trainer`).
`overrides(config)` is the set fields as plain values, ready to merge over the file.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Literal, Optional

import dagster as dg
from pydantic import BaseModel, Field, create_model


def _launchpad_type(ann: Any, name: str, enums: bool = True) -> Any:
    """`ann` as a type Dagster's config accepts: Literal -> a str Enum (`enums` False: str),
    X | None -> X."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) is Literal:
        if not enums:
            return str
        return enum.Enum(name, [(str(v), v) for v in typing.get_args(ann)], type=str)  # type: ignore[misc]
    if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1:
        return _launchpad_type(args[0], name, enums)
    return ann


def overrides_config(
    model: type | tuple[type, ...],
    name: str,
    exclude: tuple[str, ...] = (),
    doc: str = "",
    *,
    include: tuple[str, ...] | None = None,
    base: type = dg.Config,
    enums: bool = True,
) -> type:
    """A subclass of `base` (`dg.Config` or `dg.ConfigurableResource`): the fields of `model` (a
    pydantic model or dataclass, or a tuple of them) except `exclude` (or only `include`), each
    Optional, default None. `enums` False keeps `Literal` choices as plain strings (checked when
    merged over the file)."""
    fields: dict[str, Any] = {}
    for m in model if isinstance(model, tuple) else (model,):
        model_fields = m.model_fields if issubclass(m, BaseModel) else getattr(m, "__pydantic_fields__")
        for field_name, info in model_fields.items():
            if field_name in exclude or (include is not None and field_name not in include) or field_name in fields:
                continue  # a name in two models: the first model's field
            fields[field_name] = _override_field(info, f"{name}_{field_name}", enums)
    return create_model(name, __base__=base, __doc__=doc or None, **fields)


def _override_field(info: Any, enum_name: str, enums: bool) -> tuple[Any, Any]:
    """(Optional type, Field(None, description)) of one overridable field."""
    typ = _launchpad_type(info.annotation, enum_name, enums)
    default = info.get_default(call_default_factory=True)
    desc = (info.description + "; " if info.description else "") + (
        f"unset: the config file's value (built-in default {default!r})"
    )
    return (Optional[typ], Field(None, description=desc))


def overrides(config: dg.Config) -> dict[str, Any]:
    """The fields the run config set (not None), as plain JSON values (enums as their strings)."""
    return {k: v for k, v in config.model_dump(mode="json").items() if v is not None}
