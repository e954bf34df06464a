"""Typed configuration declared once: one pydantic model per configs/*.yaml file, one-line errors
naming file and field, and the Launchpad config / CLI flags derived from the regeneration model."""

from __future__ import annotations

import fnmatch
import subprocess
import sys
import warnings
from pathlib import Path
from typing import get_args

import pytest
import yaml

from specforge_assets.configmodel import ConfigError
from specforge_assets.errors import user_message

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _one_line_error(fn, *args) -> str:
    with pytest.raises(ValueError) as ei:
        fn(*args)
    msg = user_message(ei.value)
    assert msg is not None and "\n" not in msg, repr(ei.value)
    return msg


def test_shipped_configs_validate_and_defaults_match_the_models():
    """Every shipped file fits its model, and a file with only the model's defaults is what an
    empty file gives (the defaults live in the model, nowhere else)."""
    from specforge_assets.automation import automation_settings
    from specforge_assets.mix.mix import mix_config
    from specforge_assets.regenerate.config import DEFAULTS, source_config
    from specforge_assets.sources.config import get_preset, sources_file
    from specforge_assets.target import target_config
    from specforge_assets.tokenize.build import tokenize_config
    from specforge_assets.train.settings import train_settings

    def load(name):
        return yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())

    automation_settings(load("automation"))
    assert mix_config(load("mix")) == mix_config({}) == mix_config(mix_config({}))
    assert target_config(load("target")) == target_config({})
    assert tokenize_config(load("tokenize"))["max_length"] == tokenize_config({})["max_length"] == 2048
    train_settings(load("train"))
    assert source_config("any", {}) == DEFAULTS
    assert source_config("sample-gsm8k", load("regenerate"))["max_tokens"] == 64
    sources = sources_file(load("sources"))
    assert sources.hub == sources_file({}).hub and sources.incoming == sources_file({}).incoming
    assert sources_file({}).presets == sources.presets  # no `presets:`: the shipped ones
    assert all(get_preset(name, sources).converter for name in sources.presets or {})


def _config_parts(name: str, data: dict):
    """(path prefix, model, the part of `data` it validates) for configs/<name>.yaml: the file's
    model, and the partial entries it keeps as dicts (regenerate.yaml `defaults:` and
    `sources.<key>:`, sources.yaml `defaults:` and `sources.<key>:`) against their entry models."""
    from specforge_assets.automation import AutomationFile
    from specforge_assets.mix.mix import MixFile
    from specforge_assets.regenerate.config import SourceRegeneration
    from specforge_assets.sources.config import SourceEntry, SourcesFile
    from specforge_assets.target import TargetFile
    from specforge_assets.tokenize.settings import TokenizeFile
    from specforge_assets.train.settings import TrainFile

    whole = {"automation": AutomationFile, "mix": MixFile, "target": TargetFile}
    whole |= {"tokenize": TokenizeFile, "train": TrainFile}
    if name in whole:
        return [("", whole[name], data)]
    entry = {"regenerate": SourceRegeneration, "sources": SourceEntry}[name]
    parts = [("defaults.", entry, data.get("defaults") or {})]
    parts += [(f"sources.{k}.", entry, v or {}) for k, v in (data.get("sources") or {}).items()]
    if name == "sources":
        parts.append(("", SourcesFile, {k: v for k, v in data.items() if k not in ("defaults", "sources")}))
    return parts


