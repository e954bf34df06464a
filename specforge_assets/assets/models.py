"""Layer: models — the target, the trained EAGLE3 draft, its acceptance evaluation, and
(optional) offline target hidden states.

Thin wrappers: the work happens in `specforge_assets.train.*` (no Dagster there). Training runs
in a separate `torchrun` process launched through Dagster Pipes (resource "pipes"), so swapping
the Pipes client moves it to a GPU box or a cluster without touching the asset.
"""

import json
import shutil
import time
from pathlib import Path

import dagster as dg

from ._checks import InAssetCheck, asset_check, check_results, check_specs, result
from ._failures import expected_failures
from ._metadata import code_block, markdown_table, pictures, png, table
from .. import charts
from ._lineage import latest_record, pinned_input, record_metadata, record_version
from ..fileio import read_manifest, sha256_file, sha256_json, staged_dir, write_manifest
from ..resources import SpecforgeStore
from ..target import target_loads_with_chat_template
from ..target_import import quick_content_version
from ..versioned import publish_version, version_dir

GROUP = "models"
from ..keys import TARGET as TARGET_KEY
from ..keys import DRAFT as DRAFT_KEY
from ..keys import EVALUATION as EVAL_KEY
from ..keys import HIDDEN_STATES as HIDDEN_KEY
from ..keys import MIX as MIX_KEY
from ..keys import TOKENIZED as DATASET_KEY
from ..keys import VOCAB as VOCAB_KEY

TARGET_CODE_VERSION = "target-v1"
DRAFT_CODE_VERSION = "draft-v1"
EVAL_CODE_VERSION = "eval-v1"
HIDDEN_CODE_VERSION = "hidden-v1"

DATA_VERSION_TAG = "dagster/data_version"


class DraftTrainer(dg.ConfigurableResource):
    """Training launch settings. Empty/zero fields mean "as in configs/train.yaml"
    (`launch.nproc_per_node`, `launch.device`, `launch.mode`, `training.max_steps`)."""

    nproc_per_node: int = 0
    device: str = ""
    mode: str = ""
    max_steps: int = 0

    def settings(self, store: SpecforgeStore) -> dict:
        from ..train.entry import override_settings, train_settings

        return override_settings(
            train_settings(store.config("train")),
            nproc_per_node=self.nproc_per_node,
            device=self.device,
            mode=self.mode,
            max_steps=self.max_steps,
        )


def _latest_data_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    ev = instance.get_latest_materialization_event(key)
    if ev is None or ev.asset_materialization is None:
        return None
    return (ev.asset_materialization.tags or {}).get(DATA_VERSION_TAG)


def _upstream_version(context, key: dg.AssetKey, folder: Path) -> str | None:
    """The upstream's data version: the instance's record, else its manifest's."""
    v = _latest_data_version(context.instance, key)
    if v:
        return v
    m = read_manifest(folder) if folder.is_dir() else None
    return (m or {}).get("data_version")


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        raise dg.Failure(description=f"{what} not found at {path}: materialize it first")
    return path


# -- checks ------------------------------------------------------------------------------------


def _draft_format(out: Path, **_) -> tuple[bool, None, dict]:
    from ..train.eagle3 import checkpoint_format_problems

    problems, shapes = checkpoint_format_problems(out)
    return not problems, None, {"problems": problems, "tensors": shapes}


