"""What one input row becomes: SpecForge's `regenerate_train_data.py` row semantics.

validate -> walk the conversation (system kept, original assistant turns dropped, one request
per user turn carrying the *regenerated* history) -> success / error / skipped row.
Every row gets a uniform `regeneration` provenance record (model id reported by the server,
server address, sampling, per-turn finish_reason + usage).
"""
from __future__ import annotations

import re
from typing import Any, Protocol

from .settings import RegenSettings

THINK_MARKER = re.compile(r"</?think>", re.IGNORECASE)

# Messages as SpecForge writes them (its users grep for these).
MSG_DISABLE_BAD = "Non-reasoning assistant response is empty or contains a thinking marker"
MSG_SAVE_EMPTY = "Reasoning generation requires non-empty assistant content and reasoning_content"
MSG_SAVE_MARKER = "Reasoning response contains a residual thinking marker"


def validate_conversation(row: Any) -> str | None:
    """None when the row can be regenerated, else the reason it is skipped (SpecForge's rules)."""
    if not isinstance(row, dict):
        return f"Row is not a JSON object (got {type(row).__name__})"
    conv = row.get("conversations")
    if not isinstance(conv, list) or not conv:
        return "Row must have a non-empty 'conversations' list"
    expected = "user"
    seen_user = False
    for i, msg in enumerate(conv):
        if not isinstance(msg, dict):
            return f"Message at position {i} is not an object"
        role = msg.get("role")
        content = msg.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"Message at position {i} has empty or non-string content"
        if role == "system":
            if seen_user:
                return f"System message at position {i} appears after the first user message"
            continue
        if not seen_user and role == "assistant":
            return "Data starts with an assistant message"
        if role != expected:
            return f"Invalid conversation role order at position {i}: expected {expected}, got {role}"
        seen_user = seen_user or role == "user"
        expected = "assistant" if role == "user" else "user"
    if not seen_user:
        return "Conversation has no user message"
    return None


class RequestFailed(Exception):
    """A request that will not be retried (permanent error, or transient ones exhausted)."""

    def __init__(self, message: str, kind: str, server: str | None = None, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.server = server
        self.status = status


class ChatPool(Protocol):
    async def chat(self, body: dict, prefer: str | None = None) -> tuple[dict, str]: ...


def _provenance(settings: RegenSettings) -> dict:
    return {"model": None, "requested_model": settings.model, "servers": [], "sampling": settings.sampling(),
            "reasoning": settings.reasoning, "turns": [],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0}}


def _with_status(row: dict, status: str, error: str | None, prov: dict | None) -> dict:
    out = dict(row)
    out["status"] = status
    if error is not None:
        out["error"] = error
    out["regeneration"] = prov
    return out


def skipped_row(row: Any, reason: str) -> dict:
    if not isinstance(row, dict):
        return {"status": "skipped", "error": reason, "data": row}
    return _with_status(row, "skipped", reason, None)


def passthrough_row(row: dict, reason: str) -> dict:
    return _with_status(row, "passthrough", None, {"regenerated": False, "reason": reason})


async def regenerate_row(row: dict, settings: RegenSettings, pool: ChatPool) -> dict:
    """Regenerate every assistant turn of a validated row. Returns the output row (any status)."""
    prov = _provenance(settings)
    row_id = str(row.get("id", ""))
    running: list[dict] = []  # what the server sees (visible content only)
    stored: list[dict] = []  # what we write (reasoning_content kept in save mode)
    server: str | None = None
    turn = 0
    for msg in row["conversations"]:
        role = msg.get("role")
        if role == "system":
            running.append({"role": "system", "content": msg["content"]})
            stored.append(dict(msg))
            continue
        if role == "assistant":
            continue
        if role != "user":
            return _with_status(row, "error", f"Unknown role: {role}", prov)
        running.append({"role": "user", "content": msg["content"]})
        stored.append(dict(msg))
        seed = settings.turn_seed(row_id, turn)
        body = settings.request_body(list(running), seed)
        try:
            resp, server = await pool.chat(body, prefer=server)
        except RequestFailed as e:
            prov["error_kind"] = e.kind
            if e.server:
                prov["servers"].append(e.server)
            return _with_status(row, "error", str(e), prov)
        choice = (resp.get("choices") or [{}])[0]
        message = choice.get("message") or {}
        content = message.get("content") or ""
        reasoning = message.get("reasoning_content")
        if reasoning is None:
            reasoning = message.get("reasoning")
        usage = resp.get("usage") or {}
        prov["model"] = resp.get("model") or prov["model"]
        if server not in prov["servers"]:
            prov["servers"].append(server)
        prov["turns"].append({"finish_reason": choice.get("finish_reason"), "server": server, "seed": seed,
                              "prompt_tokens": usage.get("prompt_tokens"),
                              "completion_tokens": usage.get("completion_tokens")})
        for k in ("prompt_tokens", "completion_tokens"):
            prov["usage"][k] += int(usage.get(k) or 0)
        if settings.reasoning == "disable":
            if not content.strip() or THINK_MARKER.search(content):
                return _with_status(row, "skipped", MSG_DISABLE_BAD, prov)
        elif settings.reasoning == "save":
            if not content.strip() or not (reasoning or "").strip():
                return _with_status(row, "error", MSG_SAVE_EMPTY, prov)
            if THINK_MARKER.search(content) or THINK_MARKER.search(reasoning):
                return _with_status(row, "skipped", MSG_SAVE_MARKER, prov)
        running.append({"role": "assistant", "content": content})
        out_msg = {"role": "assistant", "content": content}
        if settings.reasoning == "save":
            out_msg["reasoning_content"] = reasoning
        stored.append(out_msg)
        turn += 1
    out = _with_status(row, "success", None, prov)
    out["conversations"] = stored
    return out


def row_counts(rows_status: dict[str, int]) -> dict[str, int]:
    return {k: rows_status.get(k, 0) for k in ("success", "error", "skipped", "passthrough")}
