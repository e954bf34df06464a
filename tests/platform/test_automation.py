"""Declarative automation on the toy graph: regenerated follows sources per partition, the mix
runs once after its inputs settle, tokenize rides with the mix, training is never requested
by automation (the retrain sensor does that)."""

from __future__ import annotations

import json

import dagster as dg
from toy_graph import ASSETS, CHECKS

from specforge_assets.partitions import SOURCES_PARTITION_NAME

from specforge_assets.keys import SOURCES as SRC
from specforge_assets.keys import REGENERATED as REGEN
from specforge_assets.keys import MIX
from specforge_assets.keys import TOKENIZED as TOK
from specforge_assets.keys import VOCAB
from specforge_assets.keys import TARGET


class Ticker:
    """Evaluates the automation conditions tick after tick, keeping the cursor."""

    def __init__(self, defs, instance):
        self.defs, self.instance, self.cursor = defs, instance, None

    def tick(self) -> dict[dg.AssetKey, set]:
        res = dg.evaluate_automation_conditions(defs=self.defs, instance=self.instance, cursor=self.cursor)
        self.cursor = res.cursor
        return {r.key: set(res.get_requested_partitions(r.key)) for r in res.results if res.get_num_requested(r.key)}


def _materialize(defs, instance, keys, partition=None):
    r = dg.materialize(
        ASSETS + CHECKS,
        selection=list(keys),
        partition_key=partition,
        instance=instance,
        resources=defs.resources,
        raise_on_error=False,
    )
    return r


def _mix_materializations(instance) -> int:
    return len(instance.fetch_materializations(MIX, limit=100).records)


def test_mix_waits_for_all_partitions_then_runs_once_with_tokenize(toy, dagster_instance):
    defs, root, _ = toy
    inst = dagster_instance
    inst.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["alpha", "beta"])
    _materialize(defs, inst, [TARGET])
    t = Ticker(defs, inst)
    assert t.tick() == {}

    # one partition through sources + regenerated (what the file-drop job does): beta still missing
    assert _materialize(defs, inst, [SRC, REGEN], "alpha").success
    assert t.tick() == {}
    assert _materialize(defs, inst, [SRC, REGEN], "beta").success
    requested = t.tick()
    # mix, tokenized and vocab are requested together (one run), training never by automation
    assert requested == {MIX: {None}, TOK: {None}, VOCAB: {None}}
    assert _materialize(defs, inst, [MIX, TOK, VOCAB]).success
    assert t.tick() == {}
    assert _mix_materializations(inst) == 1


def test_source_only_update_regenerates_then_mixes_once(toy, dagster_instance):
    """Updating only sources/conversations (a UI backfill of the source asset) → regenerated
    follows per partition; the mix waits until those regenerated runs are done, then runs once.
    Plain `eager()` would start the mix in the same tick as the regenerated partition."""
    defs, root, config_dir = toy
    inst = dagster_instance
    inst.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["alpha", "beta"])
    _materialize(defs, inst, [TARGET])
    for k in ["alpha", "beta"]:
        _materialize(defs, inst, [SRC, REGEN], k)
    t = Ticker(defs, inst)
    t.tick()
    _materialize(defs, inst, [MIX, TOK, VOCAB])
    assert t.tick() == {}
    before = _mix_materializations(inst)

    # both source partitions change (e.g. a backfill of the source asset only)
    (root / "incoming").mkdir(exist_ok=True)
    for k in ["alpha", "beta"]:
        (root / "incoming" / f"{k}.jsonl").write_text(json.dumps({"id": k, "text": "new " + k}) + "\n")
    assert _materialize(defs, inst, [SRC], "alpha").success
    first = t.tick()
    assert first == {REGEN: {"alpha"}}  # no mix yet: regenerated alpha is about to run, beta's source is moving
    assert _materialize(defs, inst, [SRC], "beta").success
    assert _materialize(defs, inst, [REGEN], "alpha").success
    assert t.tick() == {REGEN: {"beta"}}
    assert _materialize(defs, inst, [REGEN], "beta").success
    assert t.tick() == {MIX: {None}, TOK: {None}, VOCAB: {None}}
    assert _materialize(defs, inst, [MIX, TOK, VOCAB]).success
    assert t.tick() == {}
    assert _mix_materializations(inst) == before + 1


def test_automation_sensor_is_ours_and_training_has_no_condition():
    from specforge_assets.definitions import defs

    sensor = defs.get_sensor_def("specforge_automation")
    assert isinstance(sensor, dg.AutomationConditionSensorDefinition)
    assert sensor.run_tags == {"specforge/trigger": "automation"}
    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        if key.path[0] == "models" and key.path[-1] in {"draft_model", "draft_evaluation"}:
            assert graph.get(key).automation_condition is None


def test_unchanged_backfill_does_not_rebuild_the_mix(toy, dagster_instance):
    """Every source partition materialized again with nothing changed (same data versions):
    regenerated follows, the mix is not requested (nothing changed below it either)."""
    defs, root, _ = toy
    inst = dagster_instance
    inst.add_dynamic_partitions(SOURCES_PARTITION_NAME, ["alpha", "beta"])
    _materialize(defs, inst, [TARGET])
    t = Ticker(defs, inst)
    t.tick()
    for k in ["alpha", "beta"]:
        _materialize(defs, inst, [SRC, REGEN], k)
    assert t.tick() == {MIX: {None}, TOK: {None}, VOCAB: {None}}
    assert _materialize(defs, inst, [MIX, TOK, VOCAB]).success
    assert t.tick() == {}
    before = _mix_materializations(inst)
    for k in ["alpha", "beta"]:
        assert _materialize(defs, inst, [SRC, REGEN], k).success
    assert t.tick() == {}
    assert t.tick() == {}
    assert _mix_materializations(inst) == before

    # a real change still flows through, once
    (root / "incoming").mkdir(exist_ok=True)
    (root / "incoming" / "alpha.jsonl").write_text(json.dumps({"id": "a", "text": "changed alpha"}) + "\n")
    assert _materialize(defs, inst, [SRC, REGEN], "alpha").success
    assert t.tick() == {MIX: {None}, TOK: {None}, VOCAB: {None}}
