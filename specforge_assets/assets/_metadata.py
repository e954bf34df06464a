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

from pathlib import Path
from typing import Any, Iterable, Sequence

import dagster as dg

from .. import charts
from ..checks.outcome import Table


def table(rows_and_columns: tuple[list[dict], list[tuple[str, str, str]]]) -> dg.TableMetadataValue:
    """`(rows, [(name, type, description)])` from charts.* → a native Dagster table."""
    rows, columns = rows_and_columns
    return dg.MetadataValue.table(
        records=[dg.TableRecord(r) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(n, t, description=d) for n, t, d in columns]),
    )


def markdown_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> dg.MetadataValue:
    """`charts.markdown_table_text(columns, rows)` as a markdown value (the cells are text to
    read, e.g. previews, rather than numbers to sort)."""
    return dg.MetadataValue.md(charts.markdown_table_text(columns, rows))


def code_block(text: str) -> dg.MetadataValue:
    """`text` shown verbatim in a fenced code block (`charts.code_block_text`)."""
    return dg.MetadataValue.md(charts.code_block_text(text))


def pictures(**named: str | None) -> dict[str, dg.MetadataValue]:
    """Keep the inline pictures that exist: `pictures(loss_curve=charts.loss_curve_inline_md(h))`."""
    return {k: dg.MetadataValue.md(v) for k, v in named.items() if v}


def png(png: bytes | str | Path, alt: str) -> dg.MetadataValue:
    """A full-size PNG (bytes, or a PNG file's path) as markdown (one click in the UI)."""
    return dg.MetadataValue.md(charts.png_markdown(png, alt))


def entries(values: dict[str, Any]) -> dict[str, Any]:
    """Plain values (a check outcome's metadata) as metadata entries, one per key: lists and dicts
    as JSON, a `checks.outcome.Table` as a native table, `MetadataValue`s as they are, other
    values (str, int, float, bool, None) as Dagster normalizes them."""
    return {
        k: dg.MetadataValue.json(v)
        if isinstance(v, (list, dict))
        else table((v.rows, v.columns))
        if isinstance(v, Table)
        else v
        for k, v in values.items()
    }
