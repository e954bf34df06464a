"""Faults against real (stub) HTTP servers in subprocesses: 500s, hangs, drops, deaths, SIGKILL."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from specforge_assets.regenerate.client import NoServerAvailable
from specforge_assets.regenerate.journal import ConfigChanged, JournalWriteError, finished_rows, journal_paths
from specforge_assets.regenerate.runner import OutputPaths, OutputWriteError, run_regeneration
from specforge_assets.regenerate.settings import RegenSettings

from .conftest import dead_address, ids_across, make_rows, read_jsonl, write_rows

FAST = dict(
    backoff_base_s=0.02,
    backoff_max_s=0.1,
    probe_interval_s=0.2,
    request_timeout_s=5.0,
    connect_timeout_s=1.0,
    progress_interval_s=0.5,
    all_down_timeout_s=3.0,
)


def settings(**kw) -> RegenSettings:
    return RegenSettings(**{"model": "stub-model", "max_tokens": 32, "concurrency": 8, **FAST, **kw})


def assert_exactly_once(rows, outputs):
    ids = ids_across(outputs)
    want = [r["id"] for r in rows]
    assert Counter(ids) == Counter(want)


def test_500s_hangs_drops_are_retried_and_every_row_is_accounted(tmp_path, stub_server):
    rows = make_rows(120)
    inp = write_rows(tmp_path / "in.jsonl", rows)
    flaky = stub_server(fail_every=4)
    # a hang is an hour, at most 4 of them; the timeout is 10 s, so the test decides the outcome:
    # every hung request times out, and an ordinary reply (milliseconds) on a loaded 2-core box is
    # nowhere near the timeout. The servers count what they injected, and the client's error
    # kinds must match those counts exactly.
    hangs = stub_server(hang_every=7, hang_limit=4)
    drops = stub_server(drop_every=5)
    out = OutputPaths.specforge(tmp_path / "out" / "regen.jsonl")
    stats = run_regeneration(
        inp,
        out,
        settings(request_timeout_s=10.0, max_attempts=12),
        [flaky.address, hangs.address, drops.address],
        log=lambda m: None,
    )
    injected = {s: httpx.get(f"http://{s.address}/stats", timeout=10).json() for s in (flaky, hangs, drops)}
    assert injected[flaky]["failed"] > 0 and injected[drops]["dropped"] > 0 and injected[hangs]["hung"] == 4
    kinds = stats["request_error_kinds"]
    assert kinds == {"http_500": injected[flaky]["failed"], "timeout": 4, "connection": injected[drops]["dropped"]}
    assert stats["retries"] == sum(kinds.values())
    assert stats["counts"] == {"success": 120, "error": 0, "skipped": 0, "passthrough": 0}
    success = read_jsonl(out.success)
    assert [r["id"] for r in success] == [r["id"] for r in rows]  # input order
    for src, got in zip(rows, success):
        users = [m["content"] for m in src["conversations"] if m["role"] == "user"]
        assert [m["content"] for m in got["conversations"] if m["role"] == "user"] == users
        assert all(m["content"] != "old" for m in got["conversations"])
        assert got["extra"] == src["extra"] and got["status"] == "success"
        assert len(got["regeneration"]["turns"]) == len(users)
    assert not journal_paths(out.success)[0].exists()  # journal removed once complete


def test_permanent_400_is_an_error_row_at_once(tmp_path, stub_server):
    rows = make_rows(5)
    rows[2]["conversations"][0 if rows[2]["conversations"][0]["role"] == "user" else 1]["content"] = "OVERFLOW me"
    inp = write_rows(tmp_path / "in.jsonl", rows)
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    errs = read_jsonl(out.error)
    assert [e["id"] for e in errs] == ["r2"]
    assert errs[0]["status"] == "error" and "HTTP 400" in errs[0]["error"]
    assert errs[0]["conversations"] == rows[2]["conversations"]  # original kept, as SpecForge does
    assert stats["retries"] == 0


def test_four_servers_one_dead_fails_over_with_no_error_rows(tmp_path, stub_server):
    rows = make_rows(200, turns=(1,))
    inp = write_rows(tmp_path / "in.jsonl", rows)
    live = [stub_server() for _ in range(3)]
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    stats = run_regeneration(inp, out, settings(), [s.address for s in live] + [dead_address()], log=lambda m: None)
    assert stats["counts"]["success"] == 200 and stats["counts"]["error"] == 0
    assert sum(v["ok"] for v in stats["servers"].values()) == 200


def test_server_killed_mid_run_fails_over(tmp_path, stub_server):
    rows = make_rows(150)
    inp = write_rows(tmp_path / "in.jsonl", rows)
    dying = stub_server(die_after=40, latency_ms=5)
    healthy = stub_server(latency_ms=5)
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    stats = run_regeneration(inp, out, settings(), [dying.address, healthy.address], log=lambda m: None)
    assert stats["counts"]["success"] == 150
    dead = stats["servers"][dying.address]
    assert dead["ejections"] >= 1 and not dead["up"]
    assert_exactly_once(rows, out)


def test_no_server_answers_is_a_clear_error(tmp_path):
    inp = write_rows(tmp_path / "in.jsonl", make_rows(3))
    with pytest.raises(NoServerAvailable, match="no regeneration server answered"):
        run_regeneration(
            inp,
            OutputPaths.specforge(tmp_path / "o.jsonl"),
            settings(),
            [dead_address(), dead_address()],
            log=lambda m: None,
        )


def test_all_servers_die_aborts_with_journal_intact_then_resume_completes(tmp_path, stub_server):
    rows = make_rows(100, turns=(1,))
    inp = write_rows(tmp_path / "in.jsonl", rows)
    dying = stub_server(die_after=30)
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    with pytest.raises(NoServerAvailable, match="out of rotation"):
        run_regeneration(inp, out, settings(concurrency=2), [dying.address], log=lambda m: None)
    done = finished_rows(out.success)
    assert 25 <= len(done) <= 30 and not out.success.exists()
    fresh = stub_server()
    stats = run_regeneration(inp, out, settings(concurrency=2), [fresh.address], resume=True, log=lambda m: None)
    assert stats["resumed_rows"] == len(done) and stats["rows_this_run"] == 100 - len(done)
    assert_exactly_once(rows, out)


def test_bad_rows_are_skipped_with_reasons(tmp_path, stub_server):
    rows = [
        {"id": "ok", "conversations": [{"role": "user", "content": "hi"}]},
        {
            "id": "lead-assistant",
            "conversations": [{"role": "assistant", "content": "x"}, {"role": "user", "content": "y"}],
        },
        {"id": "tool", "conversations": [{"role": "user", "content": "x"}, {"role": "tool", "content": "y"}]},
        {"id": "two-users", "conversations": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]},
        {"id": "empty", "conversations": [{"role": "user", "content": " "}]},
        {
            "id": "late-system",
            "conversations": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "y"},
                {"role": "system", "content": "z"},
            ],
        },
        {"id": "no-conv"},
        [1, 2],
        "{not json",
    ]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    stats = run_regeneration(inp, out, settings(), [stub_server().address], log=lambda m: None)
    # consecutive user turns are a prompt-only row (each gets an answer), not a skip
    assert stats["counts"] == {"success": 2, "error": 0, "skipped": 7, "passthrough": 0}
    two = next(r for r in read_jsonl(out.success) if r["id"] == "two-users")
    assert [m["role"] for m in two["conversations"]] == ["user", "assistant", "user", "assistant"]
    sk = read_jsonl(out.skipped)
    reasons = {r.get("id", str(r.get("data"))): r["error"] for r in sk}
    assert reasons["lead-assistant"] == "Data starts with an assistant message"
    assert reasons["tool"].startswith(
        "Invalid conversation role order at position 1: expected assistant or user, got tool"
    )
    assert "empty" in reasons["empty"] and "System message" in reasons["late-system"]
    assert reasons["[1, 2]"].startswith("Row is not a JSON object")
    assert reasons["{not json"].startswith("Invalid JSON: line 9: malformed JSON")
    assert all(r["status"] == "skipped" for r in sk)


def test_num_samples_counts_valid_rows_and_accounts_for_the_rest(tmp_path, stub_server):
    rows = make_rows(10, turns=(1,))
    rows.insert(1, {"id": "bad", "conversations": []})
    inp = write_rows(tmp_path / "in.jsonl", rows)
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "a.jsonl")
    stats = run_regeneration(inp, out, settings(num_samples=4), [s.address], log=lambda m: None)
    assert stats["counts"] == {"success": 4, "error": 0, "skipped": 7, "passthrough": 0}
    assert sum(1 for r in read_jsonl(out.skipped) if r["error"].startswith("Not submitted")) == 6
    out2 = OutputPaths.specforge(tmp_path / "b.jsonl")
    stats = run_regeneration(
        inp, out2, settings(num_samples=4, beyond_limit="passthrough"), [s.address], log=lambda m: None
    )
    assert stats["counts"] == {"success": 4, "error": 0, "skipped": 1, "passthrough": 6}
    got = read_jsonl(out2.success)
    assert [r["id"] for r in got] == [r["id"] for r in rows if r["id"] != "bad"]
    assert got[-1]["status"] == "passthrough" and got[-1]["conversations"] == rows[-1]["conversations"]


def test_reasoning_modes(tmp_path, stub_server):
    rows = [
        {
            "id": "a",
            "conversations": [
                {"role": "user", "content": "plain"},
                {"role": "assistant", "content": "x"},
                {"role": "user", "content": "again"},
            ],
        },
        {"id": "t", "conversations": [{"role": "user", "content": "THINK please"}]},
        {"id": "e", "conversations": [{"role": "user", "content": "EMPTY please"}]},
    ]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    s = stub_server()
    res = {}
    for mode in ("none", "disable", "save"):
        out = OutputPaths.specforge(tmp_path / f"{mode}.jsonl")
        run_regeneration(inp, out, settings(reasoning=mode), [s.address], log=lambda m: None)
        res[mode] = {r["id"]: r for p in (out.success, out.error, out.skipped) for r in read_jsonl(p)}
    assert res["none"]["t"]["status"] == "success" and "<think>" in res["none"]["t"]["conversations"][-1]["content"]
    # an empty answer is an error row in every mode (counted, retried by the next run), never a success
    assert res["none"]["e"]["status"] == "error" and "content empty" in res["none"]["e"]["error"]
    assert res["disable"]["t"]["status"] == "skipped" and res["disable"]["e"]["status"] == "error"
    assert res["disable"]["a"]["status"] == "success"
    save_a = res["save"]["a"]
    assert save_a["status"] == "success"
    assistants = [m for m in save_a["conversations"] if m["role"] == "assistant"]
    assert len(assistants) == 2 and all(m["reasoning_content"] for m in assistants)
    assert res["save"]["t"]["status"] == "skipped" and res["save"]["e"]["status"] == "error"


def test_request_body_sampling_and_dialects():
    st = RegenSettings(
        model="m",
        temperature=0.5,
        top_p=0.9,
        top_k=20,
        min_p=0.05,
        repetition_penalty=1.1,
        seed=7,
        reasoning="disable",
        extra_body={"foo": 1, "chat_template_kwargs": {"x": 2}},
    )
    b = st.request_body([{"role": "user", "content": "q"}], st.turn_seed("id", 0))
    assert b["repetition_penalty"] == 1.1 and "presence_penalty" not in b
    assert b["top_k"] == 20 and b["min_p"] == 0.05 and b["top_p"] == 0.9 and b["foo"] == 1
    assert b["chat_template_kwargs"] == {"x": 2, "enable_thinking": False}
    assert b["seed"] == st.turn_seed("id", 0) != st.turn_seed("id", 1)
    st2 = RegenSettings(model="m", top_k=20, repetition_penalty=1.1, dialect="transformers")
    b2 = st2.request_body([], None)
    assert "top_k" not in b2 and json.loads(b2["generation_config"])["repetition_penalty"] == 1.1
    with pytest.raises(ValueError, match="reasoning"):
        RegenSettings(model="m", reasoning="maybe")
    with pytest.raises(ValueError, match="max_tokens"):
        RegenSettings(model="m", max_tokens=0)


def test_config_change_with_partial_output_is_refused(tmp_path, stub_server):
    rows = make_rows(60, turns=(1,))
    inp = write_rows(tmp_path / "in.jsonl", rows)
    dying = stub_server(die_after=20)
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    with pytest.raises(NoServerAvailable):
        run_regeneration(inp, out, settings(concurrency=1), [dying.address], log=lambda m: None)
    s = stub_server()
    with pytest.raises(ConfigChanged, match="temperature"):
        run_regeneration(
            inp, out, settings(temperature=0.1, concurrency=1), [s.address], resume=True, log=lambda m: None
        )
    stats = run_regeneration(
        inp, out, settings(temperature=0.1), [s.address], resume=True, restart=True, log=lambda m: None
    )
    assert stats["resumed_rows"] == 0 and stats["counts"]["success"] == 60


def test_disk_full_on_journal_is_a_clear_error_and_resume_completes(tmp_path, stub_server, monkeypatch):
    from specforge_assets.regenerate.journal import Journal

    rows = make_rows(80, turns=(1,))
    inp = write_rows(tmp_path / "in.jsonl", rows)
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    real_connect = Journal._connect

    def small_disk(self):  # sqlite's own "database or disk is full" once the file outgrows a few pages
        db = real_connect(self)
        db.execute(f"PRAGMA max_page_count={db.execute('PRAGMA page_count').fetchone()[0] + 3}")
        return db

    monkeypatch.setattr(Journal, "_connect", small_disk)
    with pytest.raises(JournalWriteError, match="No space left on device"):
        run_regeneration(inp, out, settings(journal_batch=8, concurrency=2), [s.address], log=lambda m: None)
    monkeypatch.setattr(Journal, "_connect", real_connect)
    stats = run_regeneration(
        inp, out, settings(journal_batch=8, concurrency=2), [s.address], resume=True, log=lambda m: None
    )
    assert stats["resumed_rows"] > 0
    assert_exactly_once(rows, out)


def test_unwritable_output_is_a_clear_error_and_journal_survives(tmp_path, stub_server, monkeypatch):
    from specforge_assets.regenerate import runner as rmod

    rows = make_rows(20, turns=(1,))
    inp = write_rows(tmp_path / "in.jsonl", rows)
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    real = rmod.atomic_write

    def denied(path, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(rmod, "atomic_write", denied)
    with pytest.raises(OutputWriteError, match="Permission denied.*journal .* is intact"):
        run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    assert journal_paths(out.success)[0].exists()
    monkeypatch.setattr(rmod, "atomic_write", real)
    stats = run_regeneration(inp, out, settings(), [s.address], resume=True, log=lambda m: None)
    assert stats["rows_this_run"] == 0 and stats["counts"]["success"] == 20  # finished from the journal alone
    assert_exactly_once(rows, out)


def test_cli_sigkill_then_resume_is_exactly_once(tmp_path, stub_server):
    rows = make_rows(400)
    rows[5] = {"id": "r5", "conversations": [{"role": "assistant", "content": "bad"}]}
    rows[9]["conversations"][-2]["content"] = "OVERFLOW"
    inp = write_rows(tmp_path / "in.jsonl", rows)
    servers = [stub_server(latency_ms=20), stub_server(latency_ms=20, fail_every=9)]
    outp = tmp_path / "out" / "regen.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "specforge_assets.cli",
        "regenerate",
        "--model",
        "stub-model",
        "--server-address",
        *[s.address for s in servers],
        "--input-file-path",
        str(inp),
        "--output-file-path",
        str(outp),
        "--concurrency",
        "4",
        "--max-tokens",
        "16",
        "--temperature",
        "0",
    ]
    proc = subprocess.Popen(cmd + ["--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        if len(finished_rows(outp)) >= 60:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    n_before = len(finished_rows(outp))
    assert 0 < n_before < 400 and not outp.exists()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["success"] + summary["error"] + summary["skipped"] == 400
    out = OutputPaths.specforge(outp)
    assert out.error.name == "regen_error.jsonl" and out.skipped.name == "regen_skipped.jsonl"
    assert_exactly_once(rows, out)
    assert [e["id"] for e in read_jsonl(out.error)] == ["r9"]
    assert [e["id"] for e in read_jsonl(out.skipped)] == ["r5"]
    assert all(r["status"] == "success" for r in read_jsonl(out.success))
    # a completed run resumed again retries only its error row (error rows are never final);
    # every other row is kept as it was
    before = outp.read_bytes()
    r = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "retrying the 1 error rows of the last run (399/400 rows kept)" in r.stderr
    assert outp.read_bytes() == before and [e["id"] for e in read_jsonl(out.error)] == ["r9"]


def test_api_key_comes_from_env_only_and_is_never_written(tmp_path, stub_server):
    secret = "sk-test-SECRET-1234567890"
    s = stub_server(api_key=secret)
    rows = make_rows(6)
    inp = write_rows(tmp_path / "in.jsonl", rows)
    outp = tmp_path / "out" / "o.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "specforge_assets.cli",
        "regenerate",
        "--model",
        "stub-model",
        "--server-address",
        s.address,
        "--input-file-path",
        str(inp),
        "--output-file-path",
        str(outp),
    ]
    env = {k: v for k, v in os.environ.items() if k != "SPECFORGE_REGEN_API_KEY"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 1 and "HTTP 401" in r.stderr  # no key -> the start probe is refused, clear error
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**env, "SPECFORGE_REGEN_API_KEY": secret})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["success"] == 6
    assert secret not in r.stdout + r.stderr
    for p in (tmp_path / "out").iterdir():
        assert secret not in p.read_text()


def test_a_dead_server_is_probed_back_into_rotation(tmp_path, stub_server):
    """The late server is started once the run has logged that it missed the start probe, and the
    healthy one dies after 100 chat requests: the rest of the rows can only be answered by the late
    one after the background probe has put it back (no race on how fast either side is)."""
    import threading

    rows = make_rows(300, turns=(1,))
    inp = write_rows(tmp_path / "in.jsonl", rows)
    healthy = stub_server(latency_ms=30, die_after=100)
    late = dead_address()
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    starters: list[threading.Thread] = []

    def log(msg: str) -> None:
        if f"server {late} did not answer the start probe" in msg and not starters:
            t = threading.Thread(target=stub_server, kwargs={"port": late.split(":")[1], "latency_ms": 30})
            starters.append(t)
            t.start()

    try:
        stats = run_regeneration(
            inp, out, settings(concurrency=4, all_down_timeout_s=120.0), [healthy.address, late], log=log
        )
    finally:
        for t in starters:
            t.join()
    assert stats["counts"]["success"] == 300
    back = stats["servers"][late]
    assert back["up"] and back["ok"] >= 300 - 99  # it answered the background probe and took the rest
    assert_exactly_once(rows, out)
