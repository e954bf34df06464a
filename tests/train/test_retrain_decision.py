"""`train.retrain.decide`: the retraining sensor's decision table, on plain facts, without Dagster
(the sensor itself, on a real instance: tests/platform/test_retrain.py, test_trigger_links.py)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from specforge_assets.train.retrain import (
    CheckState,
    Materialization,
    RetrainFacts,
    RunState,
    checks_verdict,
    decide,
)

V = "v" * 8 + "0123456789abcdef"  # a data version (the messages show its first 12 characters)
DS = Materialization(V, "tokrun01-aaaa", storage_id=100)
VOCAB = Materialization("vocab-v1", "tokrun01-aaaa", storage_id=101)
PASSED = CheckState("rows_ok", blocking=True, recorded=True, evaluated=True, run_id="tokrun01", passed=True)
READY = RetrainFacts(
    dataset=DS,
    trained_on="older-version",
    link_tags={"specforge/trigger_job": "mix_and_tokenize"},
    dataset_checks=[replace(PASSED, target_storage_id=100)],
    vocab=VOCAB,
    vocab_checks=[replace(PASSED, name="vocab_ok", target_storage_id=101)],
)


def _decide(facts=READY, state=None, max_retries=1):
    return decide(facts, state, max_retries=max_retries)


def test_ready_version_is_requested_once_per_version_with_its_tags():
    d = _decide()
    assert d.run_key == f"retrain:{V}" and d.skip_message is None and d.untrained is None
    assert d.tags == {
        "specforge/trigger": "new-tokenized-data-version",
        "specforge/retraining": "draft",
        "specforge/trigger_asset": "tokenized/dataset",
        "specforge/trigger_data_version": V,
        "specforge/trigger_run_id": DS.run_id,
        "specforge/triggered_by_run": DS.run_id,
        "specforge/trigger_storage_id": "100",
        "specforge/previous_data_version": "older-version",
        "specforge/trigger_job": "mix_and_tokenize",
        "dagster/max_retries": "1",
        "dagster/retry_strategy": "FROM_FAILURE",
    }
    assert d.messages == [
        (
            "info",
            f"retraining: tokenized/dataset {V[:12]} (run tokrun01), 1 blocking check(s) passed, no ERROR check failed",
        )
    ]
    assert d.cursor() is None  # a request leaves the cursor as it is


def test_no_retries_and_a_never_trained_draft():
    d = _decide(replace(READY, trained_on=None), max_retries=0)
    assert d.tags["specforge/previous_data_version"] == "none"
    assert "dagster/max_retries" not in d.tags and "dagster/retry_strategy" not in d.tags


@pytest.mark.parametrize(
    "facts, message",
    [
        (RetrainFacts(draft_defined=False), "models/draft_model is not defined in this code location yet"),
        (RetrainFacts(), "tokenized/dataset has never been materialized"),
        (
            RetrainFacts(dataset=Materialization(None, "r", 1)),
            "latest tokenized/dataset materialization carries no data version",
        ),
        (replace(READY, trained_on=V), f"draft model already trained on tokenized/dataset version {V[:12]}"),
        (
            replace(READY, runs=[RunState("queued01-xx", "QUEUED", False)]),
            f"retraining run queued01 for tokenized/dataset {V[:12]} is queued",
        ),
        (
            replace(READY, dataset_run_finished=False),
            f"waiting for run tokrun01 that produced tokenized/dataset {V[:12]} to finish",
        ),
        (replace(READY, vocab=None), f"waiting for tokenized/vocab_mapping to be rebuilt from dataset {V[:12]}"),
        (
            replace(READY, vocab=replace(VOCAB, storage_id=99)),
            f"waiting for tokenized/vocab_mapping to be rebuilt from dataset {V[:12]}",
        ),
        (
            replace(READY, vocab_checks=[replace(PASSED, name="vocab_ok", passed=False, target_storage_id=101)]),
            "tokenized/vocab_mapping: blocking check vocab_ok failed on tokenized/vocab_mapping",
        ),
    ],
)
def test_skips_say_why(facts, message):
    d = _decide(facts)
    assert d.run_key is None and not d.tags and d.untrained is None and d.state is None
    assert d.skip_message == message


def test_a_vocab_mapping_outside_the_code_location_does_not_gate():
    assert _decide(replace(READY, vocab_defined=False, vocab=None)).run_key == f"retrain:{V}"


def test_failed_dataset_check_skips_with_a_warning_pending_one_quietly():
    failed = _decide(replace(READY, dataset_checks=[replace(PASSED, passed=False, target_storage_id=100)]))
    assert failed.run_key is None
    assert failed.skip_message == f"tokenized/dataset {V[:12]}: blocking check rows_ok failed on tokenized/dataset"
    assert failed.messages == [
        ("warning", f"not retraining on tokenized/dataset {V[:12]}: blocking check rows_ok failed on tokenized/dataset")
    ]
    pending = _decide(replace(READY, dataset_checks=[CheckState("rows_ok", blocking=True)]))
    assert pending.run_key is None and pending.messages == []
    assert pending.skip_message == (
        f"tokenized/dataset {V[:12]}: no result yet for blocking check(s) ['rows_ok'] on this materialization"
    )


def test_every_failed_or_cancelled_run_is_reported_once_and_never_requested_again():
    runs = [RunState("cancel02-xx", "CANCELED", True), RunState("failed01-xx", "FAILURE", True)]
    detail = (
        f"tokenized/dataset {V[:12]} is untrained: retraining run cancel02 canceled; "
        "re-execute it or launch retrain_draft_job from the UI"
    )
    first = _decide(replace(READY, runs=runs))
    assert first.run_key is None and first.skip_message == detail and first.untrained == detail
    assert first.messages == [("warning", detail)]
    assert json.loads(first.cursor()) == {"reported": "cancel02-xx"}
    # the next tick, with the cursor the first one left: skipped, nothing recorded again
    again = _decide(replace(READY, runs=runs), state=json.loads(first.cursor()))
    assert again.skip_message == detail and again.untrained is None and again.state is None and not again.messages
    # a newer run of the same version failed too: reported again
    newer = _decide(replace(READY, runs=[RunState("failed03-xx", "FAILURE", True), *runs]), state=first.state)
    assert newer.untrained and newer.state == {"reported": "failed03-xx"}


def test_a_succeeded_run_among_failed_ones_is_no_report():
    """One of the version's runs succeeded (the draft moved on since): the gates decide, no report."""
    runs = [RunState("failed01-xx", "FAILURE", True), RunState("success1-xx", "SUCCESS", True)]
    d = _decide(replace(READY, runs=runs))
    assert d.untrained is None and d.run_key == f"retrain:{V}"