def _stated_paths(model, data: dict, prefix: str = ""):
    """Dotted paths of the values `data` states, walking into fields that are models."""
    from pydantic import BaseModel

    def fields(cls):  # a model's or a pydantic dataclass's (train.yaml `training:`) fields
        return cls.model_fields if issubclass(cls, BaseModel) else cls.__pydantic_fields__

    for k, v in data.items():
        ann = fields(model)[k].annotation
        sub = next((a for a in (ann, *get_args(ann)) if hasattr(a, "__pydantic_fields__")), None)
        if sub is not None and isinstance(v, dict):
            yield from _stated_paths(sub, v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def _dumped(model, part: dict) -> dict:
    """`part` validated by `model` (nulls meaning "the default" resolved, numbers and tuples
    normalized); a partial entry that only validates inside its file (a source entry without its
    origin) is taken as written."""
    from pydantic import ValidationError

    try:
        return model.model_validate(part).model_dump(mode="json")
    except ValidationError:
        return model.model_construct(**part).model_dump(mode="json")


def _at(dumped: dict, path: str):
    for k in path.split("."):
        dumped = dumped[k]
    return dumped


# Values the shipped configs/*.yaml set on purpose to something other than the model's default
# (`file:dotted.path`, fnmatch patterns). Every other value a shipped file states must equal the
# model's default (restated for readability), so that a changed default cannot leave a file
# silently restating the old one.
DELIBERATE_OVERRIDES = {
    # the assets' choices over SpecForge's regenerate_train_data.py defaults (RequestSettings):
    # reproducible seed, every row reaches train.jsonl, fewer progress lines in a run log
    "regenerate:defaults.seed",
    "regenerate:defaults.beyond_limit",
    "regenerate:defaults.progress_interval_s",
    # the demo: a small, fast slice of sample-gsm8k through a local CPU server
    "regenerate:sources.sample-gsm8k.enabled",
    "regenerate:sources.sample-gsm8k.max_tokens",
    "regenerate:sources.sample-gsm8k.num_samples",
    "regenerate:sources.sample-gsm8k.concurrency",
    # the shipped presets and sample sources are data (what each source is), not defaults
    "sources:presets",
    "sources:unsupported",
    "sources:sources.*.preset",
    "sources:sources.*.format",
    "sources:sources.*.data_path",
    "sources:sources.sample-opc.opc_subset",
    # the sample sources show a per-source split and quarantine threshold
    "sources:sources.sample-perfectblend.split_eval",
    "sources:sources.sample-custom.quarantine_threshold",
    # the demo draft trains in 1-2 CPU minutes (TrainConfig's defaults are SpecForge's)
    "train:training.ttt_length",
    "train:training.lr",
    "train:training.max_steps",
    "train:training.batch_size",
    "train:training.max_length",
    "train:training.save_every",
    # the default (null: one `heldout` set) written out as the example to extend
    "train:evaluation.sets",
    # the assets spot-check the fast tokenizer path (the model's default and the CLI's: off, as SpecForge)
    "tokenize:verify_every",
}


def test_shipped_configs_state_only_defaults_or_deliberate_overrides():
    """Each value a shipped configs/*.yaml states is the model's default or is listed in
    `DELIBERATE_OVERRIDES`; each listed override is still one (no stale entries)."""
    names = sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    overrides = []
    for name in names:
        data = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text()) or {}
        for prefix, model, part in _config_parts(name, data):
            given, default = _dumped(model, part), model.model_construct().model_dump(mode="json")
            for path in _stated_paths(model, part):
                if _at(given, path) != _at(default, path):
                    overrides.append(f"{name}:{prefix}{path}")
    unlisted = [o for o in overrides if not any(fnmatch.fnmatchcase(o, p) for p in DELIBERATE_OVERRIDES)]
    assert not unlisted, f"shipped values that differ from the models' defaults: {unlisted}"
    stale = [p for p in DELIBERATE_OVERRIDES if not any(fnmatch.fnmatchcase(o, p) for o in overrides)]
    assert not stale, f"listed as overrides but equal to the models' defaults: {stale}"


