"""Dagster metadata values built from the domain's pictures and tables (`specforge_assets.charts`,
which has no Dagster import). The one module that formats metadata for the UI:

- an inline picture (`MetadataValue.md` under 1,000 characters: a compact SVG) shows on the
  asset page with no click; a full PNG in markdown opens with one click ([Show Markdown]);
- a table (`MetadataValue.table`) shows inline; a markdown table (`markdown_table`) where the
  cells are text to read (previews) rather than numbers to sort;
- plain int/float values plot themselves across materializations ("Plots"), so numbers stay
  plain numbers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import dagster as dg

from .. import charts

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BACKTICKS = re.compile(r"`+")


def table(rows_and_columns: tuple[list[dict], list[tuple[str, str, str]]]) -> dg.TableMetadataValue:
    """`(rows, [(name, type, description)])` from charts.* → a native Dagster table."""
    rows, columns = rows_and_columns
    return dg.MetadataValue.table(
        records=[dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t, description=d) for n, t, d in columns]),
    )


def md_cell(value: Any) -> str:
    """One markdown table cell: `str(value)` with `|` escaped and line breaks turned into spaces
    (either would end the cell or the row early)."""
    return _LINE_BREAK.sub(" ", str(value).replace("|", "\\|"))


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dg.MetadataValue:
    """A markdown table: a header of `columns`, a `|---|` rule, one line per row (each a
    sequence of `len(columns)` values; `str()` of each, escaped by `md_cell`). No rows → the
    header alone."""
    lines = ["| " + " | ".join(md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["|" + "|".join(f" {md_cell(v)} " for v in row) + "|" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))


def code_block(text: str) -> dg.MetadataValue:
    """`text` shown verbatim in a fenced code block (the fence is longer than any run of
    backticks inside `text`, so the text cannot close it)."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return dg.MetadataValue.md(f"{fence}\n{text}\n{fence}")


def pictures(**named: str | None) -> dict[str, dg.MetadataValue]:
    """Keep the inline pictures that exist: `pictures(loss_curve=charts.loss_curve_inline_md(h))`."""
    return {k: dg.MetadataValue.md(v) for k, v in named.items() if v}


def png(png: bytes | str | Path, alt: str) -> dg.MetadataValue:
    """A full-size PNG (bytes, or a PNG file's path) as markdown (one click in the UI)."""
    return dg.MetadataValue.md(charts.png_markdown(png, alt))
