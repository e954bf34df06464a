"""Layer: models — the target, the trained EAGLE3 draft, its acceptance evaluation, and
(optional) offline target hidden states.

Thin wrappers: the work happens in `specforge_assets.train.*` (no Dagster there). Training runs
in a separate `torchrun` process launched through Dagster Pipes (resource "pipes"), so swapping
the Pipes client moves it to a GPU box or a cluster without touching the asset.
"""

import time
from pathlib import Path

import dagster as dg

from ..checks import models as model_checks
from ._checks import InAssetCheck, asset_check, check_results, check_specs, result
from ._failures import expected_failures
from ._metadata import code_block, entries, markdown_table, pictures, png, table
from .. import charts
from ._draft_checks import DRAFT_MATCHES_LATEST
from ._lineage import (
    find_record,
    latest_record,
    latest_versions,
    lineage_metadata,
    pinned_input,
    record_metadata,
    record_version,
    recorded,
)
from ..lineage import input_rows
from ._config import overrides, overrides_config
from ..resources import SpecforgeStore
from ..tags import OPTIONAL_TAG, TRAINED_ON_TAG
from ..train.inputs import hidden_states_inputs, offline_hidden_states
from ..train.settings import LaunchSettings, TrainConfig, make_train_config, override_settings, train_settings
from ..train.settings import OVERRIDES
from ..versioned import existing_version_dir

GROUP = "models"
from ..keys import TARGET as TARGET_KEY
from ..keys import DRAFT as DRAFT_KEY
from ..keys import EVALUATION as EVAL_KEY
from ..keys import HIDDEN_STATES as HIDDEN_KEY
from ..keys import MIX as MIX_KEY
from ..keys import TOKENIZED as DATASET_KEY
from ..keys import VOCAB as VOCAB_KEY

# Dagster code versions (bump one when what its asset computes changes: the asset and everything
# below it turn stale). Not the domain's cache keys: the training fingerprint carries its own
# `train.launch.TRAIN_CODE_VERSION`, the demo target its `BUILDER_VERSION`.
TARGET_CODE_VERSION = "target-v1"
DRAFT_CODE_VERSION = "draft-v1"
EVAL_CODE_VERSION = "eval-v1"
HIDDEN_CODE_VERSION = "hidden-v1"


class DraftTrainer(  # type: ignore[misc]  # a base made at import from the one declaration
    overrides_config(
        (LaunchSettings, TrainConfig),
        "DraftTrainerSettings",
        include=tuple(name for name, o in OVERRIDES.items() if o.launchpad),
        base=dg.ConfigurableResource,
        enums=False,
    )
):
    """Training launch settings, derived from configs/train.yaml's models (`launch.nproc_per_node`,
    `launch.device`, `launch.mode`, `training.max_steps`). Unset, empty or zero fields mean "as in
    configs/train.yaml"."""

    def settings(self, store: SpecforgeStore) -> dict:
        """configs/train.yaml's sections (`train_settings`) with this resource's set fields over
        them, validated again (`TrainInputError`: one line naming the field)."""
        return override_settings(train_settings(store.config("train")), **overrides(self))


# -- checks ------------------------------------------------------------------------------------


TARGET_CHECK = InAssetCheck(
    "loads_with_chat_template",
    True,
    "tokenizer loads and its chat template renders a conversation",
    model_checks.target_loads,
)
DRAFT_CHECK = InAssetCheck(
    "sglang_checkpoint_format",
    True,
    "config.json + model.safetensors hold exactly the tensors SGLang's EAGLE3 loader expects",
    model_checks.draft_format,
)
EVAL_CHECKS = [
    InAssetCheck(
        "lossless",
        True,
        "speculative output == the target's plain greedy output, token for token",
        model_checks.lossless,
    ),
    InAssetCheck(
        "trained_beats_untrained",
        False,
        "the trained draft's acceptance length is above an untrained draft's",
        model_checks.trained_beats_untrained,
        severity="WARN",
    ),
]


def _chat_template_preview(check: dg.AssetCheckResult) -> dict:
    """The target check's rendered conversation, as a code block (absent when it failed)."""
    rendered = check.metadata.get("rendered")
    return {"chat_template_preview": code_block(rendered.value)} if rendered is not None else {}


