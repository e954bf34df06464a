"""Does the tokenized data render conversations the way the target model's own template does?

A registry template can disagree with the model it is used for without any other check noticing:
a ChatML model with its own default system prompt (SmolLM2) tokenized with `qwen` gets qwen's
"You are a helpful assistant." instead, every row some tokens off, masks still well-formed.
`template_agreement` re-renders a sample of rows with the target tokenizer's own
`apply_chat_template` (the conversation as the model would see it: messages normalised as for
tokenization, no system prompt injected, so the template's own default applies) and compares the
token ids; the first differing row is reported with the position and both sides decoded.

Rows cut at max_length agree when they are a prefix of the render. Pre-formatted rows (`text`
without `conversations`) and rows whose conversation is not found are not compared (counted).
No Dagster import.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterable

from ..fileio import iter_jsonl
from .messages import GENERAL_KEYS, THINKING_KEYS, build_messages, loader_clean, parse_tools

SNIPPET_BEFORE = 8
SNIPPET_AFTER = 24


def _rows(src: Any, errors: list, name: str = "train.jsonl") -> Iterable[dict]:
    """The rows of `src` (rows, a JSONL file or a folder holding `name`); a file's rows that break
    the row rule (`fileio.iter_jsonl`) are appended to `errors` and skipped."""
    if isinstance(src, (str, Path)):
        p = Path(src)
        if p.is_dir():
            p = p / name
        if not p.is_file():
            raise FileNotFoundError(f"{p}: not found")
        return iter_jsonl(p, errors)
    return src


def _flat(ids: Any) -> list[int]:
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    if isinstance(ids, list) and len(ids) == 1 and isinstance(ids[0], list):  # SpecForge's [1, L]
        ids = ids[0]
    return [int(x) for x in ids]


def _sample(rows: Iterable[dict], n: int, seed: int) -> list[dict]:
    """A seeded reservoir sample of `n` rows (all rows when fewer), in file order."""
    rng = random.Random(seed)
    res: list[tuple[int, dict]] = []
    for i, r in enumerate(rows):
        if i < n:
            res.append((i, r))
        else:
            j = rng.randint(0, i)
            if j < n:
                res[j] = (i, r)
    return [r for _, r in sorted(res, key=lambda t: t[0])]


def render_ids(tokenizer, row: dict, render_kwargs: dict | None = None, keys=GENERAL_KEYS) -> list[int] | None:
    """The token ids of `row`'s conversation as the tokenizer's own chat template renders it
    (None for a row without conversations)."""
    if "conversations" not in row:
        return None
    warnings: list[str] = []
    conv = loader_clean(row.get("conversations"), warnings)
    if not conv:
        return None
    messages = build_messages(conv, None, keys, warnings, inject_system_prompt=False)
    tools = parse_tools(row.get("tools"), warnings)
    text = tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=False, tools=tools, **(render_kwargs or {})
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _decode(tokenizer, ids: list[int]) -> str:
    try:
        return tokenizer.decode(ids, skip_special_tokens=False)
    except Exception:  # noqa: BLE001 - ids outside the vocabulary
        return repr(ids)


def template_agreement(
    tokenized_rows_or_path: Any,
    conversations_path: Any,
    tokenizer,
    sample: int = 64,
    *,
    seed: int = 0,
    max_length: int | None = None,
    render_kwargs: dict | None = None,
    thinking: bool = False,
) -> dict:
    """Compare a sample of tokenized rows with the tokenizer's own rendering of their conversations.

    `tokenized_rows_or_path`: rows {id, input_ids, ...}, a JSONL file of them, or a dataset folder
    holding `train.jsonl`. `conversations_path`: the rows that were tokenized ({id, conversations,
    tools?}), a JSONL file or a folder holding `train.jsonl` (the mix). `sample`: rows compared
    (seeded reservoir sample; all when fewer). `max_length`: a row shorter than the render must be
    exactly this long (cut at max_length) to count as agreeing; None accepts any prefix.
    `render_kwargs`: passed to apply_chat_template (e.g. enable_thinking for thinking templates);
    `thinking`: keep reasoning fields in the messages (thinking templates).

    Returns {passed, checked, agreed, truncated, skipped_preformatted, missing_conversation,
    sampled, first_mismatch}, plus `unreadable_rows` (rows read from a given file that break the
    row rule, `jsonrows`: not compared) only when there are some; first_mismatch is None or {id, position, expected_length,
    got_length, expected_ids_snippet, got_ids_snippet, expected_decoded, got_decoded, message}
    (expected = the tokenizer's own render, got = the tokenized row)."""
    unreadable: list = []
    picked = _sample(_rows(tokenized_rows_or_path, unreadable), max(int(sample), 0), seed)
    want = {str(r.get("id")): r for r in picked}
    convs: dict[str, dict] = {}
    for row in _rows(conversations_path, unreadable):
        rid = str(row.get("id"))
        if rid in want and rid not in convs:
            convs[rid] = row
            if len(convs) == len(want):
                break
    keys = THINKING_KEYS if thinking else GENERAL_KEYS
    out: dict[str, Any] = {
        "passed": True,
        "checked": 0,
        "agreed": 0,
        "truncated": 0,
        "skipped_preformatted": 0,
        "missing_conversation": 0,
        "sampled": len(picked),
        "first_mismatch": None,
    }
    for r in picked:
        rid = str(r.get("id"))
        conv = convs.get(rid)
        if conv is None:
            out["missing_conversation"] += 1
            continue
        if "conversations" not in conv:
            out["skipped_preformatted"] += 1
            continue
        got = _flat(r.get("input_ids") or [])
        try:
            expected = render_ids(tokenizer, conv, render_kwargs, keys)
        except Exception as e:  # noqa: BLE001 - the template fails where tokenization did not
            expected = None
            err = f"{type(e).__name__}: {e}"
        else:
            err = None
        if expected is None and err is None:
            out["skipped_preformatted"] += 1
            continue
        out["checked"] += 1
        if expected is not None and got == expected:
            out["agreed"] += 1
            continue
        if (
            expected is not None
            and len(got) < len(expected)
            and expected[: len(got)] == got
            and (max_length is None or len(got) == max_length)
        ):
            out["agreed"] += 1
            out["truncated"] += 1
            continue
        if out["first_mismatch"] is None:
            out["first_mismatch"] = _mismatch(tokenizer, rid, expected or [], got, err)
    out["passed"] = out["first_mismatch"] is None
    if unreadable:
        out["unreadable_rows"] = len(unreadable)
    return out


def _mismatch(tokenizer, rid: str, expected: list[int], got: list[int], err: str | None) -> dict:
    pos = 0
    n = min(len(expected), len(got))
    while pos < n and expected[pos] == got[pos]:
        pos += 1
    a, b = max(0, pos - SNIPPET_BEFORE), pos + SNIPPET_AFTER
    exp_s, got_s = expected[a:b], got[a:b]
    d = {
        "id": rid,
        "position": pos,
        "expected_length": len(expected),
        "got_length": len(got),
        "expected_ids_snippet": exp_s,
        "got_ids_snippet": got_s,
        "expected_decoded": _decode(tokenizer, exp_s),
        "got_decoded": _decode(tokenizer, got_s),
    }
    if err:
        d["render_error"] = err
        d["message"] = f"row {rid}: the tokenizer's own chat template failed on it ({err})"
    else:
        d["message"] = (
            f"row {rid}: token {pos} differs from the tokenizer's own chat template "
            f"(expected ...{d['expected_decoded']!r}..., got ...{d['got_decoded']!r}...)"
        )
    return d
