"""Declarative automation: which layers update by themselves, and when.

The policy, layer by layer (asset keys are the project's contracts):

- `regenerated/conversations` follows its source partition (`eager`): a source partition that
  changes is regenerated (or passed through) on its own, partition by partition.
- `mix/training_mix` is rebuilt **once** after its inputs settle: some regenerated partition
  got a new data version since the mix last ran (a re-materialization with the same version,
  e.g. a backfill that changed nothing, does not count), and nothing upstream of it is still moving — no regenerated
  or source partition missing, in progress, part of an unfinished backfill, or about to be
  requested on this tick. A backfill of all source partitions therefore produces one mix run
  after its last partition, not one per partition (`eager()` alone would not wait for the
  source layer two hops up, and would start the mix in the same tick as a regenerated run).
- `tokenized/dataset` and `tokenized/vocab_mapping` follow the mix (`eager`); on the tick the
  mix is requested they are requested with it, so mix → tokenize → vocab is one run.
- `models/draft_model` and `models/draft_evaluation` have no condition: the retraining sensor
  (`retrain_on_new_dataset`, `sensors.retrain_tick`) starts them when the tokenized dataset has a *new data
  version* whose blocking checks passed, and tags the run with that version.

All conditions are evaluated by one sensor, `specforge_automation` (on by default; interval in
`configs/automation.yaml`), which tags its runs `specforge/trigger=automation`; the first step of
such a run links it to the runs that produced its changed inputs (`assets._lineage.link_run_to_trigger`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import dagster as dg
from pydantic import BeforeValidator, Field, StrictInt, ValidationInfo

from .configmodel import ConfigModel, validate
from .fileio import sha256_json
from .keys import MIX, REGENERATED, TOKENIZED, VOCAB
from .tags import TRIGGER_AUTOMATION, TRIGGER_TAG


def _status_name(value: Any) -> Any:
    """`running` / `stopped` in any case, or a `DefaultSensorStatus`, as its lower-case name."""
    if isinstance(value, dg.DefaultSensorStatus):
        return value.value.lower()
    return value.lower() if isinstance(value, str) else value


Status = Annotated[Literal["running", "stopped"], BeforeValidator(_status_name)]


class SensorSettings(ConfigModel):
    minimum_interval_seconds: StrictInt = Field(default=30, ge=1, description="seconds between ticks")
    default_status: Status = Field(default="running", description="the state on a fresh instance")


class IncomingSensorSettings(SensorSettings):
    """The incoming folder itself is configs/sources.yaml `incoming.dir`."""

    settle_seconds: float = Field(default=5, ge=0, description="a file must be unchanged this long")


class RegisterSensorSettings(SensorSettings):
    minimum_interval_seconds: StrictInt = Field(default=60, ge=1, description="seconds between ticks")


class RetrainSensorSettings(SensorSettings):
    max_retries: int = Field(default=1, ge=0, description="re-launches of a failed retraining run")


class SensorsSection(ConfigModel):
    incoming_files: IncomingSensorSettings = Field(default_factory=IncomingSensorSettings)
    register_sources: RegisterSensorSettings = Field(default_factory=RegisterSensorSettings)
    retrain: RetrainSensorSettings = Field(default_factory=RetrainSensorSettings)
    run_failures: SensorSettings = Field(default_factory=SensorSettings)


def _null_is_default(value: Any, info: ValidationInfo) -> Any:
    """null or "" in the file: the field's declared default."""
    return OpsSection.model_fields[str(info.field_name)].default if value in (None, "") else value


OpsLog = Annotated[str, BeforeValidator(_null_is_default)]


class OpsSection(ConfigModel):
    """The ops logs (`oplog.ops_path`: `~` expanded, a relative path is under the data root)."""

    failure_log: OpsLog = Field(default="ops/failures.jsonl", description="every failed run (null: the default)")
    incoming_log: OpsLog = Field(default="ops/incoming.jsonl", description="what the file-drop sensor saw")


class AutomationFile(ConfigModel):
    """configs/automation.yaml: sensor intervals and start states, the automation sensor, ops logs."""

    sensors: SensorsSection = Field(default_factory=SensorsSection)
    automation: SensorSettings = Field(default_factory=SensorSettings)
    ops: OpsSection = Field(default_factory=OpsSection)


def automation_settings(config: dict) -> dict:
    """configs/automation.yaml's content (`store.config("automation")`; {}: the defaults) as an
    `AutomationFile` dict: unknown keys and bad values raise `configmodel.ConfigError` naming the
    field; statuses are turned into `DefaultSensorStatus`."""
    cfg = validate(AutomationFile, config, "configs/automation.yaml").model_dump()
    for section in [*cfg["sensors"].values(), cfg["automation"]]:
        section["default_status"] = dg.DefaultSensorStatus(section["default_status"].upper())
    return cfg


AC = dg.AutomationCondition


def _missing_or_in_progress() -> dg.AutomationCondition:
    """A partition that does not exist yet, or is part of a run or unfinished backfill."""
    return (AC.missing() | AC.in_progress()).with_label("missing_or_in_progress")


def _behind_its_deps() -> dg.AutomationCondition:
    """A partition whose own input updated after it did: it is about to be recomputed (its own
    eager condition) or failed to be. `will_be_requested()` cannot express this across a
    partitioned → unpartitioned boundary (it only sees requests executable in one run)."""
    return (
        AC.any_deps_match(AC.newly_updated())
        .since(AC.newly_updated())
        .with_label("input_updated_since_last_materialized")
    )


