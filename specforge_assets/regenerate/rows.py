"""What one input row becomes: SpecForge's `regenerate_train_data.py` row semantics.

validate -> fold a row-level ``system`` string into the conversation (`with_row_system`, the
sources layer's rule; a row with both is skipped naming the field) -> walk the conversation
(system kept, original assistant turns dropped, one request
per user turn carrying the *regenerated* history) -> success / error / skipped row.
Every row gets a uniform `regeneration` provenance record (model id reported by the server,
server address, sampling, per-turn finish_reason + usage).
"""

from __future__ import annotations

from typing import Any, Protocol

from ..sources.errors import RowError
from ..sources.formats import _system_message
from .reply import BadReply, Reply, RequestFailed
from .settings import RegenSettings


def _row_system(row: dict) -> tuple[list | None, str | None]:
    """(conversation with the row-level ``system`` folded in, None) or (None, skip reason).

    The project's rule for a row-level system prompt (LLaMA-Factory's ShareGPT layout
    ``{"system": "...", "conversations": [...]}``), from `sources.formats`: it becomes the
    leading system message; a row that also has a system message is refused with the field
    named (which one wins is not ours to guess)."""
    conv = row["conversations"]
    try:
        return _system_message(row, conv), None
    except RowError as e:
        return None, f"Row field '{e.field or 'system'}': {e.reason}"


def with_row_system(row: dict) -> dict:
    """`row` as it is sent and written: a row-level ``system`` string moved into the
    conversation as its leading system message (the ``system`` key dropped, so the output row
    is not read as having both). Rows without one are returned as they are. Call on a row that
    `validate_conversation` accepted."""
    if "system" not in row:
        return row
    conv, why = _row_system(row)
    if why is not None:
        raise ValueError(why)
    if conv is row["conversations"]:
        return row  # "" / null: LLaMA-Factory's "no system prompt"
    out = {k: v for k, v in row.items() if k != "system"}
    out["conversations"] = conv
    return out


def _sharegpt_hint(conv: list) -> str | None:
    for i, msg in enumerate(conv):
        if isinstance(msg, dict) and "role" not in msg and "content" not in msg and ("from" in msg or "value" in msg):
            return (
                f"Message at position {i} is ShareGPT-style (from/value); regenerate takes "
                "{role, content} messages: convert the file first (`specforge-assets prepare`, or a "
                "custom source in the sources layer, whose rows regenerated/conversations reads)"
            )
    return None


def validate_conversation(row: Any) -> str | None:
    """None when the row can be regenerated, else the reason it is skipped.

    SpecForge's rules (scripts/conversation_validation.py): a JSON object with a non-empty
    `conversations` list, every message with non-empty string content, system messages only
    before the first user message, no leading assistant message, at least one user message.
    One deliberate difference: a user message may follow a user message (prompt-only rows such
    as MT-Bench's ``turns: [q1, q2]`` normalized to two user messages, with no answers); each
    user message gets its own regenerated answer, so ``[u1, u2]`` becomes ``[u1, a1, u2, a2]``.
    """
    if not isinstance(row, dict):
        return f"Row is not a JSON object (got {type(row).__name__})"
    conv = row.get("conversations")
    if not isinstance(conv, list) or not conv:
        return "Row must have a non-empty 'conversations' list"
    hint = _sharegpt_hint(conv)
    if hint is not None:
        return hint
    if "system" in row and all(isinstance(m, dict) for m in conv) and "role" in conv[0]:
        conv, why = _row_system(row)
        if why is not None:
            return why
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
        if role != expected and not (role == "user" and expected == "assistant"):
            want = "assistant or user" if expected == "assistant" else expected
            return f"Invalid conversation role order at position {i}: expected {want}, got {role}"
        seen_user = seen_user or role == "user"
        expected = "assistant" if role == "user" else "user"
    if not seen_user:
        return "Conversation has no user message"
    return None


class ChatPool(Protocol):
    """What `regenerate_row` needs: `client.ServerPool` (one aiohttp session per server, in the
    run's process). `chat` returns a validated `Reply` (`reply.check_reply`) and the server
    label, or raises `RequestFailed` (a `BadReply` for a 200 without usable text)."""

    async def chat(self, body: dict, prefer: str | None = None) -> tuple[Reply, str]: ...


def _provenance(settings: RegenSettings) -> dict:
    return {
        "model": None,
        "requested_model": settings.model,
        "servers": [],
        "sampling": settings.sampling(),
        "reasoning": settings.reasoning,
        "turns": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0},
    }


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
    return _with_status(with_row_system(row), "passthrough", None, {"regenerated": False, "reason": reason})


async def regenerate_row(row: dict, settings: RegenSettings, pool: ChatPool) -> dict:
    """Regenerate every assistant turn of a validated row. Returns the output row (any status).

    One request per user message, carrying the system prompt, the earlier user messages and the
    target's own earlier answers; the answer is inserted right after its user message (original
    assistant messages are dropped). Any failed turn (`RequestFailed`, including a reply without
    usable text) ends the row at once — the next turn is never requested — and makes it an
    ``error`` row with the original conversation and an error naming the turn.
    """
    row = with_row_system(row)
    prov = _provenance(settings)
    row_id = str(row.get("id", ""))
    conv = row["conversations"]
    n_turns = sum(1 for m in conv if isinstance(m, dict) and m.get("role") == "user")
    running: list[dict] = []  # what the server sees (visible content only)
    stored: list[dict] = []  # what we write (reasoning_content kept in save mode)
    server: str | None = None
    turn = 0
    for msg in conv:
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
            reply, server = await pool.chat(body, prefer=server)
        except RequestFailed as e:
            prov["error_kind"] = e.kind
            if e.server and e.server not in prov["servers"]:
                prov["servers"].append(e.server)
            if isinstance(e, BadReply):
                prov["turns"].append(
                    {"finish_reason": e.finish_reason, "server": e.server, "seed": seed, "error": e.kind}
                )
            return _with_status(row, "error", f"turn {turn + 1} of {n_turns}: {e}", prov)
        usage = reply.usage
        prov["model"] = reply.model or prov["model"]
        if server not in prov["servers"]:
            prov["servers"].append(server)
        prov["turns"].append(
            {
                "finish_reason": reply.finish_reason,
                "server": server,
                "seed": seed,
                "prompt_tokens": usage.get("prompt_tokens"),
                "completion_tokens": usage.get("completion_tokens"),
            }
        )
        for k in ("prompt_tokens", "completion_tokens"):
            try:
                prov["usage"][k] += int(usage.get(k) or 0)
            except (TypeError, ValueError):
                pass
        if reply.skip:
            return _with_status(row, "skipped", reply.skip, prov)
        running.append({"role": "assistant", "content": reply.content})
        out_msg = {"role": "assistant", "content": reply.content}
        if settings.reasoning == "save":
            out_msg["reasoning_content"] = reply.reasoning
        stored.append(out_msg)
        turn += 1
    out = _with_status(row, "success", None, prov)
    out["conversations"] = stored
    return out
