"""Fixtures of the sources layer tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

PRESET_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sources" / "presets"


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path, monkeypatch):
    """`datasets` writes its Arrow cache under tmp, never into ~/.cache; the hub is never contacted."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")


def preset_names() -> list[str]:
    return sorted(p.name for p in PRESET_FIXTURES.iterdir() if p.is_dir())


def preset_runs() -> list[tuple[str, dict]]:
    out = []
    for name in preset_names():
        cases = json.loads((PRESET_FIXTURES / name / "cases.json").read_text())
        out += [(name, run) for run in cases["runs"]]
    return out


def preset_data_path(preset: str, work: Path) -> Path:
    """The fixture's raw files as a `--data-path`: the file itself for one source, else a
    folder `<work>/<config>/train-00000-of-00001.parquet` per config (the hub's shard layout)."""
    d = PRESET_FIXTURES / preset
    raws = json.loads((d / "cases.json").read_text())["raw_files"]
    if len(raws) == 1:
        return d / raws[0]["file"]
    root = work / f"{preset}-raw"
    for r in raws:
        config = r["config"] or r["hub_dataset"].split("/")[-1]
        (root / config).mkdir(parents=True, exist_ok=True)
        shutil.copy(d / r["file"], root / config / "train-00000-of-00001.parquet")
    return root


def write_jsonl(path: Path, rows: list, raw_lines: dict[int, bytes] | None = None) -> Path:
    """Rows as JSON Lines; `raw_lines` puts verbatim bytes at given positions (bad lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r, ensure_ascii=False).encode() for r in rows]
    for pos, raw in sorted((raw_lines or {}).items()):
        lines.insert(pos, raw)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path