TARGET_CHECK = InAssetCheck(
    "loads_with_chat_template",
    True,
    "tokenizer loads and its chat template renders a conversation",
    lambda path, trust_remote_code, **_: target_loads_with_chat_template(path, trust_remote_code),
    details_key=None,
)
DRAFT_CHECK = InAssetCheck(
    "sglang_checkpoint_format",
    True,
    "config.json + model.safetensors hold exactly the tensors SGLang's EAGLE3 loader expects",
    _draft_format,
    details_key=None,
)
EVAL_CHECKS = [
    InAssetCheck(
        "lossless",
        True,
        "speculative output == the target's plain greedy output, token for token",
        lambda report, **_: (bool(report["lossless"]), None, {"mismatched_prompts": report.get("mismatches", [])[:10]}),
        details_key=None,
    ),
    InAssetCheck(
        "trained_beats_untrained",
        False,
        "the trained draft's acceptance length is above an untrained draft's",
        lambda report, **_: (
            report["acceptance_length"] > report["untrained_acceptance_length"],
            None,
            {
                "trained": report["acceptance_length"],
                "untrained": report["untrained_acceptance_length"],
                "per_position": table(charts.per_position_table(report)),
            },
        ),
        severity="WARN",
        details_key=None,
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
def target_model(context: dg.AssetExecutionContext, store: SpecforgeStore) -> dg.MaterializeResult:
    """The target model the draft is trained for (configs/target.yaml).

    `path: null` (default): the demo target — a byte-level BPE tokenizer with a ChatML template
    and a small Qwen2 (4 layers, ~1M parameters) pretrained briefly on the configured sources'
    sample rows, built into `<data root>/models/target_model`; rebuilt only when the corpus, the
    build parameters (configs/train.yaml `demo_target:`) or the builder change.
    Otherwise: the configured local folder or hub id, recorded with a content version."""
    from ..target import target_config

    tcfg = target_config(store.config("target"))
    if tcfg.get("path"):
        from ..target import needs_import

        with expected_failures():
            if needs_import(str(tcfg["path"])):
                return _imported_target(context, store, tcfg)
            return _external_target(context, tcfg)
    from ..train.demo_target import (
        BUILDER_VERSION,
        build_demo_target,
        build_params,
        corpus_fingerprint,
        load_demo_corpus,
    )
    from ..train.entry import train_settings

    settings = train_settings(store.config("train"))
    demo_cfg = dict(settings["demo_target"])
    source_keys = demo_cfg.pop("sources", None)
    params = build_params(**demo_cfg)
    out = store.layer_dir("models", "target_model")
    with expected_failures():
        rows, info = load_demo_corpus(source_keys, sources_config=store.config("sources"), log=context.log.info)
    fingerprint = corpus_fingerprint(rows, params)
    version = fingerprint[:24]
    manifest = read_manifest(out) if out.is_dir() else None
    cached = bool(
        manifest
        and manifest.get("fingerprint") == fingerprint
        and (out / "model.safetensors").exists()
        and (out / "tokenizer.json").exists()
    )
    if cached:
        context.log.info(f"demo target unchanged (fingerprint {version}): reusing {out}")
    else:
        context.log.info(f"building the demo target from {len(rows)} rows of {sorted(info['sources'])} into {out}")
        with expected_failures():
            build_demo_target(
                out,
                rows,
                log=context.log.info,
                **params,
                extra_manifest={"data_version": version, "corpus_sources": info},
            )
    manifest = read_manifest(out) or {}
    check = result(TARGET_KEY, TARGET_CHECK, path=out, trust_remote_code=False)
    cfg = json.loads((out / "config.json").read_text())
    # the version a draft trains against, immutable (hard links: the builder replaces the folder whole)
    vdir = publish_version(out, store.root(), "target_model", version)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),
        metadata={
            "path": dg.MetadataValue.path(str(out)),
            "version_path": dg.MetadataValue.path(str(vdir)),
            "kind": "demo_target",
            "cached": cached,
            "architecture": (cfg.get("architectures") or ["?"])[0],
            "num_parameters": manifest.get("num_parameters"),
            "num_hidden_layers": cfg.get("num_hidden_layers"),
            "hidden_size": cfg.get("hidden_size"),
            "vocab_size": cfg.get("vocab_size"),
            "corpus_rows": len(rows),
            "corpus_chars": manifest.get("num_chars"),
            "corpus_sources": dg.MetadataValue.json(info),
            "pretrain_loss_first": manifest.get("pretrain_loss_first"),
            "pretrain_loss_last": manifest.get("pretrain_loss_last"),
            "build_params": dg.MetadataValue.json(manifest.get("params") or params),
            "builder_version": BUILDER_VERSION,
            "chat_template_preview": _chat_template_preview(check).get("chat_template_preview", ""),
        },
        check_results=[check],
    )