@pytest.mark.parametrize(
    "call, want",
    [
        (("mix", {"eval": {"fraction": 1.5}}), "configs/mix.yaml: eval.fraction: must be less than 1 (got 1.5)"),
        (("mix", {"weights": {"a": -1}}), "configs/mix.yaml: weights.a: must be greater than or equal to 0 (got -1)"),
        (("target", {"pth": "x"}), "configs/target.yaml: unknown key 'pth' (known: chat_template, path, "),
        (("tokenize", {"corrected": {"shift": True}}), "configs/tokenize.yaml: unknown key 'corrected.shift'"),
        (("tokenize", {"workers": 0}), "configs/tokenize.yaml: workers: must be greater than or equal to 1 (got 0)"),
        (("train", {"hidden_states": {"dtype": "int8"}}), "configs/train.yaml: hidden_states.dtype: must be "),
        (("train", {"training": {"lr": "fast"}}), "configs/train.yaml: training.lr: must be a valid number"),
        (("train", {"training": {"learning_rate": 1}}), "configs/train.yaml: unknown key 'training.learning_rate' ("),
        (("automation", {"ops": {"failure_lg": "x"}}), "configs/automation.yaml: unknown key 'ops.failure_lg'"),
        (("sources", {"hubb": {}}), "configs/sources.yaml: unknown key 'hubb' (known: defaults, hub, incoming, "),
        (("sources", {"hub": {"offline": "no"}}), "configs/sources.yaml: hub.offline: must be true or false"),
        (("sources", {"presets": {"p": {"hub_id": "a/b"}}}), "configs/sources.yaml: presets.p.converter: Field req"),
        (("sources", {"presets": {"p": {"converter": "pair"}}}), "configs/sources.yaml: presets.p: needs 'hub_id' or"),
        (
            ("regenerate", {"sources": {"a": {"launch": {"backend": "vllm"}}}}),
            "regenerate.yaml sources.a: launch.backend: must be 'auto', 'transformers' or 'sglang' (got 'vllm')",
        ),
    ],
)
def test_bad_values_are_one_line_errors_naming_file_and_field(call, want):
    from specforge_assets.automation import automation_settings
    from specforge_assets.mix.mix import mix_config
    from specforge_assets.regenerate.config import source_config
    from specforge_assets.sources.config import sources_file
    from specforge_assets.target import target_config
    from specforge_assets.tokenize.build import tokenize_config
    from specforge_assets.train.settings import train_settings

    fns = {
        "sources": sources_file,
        "mix": mix_config,
        "target": target_config,
        "tokenize": tokenize_config,
        "train": train_settings,
        "automation": automation_settings,
        "regenerate": lambda cfg: source_config("a", cfg),
    }
    name, cfg = call
    assert _one_line_error(fns[name], cfg).startswith(want)


def test_regeneration_values_are_refused_in_the_layer_that_sets_them():
    from specforge_assets.regenerate.config import source_config

    ok = {"defaults": {"temperature": 1.5}, "sources": {"a": {"max_tokens": 10}}}
    assert source_config("a", ok)["temperature"] == 1.5
    with pytest.raises(ConfigError, match=r"^run config: top_p: must be less than or equal to 1 \(got 2\)$"):
        source_config("a", ok, {"top_p": 2})
    with pytest.raises(ConfigError, match=r"^regenerate.yaml sources.a: reasoning: must be 'none', 'save' or"):
        source_config("a", {"sources": {"a": {"reasoning": "think"}}})


def test_launchpad_config_is_derived_from_the_settings_model():
    """The Launchpad form has every setting of configs/regenerate.yaml except the nested/secret
    ones, all unset by default (unset = the file's value), choices as enums; the removed client
    settings are not offered."""
    import dagster as dg

    from specforge_assets.assets.regenerate import RegenerateConfig
    from specforge_assets.regenerate.config import SourceRegeneration

    fields = set(RegenerateConfig.model_fields)
    assert fields == set(SourceRegeneration.model_fields) - {"launch", "extra_body", "api_key_env"}
    assert not {"workers", "transport", "connections_per_client"} & fields
    cfg = RegenerateConfig()
    assert all(getattr(cfg, f) is None for f in fields)
    assert issubclass(RegenerateConfig, dg.Config)
    reasoning = RegenerateConfig.model_fields["reasoning"].annotation
    from specforge_assets.assets._config import overrides

    assert overrides(RegenerateConfig(reasoning="save", max_tokens=7)) == {"reasoning": "save", "max_tokens": 7}
    assert "none" in str(reasoning.__args__[0].__members__).lower()  # the enum the Launchpad offers


