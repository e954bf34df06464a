"""Evaluation prompt sets (evaluation.sets): MT-Bench-style multi-turn rows (turn 2 asked after the
target's own turn-1 answer), GSM8K-style questions, the held-out default, several k at once."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import AutoModelForCausalLM

from specforge_assets.train.errors import TrainInputError
from specforge_assets.charts import sets_table
from specforge_assets.train.eval_report import eval_ks, eval_sets
from specforge_assets.train.evaluate import greedy_generate
from specforge_assets.train.loop import train_draft
from specforge_assets.train.settings import TrainConfig
from tests.helpers.toy import toy_rows, write_toy_dataset, write_vocab_mapping

from .test_loop_train import toy_target_dir


class _ConcatTok:
    """Stands in for the target tokenizer: every message's content is toy token ids written as text;
    the rendered prompt is all of them in order (so turn 2's ids = q1 + answer + q2)."""

    eos_token_id = None

    def apply_chat_template(self, msgs, add_generation_prompt=True, tokenize=True):
        return [int(t) for m in msgs for t in m["content"].split()]

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("evalsets")
    shutil.copytree(toy_target_dir(), d / "target")
    write_toy_dataset(d / "dataset", n=64, seed=0)
    write_vocab_mapping(d / "vm" / "vocab_mapping.pt", toy_rows(64, seed=0), draft_vocab_size=58)
    cfg = TrainConfig(ttt_length=2, lr=3e-3, warmup_ratio=0.05, max_steps=8, batch_size=8, max_length=64, log_every=4)
    train_draft(
        cfg,
        target_path=d / "target",
        dataset_path=d / "dataset",
        vocab_mapping_path=d / "vm",
        out_dir=d / "out",
        log=lambda *_: None,
    )
    return d


@pytest.fixture
def toy_tok(monkeypatch):
    import specforge_assets.train.errors as errors

    real = errors.load_target_part
    monkeypatch.setattr(
        errors,
        "load_target_part",
        lambda loader, target, what="", **kw: _ConcatTok() if "tokenizer" in what else real(loader, target, what, **kw),
    )


def _text(ids):
    return " ".join(map(str, ids))


def _files(tmp_path):
    rows = toy_rows(8, seed=11)
    mt = tmp_path / "question.jsonl"
    mt.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {
                    "question_id": 81,
                    "category": "writing",
                    "turns": [_text(rows[0]["input_ids"][:6]), _text(rows[1]["input_ids"][:5])],
                },
                {
                    "question_id": 82,
                    "category": "math",
                    "turns": [_text(rows[2]["input_ids"][:6]), _text(rows[3]["input_ids"][:5])],
                },
            ]
        )
    )
    qs = tmp_path / "gsm8k.jsonl"
    qs.write_text(
        "".join(
            json.dumps(r) + "\n"
            for r in [
                {"question": _text(rows[4]["input_ids"][:6]), "answer": "x #### 1"},
                {"prompt": _text(rows[5]["input_ids"][:6])},
            ]
        )
    )
    held = tmp_path / "test.jsonl"
    held.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"h{i}",
                    "source": "toy",
                    "conversations": [
                        {"role": "user", "content": _text(rows[6 + i]["input_ids"][:7])},
                        {"role": "assistant", "content": "x"},
                    ],
                }
            )
            + "\n"
            for i in range(2)
        )
    )
    return mt, qs, held, rows


def _evaluate(d, tmp_path, sets, k, **kw):
    from specforge_assets.train.eval_report import evaluate_drafts

    return evaluate_drafts(
        target_path=d / "target",
        draft_dir=d / "out",
        vocab_mapping_path=d / "vm" / "vocab_mapping.pt",
        test_jsonl=tmp_path / "test.jsonl",
        out_dir=tmp_path / "eval",
        k=k,
        sets=sets,
        max_new_tokens=6,
        num_prompts=5,
        log=lambda *_: None,
        **kw,
    )


