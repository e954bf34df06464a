"""Sensors and jobs: the platform reacts to files, config, new data versions and failures.

- `incoming_files_sensor`: a file (or folder) dropped into the incoming folder becomes a source
  partition and is materialized (sources + regenerated); a changed file re-materializes; a
  deleted file is recorded, its partition and data are kept. The drop folder is a trust boundary:
  an entry that is (or contains) a link leading outside it is refused and never read, and every
  entry that cannot be a partition (bad name, unsupported suffix, same key as another) gets one
  warning naming it and the rule (`sources.config.scan_incoming`, `loaders.check_link`).
- `register_sources_sensor`: keeps the dynamic partitions in step with `configs/sources.yaml`,
  so a fresh `dagster dev` lists every configured source without running anything; a bad key
  there is logged and left out, the other sources still register.
- `retrain_on_new_dataset`: trains and evaluates the draft when `tokenized/dataset` has a new
  data version whose blocking checks passed; the run is tagged with that version.
- `record_run_failures`: appends every failed run, with its errors, to the failure log
  (configs/automation.yaml `ops.failure_log`, by default `<root>/ops/failures.jsonl`).

The sensors are built by `build_sensors(settings)` when the definitions load, `settings` being
`configs/automation.yaml` read through the store (`automation.automation_settings`: intervals,
default statuses, the settle time, the retry budget, the ops-log locations); nothing is read at
import. Jobs (`jobs`): `sources_and_regenerated` (one source partition through sources and
regenerated: the file-drop sensor's runs and the job to backfill) and `retrain_draft_job`.
The decisions live in domain modules: `sources.incoming` (what each dropped file is),
`train.retrain` (whether to retrain), `oplog` (redaction, the ops-log records); reading the
instance (which version/record/run made what) is `assets._lineage`; tag names in `tags`.

Why retraining is a sensor and not an `AutomationCondition` (the other layers use conditions):
Dagster 1.13's automation sensor (`AutomationConditionSensorDefinition`) gives its runs only
static `run_tags`, and a condition can only request runs. Three things users rely on have no
declarative equivalent: (1) the run carries the tokenized/dataset version it trains
(`specforge/trigger_data_version`, plus the triggering run and previous version) when it is
*queued*: the draft step trains exactly that version, the run key `retrain:<version>` dedupes,
and queued/cancelled runs are found by that tag (a tag added by the step itself, as
`link_run_to_trigger` does, is missing on a run cancelled in the queue); (2) after a cancelled
or failed retraining the sensor records a failed `draft_matches_latest_dataset` check result
(an asset event; conditions cannot emit one) once per run, and does not request that version
again until someone does; (3) the gate also stops on a failed non-blocking check of ERROR
severity but not on a WARN one: `all_deps_blocking_checks_passed` sees blocking checks only, and
`check_failed` cannot tell severities apart. Static run tags could carry only the concurrency and
retry tags.
"""

from __future__ import annotations

import json
import time

import dagster as dg

from . import automation, oplog
from .assets._checks import evaluation
from .assets._draft_checks import DRAFT_MATCHES_LATEST
from .assets._lineage import (
    RETRAIN_JOB_NAME,
    latest_record,
    record_version,
    retraining_runs,
    run_link_tags,
    trained_on_version,
)
from .keys import DRAFT, EVALUATION, REGENERATED, SOURCES, TOKENIZED, VOCAB
from .partitions import (
    SOURCES_PARTITION_NAME,
    configured_source_keys,
    invalid_source_keys,
    missing_source_partitions,
    source_partitions,
)
from .resources import SpecforgeStore
from .sources import incoming
from .sources.config import scan_incoming
from .tags import (
    BACKFILL_TAG,
    INCOMING_EVENT_TAG,
    INCOMING_FILE_TAG,
    INCOMING_SHA256_TAG,
    PARTITION_TAG,
    RETRAIN_CONCURRENCY_GROUP,
    RETRAIN_CONCURRENCY_TAG,
    SCHEDULE_NAME_TAG,
    SENSOR_NAME_TAG,
    TRAINED_ON_TAG,
    TRIGGER_INCOMING_FILE,
    TRIGGER_RETRAIN,
    TRIGGER_TAG,
)
from .train import retrain


def _prefixes(*keys: dg.AssetKey) -> dg.AssetSelection:
    # Key-prefix selections resolve even while a layer is not built yet (the job then selects
    # fewer assets) instead of failing the whole code location.
    return dg.AssetSelection.key_prefixes(*[k.path for k in keys])


