"""Reply shapes of real servers (SGLang, vLLM, transformers serve, OpenAI-style gateways) against
the one reply check (`reply.check_reply`, called in `ServerPool.chat`).

The stub server (a real HTTP server in a subprocess) answers with the quirk named by a
``Q_<NAME>`` marker in the last user message (`stubserver.QUIRKS`) and records every request's
messages (GET /requests), so the tests can assert the exact request sequence.
"""

from __future__ import annotations

import httpx
import pytest

from specforge_assets.regenerate.journal import journal_paths
from specforge_assets.regenerate.reply import MSG_SAVE_EMPTY, BadReply, check_reply
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


def settings(**kw) -> RegenSettings:
    return RegenSettings(**{"model": "stub-model", "max_tokens": 32, "concurrency": 4, "max_attempts": 2, **FAST, **kw})


def one_turn(row_id: str, text: str, **extra) -> dict:
    return {
        "id": row_id,
        "conversations": [{"role": "user", "content": text}, {"role": "assistant", "content": "original answer"}],
        **extra,
    }


def requests_seen(address: str) -> list[list[dict]]:
    """Messages of every chat request the stub answered, start probe left out."""
    got = httpx.get(f"http://{address}/requests", timeout=10).json()
    return [m for m in got if not (len(m) == 1 and m[0]["content"] == PROBE)]


def by_first_user(reqs: list[list[dict]], text: str) -> list[list[dict]]:
    return [m for m in reqs if next(x["content"] for x in m if x["role"] == "user") == text]


def all_rows(out: OutputPaths) -> dict:
    return {r["id"]: r for p in (out.success, out.error, out.skipped) for r in read_jsonl(p)}


QUIRK_ROWS = [
    one_turn("sglang-null-length", "Q_SGLANG_NULL_LENGTH explain recursion"),
    one_turn("sglang-all-in-reasoning", "Q_SGLANG_ALL_IN_REASONING what is 6*7"),
    one_turn("vllm-reasoning-only", "Q_VLLM_REASONING_ONLY what is 6*7"),
    one_turn("vllm-reasoning", "Q_VLLM_REASONING what is 6*7"),
    one_turn("tool-call", "Q_TOOL_CALL weather in Paris"),
    one_turn("whitespace", "Q_WHITESPACE say something"),
    one_turn("empty-string", "Q_EMPTY_STRING say something"),
    one_turn("parts", "Q_PARTS two parts please"),
    one_turn("image-part", "Q_IMAGE_PART draw"),
    one_turn("no-choices", "Q_NO_CHOICES filtered"),
    one_turn("missing-choices", "Q_MISSING_CHOICES proxy"),
    one_turn("error-object", "Q_ERROR_OBJECT too long"),
    one_turn("error-nested", "Q_ERROR_NESTED overloaded"),
    one_turn("ok", "a normal question"),
    {
        "id": "mt-first-empty",
        "conversations": [
            {"role": "user", "content": "Q_SGLANG_NULL_LENGTH first turn"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "mt1 second turn"},
            {"role": "assistant", "content": "b"},
        ],
    },
    {
        "id": "mt-second-empty",
        "conversations": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "mt2 first turn"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "Q_EMPTY_STRING mt2 second turn"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "mt2 third turn"},
        ],
    },
]

# id -> (status, fragments the error must hold, requests the server must have seen for the row)
EXPECTED = {
    "sglang-null-length": (
        "error",
        [
            "turn 1 of 1",
            "no usable assistant text",
            "content null",
            "reasoning_content present (20 chars)",
            "finish_reason length",
        ],
        1,
    ),
    "sglang-all-in-reasoning": (
        "error",
        ["content empty", "reasoning_content present (17 chars)", "finish_reason stop"],
        1,
    ),
    "vllm-reasoning-only": ("error", ["content null, reasoning present (29 chars)"], 1),
    "vllm-reasoning": ("success", [], 1),
    "tool-call": ("error", ["content null, tool_calls present (1)", "finish_reason tool_calls"], 1),
    "whitespace": ("error", ["content whitespace only (4 chars)"], 1),
    "empty-string": ("error", ["content empty; finish_reason stop"], 1),
    "parts": ("success", [], 1),
    "image-part": ("error", ["content part 1 is not text (type 'image_url')"], 1),
    "no-choices": ("error", ["gave up after 2 attempts", "server returned no choices (choices: [])"], 2),
    "missing-choices": ("error", ["server returned no choices (no 'choices' field)"], 2),
    # a 4xx error object is the request's fault: final at once, the server's message kept
    "error-object": (
        "error",
        ["server error in 200 body: This model's maximum context length is 4096 tokens.", "(code 400)"],
        1,
    ),
    "error-nested": ("error", ["gave up after 2 attempts", "upstream overloaded, try later (code 503)"], 2),
    "ok": ("success", [], 1),
    "mt-first-empty": ("error", ["turn 1 of 2", "finish_reason length"], 1),
    "mt-second-empty": ("error", ["turn 2 of 3", "content empty"], 2),
}


