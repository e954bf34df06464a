"""Chat-template registry, kept as data (`templates.yaml` beside this file).

Each entry has SpecForge's `ChatTemplate` fields. Users add or override entries in
`configs/tokenize.yaml` under `templates:`; `get_template(name, extra)` resolves a name.

`auto` is a reserved name, not a registry entry: `get_template("auto")` returns a placeholder that
`Preprocessor` resolves against the target tokenizer (`derive_template`): the assistant spans
come from the tokenizer's own Jinja template by incremental rendering, and no system prompt is
injected (the template's own default, if it has one, is rendered as the model would see it).
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
AUTO = "auto"


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


def registry(extra: dict | None = None) -> dict[str, ChatTemplate]:
    """Built-in templates plus user templates (`configs/tokenize.yaml: templates:`), which may
    add names or override built-in ones."""
    reg = dict(_builtin())
    for name, fields in (extra or {}).items():
        if str(name) == AUTO:
            raise ValueError(
                "chat template name 'auto' is reserved (the tokenizer's own template); give your template another name"
            )
        reg[str(name)] = _make(str(name), fields)
    return reg


def get_template(name: str, extra: dict | None = None) -> ChatTemplate:
    """The registry entry `name`, or for `auto` a placeholder resolved later against the
    tokenizer (`derive_template`)."""
    reg = registry(extra)
    if name == AUTO:
        return ChatTemplate(name=AUTO)
    if name not in reg:
        raise UnknownTemplateError(
            f"unknown chat template {name!r}; known templates: auto, {', '.join(sorted(reg))}. "
            "Add one under `templates:` in configs/tokenize.yaml."
        )
    return reg[name]


# ---------------------------------------------------------------------- `auto`: from the tokenizer
_PROBE_USER_1 = "SFPROBEUSERONE"
_PROBE_ASSISTANT_1 = "SFPROBEASSISTANTONE"
_PROBE_USER_2 = "SFPROBEUSERTWO"
_PROBE_SYSTEM = "SFPROBESYSTEM"


class AutoTemplateError(ValueError, UserError):
    """`chat_template: auto` cannot be derived from this tokenizer."""


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def derive_template_fields(tokenizer) -> dict[str, Any]:
    """What the tokenizer's own chat template renders around the messages, found by rendering
    probe conversations: `assistant_header` (the generation prompt), `end_of_turn_token` (what
    follows an assistant message's content), `user_header` (what precedes a later user message's
    content) and `default_system_prompt` (the system text the template adds when the
    conversation has none; "" when it renders an empty system block, None when it adds none).
    A field that cannot be found is None."""
    if not getattr(tokenizer, "chat_template", None):
        raise AutoTemplateError(
            "chat_template auto derives the assistant spans from the tokenizer's own chat template, and this "
            "tokenizer has none; name a registry template instead (e.g. qwen, llama3, smollm2)"
        )
    u1 = {"role": "user", "content": _PROBE_USER_1}
    a1 = {"role": "assistant", "content": _PROBE_ASSISTANT_1}
    u2 = {"role": "user", "content": _PROBE_USER_2}
    try:
        plain = _render(tokenizer, [u1])
        gen = _render(tokenizer, [u1], add_generation_prompt=True)
        one = _render(tokenizer, [u1, a1])
        two = _render(tokenizer, [u1, a1, u2])
    except Exception as e:  # noqa: BLE001 - the template's own failure, reported in one line
        raise AutoTemplateError(
            f"chat_template auto: the tokenizer's chat template failed on a plain "
            f"user/assistant conversation ({type(e).__name__}: {e})"
        ) from e
    out: dict[str, Any] = {
        "assistant_header": None,
        "user_header": None,
        "end_of_turn_token": None,
        "default_system_prompt": None,
    }
    if gen.startswith(plain) and len(gen) > len(plain):
        out["assistant_header"] = gen[len(plain) :]
    i = one.find(_PROBE_ASSISTANT_1)
    if i >= 0 and one[i + len(_PROBE_ASSISTANT_1) :]:
        out["end_of_turn_token"] = one[i + len(_PROBE_ASSISTANT_1) :]
    j = two.find(_PROBE_USER_2)
    if two.startswith(one) and j >= len(one):
        out["user_header"] = two[len(one) : j] or None
    try:
        with_sys = _render(tokenizer, [{"role": "system", "content": _PROBE_SYSTEM}, u1])
    except Exception:  # noqa: BLE001 - a template without system messages: no default either
        with_sys = None
    if with_sys is not None and _PROBE_SYSTEM in with_sys:
        pre, post = with_sys.split(_PROBE_SYSTEM, 1)
        if plain.startswith(pre) and plain.endswith(post) and len(plain) >= len(pre) + len(post):
            out["default_system_prompt"] = plain[len(pre) : len(plain) - len(post)]
    return out


def derive_template(tokenizer) -> ChatTemplate:
    """The `auto` template for this tokenizer: its header/end-of-turn strings (used for
    pre-formatted rows and recorded in metadata), no injected system prompt. Spans of rendered
    conversations come from incremental rendering (`Preprocessor`), not from these strings."""
    f = derive_template_fields(tokenizer)
    return ChatTemplate(
        name=AUTO,
        assistant_header=f["assistant_header"],
        user_header=f["user_header"],
        system_prompt=None,
        end_of_turn_token=f["end_of_turn_token"],
    )
