"""Data-root level builds behind the assets (no Dagster import).

`build_tokenized(root)`: <root>/mix/train.jsonl (or a given mix version folder) →
<root>/tokenized/dataset/, through a content-addressed cache <root>/tokenized/cache/<key>/ (the
key covers every input; identical inputs are never recomputed). The data version is the hash of
the output rows (id, input_ids, loss_mask), so re-tokenizing an identical mix (a cache miss
after provenance-only changes, a pruned cache) gives the same version.
`build_vocab_mapping(root)`: shards → <root>/tokenized/vocab_mapping/vocab_mapping.pt; its data
version is the hash of the d2t/t2d content.
Both keep an immutable copy under <root>/versions/<artifact>/<data version>/ (`versioned`)
and publish the current folder as one unit.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

from ..configmodel import ConfigError, validate
from ..errors import UserError
from ..fileio import read_manifest, sha256_file, staged_dir, write_manifest
from ..paths import load_config
from ..target import target_config, target_model_path
from ..versioned import publish_version
from .core import Preprocessor, TokenizeOptions
from .dataset import InputNotFoundError, TokenizerLoadError, cache_key, load_tokenizer, tokenize_jsonl
from .settings import TokenizeFile
from .templates import get_template


def token_settings(cfg: dict) -> dict:
    """The settings of a validated configs/tokenize.yaml dict (`tokenize_config`) that change the
    tokenized rows: every `TokenizeFile` field except the operational ones and `vocab_mapping`
    ({name: value}, sorted by name). The tokenized dataset's config fingerprint (`automation`)."""
    fields = TokenizeFile.model_fields
    return {
        k: cfg.get(k)
        for k in sorted(fields)
        if k != "vocab_mapping" and not (fields[k].json_schema_extra or {}).get("operational")  # type: ignore[union-attr]
    }


def vocab_settings(cfg: dict) -> dict:
    """The settings of a validated configs/tokenize.yaml dict that change the vocab mapping:
    ``{"vocab_mapping": {...}}``."""
    return {"vocab_mapping": cfg.get("vocab_mapping")}


STALE_STAGING_S = 24 * 3600  # a staging folder this old is a crashed build, not one in progress


def prune_cache(cache_root: Path, keep: int, current: str) -> list[str]:
    """Drop all but the `keep` most recently used complete cache entries (the current one always
    stays) and staging folders left by crashed builds. Published copies are hard links, so they
    keep their data. `keep` <= 0 keeps everything. Returns the pruned keys."""
    if keep <= 0 or not cache_root.is_dir():
        return []
    entries, pruned = [], []
    now = time.time()
    for d in cache_root.iterdir():
        if not d.is_dir():
            continue
        if d.name.startswith("."):
            if now - d.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(d, ignore_errors=True)
            continue
        if (d / "stats.json").exists() and d.name != current:
            entries.append((d.stat().st_mtime, d))
    entries.sort(reverse=True)
    for _, d in entries[max(0, keep - 1) :]:
        shutil.rmtree(d, ignore_errors=True)
        pruned.append(d.name)
    return sorted(pruned)


class TokenizeConfigError(ValueError, UserError):
    """configs/tokenize.yaml (or the target's chat template) is not usable."""


def tokenize_config(cfg: dict | None = None, config_dir: Path | None = None) -> dict:
    """configs/tokenize.yaml (`cfg` None: read from `config_dir`) as a `TokenizeFile` dict; an
    unknown key or a bad value raises `TokenizeConfigError` naming the file and the field."""
    raw = load_config("tokenize", config_dir) if cfg is None else cfg
    try:
        return validate(TokenizeFile, raw, "configs/tokenize.yaml").model_dump(mode="json")
    except ConfigError as e:
        raise TokenizeConfigError(str(e)) from None


def options_from(cfg: dict) -> TokenizeOptions:
    c = cfg["corrected"]
    return TokenizeOptions(
        max_length=int(cfg["max_length"]),
        is_preformatted=bool(cfg["is_preformatted"]),
        train_only_last_turn=bool(cfg["train_only_last_turn"]),
        inject_system_prompt=not c["no_system_prompt"],
        shift_mask_885=bool(c["shift_mask_885"]),
        incremental_mask=bool(c["incremental_mask"]),
    )