# The job to backfill sources with: each source partition runs sources/conversations and then
# regenerated/conversations in one run, so the backfill page shows both layers per source (a
# backfill of sources/conversations alone leaves regeneration to separate automation runs).
sources_and_regenerated = dg.define_asset_job(
    "sources_and_regenerated",
    selection=_prefixes(SOURCES, REGENERATED),
    partitions_def=source_partitions,
    description=(
        "One source partition through the sources and regenerated layers in one run. Backfill this job "
        "(Jobs → sources_and_regenerated → Materialize / Backfill) to bring sources up to date: the "
        "backfill page then shows each source's progress through both layers. The file-drop sensor runs it too."
    ),
)

# Every retraining run carries RETRAIN_CONCURRENCY_TAG; dagster_home/dagster.yaml limits runs
# with it to one at a time (`concurrency.runs.tag_concurrency_limits`): the whole job (training
# *and* evaluation) is exclusive, the next one waits in the queue. Job tags are on every run of
# the job, whoever launches it (the sensor, the Launchpad, a re-execution).
retrain_draft_job = dg.define_asset_job(
    RETRAIN_JOB_NAME,
    selection=_prefixes(DRAFT, EVALUATION),
    description=(
        "Train the draft model on a tokenized dataset version and evaluate it (the version in the run's "
        f"{TRAINED_ON_TAG} tag, else the latest). One run at a time (tag {RETRAIN_CONCURRENCY_TAG}, "
        "limit 1 in dagster.yaml); the next waits in the queue."
    ),
    tags={TRIGGER_TAG: TRIGGER_RETRAIN, RETRAIN_CONCURRENCY_TAG: RETRAIN_CONCURRENCY_GROUP},
)


# --------------------------------------------------------------------------------------------
# incoming files → source partitions (the decision: `sources.incoming.decide`)


def incoming_tick(context: dg.SensorEvaluationContext, store: SpecforgeStore, config: dict) -> dg.SensorResult:
    """`sources.incoming.decide` on this tick's scan, as Dagster requests, logs and ops records.
    `config`: `automation.automation_settings(...)` (the settle time and the incoming log)."""
    root = store.root(pull=False)  # the drop folder and ops log: no pull of an object-store root
    decision = incoming.decide(
        scan_incoming(store.config("sources"), root),
        json.loads(context.cursor) if context.cursor else None,
        configured=set(configured_source_keys(store.config("sources"))),  # bad keys left out, never fatal
        existing=set(context.instance.get_dynamic_partitions(SOURCES_PARTITION_NAME)),
        now_ns=time.time_ns(),
        settle_seconds=config["sensors"]["incoming_files"]["settle_seconds"],
    )
    log_path = oplog.ops_path(config["ops"]["incoming_log"], root)
    for level, text in decision.messages:
        getattr(context.log, level)(text)
    for record in decision.records:
        oplog.append_jsonl(log_path, record)
    if decision.skip_message is not None:
        return dg.SensorResult(skip_reason=dg.SkipReason(decision.skip_message), cursor=decision.cursor())
    new = decision.new_partitions
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=run.run_key,
                partition_key=run.partition,
                tags={
                    TRIGGER_TAG: TRIGGER_INCOMING_FILE,
                    INCOMING_FILE_TAG: run.file_name,
                    INCOMING_SHA256_TAG: run.sha256,
                    INCOMING_EVENT_TAG: run.event,
                },
            )
            for run in decision.runs
        ],
        dynamic_partitions_requests=[source_partitions.build_add_request(new)] if new else [],
        cursor=decision.cursor(),
    )


# --------------------------------------------------------------------------------------------
# new tokenized data version (+ passed blocking checks) → retrain (the decision: `train.retrain.decide`)


def _materialization(record) -> retrain.Materialization | None:
    if record is None:
        return None
    return retrain.Materialization(record_version(record), record.run_id, record.storage_id)


def _run_state(run) -> retrain.RunState:
    return retrain.RunState(run.run_id, run.status.value, run.is_finished)


