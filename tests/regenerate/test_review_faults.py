"""Review faults of `specforge-assets regenerate` / regenerated/conversations, each pinned to its root.

1. a 200 reply with a lone surrogate (``"bad \\ud83d"``) was accepted and written; now an error row
   naming the turn, the next turn never requested, every output strictly readable (DuckDB too),
   and the row retried by the next run; no other text path writes a lone surrogate.
2. a key in the server address's query string leaked everywhere; now refused at parse time
   without echoing it (CLI and partition/asset config), and `errors.redact` hides secret-named
   URL query parameters.
3. a row-level ``system`` (LLaMA-Factory ShareGPT layout) was dropped; now the leading system
   message of what is sent and written; a row with both is skipped naming the field.
4. a non-numeric port / an unparsable address gave a bare Python error; now named.
5. a text part without ``text`` gave a self-contradicting message.
6. ShareGPT ``from/value`` rows gave a misleading "empty content" reason.
"""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from specforge_assets.errors import redact
from specforge_assets.jsonrows import loads_row
from specforge_assets.regenerate.client import ServerAddressError, check_addresses, split_address
from specforge_assets.regenerate.journal import Journal, journal_paths
from specforge_assets.regenerate.reply import BadReply, check_reply
from specforge_assets.regenerate.rows import validate_conversation
from specforge_assets.regenerate.runner import OutputPaths, run_regeneration
from specforge_assets.regenerate.settings import RegenSettings

from .conftest import read_jsonl, write_rows

FAST = dict(
    backoff_base_s=0.01,
    backoff_max_s=0.05,
    probe_interval_s=0.2,
    request_timeout_s=30.0,
    connect_timeout_s=5.0,
    progress_interval_s=60.0,
)
PROBE = "Hello, how are you?"
CLI = [sys.executable, "-m", "specforge_assets.cli", "regenerate", "--model", "stub-model"]
SECRET = "SEKRET-key-424242"


def settings(**kw) -> RegenSettings:
    return RegenSettings(**{"model": "stub-model", "max_tokens": 32, "concurrency": 4, "max_attempts": 2, **FAST, **kw})


def requests_seen(address: str) -> list[list[dict]]:
    got = httpx.get(f"http://{address}/requests", timeout=10).json()
    return [m for m in got if not (len(m) == 1 and m[0]["content"] == PROBE)]


def assert_strictly_readable(path) -> None:
    """Every line passes the project's one JSON row rule, and DuckDB reads the file."""
    raw = path.read_bytes()
    for line in raw.splitlines():
        if line.strip():
            loads_row(line)  # raises RowDecodeError on a lone surrogate
    if raw.strip():
        import duckdb

        con = duckdb.connect()
        n = con.execute(f"select count(*) from read_json_auto('{path}', format='newline_delimited')").fetchone()[0]
        assert n == len([l for l in raw.splitlines() if l.strip()])


# -- 1. lone surrogates ------------------------------------------------------------------------
SURROGATE_BODY = json.loads(
    '{"choices":[{"message":{"role":"assistant","content":"bad \\ud83d"},"finish_reason":"stop"}]}'
)


