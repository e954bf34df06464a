"""Human-readable artefacts for the tokenized dataset: length histogram, masked example."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Sequence

from ..fileio import atomic_write


def length_histogram_png(lengths: Sequence[int], max_length: int, path: Path) -> Path:
    """Write the tokens-per-row histogram (``charts.length_histogram_png``: x axis fitted to the
    data) to `path`."""
    from ..charts import length_histogram_png as _png

    data = _png(lengths, max_length)
    with atomic_write(path, "wb") as f:
        f.write(data)
    return path


def _pieces(tokenizer, ids: Sequence[int], mask: Sequence[int]) -> list[tuple[str, int]]:
    """Consecutive runs of equal mask value, decoded as one string each."""
    runs: list[tuple[str, int]] = []
    start = 0
    for i in range(1, len(ids) + 1):
        if i == len(ids) or mask[i] != mask[start]:
            runs.append((tokenizer.decode(list(ids[start:i]), skip_special_tokens=False), mask[start]))
            start = i
    return runs


def example_markdown(tokenizer, row_id: str, ids, mask, limit_chars: int = 3000) -> str:
    """One tokenized row as markdown: a caption (row id, supervised/total tokens) and the decoded
    text in a code block (`charts.code_block_text`), supervised spans between ⟦ and ⟧, cut with
    " …" after about `limit_chars` characters. `ids`/`mask`: equal-length token ids and loss mask."""
    from ..charts import code_block_text

    runs = _pieces(tokenizer, ids, mask)
    out, n = [], 0
    for text, m in runs:
        piece = f"⟦{text}⟧" if m else text
        out.append(piece)
        n += len(piece)
        if n > limit_chars:
            out.append(" …")
            break
    return (
        f"Row `{row_id}`: {sum(mask)} of {len(ids)} tokens supervised; supervised spans are between ⟦ and ⟧.\n\n"
        + code_block_text("".join(out), "text")
    )


def example_html(tokenizer, row_id: str, ids, mask, path: Path) -> Path:
    runs = _pieces(tokenizer, ids, mask)
    parts = []
    for text, m in runs:
        t = html.escape(text)
        parts.append(f'<mark style="background:#c6f6c6">{t}</mark>' if m else f'<span style="color:#666">{t}</span>')
    doc = (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(row_id)}</title>"
        f"<p>Row <code>{html.escape(row_id)}</code>: {sum(mask)} of {len(ids)} tokens supervised "
        f"(highlighted).</p><pre style='white-space:pre-wrap'>{''.join(parts)}</pre>"
    )
    with atomic_write(path) as f:
        f.write(doc)
    return path


def example_preview(tokenizer, template, options, mix_train: Path, html_path: Path) -> tuple[str, str | None]:
    """The first readable row of the mix (`mix_train`, JSONL) rendered with `template` and
    tokenized as the dataset was (`options`): `(markdown with the supervised tokens marked,
    path of the same as HTML at html_path)`. A mix with no readable row, or a first row that does
    not tokenize, gives a one-line explanation and no HTML."""
    from ..jsonrows import RowDecodeError, loads_object
    from .core import Preprocessor

    row = None
    with open(mix_train, "rb") as f:
        for line in f:
            if line.strip():
                try:
                    row = loads_object(line)
                except RowDecodeError:
                    continue
                break
    if row is None:
        return "(empty mix)", None
    try:
        t = Preprocessor(tokenizer, template, options).process(row)
    except ValueError as e:
        return f"example row could not be tokenized: {e}", None
    path = example_html(tokenizer, str(row.get("id")), t.input_ids, t.loss_mask, html_path)
    return example_markdown(tokenizer, str(row.get("id")), t.input_ids, t.loss_mask), str(path)