def _imported_target(context, store: SpecforgeStore, tcfg: dict) -> dg.MaterializeResult:
    """A GGUF file or a hub id → a normal HF folder at <data root>/models/target_model
    (target_import.import_target), re-imported only when the source changed; versioned by the
    folder's content, kept immutable under versions/target_model/<v>/."""
    from ..fileio import atomic_write
    from ..target_import import classify, import_target

    trust = bool(tcfg.get("trust_remote_code"))
    kind, src = classify(str(tcfg["path"]))
    out = store.layer_dir("models", "target_model")
    marker = out.parent / ".target_model.source.json"
    source = (
        {"kind": "gguf", "sha256": sha256_file(src), "bytes": Path(src).stat().st_size}
        if kind == "gguf"
        else {"kind": "hub", "id": str(src), "revision": tcfg.get("revision")}
    )
    source["trust_remote_code"] = trust
    previous = json.loads(marker.read_text()) if marker.exists() else None
    manifest_path = out / "import_manifest.json"
    cached = bool(previous and previous.get("source") == source and manifest_path.exists())
    if cached:
        manifest = json.loads(manifest_path.read_text())
        context.log.info(f"target {tcfg['path']} unchanged: reusing {out}")
    else:
        context.log.info(f"importing target {tcfg['path']} ({kind}) into {out}")
        manifest = import_target(str(src), out, trust_remote_code=trust, revision=tcfg.get("revision"))
        with atomic_write(marker) as f:
            json.dump({"source": source, "content_version": manifest["content_version"]}, f)
    version = manifest["content_version"][:24]
    vdir = publish_version(out, store.root(), "target_model", version)
    cfg = json.loads((out / "config.json").read_text())
    check = result(TARGET_KEY, TARGET_CHECK, path=out, trust_remote_code=trust)
    md = {
        "kind": f"imported {kind}",
        "source": str(tcfg["path"]),
        "trust_remote_code": trust,
        "cached": cached,
        "chat_template": tcfg.get("chat_template"),
        "path": dg.MetadataValue.path(str(out)),
        "version_path": dg.MetadataValue.path(str(vdir)),
        "architecture": (cfg.get("architectures") or ["?"])[0],
        "num_hidden_layers": cfg.get("num_hidden_layers"),
        "hidden_size": cfg.get("hidden_size"),
        "vocab_size": cfg.get("vocab_size"),
        "torch_dtype": str(cfg.get("torch_dtype") or cfg.get("dtype")),
    }
    md.update(_chat_template_preview(check))
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=md, check_results=[check])


