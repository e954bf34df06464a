"""The one way to declare checks (`assets/_checks.py`) and the one metadata formatter
(`assets/_metadata.py`): what the UI shows comes out of these, so their edges are pinned here."""

from __future__ import annotations

import dagster as dg
import pytest

from specforge_assets.assets import _checks
from specforge_assets.assets._checks import InAssetCheck, asset_check, check_results, check_specs
from specforge_assets.assets._metadata import code_block, markdown_table
from specforge_assets.checks.outcome import Outcome

KEY = dg.AssetKey(["t", "a"])


def _check(**kw) -> InAssetCheck:
    return InAssetCheck("c", False, "a check", lambda ok, **_: Outcome(ok, "why", {"n": 3}), **kw)


@pytest.mark.parametrize("ok", [False, True])
def test_a_warn_check_yields_warn_severity(ok):
    (res,) = check_results(KEY, [_check(severity="WARN")], ok=ok)
    assert res.passed is ok and res.severity == dg.AssetCheckSeverity.WARN
    assert res.description == "why" and res.metadata["n"].value == 3


def test_severity_from_the_outcome_overrides_the_declared_one():
    c = InAssetCheck("c", True, "d", lambda **_: Outcome(False, None, {}, "WARN"))
    (res,) = check_results(KEY, [c])
    assert res.severity == dg.AssetCheckSeverity.WARN and res.passed is False
    (res,) = check_results(KEY, [_check()], ok=False)
    assert res.severity == dg.AssetCheckSeverity.ERROR


def test_a_check_body_returns_an_outcome_only():
    c = InAssetCheck("c", True, "d", lambda **_: (True, None, {}))
    with pytest.raises(TypeError, match="check 'c' returned tuple, not a checks.outcome.Outcome"):
        next(check_results(KEY, [c]))


def test_outcome_metadata_become_one_entry_per_key():
    table = dg.MetadataValue.table(records=[], schema=dg.TableSchema(columns=[dg.TableColumn("x")]))
    c = InAssetCheck("c", False, "d", lambda **_: Outcome(True, None, {"s": "text", "n": 2, "l": [1], "t": table}))
    (res,) = check_results(KEY, [c])
    md = res.metadata
    assert md["s"] == dg.MetadataValue.text("text") and md["n"] == dg.MetadataValue.int(2)
    assert md["l"] == dg.MetadataValue.json([1]) and md["t"] is table


def test_a_partitioned_spec_carries_the_partitions_def():
    parts = dg.StaticPartitionsDefinition(["p1", "p2"])
    spec, plain = check_specs(KEY, [_check(partitions_def=parts), _check()])
    assert spec.partitions_def == parts and plain.partitions_def is None
    assert (spec.name, spec.asset_key, spec.blocking, spec.description) == ("c", KEY, False, "a check")


def test_the_standalone_builder_gives_the_in_asset_spec():
    c = InAssetCheck("c", True, "a check", lambda instance, **_: Outcome(instance is not None, "d", {"n": 1}))
    standalone = asset_check(KEY, c)
    (spec,) = standalone.check_specs
    (in_asset,) = check_specs(KEY, [c])
    assert (spec.name, spec.asset_key, spec.blocking, spec.description) == (
        in_asset.name,
        in_asset.asset_key,
        in_asset.blocking,
        in_asset.description,
    )
    # it runs with the instance and gives the same result as the in-asset one
    defs = dg.Definitions(assets=[dg.AssetSpec(KEY)], asset_checks=[standalone])
    with dg.instance_for_test() as instance:
        res = defs.resolve_implicit_global_asset_job_def().execute_in_process(instance=instance)
        (ev,) = res.get_asset_check_evaluations()
        assert ev.passed and ev.description == "d" and ev.metadata["n"].value == 1


def test_markdown_table_escapes_pipes_and_line_breaks():
    md = markdown_table(["id", "text"], [["a|b", "one\ntwo\r\nthree | four"], [1, ""]]).value
    lines = md.split("\n")
    assert lines == [
        "| id | text |",
        "|---|---|",
        "| a\\|b | one two three \\| four |",
        "| 1 |  |",
    ]
    # every row has as many unescaped separators as the header: no cell spills into another
    assert {line.replace("\\|", "").count("|") for line in lines} == {3}


def test_markdown_table_without_rows_is_its_header():
    assert markdown_table(["a", "b"], []).value == "| a | b |\n|---|---|"


def test_code_block_cannot_be_closed_by_its_text():
    assert code_block("<|im_start|>user\nHello!").value == "```\n<|im_start|>user\nHello!\n```"
    fenced = code_block("a ``` b ```` c").value
    assert fenced.startswith("`````\n") and fenced.endswith("\n`````")


def test_evaluation_is_the_result_with_extra_metadata():
    """A sensor records the same check (`_checks.evaluation`): same name, outcome, severity,
    description and metadata as the in-asset result, extra metadata added."""
    c = InAssetCheck("fresh", False, "is it fresh", lambda **_: Outcome(False, "stale", {"age_s": 7}))
    key = dg.AssetKey(["a"])
    r = _checks.result(key, c)
    e = _checks.evaluation(key, c, extra={"how": "re-run it"})
    assert isinstance(e, dg.AssetCheckEvaluation) and (e.check_name, e.passed) == ("fresh", False)
    assert e.severity == r.severity == dg.AssetCheckSeverity.ERROR
    assert e.description == r.description == "stale"
    assert e.metadata["age_s"] == r.metadata["age_s"] and e.metadata["how"].value == "re-run it"
