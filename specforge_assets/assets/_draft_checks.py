"""The `draft_matches_latest_dataset` check, apart from the models layer so that both the layer
(`assets.models`: its standalone check) and the retraining sensor (`sensors`: the failed result it
records after a cancelled or failed retraining) import it without the sensor importing the asset
module. Its rule is `checks.models.draft_matches_latest`; this module reads its facts from the
instance."""

from __future__ import annotations

import dagster as dg

from ..checks import models as model_checks
from ..checks.outcome import Outcome
from ..keys import DRAFT, TOKENIZED
from ._checks import InAssetCheck
from ._lineage import latest_record, record_version, retraining_runs, trained_on_version


def _draft_matches_latest(instance: dg.DagsterInstance, **_) -> Outcome:
    """`checks.models.draft_matches_latest` on the instance's latest tokenized/dataset version,
    the latest draft's trained-on version and the retraining runs requested for the former."""
    latest = record_version(latest_record(instance, TOKENIZED))
    runs = retraining_runs(instance, latest) if latest else []
    return model_checks.draft_matches_latest(
        latest,
        trained_on_version(latest_record(instance, DRAFT)),
        [(r.run_id, r.status.value) for r in runs],
    )


# Read from the instance (not from an asset's outputs), so a standalone check: evaluated on its own
# from the UI; the retraining sensor also records a failed result of it after a cancelled or
# failed retraining (`_checks.evaluation`, in sensors.retrain_tick).
DRAFT_MATCHES_LATEST = InAssetCheck(
    "draft_matches_latest_dataset",
    False,
    "The current draft was trained on the latest tokenized/dataset version. Fails while a newer "
    "version is untrained (queued, running, failed or cancelled retraining): re-execute the failed "
    "retraining run, or launch retrain_draft_job, from the UI.",
    _draft_matches_latest,
)
