"""The one rule for reading a JSON row, used by every reader of every layer.

A row is accepted only if all of this holds; otherwise `RowDecodeError` names the reason and,
where it can, the field (a JSON-path such as ``conversations[0].content``):

- the bytes are UTF-8 (``invalid UTF-8 at byte N``);
- the text is JSON (``malformed JSON: <msg> at column N``);
- nesting is at most `MAX_DEPTH` arrays/objects deep. Python's parser raises `RecursionError`
  near ~1,000 levels, and everything downstream that walks a row (``json.dumps``, hashing) fails
  at about the same depth, so a row nested deeper than any real conversation is refused up
  front (``JSON nested deeper than 128 levels``);
- every string (keys too) is writable as UTF-8: a lone UTF-16 surrogate escape such as
  ``"\\ud83d"`` is valid JSON but cannot be encoded (``lone surrogate \\ud83d at char 13``).

Readers turn the error into a quarantined / skipped row with file, line and field; a bad row
never ends a run. The checks cost nothing on ordinary rows: the surrogate walk runs only when the
line holds a ``\\uD8xx``-``\\uDFxx`` escape, the depth walk only when it holds more than
`MAX_DEPTH` brackets.
"""

from __future__ import annotations

import json
import re
from typing import Any, Iterator

MAX_DEPTH = 128

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE_ESCAPE_STR = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_decoder = json.JSONDecoder()


class RowDecodeError(ValueError):
    """One row cannot be read. `reason` says why, `field` where (None: the whole row)."""

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason if field is None else f"{field}: {reason}")
        self.reason = reason
        self.field = field


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


_TRAILING_INDEXES = re.compile(r"(\[\d+\])+$")
_FIELD_CHARS = 100


def _deep_field_name(where: str) -> str | None:
    """The field that holds a too-deep value: the path down to the last object key above the deep
    part (``conversations[0].meta`` for ``conversations[0].meta[0][0]...``), cut to 100 chars."""
    path = _TRAILING_INDEXES.sub("", where)
    if len(path) > _FIELD_CHARS:
        path = path[:_FIELD_CHARS] + "…"
    return path or None


def locate_deep_field(text: str, limit: int = MAX_DEPTH) -> str | None:
    """`_deep_field_name` for raw JSON text the parser could not take (it raised RecursionError):
    a plain scan that tracks the path, no recursion. None when it cannot tell."""
    stack: list[list] = []  # [container kind, key or index]
    i, n = 0, len(text)
    expect_key = False
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if expect_key and stack and stack[-1][0] == "{":
                try:
                    stack[-1][1] = json.loads(text[i : j + 1])
                except ValueError:
                    return None
                expect_key = False
            i = j + 1
            continue
        if c in "[{":
            stack.append([c, 0 if c == "[" else None])
            expect_key = c == "{"
            if len(stack) > limit:
                where = ""
                for kind, key in stack[:-1]:
                    where = _path(where, key) if key is not None else where
                return _deep_field_name(where)
        elif c in "]}":
            if stack:
                stack.pop()
        elif c == ",":
            if stack and stack[-1][0] == "[":
                stack[-1][1] += 1
            expect_key = bool(stack) and stack[-1][0] == "{"
        i += 1
    return None


