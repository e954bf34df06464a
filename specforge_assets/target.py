"""Which target model the graph uses (configs/target.yaml). No Dagster import."""
from __future__ import annotations

from pathlib import Path

from .paths import data_root, load_config

DEFAULTS = {"path": None, "chat_template": "qwen", "trust_remote_code": False}


def target_config(config: dict | None = None) -> dict:
    cfg = dict(DEFAULTS)
    cfg.update(load_config("target") if config is None else config)
    return cfg


def demo_target_dir(root: Path | None = None) -> Path:
    return (root or data_root()) / "models" / "target_model"


def target_model_path(root: Path | None = None, config: dict | None = None) -> Path | str:
    """The configured model dir / HF id, or the demo target's folder under the data root."""
    path = target_config(config)["path"]
    if not path:
        return demo_target_dir(root)
    p = Path(str(path)).expanduser()
    return p.resolve() if p.exists() else str(path)


def is_demo_target(config: dict | None = None) -> bool:
    return not target_config(config)["path"]