def resolve(root: Path, cfg: dict, tcfg: dict) -> dict:
    """Tokenizer, template and options of this run (clear errors for bad configuration).

    The chat template is configs/tokenize.yaml's `chat_template`, else configs/target.yaml's (the
    only place this precedence is decided: the dataset's manifest records the resulting name as
    `template`, which its checks read). Neither set: `TokenizeConfigError`."""
    name = cfg["chat_template"] or tcfg["chat_template"]
    if not name:
        raise TokenizeConfigError("no chat template: set chat_template in configs/tokenize.yaml or configs/target.yaml")
    try:
        template = get_template(name, cfg.get("templates") or {})
    except ValueError as e:
        raise TokenizeConfigError(f"configs/tokenize.yaml templates: {e}") from e
    try:
        options = options_from(cfg)
    except (TypeError, ValueError) as e:
        raise TokenizeConfigError(f"configs/tokenize.yaml: {e}") from e
    tok_path = target_model_path(root, tcfg)
    if isinstance(tok_path, Path) and not tok_path.exists():
        raise TokenizerLoadError(
            f"target model/tokenizer folder {tok_path} does not exist (materialize models/target_model first)"
        )
    tokenizer = load_tokenizer(tok_path, bool(tcfg["trust_remote_code"]))
    return {"template": template, "tokenizer_path": tok_path, "tokenizer": tokenizer, "options": options}


def dataset_content_version(dataset_dir: Path | str) -> str:
    """Data version of a tokenized dataset: hash of its rows as the trainer reads them (the
    `train.jsonl` export: id, input_ids, loss_mask per row, in order)."""
    return sha256_file(Path(dataset_dir) / "train.jsonl")[:32]


def build_tokenized(
    root: Path | str,
    cfg: dict | None = None,
    tcfg: dict | None = None,
    config_dir: Path | None = None,
    mix_dir: Path | str | None = None,
    manifest_extra: dict | None = None,
) -> dict:
    from ..mix.mix import rows_content_sha256

    root = Path(root)
    cfg = tokenize_config(cfg, config_dir)
    tcfg = target_config(load_config("target", config_dir) if tcfg is None else tcfg)
    mix_train = Path(mix_dir or root / "mix") / "train.jsonl"
    if not mix_train.exists():
        raise InputNotFoundError(f"{mix_train} not found (materialize mix/training_mix first)")
    r = resolve(root, cfg, tcfg)
    tok = r["tokenizer"]
    # the mix rows' consumed content (not their provenance fields): a mix rewritten with other
    # regeneration provenance only is still a cache hit
    key = cache_key(
        rows_content_sha256(mix_train),
        r["tokenizer_path"],
        getattr(tok, "chat_template", None),
        r["template"],
        r["options"],
    )
    cache_dir = root / "tokenized" / "cache" / key["key"]
    hit = (cache_dir / "stats.json").exists()
    if not hit:
        pre = (
            Preprocessor(tok, r["template"], r["options"], verify_every=int(cfg["verify_every"] or 0))
            if int(cfg["workers"]) <= 1
            else None
        )
        tokenize_jsonl(
            mix_train,
            r["tokenizer_path"],
            r["template"],
            cache_dir,
            r["options"],
            workers=int(cfg["workers"]),
            shard_rows=int(cfg["shard_rows"]),
            verify_every=int(cfg["verify_every"] or 0),
            trust_remote_code=bool(tcfg.get("trust_remote_code")),
            preprocessor=pre,
        )
        (cache_dir / "cache_key.json").write_text(json.dumps(key, indent=2, default=str))
    stats = json.loads((cache_dir / "stats.json").read_text())
    os.utime(cache_dir)  # last used: what pruning keeps
    version = dataset_content_version(cache_dir)
    out = root / "tokenized" / "dataset"
    warnings = []
    if not getattr(tok, "chat_template", None):
        warnings.append(
            "tokenizer has no chat template: SpecForge's fallback rendering was used "
            f"(template {r['template'].name!r} headers)"
        )
    with staged_dir(out) as tmp:  # files + manifest (+ the human-readable artefacts) published as one unit
        for p in cache_dir.iterdir():
            if p.is_file():
                try:
                    os.link(p, tmp / p.name)
                except OSError:
                    shutil.copy2(p, tmp / p.name)
        from .dataset import read_lengths
        from .report import example_preview, length_histogram_png

        lengths = read_lengths(tmp)
        length_histogram_png(lengths, int(stats["max_length"]), tmp / "lengths.png")
        example_md, example_file = example_preview(tok, r["template"], r["options"], mix_train, tmp / "example.html")
        write_manifest(
            tmp,
            asset="tokenized/dataset",
            data_version=version,
            cache_key=key["key"],
            cache_parts=key["parts"],
            cache_hit=hit,
            template=r["template"].name,
            tokenizer=str(r["tokenizer_path"]),
            mix_train=str(mix_train),
            stats=stats,
            warnings=warnings,
            **(manifest_extra or {}),
        )
        vdir = publish_version(tmp, root, "tokenized_dataset", version)
    pruned = prune_cache(cache_dir.parent, int(cfg["cache_keep"] or 0), key["key"])
    return {
        "key": key["key"],
        "parts": key["parts"],
        "cache_hit": hit,
        "stats": stats,
        "dir": out,
        "version": version,
        "version_dir": vdir,
        "mix_train": mix_train,
        "cache_pruned": pruned,
        "template": r["template"],
        "tokenizer": tok,
        "tokenizer_path": r["tokenizer_path"],
        "options": r["options"],
        "warnings": warnings,
        "cache_dir": cache_dir,
        "lengths": lengths,
        "lengths_png": out / "lengths.png",
        "example_md": example_md,
        "example_html": out / "example.html" if example_file else None,
    }


