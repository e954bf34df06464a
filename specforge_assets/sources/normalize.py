"""Build one source partition: raw rows → `<root>/sources/<key>/` (the asset's engine).

    train.jsonl      SpecForge rows {"id": str, "conversations": [{"role","content"}]} or {"id","text"}
    test.jsonl       with split_eval: SpecForge's 5% split (seed 42) of the kept rows
    quarantine.jsonl every rejected raw row: source, file, row, field, reason, raw
    manifest.json    inputs + content hashes, counts, stats, cache key, data version

Presets go through the same converters as `specforge-assets prepare`; each converted row is then
normalised (str id, role/content messages) and checked with SpecForge's conversation validator.
Nothing is dropped silently: rows_in = rows_train + rows_test + quarantined, always.
The cache key (raw input content + source spec + code version) lets an unchanged source skip
all work and report the same data version.
"""

from __future__ import annotations

import json
from array import array
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from .. import paths
from ..preview import truncate
from ..fileio import atomic_write, read_manifest, sha256_file, sha256_files, sha256_json, staged_dir, write_manifest
from . import fast, loaders
from .config import SourceSpec, get_preset
from .converters import build_converter
from .errors import RowError, SourceError
from .formats import (
    dropped_fields,
    normalize_output_row,
    parse_custom_row,
    resolved_format,
    validate_messages,
    validate_row,
)
from .prepare import InputInfo, dumps, iter_preset_batches, split_indices, write_lines
from .presets import Preset

CODE_VERSION = "sources-v1"
_ALTERNATING = ["user", "assistant"] * 4096


def _all_nonblank(contents: list) -> bool:
    """Every content a non-blank str (C-level map; a non-str makes str.strip raise)."""
    try:
        return all(map(str.strip, contents))
    except TypeError:
        return False


PREVIEW_ROWS = 5


@dataclass
class BuildResult:
    key: str
    out_dir: Path
    cached: bool
    manifest: dict

    @property
    def data_version(self) -> str:
        return self.manifest["data_version"]


# ----------------------------------------------------------------------------- inputs


def _preset_for(spec: SourceSpec, config: dict | None) -> Preset:
    preset = get_preset(spec.preset, config)
    if spec.hub_id:  # a mirror / local hub-layout folder instead of the preset's hub id
        from dataclasses import replace

        preset = replace(preset, parts=tuple(replace(p, hub_id=spec.hub_id) for p in preset.parts))
    return preset


def _custom_files(spec: SourceSpec, root: Path | None) -> list[Path]:
    path = loaders.resolve_data_path(spec.data_path, root)
    what = f"source {spec.key!r}"
    if not path.exists():
        raise SourceError(f"{what}: data path {path} does not exist")
    if path.is_file():
        if path.suffix.lower() not in loaders.SUFFIXES:
            raise SourceError(f"{what}: {path} is not a .parquet, .jsonl or .json file")
        loaders._check_not_empty([path], what)
        return [path]
    files = loaders._data_files(path, spec.split)
    if not files:
        raise SourceError(f"{what}: no .parquet/.jsonl/.json files in {path}")
    loaders._check_not_empty(files, what)
    return files


def plan_local_files(spec: SourceSpec, root: Path | None, config: dict | None) -> list[Path] | None:
    """The local files a source reads (None for hub sources)."""
    if not spec.data_path:
        return None
    if spec.preset:
        preset = _preset_for(spec, config)
        parts = preset.select_parts(spec.opc_subset)
        plan = loaders.discover_files(loaders.resolve_data_path(spec.data_path, root), parts, f"source {spec.key!r}")
        return [f for _, files in plan for f in files]
    return _custom_files(spec, root)


def _custom_batches(spec: SourceSpec, root, offline, cache_dir, info: InputInfo) -> Iterator[loaders.RawBatch]:
    if spec.data_path:
        files = _custom_files(spec, root)
        info.files.extend(files)
        yield from loaders.read_limited(files, loaders.read_strict, spec.sample_size)
        return
    batches, fp = loaders.read_hub(
        spec.hub_id,
        spec.config,
        spec.split,
        what=f"source {spec.key!r}",
        limit=spec.sample_size,
        offline=offline,
        cache_dir=cache_dir,
    )
    info.fingerprints.append(fp)
    yield from batches


