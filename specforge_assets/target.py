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