def _external_target(context, tcfg: dict) -> dg.MaterializeResult:
    from ..target import target_model_path

    resolved = target_model_path(config=tcfg)
    trust = bool(tcfg.get("trust_remote_code"))
    md: dict = {"kind": "external", "trust_remote_code": trust, "chat_template": tcfg.get("chat_template")}
    if isinstance(resolved, Path):
        if not (resolved / "config.json").exists():
            raise FileNotFoundError(f"configs/target.yaml path: {resolved} has no config.json (not an HF model folder)")
        version, info = quick_content_version(resolved)
        cfg = json.loads((resolved / "config.json").read_text())
        md.update(
            path=dg.MetadataValue.path(str(resolved)),
            files=info["files"],
            architecture=(cfg.get("architectures") or ["?"])[0],
            num_hidden_layers=cfg.get("num_hidden_layers"),
            hidden_size=cfg.get("hidden_size"),
            vocab_size=cfg.get("vocab_size"),
        )
        check = result(TARGET_KEY, TARGET_CHECK, path=resolved, trust_remote_code=trust)
    else:
        # a hub id: no network here; the id (and revision if configured) is the version
        version = sha256_json({"hub_id": resolved, "revision": tcfg.get("revision")})[:24]
        md.update(hub_id=str(resolved), revision=str(tcfg.get("revision")))
        check = result(TARGET_KEY, TARGET_CHECK, path=resolved, trust_remote_code=trust)
    context.log.info(f"target model: {resolved} (version {version})")
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=md, check_results=[check])


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
) -> dg.MaterializeResult:
    """EAGLE3 draft (`LlamaForCausalLMEagle3`) trained against the target.

    Launches `torchrun --nproc_per_node N -m specforge_assets.train.entry` through Dagster
    Pipes (gloo on CPU, NCCL on GPU; only rank 0 reports). Logs stream into this run; loss, TTT
    accuracies and tokens/s land in metadata.

    Reads its inputs by version, never "whatever is current": the tokenized dataset version this
    run was requested for (the retraining sensor's `specforge/trigger_data_version` tag, else the
    latest), the vocab mapping built from exactly that dataset, and the mix and target that
    dataset was made from, all from their immutable `<data root>/versions/<artifact>/<v>/`
    folders; they are recorded in metadata (`inputs`, `trained_on_dataset_version`) and
    manifest.json. Training happens in a work folder of its own (keyed by the inputs'
    versions and the config: a crashed or cancelled run resumes from its last checkpoint when
    relaunched with the same inputs). The checkpoint is kept as
    `<data root>/versions/draft_model/<v>/`, then published as `models/draft_model/` (the
    previous one moves to `models/draft_model_previous/`)."""
    from ..train.entry import prepare_launch, prune_work_dirs

    root = store.root()
    settings = trainer.settings(store)
    inputs = _training_inputs(context, store)
    dataset, vocab = (
        Path(inputs[DATASET_KEY.to_user_string()]["path"]),
        Path(inputs[VOCAB_KEY.to_user_string()]["path"]),
    )
    target_in = inputs[TARGET_KEY.to_user_string()]
    target = Path(target_in["path"]) if target_in.get("local") else target_in["path"]
    upstream = {k: v["data_version"] for k, v in inputs.items()}
    hidden = None
    if settings["launch"]["mode"] == "offline":
        hidden = _require(store.layer_dir("models", "target_hidden_states"), "models/target_hidden_states")
        upstream["models/target_hidden_states"] = _upstream_version(context, HIDDEN_KEY, hidden)
    with expected_failures():
        spec, spec_path, cmd = prepare_launch(
            root=root,
            settings=settings,
            target_path=target,
            dataset_path=dataset,
            vocab_mapping_path=vocab,
            upstream_data_versions=upstream,
            hidden_states_path=hidden,
            run_id=context.run.run_id,
            inputs={k: {kk: vv for kk, vv in v.items() if kk != "local"} for k, v in inputs.items()},
        )
    context.log.info(
        f"training on tokenized/dataset {upstream[DATASET_KEY.to_user_string()]} "
        f"(vocab {upstream[VOCAB_KEY.to_user_string()]}, mix {upstream[MIX_KEY.to_user_string()]}, "
        f"target {upstream[TARGET_KEY.to_user_string()]}) in {spec['work_dir']}"
    )
    context.log.info(f"launching: {' '.join(cmd)}")
    t0 = time.time()
    if isinstance(pipes, dg.PipesSubprocessClient):
        # launch.termination_timeout_s: how long torchrun and its ranks get to flush a checkpoint
        # and exit after a cancellation, before they are killed.
        pipes = dg.PipesSubprocessClient(
            env=pipes.env,
            cwd=pipes.cwd,
            context_injector=pipes.context_injector,
            message_reader=pipes.message_reader,
            forward_termination=pipes.forward_termination,
            forward_stdio=pipes.forward_stdio,
            termination_timeout_seconds=float(settings["launch"]["termination_timeout_s"]),
        )
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
    vdir = version_dir(root, "draft_model", version) if version else None
    out = vdir if vdir is not None and vdir.is_dir() else Path(spec["out_dir"])
    check = result(DRAFT_KEY, DRAFT_CHECK, out=out)
    md = dict(mr.metadata or {})
    md["launch_command"] = dg.MetadataValue.text(" ".join(cmd))
    md["wall_seconds"] = round(time.time() - t0, 2)
    md["trained_on_dataset_version"] = upstream[DATASET_KEY.to_user_string()] or ""
    md["inputs"] = dg.MetadataValue.json(spec["inputs"])
    md["work_dir"] = dg.MetadataValue.path(spec["work_dir"])
    if vdir is not None:
        md["version_path"] = dg.MetadataValue.path(str(vdir))
    history = charts.load_metrics(out)  # the loss curve of every draft: inline, and full size one click away
    if history:
        md.update(pictures(loss_curve=charts.loss_curve_inline_md(history)))
        md["loss_curve_detail"] = png(charts.loss_curve_png(history), "loss and TTT accuracy per step")
    return dg.MaterializeResult(metadata=md, data_version=mr.data_version, check_results=[check])