def settled_after_upstream_update() -> dg.AutomationCondition:
    """For a layer that reads *all* partitions of the layer above: run once when some dep
    updated (since this asset was last requested/updated) and the two layers above are quiet:
    no partition missing or in progress, none waiting to catch up with its own input."""
    # a new *data version* upstream, not merely a new materialization: a backfill that changes
    # nothing (every partition a cache hit, same versions) does not rebuild the mix
    updated = AC.any_deps_match(AC.data_version_changed() & ~AC.executed_with_root_target()).with_label(
        "any_deps_data_version_changed"
    )
    upstream_moving = AC.any_deps_match(
        _missing_or_in_progress() | _behind_its_deps() | AC.any_deps_match(_missing_or_in_progress())
    ).with_label("upstream_not_settled")
    return (updated.since_last_handled() & ~upstream_moving & ~AC.in_progress()).with_label(
        "once_after_upstream_settles"
    )


CONDITIONS: dict[dg.AssetKey, dg.AutomationCondition] = {
    REGENERATED: AC.eager(),
    MIX: settled_after_upstream_update(),
    TOKENIZED: AC.eager(),
    VOCAB: AC.eager(),
}


# Config that changes what an asset computes: {asset: (config file, ...)}; which settings of a
# file count is the domain's (`tokenize.build.token_settings` / `vocab_settings`,
# `target.template_settings`). Its hash joins the code_version of the asset *and of every asset
# below it*, so editing it (then "Reload definitions" in the UI) marks exactly that part of the
# graph stale ("code version changed") and nothing upstream or beside it. (Dagster does not
# propagate staleness through assets whose data versions are user-provided content hashes, as
# ours are, so the downstream assets carry the fingerprint themselves.)
CONFIG_INPUTS: dict[dg.AssetKey, tuple[str, ...]] = {
    TOKENIZED: ("tokenize", "target"),
    VOCAB: ("tokenize/vocab_mapping",),
}


def _file_settings(store, name: str) -> dict:
    """The settings of `name` (in CONFIG_INPUTS) that change an asset, read through `store` and
    validated by the file's model (a value written as its default then changes no fingerprint);
    a broken file is fingerprinted as written, so code loading goes on and the run reports the
    error."""
    from .target import target_config, template_settings
    from .tokenize.build import token_settings, tokenize_config, vocab_settings

    file = name.split("/", 1)[0]
    raw = store.config(file)
    try:
        if name == "target":
            return template_settings(target_config(raw))
        return (vocab_settings if name == "tokenize/vocab_mapping" else token_settings)(tokenize_config(raw))
    except ValueError:  # ConfigError, TokenizeConfigError
        return raw


def _own_config(key: dg.AssetKey, store) -> dict:
    return {name.split("/", 1)[0]: _file_settings(store, name) for name in CONFIG_INPUTS.get(key, ())}


def config_fingerprints(graph, store) -> dict[dg.AssetKey, str]:
    """{asset: short hash of the config it and its ancestors read}, for assets that read any.
    `store`: the `SpecforgeStore` the config is read through."""
    out: dict[dg.AssetKey, str] = {}
    for key in graph.toposorted_asset_keys:
        own = _own_config(key, store)
        inherited = sorted(out[p] for p in graph.get(key).parent_keys if p in out)
        if own or inherited:
            out[key] = sha256_json({"own": own, "upstream": inherited})[:10]
    return out


def with_automation(spec: dg.AssetSpec, fingerprints: dict | None = None) -> dg.AssetSpec:
    """`Definitions.map_asset_specs` callback: attach this module's condition to an asset
    (unless its author set one) and fold its config fingerprint into its code_version."""
    updates: dict = {}
    condition = CONDITIONS.get(spec.key)
    if condition is not None and spec.automation_condition is None:
        updates["automation_condition"] = condition
    fingerprint = (fingerprints or {}).get(spec.key)
    if fingerprint and spec.code_version:
        updates["code_version"] = f"{spec.code_version}+cfg.{fingerprint}"
    return spec.replace_attributes(**updates) if updates else spec


def apply(defs: dg.Definitions) -> dg.Definitions:
    """Conditions + config-aware code versions on the assembled Definitions (config read through
    their `store` resource)."""
    import warnings

    fingerprints = config_fingerprints(defs.resolve_asset_graph(), (defs.resources or {})["store"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.PreviewWarning)  # map_asset_specs is "preview" in 1.13
        return defs.map_asset_specs(func=lambda spec: with_automation(spec, fingerprints))


def automation_sensor(settings: dict) -> dg.AutomationConditionSensorDefinition:
    """The sensor that evaluates the conditions; `settings`: `automation_settings(...)` of
    configs/automation.yaml as read through the store."""
    cfg = settings["automation"]
    return dg.AutomationConditionSensorDefinition(
        "specforge_automation",
        target=dg.AssetSelection.all(),
        default_status=cfg["default_status"],
        minimum_interval_seconds=cfg["minimum_interval_seconds"],
        run_tags={TRIGGER_TAG: TRIGGER_AUTOMATION},
        # plain runs, not backfills: a backfill waits for the 30 s backfill daemon tick; the run
        # queue (dagster.yaml) still bounds how many run at once
        emit_backfills=False,
        description=(
            "Evaluates the layers' automation conditions: regenerated follows sources per partition; "
            "mix/tokenize run once after all source partitions settle."
        ),
    )