def test_reply_shapes_of_real_servers_become_error_rows(tmp_path, stub_server):
    inp = write_rows(tmp_path / "in.jsonl", QUIRK_ROWS)
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "out.jsonl")
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    rows = all_rows(out)
    reqs = requests_seen(s.address)
    originals = {r["id"]: r for r in QUIRK_ROWS}
    for row_id, (status, fragments, n_requests) in EXPECTED.items():
        got = rows[row_id]
        assert got["status"] == status, (row_id, got.get("error"))
        for frag in fragments:
            assert frag in got["error"], (row_id, got["error"])
        if status == "error":
            assert got["conversations"] == originals[row_id]["conversations"]  # original kept
        first = next(m["content"] for m in originals[row_id]["conversations"] if m["role"] == "user")
        assert len(by_first_user(reqs, first)) == n_requests, row_id
    n_err = sum(1 for v in EXPECTED.values() if v[0] == "error")
    assert stats["counts"] == {"success": len(EXPECTED) - n_err, "error": n_err, "skipped": 0, "passthrough": 0}
    # a list of text parts is joined; vLLM's `reasoning` reply keeps its content
    assert rows["parts"]["conversations"][-1] == {"role": "assistant", "content": "Part one. Part two."}
    assert rows["vllm-reasoning"]["conversations"][-1]["content"] == "Final answer: 42."
    # the next turn is never requested after an empty answer
    assert not [m for m in reqs if any(x["content"] == "mt1 second turn" for x in m)]
    mt2 = by_first_user(reqs, "mt2 first turn")
    assert [[x["role"] for x in m] for m in mt2] == [["system", "user"], ["system", "user", "assistant", "user"]]
    assert mt2[1][2]["content"].strip()  # history carries the real first answer, never ""
    assert not [m for m in reqs if any(x["content"] == "mt2 third turn" for x in m)]
    assert rows["sglang-null-length"]["regeneration"]["turns"][-1]["finish_reason"] == "length"
    kinds = stats["request_error_kinds"]
    assert kinds["empty_content"] >= 6 and kinds["no_choices"] == 4 and kinds["error_body_4xx"] == 1


def test_every_reasoning_mode_goes_through_the_one_check(tmp_path, stub_server):
    rows = [
        one_turn("no-choices", "Q_NO_CHOICES x"),
        one_turn("all-in-reasoning", "Q_SGLANG_ALL_IN_REASONING x"),
        one_turn("vllm-reasoning", "Q_VLLM_REASONING x"),
        one_turn("think", "THINK please"),
        one_turn("plain", "plain question"),
    ]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    s = stub_server()
    res = {}
    for mode in ("none", "disable", "save"):
        out = OutputPaths.specforge(tmp_path / f"{mode}.jsonl")
        run_regeneration(inp, out, settings(reasoning=mode), [s.address], log=lambda m: None)
        res[mode] = {k: (v["status"], v.get("error", "")) for k, v in all_rows(out).items()}
        res[mode + "_rows"] = all_rows(out)
    for mode in ("none", "disable", "save"):
        assert res[mode]["no-choices"][0] == "error" and "no choices" in res[mode]["no-choices"][1]
        assert res[mode]["all-in-reasoning"][0] == "error"
    assert res["none"]["think"][0] == "success"  # SpecForge keeps <think> text verbatim in `none`
    assert res["disable"]["think"] == (
        "skipped",
        "Non-reasoning assistant response is empty or contains a thinking marker",
    )
    assert res["disable"]["plain"][0] == "success" and res["disable"]["vllm-reasoning"][0] == "success"
    # save: vLLM's `reasoning` field is read like `reasoning_content`
    saved = res["save_rows"]["vllm-reasoning"]["conversations"][-1]
    assert saved == {"role": "assistant", "content": "Final answer: 42.", "reasoning_content": "Six times seven."}
    assert res["save"]["all-in-reasoning"][1].startswith("turn 1 of 1: " + MSG_SAVE_EMPTY)
    assert res["save"]["plain"][0] == "success" and res["save"]["think"][0] == "skipped"


