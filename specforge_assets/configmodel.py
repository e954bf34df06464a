"""Typed configuration: the base of every configs/*.yaml model, and its one-line errors.

Each config file has one pydantic model (`ConfigModel`: unknown keys refused, bounds and choices
declared on the fields, the defaults in one place). `validate(Model, data, where)` returns the
model or raises `ConfigError` (a `UserError` and a `ValueError`) with one line naming the file and
the field, e.g. ``configs/mix.yaml: eval.fraction: must be < 1 (got 1.5)``. No Dagster import.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import UserError

M = TypeVar("M", bound=BaseModel)


class ConfigError(UserError, ValueError):
    """A config file (or a run config / flag) that does not fit its model: one line, file and field."""


class ConfigModel(BaseModel):
    """A config file section: unknown keys are errors; values are checked when assigned too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


_RENAMES = {  # pydantic's wording -> the project's (short, lower case, no "Input")
    "Input should be a valid boolean, unable to interpret input": "must be true or false",
    "Input should be a valid boolean": "must be true or false",
    "Input should be ": "must be ",
    "Value error, ": "",
    "Assertion failed, ": "",
}


# The tags pydantic puts in an error's location for a member of a union or a validator wrapper
# (`k: int | list[int]` fails as `k.int` and `k.list[int]`): not part of the user's path.
_TYPE_TAGS = {
    "int", "float", "str", "bool", "bytes", "list", "dict", "tuple", "set", "literal", "nullable", "union",
    "function-after", "function-before", "function-wrap", "function-plain", "constrained-int",
    "constrained-float", "constrained-str", "lax-or-strict", "json-or-python", "chain", "is-instance",
}  # fmt: skip


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).split("[", 1)[0] in _TYPE_TAGS:
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _known(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the (nested) model that `loc` (without its last part) points into."""
    cur: Any = model
    for part in loc[:-1]:
        fields = getattr(cur, "model_fields", None)
        if not fields or part not in fields:
            return []
        ann = fields[part].annotation
        cur = next((a for a in getattr(ann, "__args__", ()) if hasattr(a, "model_fields")), ann)
    return sorted(getattr(cur, "model_fields", {}) or {})


def describe(e: ValidationError, model: type[BaseModel] | None = None, noun: str = "key", names=None) -> str:
    """The errors of `e` as one line: ``field: what is wrong (got VALUE)``, joined by ``; ``.
    An unknown key reads ``unknown {noun} 'section.x' (known: a, b)``; `names` maps a field to how the
    user wrote it (a CLI flag)."""
    parts = []
    for err in e.errors(include_url=False):
        loc = tuple(err.get("loc") or ())
        where = _loc(loc)
        if names and where in names:
            where = names[where]
        if err.get("type") == "extra_forbidden":
            known = _known(model, loc) if model is not None else []
            parts.append(f"unknown {noun} {where!r}" + (f" (known: {', '.join(known)})" if known else ""))
            continue
        msg = str(err.get("msg", ""))
        for old, new in _RENAMES.items():
            msg = msg.replace(old, new)
        got = err.get("input")
        # a custom validator's message (value_error) names the value itself
        quiet = err.get("type") in ("missing", "value_error", "assertion_error") or isinstance(got, (dict, BaseModel))
        shown = "" if quiet else f" (got {got!r})"
        parts.append(f"{where}: {msg}{shown}" if where else f"{msg}{shown}")
    return "; ".join(dict.fromkeys(" ".join(p.split()) for p in parts))  # a union's members may repeat


def validate(model: type[M], data: Any, where: str, noun: str = "key", names=None) -> M:
    """`data` as `model`, or `ConfigError` ``{where}: {describe(...)}`` (one line)."""
    try:
        return model.model_validate({} if data is None else data)
    except ValidationError as e:
        raise ConfigError(f"{where}: {describe(e, model, noun, names)}") from None