# -- models/target_model ------------------------------------------------------------------------


@dg.asset(
    key=TARGET_KEY,
    # Its own group: the target feeds regeneration (a local server) as well as training, so inside
    # `models` the collapsed lineage had a cycle (models → regenerated → mix → tokenized → models);
    # apart, the groups read left to right: target → sources → regenerated → mix → tokenized → models.
    group_name="target",
    kinds={"pytorch", "huggingface"},
    code_version=TARGET_CODE_VERSION,
    check_specs=check_specs(TARGET_KEY, [TARGET_CHECK]),
)
def target_model(context: dg.AssetExecutionContext, store: SpecforgeStore):
    """The target model the draft is trained for (configs/target.yaml).

    `path: null` (default): the demo target — a byte-level BPE tokenizer with a ChatML template
    and a small Qwen2 (4 layers, ~1M parameters) pretrained briefly on the configured sources'
    sample rows, built into `<data root>/models/target_model`; rebuilt only when the corpus, the
    build parameters (configs/train.yaml `demo_target:`) or the builder change.
    Otherwise: the configured local folder or hub id, recorded with a content version."""
    from ..target import materialize_target, target_config

    with expected_failures():
        target = materialize_target(
            target_config(store.config("target")),
            store.layer_dir("models", "target_model"),
            store.root(),
            train_config=store.config("train"),
            sources_config=store.config("sources"),
            log=context.log.info,
        )
    check = result(TARGET_KEY, TARGET_CHECK, path=target["path"], trust_remote_code=target["trust_remote_code"])
    md = entries(target["details"])
    if isinstance(target["path"], Path):  # a hub id used where it is: `hub_id` in the details
        md["path"] = dg.MetadataValue.path(str(target["path"]))
    if target["version_path"] is not None:
        md["version_path"] = dg.MetadataValue.path(str(target["version_path"]))
    md.update(_chat_template_preview(check))
    yield dg.MaterializeResult(data_version=dg.DataVersion(target["version"]), metadata=md)
    yield check


# -- models/draft_model -------------------------------------------------------------------------


