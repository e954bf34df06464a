"""The domain side of the metadata pictures and tables: it draws the pictures and builds the rows.
No Dagster import: functions return PNG bytes, compact inline markdown pictures, or plain rows +
column specs; `assets/_metadata.py` (the one metadata formatter) turns them into Dagster
metadata values.

How a picture is shown in Dagster 1.13 (checked in the real UI, dagster-webserver 1.13.27, Chromium,
asset page Overview "Metadata" table and Events tab):

* ``MetadataValue.md`` is rendered **inline** when the markdown is shorter than 1,000 characters
  (``MetadataEntry.tsx``: ``expandSmallValues && mdStr.length < 1000``), otherwise it shows a
  ``[Show Markdown]`` link that opens a dialog (one click). A PNG as a ``data:`` URI is always
  longer than that, so a full PNG chart costs **one click**; a compact SVG ``data:`` URI under
  1,000 characters shows the picture **with no click** in the Overview and in each event.
  -> every chart has a full PNG (``*_png`` + :func:`png_markdown`, one click) and, where the data
  fits, a compact inline SVG (``*_inline_md``, zero clicks; ``None`` when it would not fit).
* ``MetadataValue.path``: text + copy-to-clipboard button, no picture.
* ``MetadataValue.url`` to ``file://`` or ``data:``: a link that Chromium refuses to open from the
  http page (nothing happens on click) - not usable for pictures.
* ``MetadataValue.table`` (``TableRecord`` + ``TableSchema``): rendered inline as a table (no click)
  -> the per-category and per-position acceptance and the realized mix are native tables
  (:func:`per_category_table`, :func:`per_position_table`, :func:`mix_table`).
* Plain ``float``/``int`` metadata values plot themselves across materializations in the asset's
  "Plots" view (no code needed): emit acceptance length, final loss, ... as plain numbers.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

INLINE_MD_LIMIT = 1000  # the Dagster UI renders markdown shorter than this inline
BLUE, ORANGE, GREEN, RED, GREY = "#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8C8C8C"


# -- plumbing --------------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig, dpi: int = 80) -> bytes:
    """PNG bytes of a matplotlib figure; the figure is closed."""
    plt = _plt()
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buf.getvalue()


def png_markdown(png: bytes | str | Path, alt: str) -> str:
    """Markdown embedding PNG bytes (or a PNG file) as a data: URI (one click in the UI)."""
    data = png if isinstance(png, (bytes, bytearray)) else Path(png).read_bytes()
    return f"![{alt}](data:image/png;base64,{base64.b64encode(bytes(data)).decode()})"


def svg_markdown(svg: str, alt: str, limit: int = INLINE_MD_LIMIT) -> str | None:
    """Markdown embedding an SVG as a data: URI, or None when it would be >= `limit` characters
    (the UI would then hide it behind a click)."""
    md = f"![{alt}](data:image/svg+xml;base64,{base64.b64encode(svg.encode()).decode()})"
    return md if len(md) < limit else None


def nice_ceil(x: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k that is >= x (x <= 0 -> 1)."""
    if not x or x <= 0:
        return 1
    e = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= x:
            v = m * e
            return int(v) if float(v).is_integer() else v
    return 10 * e


def _fmt(v: float) -> str:
    if isinstance(v, int) or float(v).is_integer():
        n = int(v)
        return f"{n / 1e6:.1f}M" if abs(n) >= 1e6 else f"{n / 1e3:.0f}k" if abs(n) >= 1e4 else str(n)
    return f"{v:.2f}"


# -- compact inline SVG (zero clicks) ---------------------------------------------------------------


