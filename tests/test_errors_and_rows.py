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


@pytest.mark.parametrize("line, reason, field", [
    (b'{"a": "x \\ud83d y"}', "lone surrogate \\ud83d at char 2", "a"),
    (b'{"c": [{"content": "\\udc00"}]}', "lone surrogate \\udc00 at char 0", "c[0].content"),
    (b'{"k\\ud800": 1}', "lone surrogate in a key at 'k\\ud800'", None),
    (b'\xff{"a": 1}', "invalid UTF-8 at byte 0", None),
    (b'{"a": ', "malformed JSON: Expecting value at column 7", None),
    (b'{"m": ' + b"[" * 200 + b"]" * 200 + b"}", "JSON nested deeper than 128 levels", "m"),
    (b'{"m": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "JSON nested deeper than 128 levels", None),
])
def test_row_rule_refuses_with_reason_and_field(line, reason, field):
    with pytest.raises(jsonrows.RowDecodeError) as e:
        jsonrows.loads_row(line)
    assert e.value.reason == reason
    if field is not None or reason.startswith(("invalid", "malformed")):
        assert e.value.field == field


def test_row_rule_accepts_real_rows():
    assert jsonrows.loads_row('{"a": "emoji \\ud83d\\ude00"}') == {"a": "emoji \U0001F600"}
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
    assert redact("connect to http://alice:s3cr3t@host:8000/v1 failed") == "connect to http://alice:***@host:8000/v1 failed"
    assert redact("server alice:s3cr3t@10.0.0.1:30000 down") == "server alice:***@10.0.0.1:30000 down"
    assert redact("Authorization: Bearer sk-abcdef123456") == "Authorization: Bearer ***"
    assert "sk-abc" not in redact("api_key=sk-abcdef123456&x=1")
    assert redact("plain host:8000 message") == "plain host:8000 message"


def test_user_message_classifies_expected_failures():
    assert user_message(UserError("bad input in f.jsonl")) == "bad input in f.jsonl"
    full = OSError(errno.ENOSPC, "No space left on device", "/data/out.jsonl")
    assert user_message(full).startswith("No space left on device: /data/out.jsonl (free disk space")
    assert "relative to the current directory" in user_message(FileNotFoundError(errno.ENOENT, "No such file or directory", "x.jsonl"))
    assert user_message(KeyError("bug")) is None  # a bug keeps its traceback


def test_cli_prints_one_error_line_and_debug_shows_the_traceback(tmp_path, capsys):
    argv = ["prepare", "--dataset", "gsm8k", "--data-path", str(tmp_path / "nope.jsonl"), "--output-path", str(tmp_path / "o"), "--offline"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [f"error: preset 'gsm8k': data path {tmp_path / 'nope.jsonl'} does not exist"]
    assert main(["--debug", *argv]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1].startswith("error: preset 'gsm8k'")


def test_cli_unknown_preset_is_one_line():
    r = subprocess.run([sys.executable, "-m", "specforge_assets.cli", "prepare", "--dataset", "no-such-preset", "--offline"],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1


def test_preview_is_bounded_whatever_the_row():
    big = {"id": "x", "conversations": [{"role": "user", "content": "a" * 5_000_000}] * 50}
    out = json.dumps(truncate(big))
    assert len(out) < 20_000
    assert truncate("short") == "short"