TRAINED_ON_TAG = "specforge/trigger_data_version"


def _find_record(instance: dg.DagsterInstance, key: dg.AssetKey, pred, limit: int = 200):
    """The latest materialization of `key` that satisfies `pred(record)`, or None."""
    for rec in instance.fetch_materializations(key, limit=limit).records:
        if pred(rec):
            return rec
    return None


def _training_inputs(context, store: SpecforgeStore) -> dict:
    """{asset: {data_version, path, ...}}: the exact, immutable inputs of this training run.

    Dataset: the version this run was requested for (retraining sensor tag), else the latest.
    Vocab: the latest mapping built from that dataset version. Mix and target: those the dataset
    was tokenized from (its manifest). Data prepared outside Dagster (no recorded versions) is
    read from the current folders, with the versions their manifests give."""
    instance, root = context.instance, store.root()
    wanted = (context.run.tags or {}).get(TRAINED_ON_TAG) if context.run else None
    if wanted:
        ds_rec = _find_record(instance, DATASET_KEY, lambda r: record_version(r) == wanted)
        if ds_rec is None:
            raise dg.Failure(
                f"tokenized/dataset version {wanted} (this run's {TRAINED_ON_TAG} tag) was never "
                "materialized in this instance"
            )
    else:
        ds_rec = latest_record(instance, DATASET_KEY)
    out: dict = {}
    ds_version = record_version(ds_rec)
    ds_dir = version_dir(root, "tokenized_dataset", ds_version) if ds_version else None
    if ds_dir is not None and ds_dir.is_dir():
        out["tokenized/dataset"] = {"data_version": ds_version, "path": str(ds_dir), "run_id": ds_rec.run_id}
        made_from = (read_manifest(ds_dir) or {}).get("inputs") or {}
        v_rec = _find_record(instance, VOCAB_KEY, lambda r: record_metadata(r, "dataset_version") == ds_version)
        v_version = record_version(v_rec)
        v_dir = version_dir(root, "vocab_mapping", v_version) if v_version else None
        if v_dir is None or not v_dir.is_dir():
            raise dg.Failure(
                f"no tokenized/vocab_mapping built from tokenized/dataset {ds_version}: "
                "materialize tokenized/vocab_mapping first"
            )
        out["tokenized/vocab_mapping"] = {"data_version": v_version, "path": str(v_dir), "run_id": v_rec.run_id}
    else:
        if wanted:
            raise dg.Failure(
                f"tokenized/dataset version {wanted} has no immutable copy under {root}/versions: "
                "materialize tokenized/dataset again"
            )
        dataset = _require(store.layer_dir("tokenized", "dataset"), "tokenized/dataset")
        vocab = _require(store.layer_dir("tokenized", "vocab_mapping"), "tokenized/vocab_mapping")
        out["tokenized/dataset"] = {
            "data_version": _upstream_version(context, DATASET_KEY, dataset),
            "path": str(dataset),
        }
        out["tokenized/vocab_mapping"] = {
            "data_version": _upstream_version(context, VOCAB_KEY, vocab),
            "path": str(vocab),
        }
        made_from = {}
    mix = made_from.get("mix/training_mix") or {}
    if not mix.get("path"):
        mix = pinned_input(instance, MIX_KEY, "mix", root)
    if not mix.get("path"):
        mix = {
            "data_version": _upstream_version(context, MIX_KEY, store.layer_dir("mix")),
            "path": str(store.layer_dir("mix")),
        }
    out["mix/training_mix"] = {"data_version": mix.get("data_version"), "path": mix["path"]}
    out["models/target_model"] = _pinned_target(context, store, made_from.get("models/target_model") or {})
    return out