def target_vocab_size(tok_path, tokenizer) -> int:
    if isinstance(tok_path, Path) and (tok_path / "config.json").exists():
        try:
            v = json.loads((tok_path / "config.json").read_text()).get("vocab_size")
            if isinstance(v, int) and v > 0:
                return max(v, len(tokenizer))
        except json.JSONDecodeError:
            pass
    return len(tokenizer)


def mapping_content_version(d2t, t2d, target_vocab: int, draft_vocab: int) -> str:
    """Data version of a vocab mapping: hash of the d2t/t2d content (and the two sizes)."""
    import hashlib

    import numpy as np

    h = hashlib.sha256(f"top-n-v1:{int(target_vocab)}:{int(draft_vocab)}:".encode())
    h.update(np.ascontiguousarray(np.asarray(d2t, dtype=np.int64)).tobytes())
    h.update(b"|")
    h.update(np.ascontiguousarray(np.asarray(t2d, dtype=bool)).tobytes())
    return h.hexdigest()[:32]


def build_vocab_mapping(
    root: Path | str,
    cfg: dict | None = None,
    tcfg: dict | None = None,
    config_dir: Path | None = None,
    dataset_dir: Path | str | None = None,
    manifest_extra: dict | None = None,
) -> dict:
    from .vocab import TIE_BREAK, build_mapping, iter_parquet_batches, save_mapping

    root = Path(root)
    cfg = tokenize_config(cfg, config_dir)
    tcfg = target_config(load_config("target", config_dir) if tcfg is None else tcfg)
    ds = Path(dataset_dir) if dataset_dir is not None else root / "tokenized" / "dataset"
    man = read_manifest(ds)
    if man is None:
        raise InputNotFoundError(f"{ds} has no manifest (materialize tokenized/dataset first)")
    shards = sorted(ds.glob("part-*.parquet"))
    tok_path = target_model_path(root, tcfg)
    tokenizer = load_tokenizer(tok_path, bool(tcfg["trust_remote_code"]))
    V = target_vocab_size(tok_path, tokenizer)
    D = int(cfg["vocab_mapping"]["draft_vocab_size"])
    res = build_mapping(iter_parquet_batches(shards), V, D, source=str(ds))
    out = root / "tokenized" / "vocab_mapping"
    info = {k: v for k, v in res.items() if k not in ("d2t", "t2d")}
    version = mapping_content_version(res["d2t"], res["t2d"], V, D)
    dataset_version = man.get("data_version") or dataset_content_version(ds)
    with staged_dir(out) as tmp:
        tmp_path = save_mapping(res, tmp / "vocab_mapping.pt")
        write_manifest(
            tmp,
            asset="tokenized/vocab_mapping",
            dataset_version=dataset_version,
            dataset_cache_key=man.get("cache_key"),
            dataset_path=str(ds),
            data_version=version,
            file="vocab_mapping.pt",
            file_sha256=sha256_file(tmp_path),
            **info,
            tie_break=TIE_BREAK,
            **(manifest_extra or {}),
        )
        vdir = publish_version(tmp, root, "vocab_mapping", version)
    return {
        **info,
        "path": out / "vocab_mapping.pt",
        "version": version,
        "version_dir": vdir,
        "dataset_version": dataset_version,
        "d2t": res["d2t"],
        "t2d": res["t2d"],
    }