def test_error_rows_are_retried_by_the_next_run(tmp_path, stub_server):
    rows = [one_turn(f"r{i}", f"question {i}") for i in range(4)] + [
        {"id": "bad", "conversations": [{"role": "assistant", "content": "no user"}]}
    ]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    quirky = stub_server(quirk="SGLANG_NULL_LENGTH")
    out = OutputPaths.specforge(tmp_path / "out.jsonl")
    st = run_regeneration(inp, out, settings(), [quirky.address], resume=True, log=lambda m: None)
    assert st["counts"] == {"success": 0, "error": 4, "skipped": 1, "passthrough": 0}
    assert journal_paths(out.success)[0].exists()  # kept: error rows are not final
    good = stub_server()
    logs: list[str] = []
    st = run_regeneration(inp, out, settings(), [good.address], resume=True, log=logs.append)
    assert st["counts"] == {"success": 4, "error": 0, "skipped": 1, "passthrough": 0}
    assert st["rows_this_run"] == 4 and st["resumed_rows"] == 1
    assert any("retrying the 4 error rows" in m for m in logs)
    assert [r["id"] for r in read_jsonl(out.success)] == ["r0", "r1", "r2", "r3"]
    assert read_jsonl(out.error) == [] and [r["id"] for r in read_jsonl(out.skipped)] == ["bad"]
    assert len(requests_seen(good.address)) == 4  # only the error rows were asked again
    assert not journal_paths(out.success)[0].exists()
    logs.clear()
    run_regeneration(inp, out, settings(), [good.address], resume=True, log=logs.append)
    assert any("nothing to do" in m for m in logs) and len(requests_seen(good.address)) == 4


def test_rate_counts_only_rows_that_went_to_a_server(tmp_path, stub_server):
    """rows_per_s in the summary is the rate of the progress lines (rows needing a request): the
    rows skipped without a request are counted in rows_this_run but not in the rate."""
    rows = [one_turn(f"r{i}", f"question {i}") for i in range(3)] + [
        {"id": f"bad{i}", "conversations": [{"role": "assistant", "content": "no user"}]} for i in range(9)
    ]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    good = stub_server()
    st = run_regeneration(inp, OutputPaths.specforge(tmp_path / "out.jsonl"), settings(), [good.address], log=print)
    assert st["counts"]["success"] == 3 and st["counts"]["skipped"] == 9
    assert st["rows_this_run"] == 12 and st["requested_rows_this_run"] == 3 == len(requests_seen(good.address))
    # rate x elapsed = the rows counted in it (elapsed_s is rounded to ms: a few % on a short run)
    assert abs(st["rows_per_s"] * st["elapsed_s"] - 3) < 0.5


def test_error_rows_of_a_partition_are_retried_on_the_next_materialization(tmp_path, stub_server):
    from specforge_assets.regenerate.config import source_config
    from specforge_assets.regenerate.partition import regenerate_partition

    root = tmp_path / "data"
    write_rows(root / "sources" / "p" / "train.jsonl", [one_turn(f"r{i}", f"q{i}") for i in range(3)])

    def cfg(address):
        return source_config(
            "p",
            {
                "sources": {
                    "p": {"enabled": True, "server_addresses": [address], "model": "stub-model", "max_attempts": 1}
                }
            },
        )

    first = regenerate_partition("p", cfg(stub_server(quirk="NO_CHOICES").address), root=root, log=lambda m: None)
    assert first["counts"]["error"] == 3 and first["reconciles"]
    second = regenerate_partition("p", cfg(stub_server().address), root=root, log=lambda m: None)
    assert second["counts"] == {"success": 3, "error": 0, "skipped": 0, "passthrough": 0}


def test_check_reply_values():
    ok = {
        "choices": [
            {
                "message": {"content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
                "finish_reason": "stop",
            }
        ],
        "model": "m",
        "usage": {"completion_tokens": 2},
    }
    r = check_reply(ok)
    assert (r.content, r.finish_reason, r.model, r.usage["completion_tokens"], r.skip) == ("ab", "stop", "m", 2, None)
    with pytest.raises(BadReply) as e:
        check_reply({"error": {"message": "bad request", "code": "400"}})
    assert e.value.kind == "error_body_4xx" and not e.value.retry and "bad request (code 400)" in str(e.value)
    with pytest.raises(BadReply) as e:
        check_reply([1])
    assert e.value.retry and e.value.kind == "bad_response"
    with pytest.raises(BadReply) as e:
        check_reply(
            {"choices": [{"message": {"content": "x", "reasoning_content": ""}, "finish_reason": "stop"}]}, "save"
        )
    assert e.value.kind == "no_reasoning" and "reasoning_content empty" in str(e.value)
    r = check_reply({"choices": [{"message": {"content": "x", "reasoning": "why"}, "finish_reason": "stop"}]}, "save")
    assert r.reasoning == "why"
    with pytest.raises(BadReply) as e:
        check_reply({"choices": [{"message": {"content": None, "refusal": "I can't"}, "finish_reason": "stop"}]})
    assert "refusal: I can't" in str(e.value)
