"""Real inputs in the sources layer: rows the JSON parser or UTF-8 cannot take, row-level system
prompts, Alpaca-style instruction data, prompt-only data, and the real public datasets through
their presets. Each bad row is one quarantined row naming file, row, field and reason; the rest
is written and the counts reconcile."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from specforge_assets.assets.sources import CHECKS
from specforge_assets.checks.sources import run_source_checks
from specforge_assets.sources.config import resolve_source
from specforge_assets.sources.formats import parse_custom_row
from specforge_assets.sources.normalize import build_source
from specforge_assets.sources.prepare import prepare_preset

from .conftest import write_jsonl

CONV = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "2 plus 3 is 5."}]

BLOCKING = {c.name: c.blocking for c in CHECKS}


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _build(tmp_path, data_root, name, content: str | bytes, fmt="auto", **spec):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    cfg = {"sources": {"s": {"format": fmt, "data_path": str(path), "quarantine_threshold": 0.9, **spec}}}
    result = build_source(resolve_source("s", cfg, data_root), data_root, config=cfg)
    m = result.manifest
    assert m["rows_in"] == m["rows_train"] + m["rows_test"] + m["quarantined"]  # counts reconcile
    return result, path


# ---------------------------------------------------------------- rows the reader cannot take

LONE = '{"id": "lone", "conversations": [{"role": "user", "content": "broken emoji \\ud83d here"}, {"role": "assistant", "content": "ok"}]}'
PAIR = '{"id": "pair", "conversations": [{"role": "user", "content": "fine emoji \\ud83d\\ude00"}, {"role": "assistant", "content": "ok"}]}'
GOOD = '{"id": "good", "conversations": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}'
DEEP = (
    '{"id": "deep", "conversations": [{"role": "user", "content": "x", "meta": '
    + "[" * 1000
    + "]" * 1000
    + '}, {"role": "assistant", "content": "y"}]}'
)


@pytest.mark.parametrize("as_array", [False, True], ids=["jsonl", "json-array"])
def test_lone_surrogate_and_deep_rows_are_quarantined_not_fatal(tmp_path, data_root, as_array):
    lines = [PAIR, LONE, DEEP, GOOD]
    content = ("[\n" + ",\n".join(lines) + "\n]\n") if as_array else "\n".join(lines) + "\n"
    result, path = _build(tmp_path, data_root, "in.json" if as_array else "in.jsonl", content)
    train = _read(result.out_dir / "train.jsonl")
    assert [r["id"] for r in train] == ["pair", "good"]
    assert train[0]["conversations"][0]["content"] == "fine emoji \U0001f600"  # a valid pair is kept
    q = {r["row"]: r for r in _read(result.out_dir / "quarantine.jsonl")}
    assert set(q) == {1, 2}
    assert q[1]["file"] == str(path)
    assert q[1]["field"] == "conversations[0].content"
    assert q[1]["reason"] == "lone surrogate \\ud83d at char 13"
    assert q[2]["reason"] == "JSON nested deeper than 128 levels"
    assert q[2]["field"] == "conversations[0].meta"  # located by a scan, past the parser's own limit too
    assert result.manifest["quarantined"] == 2
    # the quarantine file itself is valid UTF-8 JSON (the raw line kept, the surrogate replaced)
    assert "broken emoji" in q[1]["raw"]


def test_row_nested_20000_deep_is_one_bad_row(tmp_path, data_root):
    deep = '{"id": "d", "conversations": [{"role": "user", "content": "x", "m": ' + "[" * 20000 + "]" * 20000 + "}]}"
    result, _ = _build(tmp_path, data_root, "in.jsonl", "\n".join([GOOD, deep]) + "\n")
    assert result.manifest["rows_train"] == 1 and result.manifest["quarantined"] == 1


def test_prepare_names_file_row_and_field_for_a_lone_surrogate(tmp_path):
    sg = tmp_path / "sg.jsonl"
    sg.write_text(
        '{"id": "a", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}\n'
        '{"id": "b", "conversations": [{"from": "human", "value": "broken \\ud83d"}, {"from": "gpt", "value": "a"}]}\n'
    )
    from specforge_assets.sources.errors import RowFailure

    with pytest.raises(RowFailure) as e:
        prepare_preset("sharegpt", tmp_path / "out", data_path=sg, offline=True, log=lambda s: None)
    assert (
        str(e.value)
        == f"preset 'sharegpt': {sg} row 1 field 'conversations[0].value': lone surrogate \\ud83d at char 7"
    )
    assert not (tmp_path / "out" / "sharegpt_train.jsonl").exists()


def test_prepare_cli_one_error_line_and_paths_relative_to_cwd(tmp_path):
    """`--data-path` is relative to the current directory (not the data root); a refused input
    is one `error:` line naming the file, exit 1, no traceback."""
    work = tmp_path / "work"
    work.mkdir()
    write_jsonl(work / "gsm.jsonl", [{"question": "1+1?", "answer": "2"}, {"question": "2+2?", "answer": "4"}])
    env = {"SPECFORGE_DATA_ROOT": str(tmp_path / "elsewhere"), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "specforge_assets.cli", "prepare", "--dataset", "gsm8k", "--offline"]
    ok = subprocess.run(
        [*cmd, "--data-path", "gsm.jsonl", "--output-path", "out"], cwd=work, env=env, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert len(_read(work / "out" / "gsm8k_train.jsonl")) == 2
    bad = subprocess.run(
        [*cmd, "--data-path", "missing.jsonl", "--output-path", "out2"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1
    assert "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        f"error: preset 'gsm8k': data path {work / 'missing.jsonl'} does not exist"
    ]


# ---------------------------------------------------------------- row-level system prompt


def test_row_level_system_becomes_the_leading_system_message(tmp_path, data_root):
    rows = [
        {
            "id": "fr",
            "system": "Always reply in French.",
            "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Salut"}],
        },
        {"id": "msg", "system": "Answer with one word.", "messages": CONV},
        {"id": "both", "system": "A", "messages": [{"role": "system", "content": "B"}, *CONV]},
        {"id": "empty", "system": "", "messages": CONV},
        {"id": "typed", "system": 3, "messages": CONV},
    ]
    result, _ = _build(tmp_path, data_root, "sys.jsonl", "\n".join(map(json.dumps, rows)) + "\n")
    train = {r["id"]: r["conversations"] for r in _read(result.out_dir / "train.jsonl")}
    assert train["fr"] == [
        {"role": "system", "content": "Always reply in French."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Salut"},
    ]
    assert train["msg"] == [{"role": "system", "content": "Answer with one word."}, *CONV]
    assert train["empty"] == CONV  # "" means "no system prompt" in LLaMA-Factory's layout
    q = {r["raw"]["id"]: r for r in _read(result.out_dir / "quarantine.jsonl")}
    assert set(q) == {"both", "typed"}
    assert q["both"]["field"] == "system" and "both a top-level 'system' and a system message" in q["both"]["reason"]
    assert q["typed"]["field"] == "system"
    assert result.manifest["row_system_prepended"] == 2


# ---------------------------------------------------------------- alpaca


def test_alpaca_rows_follow_llama_factory_joining():
    row = {"instruction": "Translate.", "input": "Bonjour", "output": "Hello"}
    assert parse_custom_row(row, "alpaca")["conversations"] == [
        {"role": "user", "content": "Translate.\nBonjour"},
        {"role": "assistant", "content": "Hello"},
    ]
    no_input = parse_custom_row({"instruction": "Say hi.", "input": "", "response": "hi"}, "auto")
    assert no_input["conversations"] == [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]
    full = parse_custom_row({"system": "S", "instruction": "q2", "output": "a2", "history": [["q1", "a1"]]}, "auto")
    assert [m["content"] for m in full["conversations"]] == ["S", "q1", "a1", "q2", "a2"]
    assert [m["role"] for m in full["conversations"]] == ["system", "user", "assistant", "user", "assistant"]


def test_alpaca_json_array_source_with_a_bad_row(tmp_path, data_root):
    rows = [
        {"instruction": "Write a loop.", "input": "", "response": "for i in range(3): pass"},
        {"instruction": "Add.", "input": "1 and 2", "response": "3"},
        {"instruction": "No answer here.", "input": ""},
    ]
    result, path = _build(tmp_path, data_root, "gpteacher.json", json.dumps(rows, indent=4), fmt="alpaca")
    train = _read(result.out_dir / "train.jsonl")
    assert [r["conversations"][0]["content"] for r in train] == ["Write a loop.", "Add.\n1 and 2"]
    (q,) = _read(result.out_dir / "quarantine.jsonl")
    assert q["row"] == 2 and q["field"] == "output" and "format 'prompts'" in q["reason"]


# ---------------------------------------------------------------- prompt-only


def test_prompt_only_rows_keep_user_turns_and_category(tmp_path, data_root):
    rows = [
        {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Now shorter."]},
        {"question_id": 82, "category": "math", "turns": ["1+1?"]},
        {"id": "p", "prompt": "Hello?"},
        {"question_id": 83, "turns": []},
    ]
    result, _ = _build(tmp_path, data_root, "question.jsonl", "\n".join(map(json.dumps, rows)) + "\n", fmt="prompts")
    train = _read(result.out_dir / "train.jsonl")
    assert train[0] == {
        "id": "81",
        "conversations": [{"role": "user", "content": "Write a poem."}, {"role": "user", "content": "Now shorter."}],
        "category": "writing",
    }
    assert [r["id"] for r in train] == ["81", "82", "p"]
    assert result.manifest["prompt_only_rows"] == 3
    (q,) = _read(result.out_dir / "quarantine.jsonl")
    assert q["field"] == "turns"
    # the DuckDB gates accept user-only turns (the regenerated layer fills the answers)
    outcomes = run_source_checks(result.out_dir, quarantine_threshold=0.9)
    assert all(o.passed for n, o in outcomes.items() if BLOCKING[n]), {
        n: o.metadata for n, o in outcomes.items() if not o.passed
    }


def test_conversations_format_still_refuses_consecutive_user_turns(tmp_path, data_root):
    """SpecForge's rule stands for conversation data: only the prompts format is user-only."""
    row = {"id": "uu", "conversations": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    result, _ = _build(tmp_path, data_root, "c.jsonl", json.dumps(row) + "\n" + GOOD + "\n")
    (q,) = _read(result.out_dir / "quarantine.jsonl")
    assert "invalid role order" in q["reason"]


# ---------------------------------------------------------------- the real public datasets (../shared)


def test_real_gsm8k_and_codealpaca_through_their_presets(tmp_path, shared):
    gsm = shared("data", "real", "gsm8k", "train.jsonl")
    ca = shared("data", "real", "codealpaca", "code_alpaca_2k.json")
    r1 = prepare_preset("gsm8k", tmp_path / "out", data_path=gsm, sample_size=200, offline=True, log=lambda s: None)
    r2 = prepare_preset(
        "codealpaca-20k", tmp_path / "out", data_path=ca, sample_size=200, offline=True, log=lambda s: None
    )
    assert r1["train_rows"] == 200 and r2["train_rows"] == 200
    g = _read(tmp_path / "out" / "gsm8k_train.jsonl")
    first = json.loads(gsm.read_text().splitlines()[0])
    assert g[0]["conversations"] == [
        {"role": "user", "content": first["question"]},
        {"role": "assistant", "content": first["answer"]},
    ]
    c = _read(tmp_path / "out" / "codealpaca-20k_train.jsonl")
    raw = json.loads(ca.read_text())
    with_input = next(i for i, r in enumerate(raw[:200]) if r["input"])
    # SpecForge's HEAD codealpaca rule: instruction + blank line + input
    assert (
        c[with_input]["conversations"][0]["content"]
        == raw[with_input]["instruction"] + "\n\n" + raw[with_input]["input"]
    )


def test_real_sources_as_partitions(tmp_path, data_root, shared):
    """The real files as source partitions: presets with data_path, GPTeacher as alpaca
    (auto-detected), MT-Bench as prompt-only; slices keep the test quick."""
    real = shared("data", "real")
    cfg = {
        "sources": {
            "gsm8k": {
                "preset": "gsm8k",
                "data_path": str(real / "gsm8k" / "train.jsonl"),
                "sample_size": 300,
                "split_eval": True,
            },
            "codealpaca": {
                "preset": "codealpaca-20k",
                "data_path": str(real / "codealpaca" / "code_alpaca_2k.json"),
                "sample_size": 300,
            },
            "gpteacher": {
                "format": "auto",
                "data_path": str(real / "gpteacher" / "roleplay-instruct.json"),
                "sample_size": 300,
            },
            "mtbench": {"format": "auto", "data_path": str(real / "mt_bench" / "question.jsonl")},
        }
    }
    got = {}
    for key in cfg["sources"]:
        res = build_source(resolve_source(key, cfg, data_root), data_root, config=cfg)
        outcomes = run_source_checks(res.out_dir, quarantine_threshold=0.05)
        assert all(o.passed for n, o in outcomes.items() if BLOCKING[n]), (
            key,
            {n: o.metadata for n, o in outcomes.items() if not o.passed},
        )
        got[key] = res.manifest
    assert got["gsm8k"]["rows_train"] + got["gsm8k"]["rows_test"] == 300 and got["gsm8k"]["rows_test"] == 15
    # the real CodeAlpaca slice holds one row with an empty output (row 237): quarantined, named
    assert got["codealpaca"]["rows_train"] == 299 and got["codealpaca"]["quarantined"] == 1
    (q,) = _read(data_root / "sources" / "codealpaca" / "quarantine.jsonl")
    assert (q["row"], q["field"], q["reason"]) == (237, "conversations[1].content", "empty content")
    assert got["gpteacher"]["rows_train"] + got["gpteacher"]["quarantined"] == 300
    assert got["mtbench"]["rows_train"] == 80 and got["mtbench"]["prompt_only_rows"] == 80
    mt = _read(data_root / "sources" / "mtbench" / "train.jsonl")
    assert {r["category"] for r in mt} == {
        "writing",
        "roleplay",
        "reasoning",
        "math",
        "coding",
        "extraction",
        "stem",
        "humanities",
    }
    assert all([m["role"] for m in r["conversations"]] == ["user", "user"] for r in mt)


def _parquet_with_invalid_utf8(path, content_column: bool):
    import pyarrow as pa
    import pyarrow.parquet as pq

    bad = pa.array([b"ok-0", b"bad \xff byte", b"ok-2"], type=pa.binary()).view(pa.string())
    if content_column:  # sharegpt preset schema, the bad bytes (a UTF-8 encoded surrogate) inside a message
        values = pa.array([b"q0", b"a0", b"q1 \xed\xa0\xbd", b"a1", b"q2", b"a2"], type=pa.binary()).view(pa.string())
        senders = pa.array(["human", "gpt"] * 3)
        msgs = pa.StructArray.from_arrays([senders, values], names=["from", "value"])
        conv = pa.ListArray.from_arrays(pa.array([0, 2, 4, 6], type=pa.int32()), msgs)
        t = pa.table({"id": pa.array(["a", "b", "c"]), "conversations": conv})
    else:
        conv = pa.array([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]] * 3)
        t = pa.table({"id": bad, "conversations": conv})
    pq.write_table(t, path)


