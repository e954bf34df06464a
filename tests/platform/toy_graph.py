"""A small stand-in for the real layers, with the contract asset keys, partitions and the same
shape of dependencies, so that sensors and automation are tested against real Dagster
machinery (a temp instance, real runs) without tokenizers or training.

Files: <root>/sources/<key>/train.jsonl etc. Source keys come from `configs/sources.yaml`
(`rows:` inline) or from `<incoming>/<key>.jsonl`. The blocking check on tokenized/dataset
fails while `<root>/FAIL_CHECK` exists.
"""

import json
import shutil
from pathlib import Path

import dagster as dg

from specforge_assets import automation, sensors
from specforge_assets.fileio import sha256_file, sha256_files
from specforge_assets.partitions import source_partitions
from specforge_assets.resources import SpecforgeStore
from specforge_assets.tags import TRAINED_ON_TAG
from tests.helpers.jsonl import write_jsonl


def _version(*paths: Path) -> dg.DataVersion:
    return dg.DataVersion(sha256_files([p for p in paths if p.exists()])[:16])


@dg.asset(key=["sources", "conversations"], partitions_def=source_partitions, group_name="sources", code_version="1")
def source_conversations(context: dg.AssetExecutionContext, store: SpecforgeStore) -> dg.MaterializeResult:
    key = context.partition_key
    out = store.layer_dir("sources", key) / "train.jsonl"
    incoming = store.root() / "incoming" / f"{key}.jsonl"
    if incoming.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(incoming, out)
    else:
        cfg = (store.config("sources").get("sources") or {}).get(key)
        if cfg is None:
            raise FileNotFoundError(f"source {key!r}: neither configured nor in the incoming folder")
        data_path = str(cfg.get("data_path") or "")
        if data_path and not data_path.startswith("sample:"):
            if not (store.root() / data_path).exists():
                raise FileNotFoundError(f"source {key!r}: {store.root() / data_path} does not exist")
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.root() / data_path, out)
            return dg.MaterializeResult(data_version=dg.DataVersion(sha256_file(out)[:16]))
        write_jsonl(out, cfg.get("rows") or [{"id": f"{key}-0", "text": key}])
    return dg.MaterializeResult(data_version=dg.DataVersion(sha256_file(out)[:16]))


@dg.asset(
    key=["regenerated", "conversations"],
    partitions_def=source_partitions,
    group_name="regenerated",
    deps=[source_conversations],
    code_version="1",
)
def regenerated_conversations(context: dg.AssetExecutionContext, store: SpecforgeStore) -> dg.MaterializeResult:
    key = context.partition_key
    out = store.layer_dir("regenerated", key) / "train.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(store.layer_dir("sources", key) / "train.jsonl", out)
    return dg.MaterializeResult(data_version=dg.DataVersion(sha256_file(out)[:16]))


@dg.asset(
    key=["mix", "training_mix"],
    group_name="mix",
    code_version="1",
    deps=[dg.AssetDep(regenerated_conversations, partition_mapping=dg.AllPartitionMapping())],
)
def training_mix(context: dg.AssetExecutionContext, store: SpecforgeStore) -> dg.MaterializeResult:
    rows = []
    base = store.root() / "regenerated"
    for f in sorted(base.glob("*/train.jsonl")):
        rows += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
    out = store.layer_dir("mix") / "train.jsonl"
    write_jsonl(out, rows)
    return dg.MaterializeResult(data_version=_version(out), metadata={"dagster/row_count": len(rows)})


@dg.asset(key=["models", "target_model"], group_name="target", code_version="1")
def target_model(store: SpecforgeStore) -> dg.MaterializeResult:
    out = store.layer_dir("models", "target_model") / "config.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('{"toy": true}\n')
    return dg.MaterializeResult(data_version=_version(out))


@dg.asset(key=["tokenized", "dataset"], group_name="tokenized", code_version="1", deps=[training_mix, target_model])
def tokenized_dataset(store: SpecforgeStore) -> dg.MaterializeResult:
    src = store.layer_dir("mix") / "train.jsonl"
    out = store.layer_dir("tokenized", "dataset") / "train.jsonl"
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out)
    return dg.MaterializeResult(data_version=_version(out))


@dg.asset_check(asset=tokenized_dataset, blocking=True, description="fails while <root>/FAIL_CHECK exists")
def tokenized_rows_ok(store: SpecforgeStore) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=not (store.root() / "FAIL_CHECK").exists())


@dg.asset(key=["tokenized", "vocab_mapping"], group_name="tokenized", code_version="1", deps=[tokenized_dataset])
def vocab_mapping(store: SpecforgeStore) -> dg.MaterializeResult:
    src = store.layer_dir("tokenized", "dataset") / "train.jsonl"
    out = store.layer_dir("tokenized", "vocab_mapping") / "map.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(str(len(src.read_text().splitlines())))
    return dg.MaterializeResult(data_version=_version(out))


@dg.asset(
    key=["models", "draft_model"],
    group_name="models",
    code_version="1",
    deps=[tokenized_dataset, vocab_mapping, target_model],
)
def draft_model(context: dg.AssetExecutionContext, store: SpecforgeStore) -> dg.MaterializeResult:
    out = store.layer_dir("models", "draft_model") / "trained_on.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(context.run.tags.get(TRAINED_ON_TAG, "manual"))
    return dg.MaterializeResult(data_version=_version(store.layer_dir("tokenized", "dataset") / "train.jsonl"))


@dg.asset(key=["models", "draft_evaluation"], group_name="models", code_version="1", deps=[draft_model])
def draft_evaluation(store: SpecforgeStore) -> dg.MaterializeResult:
    out = store.layer_dir("models", "draft_evaluation") / "report.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text('{"acceptance_length": 1.0}\n')
    return dg.MaterializeResult(data_version=_version(out))


ASSETS = [
    source_conversations,
    regenerated_conversations,
    training_mix,
    target_model,
    tokenized_dataset,
    vocab_mapping,
    draft_model,
    draft_evaluation,
]
CHECKS = [tokenized_rows_ok]


def build_toy_defs(
    root: Path, config_dir: Path, extra_checks: list | None = None, settings: dict | None = None
) -> dg.Definitions:
    """The toy graph with the project's sensors and jobs on a store at `root`/`config_dir`.
    `settings`: `automation.automation_settings(...)` the sensors are built with (None: the defaults)."""
    defs = dg.Definitions(
        assets=ASSETS,
        asset_checks=CHECKS + list(extra_checks or []),
        sensors=list(sensors.build_sensors(settings or automation.automation_settings({})).values()),
        jobs=list(sensors.jobs),
        resources={"store": SpecforgeStore(data_root=str(root), config_dir=str(config_dir))},
    )
    return automation.apply(defs)