def test_check_reply_refuses_a_lone_surrogate_in_content_and_saved_reasoning():
    with pytest.raises(BadReply) as e:
        check_reply(SURROGATE_BODY)
    assert e.value.kind == "unwritable_text" and e.value.retry is False
    assert str(e.value).startswith("lone surrogate \\ud83d at char 4 in content")
    assert e.value.finish_reason == "stop"
    # in list-of-parts form, the char index is in the joined text
    parts = {
        "choices": [
            {
                "message": {"content": [{"type": "text", "text": "ab"}, {"type": "text", "text": "c\udc00"}]},
                "finish_reason": "stop",
            }
        ]
    }
    with pytest.raises(BadReply, match=r"lone surrogate \\udc00 at char 3 in content"):
        check_reply(parts)
    # reasoning is written only in save mode: refused there, made visible text otherwise
    body = {"choices": [{"message": {"content": "ok", "reasoning_content": "x\ud800"}, "finish_reason": "stop"}]}
    with pytest.raises(BadReply, match=r"lone surrogate \\ud800 at char 1 in reasoning_content") as e:
        check_reply(body, "save")
    assert e.value.kind == "unwritable_text"
    assert check_reply(body, "none").reasoning == "x\\ud800"
    # model / finish_reason / a server's error message: visible text, never a lone surrogate
    r = check_reply({"model": "m\udfff", "choices": [{"message": {"content": "ok"}, "finish_reason": "st\ud83d"}]})
    assert (r.model, r.finish_reason) == ("m\\udfff", "st\\ud83d")
    with pytest.raises(BadReply) as e:
        check_reply({"error": {"message": "bad \ud800 request", "code": 400}})
    assert "bad \\ud800 request" in str(e.value)
    # an emoji (a proper pair, one code point in Python) is fine
    assert check_reply({"choices": [{"message": {"content": "ok \U0001f600"}}]}).content == "ok \U0001f600"


def test_lone_surrogate_reply_is_an_error_row_and_every_output_stays_readable(tmp_path, stub_server):
    s = stub_server()
    rows = [
        {
            "id": "bad",
            "conversations": [
                {"role": "user", "content": "Q_LONE_SURROGATE first"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "second turn of bad"},
                {"role": "assistant", "content": "b"},
            ],
        },
        {"id": "bad-reasoning", "conversations": [{"role": "user", "content": "Q_REASONING_SURROGATE x"}]},
        {"id": "model", "conversations": [{"role": "user", "content": "Q_SURROGATE_MODEL x"}]},
        {"id": "err", "conversations": [{"role": "user", "content": "Q_ERROR_SURROGATE x"}]},
        {"id": "emoji", "conversations": [{"role": "user", "content": "hi \U0001f600"}]},
    ]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    out = OutputPaths.specforge(tmp_path / "out" / "o.jsonl")
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    assert stats["counts"] == {"success": 3, "error": 2, "skipped": 0, "passthrough": 0}
    errors = {r["id"]: r for r in read_jsonl(out.error)}
    assert errors["bad"]["error"].startswith("turn 1 of 2: lone surrogate \\ud83d at char 4 in content")
    assert errors["bad"]["regeneration"]["error_kind"] == "unwritable_text"
    assert "server error in 200 body: bad \\ud800 request" in errors["err"]["error"]
    # turn 2 of the bad row was never requested
    seen = requests_seen(s.address)
    assert not any(m[-1]["content"] == "second turn of bad" for m in seen)
    success = {r["id"]: r for r in read_jsonl(out.success)}
    # save mode is not on: the reasoning is not written, so the row is fine
    assert success["model"]["regeneration"]["model"] == "stub\\udfff"
    assert success["model"]["regeneration"]["turns"][0]["finish_reason"] == "stop\\ud83d"
    assert success["emoji"]["conversations"][0]["content"] == "hi \U0001f600"
    for p in (out.success, out.error, out.skipped):
        assert_strictly_readable(p)
    state = journal_paths(out.success)[1]
    loads_row(state.read_bytes().replace(b"\n", b" "))  # the state file too (stats hold server model names)
    assert stats["server_models"] == {"stub-model": 2, "stub\\udfff": 1}
    json.dumps(stats, ensure_ascii=False).encode("utf-8")  # the manifest / Dagster metadata source: writable
    # the error rows are retried by the next run (the stub still answers the same: still errors)
    before = len(requests_seen(s.address))
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    assert stats["counts"]["error"] == 2 and stats["resumed_rows"] == 3
    assert len(requests_seen(s.address)) - before == 2


