"""Which target model the graph uses (configs/target.yaml). No Dagster import."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import Field, model_validator

from .checks.outcome import Outcome
from .configmodel import ConfigModel, validate
from .errors import UserError
from .paths import data_root, load_config


class TargetFile(ConfigModel):
    """configs/target.yaml: the target model the draft is trained for."""

    path: str | None = Field(
        default=None, description="local HF folder, GGUF file or hub id; null: the demo target built from the samples"
    )
    chat_template: str | None = Field(
        default="qwen", description="registry template used to tokenize (auto: the tokenizer's own)"
    )
    trust_remote_code: bool = Field(default=False, description="run code shipped with the model")
    revision: str | None = Field(
        default=None,
        min_length=1,
        description="hub revision (branch, tag or commit) of a hub-id path; null: the default branch",
    )

    @model_validator(mode="after")
    def _revision_needs_a_path(self) -> TargetFile:
        if self.revision is not None and not self.path:
            raise ValueError("revision: a hub revision needs `path` to be a hub id (org/name)")
        return self


DEFAULTS = TargetFile().model_dump()


def template_settings(cfg: dict) -> dict:
    """The settings of a validated configs/target.yaml dict (`target_config`) that change how rows
    are tokenized for it: ``{"chat_template", "trust_remote_code"}``. (`path` reaches the
    tokenized dataset as the target model's data version, not as config.)"""
    return {k: cfg.get(k) for k in ("chat_template", "trust_remote_code")}


def target_config(config: dict | None = None) -> dict:
    """configs/target.yaml (`config` None: read it) as a `TargetFile` dict; unknown keys and bad
    values raise `configmodel.ConfigError` naming the file and field."""
    raw = load_config("target") if config is None else config
    return validate(TargetFile, raw, "configs/target.yaml").model_dump()


def demo_target_dir(root: Path | None = None) -> Path:
    return (root or data_root()) / "models" / "target_model"


def needs_import(path: str | Path) -> bool:
    """A GGUF file (or a folder holding one and no config.json) or a hub id: the
    `models/target_model` asset imports it as a normal HF folder under the data root."""
    from .target_import import TargetImportError, classify

    try:
        return classify(path)[0] in ("gguf", "hub")
    except TargetImportError:
        return False  # the asset reports what is wrong with it


def target_model_path(root: Path | None = None, config: dict | None = None) -> Path | str:
    """Where the target model is read from: `<data root>/models/target_model` for the demo target
    and for imported ones (GGUF, hub id), else the configured HF model folder itself."""
    path = target_config(config)["path"]
    if not path or needs_import(str(path)):
        return demo_target_dir(root)
    p = Path(str(path)).expanduser()
    return p.resolve() if p.exists() else str(path)


def is_demo_target(config: dict | None = None) -> bool:
    return not target_config(config)["path"]


def model_summary(folder: Path) -> dict:
    """The HF `config.json` of `folder` in a few fields: `architecture` (str, "?" when absent),
    `num_hidden_layers`, `hidden_size`, `vocab_size` (ints or None) and `torch_dtype` (str).
    Raises OSError/ValueError when the file is missing or not JSON."""
    cfg = json.loads((Path(folder) / "config.json").read_text())
    return {
        "architecture": (cfg.get("architectures") or ["?"])[0],
        "num_hidden_layers": cfg.get("num_hidden_layers"),
        "hidden_size": cfg.get("hidden_size"),
        "vocab_size": cfg.get("vocab_size"),
        "torch_dtype": str(cfg.get("torch_dtype") or cfg.get("dtype")),
    }


def target_loads_with_chat_template(path: Path | str, trust_remote_code: bool) -> Outcome:
    """Does the tokenizer at `path` (folder or hub id) load and render a two-turn conversation
    with its chat template? The outcome's metadata holds `rendered` (the rendered text) and
    `vocab_size` (int) when it passed, else `error` (one line, at most ~500 characters of the
    exception), also its description. Never raises: any failure to load is the answer."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        if not getattr(tok, "chat_template", None):
            error = f"{path}: the tokenizer has no chat_template"
            return Outcome(False, error, {"error": error})
        msgs = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi."}]
        rendered = tok.apply_chat_template(msgs, tokenize=False)
        return Outcome(
            True, "the tokenizer loads and its chat template renders", {"rendered": rendered, "vocab_size": len(tok)}
        )
    except Exception as e:  # noqa: BLE001 - the check reports any failure to load
        error = f"{type(e).__name__}: {str(e)[:500]}"
        return Outcome(False, error, {"error": error})


def demo_target_is_current(folder: Path, fingerprint: str) -> bool:
    """True when the demo target in `folder` was built for `fingerprint` (its manifest says so)
    and its weights and tokenizer are there: the asset reuses it instead of rebuilding."""
    from .fileio import read_manifest

    manifest = read_manifest(folder) if folder.is_dir() else None
    return bool(
        manifest
        and manifest.get("fingerprint") == fingerprint
        and (folder / "model.safetensors").exists()
        and (folder / "tokenizer.json").exists()
    )


def external_target(config: dict) -> tuple[Path | str, str, dict]:
    """A configured target used where it is (an HF folder, or a hub id not imported): returns
    (resolved folder or id, data version: 24 hex chars, details). A folder's version is its
    content's (`target_import.quick_content_version`), details `path`, `files` and the
    `model_summary` fields; a hub id's version hashes the id and revision, details `hub_id`
    (and `revision` when configured). Raises UserError when the folder has no config.json, and
    `target_import.TargetImportError` when a revision is configured for a folder."""
    from .fileio import sha256_json
    from .target_import import hub_revision, quick_content_version

    config = target_config(config)
    resolved = target_model_path(config=config)
    if isinstance(resolved, Path):
        hub_revision("folder", config)
        if not (resolved / "config.json").exists():
            raise UserError(f"configs/target.yaml path: {resolved} has no config.json (not an HF model folder)")
        version, info = quick_content_version(resolved)
        summary = model_summary(resolved)
        summary.pop("torch_dtype")
        return resolved, version, {"path": str(resolved), "files": info["files"], **summary}
    # a hub id: no network here; the id (and revision if configured) is the version
    revision = hub_revision("hub", config)
    version = sha256_json({"hub_id": resolved, "revision": revision})[:24]
    return resolved, version, {"hub_id": str(resolved), **({"revision": revision} if revision else {})}


def ensure_demo_target(out: Path, train_config: dict | None, sources_config: dict | None, log) -> dict:
    """The demo target in `out`, built from the configured sources' sample rows with
    configs/train.yaml's `demo_target:` parameters, or reused when the corpus, the parameters
    and the builder are unchanged (`demo_target_is_current`). Returns `{version (24 hex chars of
    the corpus fingerprint), cached, corpus_rows, corpus_sources, params, builder_version,
    manifest}`. Raises the builder's and the corpus loader's `UserError`s (no rows, bad source)."""
    from .fileio import read_manifest
    from .train.demo_target import (
        BUILDER_VERSION,
        build_demo_target,
        build_params,
        corpus_fingerprint,
        load_demo_corpus,
    )
    from .train.settings import train_settings

    demo_cfg = dict(train_settings(train_config)["demo_target"])
    source_keys = demo_cfg.pop("sources", None)
    params = build_params(**demo_cfg)
    rows, info = load_demo_corpus(source_keys, sources_config=sources_config, log=log)
    fingerprint = corpus_fingerprint(rows, params)
    version = fingerprint[:24]
    cached = demo_target_is_current(out, fingerprint)
    if cached:
        log(f"demo target unchanged (fingerprint {version}): reusing {out}")
    else:
        log(f"building the demo target from {len(rows)} rows of {sorted(info['sources'])} into {out}")
        build_demo_target(
            out, rows, log=log, **params, extra_manifest={"data_version": version, "corpus_sources": info}
        )
    return {
        "version": version,
        "cached": cached,
        "corpus_rows": len(rows),
        "corpus_sources": info,
        "params": params,
        "builder_version": BUILDER_VERSION,
        "manifest": read_manifest(out) or {},
    }


def materialize_target(config: dict, out: Path, root: Path, *, train_config: dict, sources_config: dict, log) -> dict:
    """The `models/target_model` asset's work, whichever kind the configured target is
    (`config`: `target_config(...)`; `out`: `<root>/models/target_model`):

    - `path: null`: the demo target, built into `out` or reused (`ensure_demo_target`);
    - a GGUF file or hub id (`needs_import`): imported into `out` as an HF folder, again only
      when its source changed (`target_import.import_unless_current`);
    - an HF folder (or a hub id not imported): used where it is (`external_target`).

    The demo and imported targets are kept immutable under `<root>/versions/target_model/<v>/`.
    Returns ``{version (24 hex chars), path (Path of the folder, or the hub id), version_path
    (Path or None), trust_remote_code, details}``; `details`: plain values for the UI (str,
    numbers, bools, dicts/lists; `kind` among them), which depend on the kind. Raises `UserError`s
    (a folder without config.json, a source that cannot be imported, a demo corpus without rows)."""
    from .versioned import publish_version

    trust = bool(config["trust_remote_code"])
    path: Path | str
    kept = True  # a folder under the data root, kept by version
    if not config.get("path"):
        demo = ensure_demo_target(out, train_config, sources_config, log)
        manifest, summary = demo["manifest"], model_summary(out)
        details = {
            "kind": "demo_target",
            "cached": demo["cached"],
            "architecture": summary["architecture"],
            "num_parameters": manifest.get("num_parameters"),
            "num_hidden_layers": summary["num_hidden_layers"],
            "hidden_size": summary["hidden_size"],
            "vocab_size": summary["vocab_size"],
            "corpus_rows": demo["corpus_rows"],
            "corpus_chars": manifest.get("num_chars"),
            "corpus_sources": demo["corpus_sources"],
            "pretrain_loss_first": manifest.get("pretrain_loss_first"),
            "pretrain_loss_last": manifest.get("pretrain_loss_last"),
            "build_params": manifest.get("params") or demo["params"],
            "builder_version": demo["builder_version"],
        }
        version, path, trust = demo["version"], out, False
    elif needs_import(str(config["path"])):
        from .target_import import import_unless_current

        manifest, kind, cached = import_unless_current(config, out, log=log)
        version, path = manifest["content_version"][:24], out
        details = {
            "kind": f"imported {kind}",
            "source": str(config["path"]),
            "trust_remote_code": trust,
            "cached": cached,
            "chat_template": config.get("chat_template"),
            **model_summary(out),
        }
    else:
        path, version, found = external_target(config)
        details = {"kind": "external", "trust_remote_code": trust, "chat_template": config.get("chat_template")}
        details.update({k: v for k, v in found.items() if k != "path"})
        log(f"target model: {path} (version {version})")
        kept = False
    # the version a draft trains against, immutable (hard links: a build replaces the folder whole)
    vdir = publish_version(out, root, "target_model", version) if kept else None
    return {
        "version": version,
        "path": path,
        "version_path": vdir,
        "trust_remote_code": trust,
        "details": details,
    }