@dg.asset(
    key=DRAFT_KEY,
    group_name=GROUP,
    deps=[DATASET_KEY, VOCAB_KEY, TARGET_KEY],
    pool="gpu",
    kinds={"pytorch"},
    code_version=DRAFT_CODE_VERSION,
    check_specs=check_specs(DRAFT_KEY, [DRAFT_CHECK]),
)
def draft_model(
    context: dg.AssetExecutionContext,
    store: SpecforgeStore,
    pipes: dg.PipesSubprocessClient,
    trainer: DraftTrainer,
):
    """EAGLE3 draft (`LlamaForCausalLMEagle3`) trained against the target.

    Launches `torchrun --nproc_per_node N -m specforge_assets.train.entry` through Dagster
    Pipes (gloo on CPU, NCCL on GPU; only rank 0 reports). Logs stream into this run; loss, TTT
    accuracies and tokens/s land in metadata.

    Reads its inputs by version, never "whatever is current": the tokenized dataset version this
    run was requested for (the retraining sensor's `specforge/trigger_data_version` tag, else the
    latest), the vocab mapping built from exactly that dataset, and the mix and target that
    dataset was made from, all from their immutable `<data root>/versions/<artifact>/<v>/`
    folders; they are recorded in metadata (`lineage/inputs`, `lineage/input_versions`,
    `trained_on_dataset_version`) and manifest.json. Training happens in a work folder of its own
    (keyed by the inputs' versions and the config: a crashed or cancelled run resumes from its
    last checkpoint when relaunched with the same inputs). The checkpoint is kept as
    `<data root>/versions/draft_model/<v>/`, then published as `models/draft_model/` (the
    previous one moves to `models/draft_model_previous/`)."""
    from ..train.launch import prepare_launch, prune_work_dirs

    root = store.root()
    settings = trainer.settings(store)
    inputs = _training_inputs(context, store)
    upstream = inputs.versions
    hidden = None
    if settings["launch"]["mode"] == "offline":
        with expected_failures():
            hidden, upstream[HIDDEN_KEY.to_user_string()] = offline_hidden_states(
                root, record_version(latest_record(context.instance, HIDDEN_KEY))
            )
    with expected_failures():
        spec, spec_path, cmd = prepare_launch(
            root=root,
            settings=settings,
            target_path=inputs.target,
            dataset_path=inputs.dataset,
            vocab_mapping_path=inputs.vocab_mapping,
            upstream_data_versions=upstream,
            hidden_states_path=hidden,
            run_id=context.run.run_id,
            inputs=inputs.pinned,
        )
    context.log.info(
        f"training on tokenized/dataset {upstream[DATASET_KEY.to_user_string()]} "
        f"(vocab {upstream[VOCAB_KEY.to_user_string()]}, mix {upstream[MIX_KEY.to_user_string()]}, "
        f"target {upstream[TARGET_KEY.to_user_string()]}) in {spec['work_dir']}"
    )
    context.log.info(f"launching: {' '.join(cmd)}")
    t0 = time.time()
    completed = pipes.run(
        context=context,
        command=cmd,
        extras={
            "spec_path": str(spec_path),
            "fingerprint": spec["fingerprint"],
            "mode": spec["mode"],
            "nproc_per_node": spec["nproc_per_node"],
        },
    )
    mr = completed.get_materialize_result()
    prune_work_dirs(spec, protect=_work_dirs_in_use(context.instance, Path(spec["work_dir"]).parent))
    version = mr.data_version.value if mr.data_version else None
    vdir = existing_version_dir(root, "draft_model", version)
    out = vdir if vdir is not None else Path(spec["out_dir"])
    check = result(DRAFT_KEY, DRAFT_CHECK, out=out)
    md = dict(mr.metadata or {})
    md["launch_command"] = dg.MetadataValue.text(" ".join(cmd))
    md["wall_seconds"] = round(time.time() - t0, 2)
    md["trained_on_dataset_version"] = upstream[DATASET_KEY.to_user_string()] or ""
    read = dict(spec["inputs"])
    if hidden is not None:
        read[HIDDEN_KEY.to_user_string()] = {"data_version": upstream[HIDDEN_KEY.to_user_string()], "path": str(hidden)}
    md.update(lineage_metadata(input_rows(read)))
    md["work_dir"] = dg.MetadataValue.path(spec["work_dir"])
    if vdir is not None:
        md["version_path"] = dg.MetadataValue.path(str(vdir))
    history = charts.load_metrics(out)  # the loss curve of every draft: inline, and full size one click away
    md["metrics"] = table(charts.metrics_table(history))  # loss, TTT accuracy, lr, tokens/s by step: inline
    if history:
        md.update(pictures(loss_curve=charts.loss_curve_inline_md(history)))
        md["loss_curve_detail"] = png(charts.loss_curve_png(history), "loss and TTT accuracy per step")
    yield dg.MaterializeResult(metadata=md, data_version=mr.data_version)
    yield check


def _training_inputs(context, store: SpecforgeStore):
    """The exact, immutable inputs of this training run (a `train.inputs.TrainingInputs`:
    `train.inputs.training_inputs`, given what the instance recorded). Dataset: the version this
    run was requested for (retraining sensor tag), else the latest. Vocab: the latest mapping built
    from that dataset version."""
    from ..target import target_config
    from ..train.inputs import training_inputs

    instance = context.instance
    wanted = (context.run.tags or {}).get(TRAINED_ON_TAG) if context.run else None
    if wanted:
        ds_rec = find_record(instance, DATASET_KEY, lambda r: record_version(r) == wanted)
    else:
        ds_rec = latest_record(instance, DATASET_KEY)
    ds_version = record_version(ds_rec)
    v_rec = (
        find_record(instance, VOCAB_KEY, lambda r: record_metadata(r, "dataset_version") == ds_version)
        if ds_version
        else None
    )
    root = store.root()
    with expected_failures():
        return training_inputs(
            root,
            target_config=target_config(store.config("target")),
            dataset=recorded(ds_rec),
            vocab=recorded(v_rec),
            mix=pinned_input(instance, MIX_KEY, "mix", root),
            latest=latest_versions(instance, DATASET_KEY, VOCAB_KEY, MIX_KEY, TARGET_KEY),
            wanted=wanted,
        )


