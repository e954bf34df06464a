"""The `draft_matches_latest_dataset` check's declaration, apart from the models layer so that
both the layer (`assets.models`: its standalone check) and the retraining sensor (`sensors`: the
failed result it records after a cancelled or failed retraining) import it without the sensor
importing the asset module. Its body is `checks.models.draft_matches_latest` on the lookups of
`_lineage.draft_matches_latest`."""

from __future__ import annotations

from ._checks import InAssetCheck
from ._lineage import draft_matches_latest

# Read from the instance (not from an asset's outputs), so a standalone check: evaluated on its own
# from the UI; the retraining sensor also records a failed result of it after a cancelled or
# failed retraining (`_checks.evaluation`, in sensors.retrain_tick).
DRAFT_MATCHES_LATEST = InAssetCheck(
    "draft_matches_latest_dataset",
    False,
    "The current draft was trained on the latest tokenized/dataset version. Fails while a newer "
    "version is untrained (queued, running, failed or cancelled retraining): re-execute the failed "
    "retraining run, or launch retrain_draft_job, from the UI.",
    draft_matches_latest,
)
