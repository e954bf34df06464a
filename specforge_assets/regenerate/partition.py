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
import shutil
from pathlib import Path
from typing import Callable, Iterator

from ..fileio import atomic_write, sha256_files, write_manifest
from ..paths import layer_dir
from ..storage import published
from .client import check_addresses, strip_credentials
from .cache import cached_summary, content_version, output_files, settings_fingerprint
from .config import source_api_key
from .launcher import LocalServer
from .locks import exclusive, partition_lock_path
from .runner import OutputPaths, count_rows, run_regeneration
from .settings import SETTINGS_KEYS, Dialect, RegenSettings


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
        yield {
            "addresses": list(cfg["server_addresses"]),
            "model": cfg["model"],
            "dialect": "openai" if cfg["dialect"] == "auto" else cfg["dialect"],
            "launched": None,
        }
        return
    launch = cfg["launch"]
    model_path = launch["model_path"] or target_path()
    srv = LocalServer(
        model_path,
        backend=launch["backend"],
        startup_timeout_s=float(launch["startup_timeout_s"]),
        extra_args=list(launch["extra_args"]),
        device=launch["device"],
        log=log,
    )
    with srv:
        yield {
            "addresses": [srv.address],
            "model": cfg["model"] or srv.served_model_name,
            "dialect": srv.dialect if cfg["dialect"] == "auto" else cfg["dialect"],
            "launched": {"backend": srv.backend, "model_path": str(model_path)},
        }


def settings_from(cfg: dict, model: str, dialect: Dialect) -> RegenSettings:
    """One run's settings from a source config (`config.source_config`): its `RequestSettings`
    fields plus the resolved model name and dialect."""
    return RegenSettings(**{k: cfg[k] for k in SETTINGS_KEYS}, model=model, dialect=dialect)


def regenerate_partition(
    key: str,
    cfg: dict,
    *,
    root: Path | None = None,
    log: Callable[[str], None] = print,
    target_path: Callable[[], str | Path] | None = None,
    run_id: str | None = None,
    api_key: str | None = None,
) -> dict:
    """Materialize regenerated/<key>. Returns a summary for metadata (no secrets).

    `api_key`: the deployment's API key (the `regen_servers` resource's EnvVar secret), sent to
    the servers of a source whose `api_key_env` is null (`config.source_api_key`); None: no key.

    Holds `<root>/regenerated/.locks/<key>.lock` throughout: a second run of the same partition
    waits `cfg["lock_wait_s"]` and is then refused (`locks.RegenerationBusy`). With the same input
    content and content settings as the last complete run, no error rows left and the outputs
    intact, nothing is done (`summary["cache"] == "hit"`) — decided before any server is launched.
    `summary["data_version"]` is the content version (`cache.content_version`)."""
    if cfg.get("enabled") and cfg.get("server_addresses"):
        # refused before anything runs or is written (a key in a query string would end up in
        # the manifest, the metadata and every row's provenance)
        check_addresses(list(cfg["server_addresses"]), "server_addresses")
    if target_path is None:
        from ..target import target_model_path

        target_path = lambda: target_model_path(root)  # noqa: E731
    src = layer_dir("sources", key, root=root)
    src_train = src / "train.jsonl"
    if not src_train.exists():
        raise FileNotFoundError(f"{src_train} not found: materialize sources/conversations[{key}] first")
    base = layer_dir("regenerated", root=root)
    with exclusive(
        partition_lock_path(base.parent, key),
        f"regenerated/conversations[{key}]",
        float(cfg.get("lock_wait_s") or 0),
        run_id=run_id,
        log=log,
    ):
        return _regenerate_locked(key, cfg, root, log, target_path, api_key)


def _regenerate_locked(
    key: str,
    cfg: dict,
    root: Path | None,
    log: Callable[[str], None],
    target_path: Callable[[], str | Path],
    deployment_key: str | None,
) -> dict:
    src = layer_dir("sources", key, root=root)
    dst = layer_dir("regenerated", key, root=root)
    src_train, src_test = src / "train.jsonl", src / "test.jsonl"
    input_sha = sha256_files([src_train] + ([src_test] if src_test.exists() else []))
    fingerprint, content_settings = settings_fingerprint(cfg, target_path, dst.parent.parent)
    cache_key = {"input_sha256": input_sha, "settings_fingerprint": fingerprint}
    if not cfg.get("restart"):
        hit, why = cached_summary(dst, cache_key)
        if hit is not None:
            log(
                f"regenerated/{key}: cache hit ({why}: input {input_sha[:12]}, settings {fingerprint[:12]}); "
                "nothing to do, no server launched"
            )
            return {**hit, "cache": "hit", "cache_reason": why}
        log(f"regenerated/{key}: cache miss ({why})")
    else:
        why = "restart requested"
    dst.mkdir(parents=True, exist_ok=True)
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
        api_key = source_api_key(cfg, deployment_key)
        with servers_for(cfg, log, target_path) as servers:
            settings = settings_from(cfg, servers["model"], servers["dialect"])
            stats = run_regeneration(
                src_train,
                outputs,
                settings,
                servers["addresses"],
                api_key=api_key,
                resume=True,
                restart=bool(cfg.get("restart")),
                log=log,
            )
            summary.update({k: v for k, v in stats.items() if k != "outputs"})
            summary["settings"] = settings.content_config()
            summary["dialect"] = settings.dialect
            # never the user-info of an address (credentials): the manifest and metadata are shared
            summary["server_addresses"] = [strip_credentials(a) for a in servers["addresses"]]
            summary["launched_server"] = servers["launched"]
            if src_test.exists() and cfg["test_split"] == "regenerate":
                test_out = OutputPaths.partition(dst, "test")
                tstats = run_regeneration(
                    src_test,
                    test_out,
                    settings,
                    servers["addresses"],
                    api_key=api_key,
                    resume=True,
                    restart=bool(cfg.get("restart")),
                    log=log,
                )
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
    files = output_files(dst)
    summary["content_sha256"] = sha256_files(files)  # the files as written (provenance included): integrity
    summary["output_files"] = [p.name for p in files]
    readable = [dst / "train.jsonl"] + ([dst / "test.jsonl"] if (dst / "test.jsonl").exists() else [])
    summary["data_version"] = content_version(readable)
    summary["cache_key"] = cache_key
    summary["content_settings"] = content_settings
    summary["paths"] = {p.name: str(p) for p in files}
    c = summary["counts"]
    summary["reconciles"] = c["success"] + c["error"] + c["skipped"] + c["passthrough"] == summary["input_rows"]
    write_manifest(
        dst, layer="regenerated", **{k: v for k, v in summary.items() if k != "paths"}, input_sha256=input_sha
    )
    # object-store data root: upload the vouched-for files + manifest (the journal stays local)
    published(dst, names=[p.name for p in files] + ["manifest.json"])
    summary["cache"] = "miss"
    summary["cache_reason"] = why
    return summary
