"""Run and asset tag names, defined once. No Dagster import.

Every tag this project puts on a run or an asset definition, and every tag of Dagster's own that
it reads, is named here; the code imports the name from here and never spells the string. Tests
may spell a tag where they assert what users see (the name is the contract). Values are strings.

`dagster_home/dagster.yaml` (and `dagster_home/deploy/dagster.yaml`) spell `RETRAIN_CONCURRENCY_TAG`
and `BACKFILL_TAG` too: YAML cannot import; `tests/platform/test_versioned_runs.py` holds the
shipped file to this name.
"""

from __future__ import annotations

# --------------------------------------------------------------------------------------------
# Dagster's own tags on a materialization event. Set by Dagster when an asset materializes;
# read by `assets._lineage` (the data version of a record, the input versions of the draft).

DATA_VERSION_TAG = "dagster/data_version"
# + the input's asset key as a string (`dagster/input_data_version/tokenized/dataset`)
INPUT_DATA_VERSION_TAG_PREFIX = "dagster/input_data_version/"

# --------------------------------------------------------------------------------------------
# Dagster's own tags on a run. Set by Dagster (a partitioned run, a backfill's run, a sensor's or
# a schedule's run); read by `assets._lineage.run_link_tags` (copied onto the runs they trigger)
# and `sensors.failure_record` (the failures.jsonl record).

PARTITION_TAG = "dagster/partition"
BACKFILL_TAG = "dagster/backfill"
SENSOR_NAME_TAG = "dagster/sensor_name"
SCHEDULE_NAME_TAG = "dagster/schedule_name"

# Run retries: set by the retraining sensor (`train.retrain.retry_tags`, from
# `sensors.retrain.max_retries` in configs/automation.yaml); read by Dagster's daemon, which
# re-launches a failed run from the failed step when `run_retries.enabled` in dagster.yaml.
MAX_RETRIES_TAG = "dagster/max_retries"
RETRY_STRATEGY_TAG = "dagster/retry_strategy"

# --------------------------------------------------------------------------------------------
# What started a run. Set on every run this project starts: job tags (`sensors`), the file-drop
# and retraining sensors' requests, the automation sensor's static run tags (`automation`), the
# demo's runs (`demo`). Read by `assets._lineage.link_run_to_trigger` (only automation runs link
# themselves), `run_link_tags` (copied as TRIGGER_ORIGIN_TAG) and `sensors.failure_record`.

TRIGGER_TAG = "specforge/trigger"
TRIGGER_INCOMING_FILE = "incoming-file"  # the file-drop sensor's runs
TRIGGER_RETRAIN = "retrain"  # retrain_draft_job, however launched
TRIGGER_NEW_TOKENIZED_VERSION = "new-tokenized-data-version"  # the retraining sensor's requests
TRIGGER_AUTOMATION = "automation"  # the automation sensor's runs
TRIGGER_DEMO = "demo"  # `specforge-assets demo`

# --------------------------------------------------------------------------------------------
# The dropped file a run materializes. Set by the file-drop sensor (`sensors.incoming_tick`) on
# each request; read by users (the run's tags in the UI) and the e2e tests.

INCOMING_FILE_TAG = "specforge/incoming_file"  # the entry's name in the drop folder
INCOMING_SHA256_TAG = "specforge/incoming_sha256"  # its content hash
INCOMING_EVENT_TAG = "specforge/incoming_event"  # `new`, `changed` or `re-registered`

# --------------------------------------------------------------------------------------------
# Retraining. Set by the retraining sensor on each request (`train.retrain.decide`).
# TRAINED_ON_TAG is also read: by the draft asset (the tokenized/dataset version it trains, else
# the latest) and by `assets._lineage.retraining_runs` (the runs of one version); a re-execution
# copies it, so a re-executed run trains the same version.

TRAINED_ON_TAG = "specforge/trigger_data_version"
TRIGGER_ASSET_TAG = "specforge/trigger_asset"  # the asset whose new version triggered the run
TRIGGER_RUN_ID_TAG = "specforge/trigger_run_id"  # the run that produced that version
TRIGGER_STORAGE_ID_TAG = "specforge/trigger_storage_id"  # its materialization's event storage id
PREVIOUS_DATA_VERSION_TAG = "specforge/previous_data_version"  # the version the draft had (`none`)
# On every run of retrain_draft_job (job tag) and its requests; read by Dagster's run queue:
# dagster.yaml's `tag_concurrency_limits` allows one such run at a time.
RETRAIN_CONCURRENCY_TAG = "specforge/retraining"
RETRAIN_CONCURRENCY_GROUP = "draft"  # its value

# --------------------------------------------------------------------------------------------
# Run links: which run (and which inputs) started a run. Set by the retraining sensor's requests
# and, on automation runs, by their first step (`assets._lineage.link_run_to_trigger`); read by
# users on the run page.

TRIGGERED_BY_RUN_TAG = "specforge/triggered_by_run"  # the run whose output started this one
TRIGGER_INPUTS_TAG = "specforge/trigger_inputs"  # `asset[partition]@version` of the changed inputs
# Where that run came from (`assets._lineage.run_link_tags`): its job and, when it has them, its
# TRIGGER_TAG, BACKFILL_TAG, SENSOR_NAME_TAG, PARTITION_TAG.
TRIGGER_JOB_TAG = "specforge/trigger_job"
TRIGGER_ORIGIN_TAG = "specforge/trigger_origin"
TRIGGER_BACKFILL_TAG = "specforge/trigger_backfill"
TRIGGER_SENSOR_TAG = "specforge/trigger_sensor"
TRIGGER_PARTITION_TAG = "specforge/trigger_partition"

# --------------------------------------------------------------------------------------------
# Asset definition tags. OPTIONAL_TAG: set on assets only some setups need (value: when, e.g.
# `offline-mode` on models/target_hidden_states); read by `demo` (left out of the demo).

OPTIONAL_TAG = "specforge/optional"