def _check_states(context: dg.SensorEvaluationContext, key: dg.AssetKey) -> list[retrain.CheckState] | None:
    """The latest record of every check of `key` (None: `key` is not in this code location)."""
    assert context.repository_def is not None  # a sensor of a code location always has it
    graph = context.repository_def.asset_graph
    if not graph.has(key):
        return None
    instance = context.instance
    out = []
    for ck in graph.get_check_keys_for_assets({key}):
        blocking = graph.get_check_spec(ck).blocking
        rec = instance.get_latest_asset_check_evaluation_record(ck)
        if rec is None:
            out.append(retrain.CheckState(ck.name, blocking))
            continue
        ev = rec.evaluation
        if ev is None:  # planned only
            run = instance.get_run_by_id(rec.run_id)
            out.append(
                retrain.CheckState(
                    ck.name, blocking, recorded=True, run_id=rec.run_id, run_finished=run is None or run.is_finished
                )
            )
            continue
        target = ev.target_materialization_data
        out.append(
            retrain.CheckState(
                ck.name,
                blocking,
                recorded=True,
                evaluated=True,
                run_id=rec.run_id,
                target_storage_id=target.storage_id if target is not None else None,
                passed=ev.passed,
                severity=ev.severity.value,
            )
        )
    return out


def retrain_facts(context: dg.SensorEvaluationContext) -> retrain.RetrainFacts:
    """What `train.retrain.decide` needs, read from the instance of `context` (`RetrainFacts`).
    All of it once the dataset has a version (a few instance reads per tick: the latest dataset,
    draft and vocab records, the version's retraining runs, the producing run, one record per
    check), whichever gate then stops; before that, only what says so."""
    instance = context.instance
    assert context.repository_def is not None  # a sensor of a code location always has it
    graph = context.repository_def.asset_graph
    if not graph.has(DRAFT):
        return retrain.RetrainFacts(draft_defined=False)
    dataset = _materialization(latest_record(instance, TOKENIZED))
    if dataset is None or not dataset.data_version:
        return retrain.RetrainFacts(dataset=dataset)
    run = instance.get_run_by_id(dataset.run_id)
    vocab_defined = graph.has(VOCAB)
    return retrain.RetrainFacts(
        dataset=dataset,
        trained_on=trained_on_version(latest_record(instance, DRAFT)),
        runs=[_run_state(r) for r in retraining_runs(instance, dataset.data_version)],
        dataset_run_finished=run is None or run.is_finished,
        link_tags=run_link_tags(run),
        dataset_checks=_check_states(context, TOKENIZED),
        vocab_defined=vocab_defined,
        vocab=_materialization(latest_record(instance, VOCAB)) if vocab_defined else None,
        vocab_checks=_check_states(context, VOCAB),
    )


def retrain_tick(context: dg.SensorEvaluationContext, config: dict) -> dg.RunRequest | dg.SkipReason | dg.SensorResult:
    """`train.retrain.decide` on this tick's `retrain_facts`, as a Dagster request, a skip, or a
    skip with a failed `draft_matches_latest_dataset` result (and the cursor remembering it).
    `config`: `automation.automation_settings(...)` (the retry budget)."""
    decision = retrain.decide(
        retrain_facts(context),
        json.loads(context.cursor) if context.cursor else None,
        max_retries=config["sensors"]["retrain"]["max_retries"],
    )
    for level, text in decision.messages:
        getattr(context.log, level)(text)
    if decision.run_key is not None:
        return dg.RunRequest(run_key=decision.run_key, tags=decision.tags)
    if decision.untrained is None:
        return dg.SkipReason(decision.skip_message)
    return dg.SensorResult(
        skip_reason=dg.SkipReason(decision.skip_message),
        asset_events=[
            evaluation(
                DRAFT,
                DRAFT_MATCHES_LATEST,
                instance=context.instance,
                extra={"request_again": retrain.REQUEST_AGAIN},
            )
        ],
        cursor=decision.cursor(),
    )


# --------------------------------------------------------------------------------------------
# failures → ops/failures.jsonl


def failure_record(context: dg.RunFailureSensorContext) -> dict:
    """The failures.jsonl record (`oplog.failure_record`) of the run failure in `context`."""
    run = context.dagster_run
    steps = []
    for ev in context.get_step_failure_events():
        err = ev.step_failure_data.error if ev.step_failure_data else None
        # Dagster wraps the user's exception: record the user's own class and message first.
        while err is not None and err.cls_name == "DagsterExecutionStepExecutionError" and err.cause is not None:
            err = err.cause
        steps.append((ev.step_key, err.cls_name if err else None, err.to_string() if err else ev.message or ""))
    tags = run.tags or {}
    return oplog.failure_record(
        run_id=run.run_id,
        job=run.job_name,
        partition=tags.get(PARTITION_TAG),
        backfill=tags.get(BACKFILL_TAG),
        trigger=tags.get(TRIGGER_TAG) or tags.get(SENSOR_NAME_TAG) or tags.get(SCHEDULE_NAME_TAG),
        assets=[k.to_user_string() for k in (run.asset_selection or [])],
        message=context.failure_event.message or "",
        steps=steps,
    )