def _work_dirs_in_use(instance: dg.DagsterInstance, work_root: Path) -> set[Path]:
    """Work folders whose launching run is not finished (another retraining's, never pruned)."""
    from ..train.inputs import launched_work_dirs

    keep = set()
    for d, run_id in launched_work_dirs(work_root).items():
        run = instance.get_run_by_id(run_id)
        if run is not None and not run.is_finished:
            keep.add(d)
    return keep


# -- models/draft_evaluation --------------------------------------------------------------------


@dg.asset(
    key=EVAL_KEY,
    group_name=GROUP,
    deps=[DRAFT_KEY, TARGET_KEY, MIX_KEY, VOCAB_KEY],
    kinds={"pytorch"},
    code_version=EVAL_CODE_VERSION,
    check_specs=check_specs(EVAL_KEY, EVAL_CHECKS),
)
def draft_evaluation(context: dg.AssetExecutionContext, store: SpecforgeStore, trainer: DraftTrainer):
    """Acceptance length of the draft on the held-out split (`test.jsonl`) of the mix version that
    draft was trained on, by greedy chain speculative decoding (draft proposes k tokens, target
    verifies; acceptance length = tokens per target forward including the bonus token), with
    per-position acceptance, against an untrained draft and the previous draft version.

    Everything is read by version: the draft of the latest models/draft_model materialization
    (its immutable `versions/draft_model/<v>/`), and the mix test split, vocab mapping and
    target that draft recorded as its inputs. The report is built in a staging folder, kept as
    `<data root>/versions/draft_evaluation/<v>/` and published as
    `<data root>/models/draft_evaluation/` (report.json, plot, manifest) in one step."""
    from ..target import target_config
    from ..train.eval_report import evaluate_from_settings
    from ..train.eval_summary import evaluate_and_publish, headline_numbers, per_category_numbers
    from ..train.inputs import evaluation_inputs

    root = store.root()
    settings = trainer.settings(store)
    out = store.layer_dir("models", "draft_evaluation")
    draft_rec = latest_record(context.instance, DRAFT_KEY)
    draft_version = record_version(draft_rec)
    tcfg = target_config(store.config("target"))
    with expected_failures():
        found = evaluation_inputs(
            root,
            target_config=tcfg,
            draft=recorded(draft_rec),
            latest=latest_versions(context.instance, MIX_KEY, VOCAB_KEY, TARGET_KEY),
        )
    draft_dir, test, inputs = found.draft_dir, found.test_jsonl, found.inputs

    def evaluate(staging: Path) -> dict:
        return evaluate_from_settings(
            settings["evaluation"],
            root=root,
            target_path=found.target,
            trust_remote_code=tcfg["trust_remote_code"],
            draft_dir=draft_dir,
            vocab_mapping_path=found.vocab_mapping,
            test_jsonl=test,
            out_dir=staging,
            log=context.log.info,
        )

    with expected_failures():
        report, version = evaluate_and_publish(root, out, inputs, evaluate)
    report_path = out / "report.json"
    md = {
        "report_path": dg.MetadataValue.path(str(report_path)),
        **headline_numbers(report),
        "per_position_acceptance": table(charts.per_position_table(report)),
        "acceptance_per_category": table(charts.per_category_table(report)),
        **pictures(acceptance_inline=charts.acceptance_inline_md(report)),
        "checkpoint_path": dg.MetadataValue.path(report["checkpoint_path"]),
        **lineage_metadata(input_rows(inputs)),
        "draft_version": draft_version or "",
        "test_split": dg.MetadataValue.path(str(test)),
    }
    md.update(per_category_numbers(report))  # plain numbers: plotted per version
    md.update(_evaluation_sets_metadata(report, out))
    plot = out / "per_position_acceptance.png"
    if plot.exists():
        md["plot"] = png(plot, "per-position acceptance")
        md["plot_path"] = dg.MetadataValue.path(str(plot))
    yield dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=md)
    yield from check_results(EVAL_KEY, EVAL_CHECKS, report=report)