def _pinned_target(context, store: SpecforgeStore, recorded: dict) -> dict:
    """The target by version: the demo target's immutable copy, or the configured folder / hub id
    after checking that its content still is the version recorded (a model is its content, not
    its folder: a moved folder is fine, a changed one is refused)."""
    from ..target import target_config, target_model_path

    root = store.root()
    version = recorded.get("data_version") or _latest_data_version(context.instance, TARGET_KEY)
    if version:
        d = version_dir(root, "target_model", version)
        if d.is_dir():
            return {"data_version": version, "path": str(d), "local": True}
    tcfg = target_config(store.config("target"))
    target = target_model_path(root, tcfg)
    if isinstance(target, Path):
        _require(target / "config.json", "models/target_model")
        if tcfg.get("path"):
            actual, _ = quick_content_version(target)
            if version and actual != version:
                raise dg.Failure(
                    f"the target model at {target} changed since models/target_model recorded version "
                    f"{version} (its content is now {actual}): materialize models/target_model again"
                )
            version = actual
        return {"data_version": version, "path": str(target), "local": True}
    return {"data_version": version, "path": str(target), "local": False}


def _work_dirs_in_use(instance: dg.DagsterInstance, work_root: Path) -> set[Path]:
    """Work folders whose launching run is not finished (another retraining's, never pruned)."""
    keep = set()
    if not work_root.is_dir():
        return keep
    for d in work_root.iterdir():
        try:
            run_id = json.loads((d / "launch.json").read_text()).get("run_id")
        except (OSError, ValueError):
            continue
        run = instance.get_run_by_id(run_id) if run_id else None
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
def draft_evaluation(
    context: dg.AssetExecutionContext, store: SpecforgeStore, trainer: DraftTrainer
) -> dg.MaterializeResult:
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
    from ..train.eval_report import eval_sets, evaluate_drafts

    root = store.root()
    settings = trainer.settings(store)
    ev = settings["evaluation"]
    out = store.layer_dir("models", "draft_evaluation")
    draft_rec = latest_record(context.instance, DRAFT_KEY)
    draft_version = record_version(draft_rec)
    draft_inputs = record_metadata(draft_rec, "inputs") or {}
    vpath = record_metadata(draft_rec, "version_path")
    draft_dir = (
        Path(vpath)
        if vpath and Path(vpath).is_dir()
        else _require(store.layer_dir("models", "draft_model"), "models/draft_model")
    )
    if not draft_inputs:  # a draft trained before inputs were recorded: its manifest, else the current folders
        man = read_manifest(draft_dir) or {}
        draft_inputs = man.get("inputs") or {}
    mix_in = draft_inputs.get("mix/training_mix") or {
        "path": str(store.layer_dir("mix")),
        "data_version": _upstream_version(context, MIX_KEY, store.layer_dir("mix")),
    }
    vocab_in = draft_inputs.get("tokenized/vocab_mapping") or {
        "path": str(store.layer_dir("tokenized", "vocab_mapping")),
        "data_version": _upstream_version(context, VOCAB_KEY, store.layer_dir("tokenized", "vocab_mapping")),
    }
    target_in = draft_inputs.get("models/target_model") or {}
    tcfg = target_config(store.config("target"))
    if not target_in.get("path"):
        target_in = {
            **_pinned_target(context, store, {}),
            **({"data_version": target_in["data_version"]} if target_in.get("data_version") else {}),
        }
    target_in = {k: v for k, v in target_in.items() if k != "local"}
    target = Path(target_in["path"]) if Path(str(target_in["path"])).exists() else target_in["path"]
    test = _require(Path(mix_in["path"]) / "test.jsonl", "mix/training_mix test split (test.jsonl)")
    previous_dir = root / "models" / "draft_model_previous"
    inputs = {
        "models/draft_model": {
            "data_version": draft_version,
            "path": str(draft_dir),
            "run_id": draft_rec.run_id if draft_rec else None,
        },
        **{k: v for k, v in draft_inputs.items()},
    }
    inputs.setdefault("mix/training_mix", mix_in)
    inputs.setdefault("tokenized/vocab_mapping", vocab_in)
    inputs.setdefault("models/target_model", target_in)
    with staged_dir(out) as tmp:
        for name in ("report.json", "previous_report.json"):  # what the report it replaces becomes
            if (out / name).exists():
                shutil.copy2(out / name, tmp / name)
        with expected_failures():
            report = evaluate_drafts(
                target_path=target,
                draft_dir=draft_dir,
                previous_dir=previous_dir if ev.get("evaluate_previous") and previous_dir.exists() else None,
                vocab_mapping_path=Path(vocab_in["path"]),
                test_jsonl=test,
                out_dir=tmp,
                k=ev["k"],
                sets=eval_sets(ev, root),
                max_new_tokens=int(ev["max_new_tokens"]),
                num_prompts=int(ev["num_prompts"]),
                max_prompt_tokens=int(ev["max_prompt_tokens"]),
                untrained_seed=int(ev["untrained_seed"]),
                trust_remote_code=bool(tcfg.get("trust_remote_code")),
                device=str(ev.get("device") or "auto"),
                workers=ev.get("workers", 1),
                log=context.log.info,
            )
        upstream = {k: v.get("data_version") for k, v in inputs.items()}
        write_manifest(
            tmp,
            layer="models",
            asset="draft_evaluation",
            upstream_data_versions=upstream,
            inputs=inputs,
            report_sha256=sha256_file(tmp / "report.json"),
            **{
                k: report[k]
                for k in ("acceptance_length", "untrained_acceptance_length", "k", "lossless", "num_prompts")
            },
        )
        version = sha256_json({k: v for k, v in report.items() if k not in ("seconds", "created_at")})[:24]
        publish_version(tmp, root, "draft_evaluation", version, skip=("previous_report.json",))
    report_path = out / "report.json"
    md = {
        "report_path": dg.MetadataValue.path(str(report_path)),
        "acceptance_length": report["acceptance_length"],
        "untrained_acceptance_length": report["untrained_acceptance_length"],
        "improvement": round(report["acceptance_length"] - report["untrained_acceptance_length"], 4),
        "k": report["k"],
        "lossless": report["lossless"],
        "num_prompts": report["num_prompts"],
        "generated_tokens": report.get("generated_tokens"),
        "per_position_acceptance": table(charts.per_position_table(report)),
        "acceptance_per_category": table(charts.per_category_table(report)),
        **pictures(acceptance_inline=charts.acceptance_inline_md(report)),
        "checkpoint_path": dg.MetadataValue.path(report["checkpoint_path"]),
        "upstream_data_versions": dg.MetadataValue.json(upstream),
        "inputs": dg.MetadataValue.json(inputs),
        "draft_version": draft_version or "",
        "test_split": dg.MetadataValue.path(str(test)),
    }
    if report.get("previous"):
        md["previous_acceptance_length"] = report["previous"]["acceptance_length"]
    for cat, r in sorted((report.get("per_category") or {}).items())[:20]:  # plain numbers: plotted per version
        md[f"acceptance_length/{cat}"] = float(r["acceptance_length"])
    md.update(_evaluation_sets_metadata(report, out))
    plot = out / "per_position_acceptance.png"
    if plot.exists():
        md["plot"] = png(plot, "per-position acceptance")
        md["plot_path"] = dg.MetadataValue.path(str(plot))
    checks = list(check_results(EVAL_KEY, EVAL_CHECKS, report=report))
    return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=md, check_results=checks)