# ----------------------------------------------------------------------------- build


class _Collector:
    """Kept rows (as JSON lines), quarantine records and running statistics."""

    def __init__(self, key: str, dedup: bool):
        self.key = key
        self.dedup = dedup
        self.kept: list[str] = []
        self.quarantine: list[str] = []
        self.reasons: Counter = Counter()
        self.seen: dict[str, tuple[str, int]] = {}
        self.turns: Counter = Counter()
        self.chars = array("q")
        self.preview: list[dict] = []
        self.rows_in = 0
        self.skipped_messages = 0
        self.prompt_only = 0  # rows with user turns only (answers come from regeneration)
        self.row_system = 0  # rows whose row-level `system` became the leading system message
        self.dropped_fields: Counter = Counter()  # {field: kept rows in which it was not carried}
        self.kind: str | None = None  # "conversations" | "text": one kind per source

    def reject(self, file: str, row: int, reason: str, field: str | None, raw) -> None:
        self.reasons[reason.split(":")[0][:80]] += 1
        rec = {"source": self.key, "file": file, "row": row, "field": field, "reason": reason, "raw": raw}
        self.quarantine.append(json.dumps(rec, ensure_ascii=False, default=str))

    def keep(self, row: dict, file: str, rownum: int, raw) -> bool:
        """Keep `row` (True), or quarantine it as a format mix / duplicate id (False)."""
        kind = "text" if "conversations" not in row else "conversations"
        if self.kind is None:
            self.kind = kind
        elif kind != self.kind:
            self.reject(
                file, rownum, f"{kind} row in a source whose rows are {self.kind} (one format per source)", None, raw
            )
            return False
        rid = row["id"]
        if self.dedup:
            first = self.seen.get(rid)
            if first is not None:
                self.reject(file, rownum, f"duplicate id {rid!r} (first seen in {first[0]} row {first[1]})", "id", raw)
                return False
            self.seen[rid] = (file, rownum)
        conv = row.get("conversations")
        if conv is None:
            self.turns["text"] += 1
            self.chars.append(len(row["text"]))
        else:
            self.turns[len(conv)] += 1
            self.chars.append(sum(len(m["content"]) for m in conv))
            if all(m["role"] != "assistant" for m in conv):
                self.prompt_only += 1
        if len(self.preview) < PREVIEW_ROWS:
            self.preview.append(truncate(row))
        self.kept.append(dumps(row))
        return True

    def keep_messages(self, rid: str, roles: list, contents: list, msgs: list, file: str, rownum: int, raw_of) -> None:
        """`keep` for the columnar path: no dict per row (bytes identical to `dumps(row)`)."""
        if self.kind is None:
            self.kind = "conversations"
        elif self.kind != "conversations":
            self.reject(
                file,
                rownum,
                f"conversations row in a source whose rows are {self.kind} (one format per source)",
                None,
                raw_of(),
            )
            return
        if self.dedup:
            first = self.seen.get(rid)
            if first is not None:
                self.reject(
                    file, rownum, f"duplicate id {rid!r} (first seen in {first[0]} row {first[1]})", "id", raw_of()
                )
                return
            self.seen[rid] = (file, rownum)
        self.turns[len(roles)] += 1
        self.chars.append(sum(map(len, contents)))
        if len(self.preview) < PREVIEW_ROWS:
            self.preview.append(
                truncate({"id": rid, "conversations": [{"role": r, "content": c} for r, c in zip(roles, contents)]})
            )
        self.kept.append(fast.line_from_messages(rid, msgs))


