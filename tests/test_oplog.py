"""`oplog`: the ops logs' records, redaction and paths, without Dagster."""

from __future__ import annotations

import json
from pathlib import Path

from specforge_assets import oplog
from specforge_assets.errors import redact


def _record(env, **kw):
    base = dict(
        run_id="r1",
        job="retrain_draft_job",
        partition=None,
        backfill=None,
        trigger="retrain",
        assets=["models/draft_model", "models/draft_evaluation"],
        message="Execution of run for retrain_draft_job failed.",
        steps=[],
        env=env,
        now_ns=1_700_000_000_000_000_000,
    )
    return oplog.failure_record(**{**base, **kw})


def test_secret_from_the_environment_never_reaches_the_failure_log(tmp_path):
    env = {"MY_SERVICE_TOKEN": "tok-4f9a8b7c6d", "PATH": "/usr/bin"}
    rec = _record(
        env,
        message="calling with tok-4f9a8b7c6d failed",
        steps=[("train", "RuntimeError", "401 for token tok-4f9a8b7c6d at /usr/bin; Bearer abcdefghijkl")],
    )
    path = tmp_path / "ops" / "failures.jsonl"
    oplog.append_jsonl(path, rec)
    line = path.read_text()
    assert "tok-4f9a8b7c6d" not in line and "abcdefghijkl" not in line
    assert "<redacted:MY_SERVICE_TOKEN>" in line and "/usr/bin" in line  # non-secret values stay
    assert json.loads(line)["steps"] == [
        {"step": "train", "error_class": "RuntimeError", "error": rec["steps"][0]["error"]}
    ]


def test_failure_record_fields_sorting_and_limit():
    rec = _record({}, steps=[("s", None, "x" * 5000)], partition="alpha", backfill="bf1")
    assert rec["time"] == "2023-11-14T22:13:20+00:00"
    assert rec["assets"] == ["models/draft_evaluation", "models/draft_model"]
    assert (rec["partition"], rec["backfill"], rec["trigger"]) == ("alpha", "bf1", "retrain")
    assert len(rec["steps"][0]["error"]) == oplog.ERROR_LIMIT and rec["steps"][0]["error_class"] is None


def test_redact_patterns_without_env():
    out = redact('api_key="abcd1234" password: hunter22 sk-abcdefghijklmnop ghp_0123456789abcdef', {})
    for secret in ("abcd1234", "hunter22", "sk-abcdefghijklmnop", "ghp_0123456789abcdef"):
        assert secret not in out
    assert redact("short env values stay", {"X_KEY": "stay"}) == "short env values stay"


def test_ops_path(tmp_path):
    """The ops logs' default names are declared once (`automation.OpsSection`); null in
    configs/automation.yaml means that default."""
    from specforge_assets.automation import automation_settings

    for raw in ({}, {"ops": {"incoming_log": None, "failure_log": None}}):
        ops = automation_settings(raw)["ops"]
        assert oplog.ops_path(ops["incoming_log"], tmp_path) == tmp_path / "ops" / "incoming.jsonl"
        assert oplog.ops_path(ops["failure_log"], tmp_path) == tmp_path / "ops" / "failures.jsonl"
    assert oplog.ops_path("logs/f.jsonl", tmp_path) == tmp_path / "logs" / "f.jsonl"
    assert oplog.ops_path("/abs/f.jsonl", tmp_path).as_posix() == "/abs/f.jsonl"
    assert oplog.ops_path("~/f.jsonl", tmp_path) == Path.home() / "f.jsonl"


def test_append_jsonl_appends_one_line_per_record(tmp_path):
    path = tmp_path / "a" / "b.jsonl"
    oplog.append_jsonl(path, {"b": 1, "a": tmp_path})
    oplog.append_jsonl(path, {"c": 2})
    lines = path.read_text().splitlines()
    assert lines == [json.dumps({"a": str(tmp_path), "b": 1}), json.dumps({"c": 2})]
