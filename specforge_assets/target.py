"""Which target model the graph uses (configs/target.yaml). No Dagster import."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from .configmodel import ConfigModel, validate
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


DEFAULTS = TargetFile().model_dump()


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


def target_loads_with_chat_template(path: Path | str, trust_remote_code: bool) -> tuple[bool, str | None, dict]:
    """Does the target's tokenizer (a folder or hub id) load, and does its chat template render a
    two-message conversation? → ``(passed, description, details)``: details are
    ``{"rendered": <the rendered text>, "vocab_size": <len(tokenizer)>}`` when it passes, else
    ``{"error": "<what failed>"}`` (any exception while loading is reported, not raised);
    description is None (the check's own description says what it checks)."""
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
        if not getattr(tok, "chat_template", None):
            return False, None, {"error": f"{path}: the tokenizer has no chat_template"}
        msgs = [{"role": "user", "content": "Hello!"}, {"role": "assistant", "content": "Hi."}]
        return True, None, {"rendered": tok.apply_chat_template(msgs, tokenize=False), "vocab_size": len(tok)}
    except Exception as e:  # noqa: BLE001 - the check reports any failure to load
        return False, None, {"error": f"{type(e).__name__}: {str(e)[:500]}"}
