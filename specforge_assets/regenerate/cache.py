"""When a partition need not be regenerated, and what identifies its output.

- `content_version`: the data version of regenerated/<key>, from what downstream reads (every
  output row of train/test with its per-row `regeneration` provenance left out: endpoints,
  servers, usage and timings move no version). Rows keep their provenance on disk.
- `settings_fingerprint`: the effective settings that change the *content*: model identity
  (the served model name for configured servers; the launched model dir's content, backend and
  extra args for a launched server), sampling, max_tokens, reasoning mode, extra body, sample
  cap, test split handling (`RegenSettings.CONTENT_FIELDS` + `test_split`). Not: concurrency,
  server addresses/ports, timeouts, retries, lock/progress settings — changing those never
  re-runs anything.
- `cached_summary`: the last run's summary when input + fingerprint are unchanged, no error
  rows are left to retry, no partial journal exists and the outputs on disk are intact — decided
  before any server is launched or probed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

from ..fileio import atomic_write, sha256_file, sha256_files, sha256_json
from ..jsonrows import RowDecodeError, loads_row
from .journal import journal_paths
from .settings import RegenSettings

# Bump when the meaning of a fingerprint or of the outputs changes (old outputs then re-run once).
CACHE_FORMAT = 1
# Per-row provenance: kept in the rows, left out of the data version.
PROVENANCE_FIELDS = ("regeneration",)
# Content settings besides the model (which is replaced by its identity).
CONTENT_KEYS = tuple(k for k in RegenSettings.CONTENT_FIELDS if k != "model") + ("test_split",)
MANIFEST_KEYS_NOT_IN_SUMMARY = ("packages", "git_revision", "layer", "input_sha256")


def content_version(files: list[Path]) -> str:
    """sha256 over the rows of `files` (by file name, in row order), provenance fields dropped and
    keys sorted, so the same conversations give the same version whatever server produced them.
    Rows are read under the one row rule (`jsonrows.loads_row`); a line that breaks it is hashed
    as its stripped bytes (never skipped, never a crash)."""
    h = hashlib.sha256()
    for p in sorted(Path(f) for f in files):
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    row = loads_row(line)
                except RowDecodeError:  # hashed as it is: the version still changes with it
                    h.update(line.strip() + b"\n")
                    continue
                if isinstance(row, dict):
                    row = {k: v for k, v in row.items() if k not in PROVENANCE_FIELDS}
                h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass"))
                h.update(b"\n")
    return h.hexdigest()


def _hash_with_stat_cache(files: list[Path], cache_file: Path | None) -> dict[str, str]:
    """{file: sha256}, reusing hashes of files whose size and mtime did not change (a model's
    weights are hashed once, not on every run)."""
    cache: dict = {}
    if cache_file is not None:
        try:
            cache = json.loads(cache_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cache = {}
    out, changed = {}, False
    for p in files:
        st = p.stat()
        hit = cache.get(str(p))
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            out[str(p)] = hit[2]
            continue
        out[str(p)] = sha256_file(p)
        cache[str(p)] = [st.st_size, st.st_mtime_ns, out[str(p)]]
        changed = True
    if changed and cache_file is not None:
        try:
            with atomic_write(cache_file) as f:
                json.dump(cache, f)
        except OSError:
            pass  # only a cache
    return out


def model_dir_identity(path: str | Path, cache_file: Path | None = None) -> dict:
    """A model by its content: the hashes of the files of its folder (relative names; hidden files
    and its provenance `manifest.json` left out), or the id itself for a hub id."""
    p = Path(str(path)).expanduser()
    if p.is_dir():
        files = sorted(
            f
            for f in p.rglob("*")
            if f.is_file()
            and f.name != "manifest.json"
            and not any(part.startswith(".") for part in f.relative_to(p).parts)
        )
        hashes = _hash_with_stat_cache(files, cache_file)
        return {"files_sha256": sha256_json({str(f.relative_to(p)): hashes[str(f)] for f in files})}
    if p.is_file():
        return {"file_sha256": _hash_with_stat_cache([p], cache_file)[str(p)]}
    return {"hub_id": str(path)}


def settings_fingerprint(
    cfg: dict, target_path: Callable[[], str | Path], root: Path | None = None
) -> tuple[str, dict]:
    """(hash, the content settings it covers) of a flat source config (`config.source_config`).
    No server is launched or contacted."""
    if not cfg["enabled"]:
        content: dict = {"enabled": False, "format": CACHE_FORMAT}
        return sha256_json(content), content
    content = {k: cfg.get(k) for k in CONTENT_KEYS}
    content.update({"enabled": True, "format": CACHE_FORMAT})
    if cfg["server_addresses"]:
        content["model"] = {"served_model": cfg["model"]}
        content["dialect"] = "openai" if cfg["dialect"] == "auto" else cfg["dialect"]
    else:
        from .launcher import resolve_backend

        launch = cfg["launch"]
        backend = resolve_backend(launch["backend"])
        cache_file = Path(root) / "regenerated" / ".cache" / "file-hashes.json" if root is not None else None
        content["model"] = {
            "launched": model_dir_identity(launch.get("model_path") or target_path(), cache_file),
            "backend": backend,
            "extra_args": list(launch.get("extra_args") or []),
            "requested_name": cfg["model"],
        }
        content["dialect"] = (
            ("transformers" if backend == "transformers" else "openai") if cfg["dialect"] == "auto" else cfg["dialect"]
        )
    return sha256_json(content), content


def output_files(dst: Path) -> list[Path]:
    """The files of a finished partition that the manifest vouches for."""
    names = ["train.jsonl", "errors.jsonl", "skipped.jsonl", "test.jsonl", "test_errors.jsonl", "test_skipped.jsonl"]
    return [dst / n for n in names if (dst / n).exists()]


def cached_summary(dst: Path, cache_key: dict) -> tuple[dict | None, str]:
    """(summary of the last run, why) when it can be reused as is; (None, why not) otherwise."""
    try:
        manifest = json.loads((dst / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "never materialized"
    except (OSError, ValueError):
        return None, "manifest unreadable"
    if manifest.get("cache_key") != cache_key:
        old = manifest.get("cache_key") or {}
        what = [k for k in ("input_sha256", "settings_fingerprint") if old.get(k) != cache_key.get(k)]
        return None, f"{' and '.join(what) or 'cache key'} changed"
    errors = int((manifest.get("counts") or {}).get("error", 0) or 0)
    errors += int((manifest.get("test_counts") or {}).get("error", 0) or 0)
    if errors:
        return None, f"{errors} error rows to retry"
    for name in ("train", "test"):
        if any(p.exists() for p in journal_paths(dst / f"{name}.jsonl")[:1]):
            return None, f"a {name} journal is left (interrupted run or rows to retry)"
    names = manifest.get("output_files") or []
    files = [dst / n for n in names]
    if not names or any(not p.exists() for p in files) or sorted(names) != sorted(p.name for p in output_files(dst)):
        return None, "output files missing or changed"
    if sha256_files(files) != manifest.get("content_sha256"):
        return None, "output files changed on disk"
    summary = {k: v for k, v in manifest.items() if k not in MANIFEST_KEYS_NOT_IN_SUMMARY}
    summary["paths"] = {p.name: str(p) for p in files}
    return summary, "unchanged input and settings"
