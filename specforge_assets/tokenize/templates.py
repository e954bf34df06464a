"""Chat-template registry, kept as data (`templates.yaml` beside this file).

Each entry has SpecForge's `ChatTemplate` fields. Users add or override entries in
`configs/tokenize.yaml` under `templates:`; `get_template(name, extra)` resolves a name.
"""
from __future__ import annotations

import dataclasses
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..paths import load_yaml

REGISTRY_FILE = Path(__file__).with_name("templates.yaml")
PARSER_TYPES = ("general", "thinking", "glm", "openai-harmony")
PATTERN_TYPES = ("general", "longcat", "inkling", "glm")


class UnknownTemplateError(KeyError, UserError):
    def __str__(self) -> str:  # KeyError would print the repr of the message
        return str(self.args[0])


@dataclasses.dataclass(frozen=True)
class ChatTemplate:
    name: str
    assistant_header: str | None = None
    user_header: str | None = None
    system_prompt: str | None = None
    end_of_turn_token: str | None = None
    parser_type: str = "general"
    assistant_pattern_type: str = "general"
    enable_thinking: bool = False
    ignore_token: tuple[str, ...] | None = None

    def fields(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ignore_token"] = list(self.ignore_token) if self.ignore_token is not None else None
        return d

    def assistant_regex(self) -> re.Pattern:
        """SpecForge's span regex: header, then a lazy group ending at (and including) the
        terminator, or at `$` (end of text, or just before a final newline)."""
        if self.assistant_header is None:
            raise ValueError(f"template {self.name!r} has no assistant_header; its spans cannot be found")
        head = re.escape(self.assistant_header)
        if self.assistant_pattern_type == "longcat":
            end = re.escape("[Round ") + r"\d+" + re.escape("] USER:")
            return re.compile(head + r"([\s\S]*?(?:" + end + "|$))", re.DOTALL)
        if self.assistant_pattern_type == "inkling":
            end = "|".join(re.escape(t) for t in ("<|message_user|>", "<|message_tool|>", "<|message_system|>"))
            return re.compile(head + r"([\s\S]*?(?:" + end + "|$))", re.DOTALL)
        if self.end_of_turn_token is None:
            raise ValueError(
                f"template {self.name!r} has no end_of_turn_token, so SpecForge's span regex cannot be "
                "built (it raises TypeError there too); set end_of_turn_token in configs/tokenize.yaml "
                "templates, or use the template-agnostic mask (corrected.incremental_mask: true)"
            )
        eot = re.escape(self.end_of_turn_token)
        if self.assistant_pattern_type == "glm":
            return re.compile(head + r"(?:</think>)?([\s\S]*?(?:" + eot + "|$))", re.DOTALL)
        return re.compile(head + r"([\s\S]*?(?:" + eot + "|$))", re.DOTALL)


def _make(name: str, fields: dict) -> ChatTemplate:
    if not isinstance(fields, dict):
        raise ValueError(f"chat template {name!r}: expected a mapping of fields, got {type(fields).__name__}")
    known = {f.name for f in dataclasses.fields(ChatTemplate)} - {"name"}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"chat template {name!r}: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
    f = dict(fields)
    for key in ("assistant_header", "user_header", "system_prompt", "end_of_turn_token"):
        if f.get(key) is not None and not isinstance(f[key], str):
            raise ValueError(f"chat template {name!r}: field {key} must be a string or null")
    if f.get("parser_type", "general") not in PARSER_TYPES:
        raise ValueError(f"chat template {name!r}: parser_type must be one of {PARSER_TYPES}")
    if f.get("assistant_pattern_type", "general") not in PATTERN_TYPES:
        raise ValueError(f"chat template {name!r}: assistant_pattern_type must be one of {PATTERN_TYPES}")
    ign = f.get("ignore_token")
    if ign is not None:
        if isinstance(ign, str):
            ign = [ign]
        if not all(isinstance(x, str) and x for x in ign):
            raise ValueError(f"chat template {name!r}: ignore_token must be a list of non-empty strings")
        f["ignore_token"] = tuple(ign)
    return ChatTemplate(name=name, **f)


@lru_cache(maxsize=1)
def _builtin() -> dict[str, ChatTemplate]:
    data = load_yaml(REGISTRY_FILE)
    return {name: _make(name, fields) for name, fields in data.items()}


def builtin_names() -> list[str]:
    return list(_builtin())


def registry(extra: dict | None = None) -> dict[str, ChatTemplate]:
    """Built-in templates plus user templates (`configs/tokenize.yaml: templates:`), which may
    add names or override built-in ones."""
    reg = dict(_builtin())
    for name, fields in (extra or {}).items():
        reg[str(name)] = _make(str(name), fields)
    return reg


def get_template(name: str, extra: dict | None = None) -> ChatTemplate:
    reg = registry(extra)
    if name not in reg:
        raise UnknownTemplateError(
            f"unknown chat template {name!r}; known templates: {', '.join(sorted(reg))}. "
            "Add one under `templates:` in configs/tokenize.yaml."
        )
    return reg[name]