def test_mtbench_turn_two_follows_the_targets_own_answer(run, tmp_path, toy_tok):
    mt, _, _, rows = _files(tmp_path)
    rep = _evaluate(run, tmp_path, eval_sets({"sets": [{"name": "mt", "path": str(mt), "format": "mtbench"}]}), [2, 3])
    assert set(rep["sets"]) == {"mt"} and set(rep["sets"]["mt"]) == {"2", "3"}
    assert rep["k"] == 2 and rep["ks"] == [2, 3] and rep["lossless"] is True
    target = AutoModelForCausalLM.from_pretrained(str(run / "target")).eval()
    e = getattr(target.config, "eos_token_id", None)
    eos = set(e if isinstance(e, list) else ([e] if e is not None else []))
    for kk in ("2", "3"):
        entry = rep["sets"]["mt"][kk]
        assert entry["lossless"] is True and entry["num_prompts"] == 2 and entry["num_turns"] == 4
        assert set(entry["per_category"]) == {"writing", "math"}
        for i, pp in enumerate(entry["per_prompt"]):
            assert [t["turn"] for t in pp["turns"]] == [1, 2]
            assert pp["rounds"] == sum(t["rounds"] for t in pp["turns"])
            q1 = rows[2 * i]["input_ids"][:6]
            q2 = rows[2 * i + 1]["input_ids"][:5]
            answer = [t for t in greedy_generate(target, q1, 6, eos, "cpu") if t not in eos]  # the target's own answer
            ctx = pp["turns"][1]["context"]
            assert ctx == [
                {"role": "user", "content": _text(q1)},
                {"role": "assistant", "content": _text(answer)},
                {"role": "user", "content": _text(q2)},
            ]
            assert pp["turns"][1]["prompt_tokens"] == len(q1) + len(answer) + len(q2)
    assert [p["id"] for p in rep["per_prompt"]] == [81, 82]
    assert rep["per_prompt"] == rep["sets"]["mt"]["2"]["per_prompt"]  # top level = first set, first k
    rows_, cols = sets_table(rep)
    assert [c[0] for c in cols] == ["set", "k", "category", "n", "acceptance_length", "untrained", "previous"]
    assert {(r["set"], r["k"], r["category"]) for r in rows_} == {
        ("mt", k, c) for k in (2, 3) for c in ("(all)", "writing", "math")
    }
    assert (tmp_path / "eval" / "acceptance_by_set.png").read_bytes()[:4] == b"\x89PNG"


def test_questions_and_heldout_sets_side_by_side(run, tmp_path, toy_tok):
    _, qs, held, _ = _files(tmp_path)
    sets = eval_sets(
        {"sets": [{"name": "heldout"}, {"name": "gsm8k", "path": "gsm8k.jsonl", "format": "questions", "limit": 1}]},
        data_root=tmp_path,
    )
    assert sets[1]["path"] == tmp_path / "gsm8k.jsonl"
    rep = _evaluate(run, tmp_path, sets, 2)
    assert list(rep["sets"]) == ["heldout", "gsm8k"]
    g = rep["sets"]["gsm8k"]["2"]
    assert g["num_prompts"] == 1 and set(g["per_category"]) == {"gsm8k"} and "turns" not in g["per_prompt"][0]
    h = rep["sets"]["heldout"]["2"]
    assert rep["acceptance_length"] == h["acceptance_length"] and rep["num_prompts"] == 2 == h["num_prompts"]
    assert rep["lossless"] is True and g["lossless"] is True
    # {prompt} rows too, auto-detected format
    rep2 = _evaluate(run, tmp_path, eval_sets({"sets": [{"name": "q", "path": str(qs)}]}), 2)
    assert rep2["eval_sets"][0]["format"] == "questions" and rep2["num_prompts"] == 2


