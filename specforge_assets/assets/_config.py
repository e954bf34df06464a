"""Launchpad run config derived from a config file's pydantic model (no second list of defaults).

`overrides_config(Model, name)` is a `dg.Config` class with every top-level field of `Model`
(minus `exclude`) made optional with default None, meaning "keep the config file's value"; the
descriptions carry over, and `Literal` choices become enums (the Launchpad offers them).
`overrides(config)` is the set fields as plain values, ready to merge over the file.
"""

from __future__ import annotations

import enum
import types
import typing
from typing import Any, Literal, Optional

import dagster as dg
from pydantic import BaseModel, Field, create_model


def _launchpad_type(ann: Any, name: str) -> Any:
    """`ann` as a type Dagster's config accepts: Literal -> a str Enum, X | None -> X."""
    args = [a for a in typing.get_args(ann) if a is not type(None)]
    if typing.get_origin(ann) is Literal:
        return enum.Enum(name, [(str(v), v) for v in typing.get_args(ann)], type=str)  # type: ignore[misc]
    if typing.get_origin(ann) in (typing.Union, types.UnionType) and len(args) == 1:
        return _launchpad_type(args[0], name)
    return ann


def overrides_config(model: type[BaseModel], name: str, exclude: tuple[str, ...] = (), doc: str = "") -> type:
    """A `dg.Config` subclass: the fields of `model` except `exclude`, each Optional, default None."""
    fields: dict[str, Any] = {}
    for field_name, info in model.model_fields.items():
        if field_name in exclude:
            continue
        typ = _launchpad_type(info.annotation, f"{name}_{field_name}")
        default = info.get_default(call_default_factory=True)
        desc = (
            info.description + "; " if info.description else ""
        ) + f"unset: the config file's value (built-in default {default!r})"
        fields[field_name] = (Optional[typ], Field(None, description=desc))
    cls = create_model(name, __base__=dg.Config, __doc__=doc or None, **fields)
    return cls


def overrides(config: dg.Config) -> dict[str, Any]:
    """The fields the run config set (not None), as plain JSON values (enums as their strings)."""
    return {k: v for k, v in config.model_dump(mode="json").items() if v is not None}
