"""Custom row formats, the output-row normaliser and SpecForge's conversation validator.

Custom sources may hold:
- conversations: ``{"id"?, "conversations": [{"role", "content"}, ...]}`` (``messages`` accepted)
- ShareGPT: ``{"id"?, "conversations": [{"from", "value"}, ...]}``
- pre-formatted: ``{"id"?, "text": "..."}``
`auto` picks per row. Rows without an id get a stable content-hash id. Unlike SpecForge's
preset rule, unknown ShareGPT senders are not dropped silently: the row is quarantined.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import RowError

FORMATS = ("conversations", "sharegpt", "preformatted", "auto")
ROLES = ("system", "user", "assistant")

# Custom ShareGPT senders (a superset of SpecForge's ROLE_MAPPING; system prompts are kept).
CUSTOM_SENDER_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "model": "assistant",
}


def content_hash_id(payload: Any) -> str:
    """Stable id for a row without one: sha256 (first 32 hex) of its canonical JSON content."""
    blob = json.dumps(payload, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def _row_id(row: dict, payload: Any) -> str:
    rid = row.get("id")
    if rid is None or rid == "":
        return content_hash_id(payload)
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise RowError(f"id must be a string or an integer, got {type(rid).__name__}", "id")
    return str(rid)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RowError(f"content must be a string, got {type(value).__name__ if value is not None else 'null'}", where)
    return value


def _conversation_messages(row: dict, sharegpt: bool | None) -> list[dict]:
    key = "conversations" if "conversations" in row else "messages" if "messages" in row else None
    if key is None:
        raise RowError("missing field 'conversations' (or 'messages', or 'text' for pre-formatted rows)", "conversations")
    msgs = row[key]
    if not isinstance(msgs, list):
        raise RowError(f"{key} must be a list of messages, got {type(msgs).__name__ if msgs is not None else 'null'}", key)
    out = []
    for i, m in enumerate(msgs):
        where = f"{key}[{i}]"
        if not isinstance(m, dict):
            raise RowError(f"message must be an object, got {type(m).__name__}", where)
        is_sharegpt = ("from" in m or "value" in m) and "role" not in m if sharegpt is None else sharegpt
        if is_sharegpt:
            sender = m.get("from")
            if not isinstance(sender, str):
                raise RowError("message has no string 'from'", f"{where}.from")
            role = CUSTOM_SENDER_ROLES.get(sender.strip().lower())
            if role is None:
                raise RowError(f"unknown sender {sender!r} (known: {', '.join(CUSTOM_SENDER_ROLES)})", f"{where}.from")
            if "value" not in m:
                raise RowError("message has no 'value'", f"{where}.value")
            out.append({"role": role, "content": _text(m["value"], f"{where}.value")})
        else:
            role = m.get("role")
            if not isinstance(role, str):
                raise RowError("message has no string 'role'", f"{where}.role")
            if role not in ROLES:
                raise RowError(f"unknown role {role!r} (allowed: {', '.join(ROLES)})", f"{where}.role")
            if "content" not in m:
                raise RowError("message has no 'content'", f"{where}.content")
            out.append({"role": role, "content": _text(m["content"], f"{where}.content")})
    return out


def parse_custom_row(row: dict, fmt: str) -> dict:
    """A custom row → ``{"id", "conversations"}`` or ``{"id", "text"}`` (not yet validated)."""
    if fmt == "auto":
        if "text" in row and "conversations" not in row and "messages" not in row:
            fmt = "preformatted"
        else:
            fmt = "conversations_or_sharegpt"
    if fmt == "preformatted":
        if "text" not in row:
            raise RowError("missing field 'text' (pre-formatted rows are {id, text})", "text")
        text = row["text"]
        if not isinstance(text, str):
            raise RowError(f"text must be a string, got {type(text).__name__ if text is not None else 'null'}", "text")
        return {"id": _row_id(row, {"text": text}), "text": text}
    sharegpt = True if fmt == "sharegpt" else False if fmt == "conversations" else None
    conv = _conversation_messages(row, sharegpt)
    return {"id": _row_id(row, conv), "conversations": conv}


def normalize_output_row(out: dict) -> dict:
    """A preset converter's row → the contract row: str id, messages reduced to role/content."""
    rid = out.get("id")
    if rid is None or rid == "" or isinstance(rid, bool) or not isinstance(rid, (str, int)):
        raise RowError(f"id must be a non-empty string or integer, got {rid!r}", "id")
    msgs = out.get("conversations")
    if not isinstance(msgs, list):
        raise RowError("conversations must be a list", "conversations")
    conv = []
    for i, m in enumerate(msgs):
        where = f"conversations[{i}]"
        if not isinstance(m, dict):
            raise RowError(f"message must be an object, got {type(m).__name__}", where)
        conv.append({"role": m.get("role"), "content": m.get("content")})
    return {"id": str(rid), "conversations": conv}


def validate_row(row: dict) -> None:
    """SpecForge's `validate_conversation` rules (plus: whitespace-only content counts as empty).

    - a non-empty `conversations` list; every message a non-empty string `content`;
    - `system` only before the first user message; then strictly user, assistant, user, ...;
    - only system/user/assistant roles; at least one user message (a trailing user is allowed).
    Pre-formatted rows need a non-empty string `text`.
    """
    if "text" in row and "conversations" not in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise RowError("empty text", "text")
        return
    conv = row.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RowError("conversations is empty", "conversations")
    validate_messages([m.get("role") for m in conv], [m.get("content") for m in conv])


def validate_messages(roles: list, contents: list) -> None:
    """The conversation rules of `validate_row` over parallel role / content lists."""
    if not roles:
        raise RowError("conversations is empty", "conversations")
    expected = "user"
    seen_user = False
    for i, (role, content) in enumerate(zip(roles, contents)):
        if type(content) is not str:
            raise RowError(f"content must be a string, got {type(content).__name__ if content is not None else 'null'}", f"conversations[{i}].content")
        if not content.strip():
            raise RowError("empty content", f"conversations[{i}].content")
        if role == expected:
            seen_user = True
            expected = "assistant" if role == "user" else "user"
            continue
        where = f"conversations[{i}].role"
        if role == "system":
            if seen_user:
                raise RowError("system message after the conversation started", where)
            continue
        if role not in ("user", "assistant"):
            raise RowError(f"unsupported role {role!r} (only system, user, assistant)", where)
        if not seen_user and role == "assistant":
            raise RowError("conversation starts with an assistant message", where)
        raise RowError(f"invalid role order at position {i}: expected {expected}, got {role}", where)
    if not seen_user:
        raise RowError("no user message", "conversations")
