"""What the retraining sensor does on a tick, decided from plain data. No Dagster import.

The sensor (`sensors.retrain_tick`) reads from the instance what the decision needs — the latest
tokenized/dataset materialization, the version the draft was trained on, the retraining runs of
that version, the run that produced it, the latest result of each check on the dataset and the
vocab mapping — as `RetrainFacts`; `decide` says whether to request a retraining run (its run
key and tags), to skip (and why), or to record that the version stays untrained (a failed
`draft_matches_latest_dataset` result, once per failed run); the sensor turns that into Dagster
requests.

The gate, in order: the draft is defined; the dataset has a data version the draft was not
trained on; no retraining run of it is in flight, and not every one of them failed or was
cancelled (then: the version is reported untrained once and never requested again by the
sensor); the run that produced it has finished; every blocking check passed on *this*
materialization and no check failed with ERROR severity (`checks_verdict`); the vocab mapping
was rebuilt after it and its checks pass the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..tags import (
    MAX_RETRIES_TAG,
    PREVIOUS_DATA_VERSION_TAG,
    RETRAIN_CONCURRENCY_GROUP,
    RETRAIN_CONCURRENCY_TAG,
    RETRY_STRATEGY_TAG,
    TRAINED_ON_TAG,
    TRIGGER_ASSET_TAG,
    TRIGGER_NEW_TOKENIZED_VERSION,
    TRIGGER_RUN_ID_TAG,
    TRIGGER_STORAGE_ID_TAG,
    TRIGGER_TAG,
    TRIGGERED_BY_RUN_TAG,
)
from .inputs import DATASET, VOCAB

Verdict = Literal["passed", "failed", "pending"]

# How to request an untrained version again, shown with the failed check the sensor records.
REQUEST_AGAIN = (
    "Runs → the cancelled/failed run → the arrow beside 'Re-execute all (*)' → From failure "
    "(trains exactly this version; resumes from its checkpoint when the training settings are "
    "unchanged), or Jobs → retrain_draft_job → Launchpad (trains the latest version)"
)


@dataclass(frozen=True)
class Materialization:
    """The latest materialization of an asset as the instance recorded it: its data version
    (None: it carries none), the run that produced it, and its event storage id (increasing:
    a larger id was recorded later)."""

    data_version: str | None
    run_id: str
    storage_id: int


@dataclass(frozen=True)
class RunState:
    """A run as the instance reports it. `status`: Dagster's run status value (`QUEUED`,
    `STARTED`, `SUCCESS`, `FAILURE`, `CANCELED`, ...); `finished`: it will not change any more."""

    run_id: str
    status: str
    finished: bool


@dataclass(frozen=True)
class CheckState:
    """The latest record of one check of an asset. `recorded`: the instance has a record of it
    (planned or evaluated); `evaluated`: that record has a result (else it was planned only: the
    run skipped it or crashed before it); `run_id` / `run_finished`: the record's run (a run the
    instance no longer has counts as finished); `target_storage_id`: the materialization the
    result is about (None: not said); `passed`, `severity` (`ERROR` / `WARN`): the result."""

    name: str
    blocking: bool
    recorded: bool = False
    evaluated: bool = False
    run_id: str = ""
    run_finished: bool = True
    target_storage_id: int | None = None
    passed: bool = False
    severity: str = "ERROR"


@dataclass(frozen=True)
class RetrainFacts:
    """What the instance says on one tick.

    `draft_defined`: models/draft_model is in the code location; `dataset`: the latest
    tokenized/dataset materialization (None: never materialized); `trained_on`: the dataset
    version the latest draft was trained on (None: none); `runs`: the retraining runs requested
    for `dataset`'s version, newest first; `dataset_run_finished`: the run that produced
    `dataset` has finished (True when the instance no longer has it); `link_tags`: where that run
    came from, as tags for the run it triggers (`assets._lineage.run_link_tags`);
    `dataset_checks`: the latest record of every check of tokenized/dataset (None: the asset is
    not in the code location); `vocab_defined`, `vocab`, `vocab_checks`: the same for
    tokenized/vocab_mapping."""

    draft_defined: bool = True
    dataset: Materialization | None = None
    trained_on: str | None = None
    runs: Sequence[RunState] = ()
    dataset_run_finished: bool = True
    link_tags: Mapping[str, str] = field(default_factory=dict)
    dataset_checks: Sequence[CheckState] | None = ()
    vocab_defined: bool = True
    vocab: Materialization | None = None
    vocab_checks: Sequence[CheckState] | None = ()


@dataclass(frozen=True)
class RetrainDecision:
    """The outcome of one tick.

    `run_key` / `tags`: the retraining run to request (None: none); `skip_message`: why nothing
    runs (None when a run is requested); `untrained`: why the version is untrained,
    set when the sensor is to record a failed `draft_matches_latest_dataset` result (the result
    itself carries the check's own outcome and text; None: nothing to record); `state`: the next
    cursor state (None: the cursor stays as it is); `messages`: `(level, text)` to log, in order,
    level `info` / `warning`."""

    skip_message: str | None = None
    run_key: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    untrained: str | None = None
    state: dict | None = None
    messages: list[tuple[str, str]] = field(default_factory=list)

    def cursor(self) -> str | None:
        """`state` as the sensor cursor (JSON), None when the cursor stays as it is."""
        return json.dumps(self.state) if self.state is not None else None


def checks_verdict(asset: str, storage_id: int, checks: Sequence[CheckState] | None) -> tuple[Verdict, str]:
    """`(verdict, detail)` of the checks of `asset` (its name, for the detail) against its
    materialization with event storage id `storage_id`: `passed` when every blocking check passed
    on that materialization and no check failed on it with ERROR severity; `failed` when a
    blocking check failed (or did not execute in a finished run), or a non-blocking one failed
    with ERROR severity (WARN failures do not count); `pending` when a blocking check has no
    result on that materialization yet (never evaluated, planned in a run still going, or its
    latest result is about another materialization: unverified data never trains). `checks`
    None: the asset is not in the code location (passed)."""
    if checks is None:
        return "passed", "asset not in this code location"
    ordered = sorted(checks, key=lambda c: c.name)
    blocking = [c for c in ordered if c.blocking]
    pending = []
    for c in ordered:
        if not c.recorded:
            if c.blocking:
                pending.append(c.name)
            continue
        if not c.evaluated:
            if c.blocking and c.run_finished:
                return "failed", f"blocking check {c.name} did not execute in run {c.run_id[:8]}"
            if c.blocking:
                pending.append(c.name)
            continue
        if c.target_storage_id is not None and c.target_storage_id != storage_id:
            if c.blocking:
                pending.append(c.name)
            continue
        if not c.passed and (c.blocking or c.severity == "ERROR"):
            kind = "blocking check" if c.blocking else "check"
            return "failed", f"{kind} {c.name} failed on {asset}"
    if pending:
        return "pending", f"no result yet for blocking check(s) {pending} on this materialization"
    return "passed", f"{len(blocking)} blocking check(s) passed, no ERROR check failed"


def retry_tags(max_retries: int) -> dict[str, str]:
    """Dagster run-retry tags for `max_retries` > 0 retries from the failed step ({} for 0): the
    daemon re-launches a failed run (needs `run_retries.enabled` in dagster.yaml), so a GPU job
    lost to an OOM or a preempted node is retried instead of leaving the draft stale until the
    next data change."""
    return {MAX_RETRIES_TAG: str(max_retries), RETRY_STRATEGY_TAG: "FROM_FAILURE"} if max_retries > 0 else {}


def decide(facts: RetrainFacts, state: Mapping | None, *, max_retries: int) -> RetrainDecision:
    """What the retraining sensor does on one tick (the gate: the module docstring).

    `state`: the cursor state the previous decision left (None/{}: none); `max_retries`: run
    retries of a requested run (`retry_tags`). A request's run key is `retrain:<version>` (one
    run per version) and its tags name the version (`TRAINED_ON_TAG`), the run that produced it,
    the version the draft had and `facts.link_tags`. When every retraining run of the version
    failed or was cancelled, the version is reported untrained (`untrained`, and the state
    remembers the run) once per newest failed run; later ticks only skip."""
    if not facts.draft_defined:
        return RetrainDecision("models/draft_model is not defined in this code location yet")
    ds = facts.dataset
    if ds is None:
        return RetrainDecision("tokenized/dataset has never been materialized")
    version = ds.data_version
    if not version:
        return RetrainDecision("latest tokenized/dataset materialization carries no data version")
    if facts.trained_on == version:
        return RetrainDecision(f"draft model already trained on tokenized/dataset version {version[:12]}")
    active = next((r for r in facts.runs if not r.finished), None)
    if active is not None:
        return RetrainDecision(
            f"retraining run {active.run_id[:8]} for tokenized/dataset {version[:12]} is {active.status.lower()}"
        )
    failed = [r for r in facts.runs if r.status in ("FAILURE", "CANCELED")]
    if facts.runs and len(failed) == len(facts.runs):
        # Cancelled or failed (after its retries): the version stays visibly untrained (a failed
        # check on models/draft_model, reported once per run) until someone requests it again.
        detail = (
            f"tokenized/dataset {version[:12]} is untrained: retraining run {failed[0].run_id[:8]} "
            f"{failed[0].status.lower()}; re-execute it or launch retrain_draft_job from the UI"
        )
        if (state or {}).get("reported") == failed[0].run_id:
            return RetrainDecision(detail)
        return RetrainDecision(
            detail, untrained=detail, state={"reported": failed[0].run_id}, messages=[("warning", detail)]
        )
    if not facts.dataset_run_finished:
        return RetrainDecision(
            f"waiting for run {ds.run_id[:8]} that produced tokenized/dataset {version[:12]} to finish"
        )
    verdict, detail = checks_verdict(DATASET, ds.storage_id, facts.dataset_checks)
    if verdict == "failed":
        return RetrainDecision(
            f"tokenized/dataset {version[:12]}: {detail}",
            messages=[("warning", f"not retraining on tokenized/dataset {version[:12]}: {detail}")],
        )
    if verdict == "pending":
        return RetrainDecision(f"tokenized/dataset {version[:12]}: {detail}")
    if facts.vocab_defined:
        vocab = facts.vocab
        if vocab is None or vocab.storage_id < ds.storage_id:
            return RetrainDecision(f"waiting for tokenized/vocab_mapping to be rebuilt from dataset {version[:12]}")
        v_verdict, v_detail = checks_verdict(VOCAB, vocab.storage_id, facts.vocab_checks)
        if v_verdict != "passed":
            return RetrainDecision(f"tokenized/vocab_mapping: {v_detail}")
    tags = {
        TRIGGER_TAG: TRIGGER_NEW_TOKENIZED_VERSION,
        RETRAIN_CONCURRENCY_TAG: RETRAIN_CONCURRENCY_GROUP,
        TRIGGER_ASSET_TAG: DATASET,
        TRAINED_ON_TAG: version,
        TRIGGER_RUN_ID_TAG: ds.run_id,
        TRIGGERED_BY_RUN_TAG: ds.run_id,  # the same link name as the automation's runs
        TRIGGER_STORAGE_ID_TAG: str(ds.storage_id),
        PREVIOUS_DATA_VERSION_TAG: facts.trained_on or "none",
        **facts.link_tags,  # links back through the tokenize run to what started the chain
        **retry_tags(max_retries),
    }
    return RetrainDecision(
        run_key=f"retrain:{version}",
        tags=tags,
        messages=[("info", f"retraining: tokenized/dataset {version[:12]} (run {ds.run_id[:8]}), {detail}")],
    )
