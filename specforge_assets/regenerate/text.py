"""Text the regenerate layer writes is always writable as UTF-8.

A Python ``str`` can hold a lone UTF-16 surrogate (``"\\ud83d"``: a JSON escape of half an emoji,
a broken detokenizer, an argv byte under surrogateescape). ``json.dumps`` writes it as the escape
``"\\ud83d"`` without complaint, and every strict reader downstream (DuckDB, ``jsonrows``) then
refuses the file. So:

- reply text that is *written* (assistant content, reasoning in ``save`` mode) is refused by
  `reply.check_reply` (an error row naming the turn, retried by a later run);
- settings (model name, extra_body) are refused by `RegenSettings`;
- everything else the layer writes (server model names, finish reasons, server error messages,
  exception texts, stats keys) goes through `clean` / `scrub`, which replace each lone
  surrogate by the six visible characters ``\\ud83d`` — and the journal and state writers apply
  `scrub` as the last line of defence.

Uses `jsonrows._SURROGATE`, the project's one definition of "not writable as UTF-8".
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..jsonrows import _SURROGATE, _SURROGATE_ESCAPE_STR


def _escape(m: re.Match) -> str:
    return f"\\u{ord(m.group()):04x}"


def clean(text: str) -> str:
    """`text` with every lone surrogate replaced by its visible escape (``\\ud83d``)."""
    return _SURROGATE.sub(_escape, text) if _SURROGATE.search(text) else text


def has_surrogate(obj: Any) -> bool:
    """True when some string (or key) of `obj` holds a lone surrogate."""
    try:
        json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def scrub(obj: Any) -> Any:
    """`obj` (JSON-like) with `clean` applied to every string and key; other values unchanged."""
    if isinstance(obj, str):
        return clean(obj)
    if isinstance(obj, dict):
        return {clean(k) if isinstance(k, str) else k: scrub(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [scrub(v) for v in obj]
    return obj


def dumps_clean(obj: Any, **kw) -> str:
    """``json.dumps(obj)`` (ASCII, as before), with lone surrogates made visible text first.
    Costs one regex search on ordinary rows; the check runs only when the text holds a
    ``\\uD8xx``-``\\uDFxx`` escape (astral characters such as emoji, or a lone surrogate)."""
    text = json.dumps(obj, **kw)
    if _SURROGATE_ESCAPE_STR.search(text) and has_surrogate(obj):
        text = json.dumps(scrub(obj), **kw)
    return text