def test_save_mode_refuses_a_lone_surrogate_in_reasoning(tmp_path, stub_server):
    s = stub_server()
    inp = write_rows(
        tmp_path / "in.jsonl", [{"id": "r", "conversations": [{"role": "user", "content": "Q_REASONING_SURROGATE x"}]}]
    )
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    stats = run_regeneration(inp, out, settings(reasoning="save"), [s.address], log=lambda m: None)
    assert stats["counts"]["error"] == 1
    err = read_jsonl(out.error)[0]["error"]
    assert err.startswith("turn 1 of 1: lone surrogate \\udc00 at char 3 in reasoning_content")
    assert_strictly_readable(out.error)


def test_journal_never_writes_a_lone_surrogate(tmp_path):
    row = {"id": "x\ud800", "error": "internal error: \udcff", "ok": "\U0001f600", "k\udc00": 1}
    clean = {"id": "a", "ok": "\U0001f600"}
    inp = write_rows(tmp_path / "in.jsonl", [{"id": "x"}, {"id": "a"}])
    j = Journal(tmp_path / "o.jsonl")
    j.prepare({"settings": {}}, resume=False, restart=False, input_path=inp)
    j.append(0, "x\ud800", "error", row)
    j.append(1, "a", "success", clean)
    j.close()
    got = [text for _, _, text in j.iter_records(j.load(), range(2))]
    j.discard()
    # strict: no lone surrogate escape left in what the outputs are copied from
    assert loads_row(got[0]) == {
        "id": "x\\ud800",
        "error": "internal error: \\udcff",
        "ok": "\U0001f600",
        "k\\udc00": 1,
    }
    assert got[1] == json.dumps(clean)  # an ordinary row is stored as json.dumps wrote it


def test_settings_and_extra_body_with_a_lone_surrogate_are_refused():
    with pytest.raises(ValueError, match=r"setting model: lone surrogate \\udc80 at char 1"):
        RegenSettings(model="m\udc80")
    with pytest.raises(ValueError, match=r"extra_body"):
        RegenSettings(model="m", extra_body={"x": "\ud800"})
    from specforge_assets.regenerate.cli import parse_extra_body

    with pytest.raises(
        ValueError, match=r"--extra-body cannot be sent or recorded \(x: lone surrogate \\ud800 at char 0\)"
    ):
        parse_extra_body('{"x": "\\ud800"}')


# -- 2. a key in the address's query string ----------------------------------------------------
@pytest.mark.parametrize(
    "query", [f"?api_key={SECRET}", f"?key={SECRET}", f"?access_token={SECRET}", f"?model=x&token={SECRET}", "?"]
)
def test_address_with_a_query_string_is_refused_without_echoing_it(query):
    with pytest.raises(ServerAddressError) as e:
        check_addresses(["127.0.0.1:1", "127.0.0.1:2", f"http://127.0.0.1:3/{query}"], "--server-address")
    assert str(e.value) == (
        "--server-address: server address 3 has a query string; pass the API key in "
        "$SPECFORGE_REGEN_API_KEY (api_key_env) instead"
    )
    for addr in (f"127.0.0.1:3{query}", f"http://127.0.0.1:3/v1{query}", f"http://u:pw@127.0.0.1:3/{query}"):
        with pytest.raises(ServerAddressError, match="has a query string") as e:
            split_address(addr)
        assert SECRET not in str(e.value)
    with pytest.raises(ServerAddressError, match=r"server address has a fragment") as e:
        split_address(f"http://127.0.0.1:3/#{SECRET}")
    assert SECRET not in str(e.value)