def test_parquet_string_that_is_not_utf8_is_one_quarantined_row(tmp_path, data_root):
    """Arrow does not validate Parquet strings: one row with invalid UTF-8 bytes (or a UTF-8
    encoded surrogate) is quarantined naming the column; the others are written."""
    path = tmp_path / "x.parquet"
    _parquet_with_invalid_utf8(path, content_column=False)
    cfg = {"sources": {"s": {"format": "auto", "data_path": str(path)}}}
    res = build_source(resolve_source("s", cfg, data_root), data_root, config=cfg)
    assert (res.manifest["rows_train"], res.manifest["quarantined"]) == (2, 1)
    (q,) = _read(res.out_dir / "quarantine.jsonl")
    assert (q["row"], q["field"]) == (1, "id") and q["reason"].startswith("invalid UTF-8 at byte 4")
    path2 = tmp_path / "sg.parquet"
    _parquet_with_invalid_utf8(path2, content_column=True)
    cfg = {"sources": {"p": {"preset": "sharegpt", "data_path": str(path2)}}}
    res = build_source(resolve_source("p", cfg, data_root), data_root, config=cfg)
    assert (res.manifest["rows_train"], res.manifest["quarantined"]) == (2, 1)
    (q,) = _read(res.out_dir / "quarantine.jsonl")
    assert (q["row"], q["field"]) == (1, "conversations")