def register_tick(context: dg.SensorEvaluationContext, store: SpecforgeStore) -> dg.SensorResult | dg.SkipReason:
    """A dynamic-partition request for every configured source key (configs/sources.yaml through
    `store`) the instance lacks, else a skip saying all are there; invalid keys are logged as
    warnings and left out, never fatal."""
    cfg = store.config("sources")
    keys = configured_source_keys(cfg)
    bad = invalid_source_keys(cfg)  # reported, never registered, never stops the others
    for reason in bad.values():
        context.log.warning(reason)
    missing = missing_source_partitions(context.instance, keys)
    if not missing:
        msg = f"all {len(keys)} configured sources are partitions"
        if bad:
            msg += f"; invalid source keys ignored: {sorted(bad)}"
        return dg.SkipReason(msg)
    context.log.info(
        f"registering source partitions: {missing}" + (f" (invalid keys ignored: {sorted(bad)})" if bad else "")
    )
    return dg.SensorResult(dynamic_partitions_requests=[source_partitions.build_add_request(missing)])


def failure_tick(context: dg.RunFailureSensorContext, store: SpecforgeStore, config: dict) -> None:
    """Appends the `failure_record` of the failed run in `context` to the failure log of `config`
    (`automation.automation_settings(...)`, `ops.failure_log`, under the store's root)."""
    path = oplog.ops_path(config["ops"]["failure_log"], store.root(pull=False))
    record = failure_record(context)
    oplog.append_jsonl(path, record)
    context.log.info(f"run {record['run_id'][:8]} ({record['job']}) failed: recorded in {path}")


def build_sensors(config: dict) -> dict[str, dg.SensorDefinition]:
    """The sensors, by name, with the intervals and start states of `config`
    (`automation.automation_settings(store.config("automation"))`, read when the definitions are
    built: configs/automation.yaml is never read at import); their ticks use `config` too."""
    sensors_cfg = config["sensors"]

    def timing(name: str) -> dict:
        return {
            "minimum_interval_seconds": sensors_cfg[name]["minimum_interval_seconds"],
            "default_status": sensors_cfg[name]["default_status"],
        }

    @dg.sensor(
        name="incoming_files_sensor",
        job=sources_and_regenerated,
        description=(
            "Watches the incoming folder (sources.yaml `incoming.dir`): a new or changed .jsonl/.json/.parquet "
            "file becomes a source partition and is materialized; deleted files are logged, data kept. Links "
            "leading out of the folder are refused, and names that cannot be partitions are logged with the reason."
        ),
        **timing("incoming_files"),
    )
    def incoming_files_sensor(context: dg.SensorEvaluationContext, store: SpecforgeStore):
        return incoming_tick(context, store, config)

    @dg.sensor(
        name="register_sources_sensor",
        description="Adds a partition for every source in configs/sources.yaml that the instance does not list yet.",
        **timing("register_sources"),
    )
    def register_sources_sensor(context: dg.SensorEvaluationContext, store: SpecforgeStore):
        return register_tick(context, store)

    @dg.sensor(
        name="retrain_on_new_dataset",
        job=retrain_draft_job,
        description=(
            "Trains + evaluates the draft when tokenized/dataset has a new data version whose blocking checks "
            "passed (a failed check never triggers training). Runs are tagged with the triggering version and run."
        ),
        **timing("retrain"),
    )
    def retrain_on_new_dataset(context: dg.SensorEvaluationContext):
        return retrain_tick(context, config)

    @dg.run_failure_sensor(
        name="record_run_failures",
        monitor_all_code_locations=False,
        description="Appends each failed run (job, partition, assets, error per step; secrets redacted) to "
        f"the failure log ({config['ops']['failure_log']}, under the data root unless absolute).",
        **timing("run_failures"),
    )
    def record_run_failures(context: dg.RunFailureSensorContext, store: SpecforgeStore):
        failure_tick(context, store, config)

    built = [incoming_files_sensor, register_sources_sensor, retrain_on_new_dataset, record_run_failures]
    return {**{sd.name: sd for sd in built}, "specforge_automation": automation.automation_sensor(config)}


jobs: list = [sources_and_regenerated, retrain_draft_job]