def test_default_is_the_heldout_split_as_before(run, tmp_path, toy_tok):
    _, _, held, _ = _files(tmp_path)
    assert eval_sets({}) == [{"name": "heldout", "path": None, "format": "heldout", "limit": None}]
    rep = _evaluate(run, tmp_path, None, 2)
    assert list(rep["sets"]) == ["heldout"] and rep["k"] == 2 and rep["test_split"] == str(held)
    assert [p["id"] for p in rep["per_prompt"]] == ["h0", "h1"] and rep["lossless"] is True
    assert rep["sets"]["heldout"]["2"]["acceptance_length"] == rep["acceptance_length"]
    assert "turns" not in rep["per_prompt"][0]


def test_set_and_k_config_errors(tmp_path):
    assert eval_ks(4) == [4] and eval_ks([4, 7, 4]) == [4, 7]
    for bad in (0, [], ["4"], True, [4, -1]):
        with pytest.raises(TrainInputError):
            eval_ks(bad)
    for bad in (
        [{"name": "a", "format": "mtbench"}],
        [{"name": "a"}, {"name": "a"}],
        [{"path": "x"}],
        [{"name": "a", "path": "x", "format": "nope"}],
        [{"name": "a", "path": "x", "limit": 0}],
        [{"name": "a", "path": "x", "extra": 1}],
        {"name": "a"},
    ):
        with pytest.raises(TrainInputError):
            eval_sets({"sets": bad}, tmp_path)
    assert (
        eval_sets({"sets": [{"name": "abs", "path": "/data/q.jsonl", "format": "mtbench"}]}, tmp_path)[0][
            "path"
        ].as_posix()
        == "/data/q.jsonl"
    )


def _word_tokenizer(target_dir):
    """A real tokenizer folder for the toy target: token i is the word "i", and the chat template
    concatenates the messages' contents (what `_ConcatTok` does in-process), so evaluation worker
    processes, which load the tokenizer from the folder, see the same prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import AutoConfig, PreTrainedTokenizerFast

    vocab_size = AutoConfig.from_pretrained(str(target_dir)).vocab_size
    tk = Tokenizer(models.WordLevel({str(i): i for i in range(vocab_size)}, unk_token="0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with single spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="0")
    fast.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    fast.save_pretrained(str(target_dir))


def test_evaluation_workers_give_the_numbers_of_one_process(run, tmp_path):
    """`workers` = 3 splits every set's prompts over three spawned processes; the report (every set,
    k, category, per-prompt rounds, multi-turn contexts, lossless) equals the one-process report."""
    from specforge_assets.train.eval_report import evaluate_drafts

    d = tmp_path / "run"
    shutil.copytree(run, d)
    _word_tokenizer(d / "target")
    mt, qs, held, _ = _files(tmp_path)
    sets = eval_sets(
        {
            "sets": [
                {"name": "mt", "path": str(mt), "format": "mtbench"},
                {"name": "q", "path": str(qs), "format": "questions"},
                {"name": "heldout", "path": str(held), "format": "heldout"},
            ]
        }
    )
    reps = {}
    for w in (1, 3):
        reps[w] = evaluate_drafts(
            target_path=d / "target",
            draft_dir=d / "out",
            vocab_mapping_path=d / "vm" / "vocab_mapping.pt",
            test_jsonl=held,
            out_dir=tmp_path / f"eval{w}",
            k=[2, 3],
            sets=sets,
            max_new_tokens=6,
            num_prompts=5,
            device="cpu",
            workers=w,
            log=lambda *_: None,
        )
    one, three = reps[1], reps[3]
    assert one["lossless"] is True and one["sets"]["mt"]["2"]["num_turns"] == 4
    assert three["sets"] == one["sets"]
    for key in ("acceptance_length", "untrained_acceptance_length", "per_prompt", "lossless", "num_rounds"):
        assert three[key] == one[key]


def test_evaluation_workers_must_be_a_positive_integer(run, tmp_path, toy_tok):
    _, _, held, _ = _files(tmp_path)
    with pytest.raises(TrainInputError, match="evaluation.workers"):
        _evaluate(run, tmp_path, None, 2, workers=0)
