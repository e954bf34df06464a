"""Checks of the models layer (no Dagster import): the target loads, the draft's checkpoint
format, the evaluation's losslessness and acceptance, and whether the draft is trained on the
latest dataset. Each function returns an `Outcome` with no description (the check's declared one
says what it checks) unless it says otherwise; `assets/models.py` declares them."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

from .outcome import Outcome, Table


def target_loads(path: Path | str, trust_remote_code: bool, **_) -> Outcome:
    """The target's tokenizer at `path` loads and its chat template renders a conversation
    (`target.target_loads_with_chat_template`; its metadata, e.g. ``rendered``, kept)."""
    from ..target import target_loads_with_chat_template

    return dataclasses.replace(target_loads_with_chat_template(path, trust_remote_code), description=None)


def draft_format(out: Path, **_) -> Outcome:
    """The checkpoint folder `out` holds exactly the tensors SGLang's EAGLE3 loader expects
    (`train.eagle3.checkpoint_format_problems`); metadata ``problems`` (strings) and ``tensors``
    ({name: shape})."""
    from ..train.eagle3 import checkpoint_format_problems

    problems, shapes = checkpoint_format_problems(out)
    return Outcome(not problems, None, {"problems": problems, "tensors": shapes})


def lossless(report: dict, **_) -> Outcome:
    """The evaluation `report` (`train.eval_report`) says speculative output equals the target's
    greedy output; metadata ``mismatched_prompts``: the report's first 10 mismatches."""
    return Outcome(bool(report["lossless"]), None, {"mismatched_prompts": report.get("mismatches", [])[:10]})


def trained_beats_untrained(report: dict, **_) -> Outcome:
    """The trained draft's acceptance length (tokens per target forward) is strictly above the
    untrained draft's; metadata both lengths and ``per_position`` (`charts.per_position_table`)."""
    from .. import charts

    return Outcome(
        report["acceptance_length"] > report["untrained_acceptance_length"],
        None,
        {
            "trained": report["acceptance_length"],
            "untrained": report["untrained_acceptance_length"],
            "per_position": Table(*charts.per_position_table(report)),
        },
    )


def draft_matches_latest(latest: str | None, trained_on: str | None, runs: Sequence[tuple[str, str]]) -> Outcome:
    """Passed when the draft was trained on (`trained_on`) the `latest` tokenized/dataset
    version, or nothing is tokenized yet (`latest` None). `runs`: the retraining runs requested
    for `latest` as ``(run id, status name such as "FAILURE")``, newest first. Metadata: both
    versions ("none" when unknown) and the runs; the description says which version is untrained
    and the state of its runs."""
    md = {
        "latest_dataset_version": latest or "none",
        "draft_trained_on": trained_on or "none",
        "retraining_runs": [{"run_id": run_id, "status": status} for run_id, status in runs],
    }
    if latest is None or trained_on == latest:
        return Outcome(True, "the draft is trained on the latest dataset", md)
    state = ", ".join(f"{run_id[:8]} {status.lower()}" for run_id, status in runs) or "none requested yet"
    return Outcome(
        False,
        f"tokenized/dataset {latest[:12]} is untrained (draft trained on {(trained_on or 'none')[:12]}; "
        f"retraining runs: {state})",
        md,
    )
