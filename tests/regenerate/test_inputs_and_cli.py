"""Regeneration input and command line: unreadable rows are skipped rows (jsonrows), prompt-only
rows get answers, credentials in a server address never leak, expected failures are one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from specforge_assets.errors import UserError
from specforge_assets.regenerate.client import NoServerAvailable, split_address, strip_credentials
from specforge_assets.regenerate.journal import ConfigChanged, JournalWriteError
from specforge_assets.regenerate.launcher import ServerLaunchError
from specforge_assets.regenerate.runner import InputNotFound, OutputPaths, OutputWriteError, run_regeneration
from specforge_assets.regenerate.settings import RegenSettings

from .conftest import dead_address, read_jsonl, write_rows

FAST = dict(
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    request_timeout_s=30.0,
    connect_timeout_s=5.0,
    progress_interval_s=60.0,
    max_attempts=2,
)
CLI = [sys.executable, "-m", "specforge_assets.cli", "regenerate", "--model", "stub-model"]


def settings(**kw) -> RegenSettings:
    return RegenSettings(**{"model": "stub-model", "max_tokens": 32, "concurrency": 4, **FAST, **kw})


def chat_requests(address: str) -> list[list[dict]]:
    got = httpx.get(f"http://{address}/requests", timeout=10).json()
    return [m for m in got if not (len(m) == 1 and m[0]["content"] == "Hello, how are you?")]


# -- 2. input rows under the one JSON row rule ---------------------------------------------------
def test_deep_surrogate_and_bad_utf8_lines_are_skipped_rows_naming_line_and_field(tmp_path, stub_server):
    good = {"id": "g", "conversations": [{"role": "user", "content": "hi"}]}
    deep = (
        '{"id": "deep", "conversations": [{"role": "user", "content": "x", "meta": ' + "[" * 1000 + "]" * 1000 + "}]}"
    )
    surrogate = '{"id": "sur", "conversations": [{"role": "user", "content": "broken \\ud83d emoji"}]}'
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(
        b"\n".join(
            [
                json.dumps(good).encode(),
                deep.encode(),
                b"",
                surrogate.encode(),
                b'{"id": "utf", "conversations": "\xff\xfe"}',
                json.dumps(good).encode(),
            ]
        )
        + b"\n"
    )
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "out.jsonl")
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    assert stats["counts"] == {"success": 2, "error": 0, "skipped": 3, "passthrough": 0}
    sk = {r["id"]: r for r in read_jsonl(out.skipped)}
    assert sk["deep"]["error"] == (
        "Invalid JSON: line 2 (field conversations[0].meta): JSON nested deeper than 128 levels"
    )
    assert sk["sur"]["error"] == (
        "Invalid JSON: line 4 (field conversations[0].content): lone surrogate \\ud83d at char 7"
    )
    assert sk["utf"]["error"].startswith("Invalid JSON: line 5: invalid UTF-8 at byte")
    assert all(r["status"] == "skipped" and isinstance(r["data"], str) for r in sk.values())
    assert stats["breakdown"] == {"skipped: Invalid JSON": 3}


def test_cli_on_a_deeply_nested_line_exits_0_without_traceback(tmp_path, stub_server):
    inp = tmp_path / "in.jsonl"
    inp.write_text(
        json.dumps({"id": "g", "conversations": [{"role": "user", "content": "q"}]})
        + "\n"
        + '{"id": "d", "x": '
        + "[" * 20000
        + "]" * 20000
        + "}\n"
    )
    r = subprocess.run(
        CLI
        + [
            "--server-address",
            stub_server().address,
            "--input-file-path",
            str(inp),
            "--output-file-path",
            str(tmp_path / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and "Traceback" not in r.stderr and "RecursionError" not in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["skipped"] == 1


# -- 3. prompt-only rows -------------------------------------------------------------------------
MT_BENCH = [
    {
        "id": "81",
        "category": "writing",
        "conversations": [
            {"role": "user", "content": "Compose a travel blog post about Hawaii."},
            {"role": "user", "content": "Rewrite it starting every sentence with A."},
        ],
    },
    {"id": "single", "category": "math", "conversations": [{"role": "user", "content": "What is 2+2?"}]},
    {
        "id": "sys",
        "conversations": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "p1"},
            {"role": "user", "content": "p2"},
            {"role": "user", "content": "p3"},
        ],
    },
]


def test_prompt_only_rows_get_an_answer_after_every_user_turn(tmp_path, stub_server):
    inp = write_rows(tmp_path / "in.jsonl", MT_BENCH)
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "out.jsonl")
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    assert stats["counts"]["success"] == 3
    got = {r["id"]: r for r in read_jsonl(out.success)}
    mt = got["81"]
    assert [m["role"] for m in mt["conversations"]] == ["user", "assistant", "user", "assistant"]
    assert mt["conversations"][1]["content"] == "echo 1: Compose a travel blog post about Hawaii."
    assert mt["conversations"][3]["content"] == "echo 3: Rewrite it starting every sentence with A."
    assert mt["category"] == "writing" and got["single"]["category"] == "math"
    assert [m["role"] for m in got["single"]["conversations"]] == ["user", "assistant"]
    assert [m["role"] for m in got["sys"]["conversations"]] == ["system"] + ["user", "assistant"] * 3
    # the exact request sequence: each turn carries the target's own earlier answers
    reqs = [m for m in chat_requests(s.address) if m[0]["content"].startswith("Compose")]
    assert reqs == [
        [{"role": "user", "content": "Compose a travel blog post about Hawaii."}],
        [
            {"role": "user", "content": "Compose a travel blog post about Hawaii."},
            {"role": "assistant", "content": "echo 1: Compose a travel blog post about Hawaii."},
            {"role": "user", "content": "Rewrite it starting every sentence with A."},
        ],
    ]


def test_prompt_only_rows_through_the_partition_asset_body(tmp_path, stub_server):
    from specforge_assets.regenerate.config import source_config
    from specforge_assets.regenerate.partition import regenerate_partition

    root = tmp_path / "data"
    write_rows(root / "sources" / "mtbench" / "train.jsonl", MT_BENCH)
    cfg = source_config(
        "mtbench",
        {
            "sources": {
                "mtbench": {
                    "enabled": True,
                    "server_addresses": [stub_server().address],
                    "model": "stub-model",
                    "num_samples": 2,
                    "beyond_limit": "passthrough",
                }
            }
        },
    )
    summary = regenerate_partition("mtbench", cfg, root=root, log=lambda m: None)
    # beyond num_samples a prompt-only row has nothing to pass through: skipped, not an unanswered row
    assert summary["counts"] == {"success": 2, "error": 0, "skipped": 1, "passthrough": 0} and summary["reconciles"]
    train = read_jsonl(root / "regenerated" / "mtbench" / "train.jsonl")
    assert [m["role"] for m in train[0]["conversations"]] == ["user", "assistant", "user", "assistant"]
    assert train[0]["category"] == "writing"
    skipped = read_jsonl(root / "regenerated" / "mtbench" / "skipped.jsonl")
    assert "prompt-only row has no answers to pass through" in skipped[0]["error"]


# -- 4. credentials in a server address ----------------------------------------------------------
SECRET = "SeCrEtKey-98765"


def test_address_parsing_strips_credentials():
    assert split_address(f"bob:{SECRET}@127.0.0.1:8000/v1") == (
        "http://127.0.0.1:8000",
        "Basic Ym9iOlNlQ3JFdEtleS05ODc2NQ==",
    )
    assert split_address("https://h.example:443") == ("https://h.example:443", None)
    assert strip_credentials(f"http://bob:{SECRET}@h:1/x") == "http://h:1/x"
    assert strip_credentials(f"bob:{SECRET}@h:1") == "h:1"


@pytest.mark.parametrize("form", ["bare", "url"])
def test_credentials_in_the_address_authenticate_and_never_leak(tmp_path, stub_server, form):
    s = stub_server(basic_auth=f"bob:{SECRET}")
    inp = write_rows(tmp_path / "in.jsonl", MT_BENCH)
    outdir = tmp_path / "out"
    addr = f"bob:{SECRET}@{s.address}" if form == "bare" else f"http://bob:{SECRET}@{s.address}/v1"
    env = {k: v for k, v in os.environ.items() if k != "SPECFORGE_REGEN_API_KEY"}
    r = subprocess.run(
        CLI + ["--server-address", addr, "--input-file-path", str(inp), "--output-file-path", str(outdir / "o.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["success"] == 3
    assert SECRET not in r.stdout + r.stderr
    for p in outdir.iterdir():  # outputs, and any state / journal file
        assert SECRET not in p.read_text()
    rows = read_jsonl(outdir / "o.jsonl")
    assert {tuple(row["regeneration"]["servers"]) for row in rows} == {(s.address,)}
    # a wrong password: a clear one-line error, the password nowhere
    wrong = "WrOnGpass-1234"
    r = subprocess.run(
        CLI
        + [
            "--server-address",
            f"bob:{wrong}@{s.address}",
            "--input-file-path",
            str(inp),
            "--output-file-path",
            str(tmp_path / "o2.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert r.returncode == 1 and "HTTP 401" in r.stderr and wrong not in r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ") and "Traceback" not in r.stderr
    # credentials and an API key together are refused, naming neither secret
    r = subprocess.run(
        CLI
        + ["--server-address", addr, "--input-file-path", str(inp), "--output-file-path", str(tmp_path / "o3.jsonl")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**env, "SPECFORGE_REGEN_API_KEY": "other-key-5555"},
    )
    assert r.returncode == 1 and "carries credentials and an API key" in r.stderr
    assert SECRET not in r.stderr and "other-key-5555" not in r.stderr


def test_partition_summary_and_manifest_hold_no_credentials(tmp_path, stub_server):
    from specforge_assets.regenerate.config import source_config
    from specforge_assets.regenerate.partition import regenerate_partition

    s = stub_server(basic_auth=f"bob:{SECRET}")
    root = tmp_path / "data"
    write_rows(root / "sources" / "k" / "train.jsonl", MT_BENCH)
    cfg = source_config(
        "k",
        {
            "sources": {
                "k": {
                    "enabled": True,
                    "server_addresses": [f"bob:{SECRET}@{s.address}"],
                    "model": "stub-model",
                    "api_key_env": "",
                }
            }
        },
    )
    summary = regenerate_partition("k", cfg, root=root, log=lambda m: None)
    assert summary["counts"]["success"] == 3 and summary["server_addresses"] == [s.address]
    assert SECRET not in json.dumps(summary, default=str)
    for p in (root / "regenerated" / "k").iterdir():
        assert SECRET not in p.read_text()


# -- 5. expected failures: one line, non-zero ----------------------------------------------------
def test_expected_failure_classes_are_user_errors():
    for cls in (
        NoServerAvailable,
        ConfigChanged,
        JournalWriteError,
        OutputWriteError,
        ServerLaunchError,
        InputNotFound,
    ):
        assert issubclass(cls, UserError), cls
    assert issubclass(NoServerAvailable, RuntimeError) and issubclass(InputNotFound, FileNotFoundError)


def _one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_cli_expected_failures_print_one_error_line(tmp_path, stub_server):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    write_rows(cwd / "in.jsonl", MT_BENCH)
    base = CLI + ["--output-file-path", "out/o.jsonl"]
    run = lambda args: subprocess.run(base + args, capture_output=True, text=True, timeout=120, cwd=cwd)  # noqa: E731
    line = _one_error_line(run(["--server-address", "127.0.0.1:1", "--input-file-path", "missing.jsonl"]))
    assert "regeneration input not found: missing.jsonl" in line and "relative to the current directory" in line
    line = _one_error_line(
        run(["--server-address", dead_address(), "--input-file-path", "in.jsonl", "--connect-timeout", "2"])
    )
    assert "no regeneration server answered the start probe" in line and "check --server-address" in line
    line = _one_error_line(
        run(["--server-address", "127.0.0.1:1", "--input-file-path", "in.jsonl", "--extra-body", "{top_k: 20}"])
    )
    assert "--extra-body is not valid JSON" in line
    line = _one_error_line(
        run(["--server-address", "127.0.0.1:1", "--input-file-path", "in.jsonl", "--extra-body", "[1]"])
    )
    assert "--extra-body must be a JSON object" in line
    # relative paths resolve against the current directory
    r = run(["--server-address", stub_server().address, "--input-file-path", "in.jsonl"])
    assert r.returncode == 0, r.stderr
    assert len(read_jsonl(cwd / "out" / "o.jsonl")) == 3


# -- removed client settings (own HTTP client, worker processes): accepted for one release -------
def test_removed_client_settings_warn_once_each_and_are_ignored(tmp_path, stub_server):
    from specforge_assets.regenerate.config import source_config
    from specforge_assets.regenerate.settings import RegenSettingDeprecated

    yaml_cfg = {
        "defaults": {"workers": 2, "transport": "fast", "concurrency": 3},
        "sources": {"k": {"connections_per_client": 4}},
    }
    with pytest.warns(RegenSettingDeprecated) as got:
        cfg = source_config("k", yaml_cfg, {"workers": 8})
    assert [str(w.message).split(" is deprecated")[0] for w in got] == [
        "regenerate.yaml defaults: regeneration setting 'workers'",
        "regenerate.yaml defaults: regeneration setting 'transport'",
        "regenerate.yaml sources.k: regeneration setting 'connections_per_client'",
        "run config: regeneration setting 'workers'",
    ]
    assert all(str(w.message).endswith("remove it — it will be refused in the next release") for w in got)
    assert not {"workers", "transport", "connections_per_client"} & set(cfg) and cfg["concurrency"] == 3
    with pytest.raises(ValueError, match="unknown regeneration key 'wrokers'"):  # a typo is still refused
        source_config("k", {"defaults": {"wrokers": 2}})
    # the CLI flags: one warning line each, the run goes on
    s = stub_server()
    inp = write_rows(tmp_path / "in.jsonl", MT_BENCH)
    r = subprocess.run(
        CLI
        + [
            "--server-address",
            s.address,
            "--input-file-path",
            str(inp),
            "--output-file-path",
            str(tmp_path / "o.jsonl"),
            "--workers",
            "2",
            "--transport",
            "fast",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    warned = [l for l in r.stderr.splitlines() if l.startswith("warning: ")]
    assert [l.split(" is deprecated")[0] for l in warned] == [
        "warning: --workers: regeneration setting 'workers'",
        "warning: --transport: regeneration setting 'transport'",
    ]
    assert json.loads(r.stdout.strip().splitlines()[-1])["success"] == 3
