"""Row faults (lone surrogate, deep nesting, tokenizer-library errors), counted cuts and drops,
refusals of data that supervises nothing, and command-line paths relative to the cwd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tok_helpers import reference_tokenizer

from specforge_assets.cli import main


@pytest.fixture(scope="module")
def qwen_tok() -> str:
    from specforge_assets.tokenize.reference_tokenizers import build_tokenizer

    reference_tokenizer("qwen2.5")  # skips without the packages
    return str(build_tokenizer("qwen2.5"))


def _conv(rid, *turns):
    roles = ["user", "assistant"]
    return {
        "id": rid,
        "conversations": [{"role": roles[i % 2] if r is None else r, "content": c} for i, (r, c) in enumerate(turns)],
    }


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(l + "\n" for l in lines), encoding="utf-8")
    return path


def _tokenize(inp, tok, out, *extra) -> int:
    return main(
        [
            "tokenize",
            "--input",
            str(inp),
            "--tokenizer",
            tok,
            "--chat-template",
            "qwen",
            "--max-length",
            "256",
            "--output",
            str(out),
            *extra,
        ]
    )


def test_lone_surrogate_and_deep_rows_are_skipped_rows(tmp_path, capsys, qwen_tok):
    good = json.dumps(_conv("ok1", (None, "Hello \U0001f600"), (None, "Hi")))
    lone = (
        '{"id": "lone", "conversations": [{"role": "user", "content": "broken emoji \\ud83d here"}, '
        '{"role": "assistant", "content": "ok"}]}'
    )
    deep = '{"id": "deep", "meta": ' + "[" * 300 + "]" * 300 + ', "conversations": []}'
    good2 = json.dumps(_conv("ok2", (None, "plain"), (None, "fine")))
    inp = _write(tmp_path / "in.jsonl", [good, lone, deep, good2])
    out = tmp_path / "out.jsonl"
    assert _tokenize(inp, qwen_tok, out) == 0
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["ok1", "ok2"]
    err = capsys.readouterr().err
    assert "skipped line 2 (id 'lone'): conversations[0].content: lone surrogate \\ud83d at char 13" in err
    assert "skipped line 3 (id 'deep'): meta: JSON nested deeper than 128 levels" in err
    assert "Traceback" not in err
    assert "2 rows skipped" not in err and "1 row skipped (lone surrogate)" in err
    assert "1 row skipped (JSON nested deeper than 128 levels)" in err


def test_tokenizer_library_error_is_that_rows_error(tmp_path):
    """Whatever the tokenizers library raises for one row (bug report 04: `TypeError:
    TextEncodeInput must be Union[...]`) fails that row only."""
    from tok_helpers import build_chatml_tokenizer
    from transformers import AutoTokenizer

    from specforge_assets.tokenize.core import Preprocessor, TokenizeError, TokenizeOptions
    from specforge_assets.tokenize.templates import get_template

    tdir = build_chatml_tokenizer(tmp_path / "tok", ["hello there", "plain words", "poison row"])
    pre = Preprocessor(AutoTokenizer.from_pretrained(str(tdir)), get_template("qwen"), TokenizeOptions(max_length=64))
    real = pre.backend

    class Flaky:
        def __getattr__(self, name):
            return getattr(real, name)

        def encode_batch(self, texts, add_special_tokens=False):
            if any("poison" in t for t in texts):
                raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
            return real.encode_batch(texts, add_special_tokens=add_special_tokens)

    pre.backend = Flaky()
    rows = [
        _conv("a", (None, "hello"), (None, "there")),
        _conv("b", (None, "poison"), (None, "row")),
        _conv("c", (None, "plain"), (None, "words")),
    ]
    res = pre.process_rows(rows)
    assert not isinstance(res[0], Exception) and not isinstance(res[2], Exception)
    assert isinstance(res[1], TokenizeError) and res[1].kind == "tokenizer error"
    assert "TypeError: TextEncodeInput must be Union" in str(res[1])
    assert sum(res[0].loss_mask) > 0 and sum(res[2].loss_mask) > 0


def test_cuts_and_drops_are_counted(tmp_path, capsys, qwen_tok):
    A, U = "assistant", "user"
    rows = [
        _conv("c1", (U, "q"), (A, "a1"), (A, "a2"), (U, "q2"), (A, "a3")),  # cut: 3 messages dropped
        _conv("c2", (U, "q"), (A, "a1"), (A, "a2")),  # cut: 1 dropped
        _conv("c3", (A, "leading"), (U, "q"), (A, "a")),  # 1 leading message dropped
        _conv("p1", (U, "only a prompt")),  # no assistant turn: refused row
        _conv("ok", (U, "q"), (A, "a")),
    ]
    inp = _write(tmp_path / "in.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "out.jsonl"
    assert _tokenize(inp, qwen_tok, out) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["rows_in"] == 5 and summary["rows"] == 4 and summary["rows_failed"] == 1
    assert summary["rows_cut_consecutive_assistant"] == 2
    assert summary["messages_dropped"] == 5  # 3 + 1 cut, 1 leading
    assert summary["rows_failed_by_reason"] == {"no assistant turn": 1}
    assert "skipped line 4 (id 'p1'): no assistant turn" in captured.err
    assert (
        "tokenize: 2 rows cut at consecutive assistant turns (4 messages dropped), "
        "1 row with messages dropped before the first user turn (1 messages dropped), "
        "1 row skipped (no assistant turn: regenerate this source first)"
    ) in captured.err

    # the same numbers in stats.json of the dataset writer
    from specforge_assets.tokenize.core import TokenizeOptions
    from specforge_assets.tokenize.dataset import tokenize_jsonl
    from specforge_assets.tokenize.templates import get_template

    st = tokenize_jsonl(inp, qwen_tok, get_template("qwen"), tmp_path / "ds", TokenizeOptions(max_length=256))
    saved = json.loads((tmp_path / "ds" / "stats.json").read_text())
    assert saved["rows_cut"] == {"cut_consecutive_assistant": 2, "leading_non_user": 1} == st["rows_cut"]
    assert saved["messages_dropped_by_reason"] == {"cut_consecutive_assistant": 4, "leading_non_user": 1}
    assert saved["rows_no_assistant_turn"] == 1
    assert saved["rows_in"] == saved["rows"] + saved["rows_failed"] == 5


def test_prompt_only_dataset_is_refused(tmp_path, capsys, qwen_tok):
    inp = _write(tmp_path / "in.jsonl", [json.dumps(_conv(f"p{i}", ("user", "a question"))) for i in range(3)])
    out = tmp_path / "out.jsonl"
    assert _tokenize(inp, qwen_tok, out) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"error: no assistant turn in any of the 3 rows of {inp}: prompt-only rows (user turns "
        "only) supervise nothing; regenerate this source first (specforge-assets regenerate)"
    )
    assert len(err) == 4 and err[0].startswith("skipped line 1 (id 'p0'): ")  # the skipped lines come first
    assert not out.exists()


def test_all_zero_loss_masks_are_refused(tmp_path, capsys, qwen_tok):
    long_prompt = "lorem ipsum dolor sit amet " * 60
    inp = _write(
        tmp_path / "in.jsonl",
        [json.dumps(_conv(f"z{i}", ("user", long_prompt), ("assistant", "short"))) for i in range(3)],
    )
    out = tmp_path / "out.jsonl"
    rc = main(
        [
            "tokenize",
            "--input",
            str(inp),
            "--tokenizer",
            qwen_tok,
            "--chat-template",
            "qwen",
            "--max-length",
            "64",
            "--output",
            str(out),
        ]
    )
    assert rc == 1 and not out.exists()
    err = capsys.readouterr().err
    assert err.strip() == (
        f"error: no supervised tokens in {inp} (3 rows, all loss masks zero): check max_length / "
        "chat template (every row was truncated at max_length 64)"
    )
    assert "Traceback" not in err


def test_vocab_mapping_refuses_zero_supervised_and_warns_partial_fill(tmp_path, capsys):
    zero = _write(
        tmp_path / "zero.jsonl",
        [json.dumps({"id": f"z{i}", "input_ids": [5, 6, 7], "loss_mask": [0, 0, 0]}) for i in range(3)],
    )
    m = tmp_path / "map.pt"
    rc = main(
        [
            "vocab-mapping",
            "--input",
            str(zero),
            "--target-vocab-size",
            "100",
            "--draft-vocab-size",
            "10",
            "--output",
            str(m),
        ]
    )
    assert rc == 1 and not m.exists()
    assert capsys.readouterr().err.strip() == (
        f"error: no supervised tokens in {zero} (3 rows, all loss masks zero): check max_length / chat template"
    )

    part = _write(
        tmp_path / "part.jsonl", [json.dumps({"id": "a", "input_ids": [5, 6, 7, 8], "loss_mask": [0, 1, 1, 1]})]
    )
    assert (
        main(
            [
                "vocab-mapping",
                "--input",
                str(part),
                "--target-vocab-size",
                "100",
                "--draft-vocab-size",
                "10",
                "--output",
                str(m),
            ]
        )
        == 0
    )
    cap = capsys.readouterr()
    assert json.loads(cap.out)["filled_zero_count_ids"] == 7
    assert "warning: 7 of 10 draft vocabulary ids are zero-count fill-up" in cap.err
    mp = torch.load(m, weights_only=True)
    # supervised 6, 7, 8 + zero-count fill 0..5, 9 (ascending)
    assert (mp["d2t"] + torch.arange(10)).tolist() == list(range(10))


def test_vocab_mapping_skips_nothing_silently(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"input_ids": [1], "loss_mask": [1]}) + "\n" + '{"input_ids": [1], "x": "\\udc00"}\n')
    assert (
        main(["vocab-mapping", "--input", str(bad), "--target-vocab-size", "10", "--output", str(tmp_path / "m.pt")])
        == 1
    )
    assert capsys.readouterr().err.strip() == f"error: {bad}:2: x: lone surrogate \\udc00 at char 0"
    assert not (tmp_path / "m.pt").exists()


def test_command_line_paths_are_relative_to_the_cwd(tmp_path, capsys, monkeypatch, qwen_tok):
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    _write(work / "data" / "in.jsonl", [json.dumps(_conv("a", ("user", "hi"), ("assistant", "hello there")))])
    monkeypatch.setenv("SPECFORGE_DATA_ROOT", str(tmp_path / "elsewhere"))
    monkeypatch.chdir(work)
    assert (
        main(
            [
                "tokenize",
                "--input",
                "data/in.jsonl",
                "--tokenizer",
                qwen_tok,
                "--chat-template",
                "qwen",
                "--max-length",
                "64",
                "--output",
                "out/tok.jsonl",
            ]
        )
        == 0
    )
    assert [json.loads(l)["id"] for l in (work / "out" / "tok.jsonl").read_text().splitlines()] == ["a"]
    assert (
        main(
            [
                "vocab-mapping",
                "--input",
                "out/tok.jsonl",
                "--target-vocab-size",
                "151665",
                "--draft-vocab-size",
                "4",
                "--output",
                "out/map.pt",
            ]
        )
        == 0
    )
    assert (work / "out" / "map.pt").is_file()
    assert not (tmp_path / "elsewhere").exists()
    capsys.readouterr()
    assert (
        main(
            [
                "tokenize",
                "--input",
                "data/missing.jsonl",
                "--tokenizer",
                qwen_tok,
                "--chat-template",
                "qwen",
                "--output",
                "out/x.jsonl",
            ]
        )
        == 1
    )
    assert "error: input not found: data/missing.jsonl" in capsys.readouterr().err


def test_row_level_system_and_report_files_beside_the_output(tmp_path, capsys, qwen_tok):
    """A row-level `system` (LLaMA-Factory layout) is the leading system message, as in the
    sources layer; a row with both is skipped naming field `system`; the skipped lines and the
    counts are kept beside OUT (OUT.errors.jsonl, OUT.stats.json) as the summary says."""
    from transformers import AutoTokenizer

    rows = [
        {**_conv("rs", ("user", "hi"), ("assistant", "hello")), "system": "ROW-SYSTEM-PROMPT"},
        {**_conv("both", ("system", "A"), ("user", "hi"), ("assistant", "hello")), "system": "B"},
        _conv("plain", ("user", "hi"), ("assistant", "hello")),
    ]
    inp = _write(tmp_path / "in.jsonl", [json.dumps(r) for r in rows])
    out = tmp_path / "tok.jsonl"
    assert _tokenize(inp, qwen_tok, out) == 0
    got = {json.loads(l)["id"]: json.loads(l) for l in out.read_text().splitlines()}
    assert set(got) == {"rs", "plain"}
    text = AutoTokenizer.from_pretrained(qwen_tok).decode(got["rs"]["input_ids"])
    assert text.startswith("<|im_start|>system\nROW-SYSTEM-PROMPT<|im_end|>") and "helpful assistant" not in text
    err = capsys.readouterr().err
    assert "skipped line 2 (id 'both'): system: row has both a top-level 'system' and a system message" in err
    assert "see tok.errors.jsonl / tok.stats.json" in err
    (e,) = [json.loads(l) for l in (tmp_path / "tok.errors.jsonl").read_text().splitlines()]
    assert (e["line"], e["id"]) == (2, "both")
    assert json.loads((tmp_path / "tok.stats.json").read_text())["rows_failed"] == 1


def test_refused_run_shows_its_skipped_lines(tmp_path, capsys, qwen_tok):
    lone = '{"id": "x", "conversations": [{"role": "user", "content": "a \\ud83d"}, {"role": "assistant", "content": "b"}]}'
    inp = _write(tmp_path / "in.jsonl", [lone])
    assert _tokenize(inp, qwen_tok, tmp_path / "tok.jsonl") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == "skipped line 1 (id 'x'): conversations[0].content: lone surrogate \\ud83d at char 2"
    assert err[-1].startswith("error: no row of ") and len(err) == 2
