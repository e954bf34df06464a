"""The one check of a chat-completion reply: every server and every reasoning mode use it.

`check_reply(data, reasoning)` takes the parsed JSON body of an HTTP 200 answer to
``POST /v1/chat/completions`` and returns a `Reply` with usable assistant text, or raises
`BadReply`. `client.ServerPool.chat` (one aiohttp session per server) calls it for every
answer, so no other code reads ``choices`` / ``message`` / ``content``.

Reply shapes it knows (OpenAI chat-completion format, as the servers send it):

- SGLang / vLLM / OpenAI: ``{"choices": [{"message": {"content": str | null, ...},
  "finish_reason": ...}], "usage": {...}, "model": ...}``. With a reasoning parser the thinking
  goes to ``message.reasoning_content`` (SGLang, vLLM < 0.16) or ``message.reasoning``
  (vLLM >= 0.16); a parser that swallowed the whole answer leaves ``content`` null or "".
- tool-call replies: ``content: null`` plus ``message.tool_calls``.
- `transformers serve` and some gateways: ``content`` as a list of parts
  ``[{"type": "text", "text": ...}, ...]`` — text parts are joined into one string; any other
  part (image, audio, ...) makes the reply unusable.
- gateways / proxies / content filters: a 200 with ``"choices": []`` or no ``choices``, or an
  error object instead of a completion: ``{"object": "error", "message": ..., "code": 400}``
  (vLLM, SGLang) or ``{"error": {"message": ..., "code": ...}}`` (OpenAI style).

Outcome per shape (`BadReply.retry` says whether another attempt in this run is worth it; the
row becomes an ``error`` row either way once attempts are spent, and a later run retries it):

- no choices / no message / body not an object: retried in the run (``retry=True``);
- error object: retried, except a 4xx ``code`` (the request itself is wrong) which is final;
- content null / empty / whitespace / not text, or (``save`` mode) no reasoning: final for this
  run — these come from the model or the server's parser settings and repeat on a retry;
- text that is not writable as UTF-8 (a lone UTF-16 surrogate such as ``"\\ud83d"``, valid JSON
  but refused by every strict reader of the output): content always, reasoning in ``save`` mode
  (the only mode that writes it) — ``unwritable_text``, final for this run
  (``lone surrogate \\ud83d at char N in content``). Other strings of the reply that end up in
  the output (model name, finish_reason, a server's error message) are made visible text
  (`text.clean`), never refused.

Mode rules kept from SpecForge's regenerate_train_data.py: ``disable`` skips a row whose answer
holds a ``<think>`` marker, ``save`` needs non-empty reasoning and skips residual markers
(`Reply.skip` carries the skip reason; the row, not the request, is skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from ..jsonrows import RowDecodeError, check_value
from .text import clean


THINK_MARKER = re.compile(r"</?think>", re.IGNORECASE)

# Messages as SpecForge writes them (its users grep for these).
MSG_DISABLE_BAD = "Non-reasoning assistant response is empty or contains a thinking marker"
MSG_SAVE_EMPTY = "Reasoning generation requires non-empty assistant content and reasoning_content"
MSG_SAVE_MARKER = "Reasoning response contains a residual thinking marker"

_TEXT_PART_TYPES = ("text", "output_text")
_SERVER_MSG_CHARS = 300


class RequestFailed(Exception):
    """A request that will not be retried (permanent error, or transient ones exhausted).

    `kind` names the failure for the summary (``http_400``, ``transient_exhausted``, a
    `BadReply` kind, ...); `server` the server label (never with credentials)."""

    def __init__(self, message: str, kind: str, server: str | None = None, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.server = server
        self.status = status


class BadReply(RequestFailed):
    """A 200 reply without usable assistant text.

    `kind`: ``bad_response`` | ``no_choices`` | ``no_message`` | ``error_body`` |
    ``error_body_4xx`` | ``empty_content`` | ``non_text_content`` | ``no_reasoning`` |
    ``unwritable_text``.
    `retry`: another attempt within this run may help. `finish_reason`: the choice's, if any.
    """

    def __init__(
        self,
        message: str,
        kind: str,
        *,
        retry: bool = False,
        finish_reason: str | None = None,
        status: int | None = None,
    ):
        super().__init__(message, kind=kind, status=status)
        self.retry = retry
        self.finish_reason = finish_reason


@dataclass(frozen=True)
class Reply:
    """A usable reply: `content` is non-empty text; `reasoning` the thinking text if the server
    sent one (``reasoning_content`` or ``reasoning``); `skip` a SpecForge skip reason or None."""

    content: str
    reasoning: str | None
    finish_reason: str | None
    usage: dict = field(default_factory=dict)
    model: str | None = None
    skip: str | None = None


def _short(text: Any) -> str:
    s = clean(str(text).replace("\n", " ").strip())
    return s if len(s) <= _SERVER_MSG_CHARS else s[:_SERVER_MSG_CHARS] + "…"


def _code(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _error_object(data: dict) -> tuple[str, int | None] | None:
    """(server message, code) when `data` is an error object rather than a completion."""
    err = data.get("error")
    if data.get("object") == "error":
        msg = data.get("message") or (err.get("message") if isinstance(err, dict) else err) or "no message"
        return _short(msg), _code(data.get("code")) or _code(data.get("status_code"))
    if err is not None and not data.get("choices"):
        if isinstance(err, dict):
            code = _code(err.get("code")) or _code(err.get("status")) or _code(data.get("code"))
            return _short(err.get("message") or err.get("type") or err), code
        return _short(err), _code(data.get("code"))
    return None


def _text_of(content: Any, what: str) -> str | None:
    """`content` as a string: str as is, None as None, a list of text parts joined.
    Raises BadReply(non_text_content) for a non-text part or another type."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for j, part in enumerate(content):
            if isinstance(part, str):
                out.append(part)
            elif isinstance(part, dict) and part.get("type") in _TEXT_PART_TYPES:
                if not isinstance(part.get("text"), str):
                    has = "no 'text' field" if "text" not in part else f"'text' is {_json_type(part['text'])}"
                    raise BadReply(
                        f"{what} part {j} (type {clean(str(part['type']))!r}) has no string 'text' ({has})",
                        "non_text_content",
                    )
                out.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                kind = clean(kind) if isinstance(kind, str) else kind
                raise BadReply(f"{what} part {j} is not text (type {kind!r})", "non_text_content")
        return "".join(out)
    raise BadReply(f"{what} is a {type(content).__name__}, not text", "non_text_content")


