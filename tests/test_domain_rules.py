"""The Dagster-free rules the asset layer maps: lineage naming, the models checks' bodies, the
regeneration → demo target dependency, the sources' hub settings."""

import pytest

from specforge_assets.checks.models import draft_matches_latest, lossless, trained_beats_untrained
from specforge_assets.checks.outcome import Table
from specforge_assets.lineage import MAX_TAG_CHARS, changed_inputs, trained_on_version, trigger_inputs_text
from specforge_assets.regenerate.config import needs_demo_target
from specforge_assets.sources.prepare import datasets_cache_dir, hub_offline_setting


def _row(asset, version, partition=None, at=0):
    return {"asset": asset, "partition": partition, "data_version": version, "run_id": None, "materialized_at": at}


def test_changed_inputs_oldest_first_and_named_in_one_tag():
    rows = [_row("mix", "b" * 20, at=2), _row("sources", "a" * 20, "p1", at=1), _row("x", None)]
    changed = changed_inputs(rows, [_row("mix", "b" * 20)])
    assert [r["asset"] for r in changed] == ["sources"]
    assert trigger_inputs_text(changed_inputs(rows, None)) == f"sources[p1]@{'a' * 12}, mix@{'b' * 12}"
    many = trigger_inputs_text([_row(f"source-{i}", "c" * 20) for i in range(40)])
    assert len(many) <= MAX_TAG_CHARS and many.endswith(", … (40 in all)")


def test_trained_on_version_prefers_the_drafts_own_record():
    assert trained_on_version("v-recorded", "v-tag") == "v-recorded"
    assert trained_on_version("", "v-tag") == trained_on_version(None, "v-tag") == "v-tag"
    assert trained_on_version(None, None) is None


def test_draft_matches_latest_outcome():
    assert draft_matches_latest(None, None, []).passed
    assert draft_matches_latest("v1", "v1", []).passed
    out = draft_matches_latest("a" * 20, "b" * 20, [("r" * 10, "FAILURE")])
    assert not out.passed
    assert (
        out.description
        == f"tokenized/dataset {'a' * 12} is untrained (draft trained on {'b' * 12}; retraining runs: rrrrrrrr failure)"
    )
    assert out.metadata["retraining_runs"] == [{"run_id": "r" * 10, "status": "FAILURE"}]


def test_evaluation_check_bodies():
    report = {
        "lossless": False,
        "mismatches": list(range(15)),
        "acceptance_length": 1.5,
        "untrained_acceptance_length": 1.5,
    }
    assert lossless(report).metadata == {"mismatched_prompts": list(range(10))}
    out = trained_beats_untrained({**report, "k": 1, "per_position": {"trained": [0.5], "untrained": [0.4]}})
    assert not out.passed and isinstance(out.metadata["per_position"], Table)


def _configs(regen, target):
    def read(name):
        if isinstance(regen if name == "regenerate" else target, Exception):
            raise regen if name == "regenerate" else target
        return regen if name == "regenerate" else target

    return read


def test_needs_demo_target():
    launched = {"sources": {"a": {"enabled": True}}}
    assert needs_demo_target(_configs(launched, {})) is True
    assert needs_demo_target(_configs(launched, {"path": "/models/x"})) is False
    assert needs_demo_target(_configs({"sources": {"a": {"enabled": False}}}, {})) is False
    # a broken file never breaks code loading: False, the run reports it
    assert needs_demo_target(_configs({"sources": {"a": {"nope": 1}}}, {})) is False
    assert needs_demo_target(_configs(OSError("unreadable"), {})) is False


@pytest.mark.parametrize(
    ("override", "config", "expected"),
    [(True, None, True), (False, {"hub": {"offline": True}}, True), (False, {}, None), (None, None, None)],
)
def test_hub_offline_setting(override, config, expected):
    assert hub_offline_setting(override, config) is expected


def test_datasets_cache_dir(tmp_path):
    assert datasets_cache_dir("", tmp_path) == str(tmp_path / ".hf-datasets-cache")
    assert datasets_cache_dir("/c", tmp_path) == "/c"