def svg_bars(
    values: Sequence[float],
    labels: Sequence[str] | None = None,
    title: str = "",
    w: int = 320,
    h: int = 90,
    ymax: float | None = None,
) -> str:
    """A tiny bar chart as SVG text. A zero value is a 1 px hairline labelled 0 (still visible)."""
    n = max(1, len(values))
    top = ymax if ymax else max([float(v) for v in values] + [0.0]) or 1.0
    y0, y1 = h - (14 if labels else 4), 16  # baseline, top of plot area
    bw = (w - 8) / n
    d = []
    for i, v in enumerate(values):
        bh = max(1, round((float(v) / top) * (y0 - y1))) if v is not None else 0
        d.append(f"M{4 + i * bw + bw * 0.1:.0f} {y0}v-{bh}h{max(1, bw * 0.8):.0f}v{bh}z")
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-size='10'>",
        f"<rect width='{w}' height='{h}' fill='#fff'/>",
        f"<path fill='{BLUE}' d='{''.join(d)}'/>",
        f"<text x='4' y='11'>{_esc(title)}</text>",
    ]
    if labels:
        parts.append(
            "<g text-anchor='middle'>"
            + "".join(
                f"<text x='{4 + (i + 0.5) * bw:.0f}' y='{h - 3}'>{_esc(str(lab)[:10])} {_fmt(values[i])}</text>"
                for i, lab in enumerate(labels)
            )
            + "</g>"
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_line(ys: Sequence[float], title: str = "", w: int = 320, h: int = 90, max_points: int = 40) -> str:
    """A tiny line chart (sparkline) as SVG text, downsampled to `max_points`."""
    ys = [float(y) for y in ys if y is not None and math.isfinite(float(y))]
    if len(ys) > max_points:
        idx = sorted({round(i * (len(ys) - 1) / (max_points - 1)) for i in range(max_points)})
        ys = [ys[i] for i in idx]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    span = (hi - lo) or 1.0
    n = max(1, len(ys) - 1)
    pts = " ".join(f"{4 + i * (w - 8) / n:.0f},{h - 4 - (y - lo) / span * (h - 22):.0f}" for i, y in enumerate(ys))
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' font-size='10'>"
        f"<rect width='{w}' height='{h}' fill='#fff' stroke='#ccc'/>"
        f"<polyline fill='none' stroke='{BLUE}' stroke-width='2' points='{pts}'/>"
        f"<text x='4' y='11'>{_esc(title)}</text></svg>"
    )


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("'", "&#39;")


def bars_inline_md(
    values: Sequence[float], labels: Sequence[str] | None, title: str, alt: str, ymax: float | None = None
) -> str | None:
    """Inline (zero-click) bar chart markdown; without labels if they do not fit; None if nothing fits."""
    md = svg_markdown(svg_bars(values, labels, title, ymax=ymax), alt)
    if md is None and labels:
        md = svg_markdown(svg_bars(values, None, title, ymax=ymax), alt)
    return md


# -- tokenized/dataset: length histogram ------------------------------------------------------------


def histogram_xmax(lengths: Sequence[int]) -> float:
    """Right edge of the x axis: the longest row rounded up to a 1/2/2.5/5 x 10^k value."""
    return nice_ceil(max(lengths)) if len(lengths) else 1


def length_histogram_figure(lengths: Sequence[int], max_length: int):
    """Histogram of tokens per row; the x axis spans 0..max observed (rounded up), and max_length
    is drawn only when it lies inside that view (otherwise named in the title)."""
    plt = _plt()
    lengths = list(lengths)
    xmax = histogram_xmax(lengths)
    fig, ax = plt.subplots(figsize=(6, 3))
    if lengths:
        bins = min(50, max(5, len(set(lengths))))
        ax.hist(lengths, bins=bins, range=(0, xmax), color=BLUE)
    else:
        ax.text(0.5, 0.5, "no rows", transform=ax.transAxes, ha="center")
    ax.set_xlim(0, xmax)
    title = f"{len(lengths)} rows, longest {max(lengths) if lengths else 0} tokens"
    if max_length and max_length <= xmax:
        ax.axvline(max_length, color=RED, linestyle="--", label=f"max_length={max_length}")
        ax.legend(fontsize=8)
    elif max_length:
        title += f" (max_length {max_length} off scale)"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("tokens per row")
    ax.set_ylabel("rows")
    fig.tight_layout()
    return fig


def length_histogram_png(lengths: Sequence[int], max_length: int) -> bytes:
    return figure_png(length_histogram_figure(lengths, max_length))


def length_histogram_inline_md(lengths: Sequence[int], max_length: int, bins: int = 24) -> str | None:
    lengths = list(lengths)
    xmax = histogram_xmax(lengths)
    counts = [0] * bins
    for n in lengths:
        counts[min(bins - 1, int(n * bins / xmax))] += 1
    return bars_inline_md(counts, None, f"tokens per row 0..{_fmt(xmax)}, max_length {max_length}", "tokens per row")


# -- mix/training_mix: rows and characters per source -----------------------------------------------


