"""Custom row formats, the output-row normaliser and SpecForge's conversation validator.

Custom sources may hold:
- conversations: ``{"id"?, "conversations": [{"role", "content"}, ...]}`` (``messages`` accepted)
- ShareGPT: ``{"id"?, "conversations": [{"from", "value"}, ...]}``
- pre-formatted: ``{"id"?, "text": "..."}``
- alpaca: ``{"id"?, "instruction", "input"?, "output" | "response", "system"?, "history"?}``
  (Stanford Alpaca, CodeAlpaca, GPTeacher). The user turn follows LLaMA-Factory's alpaca
  convention: ``instruction`` and ``input`` joined by one newline, an empty part left out;
  ``history`` is a list of earlier ``[user, assistant]`` pairs put before it. (SpecForge's
  `codealpaca-20k` *preset* joins with a blank line instead; the preset keeps its own rule.)
- prompts (prompt-only, for regeneration): ``{"turns": [str, ...]}`` (MT-Bench's
  ``{question_id, category, turns}``) or ``{"prompt": str}``. The row carries user turns only;
  the regenerated layer fills the answers. ``question_id`` is the id when there is no ``id``;
  ``category`` is kept on the row (evaluation reports per category).

A row-level ``system`` string (the LLaMA-Factory ShareGPT layout, ``{"system", "conversations"}``,
also with ``messages``, and alpaca's ``system``) is content: it becomes the leading system
message. A row that has both a row-level ``system`` and a system message is quarantined
(``field: system``): which one wins is not ours to guess.

`auto` picks per row. Rows without an id get a stable content-hash id. Unlike SpecForge's
preset rule, unknown ShareGPT senders are not dropped silently: the row is quarantined.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from .errors import RowError

FORMATS = ("conversations", "sharegpt", "preformatted", "alpaca", "prompts", "auto")
ALPACA_OUTPUT_FIELDS = ("output", "response")

# Fields a format reads; any other non-empty field is not carried into the contract row and is
# counted (`dropped_fields`), never dropped without a word.
_ROW_FIELDS = {
    "conversations_or_sharegpt": {"id", "conversations", "messages", "system"},
    "conversations": {"id", "conversations", "messages", "system"},
    "sharegpt": {"id", "conversations", "messages", "system"},
    "preformatted": {"id", "text"},
    "alpaca": {"id", "instruction", "input", "output", "response", "system", "history"},
    "prompts": {"id", "question_id", "turns", "prompt", "system", "category"},
}
_MESSAGE_FIELDS = {"role", "content", "from", "value"}


def dropped_fields(row: dict, fmt: str) -> list[str]:
    """Names of the non-empty fields of a custom row that its contract row does not carry:
    row-level keys (``tools``, ``source``) and message keys (``conversations[].tool_calls``,
    ``messages[].name``). Empty values (None, "", [], {}) count as absent."""
    fmt = detect_format(row) if fmt == "auto" else fmt
    known = _ROW_FIELDS.get(fmt, set())
    out = [k for k, v in row.items() if k not in known and v not in (None, "", [], {})]
    if fmt == "alpaca" and "output" in row and row.get("response") not in (None, ""):
        out.append("response")  # `output` is the answer; a second one is not carried
    for key in ("conversations", "messages"):
        msgs = row.get(key)
        if fmt in ("conversations", "sharegpt", "conversations_or_sharegpt") and isinstance(msgs, list):
            extra = {
                k
                for m in msgs
                if isinstance(m, dict)
                for k, v in m.items()
                if k not in _MESSAGE_FIELDS and v not in (None, "", [], {})
            }
            out.extend(f"{key}[].{k}" for k in sorted(extra))
    return out


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
        raise RowError(
            "missing field 'conversations' (or 'messages', or 'text' for pre-formatted rows)", "conversations"
        )
    msgs = row[key]
    if not isinstance(msgs, list):
        raise RowError(
            f"{key} must be a list of messages, got {type(msgs).__name__ if msgs is not None else 'null'}", key
        )
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


def detect_format(row: dict) -> str:
    """The format `auto` reads a row as (``conversations_or_sharegpt`` for message lists)."""
    if "conversations" in row or "messages" in row:
        return "conversations_or_sharegpt"
    if "text" in row:
        return "preformatted"
    if "instruction" in row:
        return "alpaca"
    if "turns" in row or "prompt" in row:
        return "prompts"
    return "conversations_or_sharegpt"  # its error names the fields we looked for


def _system_message(row: dict, conv: list[dict]) -> list[dict]:
    """`conv` with the row-level ``system`` string (if any) as its leading system message."""
    if "system" not in row:
        return conv
    system = row["system"]
    if system is None or (isinstance(system, str) and not system.strip()):
        return conv  # LLaMA-Factory writes "" for "no system prompt"
    if not isinstance(system, str):
        raise RowError(f"system must be a string, got {type(system).__name__}", "system")
    if conv and conv[0]["role"] == "system":
        raise RowError("row has both a top-level 'system' and a system message; keep one", "system")
    return [{"role": "system", "content": system}, *conv]


def apply_row_system(row: dict) -> list | None:
    """The row's conversation with its row-level ``system`` string (LLaMA-Factory's layout) as
    the leading system message: for readers of SpecForge rows (`tokenize`, `regenerate`) that
    take ``conversations`` as they are. Returns the row's ``conversations`` unchanged when there
    is no usable row-level system (or no conversation list). Raises `RowError` (field
    ``system``) for a non-string system or a row that also starts with a system message."""
    conv = row.get("conversations")
    if not isinstance(conv, list) or "system" not in row:
        return conv
    system = row["system"]
    if system is None or (isinstance(system, str) and not system.strip()):
        return conv
    if not isinstance(system, str):
        raise RowError(f"system must be a string, got {type(system).__name__}", "system")
    if conv and isinstance(conv[0], dict) and conv[0].get("role") == "system":
        raise RowError("row has both a top-level 'system' and a system message; keep one", "system")
    return [{"role": "system", "content": system}, *conv]


def _optional_str(row: dict, key: str) -> str:
    value = row.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RowError(f"{key} must be a string, got {type(value).__name__}", key)
    return value


def _alpaca_messages(row: dict) -> list[dict]:
    instruction = row.get("instruction")
    if not isinstance(instruction, str):
        kind = "missing" if instruction is None else f"a {type(instruction).__name__}"
        raise RowError(f"instruction must be a string, got {kind}", "instruction")
    user = "\n".join(part for part in (instruction, _optional_str(row, "input")) if part)
    out_key = next((k for k in ALPACA_OUTPUT_FIELDS if k in row), None)
    if out_key is None:
        raise RowError("missing field 'output' (or 'response'); prompt-only rows use format 'prompts'", "output")
    answer = _text(row[out_key], out_key)
    conv: list[dict] = []
    history = row.get("history")
    if history not in (None, []):
        if not isinstance(history, list):
            raise RowError(
                f"history must be a list of [user, assistant] pairs, got {type(history).__name__}", "history"
            )
        for i, pair in enumerate(history):
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
                raise RowError("history item must be a [user, assistant] pair", f"history[{i}]")
            conv.append({"role": "user", "content": _text(pair[0], f"history[{i}][0]")})
            conv.append({"role": "assistant", "content": _text(pair[1], f"history[{i}][1]")})
    conv.append({"role": "user", "content": user})
    conv.append({"role": "assistant", "content": answer})
    return conv


def _prompt_messages(row: dict) -> list[dict]:
    if "turns" in row:
        turns = row["turns"]
        if not isinstance(turns, list) or not turns:
            raise RowError("turns must be a non-empty list of strings", "turns")
        return [{"role": "user", "content": _text(t, f"turns[{i}]")} for i, t in enumerate(turns)]
    if "prompt" in row:
        return [{"role": "user", "content": _text(row["prompt"], "prompt")}]
    raise RowError("missing field 'turns' (a list of user prompts) or 'prompt'", "turns")


def _prompt_row_id(row: dict, conv: list[dict]) -> str:
    if row.get("id") in (None, "") and row.get("question_id") not in (None, ""):
        return _row_id({"id": row["question_id"]}, conv)
    return _row_id(row, conv)


def parse_custom_row(row: dict, fmt: str) -> dict:
    """A custom row → ``{"id", "conversations"}`` or ``{"id", "text"}`` (not yet validated).

    Prompt-only rows (format ``prompts``) come out as ``{"id", "conversations": [user, ...]}``
    plus ``category`` when the row has one (validate them with ``prompt_only=True``).
    Raises `RowError` (reason + field) for a row that does not fit `fmt`."""
    if fmt == "auto":
        fmt = detect_format(row)
    if fmt == "preformatted":
        if "text" not in row:
            raise RowError("missing field 'text' (pre-formatted rows are {id, text})", "text")
        text = row["text"]
        if not isinstance(text, str):
            raise RowError(f"text must be a string, got {type(text).__name__ if text is not None else 'null'}", "text")
        return {"id": _row_id(row, {"text": text}), "text": text}
    if fmt == "alpaca":
        conv = _system_message(row, _alpaca_messages(row))
        return {"id": _row_id(row, conv), "conversations": conv}
    if fmt == "prompts":
        conv = _system_message(row, _prompt_messages(row))
        out = {"id": _prompt_row_id(row, conv), "conversations": conv}
        category = row.get("category")
        if category is not None:
            if not isinstance(category, str):
                raise RowError(f"category must be a string, got {type(category).__name__}", "category")
            out["category"] = category
        return out
    sharegpt = True if fmt == "sharegpt" else False if fmt == "conversations" else None
    conv = _system_message(row, _conversation_messages(row, sharegpt))
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


def resolved_format(row: dict, fmt: str) -> str:
    """The format a custom row is read as (`auto` resolved per row)."""
    return detect_format(row) if fmt == "auto" else fmt


def validate_row(row: dict, *, prompt_only: bool = False) -> None:
    """SpecForge's `validate_conversation` rules (plus: whitespace-only content counts as empty).

    - a non-empty `conversations` list; every message a non-empty string `content`;
    - `system` only before the first user message; then strictly user, assistant, user, ...;
    - only system/user/assistant roles; at least one user message (a trailing user is allowed).
    Pre-formatted rows need a non-empty string `text`. Prompt-only rows (`prompt_only`) are an
    optional leading system message and then user turns only.
    Raises `RowError` naming the field.
    """
    if "text" in row and "conversations" not in row:
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise RowError("empty text", "text")
        return
    conv = row.get("conversations")
    if not isinstance(conv, list) or not conv:
        raise RowError("conversations is empty", "conversations")
    if prompt_only:
        validate_prompt_messages([m.get("role") for m in conv], [m.get("content") for m in conv])
        return
    validate_messages([m.get("role") for m in conv], [m.get("content") for m in conv])


def validate_prompt_messages(roles: list, contents: list) -> None:
    """Prompt-only rows: an optional leading system message, then one or more user turns."""
    users = 0
    for i, (role, content) in enumerate(zip(roles, contents)):
        if type(content) is not str:
            raise RowError(
                f"content must be a string, got {type(content).__name__ if content is not None else 'null'}",
                f"conversations[{i}].content",
            )
        if not content.strip():
            raise RowError("empty content", f"conversations[{i}].content")
        if role == "system" and i == 0:
            continue
        if role != "user":
            raise RowError(f"prompt-only rows hold user turns only, got {role!r}", f"conversations[{i}].role")
        users += 1
    if not users:
        raise RowError("no user message", "conversations")


def validate_messages(roles: list, contents: list) -> None:
    """The conversation rules of `validate_row` over parallel role / content lists."""
    if not roles:
        raise RowError("conversations is empty", "conversations")
    expected = "user"
    seen_user = False
    for i, (role, content) in enumerate(zip(roles, contents)):
        if type(content) is not str:
            raise RowError(
                f"content must be a string, got {type(content).__name__ if content is not None else 'null'}",
                f"conversations[{i}].content",
            )
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
