"""Pure converters from a hub dataset's raw row to SpecForge's conversation row.

Each preset in `configs/sources.yaml` names one converter and its options; `build_converter`
returns a function ``convert(row, index) -> (out_row, skipped_messages)``. `index` is the row's
position in the whole loaded dataset (configs concatenated, before `--sample-size`), which
is what SpecForge's indexed presets use as id.

The output is exactly what SpecForge's `scripts/prepare_data.py` writes for the same row (key
order included), so `json.dumps(out, ensure_ascii=False)` reproduces its files byte for byte.
Rows SpecForge would crash on raise `RowError` naming the field instead.
"""

from __future__ import annotations

import hashlib
import random
import string
from typing import Any, Callable, Literal, TypeVar

from pydantic import BaseModel, Field

from ..configmodel import ConfigModel, validate
from .errors import RowError

Converter = Callable[[dict, int], "tuple[dict, int]"]

# SpecForge's ROLE_MAPPING for ShareGPT-style senders. Anything else is dropped and counted.
SHAREGPT_ROLE_MAPPING = {
    "human": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
}

# The documented seed for SciQ's option shuffle (SpecForge uses the unseeded global RNG).
SCIQ_DEFAULT_SEED = 0


def md5_id(*parts: Any, fields: tuple[str, ...] = ()) -> str:
    """SpecForge's stable id: MD5 hex of the plain concatenation of the parts (UTF-8)."""
    for i, p in enumerate(parts):
        if not isinstance(p, str):
            name = fields[i] if i < len(fields) else f"part {i}"
            raise RowError(f"cannot build the md5 id: {name} is {type(p).__name__}, expected a string", name)
    return hashlib.md5("".join(parts).encode("utf-8")).hexdigest()


def _get(row: dict, field: str) -> Any:
    if field not in row:
        raise RowError(f"missing field {field!r}", field)
    return row[field]


def _messages(row: dict, field: str) -> list:
    value = _get(row, field)
    if not isinstance(value, list):
        raise RowError(f"{field} must be a list of messages, got {type(value).__name__}", field)
    return value


def _message_field(msg: Any, key: str, where: str) -> Any:
    if not isinstance(msg, dict):
        raise RowError(f"message must be an object, got {type(msg).__name__}", where)
    if key not in msg:
        raise RowError(f"message has no {key!r}", f"{where}.{key}")
    return msg[key]


def single_turn(user: str, assistant: str) -> list[dict]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


OptionsT = TypeVar("OptionsT", bound=BaseModel)

# --------------------------------------------------------------------------- converter options
# A preset's `options:` (configs/sources.yaml) for the converters that have a columnar fast path
# too (fast.py): the row-by-row and the columnar readers take their defaults from here.


class UltrachatOptions(ConfigModel):
    id_field: str = "prompt_id"
    messages_field: str = "messages"


class SharegptOptions(ConfigModel):
    id: Literal["field", "index"] = Field(default="field", description="field: the row's `id_field`; index: row index")
    id_field: str = "id"
    conversations_field: str = "conversations"


def converter_options(model: type[OptionsT], name: str, options: dict | None) -> OptionsT:
    """A preset's `options:` for converter `name` as `model`; `ConfigError` (one line naming the
    converter and the option) for an unknown option or a bad value."""
    return validate(model, options or {}, f"configs/sources.yaml presets: converter {name!r} options")


# --------------------------------------------------------------------------- converters


def _ultrachat(options: dict) -> Converter:
    opts = converter_options(UltrachatOptions, "ultrachat", options)
    id_field, msg_field = opts.id_field, opts.messages_field

    def convert(row: dict, index: int) -> tuple[dict, int]:
        out = []
        for i, msg in enumerate(_messages(row, msg_field)):
            where = f"{msg_field}[{i}]"
            role = _message_field(msg, "role", where)
            if role not in ("user", "assistant"):
                raise RowError(f"Unsupported UltraChat role: {role!r}", f"{where}.role")
            out.append({"role": role, "content": _message_field(msg, "content", where)})
        return {"id": str(_get(row, id_field)), "conversations": out}, 0

    return convert


def sharegpt_messages(messages: list, field: str = "conversations") -> tuple[list[dict], int]:
    """SpecForge's ShareGPT rule: map senders with ROLE_MAPPING, drop (and count) the rest."""
    out, skipped = [], 0
    for i, msg in enumerate(messages):
        where = f"{field}[{i}]"
        role = SHAREGPT_ROLE_MAPPING.get(_message_field(msg, "from", where))
        if role is None:
            skipped += 1
            continue
        out.append({"role": role, "content": _message_field(msg, "value", where)})
    return out, skipped


def _sharegpt(options: dict) -> Converter:
    opts = converter_options(SharegptOptions, "sharegpt", options)
    id_rule, id_field, conv_field = opts.id, opts.id_field, opts.conversations_field

    def convert(row: dict, index: int) -> tuple[dict, int]:
        conv, skipped = sharegpt_messages(_messages(row, conv_field), conv_field)
        rid = str(index) if id_rule == "index" else str(_get(row, id_field))
        return {"id": rid, "conversations": conv}, skipped

    return convert


