"""One source partition: sources/<key>/ -> regenerated/<key>/ (regenerate or pass through).

Called by the `regenerated/conversations` asset; a notebook can call it with a data root.
Output: train.jsonl (+ test.jsonl), errors.jsonl, skipped.jsonl, manifest.json.
- regeneration off: train/test copied unchanged, empty errors/skipped, manifest "regenerated": false.
- regeneration on: train.jsonl regenerated (exactly-once journal beside it); test.jsonl passed
  through unchanged by default (`test_split: regenerate` regenerates it too, its errors/skips in
  test_errors.jsonl / test_skipped.jsonl).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterator

from ..fileio import atomic_write, sha256_files, write_manifest
from ..paths import layer_dir
from .client import strip_credentials
from .launcher import LocalServer
from .runner import OutputPaths, count_rows, run_regeneration
from .settings import RegenSettings


def _copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fi, atomic_write(dst, "wb", encoding=None) as fo:
        shutil.copyfileobj(fi, fo)


@contextlib.contextmanager
def servers_for(cfg: dict, log: Callable[[str], None], target_path: Callable[[], str | Path]) -> Iterator[dict]:
    """Yield {"addresses", "model", "dialect", "launched"}: the configured addresses, or a server
    launched for the model dir (stopped on exit)."""
    if cfg["server_addresses"]:
        if not cfg["model"]:
            raise ValueError("regeneration with server_addresses needs `model` (the served model name)")
        yield {"addresses": list(cfg["server_addresses"]), "model": cfg["model"],
               "dialect": "openai" if cfg["dialect"] == "auto" else cfg["dialect"], "launched": None}
        return
    launch = cfg["launch"]
    model_path = launch.get("model_path") or target_path()
    srv = LocalServer(model_path, backend=launch.get("backend", "auto"),
                      startup_timeout_s=float(launch.get("startup_timeout_s", 300)),
                      extra_args=list(launch.get("extra_args") or []), device=launch.get("device", "cpu"), log=log)
    with srv:
        yield {"addresses": [srv.address], "model": cfg["model"] or srv.served_model_name,
               "dialect": srv.dialect if cfg["dialect"] == "auto" else cfg["dialect"],
               "launched": {"backend": srv.backend, "model_path": str(model_path)}}


def settings_from(cfg: dict, model: str, dialect: str) -> RegenSettings:
    from .config import SETTINGS_KEYS

    return RegenSettings.from_mapping({**{k: cfg[k] for k in SETTINGS_KEYS}, "model": model, "dialect": dialect})


def regenerate_partition(key: str, cfg: dict, *, root: Path | None = None, log: Callable[[str], None] = print,
                         target_path: Callable[[], str | Path] | None = None) -> dict:
    """Materialize regenerated/<key>. Returns a summary for metadata (no secrets)."""
    if target_path is None:
        from ..target import target_model_path

        target_path = lambda: target_model_path(root)  # noqa: E731
    src = layer_dir("sources", key, root=root)
    dst = layer_dir("regenerated", key, root=root)
    src_train = src / "train.jsonl"
    if not src_train.exists():
        raise FileNotFoundError(f"{src_train} not found: materialize sources/conversations[{key}] first")
    dst.mkdir(parents=True, exist_ok=True)
    src_test = src / "test.jsonl"
    outputs = OutputPaths.partition(dst)
    summary: dict = {"source": key, "regenerated": bool(cfg["enabled"]), "input_rows": count_rows(src_train)}

    if not cfg["enabled"]:
        log(f"regeneration is off for {key}: passing {summary['input_rows']} rows through unchanged")
        _copy(src_train, outputs.success)
        for p in (outputs.error, outputs.skipped):
            with atomic_write(p):
                pass
        summary["counts"] = {"success": 0, "error": 0, "skipped": 0, "passthrough": summary["input_rows"]}
        summary["test_split"] = "passthrough" if src_test.exists() else None
    else:
        api_key = os.environ.get(cfg["api_key_env"]) if cfg.get("api_key_env") else None
        with servers_for(cfg, log, target_path) as servers:
            settings = settings_from(cfg, servers["model"], servers["dialect"])
            stats = run_regeneration(src_train, outputs, settings, servers["addresses"], api_key=api_key,
                                     resume=True, restart=bool(cfg.get("restart")), log=log)
            summary.update({k: v for k, v in stats.items() if k != "outputs"})
            summary["settings"] = settings.content_config()
            summary["dialect"] = settings.dialect
            # never the user-info of an address (credentials): the manifest and metadata are shared
            summary["server_addresses"] = [strip_credentials(a) for a in servers["addresses"]]
            summary["launched_server"] = servers["launched"]
            if src_test.exists() and cfg["test_split"] == "regenerate":
                test_out = OutputPaths.partition(dst, "test")
                tstats = run_regeneration(src_test, test_out, settings, servers["addresses"], api_key=api_key,
                                          resume=True, restart=bool(cfg.get("restart")), log=log)
                summary["test_counts"] = tstats["counts"]
                summary["test_split"] = "regenerated"
            elif src_test.exists():
                summary["test_split"] = "passthrough"
            else:
                summary["test_split"] = None
    if summary.get("test_split") == "passthrough":
        _copy(src_test, dst / "test.jsonl")
    elif summary.get("test_split") is None and (dst / "test.jsonl").exists():
        (dst / "test.jsonl").unlink()  # a stale test split from an older input
    files = [outputs.success, outputs.error, outputs.skipped] + ([dst / "test.jsonl"] if (dst / "test.jsonl").exists() else [])
    summary["content_sha256"] = sha256_files(files)
    summary["paths"] = {p.name: str(p) for p in files}
    c = summary["counts"]
    summary["reconciles"] = c["success"] + c["error"] + c["skipped"] + c["passthrough"] == summary["input_rows"]
    write_manifest(dst, layer="regenerated", **{k: v for k, v in summary.items() if k != "paths"},
                   input_sha256=sha256_files([src_train] + ([src_test] if src_test.exists() else [])))
    return summary
