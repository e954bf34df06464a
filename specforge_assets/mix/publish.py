"""The mix as the asset publishes it: which settings and sources it is built from, and the
versioned publish (build in staging, chart, manifest, `versions/mix/<v>/`, then current). No
Dagster import; `assets/mix.py` maps it."""

from __future__ import annotations

from itertools import islice
from pathlib import Path

from ..errors import UserError
from ..fileio import iter_jsonl, staged_dir, write_manifest
from ..preview import truncate
from ..versioned import prune_versions, publish_version
from .chart import bar_chart_png
from .mix import build_mix, discover_sources, mix_config

VERSIONS_KEEP = 10  # immutable mix versions kept under <root>/versions/mix (the current one always)


def mix_sources(root: Path, partitions: list[str]) -> tuple[list[str], list[str]]:
    """(the source keys to mix, the partitions that have no data under `root`): the sources
    with data on disk that are registered partitions (all of them when no partition is
    registered, e.g. data prepared outside Dagster). Raises UserError when there is none."""
    on_disk = discover_sources(root)
    keys = [k for k in on_disk if not partitions or k in partitions] or on_disk
    absent = [k for k in partitions if k not in on_disk]
    if not keys:
        raise UserError(
            f"no source data under {root}/sources or {root}/regenerated: materialize sources/conversations first"
        )
    return keys, absent


def publish_mix(root: Path, raw: dict, keys: list[str], out: Path, inputs: list[dict]) -> dict:
    """Build the mix of `keys` with settings `raw` in a staging folder beside `out` (rows,
    `mix.png`, manifest.json with `inputs`), keep it as `<root>/versions/mix/<version>/`, publish
    it as `out` in one step and prune old versions. Returns `{report, version, config,
    version_dir, pruned, preview}` (preview: the first 3 train rows, truncated to a bounded size
    whatever the rows' size)."""
    cfg = mix_config(raw)
    with staged_dir(out) as tmp:
        report = build_mix(root, cfg, keys, out_dir=tmp)
        version = report["content_version"]
        bar_chart_png(report, tmp / "mix.png")
        write_manifest(tmp, asset="mix/training_mix", data_version=version, report=report, inputs=inputs)
        vdir = publish_version(tmp, root, "mix", version)  # first the immutable version, then "current"
    pruned = prune_versions(root, "mix", VERSIONS_KEEP, protect={version})
    preview = [truncate(row) for row in islice(iter_jsonl(vdir / "train.jsonl"), 3)]
    return {
        "report": report,
        "version": version,
        "config": cfg,
        "version_dir": vdir,
        "pruned": pruned,
        "preview": preview,
    }
