"""Columnar fast path for the nested presets (ultrachat, the ShareGPT family).

The row converters in `converters.py` define the behaviour; this module produces the same
results from Arrow batches without building a Python dict per row and message: it reads the
list offsets and the flat role/content string columns, and writes each JSON line with the same
string encoder `json.dumps(..., ensure_ascii=False)` uses (so the bytes are identical).
Batches whose Arrow types are not the expected ones fall back to the row converters.
Tests run every preset fixture through both paths.
"""

from __future__ import annotations

import json
from json.encoder import encode_basestring as _enc  # C-accelerated; what json.dumps(ensure_ascii=False) uses
from typing import Any

from .converters import SHAREGPT_ROLE_MAPPING, SharegptOptions, UltrachatOptions, converter_options
from .errors import RowError

# (id, roles, contents, message JSON texts) for a converted row, or a RowError.
Item = Any


_MESSAGE = '{{"role": {}, "content": {}}}'


def jstr(value: Any) -> str:
    if type(value) is str:
        return _enc(value)
    if value is None:
        return "null"
    return json.dumps(value, ensure_ascii=False)


def message_jsons(roles: list, contents: list) -> list[str]:
    """`{"role": ..., "content": ...}` JSON text per message (batch-level: one pass, C encoder)."""
    role_json = {r: jstr(r) for r in set(roles)}
    rj = list(map(role_json.__getitem__, roles))
    try:
        cj = list(map(_enc, contents))  # all strings: the common case, no Python-level loop
    except TypeError:
        cj = list(map(jstr, contents))
    return list(map(_MESSAGE.format, rj, cj))


def line_from_messages(rid: Any, msgs: list[str]) -> str:
    return '{"id": ' + jstr(rid) + ', "conversations": [' + ", ".join(msgs) + "]}"


def _list_parts(batch, column: str, fields: tuple[str, str]):
    """offsets (relative), list validity, struct validity and the two flat child columns — or
    None when the column is not list<struct<fields as strings>>."""
    import pyarrow as pa

    if column not in batch.schema.names:
        return None
    arr = batch.column(column)
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        return None
    st = arr.type.value_type
    if not pa.types.is_struct(st):
        return None
    names = [st.field(i).name for i in range(st.num_fields)]
    if any(f not in names for f in fields):
        return None
    for f in fields:
        t = st.field(names.index(f)).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t)):
            return None
    offs = arr.offsets.to_pylist()
    base = offs[0]
    values = arr.values.slice(base, offs[-1] - base)
    offs = [o - base for o in offs]
    list_valid = arr.is_valid().to_pylist() if arr.null_count else None
    struct_valid = values.is_valid().to_pylist() if values.null_count else None
    a = values.field(names.index(fields[0])).to_pylist()
    b = values.field(names.index(fields[1])).to_pylist()
    return offs, list_valid, struct_valid, a, b


def _column(batch, name: str):
    if name not in batch.schema.names:
        return None
    return batch.column(name).to_pylist()


def ultrachat_items(batch, options: dict) -> tuple[list[Item], int] | None:
    opts = converter_options(UltrachatOptions, "ultrachat", options)
    id_field, msg_field = opts.id_field, opts.messages_field
    parts = _list_parts(batch, msg_field, ("role", "content"))
    ids = _column(batch, id_field)
    if parts is None or ids is None:
        return None
    offs, list_valid, struct_valid, roles, contents = parts
    msgs = message_jsons(roles, contents)
    items: list[Item] = []
    ok_roles = ("user", "assistant")
    for i in range(len(ids)):
        if list_valid is not None and not list_valid[i]:
            items.append(RowError(f"{msg_field} must be a list of messages, got NoneType", msg_field))
            continue
        s, e = offs[i], offs[i + 1]
        r = roles[s:e]
        err = None
        for k, role in enumerate(r):
            if struct_valid is not None and not struct_valid[s + k]:
                err = RowError("message must be an object, got NoneType", f"{msg_field}[{k}]")
                break
            if role not in ok_roles:
                err = RowError(f"Unsupported UltraChat role: {role!r}", f"{msg_field}[{k}].role")
                break
        items.append(err if err is not None else (str(ids[i]), r, contents[s:e], msgs[s:e]))
    return items, 0


def sharegpt_items(batch, options: dict, start_index: int) -> tuple[list[Item], int] | None:
    opts = converter_options(SharegptOptions, "sharegpt", options)
    id_rule, id_field, conv_field = opts.id, opts.id_field, opts.conversations_field
    parts = _list_parts(batch, conv_field, ("from", "value"))
    if parts is None:
        return None
    ids = None
    if id_rule != "index":
        ids = _column(batch, id_field)
        if ids is None:
            return None
    offs, list_valid, struct_valid, senders, values = parts
    mapping = SHAREGPT_ROLE_MAPPING
    mapped = [mapping.get(x) for x in senders]
    msgs = message_jsons(mapped, values)
    items: list[Item] = []
    skipped = 0
    for i in range(len(offs) - 1):
        if list_valid is not None and not list_valid[i]:
            items.append(RowError(f"{conv_field} must be a list of messages, got NoneType", conv_field))
            continue
        s, e = offs[i], offs[i + 1]
        rid = str(start_index + i) if id_rule == "index" else str(ids[i])
        roles = mapped[s:e]
        if struct_valid is None and None not in roles:  # the common case: nothing dropped
            items.append((rid, roles, values[s:e], msgs[s:e]))
            continue
        kept_roles, contents, kept_msgs = [], [], []
        err = None
        row_skipped = 0
        for k in range(s, e):
            if struct_valid is not None and not struct_valid[k]:
                err = RowError("message must be an object, got NoneType", f"{conv_field}[{k - s}]")
                break
            if mapped[k] is None:
                row_skipped += 1
                continue
            kept_roles.append(mapped[k])
            contents.append(values[k])
            kept_msgs.append(msgs[k])
        if err is not None:
            items.append(err)
            continue
        skipped += row_skipped
        items.append((rid, kept_roles, contents, kept_msgs))
    return items, skipped


def convert_arrow(converter: str, options: dict, batch, start_index: int) -> tuple[list[Item], int] | None:
    """Items for every row of `batch`, or None when this converter / schema has no fast path (or
    the batch holds a string that is not UTF-8: the row-by-row path then quarantines that row)."""
    try:
        if converter == "ultrachat":
            return ultrachat_items(batch, options)
        if converter == "sharegpt":
            return sharegpt_items(batch, options, start_index)
    except UnicodeDecodeError:
        return None
    return None