def test_cli_refuses_a_query_string_key_before_anything_runs(tmp_path, stub_server):
    s = stub_server()
    inp = write_rows(tmp_path / "in.jsonl", [{"id": "a", "conversations": [{"role": "user", "content": "q"}]}])
    outdir = tmp_path / "out"
    r = subprocess.run(
        CLI
        + [
            "--server-address",
            s.address,
            f"http://{s.address}/?access_token={SECRET}",
            "--input-file-path",
            str(inp),
            "--output-file-path",
            str(outdir / "o.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == (
        "error: --server-address: server address 2 has a query string; pass the API key "
        "in $SPECFORGE_REGEN_API_KEY (api_key_env) instead"
    )
    assert SECRET not in r.stdout + r.stderr
    assert not outdir.exists() or not any(outdir.iterdir())  # nothing written: no state, journal or output
    assert requests_seen(s.address) == []


def test_partition_config_refuses_a_query_string_key(tmp_path, stub_server):
    from specforge_assets.regenerate.config import source_config
    from specforge_assets.regenerate.partition import regenerate_partition

    s = stub_server()
    root = tmp_path / "data"
    write_rows(
        root / "sources" / "k" / "train.jsonl", [{"id": "a", "conversations": [{"role": "user", "content": "q"}]}]
    )
    cfg = source_config(
        "k",
        {
            "sources": {
                "k": {
                    "enabled": True,
                    "model": "stub-model",
                    "server_addresses": [f"http://{s.address}/?api_key={SECRET}"],
                }
            }
        },
    )
    with pytest.raises(ServerAddressError) as e:
        regenerate_partition("k", cfg, root=root, log=lambda m: None)
    assert str(e.value) == (
        "server_addresses: server address 1 has a query string; pass the API key in "
        "$SPECFORGE_REGEN_API_KEY (api_key_env) instead"
    )
    assert not (root / "regenerated" / "k").exists()


@pytest.mark.parametrize(
    "text,want",
    [
        (f"http://127.0.0.1:5/?api_key={SECRET}", "http://127.0.0.1:5/?api_key=***"),
        (
            f"GET http://h:1/v1?model=m&access_token={SECRET}&x=1 failed",
            "GET http://h:1/v1?model=m&access_token=***&x=1 failed",
        ),
        (f"h:1?key={SECRET}#frag", "h:1?key=***#frag"),
        (f"https://b/o?X-Amz-Signature={SECRET}", "https://b/o?X-Amz-Signature=***"),
        (
            f"?sig={SECRET}&auth={SECRET}&client_secret={SECRET}&password={SECRET}",
            "?sig=***&auth=***&client_secret=***&password=***",
        ),
        ("http://h:1/?page=2&model=qwen", "http://h:1/?page=2&model=qwen"),
    ],
)
def test_redact_hides_secret_named_url_query_parameters(text, want):
    assert redact(text) == want


# -- 3. a row-level system prompt --------------------------------------------------------------
def test_row_level_system_is_sent_and_written_as_the_leading_system_message(tmp_path, stub_server):
    s = stub_server()
    rows = [
        {
            "id": "sys",
            "system": "You are terse.",
            "conversations": [
                {"role": "user", "content": "q1 sys"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "q2 sys"},
            ],
        },
        {
            "id": "both",
            "system": "You are terse.",
            "conversations": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "q both"}],
        },
        {"id": "empty", "system": "", "conversations": [{"role": "user", "content": "q empty"}]},
        {"id": "notstr", "system": 3, "conversations": [{"role": "user", "content": "q notstr"}]},
        {
            "id": "pass",
            "system": "P.",
            "conversations": [{"role": "user", "content": "q pass"}, {"role": "assistant", "content": "kept"}],
        },
    ]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    stats = run_regeneration(
        inp, out, settings(num_samples=2, beyond_limit="passthrough"), [s.address], log=lambda m: None
    )
    assert stats["counts"] == {"success": 2, "error": 0, "skipped": 2, "passthrough": 1}
    seen = requests_seen(s.address)
    sys_reqs = [m for m in seen if "sys" in m[-1]["content"]]
    assert [m[0] for m in sys_reqs] == [{"role": "system", "content": "You are terse."}] * 2
    assert [x["content"] for x in sys_reqs[1]] == ["You are terse.", "q1 sys", "echo 2: q1 sys", "q2 sys"]
    success = {r["id"]: r for r in read_jsonl(out.success)}
    assert "system" not in success["sys"]
    assert [m["role"] for m in success["sys"]["conversations"]] == ["system", "user", "assistant", "user", "assistant"]
    assert success["sys"]["conversations"][0]["content"] == "You are terse."
    assert success["empty"]["conversations"][0] == {"role": "user", "content": "q empty"}
    assert success["pass"]["status"] == "passthrough" and "system" not in success["pass"]
    assert success["pass"]["conversations"] == [
        {"role": "system", "content": "P."},
        {"role": "user", "content": "q pass"},
        {"role": "assistant", "content": "kept"},
    ]
    skipped = {r["id"]: r for r in read_jsonl(out.skipped)}
    assert skipped["both"]["error"] == (
        "Row field 'system': row has both a top-level 'system' and a system message; keep one"
    )
    assert skipped["notstr"]["error"] == "Row field 'system': system must be a string, got int"
    assert not any("q both" in m[-1]["content"] for m in seen)