def check_value(obj: Any, *, walk_strings: bool = True, walk_depth: bool = True) -> None:
    """Raise `RowDecodeError` if `obj` (a parsed row) nests deeper than `MAX_DEPTH` or holds a
    string with a lone surrogate. Iterative: safe on any depth."""
    stack: list[tuple[Any, str, int]] = [(obj, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            if walk_strings:
                m = _SURROGATE.search(value)
                if m:
                    raise RowDecodeError(f"lone surrogate \\u{ord(m.group()):04x} at char {m.start()}", where or None)
            continue
        if isinstance(value, dict):
            if walk_depth and depth >= MAX_DEPTH:
                raise RowDecodeError(f"JSON nested deeper than {MAX_DEPTH} levels", _deep_field_name(where))
            for k, v in value.items():
                p = _path(where, k)
                if walk_strings and _SURROGATE.search(k):
                    raise RowDecodeError(f"lone surrogate in a key at {p!r}", where or None)
                stack.append((v, p, depth + 1))
        elif isinstance(value, list):
            if walk_depth and depth >= MAX_DEPTH:
                raise RowDecodeError(f"JSON nested deeper than {MAX_DEPTH} levels", _deep_field_name(where))
            for i, v in enumerate(value):
                stack.append((v, _path(where, i), depth + 1))


def _needs_walk(text: str | bytes) -> tuple[bool, bool]:
    if isinstance(text, bytes):
        strings = _SURROGATE_ESCAPE.search(text) is not None
        brackets = text.count(b"[") + text.count(b"{")
    else:
        strings = _SURROGATE_ESCAPE_STR.search(text) is not None
        brackets = text.count("[") + text.count("{")
    return strings, brackets > MAX_DEPTH


def loads_row(line: bytes | str) -> Any:
    """Parse one JSON value (a JSONL line) under the rule above.

    Returns the parsed value (any JSON type: callers check that it is an object).
    Raises `RowDecodeError` for invalid UTF-8, malformed JSON, too deep nesting or a lone
    surrogate. Never raises `RecursionError`.
    """
    if isinstance(line, (bytes, bytearray)):
        try:
            text = bytes(line).decode("utf-8")
        except UnicodeDecodeError as e:
            raise RowDecodeError(f"invalid UTF-8 at byte {e.start}") from None
    else:
        text = line
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark (Windows editors) is not part of the row
        text = text[1:]
    strings, deep = _needs_walk(text)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RowDecodeError(f"malformed JSON: {e.msg} at column {e.colno}") from None
    except RecursionError:
        raise RowDecodeError(f"JSON nested deeper than {MAX_DEPTH} levels", locate_deep_field(text)) from None
    if strings or deep:
        check_value(obj, walk_strings=strings, walk_depth=deep)
    return obj


_ID_AT_START = re.compile(rb'^(?:\xef\xbb\xbf)?\s*\{\s*"id"\s*:\s*("(?:[^"\\]|\\.){0,200}"|-?\d{1,30})')


def salvage_id(line: bytes) -> str | int | None:
    """The `id` of a line the row rule refused, best effort, for the skip/error record: read from
    the start of the line (works on any depth), else from the whole line when it still parses.
    Only a clean string (writable as UTF-8) or integer id is returned; never raises."""
    rid = None
    m = _ID_AT_START.match(line)
    if m:
        try:
            rid = json.loads(m.group(1))
        except ValueError:
            rid = None
    if rid is None:
        try:
            obj = json.loads(line.decode("utf-8", errors="replace"))
        except (ValueError, RecursionError):
            return None
        rid = obj.get("id") if isinstance(obj, dict) else None
    if isinstance(rid, bool) or not isinstance(rid, (str, int)):
        return None
    if isinstance(rid, str) and _SURROGATE.search(rid):
        return None
    return rid


def loads_object(line: bytes | str) -> dict:
    """`loads_row`, and the value must be a JSON object (``expected a JSON object, got list``)."""
    obj = loads_row(line)
    if not isinstance(obj, dict):
        raise RowDecodeError(f"expected a JSON object, got {type(obj).__name__}")
    return obj


def _skip_value(text: str, i: int) -> int:
    """Index just past the JSON value starting at `text[i]`, without recursion (strings with
    escapes, nested brackets). Used only to step over an item the parser refused."""
    depth = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            i += 1
            if depth == 0:
                return i
            continue
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return i + 1
        elif depth == 0 and c in ",":
            return i
        i += 1
    return n


_WS = re.compile(r"[ \t\n\r]*")


def iter_array_items(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """Items of a top-level JSON array, one at a time: ``(index, value_or_error, raw)``.

    `value_or_error` is the parsed item or a `RowDecodeError` for that item alone (too deep,
    lone surrogate); `raw` is the item's text when it was refused (else None). A structural error
    of the array itself (not an array, unterminated) raises `RowDecodeError`.
    """
    i = _WS.match(text, 1 if text.startswith("\ufeff") else 0).end()
    if i >= len(text) or text[i] != "[":
        raise RowDecodeError("expected a JSON array")
    i = _WS.match(text, i + 1).end()
    if i < len(text) and text[i] == "]":
        return
    index = 0
    while True:
        start = i
        try:
            value, i = _decoder.raw_decode(text, i)
            strings, deep = _needs_walk(text[start:i]) if i - start < (1 << 20) else (True, True)
            if strings or deep:
                check_value(value, walk_strings=strings, walk_depth=deep)
            yield index, value, None
        except RecursionError:
            i = _skip_value(text, start)
            yield (
                index,
                RowDecodeError(f"JSON nested deeper than {MAX_DEPTH} levels", locate_deep_field(text[start:i])),
                text[start:i][:2000],
            )
        except RowDecodeError as e:
            yield index, e, text[start:i][:2000]
        except json.JSONDecodeError as e:
            line = text.count("\n", 0, e.pos) + 1
            raise RowDecodeError(f"malformed JSON at line {line} column {e.colno}: {e.msg}") from None
        index += 1
        i = _WS.match(text, i).end()
        if i < len(text) and text[i] == ",":
            i = _WS.match(text, i + 1).end()
            continue
        if i < len(text) and text[i] == "]":
            return
        line = text.count("\n", 0, i) + 1
        raise RowDecodeError(f"malformed JSON at line {line}: expected ',' or ']' after item {index - 1}")
