"""configs/regenerate.yaml: defaults + per-source overrides + per-run overrides -> one flat config.

`SourceRegeneration` is the one declaration of a source's regeneration settings (the file's
`defaults:` and each `sources.<key>:` are partial copies of it). The Launchpad run config
(`assets/regenerate.py`), the CLI flags (`cli.py`, through `settings.RequestSettings`) and the
cache fingerprint (`cache.CONTENT_KEYS`) derive from these models; nothing else declares a
default. Errors are `configmodel.ConfigError`: one line naming the file section and the field.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Callable, Literal

from pydantic import Field

from ..configmodel import ConfigError, ConfigModel, validate
from .settings import RequestSettings, drop_deprecated

API_KEY_ENV = "SPECFORGE_REGEN_API_KEY"  # the env var holding the deployment's API key for the servers
Backend = Literal["auto", "transformers", "sglang"]  # auto: sglang when installed, else transformers


class ServerLaunchSettings(ConfigModel):
    """The local server started when a source has no `server_addresses`."""

    model_path: str | None = Field(default=None, description="null: the configured target (configs/target.yaml)")
    backend: Backend = Field(default="auto", description="auto: sglang when installed, else transformers")
    device: str = Field(default="cpu", description="transformers serve --device")
    startup_timeout_s: float = Field(default=300, gt=0)
    extra_args: list[str] = Field(default_factory=list, description="appended to the server command line")


class SourceRegeneration(RequestSettings, ConfigModel):
    """A source's effective regeneration settings (`source_config`): the run knobs of
    `RequestSettings` with their defaults (SpecForge's; the shipped configs/regenerate.yaml
    `defaults:` changes `seed`, `beyond_limit` and `progress_interval_s` for the assets), plus the
    asset's own settings below. `dialect` here is the *requested* one ("auto" included), resolved
    into `RegenSettings.dialect` (openai | transformers) when a run starts
    (`partition.servers_for`)."""

    enabled: bool = False
    model: str | None = Field(default=None, description="name sent in requests; null: the launched server's model")
    server_addresses: list[str] = Field(default_factory=list, description="HOST:PORT list; empty: launch a server")
    launch: ServerLaunchSettings = Field(default_factory=ServerLaunchSettings)
    api_key_env: str | None = Field(
        default=None,
        description="null: the deployment's API key ($SPECFORGE_REGEN_API_KEY; in Dagster the regen_servers "
        "resource's api_key EnvVar); a name: the env var holding this source's servers' own key; '': no key",
    )
    # The requested dialect, not `RegenSettings.dialect` (the resolved one a run sends with):
    # "auto" becomes transformers or openai in `partition.servers_for`.
    dialect: Literal["auto", "openai", "transformers"] = Field(
        default="auto", description="auto: transformers for a launched `transformers serve`, else openai"
    )
    test_split: Literal["passthrough", "regenerate"] = "passthrough"
    truncation_threshold: float = Field(
        default=0.5, ge=0, le=1, description="check: max share of turns cut at max_tokens"
    )
    restart: bool = Field(default=False, description="discard a partial run made with other settings")


class RegenerateFile(ConfigModel):
    """configs/regenerate.yaml: `defaults` and `sources.<key>` are partial `SourceRegeneration`s
    (checked key by key when merged, so the error names the section)."""

    defaults: dict[str, Any] = Field(default_factory=dict)
    sources: dict[str, dict[str, Any] | None] = Field(default_factory=dict)


DEFAULTS: dict[str, Any] = SourceRegeneration().model_dump()


def _merge(base: dict, over: dict, where: str) -> dict:
    """`base` updated by `over` (`launch` merged one level deep, `extra_body` replaced), then
    validated as `SourceRegeneration`: an unknown key or a bad value is refused naming `where`;
    a removed client setting (`settings.DEPRECATED`: workers, transport, connections_per_client)
    is dropped with a one-line FutureWarning naming `where`."""
    out = copy.deepcopy(base)
    if not isinstance(over, dict):
        raise ConfigError(f"{where}: must be a mapping of regeneration settings, got {type(over).__name__}")
    over = drop_deprecated(dict(over), where)
    for k, v in over.items():
        if k not in SourceRegeneration.model_fields:
            raise ConfigError(f"{where}: unknown regeneration key {k!r} (known: {', '.join(sorted(DEFAULTS))})")
        if k == "launch" and isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = {**out[k], **v}
        else:
            out[k] = v
    return validate(SourceRegeneration, out, where, noun="regeneration key").model_dump()


def source_config(
    key: str, yaml_cfg: dict | None = None, overrides: dict | None = None, deployment: dict | None = None
) -> dict:
    """Effective regeneration config of one source (a `SourceRegeneration` as a dict):
    model defaults < yaml `defaults` < yaml `sources.<key>` < `deployment` (the deployment's
    servers: the `regen_servers` resource's `server_addresses` / `model`) < `overrides` (the
    Launchpad run config). In `deployment` and `overrides`, None, "" and [] mean "not set".
    `yaml_cfg` None reads configs/regenerate.yaml. Raises ConfigError naming the file or layer
    and the field for a bad value."""
    if yaml_cfg is None:
        from ..paths import load_config

        yaml_cfg = load_config("regenerate")
    cfg = validate(RegenerateFile, yaml_cfg, "configs/regenerate.yaml")
    merged = _merge(DEFAULTS, cfg.defaults, "regenerate.yaml defaults")
    merged = _merge(merged, cfg.sources.get(key) or {}, f"regenerate.yaml sources.{key}")
    merged = _merge(merged, _given(deployment), "regen_servers resource")
    return _merge(merged, _given(overrides), "run config")


def _given(values: dict | None) -> dict:
    return {k: v for k, v in (values or {}).items() if v is not None and v != [] and v != ""}


def source_api_key(cfg: dict, deployment_key: str | None) -> str | None:
    """The API key for the servers of a source config (`source_config`): `deployment_key` (the
    Dagster resource's EnvVar secret, or $SPECFORGE_REGEN_API_KEY for the CLI) when its
    `api_key_env` is null; the value of the env var it names otherwise (servers with their own
    key); None for `api_key_env: ''` or an unset/empty variable. Never logged or written."""
    name = cfg.get("api_key_env")
    if name is None:
        return deployment_key or None
    return (os.environ.get(name) or None) if name else None


def any_source_launches_demo_target(yaml_cfg: dict) -> bool:
    """True when some source of `yaml_cfg` (configs/regenerate.yaml) regenerates through a
    launched server for the configured target (no `launch.model_path`)."""
    keys = set(validate(RegenerateFile, yaml_cfg, "configs/regenerate.yaml").sources)
    for key in keys or {"__default__"}:
        c = source_config(key, yaml_cfg)
        if c["enabled"] and not c["server_addresses"] and not c["launch"].get("model_path"):
            return True
    return False


def needs_demo_target(config: Callable[[str], dict]) -> bool:
    """Whether regenerated/conversations depends on models/target_model: some source launches a
    server for the configured target (`any_source_launches_demo_target` of
    ``config("regenerate")``) and that target is the demo one built by the platform
    (`target.is_demo_target` of ``config("target")``). `config`: a config file's name → its
    parsed YAML (`SpecforgeStore.config`); "target" is read only when needed.

    A config that cannot be read or does not validate (OSError, ValueError: ConfigError is one)
    gives False: this is asked while the code location loads, which must not fail on a broken
    file; the run that reads the same file then reports the error naming it."""
    try:
        if not any_source_launches_demo_target(config("regenerate")):
            return False
        from ..target import is_demo_target

        return is_demo_target(config("target"))
    except (ValueError, OSError):
        return False
