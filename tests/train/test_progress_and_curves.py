"""Training progress lines (elapsed + ETA from the mean step time), the loss curve from a real tiny
run's metrics, and per-category acceptance in the evaluation report."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from transformers import AutoModelForCausalLM

from specforge_assets import charts
from specforge_assets.train.eval_report import heldout_prompts, per_category, per_prompt, prompt_category
from specforge_assets.train.evaluate import acceptance_by_group, evaluate_acceptance
from specforge_assets.train.loop import eta_seconds, format_duration, progress_line, train_draft
from specforge_assets.train.settings import TrainConfig
from tests.helpers.toy import toy_rows, write_toy_dataset, write_vocab_mapping

from .test_loop_train import toy_target_dir


@pytest.mark.parametrize(
    "s,want",
    [
        (0, "0s"),
        (44.6, "45s"),
        (83, "1m23s"),
        (600, "10m00s"),
        (3600, "1h00m"),
        (7500, "2h05m"),
        (None, "?"),
        (float("inf"), "?"),
        (-1, "?"),
    ],
)
def test_format_duration(s, want):
    assert format_duration(s) == want


def test_eta_from_mean_step_time():
    assert eta_seconds(10.0, 10, 190) == pytest.approx(190.0)
    assert eta_seconds(5.0, 0, 10) is None  # nothing measured yet
    assert eta_seconds(5.0, 5, 0) == 0
    line = progress_line(10, 200, 1.23456, [0.41, 0.2], 1e-4, 1646.4, 12.2, 83.0)
    assert line == "step 10/200 loss 1.2346 acc 0.41 0.20 lr 1.00e-04 1646 tok/s, elapsed 12s, ETA 1m23s"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("progress")
    shutil.copytree(toy_target_dir(), d / "target")
    write_toy_dataset(d / "dataset", n=64, seed=0)
    write_vocab_mapping(d / "vm" / "vocab_mapping.pt", toy_rows(64, seed=0), draft_vocab_size=58)
    cfg = TrainConfig(ttt_length=2, lr=3e-3, warmup_ratio=0.05, max_steps=8, batch_size=8, max_length=64, log_every=2)
    logs: list[str] = []
    seen: list[dict] = []
    res = train_draft(
        cfg,
        target_path=d / "target",
        dataset_path=d / "dataset",
        vocab_mapping_path=d / "vm",
        out_dir=d / "out",
        log=logs.append,
        metrics_cb=lambda s, m: seen.append(m),
    )
    return d, res, logs, seen


def test_progress_lines_carry_elapsed_and_an_eta_from_the_mean_step_time(run):
    _, res, logs, seen = run
    lines = [line for line in logs if line.startswith("step ")]
    assert [line.split()[1] for line in lines] == ["2/8", "4/8", "6/8", "8/8"]
    pat = re.compile(r"^step \d+/8 loss \d+\.\d{4} acc \d\.\d\d \d\.\d\d lr \S+ \d+ tok/s, elapsed \S+, ETA (\S+)$")
    assert all(pat.match(line) for line in lines), lines
    assert lines[-1].endswith("ETA 0s")
    # the ETA is the run's mean step time x the steps left (its value, not wall-clock luck: the
    # mean step time of a loaded 2-core box moves, so the ETA need not fall monotonically)
    for m in seen:
        assert m["eta_s"] == pytest.approx(m["elapsed_s"] / m["step"] * (8 - m["step"]), abs=2e-3), m
    assert seen[-1]["eta_s"] == 0
    assert all(m["elapsed_s"] > 0 for m in seen)
    assert [m["elapsed_s"] for m in seen] == sorted(m["elapsed_s"] for m in seen)
    assert "eta_s" not in res  # the final metrics carry the whole run's elapsed_s, no ETA


def test_loss_curve_from_the_run_metrics(run):
    d, res, _, _ = run
    hist = charts.load_metrics(d / "out")  # metrics.json
    assert [h["step"] for h in hist] == [2, 4, 6, 8]
    assert charts.load_metrics(d / "out" / "training_state" / "metrics.jsonl") == hist
    fig = charts.loss_curve_figure(json.loads((d / "out" / "metrics.json").read_text()))
    assert list(fig.axes[0].get_lines()[0].get_ydata()) == [h["loss"] for h in hist]
    assert len(fig.axes[1].get_lines()) == 2  # ttt_length positions
    assert charts.loss_curve_png(hist)[:4] == b"\x89PNG"
    assert len(charts.loss_curve_inline_md(hist)) < charts.INLINE_MD_LIMIT


# -- per-category acceptance --------------------------------------------------------------------


def test_prompt_category_prefers_category_then_source():
    assert prompt_category({"category": "math", "source": "gsm"}) == "math"
    assert prompt_category({"category": "", "source": "gsm"}) == "gsm"
    assert prompt_category({"category": None, "source": "gsm"}) == "gsm"
    assert prompt_category({}) == "unknown"


def test_per_category_from_hand_made_rounds():
    prompts = [
        {"id": "a", "source": "s1", "category": "chat"},
        {"id": "b", "source": "s1", "category": "code"},
        {"id": "c", "source": "s2", "category": "chat"},
    ]
    trained = {"rounds_per_prompt": [[2, 0], [3, 3], [1]]}
    untrained = {"rounds_per_prompt": [[0, 0], [0, 1], [0]]}
    cats = per_category(prompts, trained, untrained, k=3)
    assert cats == {
        "chat": {
            "n": 2,
            "acceptance_length": 2.0,
            "untrained_acceptance_length": 1.0,
            "per_position_acceptance": [0.6667, 0.5, 0.0],
        },
        "code": {
            "n": 1,
            "acceptance_length": 4.0,
            "untrained_acceptance_length": 1.5,
            "per_position_acceptance": [1.0, 1.0, 1.0],
        },
    }
    pp = per_prompt(prompts, trained, untrained)
    assert pp[0] == {
        "id": "a",
        "source": "s1",
        "category": "chat",
        "acceptance_length": 2.0,
        "untrained_acceptance_length": 1.0,
        "rounds": 2,
    }
    rows, _ = charts.per_category_table({"per_category": cats})
    assert [(r["category"], r["n_prompts"], r["improvement"]) for r in rows] == [("chat", 2, 1.0), ("code", 1, 2.5)]
    with pytest.raises(ValueError):
        acceptance_by_group([[1]], ["a", "b"], 3)


def test_rounds_per_prompt_reproduce_the_overall_numbers(run):
    d, _, _, _ = run
    target = AutoModelForCausalLM.from_pretrained(str(d / "target")).eval()
    prompts = [r["input_ids"][:7] for r in toy_rows(4, seed=5)]
    from specforge_assets.train.eagle3 import load_draft_checkpoint

    draft = load_draft_checkpoint(d / "out", target)
    res = evaluate_acceptance(target, None, draft, prompts, k=3, max_new_tokens=10, check_lossless=False)
    assert len(res["rounds_per_prompt"]) == 4
    one = acceptance_by_group(res["rounds_per_prompt"], ["all"] * 4, 3)["all"]
    assert one["acceptance_length"] == pytest.approx(res["acceptance_length"])
    assert one["per_position_acceptance"] == pytest.approx(res["per_position_acceptance"])
    two = acceptance_by_group(res["rounds_per_prompt"], ["x", "x", "y", "y"], 3)
    assert {g: v["n"] for g, v in two.items()} == {"x": 2, "y": 2}


class _Tok:
    def apply_chat_template(self, msgs, add_generation_prompt=True, tokenize=True):
        return [1] * (3 * len(msgs))


def test_heldout_prompts_carry_source_and_category(tmp_path):
    conv = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    rows = [
        {"id": "r1", "source": "chatsrc", "category": "greeting", "conversations": conv},
        {"id": "r2", "source": "chatsrc", "conversations": conv},
        {"id": "r3", "source": "txt", "text": "plain"},
    ]
    f = tmp_path / "test.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts, counts = heldout_prompts(f, _Tok(), num_prompts=10, max_prompt_tokens=100)
    assert [(p["id"], p["source"], p["category"]) for p in prompts] == [
        ("r1", "chatsrc", "greeting"),
        ("r2", "chatsrc", "chatsrc"),
    ]
    assert counts["skipped_text_rows"] == 1


class _ToyChatTok:
    """Stands in for the target tokenizer: a prompt is the toy progression written in its user turn."""

    eos_token_id = None

    def apply_chat_template(self, msgs, add_generation_prompt=True, tokenize=True):
        return [int(t) for t in msgs[-1]["content"].split()]


def test_evaluation_report_has_per_category_and_per_prompt(run, tmp_path, monkeypatch):
    import specforge_assets.train.errors as errors
    from specforge_assets.train.eval_report import evaluate_drafts

    real = errors.load_target_part
    monkeypatch.setattr(
        errors,
        "load_target_part",
        lambda loader, target, what="", **kw: (
            _ToyChatTok() if "tokenizer" in what else real(loader, target, what, **kw)
        ),
    )
    d, _, _, _ = run
    rows = []
    for i, r in enumerate(toy_rows(5, seed=9)):
        row = {
            "id": f"t{i}",
            "source": "toy_a" if i < 3 else "toy_b",
            "conversations": [
                {"role": "user", "content": " ".join(map(str, r["input_ids"][:7]))},
                {"role": "assistant", "content": "x"},
            ],
        }
        if i == 0:
            row["category"] = "special"
        rows.append(row)
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = evaluate_drafts(
        target_path=d / "target",
        draft_dir=d / "out",
        vocab_mapping_path=d / "vm" / "vocab_mapping.pt",
        test_jsonl=test,
        out_dir=tmp_path / "eval",
        k=2,
        max_new_tokens=8,
        num_prompts=5,
        log=lambda *_: None,
    )
    assert set(rep["per_category"]) == {"special", "toy_a", "toy_b"}
    assert {c: v["n"] for c, v in rep["per_category"].items()} == {"special": 1, "toy_a": 2, "toy_b": 2}
    for v in rep["per_category"].values():
        assert 1.0 <= v["acceptance_length"] <= 3.0 and 1.0 <= v["untrained_acceptance_length"] <= 3.0
    assert [(p["id"], p["source"], p["category"]) for p in rep["per_prompt"]] == [
        ("t0", "toy_a", "special"),
        ("t1", "toy_a", "toy_a"),
        ("t2", "toy_a", "toy_a"),
        ("t3", "toy_b", "toy_b"),
        ("t4", "toy_b", "toy_b"),
    ]
    n_rounds = sum(p["rounds"] for p in rep["per_prompt"])
    assert n_rounds == rep["num_rounds"]
    assert json.loads((tmp_path / "eval" / "report.json").read_text())["per_category"] == rep["per_category"]
    assert (tmp_path / "eval" / "per_position_acceptance.png").read_bytes()[:4] == b"\x89PNG"
    rows_, _ = charts.per_category_table(rep)
    assert sum(r["n_prompts"] for r in rows_) == 5