# -- 4. a bad port / an unparsable address -----------------------------------------------------
def test_bad_port_and_unparsable_address_are_named(tmp_path):
    with pytest.raises(ServerAddressError) as e:
        check_addresses(["127.0.0.1:notaport"], "--server-address")
    assert str(e.value) == (
        "--server-address: server address 1 http://127.0.0.1:notaport has port 'notaport', "
        "not a number in 1-65535 (give HOST:PORT, e.g. 127.0.0.1:30000)"
    )
    with pytest.raises(ServerAddressError) as e:
        check_addresses([f"http://user:{SECRET}@[::1"], "--server-address")
    assert str(e.value).startswith(
        "--server-address: server address 1 http://[::1 is not a valid address (Invalid IPv6"
    )
    assert SECRET not in str(e.value)
    assert split_address("[::1]:8000/v1") == ("http://[::1]:8000", None)
    inp = write_rows(tmp_path / "in.jsonl", [{"id": "a", "conversations": [{"role": "user", "content": "q"}]}])
    for addr, want in (
        ("127.0.0.1:notaport", "port 'notaport', not a number"),
        (f"http://user:{SECRET}@[::1", "server address 1 http://[::1 is not a valid address"),
    ):
        r = subprocess.run(
            CLI
            + [
                "--server-address",
                addr,
                "--input-file-path",
                str(inp),
                "--output-file-path",
                str(tmp_path / "o.jsonl"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        line = r.stderr.strip()
        assert line.startswith("error: --server-address: ") and want in line and "int()" not in line
        assert SECRET not in line


# -- 5. a text part without text ---------------------------------------------------------------
def test_text_part_without_text_says_so():
    with pytest.raises(BadReply) as e:
        check_reply({"choices": [{"message": {"content": [{"type": "text"}]}, "finish_reason": "stop"}]})
    assert str(e.value) == "content part 0 (type 'text') has no string 'text' (no 'text' field); finish_reason stop"
    assert e.value.kind == "non_text_content"
    with pytest.raises(
        BadReply, match=r"content part 1 \(type 'output_text'\) has no string 'text' \('text' is null\)"
    ):
        check_reply(
            {
                "choices": [
                    {"message": {"content": [{"type": "text", "text": "a"}, {"type": "output_text", "text": None}]}}
                ]
            }
        )
    with pytest.raises(BadReply, match=r"content part 0 is not text \(type 'image_url'\)"):
        check_reply({"choices": [{"message": {"content": [{"type": "image_url"}]}}]})


# -- 6. ShareGPT rows --------------------------------------------------------------------------
def test_sharegpt_rows_are_skipped_with_a_reason_that_says_so(tmp_path, stub_server):
    row = {"id": "sg", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    want = (
        "Message at position 0 is ShareGPT-style (from/value); regenerate takes {role, content} messages: "
        "convert the file first (`specforge-assets prepare`, or a custom source in the sources layer, whose "
        "rows regenerated/conversations reads)"
    )
    assert validate_conversation(row) == want
    s = stub_server()
    inp = write_rows(tmp_path / "in.jsonl", [row])
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    assert stats["counts"]["skipped"] == 1
    assert read_jsonl(out.skipped)[0]["error"] == want