def bar_chart_figure(
    labels: Sequence[str], panels: Mapping[str, Sequence[float]], colors: Sequence[str] = (BLUE, ORANGE)
):
    """One bar panel per entry of `panels` ({title: values per label}). Every bar carries its value
    as a label; a zero value is drawn as a hairline bar labelled 0, so a zero series stays visible."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.2), squeeze=False)
    for ax, (title, values), color in zip(axes[0], panels.items(), list(colors) * len(panels)):
        vals = [float(v or 0) for v in values]
        top = max(vals + [0.0])
        hair = (top or 1.0) * 0.006
        bars = ax.bar(
            list(labels),
            [v if v > 0 else hair for v in vals],
            color=color,
            edgecolor=["black" if v <= 0 else color for v in vals],
            linewidth=0.8,
        )
        ax.bar_label(bars, labels=[_fmt(v) for v in vals], fontsize=8, padding=2)
        ax.set_ylim(0, (top or 1.0) * 1.15)
        ax.set_title(title, fontsize=9)
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    fig.tight_layout()
    return fig


def bar_chart_png(labels: Sequence[str], panels: Mapping[str, Sequence[float]]) -> bytes:
    return figure_png(bar_chart_figure(labels, panels))


def _mix_panels(report: dict) -> tuple[list[str], dict[str, list[float]]]:
    keys = list(report["sources"])
    ps = report["per_source"]
    return keys, {
        "rows per source (train+test)": [ps[k]["train_rows"] + ps[k]["test_rows"] for k in keys],
        "characters per source (train)": [ps[k]["train_chars"] for k in keys],
    }


def mix_chart_png(report: dict) -> bytes:
    """The realized mix (a `build_mix` report): rows and characters per source."""
    keys, panels = _mix_panels(report)
    return bar_chart_png(keys, panels)


def mix_inline_md(report: dict) -> str | None:
    keys, panels = _mix_panels(report)
    return bars_inline_md(panels["rows per source (train+test)"], keys, "rows per source", "rows per source")


MIX_COLUMNS = [
    ("source", "string", "source key"),
    ("rows", "int", "train + test rows"),
    ("train_rows", "int", ""),
    ("test_rows", "int", ""),
    ("train_chars", "int", "characters in train rows"),
    ("share", "float", "realized share of rows"),
    ("target_share", "float", "configured share (weights)"),
]


def mix_table(report: dict) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """(rows, columns) of the realized mix, for `dg.MetadataValue.table`."""
    ps, shares = report["per_source"], report.get("shares") or {}
    total = sum(ps[k]["train_rows"] + ps[k]["test_rows"] for k in report["sources"]) or 1
    rows = []
    for k in report["sources"]:
        n = ps[k]["train_rows"] + ps[k]["test_rows"]
        rows.append(
            {
                "source": k,
                "rows": n,
                "train_rows": ps[k]["train_rows"],
                "test_rows": ps[k]["test_rows"],
                "train_chars": ps[k]["train_chars"],
                "share": round(n / total, 4),
                "target_share": round(shares[k]["target"], 4) if k in shares else None,
            }
        )
    return rows, MIX_COLUMNS


def mix_sources_rows(report: dict) -> tuple[list[str], list[list]]:
    """(column titles, rows) of the realized mix per source, for a markdown table: origin,
    row counts at each stage, train characters and the quarantine reasons (``reason: n, ...``
    or ``0``)."""
    columns = ["source", "from", "rows in", "after dedup", "train", "test", "train chars", "quarantined"]
    rows: list[list] = []
    for k in report["sources"]:
        s = report["per_source"][k]
        q = ", ".join(f"{r}: {n}" for r, n in s["quarantined"].items()) or "0"
        rows.append(
            [k, s["origin"], s["rows_in"], s["rows_after_dedup"], s["train_rows"], s["test_rows"], s["train_chars"], q]
        )
    return columns, rows


# -- sources, regenerated, hidden states: preview tables --------------------------------------------

SOURCE_PREVIEW_CHARS = 80


def _short(value: Any, limit: int = SOURCE_PREVIEW_CHARS) -> str:
    value = " ".join(str(value).split())
    return value if len(value) <= limit else value[: limit - 1] + "…"


def source_preview_rows(rows: list[dict]) -> tuple[list[str], list[list]]:
    """(column titles, rows) previewing source rows (SpecForge conversation rows or
    pre-formatted ``{id, text}`` rows): id, number of messages (or ``text``), first user and
    first assistant message, whitespace collapsed and cut to `SOURCE_PREVIEW_CHARS` characters."""
    out: list[list] = []
    for r in rows:
        conv = r.get("conversations")
        if conv is None:
            out.append([_short(r["id"]), "text", _short(r.get("text", "")), ""])
            continue
        user = next((m["content"] for m in conv if m["role"] == "user"), "")
        assistant = next((m["content"] for m in conv if m["role"] == "assistant"), "")
        out.append([_short(r["id"]), len(conv), _short(user), _short(assistant)])
    return ["id", "turns", "first user message", "first assistant message"], out


def turns_histogram_rows(hist: Mapping[Any, int]) -> tuple[list[str], list[list]]:
    """(column titles, rows) of a {messages per row: rows} histogram."""
    return ["messages per row", "rows"], [[k, v] for k, v in hist.items()]


def regenerated_preview_rows(path: str | Path, n: int = 3, width: int = 300) -> tuple[list[str], list[list]]:
    """(column titles, rows) previewing the first `n` rows of a regenerated JSONL file: id,
    status (``unchanged`` for passthrough rows) and the last assistant answer (else the row's
    text) cut to `width` characters. An unreadable file or a bad line ends the preview there."""
    out: list[list] = []
    try:
        with open(path, encoding="utf-8") as f:
            for _, line in zip(range(n), f):
                row = json.loads(line)
                conv = row.get("conversations") or []
                ans = next(
                    (m.get("content", "") for m in reversed(conv) if m.get("role") == "assistant"), row.get("text", "")
                )
                out.append([row.get("id"), row.get("status", "unchanged"), str(ans)[:width]])
    except (OSError, ValueError):
        pass
    return ["id", "status", "last assistant answer"], out


def shard_rows(shards: list[dict], limit: int = 50) -> tuple[list[str], list[list]]:
    """(column titles, rows) of the first `limit` hidden-state shards: file, rows, tokens, bytes."""
    return ["shard", "rows", "tokens", "bytes"], [
        [s["file"], s["rows"], s["tokens"], s["bytes"]] for s in shards[:limit]
    ]


# -- markdown text (the one implementation; `assets/_metadata.py` wraps it as metadata) ---------

_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_BACKTICKS = re.compile(r"`+")


def md_cell(value: Any) -> str:
    """One markdown table cell: `str(value)` with `|` escaped and line breaks turned into spaces
    (either would end the cell or the row early)."""
    return _LINE_BREAK.sub(" ", str(value).replace("|", "\\|"))


def markdown_table_text(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table: a header of `columns`, a `|---|` rule, one line per row
    (each a sequence of `len(columns)` values; `str()` of each, escaped by `md_cell`). No rows:
    the header alone."""
    lines = ["| " + " | ".join(md_cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["|" + "|".join(f" {md_cell(v)} " for v in row) + "|" for row in rows]
    return "\n".join(lines)


def code_block_text(text: str, lang: str = "") -> str:
    """`text` verbatim in a fenced code block (CommonMark: the fence is longer than any run of
    backticks inside `text`, so the text cannot close it); `lang`: the info string."""
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def metrics_table(
    history: Sequence[Mapping[str, Any]], max_rows: int = 20
) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """(rows, columns) of the training history (`load_metrics` entries: step, loss, acc per TTT
    position, lr, tokens_per_s), thinned to about `max_rows` rows (every n-th, always the last):
    step, loss (4 decimals), acc0..acc{k-1} (3 decimals), lr (3 significant digits), tokens/s
    (whole numbers)."""
    k = len(history[-1].get("acc") or []) if history else 0
    columns = [
        ("step", "int", "optimizer step"),
        ("loss", "float", "weighted TTT loss"),
        *((f"acc{i}", "float", f"TTT position {i} top-1 accuracy") for i in range(k)),
        ("lr", "float", "learning rate"),
        ("tokens_per_s", "float", "training throughput"),
    ]
    if not history:
        return [], columns
    every = max(1, len(history) // max_rows)
    picked = list(history[::every])
    if picked[-1] is not history[-1]:
        picked.append(history[-1])
    rows = []
    for r in picked:
        acc = (r.get("acc") or [])[:k]
        rows.append(
            {
                "step": r.get("step"),
                "loss": round(float(r.get("loss", float("nan"))), 4),
                **{f"acc{i}": round(float(a), 3) for i, a in enumerate(acc)},
                "lr": float(f"{float(r.get('lr', 0)):.3g}"),
                "tokens_per_s": round(float(r.get("tokens_per_s", 0))),
            }
        )
    return rows, columns


# -- models/draft_model: loss curve -----------------------------------------------------------------


def load_metrics(path: str | Path) -> list[dict]:
    """The trainer's logged history: `metrics.json` ({"final", "history"}), `metrics.jsonl` (one
    history entry per line) or a folder holding either (draft folder or training_state/); [] when absent."""
    p = Path(path)
    if not p.exists():
        return []
    if p.is_dir():
        for cand in (p / "metrics.json", p / "training_state" / "metrics.jsonl", p / "metrics.jsonl"):
            if cand.exists():
                return load_metrics(cand)
        return []
    if p.suffix == ".jsonl":
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    return _history(json.loads(p.read_text()))


def _history(metrics: Any) -> list[dict]:
    if isinstance(metrics, dict):
        hist = list(metrics.get("history") or [])
        if not hist and isinstance(metrics.get("final"), dict) and "loss" in metrics["final"]:
            hist = [metrics["final"]]
        return hist
    return list(metrics or [])


def loss_curve_figure(metrics: Any):
    """Loss (left) and per-position TTT accuracy (right, when logged) vs optimizer step.
    `metrics`: the content of metrics.json, or a list of history entries."""
    plt = _plt()
    hist = [h for h in _history(metrics) if h.get("loss") is not None]
    accs = [h.get("acc") or [] for h in hist]
    k = max((len(a) for a in accs), default=0)
    fig, axes = plt.subplots(1, 2 if k else 1, figsize=(9 if k else 5, 3.2), squeeze=False)
    steps = [h.get("step", i + 1) for i, h in enumerate(hist)]
    ax = axes[0][0]
    ax.plot(steps, [h["loss"] for h in hist], marker="o" if len(hist) < 30 else None, color=BLUE, label="loss")
    if not hist:
        ax.text(0.5, 0.5, "no logged steps", transform=ax.transAxes, ha="center")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"loss {hist[0]['loss']:.3f} -> {hist[-1]['loss']:.3f}" if hist else "loss", fontsize=9)
    if k:
        ax2 = axes[0][1]
        for j in range(k):
            ax2.plot(
                steps,
                [a[j] if j < len(a) else float("nan") for a in accs],
                marker="o" if len(hist) < 30 else None,
                label=f"position {j + 1}",
            )
        ax2.set_ylim(0, 1.02)
        ax2.set_xlabel("step")
        ax2.set_ylabel("TTT accuracy")
        ax2.set_title("accuracy per draft position", fontsize=9)
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return fig


def loss_curve_png(metrics: Any) -> bytes:
    return figure_png(loss_curve_figure(metrics))


def loss_curve_inline_md(metrics: Any) -> str | None:
    hist = [h for h in _history(metrics) if h.get("loss") is not None]
    if not hist:
        return None
    title = f"loss {hist[0]['loss']:.3f} -> {hist[-1]['loss']:.3f} (step {hist[0].get('step')}..{hist[-1].get('step')})"
    return svg_markdown(svg_line([h["loss"] for h in hist], title), "loss curve")


# -- models/draft_evaluation: acceptance ------------------------------------------------------------


def acceptance_series(report: dict) -> dict[str, list[float]]:
    """{trained, untrained[, previous]} per-position acceptance from an evaluation report."""
    s = {
        "trained": list(report.get("per_position_acceptance") or []),
        "untrained": list(report.get("untrained_per_position_acceptance") or []),
    }
    prev = (report.get("previous") or {}).get("per_position_acceptance")
    if prev:
        s["previous"] = list(prev)
    return s


def acceptance_per_position_figure(series: Mapping[str, Sequence[float]], k: int, title: str = ""):
    """Grouped bars: acceptance rate per draft position for each series; zeros drawn as hairlines."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=110)
    width = 0.8 / max(1, len(series))
    xs = list(range(1, k + 1))
    for i, (name, vals) in enumerate(series.items()):
        vals = [float(v) for v in list(vals)[:k]]
        bars = ax.bar(
            [x + (i - (len(series) - 1) / 2) * width for x in xs[: len(vals)]],
            [v if v > 0 else 0.006 for v in vals],
            width=width,
            label=name,
        )
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in vals], fontsize=6, padding=1)
    ax.set_xticks(xs)
    ax.set_xlabel("draft position")
    ax.set_ylabel("acceptance rate (given earlier accepted)")
    ax.set_ylim(0, 1.1)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _acceptance_title(report: dict) -> str:
    return (
        f"acceptance length {report['acceptance_length']:.2f} vs untrained "
        f"{report['untrained_acceptance_length']:.2f} (k={report['k']})"
    )


def acceptance_per_position_png(report: dict) -> bytes:
    """The evaluation's per-position acceptance plot (trained, untrained and, when the report
    has one, previous draft; k bars each) as PNG bytes at 110 dpi: `per_position_acceptance.png`
    beside report.json."""
    return figure_png(
        acceptance_per_position_figure(acceptance_series(report), int(report["k"]), _acceptance_title(report)), dpi=110
    )


def acceptance_inline_md(report: dict) -> str | None:
    vals = list(report.get("per_position_acceptance") or [])
    return bars_inline_md(
        vals, [f"pos {i + 1}" for i in range(len(vals))], _acceptance_title(report), "acceptance per position", ymax=1.0
    )


PER_POSITION_COLUMNS = [
    ("position", "int", "draft position"),
    ("trained", "float", "P(accepted | earlier accepted), trained draft"),
    ("untrained", "float", "same, untrained draft"),
    ("previous", "float", "same, previous draft"),
]


def per_position_table(report: dict) -> tuple[list[dict], list[tuple[str, str, str]]]:
    s = acceptance_series(report)
    cols = PER_POSITION_COLUMNS if "previous" in s else PER_POSITION_COLUMNS[:3]
    rows = []
    for i in range(int(report.get("k") or len(s["trained"]))):
        r: dict = {"position": i + 1}
        for name in s:
            r[name] = round(float(s[name][i]), 4) if i < len(s[name]) else None
        rows.append(r)
    return rows, cols


PER_CATEGORY_COLUMNS = [
    ("category", "string", "row `category`, else its `source`"),
    ("n_prompts", "int", "held-out prompts"),
    ("acceptance_length", "float", "trained draft, tokens per target forward"),
    ("untrained_acceptance_length", "float", "untrained draft"),
    ("improvement", "float", "trained - untrained"),
]


def per_category_table(report: dict) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """(rows, columns) of `report["per_category"]`, largest category first, for
    `dg.MetadataValue.table(records=[dg.TableRecord(r) for r in rows],
    schema=dg.TableSchema(columns=[dg.TableColumn(n, t, description=d) for n, t, d in columns]))`."""
    rows = []
    for cat, v in sorted((report.get("per_category") or {}).items(), key=lambda kv: (-kv[1]["n"], kv[0])):
        a, u = v.get("acceptance_length"), v.get("untrained_acceptance_length")
        rows.append(
            {
                "category": str(cat),
                "n_prompts": int(v["n"]),
                "acceptance_length": None if a is None else round(float(a), 4),
                "untrained_acceptance_length": None if u is None else round(float(u), 4),
                "improvement": None if a is None or u is None else round(float(a) - float(u), 4),
            }
        )
    return rows, PER_CATEGORY_COLUMNS


SETS_COLUMNS = [
    ("set", "string", "evaluation set (evaluation.sets)"),
    ("k", "int", "draft tokens per round"),
    ("category", "string", "row category ((all) = the whole set)"),
    ("n", "int", "prompts"),
    ("acceptance_length", "float", "trained draft: tokens per target forward"),
    ("untrained", "float", "untrained draft"),
    ("previous", "float", "previous draft version"),
]


def sets_table(report: dict) -> tuple[list[dict], list[tuple[str, str, str]]]:
    """(rows, columns): one row per (set, k, category), the set's overall row first as `(all)`,
    then its categories, largest first."""

    def row(name: str, k: str, category: str, n: int, e: dict) -> dict:
        return {
            "set": name,
            "k": int(k),
            "category": category,
            "n": int(n),
            "acceptance_length": e["acceptance_length"],
            "untrained": e["untrained_acceptance_length"],
            "previous": e.get("previous_acceptance_length"),
        }

    rows = []
    for name, by_k in (report.get("sets") or {}).items():
        for k, e in by_k.items():
            rows.append(row(name, k, "(all)", e["num_prompts"], e))
            for cat, c in sorted(e.get("per_category", {}).items(), key=lambda kv: (-kv[1]["n"], kv[0])):
                rows.append(row(name, k, str(cat), c["n"], c))
    return rows, SETS_COLUMNS