def _json_type(value: Any) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), f"a {type(value).__name__}")


def _check_writable(text: str, what: str, finish: str | None) -> None:
    """Raise BadReply(unwritable_text) when `text` holds a lone surrogate (`jsonrows.check_value`)."""
    try:
        check_value(text, walk_depth=False)
    except RowDecodeError as e:
        raise BadReply(
            f"{e.reason} in {what} (not writable as UTF-8); finish_reason {finish}",
            "unwritable_text",
            finish_reason=finish,
        ) from None


def _held_instead(message: dict, content: Any, reasoning: str | None, reasoning_field: str | None) -> list[str]:
    held = []
    if content is None:
        held.append("content null" if "content" in message else "no content field")
    elif content == "":
        held.append("content empty")
    else:
        held.append(f"content whitespace only ({len(content)} chars)")
    if reasoning and reasoning.strip():
        held.append(f"{reasoning_field} present ({len(reasoning)} chars)")
    calls = message.get("tool_calls")
    if calls:
        held.append(f"tool_calls present ({len(calls) if isinstance(calls, list) else 1})")
    if message.get("refusal"):
        held.append(f"refusal: {_short(message['refusal'])}")
    return held


def check_reply(data: Any, reasoning: str = "none") -> Reply:
    """Validate one parsed 200 body (see the module doc) for reasoning mode `reasoning`
    (``none`` | ``save`` | ``disable``). Returns a `Reply`; raises `BadReply` otherwise, with a
    message naming the finish_reason, what the reply held instead of text, and the server's own
    message when it sent one."""
    if not isinstance(data, dict):
        raise BadReply(f"server reply is not a JSON object (got {type(data).__name__})", "bad_response", retry=True)
    err = _error_object(data)
    if err is not None:
        msg, code = err
        if code is not None and 400 <= code < 500:
            raise BadReply(f"server error in 200 body: {msg} (code {code})", "error_body_4xx", status=code)
        return_code = f" (code {code})" if code is not None else ""
        raise BadReply(f"server error in 200 body: {msg}{return_code}", "error_body", retry=True, status=code)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        shape = (
            "choices: []"
            if choices == []
            else "no 'choices' field"
            if choices is None
            else f"choices is a {type(choices).__name__}"
        )
        raise BadReply(f"server returned no choices ({shape})", "no_choices", retry=True)
    choice = choices[0]
    if not isinstance(choice, dict):
        raise BadReply(f"choices[0] is a {type(choice).__name__}, not an object", "bad_response", retry=True)
    finish = choice.get("finish_reason")
    finish = None if finish is None else clean(str(finish))
    message = choice.get("message")
    if not isinstance(message, dict):
        raise BadReply(
            f"choices[0] has no message (finish_reason {finish})", "no_message", retry=True, finish_reason=finish
        )
    raw_content = message.get("content")
    reasoning_field = (
        "reasoning_content"
        if message.get("reasoning_content") is not None
        else "reasoning"
        if message.get("reasoning") is not None
        else None
    )
    try:
        content = _text_of(raw_content, "content")
        thinking = _text_of(message.get(reasoning_field), reasoning_field) if reasoning_field else None
    except BadReply as e:
        e.finish_reason = finish
        e.args = (f"{e.args[0]}; finish_reason {finish}",)
        raise
    prefix = f"{MSG_SAVE_EMPTY}: " if reasoning == "save" else ""
    if content is None or not content.strip():
        held = _held_instead(message, content, thinking, reasoning_field)
        raise BadReply(
            f"{prefix}no usable assistant text: {', '.join(held)}; finish_reason {finish}",
            "empty_content",
            finish_reason=finish,
        )
    _check_writable(content, "content", finish)
    skip = None
    if reasoning == "save":
        if thinking is None or not thinking.strip():
            what = "reasoning_content missing" if thinking is None else f"{reasoning_field} empty"
            raise BadReply(f"{prefix}{what}; finish_reason {finish}", "no_reasoning", finish_reason=finish)
        _check_writable(thinking, reasoning_field, finish)
        if THINK_MARKER.search(content) or THINK_MARKER.search(thinking):
            skip = MSG_SAVE_MARKER
    else:
        if thinking is not None:
            thinking = clean(thinking)  # not written in this mode: kept only as visible text
        if reasoning == "disable" and THINK_MARKER.search(content):
            skip = MSG_DISABLE_BAD
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    model = clean(data["model"]) if isinstance(data.get("model"), str) else None
    return Reply(content=content, reasoning=thinking, finish_reason=finish, usage=usage, model=model, skip=skip)
