"""The mix chart file (rows and characters per source), drawn by `specforge_assets.charts`:
every bar carries its value and a source with zero rows is a labelled hairline, not a missing bar."""

from __future__ import annotations

from pathlib import Path

from ..charts import mix_chart_png
from ..fileio import atomic_write


def bar_chart_png(report: dict, path: Path) -> Path:
    """Write the realized-mix chart (rows and characters per source) of a `build_mix` report to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(mix_chart_png(report))
    return path