def test_fields_the_contract_row_does_not_carry_are_counted(tmp_path, data_root):
    rows = [
        {
            "id": "t",
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "messages": [
                {"role": "user", "content": "call f"},
                {"role": "assistant", "content": "ok", "tool_calls": [{"id": "1"}]},
            ],
        },
        {
            "id": "n",
            "source": "web",
            "conversations": [{"from": "human", "value": "q", "name": "bob"}, {"from": "gpt", "value": "a"}],
        },
        {"id": "plain", "conversations": CONV, "source": ""},
    ]
    result, _ = _build(tmp_path, data_root, "f.jsonl", "\n".join(map(json.dumps, rows)) + "\n")
    assert result.manifest["rows_train"] == 3
    assert result.manifest["dropped_fields"] == {
        "tools": 1,
        "messages[].tool_calls": 1,
        "source": 1,
        "conversations[].name": 1,
    }


def test_data_wrapper_and_bom_files_are_read_item_by_item(tmp_path, data_root):
    good = [json.loads(GOOD.replace('"good"', f'"w{i}"')) for i in range(3)]
    text = '{"data": [' + ", ".join([json.dumps(good[0]), json.dumps(good[1]), LONE, json.dumps(good[2])]) + "]}"
    result, _ = _build(tmp_path, data_root, "wrap.json", text)
    assert (result.manifest["rows_in"], result.manifest["rows_train"], result.manifest["quarantined"]) == (4, 3, 1)
    (q,) = _read(result.out_dir / "quarantine.jsonl")
    assert (q["row"], q["field"]) == (2, "conversations[0].content")
    bom = "\ufeff" + json.dumps(good[:2])
    result, _ = _build(tmp_path, data_root, "bom.json", bom)
    assert (result.manifest["rows_train"], result.manifest["quarantined"]) == (2, 0)
    result, _ = _build(tmp_path, data_root, "bom.jsonl", "\ufeff" + "\n".join(map(json.dumps, good)) + "\n")
    assert (result.manifest["rows_train"], result.manifest["quarantined"]) == (3, 0)


def test_alpaca_second_answer_field_is_counted_not_silently_dropped(tmp_path, data_root):
    row = {"instruction": "Say hi.", "output": "hi", "response": "hello"}
    result, _ = _build(tmp_path, data_root, "a.json", json.dumps([row]), fmt="alpaca")
    assert result.manifest["dropped_fields"] == {"response": 1}
    assert _read(result.out_dir / "train.jsonl")[0]["conversations"][1]["content"] == "hi"