def _check(**kw) -> CheckState:
    return replace(PASSED, **{"target_storage_id": 100, **kw})


@pytest.mark.parametrize(
    "checks, verdict, detail",
    [
        (None, "passed", "asset not in this code location"),
        ([], "passed", "0 blocking check(s) passed, no ERROR check failed"),
        ([_check()], "passed", "1 blocking check(s) passed, no ERROR check failed"),
        ([_check(target_storage_id=None)], "passed", "1 blocking check(s) passed, no ERROR check failed"),
        ([_check(passed=False)], "failed", "blocking check rows_ok failed on tokenized/dataset"),
        # non-blocking: ERROR failures stop training, WARN ones do not; unevaluated ones never wait
        ([_check(blocking=False, passed=False)], "failed", "check rows_ok failed on tokenized/dataset"),
        (
            [_check(blocking=False, passed=False, severity="WARN")],
            "passed",
            "0 blocking check(s) passed, no ERROR check failed",
        ),
        ([CheckState("soft", blocking=False)], "passed", "0 blocking check(s) passed, no ERROR check failed"),
        # blocking without a result on this materialization: pending, never passed
        (
            [CheckState("rows_ok", blocking=True)],
            "pending",
            "no result yet for blocking check(s) ['rows_ok'] on this materialization",
        ),
        (
            [_check(target_storage_id=42, passed=False)],
            "pending",
            "no result yet for blocking check(s) ['rows_ok'] on this materialization",
        ),
        (
            [_check(evaluated=False, run_finished=False)],
            "pending",
            "no result yet for blocking check(s) ['rows_ok'] on this materialization",
        ),
        # planned in a run that ended without executing it: the run skipped it or crashed
        (
            [_check(evaluated=False, run_id="crashed1-xx")],
            "failed",
            "blocking check rows_ok did not execute in run crashed1",
        ),
        # checks are read in name order: the first failure by name is the one reported
        (
            [_check(name="b_ok", passed=False), _check(name="a_ok", passed=False)],
            "failed",
            "blocking check a_ok failed on tokenized/dataset",
        ),
        (
            [CheckState("b_ok", blocking=True), CheckState("a_ok", blocking=True)],
            "pending",
            "no result yet for blocking check(s) ['a_ok', 'b_ok'] on this materialization",
        ),
    ],
)
def test_checks_verdict(checks, verdict, detail):
    assert checks_verdict("tokenized/dataset", 100, checks) == (verdict, detail)