def _process(spec: SourceSpec, batches: Iterator[loaders.RawBatch], preset: Preset | None) -> _Collector:
    col = _Collector(spec.key, spec.dedup_ids)
    convert = build_converter(preset.converter, preset.options) if preset else None
    fmt = spec.format
    index = 0
    for b in batches:
        file = b.file
        fast_items = (
            fast.convert_arrow(preset.converter, preset.options, b.arrow, index)
            if convert is not None and b.arrow is not None
            else None
        )
        if fast_items is not None:
            items, skipped = fast_items
            col.skipped_messages += skipped
            for k, (item, rn) in enumerate(zip(items, b.rownums)):
                col.rows_in += 1
                raw_of = lambda b=b, k=k: b.rows[k]
                if isinstance(item, RowError):
                    col.reject(file, rn, item.reason, item.field, raw_of())
                    continue
                rid, roles, contents, msgs = item
                n = len(roles)
                # fast accept: user/assistant alternation from user, non-blank string contents;
                # anything else gets the full validator (and its precise reason)
                if not (rid and n and roles == _ALTERNATING[:n] and _all_nonblank(contents)):
                    try:
                        if not rid:
                            raise RowError(f"id must be a non-empty string or integer, got {rid!r}", "id")
                        validate_messages(roles, contents)
                    except RowError as e:
                        col.reject(file, rn, e.reason, e.field, raw_of())
                        continue
                col.keep_messages(rid, roles, contents, msgs, file, rn, raw_of)
            index += len(b)
            continue
        for raw, rn in zip(b.rows, b.rownums):
            col.rows_in += 1
            i = index
            index += 1
            if isinstance(raw, loaders.BadRow):
                col.reject(file, rn, raw.reason, raw.field, raw.raw)
                continue
            try:
                if convert is not None:
                    out, skipped = convert(raw, i)
                    col.skipped_messages += skipped
                    row = normalize_output_row(out)
                    validate_row(row)
                else:
                    row = parse_custom_row(raw, fmt)
                    validate_row(row, prompt_only=resolved_format(raw, fmt) == "prompts")
            except RowError as e:
                col.reject(file, rn, e.reason, e.field, raw)
                continue
            if col.keep(row, file, rn, raw) and convert is None:
                if isinstance(raw.get("system"), str) and raw["system"].strip():
                    col.row_system += 1
                col.dropped_fields.update(dropped_fields(raw, fmt))
    return col


def _percentile(sorted_vals, q: float) -> int:
    if not sorted_vals:
        return 0
    return int(sorted_vals[min(len(sorted_vals) - 1, int(q * (len(sorted_vals) - 1) + 0.5))])


def _stats(col: _Collector) -> dict:
    vals = sorted(col.chars)
    n = len(vals)
    return {
        "turns_histogram": {
            str(k): v for k, v in sorted(col.turns.items(), key=lambda kv: (isinstance(kv[0], str), kv[0]))
        },
        "chars": {
            "min": vals[0] if n else 0,
            "mean": round(sum(vals) / n, 1) if n else 0,
            "p50": _percentile(vals, 0.5),
            "p95": _percentile(vals, 0.95),
            "max": vals[-1] if n else 0,
        },
        "quarantine_reasons": dict(col.reasons.most_common(20)),
    }


def _cache_key(spec: SourceSpec, input_hash: str) -> str:
    return sha256_json({"code_version": CODE_VERSION, "spec": spec.identity(), "input": input_hash})


def _cached(out_dir: Path, cache_key: str) -> dict | None:
    """The manifest when the outputs on disk are exactly those it describes for this key."""
    try:
        manifest = read_manifest(out_dir)
    except (OSError, json.JSONDecodeError):
        return None
    if not manifest or manifest.get("cache_key") != cache_key:
        return None
    for name, meta in (manifest.get("files") or {}).items():
        p = out_dir / name
        if not p.exists() or p.stat().st_size != meta.get("bytes") or sha256_file(p) != meta.get("sha256"):
            return None
    return manifest