def test_the_servers_resource_is_derived_from_the_settings_model():
    """The `regen_servers` resource's fields are configs/regenerate.yaml's `server_addresses` and
    `model` (same names, descriptions, unset = the file's value) plus the secret `api_key`."""
    from specforge_assets.assets.regenerate import RegenerationServers
    from specforge_assets.regenerate.config import SourceRegeneration, source_config

    fields = RegenerationServers.model_fields
    assert set(fields) == {"server_addresses", "model", "api_key"}
    for name in ("server_addresses", "model"):
        assert fields[name].description.startswith(SourceRegeneration.model_fields[name].description)
    unset = RegenerationServers()
    yaml_cfg = {"sources": {"a": {"server_addresses": ["file:1"], "model": "m"}}}
    deployment = {"server_addresses": unset.server_addresses, "model": unset.model}
    assert source_config("a", yaml_cfg, None, deployment=deployment) == source_config("a", yaml_cfg)


def test_cli_flags_are_derived_from_the_settings_model():
    """Each user setting is a flag named after its field; --help shows the model's default; a
    value out of bounds is one `error:` line naming the flag (exit 2)."""
    from specforge_assets.regenerate.cli import flag_of
    from specforge_assets.regenerate.settings import SETTINGS_KEYS, RequestSettings

    cli = [sys.executable, "-m", "specforge_assets.cli", "regenerate"]
    helptext = subprocess.run(cli + ["--help"], capture_output=True, text=True, timeout=120).stdout
    flat = " ".join(helptext.split())
    for field in SETTINGS_KEYS:
        assert flag_of(field) in helptext, field
    assert f"(default: {RequestSettings.model_fields['max_tokens'].default})" in flat
    assert "--request-timeout" in helptext and "--lock-wait" in helptext  # SpecForge's names kept
    r = subprocess.run(
        cli
        + ["--model", "m", "--server-address", "h:1", "--input-file-path", "x", "--output-file-path", "y"]
        + ["--temperature", "5", "--concurrency", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "error: --temperature: must be less than or equal to 2 (got 5.0); "
        "--concurrency: must be greater than or equal to 1 (got 0)"
    )


def test_removed_settings_only_warn_in_files():
    from specforge_assets.regenerate.config import source_config
    from specforge_assets.regenerate.settings import RegenSettingDeprecated

    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        cfg = source_config("a", {"defaults": {"workers": 4}})
    assert [w.category for w in got] == [RegenSettingDeprecated] and "workers" not in cfg


def test_no_module_reads_config_when_imported(tmp_path):
    """Config is read through the store when the definitions are built, never when a module is
    imported: with every config file unreadable, every module except `definitions` imports."""
    broken = tmp_path / "configs"
    broken.mkdir()
    for name in ("automation", "regenerate", "sources", "target", "tokenize", "train", "mix"):
        (broken / f"{name}.yaml").write_text("{ not: yaml: [\n")
    code = (
        "import specforge_assets.sensors, specforge_assets.automation, specforge_assets.assets.regenerate, "
        "specforge_assets.assets.sources, specforge_assets.assets.mix, specforge_assets.assets.tokenize, "
        "specforge_assets.assets.models, specforge_assets.partitions"
    )
    env = {**__import__("os").environ, "SPECFORGE_CONFIG_DIR": str(broken)}
    r = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_definitions_read_config_through_the_store(tmp_path):
    import shutil

    import dagster as dg

    from specforge_assets.definitions import build_definitions
    from specforge_assets.resources import SpecforgeStore

    cfg = tmp_path / "configs"
    shutil.copytree(CONFIGS, cfg)
    (cfg / "automation.yaml").write_text(
        yaml.safe_dump({"sensors": {"retrain": {"minimum_interval_seconds": 99, "default_status": "stopped"}}})
    )
    (cfg / "regenerate.yaml").write_text(yaml.safe_dump({"defaults": {"enabled": False}}))
    defs = build_definitions(SpecforgeStore(data_root=str(tmp_path / "data"), config_dir=str(cfg)))
    sensor = defs.get_sensor_def("retrain_on_new_dataset")
    assert sensor.minimum_interval_seconds == 99 and sensor.default_status == dg.DefaultSensorStatus.STOPPED
    # no source regenerates through a launched demo target: regenerated does not wait for it
    parents = defs.resolve_asset_graph().get(dg.AssetKey(["regenerated", "conversations"])).parent_keys
    assert parents == {dg.AssetKey(["sources", "conversations"])}


def test_train_settings_defaults_live_in_one_declaration():
    """train.yaml's `training:` is validated against `TrainConfig` but returned as written (the
    run fingerprint hashes it); readers take the values, defaults included, from `TrainConfig`.
    The `trainer` resource is derived from the same declarations."""
    import dagster as dg

    from specforge_assets.assets.models import DraftTrainer
    from specforge_assets.train.settings import LaunchSettings, TrainConfig, make_train_config, train_settings

    s = train_settings({"training": {"max_length": 64}, "evaluation": {"device": ""}})
    assert s["training"] == {"max_length": 64}
    cfg = make_train_config(s["training"])
    assert isinstance(cfg, TrainConfig) and cfg.max_length == 64 and cfg.ttt_length == TrainConfig().ttt_length
    assert make_train_config({}).max_length == 2048  # the one default
    assert s["evaluation"]["device"] == "auto"  # empty: the declared default
    assert issubclass(DraftTrainer, dg.ConfigurableResource)
    fields = DraftTrainer.model_fields
    assert set(fields) == {"nproc_per_node", "device", "mode", "max_steps"}
    assert all(f.default is None for f in fields.values())
    assert fields["device"].description.startswith(LaunchSettings.model_fields["device"].description)
    assert "built-in default 'online'" in fields["mode"].description


def test_tokenize_cli_defaults_are_the_tokenize_models():
    """`tokenize --max-length/--workers` and `vocab-mapping --draft-vocab-size` default to
    configs/tokenize.yaml's model (one declaration)."""
    from specforge_assets.cli import build_parser
    from specforge_assets.tokenize.settings import TokenizeFile, TokenizeVocab

    parser = build_parser()
    tok = parser.parse_args(["tokenize", "--input", "i", "--tokenizer", "t", "--chat-template", "q", "--output", "o"])
    assert tok.max_length == TokenizeFile.model_fields["max_length"].default == 2048
    assert tok.workers == TokenizeFile.model_fields["workers"].default == 1
    vm = parser.parse_args(["vocab-mapping", "--input", "i", "--target-vocab-size", "9", "--output", "o"])
    assert vm.draft_vocab_size == TokenizeVocab.model_fields["draft_vocab_size"].default == 32000


def test_tokenize_library_defaults_are_the_tokenize_model():
    """`tokenize_jsonl`'s defaults for library callers are configs/tokenize.yaml's (one declaration)."""
    import inspect

    from specforge_assets.tokenize.dataset import tokenize_jsonl
    from specforge_assets.tokenize.settings import TokenizeFile

    params = inspect.signature(tokenize_jsonl).parameters
    for name in ("workers", "shard_rows", "verify_every"):
        assert params[name].default == TokenizeFile.model_fields[name].default, name
    assert (params["shard_rows"].default, params["verify_every"].default) == (50000, 0)


def test_training_library_defaults_are_the_train_models():
    """The training, hidden-state and evaluation functions' defaults for library callers are
    configs/train.yaml's models' (one declaration each)."""
    import dataclasses
    import inspect

    from specforge_assets.train.eval_report import evaluate_drafts
    from specforge_assets.train.evaluate import evaluate_acceptance
    from specforge_assets.train.hidden_states import write_hidden_states
    from specforge_assets.train.loss import TTTLossModule, eagle3_ttt_loss
    from specforge_assets.train.settings import EvaluationSettings, HiddenStatesSettings, TrainConfig

    train = {f.name: f.default for f in dataclasses.fields(TrainConfig)}

    def defaults(fn) -> dict:
        return {n: p.default for n, p in inspect.signature(fn).parameters.items()}

    for fn in (eagle3_ttt_loss, TTTLossModule.__init__):
        got = defaults(fn)
        assert (got["ttt_length"], got["step_weight"]) == (train["ttt_length"], train["step_weight"]) == (7, 0.8)
    got = defaults(write_hidden_states)
    hidden = HiddenStatesSettings()
    assert (got["rows_per_shard"], got["dtype"], got["max_rows"]) == (hidden.rows_per_shard, hidden.dtype, None)
    assert got["max_length"] == train["max_length"]
    evaluation = EvaluationSettings()
    got = defaults(evaluate_drafts)
    for name in ("k", "max_new_tokens", "num_prompts", "max_prompt_tokens", "untrained_seed", "device", "workers"):
        assert got[name] == getattr(evaluation, name), name
    got = defaults(evaluate_acceptance)
    assert (got["k"], got["max_new_tokens"]) == (evaluation.k, evaluation.max_new_tokens) == (4, 48)


def test_demo_target_parameters_are_one_model():
    """configs/train.yaml `demo_target:` is a model: the build parameters are its defaults, a
    misspelt key is one line naming file and field."""
    from specforge_assets.train.demo_target import build_params
    from specforge_assets.train.settings import DemoTargetSettings, train_settings

    assert build_params() == DemoTargetSettings().model_dump(exclude={"sources"})
    assert build_params(seed=None, pretrain_steps=3)["pretrain_steps"] == 3
    shipped = yaml.safe_load((CONFIGS / "train.yaml").read_text())["demo_target"]
    assert {k: build_params()[k] for k in shipped} == shipped  # the shipped file repeats the defaults
    msg = _one_line_error(train_settings, {"demo_target": {"hiden_size": 64}})
    assert msg.startswith("configs/train.yaml: unknown key 'demo_target.hiden_size' (known: batch_size, ")


def test_train_overrides_are_one_list():
    """`train/settings.OVERRIDES` is the one list of per-run overrides: every entry is a
    `specforge-assets train` flag, the `trainer` resource has exactly the Launchpad ones, and each
    override lands in its section of configs/train.yaml."""
    from specforge_assets.assets.models import DraftTrainer
    from specforge_assets.cli import build_parser
    from specforge_assets.train.settings import OVERRIDES, override_settings, train_settings

    args = build_parser().parse_args(["train", "--mode", "offline", "--ttt-length", "3", "--node-rank", "0"])
    assert all(hasattr(args, name) for name in OVERRIDES)
    assert set(DraftTrainer.model_fields) == {n for n, o in OVERRIDES.items() if o.launchpad}
    s = override_settings(train_settings({}), **{n: getattr(args, n) for n in OVERRIDES})
    assert s["launch"]["mode"] == "offline" and s["training"]["ttt_length"] == 3 and s["launch"]["node_rank"] == 0
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--mode", "fast"])  # the model's Literal choices


def test_training_device_is_not_a_setting():
    """The training processes' device is `launch.device` (the launcher sets it per rank): a
    `training.device` would have no effect, so it is refused like any unknown key."""
    from specforge_assets.train.errors import TrainInputError
    from specforge_assets.train.settings import train_settings

    with pytest.raises(TrainInputError, match=r"unknown key 'training\.device'"):
        train_settings({"training": {"device": "cpu"}})
    assert train_settings({"launch": {"device": "cpu"}})["launch"]["device"] == "cpu"
