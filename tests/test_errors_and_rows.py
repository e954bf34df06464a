"""The shared roots: the JSON row rule (jsonrows), the one CLI error path and secret redaction."""

from __future__ import annotations

import errno
import json
import subprocess
import sys

import pytest

from specforge_assets import jsonrows
from specforge_assets.cli import main
from specforge_assets.errors import UserError, redact, user_message
from specforge_assets.preview import truncate


@pytest.mark.parametrize(
    "line, reason, field",
    [
        (b'{"a": "x \\ud83d y"}', "lone surrogate \\ud83d at char 2", "a"),
        (b'{"c": [{"content": "\\udc00"}]}', "lone surrogate \\udc00 at char 0", "c[0].content"),
        (b'{"k\\ud800": 1}', "lone surrogate in a key at 'k\\ud800'", None),
        (b'\xff{"a": 1}', "invalid UTF-8 at byte 0", None),
        (b'{"a": ', "malformed JSON: Expecting value at column 7", None),
        (b'{"m": ' + b"[" * 200 + b"]" * 200 + b"}", "JSON nested deeper than 128 levels", "m"),
        (b'{"m": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "JSON nested deeper than 128 levels", "m"),
        (b'{"c": [{"meta": ' + b"[" * 300 + b"]" * 300 + b"}]}", "JSON nested deeper than 128 levels", "c[0].meta"),
    ],
)
def test_row_rule_refuses_with_reason_and_field(line, reason, field):
    with pytest.raises(jsonrows.RowDecodeError) as e:
        jsonrows.loads_row(line)
    assert e.value.reason == reason
    if field is not None or reason.startswith(("invalid", "malformed")):
        assert e.value.field == field


def test_row_rule_accepts_real_rows():
    assert jsonrows.loads_row('{"a": "emoji \\ud83d\\ude00"}') == {"a": "emoji \U0001f600"}
    nested = {"m": json.loads("[" * 100 + "]" * 100)}
    assert jsonrows.loads_row(json.dumps(nested)) == nested  # 100 deep: fine
    with pytest.raises(jsonrows.RowDecodeError, match="expected a JSON object, got list"):
        jsonrows.loads_object("[1]")


def test_array_items_one_bad_item_does_not_hide_the_others():
    text = '[{"a": 1}, {"b": ' + "[" * 5000 + "]" * 5000 + '}, {"c": "\\udc00"}, {"d": "x"}]'
    items = list(jsonrows.iter_array_items(text))
    assert [i for i, _, _ in items] == [0, 1, 2, 3]
    assert items[0][1] == {"a": 1} and items[3][1] == {"d": "x"}
    assert isinstance(items[1][1], jsonrows.RowDecodeError) and items[1][2].startswith('{"b": [[[')
    assert items[2][1].field == "c"
    with pytest.raises(jsonrows.RowDecodeError, match="expected ',' or ']'"):
        list(jsonrows.iter_array_items('[{"a": 1} {"b": 2}]'))


def test_redact_removes_credentials_everywhere():
    assert (
        redact("connect to http://alice:s3cr3t@host:8000/v1 failed")
        == "connect to http://alice:***@host:8000/v1 failed"
    )
    assert redact("server alice:s3cr3t@10.0.0.1:30000 down") == "server alice:***@10.0.0.1:30000 down"
    assert redact("Authorization: Bearer sk-abcdef123456") == "Authorization: Bearer ***"
    assert "sk-abc" not in redact("api_key=sk-abcdef123456&x=1")
    assert redact("plain host:8000 message") == "plain host:8000 message"


def test_user_message_classifies_expected_failures():
    assert user_message(UserError("bad input in f.jsonl")) == "bad input in f.jsonl"
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out.jsonl")
    assert user_message(full).startswith("No space left on device: /data/out.jsonl (free disk space")
    assert "relative to the current directory" in user_message(
        FileNotFoundError(errno.ENOENT, "No such file or directory", "x.jsonl")
    )
    assert user_message(KeyError("bug")) is None  # a bug keeps its traceback


def test_cli_prints_one_error_line_and_debug_shows_the_traceback(tmp_path, capsys):
    argv = [
        "prepare",
        "--dataset",
        "gsm8k",
        "--data-path",
        str(tmp_path / "nope.jsonl"),
        "--output-path",
        str(tmp_path / "o"),
        "--offline",
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: preset 'gsm8k': data path {tmp_path / 'nope.jsonl'} does not exist"]
    assert main(["--debug", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: preset 'gsm8k'")


def test_cli_unknown_preset_is_one_line():
    r = subprocess.run(
        [sys.executable, "-m", "specforge_assets.cli", "prepare", "--dataset", "no-such-preset", "--offline"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_preview_is_bounded_whatever_the_row():
    big = {"id": "x", "conversations": [{"role": "user", "content": "a" * 5_000_000}] * 50}
    out = json.dumps(truncate(big))
    assert len(out) < 20_000
    assert truncate("short") == "short"


def test_bom_is_not_part_of_a_row():
    assert jsonrows.loads_row(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert [v for _, v, _ in jsonrows.iter_array_items('\ufeff[{"a": 1}]')] == [{"a": 1}]


def test_atomic_write_refuses_a_non_regular_file_and_names_the_file(tmp_path):
    import os

    from specforge_assets.fileio import atomic_write

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError) as e:
        with atomic_write(fifo) as f:
            f.write("x")
    assert e.value.filename == str(fifo) and "not a regular file" in user_message(e.value)
    assert fifo.exists() and not fifo.is_file()  # left as it was


def test_debug_flag_after_the_subcommand(tmp_path, capsys):
    argv = [
        "vocab-mapping",
        "--input",
        str(tmp_path / "none.jsonl"),
        "--target-vocab-size",
        "10",
        "--draft-vocab-size",
        "5",
        "--output",
        str(tmp_path / "m.pt"),
    ]
    assert main(argv) == 1
    assert "Traceback" not in capsys.readouterr().err
    assert main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_vocab_mapping_names_the_bad_field(tmp_path, capsys):
    bad = tmp_path / "tok.jsonl"
    bad.write_text(
        '{"id": "a", "input_ids": [5, 6, 7], "loss_mask": [0, 1, 1]}\n'
        '{"id": "b", "input_ids": [5, 6, "x"], "loss_mask": [1, 1, 1]}\n'
    )
    assert (
        main(
            [
                "vocab-mapping",
                "--input",
                str(bad),
                "--target-vocab-size",
                "10",
                "--draft-vocab-size",
                "5",
                "--output",
                str(tmp_path / "m.pt"),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {bad}:2: field input_ids[2] must be a non-negative integer token id / mask value, got 'x'"]
    assert not (tmp_path / "m.pt").exists()


def test_salvage_id_of_a_refused_line():
    assert jsonrows.salvage_id(b'{"id": "deep", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}") == "deep"
    assert jsonrows.salvage_id(b'{"x": 1, "id": 7}') == 7  # not at the start, but the line parses
    assert jsonrows.salvage_id(b'{"id": "\\ud83d"}') is None  # an id that could not be written
    assert jsonrows.salvage_id(b"\xff not json") is None


def test_one_redaction_for_messages_and_ops_logs():
    """CLI/asset messages and the ops logs share `errors.redact`: a secret-named environment
    variable's value, a URL password and a well-known key format are hidden in both, while a
    file name that merely starts like a key prefix stays readable."""
    env = {"MY_GATEWAY_TOKEN": "gw-7f3e9a1c2b", "HOME": "/home/u"}
    text = "POST https://u:pw123456@gw/v1 with gw-7f3e9a1c2b and hf_AbCdEfGhIjKlMnOpQr failed in /home/u/hf_train_split.jsonl"
    out = redact(text, env)
    assert "gw-7f3e9a1c2b" not in out and "pw123456" not in out and "hf_AbCdEfGhIjKlMnOpQr" not in out
    assert "<redacted:MY_GATEWAY_TOKEN>" in out and "/home/u/hf_train_split.jsonl" in out
    from specforge_assets import oplog

    rec = oplog.failure_record(
        run_id="r1",
        job="j",
        partition=None,
        backfill=None,
        trigger=None,
        assets=[],
        message=text,
        steps=[("s", "E", text)],
        env=env,
    )
    assert rec["message"] == out and rec["steps"][0]["error"] == out