def build_source(
    spec: SourceSpec,
    root: Path | None = None,
    *,
    config: dict | None = None,
    offline: bool | None = None,
    cache_dir: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> BuildResult:
    root = Path(root) if root is not None else paths.data_root()
    out_dir = paths.layer_dir("sources", spec.key, root=root)
    preset = _preset_for(spec, config) if spec.preset else None

    local = plan_local_files(spec, root, config)
    info = InputInfo()
    if local is not None:
        cache_key = _cache_key(spec, sha256_files(local))
        if not force and (m := _cached(out_dir, cache_key)) is not None:
            log(f"source {spec.key!r}: input unchanged (cache key {cache_key[:12]}), reusing {out_dir}")
            return BuildResult(spec.key, out_dir, True, m)

    if preset is not None:
        batches = iter_preset_batches(
            preset,
            data_path=spec.data_path,
            sample_size=spec.sample_size,
            subset=spec.opc_subset,
            offline=offline,
            cache_dir=cache_dir,
            what=f"source {spec.key!r}",
            info=info,
            root=root,
        )
    else:
        batches = _custom_batches(spec, root, offline, cache_dir, info)
    # Hub sources: datasets loads (from its cache when it can) before we know the fingerprint.
    batches = iter(batches)
    first = next(batches, None)
    if local is None:
        cache_key = _cache_key(spec, sha256_json(info.fingerprints))
        if not force and (m := _cached(out_dir, cache_key)) is not None:
            log(f"source {spec.key!r}: hub input unchanged (cache key {cache_key[:12]}), reusing {out_dir}")
            return BuildResult(spec.key, out_dir, True, m)

    def all_batches():
        if first is not None:
            yield first
        yield from batches

    col = _process(spec, all_batches(), preset)
    if col.rows_in == 0:
        raise SourceError(f"source {spec.key!r}: the input has no rows")

    files: dict[str, dict] = {}
    if spec.split_eval:
        train_idx, test_idx = split_indices(len(col.kept)) if col.kept else ([], [])
        train_lines = [col.kept[i] for i in train_idx]
        test_lines = [col.kept[i] for i in test_idx]
    else:
        train_lines, test_lines = col.kept, None
    # The partition folder is built aside and published as one unit (fileio.staged_dir: one
    # atomic swap): a reader, or a SIGKILL at any moment, sees the old version or the new one
    # whole, never a new train split beside an old test split.
    with staged_dir(out_dir) as stage:
        outputs = {"train.jsonl": train_lines, "test.jsonl": test_lines, "quarantine.jsonl": col.quarantine}
        for name, lines in outputs.items():
            if lines is None:
                continue
            write_lines(stage / name, lines) if lines else _write_empty(stage / name)
            p = stage / name
            files[name] = {"rows": len(lines), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        data_version = sha256_json({n: files[n]["sha256"] for n in ("train.jsonl", "test.jsonl") if n in files})
        inputs = (
            [{"path": str(f), "bytes": f.stat().st_size, "sha256": sha256_file(f)} for f in info.files]
            if info.files
            else [{"hub_fingerprint": fp} for fp in info.fingerprints]
        )
        manifest_fields = dict(
            layer="sources",
            source=spec.key,
            spec=spec.identity(),
            code_version=CODE_VERSION,
            cache_key=cache_key,
            data_version=data_version,
            inputs=inputs,
            rows_in=col.rows_in,
            rows_train=len(train_lines),
            rows_test=len(test_lines or []),
            quarantined=len(col.quarantine),
            skipped_messages=col.skipped_messages,
            prompt_only_rows=col.prompt_only,
            row_system_prepended=col.row_system,
            dropped_fields=dict(col.dropped_fields.most_common()),
            files=files,
            stats=_stats(col),
            preview=col.preview,
            format="preformatted" if col.kind == "text" else "conversations",
        )
        write_manifest(stage, **manifest_fields)
    log(
        f"source {spec.key!r}: {col.rows_in} rows in → {len(train_lines)} train, {len(test_lines or [])} test, "
        f"{len(col.quarantine)} quarantined → {out_dir}"
    )
    if col.dropped_fields:
        log(
            f"source {spec.key!r}: fields not carried into the conversation rows (rows): "
            + ", ".join(f"{k} ({n})" for k, n in col.dropped_fields.most_common())
        )
    return BuildResult(spec.key, out_dir, False, read_manifest(out_dir))


def _write_empty(path: Path) -> None:
    with atomic_write(path):
        pass