def _identity(options: dict) -> Converter:
    """Row written unchanged; with ``id: index`` the `id` column becomes the int row index
    (keeping its column position, or appended when the source has none)."""
    id_rule = options.get("id", "keep")

    def convert(row: dict, index: int) -> tuple[dict, int]:
        out = dict(row)
        if id_rule == "index":
            out["id"] = index
        return out, 0

    return convert


def _nebius(options: dict) -> Converter:
    def convert(row: dict, index: int) -> tuple[dict, int]:
        conv = _messages(row, "conversation")
        if not conv:
            raise RowError("conversation is empty: the user turn is conversation[0]", "conversation")
        user = _message_field(conv[0], "content", "conversation[0]")
        gen = _get(row, "generated_message")
        if not isinstance(gen, dict):
            raise RowError(f"generated_message must be an object, got {type(gen).__name__}", "generated_message")
        assistant = _message_field(gen, "content", "generated_message")
        return {"id": str(index), "conversations": single_turn(user, assistant)}, 0

    return convert


class _Template:
    """`"{Problem}\\n{options}"`: a single-field template passes the raw value through (nulls
    included, like SpecForge); a compound one needs string fields (SpecForge would crash)."""

    def __init__(self, template: str):
        self.template = template
        parsed = list(string.Formatter().parse(template))
        self.fields = [f for _, f, _, _ in parsed if f is not None]
        self.single = len(parsed) == 1 and parsed[0][0] == "" and parsed[0][1] is not None and not parsed[0][2]

    def render(self, row: dict) -> Any:
        if self.single:
            return _get(row, self.fields[0])
        values = {}
        for f in self.fields:
            v = _get(row, f)
            if not isinstance(v, str):
                raise RowError(f"{f} is {type(v).__name__}, expected a string", f)
            values[f] = v
        return self.template.format_map(values)


def _pair(options: dict) -> Converter:
    """Single-turn rows: user/assistant from templates over the raw columns.

    ``user_with_input`` (CodeAlpaca): ``user + sep + row[input]`` when that column is truthy.
    ``id``: ``md5`` (of user + assistant content) | ``field`` (row[id_field]; md5 fallback when
    falsy) | ``index``.
    """
    user_t = _Template(options["user"])
    assistant_t = _Template(options["assistant"])
    id_rule = options.get("id", "md5")
    id_field = options.get("id_field", "id")
    extra = options.get("user_with_input")

    def convert(row: dict, index: int) -> tuple[dict, int]:
        user = user_t.render(row)
        if extra:
            value = _get(row, extra["field"])
            if value:
                if not isinstance(user, str) or not isinstance(value, str):
                    raise RowError(f"{extra['field']} and the instruction must be strings", extra["field"])
                user = user + extra.get("sep", "\n\n") + value
        assistant = assistant_t.render(row)
        if id_rule == "index":
            rid = str(index)
        elif id_rule == "field" and _get(row, id_field):
            rid = str(row[id_field])
        else:
            rid = md5_id(user, assistant, fields=(_describe(user_t), _describe(assistant_t)))
        return {"id": rid, "conversations": single_turn(user, assistant)}, 0

    return convert


def _describe(t: _Template) -> str:
    return "+".join(t.fields) or t.template


def _sciq(options: dict) -> Converter:
    """Options [distractor3, distractor1, distractor2, correct] shuffled, labelled a)..d).

    SpecForge shuffles with the unseeded global `random`; we use `random.Random(seed)` and call
    `shuffle` once per row in row order, which reproduces SpecForge run after `random.seed(seed)`.
    """
    rng = random.Random(options.get("seed", SCIQ_DEFAULT_SEED))
    order = options.get("option_fields", ["distractor3", "distractor1", "distractor2", "correct_answer"])

    def convert(row: dict, index: int) -> tuple[dict, int]:
        opts = [_get(row, f) for f in order]
        for f, v in zip(order, opts):
            if not isinstance(v, str):
                raise RowError(f"{f} is {type(v).__name__}, expected a string", f)
        correct = opts[-1]
        rng.shuffle(opts)
        labels = "abcd"
        lines = [f"{labels[i]}) {o}" for i, o in enumerate(opts)]
        label = labels[opts.index(correct)]
        question, support = _get(row, "question"), _get(row, "support")
        for f, v in (("question", question), ("support", support)):
            if not isinstance(v, str):
                raise RowError(f"{f} is {type(v).__name__}, expected a string", f)
        user = question + "\n" + "\n".join(lines)
        assistant = support + "\nanswer: " + f"{label}) {correct}"
        return {"id": md5_id(user, assistant), "conversations": single_turn(user, assistant)}, 0

    return convert


CONVERTERS: dict[str, Callable[[dict], Converter]] = {
    "ultrachat": _ultrachat,
    "sharegpt": _sharegpt,
    "identity": _identity,
    "nebius": _nebius,
    "pair": _pair,
    "sciq": _sciq,
}


def build_converter(name: str, options: dict | None = None) -> Converter:
    """A fresh converter (fresh RNG state for SciQ) for one run over a dataset."""
    try:
        factory = CONVERTERS[name]
    except KeyError:
        raise ValueError(f"unknown converter {name!r}; known: {', '.join(sorted(CONVERTERS))}") from None
    return factory(dict(options or {}))
