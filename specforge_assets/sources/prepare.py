"""SpecForge-compatible preset preparation (`specforge-assets prepare`).

Same rows, same bytes as SpecForge's `scripts/prepare_data.py` for the same raw rows, with
three differences: `--data-path` works for every preset (a file or a folder per config), a
failing row never leaves a half-written file behind (writes are atomic), and SciQ is seeded.
The asset `sources/conversations` reads presets through the same functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Callable, Iterator

from ..fileio import atomic_write
from . import fast, loaders
from .converters import build_converter
from .errors import RowError, RowFailure, SourceError
from .config import get_preset
from .presets import Preset

EVAL_TEST_SIZE = 0.05
EVAL_SEED = 42


def dumps(row) -> str:
    """SpecForge's line format: `json.dumps(row, ensure_ascii=False)` (default separators)."""
    return json.dumps(row, ensure_ascii=False)


def split_indices(n: int, test_size: float = EVAL_TEST_SIZE, seed: int = EVAL_SEED) -> tuple[list[int], list[int]]:
    """`datasets.Dataset.train_test_split(test_size, seed)` index for index: (train, test)."""
    import numpy as np

    n_test = ceil(test_size * n)
    n_train = n - n_test
    if n_train <= 0:
        raise SourceError(
            f"cannot split {n} rows into train/test with test_size={test_size}: the train set would be empty"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return perm[n_test:].tolist(), perm[:n_test].tolist()


DATASETS_CACHE = ".hf-datasets-cache"  # the datasets library's cache, under the data root


def hub_offline_setting(override: bool | None, config: dict | None) -> bool | None:
    """Whether to read the hub offline, for the loaders' `offline=`: True when `override` (the
    CLI's ``--offline``; None for the asset) is set or sources.yaml
    (`config`, parsed; None: none given, nothing read) says ``hub: {offline: true}``; else None,
    so the loaders follow HF_HUB_OFFLINE / HF_DATASETS_OFFLINE (`loaders.offline_requested`)."""
    from .config import hub_offline

    return True if override or (config is not None and hub_offline(config)) else None


def datasets_cache_dir(override: str | None, root: Path) -> str:
    """The datasets library's cache folder: `override` (`SourcesSettings.hf_cache_dir`) when set,
    else `<root>/.hf-datasets-cache` (`root`: the data root)."""
    return override or str(Path(root) / DATASETS_CACHE)


@dataclass
class InputInfo:
    """What was read: files (for content hashing) or hub fingerprints, in read order."""

    files: list[Path] = field(default_factory=list)
    fingerprints: list[str] = field(default_factory=list)


def iter_preset_batches(
    preset: Preset,
    *,
    data_path: str | Path | None = None,
    sample_size: int | None = None,
    subset: str | None = None,
    offline: bool | None = None,
    cache_dir: str | None = None,
    what: str | None = None,
    info: InputInfo | None = None,
    root: Path | None = None,
) -> Iterator[loaders.RawBatch]:
    """Raw batches of the preset's parts, concatenated in order, first `sample_size` rows."""
    what = what or f"preset {preset.name!r}"
    parts = preset.select_parts(subset)
    info = info if info is not None else InputInfo()
    if data_path is not None:
        path = loaders.resolve_data_path(data_path, root)
        plan = loaders.discover_files(path, parts, what)
        info.files.extend(f for _, files in plan for f in files)

        def read_file(item, limit):
            part, f = item
            for b in loaders.read_preset_file(f, limit, cache_dir):
                b.part = getattr(part, "name", None)
                yield b

        yield from loaders.read_limited([(part, f) for part, files in plan for f in files], read_file, sample_size)
        return

    def read_part(part, limit):
        batches, fp = loaders.read_hub(
            part.hub_id,
            part.config,
            part.split,
            what=what,
            limit=limit,
            offline=offline,
            cache_dir=cache_dir,
            part=part.name,
        )
        info.fingerprints.append(fp)
        return batches

    yield from loaders.read_limited(parts, read_part, sample_size)


def convert_strict(preset: Preset, batches: Iterator[loaders.RawBatch]) -> tuple[list[str], int]:
    """Convert every row; the first bad row raises `RowFailure` naming file, row and field."""
    convert = build_converter(preset.converter, preset.options)
    lines: list[str] = []
    skipped = 0
    index = 0
    for b in batches:
        fast_items = (
            fast.convert_arrow(preset.converter, preset.options, b.arrow, index) if b.arrow is not None else None
        )
        if fast_items is not None:
            items, s = fast_items
            for item, rownum in zip(items, b.rownums):
                if isinstance(item, RowError):
                    raise RowFailure(f"preset {preset.name!r}: " + item.located(b.file, rownum))
                lines.append(fast.line_from_messages(item[0], item[3]))
            skipped += s
            index += len(b)
            continue
        for raw, rownum in zip(b.rows, b.rownums):
            if isinstance(raw, loaders.BadRow):
                raise RowFailure(f"preset {preset.name!r}: " + RowError(raw.reason, raw.field).located(b.file, rownum))
            try:
                out, s = convert(raw, index)
            except RowError as e:
                raise RowFailure(f"preset {preset.name!r}: " + e.located(b.file, rownum)) from e
            lines.append(dumps(out))
            skipped += s
            index += 1
    return lines, skipped


def write_lines(path: Path, lines: list[str]) -> None:
    with atomic_write(path) as f:
        for s in range(0, len(lines), 8192):
            f.write("\n".join(lines[s : s + 8192]))
            f.write("\n")


def prepare_preset(
    dataset: str,
    output_path: str | Path,
    *,
    data_path: str | Path | None = None,
    sample_size: int | None = None,
    split_eval: bool = False,
    opc_subset: str | None = None,
    config: dict | None = None,
    offline: bool | None = None,
    cache_dir: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Write `<output>/<dataset>_train.jsonl` (+ `_test.jsonl`) exactly like SpecForge."""
    if sample_size is not None and sample_size <= 0:
        raise SourceError(f"--sample-size must be > 0, got {sample_size}")
    preset = get_preset(dataset, config)
    if opc_subset is not None and preset.subset is None:
        raise SourceError(f"--opc-subset only applies to presets with subsets (opc), not {dataset!r}")
    out_dir = Path(output_path)
    train_path = out_dir / f"{dataset}_train.jsonl"
    test_path = out_dir / f"{dataset}_test.jsonl"
    if train_path.exists():
        log(f"Dataset already exists at {train_path}; skipping conversion (delete it to prepare again).")
        return {"skipped": True, "train": str(train_path)}
    batches = iter_preset_batches(
        preset, data_path=data_path, sample_size=sample_size, subset=opc_subset, offline=offline, cache_dir=cache_dir
    )
    lines, skipped = convert_strict(preset, batches)
    if not lines:
        raise SourceError(f"preset {dataset!r}: the input has no rows; nothing written")
    if skipped:
        log(f"Skipped {skipped} unsupported messages while processing {dataset}.")
    result = {"skipped": False, "skipped_messages": skipped}
    if split_eval:
        train_idx, test_idx = split_indices(len(lines))
        train_lines = [lines[i] for i in train_idx]
        test_lines = [lines[i] for i in test_idx]
        # test first: the train file is the "done" marker SpecForge (and we) look at
        write_lines(test_path, test_lines)
        write_lines(train_path, train_lines)
        log(f"Saved {dataset} test data to {test_path}.")
        result.update(test=str(test_path), test_rows=len(test_lines))
    else:
        train_lines = lines
        write_lines(train_path, train_lines)
    log(f"Saved {dataset} training data to {train_path}.")
    result.update(train=str(train_path), train_rows=len(train_lines))
    return result