def _evaluation_sets_metadata(report: dict, out: Path) -> dict:
    """Every evaluation set at every k: a table (set, k, category), plain floats
    `acceptance_length/<set>/k<k>` (plotted across versions) and the per-set plot (one click)."""
    from ..train.eval_summary import per_set_numbers

    if not report.get("sets"):
        return {}
    md: dict = {"acceptance_by_set": table(charts.sets_table(report)), **per_set_numbers(report)}
    plot = out / "acceptance_by_set.png"
    if plot.exists():
        md["acceptance_by_set_plot"] = png(plot, "acceptance length per evaluation set and k")
        md["acceptance_by_set_plot_path"] = dg.MetadataValue.path(str(plot))
    return md


# -- models/target_hidden_states (offline mode) -------------------------------------------------


@dg.asset(
    key=HIDDEN_KEY,
    group_name=GROUP,
    deps=[DATASET_KEY, TARGET_KEY],
    kinds={"pytorch", "safetensors"},
    code_version=HIDDEN_CODE_VERSION,
    # only needed for `launch.mode: offline`; the demo (online) leaves it out
    tags={OPTIONAL_TAG: "offline-mode"},
)
def target_hidden_states(
    context: dg.AssetExecutionContext, store: SpecforgeStore, trainer: DraftTrainer
) -> dg.MaterializeResult:
    """Offline mode: the target's aux-layer and final hidden states for every tokenized row
    (sharded safetensors, no padding stored, rows in dataset order with their ids, truncated to
    `training.max_length`) + manifest.json. The size estimate is logged (and shown in metadata)
    before anything is written. Train from it with `launch.mode: offline` in configs/train.yaml."""
    from ..target import target_config, target_model_path
    from ..train.hidden_states import write_hidden_states

    settings = trainer.settings(store)
    hs = settings["hidden_states"]
    training = make_train_config(settings["training"])
    tcfg = target_config(store.config("target"))
    target = target_model_path(store.root(), tcfg)
    with expected_failures():
        dataset, upstream = hidden_states_inputs(
            store.root(), target, latest_versions(context.instance, DATASET_KEY, TARGET_KEY)
        )
    read = {}
    for key, folder in ((DATASET_KEY, dataset), (TARGET_KEY, target)):
        rec = latest_record(context.instance, key)
        version = upstream[key.to_user_string()]
        run_id = rec.run_id if rec is not None and record_version(rec) == version else None
        read[key.to_user_string()] = {"data_version": version, "path": str(folder), "run_id": run_id}
    out = store.layer_dir("models", "target_hidden_states")
    with expected_failures():
        info = write_hidden_states(
            target,
            dataset,
            out,
            rows_per_shard=hs["rows_per_shard"],
            dtype=hs["dtype"],
            max_rows=hs["max_rows"],
            max_length=training.max_length,
            aux_layer_ids=training.aux_layer_ids,
            trust_remote_code=tcfg["trust_remote_code"],
            log=context.log.info,
            extra_manifest={"upstream_data_versions": upstream},
        )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(info["content_version"]),
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "dagster/row_count": info["rows"],
            "tokens": info["tokens"],
            "total_bytes": info["total_bytes"],
            "estimated_bytes": info["estimate"]["estimated_bytes"],
            "estimated_size": info["estimate"]["estimated_human"],
            "aux_layer_ids": dg.MetadataValue.json(info["aux_layer_ids"]),
            "dtype": info["dtype"],
            "num_shards": len(info["shards"]),
            "shards": markdown_table(*charts.shard_rows(info["shards"])),
            **lineage_metadata(input_rows(read)),
        },
    )


# -- is the latest dataset trained? ------------------------------------------------------------


# Declared in `_draft_checks` (the retraining sensor records results of it too).
draft_matches_latest_dataset = asset_check(DRAFT_KEY, DRAFT_MATCHES_LATEST)


def definitions(store: SpecforgeStore) -> dg.Definitions:
    """The layer's assets, its standalone check and the `trainer` resource (`pipes`, how torchrun
    is launched, is built with the store's train.yaml: `resources.training_pipes`;
    `definitions.build_definitions` merges every layer's)."""
    return dg.Definitions(
        assets=[target_model, draft_model, draft_evaluation, target_hidden_states],
        asset_checks=[draft_matches_latest_dataset],
        resources={"trainer": DraftTrainer()},
    )
