"""Work only when something changed, one consistent version per run — on the real layers.

The real Definitions (sources → regenerated (pass-through) → mix → tokenized → vocab, the demo
target, the draft trained by torchrun through Pipes, its evaluation) on a temp instance, driven
the way a user drives them: jobs per source partition (what a backfill runs), the mix/tokenize
run, retraining sensor ticks (requests counted) and the retraining job with the sensor's tags.
Demo-size settings throughout. No timing assertions.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from models.corpus import conversations  # noqa: E402

from specforge_assets.lineage import inputs_by_asset  # noqa: E402
from specforge_assets.keys import DRAFT, EVALUATION, MIX, REGENERATED, SOURCES, TARGET, TOKENIZED, VOCAB  # noqa: E402
from specforge_assets.partitions import SOURCES_PARTITION_NAME  # noqa: E402
from specforge_assets.tags import DATA_VERSION_TAG, RETRAIN_CONCURRENCY_TAG  # noqa: E402

TINY_TRAIN = {
    "launch": {"nproc_per_node": 1, "device": "cpu", "threads_per_proc": 1, "mode": "online"},
    "training": {
        "ttt_length": 2,
        "lr": 3e-3,
        "max_steps": 3,
        "batch_size": 4,
        "max_length": 96,
        "save_every": 3,
        "log_every": 1,
        "seed": 0,
    },
    "evaluation": {
        "k": 2,
        "max_new_tokens": 4,
        "num_prompts": 2,
        "max_prompt_tokens": 200,
        "untrained_seed": 0,
        "evaluate_previous": False,
    },
    "demo_target": {
        "pretrain_steps": 5,
        "seed": 0,
        "vocab_size": 400,
        "hidden_size": 32,
        "num_layers": 4,
        "intermediate_size": 64,
        "batch_size": 4,
        "block_size": 64,
    },
}
KEYS = ["alpha", "beta"]


def _write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("versioned")
    root, cfg, incoming = base / "data", base / "configs", base / "files"
    for d in (root, cfg, incoming):
        d.mkdir()
    rows = conversations(72)
    _write_rows(incoming / "alpha.jsonl", rows[:40])
    _write_rows(incoming / "beta.jsonl", rows[40:])
    (cfg / "sources.yaml").write_text(
        yaml.safe_dump(
            {
                "sources": {k: {"format": "conversations", "data_path": str(incoming / f"{k}.jsonl")} for k in KEYS},
                "defaults": {"split_eval": False, "sample_size": None, "quarantine_threshold": 0.1, "dedup_ids": True},
            }
        )
    )
    (cfg / "regenerate.yaml").write_text(yaml.safe_dump({"defaults": {"enabled": False}}))
    (cfg / "mix.yaml").write_text(yaml.safe_dump({"eval": {"fraction": 0.15, "min_rows": 8}}))
    (cfg / "tokenize.yaml").write_text(yaml.safe_dump({"max_length": 256, "vocab_mapping": {"draft_vocab_size": 128}}))
    (cfg / "target.yaml").write_text(yaml.safe_dump({"path": None, "chat_template": "qwen"}))
    (cfg / "train.yaml").write_text(yaml.safe_dump(TINY_TRAIN))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SPECFORGE_DATA_ROOT", str(root))
        mp.setenv("SPECFORGE_CONFIG_DIR", str(cfg))
        from specforge_assets.definitions import build_definitions

        defs = build_definitions()
        with dg.instance_for_test() as instance:
            instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, KEYS)
            yield {"defs": defs, "instance": instance, "root": root, "incoming": incoming, "rows": rows, "mp": mp}


def _versions(inst) -> dict[str, str]:
    """{asset[/partition]: latest data version} for every materialized asset."""
    out = {}
    for key in (SOURCES, REGENERATED, MIX, TOKENIZED, VOCAB, TARGET):
        for p in sorted(inst.get_materialized_partitions(key)) or [None]:
            flt = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[p] if p else None)
            recs = inst.fetch_materializations(flt, limit=1).records
            if recs:
                out[key.to_user_string() + (f"/{p}" if p else "")] = recs[0].asset_materialization.tags[
                    DATA_VERSION_TAG
                ]
    return out


def _source_backfill(w, keys=KEYS):
    """What a backfill of `sources_and_regenerated` runs: one run per partition."""
    job = w["defs"].resolve_job_def("sources_and_regenerated")
    for k in keys:
        assert job.execute_in_process(instance=w["instance"], partition_key=k).success, k


def _mix_and_tokenize(w):
    """What the automation requests once the sources settle: mix → tokenized → vocab, one run."""
    job = w["defs"].resolve_implicit_global_asset_job_def()
    r = job.execute_in_process(instance=w["instance"], asset_selection=[MIX, TOKENIZED, VOCAB])
    assert r.success


def _retrain_tick(w):
    from tests.conftest import evaluate_sensor_tick

    data, _ = evaluate_sensor_tick(w["defs"], w["instance"], "retrain_on_new_dataset")
    return data


def _retrain_requests(w) -> list[dg.RunRequest]:
    data = _retrain_tick(w)
    return list(data.run_requests or [])


def _latest_md(inst, key, run_id=None) -> dict:
    recs = inst.fetch_materializations(key, limit=50).records
    rec = next(r for r in recs if run_id is None or r.run_id == run_id)
    return {k: v.value for k, v in rec.asset_materialization.metadata.items()} | {
        "_version": rec.asset_materialization.tags[DATA_VERSION_TAG]
    }


def test_unchanged_backfill_is_a_cache_hit_and_one_changed_source_retrains_once(world):
    w, inst = world, world["instance"]
    job = w["defs"].resolve_implicit_global_asset_job_def()
    assert job.execute_in_process(instance=inst, asset_selection=[TARGET]).success
    _source_backfill(w)
    _mix_and_tokenize(w)
    first = _versions(inst)
    assert set(first) >= {
        "sources/conversations/alpha",
        "regenerated/conversations/beta",
        "mix/training_mix",
        "tokenized/dataset",
        "tokenized/vocab_mapping",
        "models/target_model",
    }
    v1 = first["tokenized/dataset"]
    assert [r.tags["specforge/trigger_data_version"] for r in _retrain_requests(w)] == [v1]
    # (a draft trained on v1: recorded as the draft asset does, without training here)
    inst.report_runless_asset_event(dg.AssetMaterialization(DRAFT, metadata={"trained_on_dataset_version": v1}))
    assert _retrain_requests(w) == []

    # (a) everything again with nothing changed: no new data version anywhere, no retraining
    assert job.execute_in_process(instance=inst, asset_selection=[TARGET]).success
    _source_backfill(w)
    _mix_and_tokenize(w)
    assert _versions(inst) == first
    tok = _latest_md(inst, TOKENIZED)
    assert tok["cache_hit"] is True
    assert _retrain_requests(w) == []
    # every run read and wrote versioned, immutable folders
    root = w["root"]
    assert (root / "versions" / "mix" / first["mix/training_mix"] / "test.jsonl").exists()
    assert (root / "versions" / "tokenized_dataset" / v1 / "train.jsonl").exists()
    assert (root / "versions" / "vocab_mapping" / first["tokenized/vocab_mapping"] / "vocab_mapping.pt").exists()
    assert (root / "versions" / "target_model" / first["models/target_model"] / "config.json").exists()

    # (b) one source file changes: exactly that partition, the mix, tokenized and one retraining
    rows = w["rows"]
    _write_rows(
        w["incoming"] / "alpha.jsonl",
        rows[:40]
        + [
            {
                **rows[0],
                "id": "row-new",
                "conversations": [
                    {"role": "user", "content": "What is new?"},
                    {"role": "assistant", "content": "A new row for alpha."},
                ],
            }
        ],
    )
    _source_backfill(w, ["alpha"])
    _mix_and_tokenize(w)
    second = _versions(inst)
    changed = {k for k in first if first[k] != second[k]}
    # (the vocab mapping changes only if the new row moves the top-N token set)
    assert (
        {"sources/conversations/alpha", "regenerated/conversations/alpha", "mix/training_mix", "tokenized/dataset"}
        <= changed
        <= {
            "sources/conversations/alpha",
            "regenerated/conversations/alpha",
            "mix/training_mix",
            "tokenized/dataset",
            "tokenized/vocab_mapping",
        }
    )
    requests = _retrain_requests(w)
    assert [r.tags["specforge/trigger_data_version"] for r in requests] == [second["tokenized/dataset"]]
    assert requests[0].tags["specforge/retraining"] == "draft"


def _change_beta(w, n: int) -> None:
    rows = w["rows"]
    extra = [
        {
            "id": f"beta-extra-{n}-{i}",
            "conversations": [
                {"role": "user", "content": f"Extra question {n}.{i}?"},
                {"role": "assistant", "content": f"Extra answer {n}.{i}."},
            ],
        }
        for i in range(3)
    ]
    _write_rows(w["incoming"] / "beta.jsonl", rows[40:] + extra)
    _source_backfill(w, ["beta"])
    _mix_and_tokenize(w)


def _run_retraining(w, request, raise_on_error=True):
    job = w["defs"].resolve_job_def("retrain_draft_job")
    return job.execute_in_process(instance=w["instance"], tags=request.tags, raise_on_error=raise_on_error)


def test_two_versions_back_to_back_each_evaluation_matches_its_draft(world):
    w, inst = world, world["instance"]
    if inst.get_latest_materialization_event(TOKENIZED) is None:
        pytest.skip("needs the first test's data")
    _change_beta(w, 1)
    (req1,) = _retrain_requests(w)
    v_a = req1.tags["specforge/trigger_data_version"]
    mix_a = _latest_md(inst, MIX)["_version"]
    # a second version arrives while the first retraining waits in the queue
    _change_beta(w, 2)
    (req2,) = _retrain_requests(w)
    v_b = req2.tags["specforge/trigger_data_version"]
    mix_b = _latest_md(inst, MIX)["_version"]
    assert v_a != v_b and mix_a != mix_b and req1.run_key != req2.run_key
    # both carry the tag that dagster.yaml limits to one run at a time; the queue runs them in order
    assert req1.tags["specforge/retraining"] == req2.tags["specforge/retraining"] == "draft"

    r1 = _run_retraining(w, req1)
    r2 = _run_retraining(w, req2)
    root = w["root"]
    seen_work = []
    for run, version, mix in ((r1, v_a, mix_a), (r2, v_b, mix_b)):
        draft = _latest_md(inst, DRAFT, run.run_id)
        ev = _latest_md(inst, EVALUATION, run.run_id)
        # the draft trained on the version its run was requested for, even though v_b was
        # already the latest when the first run started
        assert draft["trained_on_dataset_version"] == version
        draft_in = inputs_by_asset(draft["lineage/input_versions"])
        assert draft_in["tokenized/dataset"]["data_version"] == version
        assert draft_in["mix/training_mix"]["data_version"] == mix
        assert draft_in["tokenized/dataset"]["path"] == str(root / "versions" / "tokenized_dataset" / version)
        # its evaluation used exactly the draft's inputs: same draft version, the held-out split
        # of the same mix version, same vocab and target
        assert ev["draft_version"] == draft["_version"]
        ev_in = inputs_by_asset(ev["lineage/input_versions"])
        for k in ("mix/training_mix", "tokenized/dataset", "tokenized/vocab_mapping", "models/target_model"):
            assert ev_in[k]["data_version"] == draft_in[k]["data_version"], k
        assert ev["test_split"] == str(root / "versions" / "mix" / mix / "test.jsonl")
        report_dir = root / "versions" / "draft_evaluation"
        assert any(
            json.loads((d / "manifest.json").read_text())["inputs"]["models/draft_model"]["data_version"]
            == draft["_version"]
            for d in report_dir.iterdir()
            if not d.name.startswith(".")
        )
        seen_work.append(draft["work_dir"])
    assert seen_work[0] != seen_work[1]  # two retrainings never share a working folder
    assert _retrain_requests(w) == []  # the latest version (v_b) is trained

    # the draft's own check says so
    checks = [e for e in r2.get_asset_check_evaluations() if e.check_name == "draft_matches_latest_dataset"]
    assert checks and checks[0].passed


def test_failed_retraining_leaves_the_version_visibly_untrained(world):
    w, inst = world, world["instance"]
    if inst.get_latest_materialization_event(DRAFT) is None:
        pytest.skip("needs the earlier tests' data")
    from tests.helpers.killhook import kill_at_step

    trained = _latest_md(inst, DRAFT)["trained_on_dataset_version"]
    _change_beta(w, 3)
    (req,) = _retrain_requests(w)
    with kill_at_step(1):
        failed = _run_retraining(w, req, raise_on_error=False)
    assert not failed.success
    untrained = req.tags["specforge/trigger_data_version"]
    # the draft still names the version it was trained on, which is not the latest
    assert _latest_md(inst, DRAFT)["trained_on_dataset_version"] == trained != untrained

    data = _retrain_tick(w)
    assert not data.run_requests and "untrained" in data.skip_message
    (event,) = data.asset_events
    assert event.check_name == "draft_matches_latest_dataset" and event.passed is False
    assert event.metadata["latest_dataset_version"].value == untrained
    # the same verdict from the check itself (what "Execute" on the asset's Checks tab shows)
    from specforge_assets.assets.models import draft_matches_latest_dataset

    result = draft_matches_latest_dataset(dg.build_asset_check_context(instance=inst))
    assert result.passed is False and untrained[:12] in result.description and failed.run_id[:8] in result.description

    # requested again (what the UI's re-execute / Launchpad does): trained, the check passes
    again = _run_retraining(w, req)
    assert _latest_md(inst, DRAFT, again.run_id)["trained_on_dataset_version"] == untrained
    assert [
        e.passed for e in again.get_asset_check_evaluations() if e.check_name == "draft_matches_latest_dataset"
    ] == [True]


def test_one_retraining_at_a_time_across_the_whole_job(tmp_path):
    """dagster_home/dagster.yaml queues runs tagged specforge/retraining beyond one; every run of
    retrain_draft_job carries the tag (job tags: the sensor's, the Launchpad's, re-executions)."""
    import shutil

    from specforge_assets import sensors

    repo = Path(__file__).resolve().parents[2]
    shutil.copyfile(repo / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(tmp_path)) as inst:
        limits = inst.get_concurrency_config().run_queue_config.tag_concurrency_limits
    assert {"key": RETRAIN_CONCURRENCY_TAG, "limit": 1} in limits
    assert sensors.retrain_draft_job.tags[RETRAIN_CONCURRENCY_TAG] == "draft"
    # the job covers training and evaluation (the limit is on the whole job, not a step)
    from specforge_assets.definitions import defs

    job = defs.resolve_job_def("retrain_draft_job")
    assert {DRAFT, EVALUATION} <= set(job.asset_layer.selected_asset_keys)
