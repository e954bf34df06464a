"""configs/regenerate.yaml: defaults + per-source overrides + per-run overrides -> one flat config."""

from __future__ import annotations

import copy
from typing import Any

from ..paths import load_config
from .settings import drop_deprecated

DEFAULTS: dict[str, Any] = {
    "enabled": False,
    "model": None,  # name sent in requests; null -> the launched server's model
    "server_addresses": [],  # HOST:PORT list; empty -> launch a local server
    "launch": {"model_path": None, "backend": "auto", "startup_timeout_s": 300, "extra_args": [], "device": "cpu"},
    "api_key_env": "SPECFORGE_REGEN_API_KEY",
    "dialect": "auto",  # auto: "transformers" for a launched `transformers serve`, else "openai"
    "max_tokens": 4096,
    "temperature": 0.7,
    "top_p": None,
    "top_k": None,
    "min_p": None,
    "repetition_penalty": None,
    "seed": 0,
    "reasoning": "none",
    "extra_body": {},
    "num_samples": None,
    "beyond_limit": "passthrough",
    "concurrency": 64,
    "connect_timeout_s": 5.0,
    "request_timeout_s": 600.0,
    "max_attempts": 6,
    "test_split": "passthrough",  # passthrough | regenerate
    "truncation_threshold": 0.5,  # check: max fraction of turns cut at max_tokens
    "restart": False,
    "lock_wait_s": 0,  # a second run of a busy partition: wait this long for it, then refuse (0: refuse at once)
    "progress_interval_s": 15.0,  # progress line (rows, rows/s, tokens/s, ETA) in the run log
}

SETTINGS_KEYS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "repetition_penalty",
    "seed",
    "reasoning",
    "extra_body",
    "num_samples",
    "beyond_limit",
    "concurrency",
    "connect_timeout_s",
    "request_timeout_s",
    "max_attempts",
    "lock_wait_s",
    "progress_interval_s",
)


def _merge(base: dict, over: dict, where: str) -> dict:
    """`base` updated by `over` (mappings merged one level deep, `extra_body` replaced). An unknown
    key is refused naming `where`; a removed client setting (`settings.DEPRECATED`: workers,
    transport, connections_per_client) is dropped with a one-line FutureWarning naming `where`."""
    out = copy.deepcopy(base)
    over = drop_deprecated(dict(over or {}), where)
    for k, v in over.items():
        if k not in DEFAULTS:
            raise ValueError(f"{where}: unknown regeneration key {k!r} (known: {', '.join(sorted(DEFAULTS))})")
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "extra_body":
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return out


def source_config(key: str, yaml_cfg: dict | None = None, overrides: dict | None = None) -> dict:
    """Effective regeneration config of one source: DEFAULTS < yaml defaults < yaml sources.<key> < overrides
    (overrides: the Launchpad run config; None values mean "not set")."""
    cfg = load_config("regenerate") if yaml_cfg is None else yaml_cfg
    merged = _merge(DEFAULTS, cfg.get("defaults") or {}, "regenerate.yaml defaults")
    merged = _merge(merged, (cfg.get("sources") or {}).get(key) or {}, f"regenerate.yaml sources.{key}")
    merged = _merge(merged, {k: v for k, v in (overrides or {}).items() if v is not None and v != []}, "run config")
    return merged


def any_source_launches_demo_target(yaml_cfg: dict | None = None) -> bool:
    """True when some source regenerates through a launched server for the default (demo) target."""
    cfg = load_config("regenerate") if yaml_cfg is None else yaml_cfg
    keys = set((cfg.get("sources") or {}).keys())
    for key in keys or {"__default__"}:
        c = source_config(key, cfg)
        if c["enabled"] and not c["server_addresses"] and not c["launch"].get("model_path"):
            return True
    return False