def _evaluation_sets_metadata(report: dict, out: Path) -> dict:
    """Every evaluation set at every k: a table (set, k, category), plain floats
    `acceptance_length/<set>/k<k>` (plotted across versions) and the per-set plot (one click)."""
    from ..train.eval_report import sets_table

    if not report.get("sets"):
        return {}
    md: dict = {"acceptance_by_set": table(sets_table(report))}
    for name, by_k in report["sets"].items():
        for k, e in by_k.items():
            md[f"acceptance_length/{name}/k{k}"] = float(e["acceptance_length"])
    plot = out / "acceptance_by_set.png"
    if plot.exists():
        md["acceptance_by_set_plot"] = png(plot.read_bytes(), "acceptance length per evaluation set and k")
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
    tags={"specforge/optional": "offline-mode"},
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
    tcfg = target_config(store.config("target"))
    target = target_model_path(store.root(), tcfg)
    dataset = _require(store.layer_dir("tokenized", "dataset"), "tokenized/dataset")
    out = store.layer_dir("models", "target_hidden_states")
    upstream = {
        "tokenized/dataset": _upstream_version(context, DATASET_KEY, dataset),
        "models/target_model": _upstream_version(
            context, TARGET_KEY, Path(target) if isinstance(target, Path) else Path("/nonexistent")
        ),
    }
    with expected_failures():
        info = write_hidden_states(
            target,
            dataset,
            out,
            rows_per_shard=int(hs["rows_per_shard"]),
            dtype=str(hs["dtype"]),
            max_rows=hs.get("max_rows"),
            max_length=int(settings["training"].get("max_length", 2048)),
            aux_layer_ids=settings["training"].get("aux_layer_ids"),
            trust_remote_code=bool(tcfg.get("trust_remote_code")),
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
            "upstream_data_versions": dg.MetadataValue.json(upstream),
        },
    )


