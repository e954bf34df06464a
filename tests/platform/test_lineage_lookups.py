"""`assets._lineage` record and run lookups against a real (ephemeral) Dagster instance."""

from __future__ import annotations

import dagster as dg

from specforge_assets.assets import _lineage
from specforge_assets.tags import BACKFILL_TAG, TRIGGER_TAG

KEY = dg.AssetKey(["lookup", "thing"])


def _materialize(instance, version: str, tags: dict | None = None, **metadata):
    @dg.asset(key=KEY)
    def thing():
        return dg.MaterializeResult(data_version=dg.DataVersion(version), metadata=metadata)

    assert dg.materialize([thing], instance=instance, tags=tags or {}).success


def test_latest_find_and_recorded_versions():
    with dg.instance_for_test() as inst:
        assert _lineage.latest_version(inst, KEY) is None
        assert _lineage.latest_versions(inst, KEY) == {KEY.to_user_string(): None}
        assert _lineage.recorded(_lineage.latest_record(inst, KEY)) is None

        _materialize(inst, "v1", built_from="a")
        _materialize(inst, "v2", built_from="b")
        assert _lineage.latest_version(inst, KEY) == "v2"
        assert _lineage.latest_versions(inst, KEY) == {KEY.to_user_string(): "v2"}
        rec = _lineage.recorded(_lineage.latest_record(inst, KEY))
        assert (rec.data_version, rec.metadata["built_from"]) == ("v2", "b")
        older = _lineage.find_record(inst, KEY, lambda r: _lineage.record_metadata(r, "built_from") == "a")
        assert _lineage.record_version(older) == "v1"
        assert _lineage.find_record(inst, KEY, lambda r: False) is None


def test_run_link_tags_name_where_the_run_came_from():
    with dg.instance_for_test() as inst:
        _materialize(inst, "v1", tags={TRIGGER_TAG: "automation", BACKFILL_TAG: "bf-1"})
        run = inst.get_run_by_id(_lineage.latest_record(inst, KEY).run_id)
        tags = _lineage.run_link_tags(run)
        assert tags["specforge/trigger_origin"] == "automation" and tags["specforge/trigger_backfill"] == "bf-1"
        assert tags["specforge/trigger_job"] == run.job_name and "specforge/trigger_sensor" not in tags
        assert _lineage.run_link_tags(None) == {}
