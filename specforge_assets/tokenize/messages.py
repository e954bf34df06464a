"""Conversation → messages, exactly as SpecForge prepares them before rendering.

Steps (SpecForge a6b6b023, `specforge/utils.py::safe_conversations_generator` and
`specforge/data/parse.py`): list/dict values inside messages are JSON strings, non-dict messages
are dropped; role from `role` else `from` (human→user, gpt→assistant), content from `content`
or `value` or ""; a leading system message replaces the template's default prompt, which is
injected otherwise (when truthy); leading non-user messages are dropped; the conversation is cut
at the first out-of-order message; each message keeps only the parser's keys and its
`tool_calls` (string or list) are parsed and reduced to {id, type, function:{name, arguments}}.
"""

from __future__ import annotations

import json
from typing import Any

from ..jsonrows import RowDecodeError, loads_row

GENERAL_KEYS = frozenset({"role", "content", "tool_calls"})
THINKING_KEYS = frozenset({"role", "content", "tool_calls", "reasoning_content", "name", "tool_call_id"})


ASSISTANT_ROLES = frozenset({"assistant", "gpt", "chatgpt", "bing", "bard"})


def _count(dropped: dict | None, key: str, n: int) -> None:
    if dropped is not None and n > 0:
        dropped[key] = dropped.get(key, 0) + n


def has_assistant_turn(conversation: list) -> bool:
    """Whether a (loader-cleaned) conversation holds any assistant message (`assistant`, `gpt`,
    …, or a harmony `assistant_*` channel). A row without one is prompt-only: it still needs
    regeneration and supervises nothing."""
    for m in conversation:
        if isinstance(m, dict):
            role = m.get("role", m.get("from"))
            if isinstance(role, str) and (role in ASSISTANT_ROLES or role.startswith("assistant")):
                return True
    return False


def loader_clean(conversation: Any, warnings: list[str], dropped: dict | None = None) -> list[dict]:
    """What SpecForge's JSONL loader does to `conversations` (Arrow-safe values).

    `dropped` (optional) counts the messages dropped, by reason (``not_an_object``)."""
    if conversation is None:
        return []
    if not isinstance(conversation, list):
        raise ValueError(f"'conversations' must be a list, got {type(conversation).__name__}")
    out = []
    for i, msg in enumerate(conversation):
        if not isinstance(msg, dict):
            warnings.append(f"message {i}: not an object ({type(msg).__name__}), dropped")
            _count(dropped, "not_an_object", 1)
            continue
        new = {}
        for k, v in msg.items():
            if isinstance(v, (list, dict)):
                if k == "content":
                    warnings.append(f"message {i}: non-string content ({type(v).__name__}) JSON-encoded")
                new[k] = json.dumps(v, ensure_ascii=False)
            else:
                new[k] = v
        out.append(new)
    return out


def normalize_message(message: dict) -> dict:
    role = message.get("role", message.get("from", ""))
    content = message.get("content") or message.get("value") or ""
    if role in ("human", "user"):
        role = "user"
    elif role in ("gpt", "assistant"):
        role = "assistant"
    out = {**message, "role": role, "content": content}
    out.pop("from", None)
    out.pop("value", None)
    return out


def sanitize_message(message: dict, keys: frozenset, warnings: list[str]) -> dict:
    cleaned = {k: v for k, v in message.items() if k in keys}
    if "tool_calls" not in cleaned:
        return cleaned
    calls = cleaned["tool_calls"]
    if isinstance(calls, str):
        try:
            calls = loads_row(calls)
        except RowDecodeError:
            warnings.append("tool_calls is not valid JSON; removed")
            cleaned.pop("tool_calls", None)
            return cleaned
    if isinstance(calls, list):
        out = []
        for tc in calls:
            if not isinstance(tc, dict):
                continue
            clean = {"id": tc.get("id", ""), "type": tc.get("type", "function")}
            func = tc.get("function", {})
            if isinstance(func, dict):
                f = {"name": func.get("name", "")}
                args = func.get("arguments", {})
                if isinstance(args, str):
                    try:
                        args = loads_row(args)
                    except RowDecodeError:
                        warnings.append(f"tool call {f['name']!r}: arguments are not valid JSON; replaced by {{}}")
                        args = {}
                f["arguments"] = args
                clean["function"] = f
            out.append(clean)
        cleaned["tool_calls"] = out
    return cleaned


def build_messages(
    conversation: list[dict],
    system_prompt: str | None,
    keys: frozenset,
    warnings: list[str],
    inject_system_prompt: bool = True,
    dropped: dict | None = None,
) -> list[dict]:
    """SpecForge's message list. `dropped` (optional) counts, by reason, the messages left out:
    ``leading_non_user`` (before the first user turn), ``cut_consecutive_assistant`` (the
    conversation is cut at two assistant turns in a row — SpecForge's behaviour, kept for parity),
    ``cut_role_order`` (cut at a 'tool' message that follows neither an assistant nor a tool)."""
    conv = [normalize_message(m) for m in conversation]
    messages: list[dict] = []
    if conv and conv[0]["role"] == "system":
        messages.append({"role": "system", "content": conv[0]["content"]})
        conv = conv[1:]
    elif system_prompt and inject_system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    while conv and conv[0]["role"] != "user":
        warnings.append(f"dropped leading {conv[0]['role']!r} message before the first user turn")
        _count(dropped, "leading_non_user", 1)
        conv = conv[1:]
    for j, msg in enumerate(conv):
        role = msg["role"]
        if j > 0:
            prev = conv[j - 1]["role"]
            if role == "tool" and prev not in ("assistant", "tool"):
                warnings.append(f"message {j}: 'tool' after {prev!r}; conversation truncated")
                _count(dropped, "cut_role_order", len(conv) - j)
                break
            if role == "assistant" and prev not in ("user", "tool"):
                warnings.append(f"message {j}: 'assistant' after {prev!r}; conversation truncated")
                _count(dropped, "cut_consecutive_assistant" if prev == "assistant" else "cut_role_order", len(conv) - j)
                break
        messages.append(sanitize_message(msg, keys, warnings))
    return messages


def parse_tools(tools: Any, warnings: list[str]) -> list | None:
    """Row-level `tools`: JSON string parsed, empty → None (templates stay out of tool mode)."""
    if tools is None:
        return None
    if isinstance(tools, str):
        try:
            tools = loads_row(tools)
        except RowDecodeError:
            warnings.append("'tools' is a string but not valid JSON; ignored")
            return None
    if not tools:
        return None
    if not isinstance(tools, list):
        warnings.append(f"'tools' must be a list, got {type(tools).__name__}; ignored")
        return None
    return tools
