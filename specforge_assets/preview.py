"""Previews of rows for manifests and Dagster metadata: small, whatever the row's size.

A preview is for a person glancing at the data, so every string in it is cut to
`MAX_STRING_CHARS` characters (with a ``…[+N chars]`` marker) and a list to `MAX_ITEMS` items;
the whole preview row is bounded no matter how large the source row was (one 50 MB row must not
make a 50 MB manifest).
"""

from __future__ import annotations

from typing import Any

MAX_STRING_CHARS = 500
MAX_ITEMS = 20
MAX_DEPTH = 8


def truncate(value: Any, max_chars: int = MAX_STRING_CHARS, max_items: int = MAX_ITEMS, _depth: int = 0) -> Any:
    """A copy of `value` (a JSON-like row) with long strings and lists cut, and nesting past
    `MAX_DEPTH` replaced by ``"…"``. Numbers, bools and None pass through."""
    if isinstance(value, str):
        return value if len(value) <= max_chars else f"{value[:max_chars]}…[+{len(value) - max_chars} chars]"
    if _depth >= MAX_DEPTH and isinstance(value, (dict, list, tuple)):
        return "…"
    if isinstance(value, dict):
        items = list(value.items())
        out = {str(k)[:max_chars]: truncate(v, max_chars, max_items, _depth + 1) for k, v in items[:max_items]}
        if len(items) > max_items:
            out["…"] = f"+{len(items) - max_items} keys"
        return out
    if isinstance(value, (list, tuple)):
        out = [truncate(v, max_chars, max_items, _depth + 1) for v in value[:max_items]]
        if len(value) > max_items:
            out.append(f"…[+{len(value) - max_items} items]")
        return out
    return value