# -- is the latest dataset trained? ------------------------------------------------------------


def _draft_matches_latest(instance: dg.DagsterInstance, **_) -> tuple[bool, str, dict]:
    from ..sensors import retraining_runs, trained_on_version

    latest = record_version(latest_record(instance, DATASET_KEY))
    trained_on = trained_on_version(latest_record(instance, DRAFT_KEY))
    runs = retraining_runs(instance, latest) if latest else []
    md = {
        "latest_dataset_version": latest or "none",
        "draft_trained_on": trained_on or "none",
        "retraining_runs": [{"run_id": r.run_id, "status": r.status.value} for r in runs],
    }
    if latest is None or trained_on == latest:
        return True, "the draft is trained on the latest dataset", md
    state = ", ".join(f"{r.run_id[:8]} {r.status.value.lower()}" for r in runs) or "none requested yet"
    return (
        False,
        f"tokenized/dataset {latest[:12]} is untrained (draft trained on {(trained_on or 'none')[:12]}; "
        f"retraining runs: {state})",
        md,
    )


# Read from the instance (not from an asset's outputs), so a standalone check: evaluated on its own
# from the UI; the retraining sensor also records a failed result for it (sensors.untrained_evaluation).
draft_matches_latest_dataset = asset_check(
    DRAFT_KEY,
    InAssetCheck(
        "draft_matches_latest_dataset",
        False,
        "The current draft was trained on the latest tokenized/dataset version. Fails while a newer "
        "version is untrained (queued, running, failed or cancelled retraining): re-execute the failed "
        "retraining run, or launch retrain_draft_job, from the UI.",
        _draft_matches_latest,
        details_key=None,
    ),
)


assets: list = [target_model, draft_model, draft_evaluation, target_hidden_states]
asset_checks: list = [draft_matches_latest_dataset]
resources: dict = {
    "pipes": dg.PipesSubprocessClient(forward_termination=True, forward_stdio=True, termination_timeout_seconds=60),
    "trainer": DraftTrainer(),
}
