"""The draft evaluation report (models/draft_evaluation): held-out prompts, the trained draft vs
an untrained draft vs the previous draft version, report.json and a plot. No Dagster import.

Prompts: rows of `<data root>/mix/test.jsonl` with `conversations`, cut after the last user turn
(what the target would be asked), rendered with the target tokenizer's chat template plus the
assistant header. Pre-formatted `text` rows carry no turn structure and are skipped (counted).
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ..fileio import atomic_write, iter_jsonl

REPORT_VERSION = 2  # 2: per_category, per_prompt


def prompt_prefix(conversations: list[dict]) -> list[dict] | None:
    """The conversation up to and including its last user turn (None without a user turn)."""
    last_user = None
    for i, m in enumerate(conversations):
        role = m.get("role") or m.get("from")
        if role in ("user", "human"):
            last_user = i
    if last_user is None:
        return None
    out = []
    for m in conversations[: last_user + 1]:
        role = m.get("role") or m.get("from")
        role = {"human": "user", "gpt": "assistant"}.get(role, role)
        content = m.get("content", m.get("value", ""))
        out.append({"role": role, "content": content if isinstance(content, str) else json.dumps(content)})
    return out


def prompt_category(row: dict) -> str:
    """The row's `category` when it has one (a non-empty string), else its `source`, else "unknown"."""
    for key in ("category", "source"):
        v = row.get(key)
        if isinstance(v, str) and v.strip():
            return v.strip()
    return "unknown"


def per_category(prompts: list[dict], trained: dict, untrained: dict, k: int) -> dict:
    """{category: {n, acceptance_length, untrained_acceptance_length, per_position_acceptance}}."""
    from .evaluate import acceptance_by_group

    cats = [p.get("category") or "unknown" for p in prompts]
    t = acceptance_by_group(trained["rounds_per_prompt"], cats, k)
    u = acceptance_by_group(untrained["rounds_per_prompt"], cats, k)
    return {c: {"n": t[c]["n"], "acceptance_length": round(t[c]["acceptance_length"], 4),
                "untrained_acceptance_length": round(u[c]["acceptance_length"], 4),
                "per_position_acceptance": [round(a, 4) for a in t[c]["per_position_acceptance"]]}
            for c in sorted(t)}


def per_prompt(prompts: list[dict], trained: dict, untrained: dict) -> list[dict]:
    """One entry per evaluated prompt: id, source, category, acceptance length trained/untrained."""
    def al(r):
        return round(sum(a + 1 for a in r) / len(r), 4) if r else None

    return [{"id": p.get("id"), "source": p.get("source"), "category": p.get("category"),
             "acceptance_length": al(tr), "untrained_acceptance_length": al(ur), "rounds": len(tr)}
            for p, tr, ur in zip(prompts, trained["rounds_per_prompt"], untrained["rounds_per_prompt"])]


def heldout_prompts(test_jsonl: Path, tokenizer, *, num_prompts: int, max_prompt_tokens: int) -> tuple[list[dict], dict]:
    """(prompts [{id, source, category, messages, input_ids}], counts) — the first `num_prompts` usable rows."""
    prompts: list[dict] = []
    counts = {"rows_read": 0, "skipped_text_rows": 0, "skipped_no_user_turn": 0, "skipped_too_long": 0,
              "skipped_unreadable": 0}
    unreadable: list = []
    for row in iter_jsonl(test_jsonl, errors=unreadable):
        counts["skipped_unreadable"] = len(unreadable)
        if len(prompts) >= num_prompts:
            break
        counts["rows_read"] += 1
        conv = row.get("conversations")
        if not isinstance(conv, list) or not conv:
            counts["skipped_text_rows"] += 1
            continue
        msgs = prompt_prefix(conv)
        if msgs is None:
            counts["skipped_no_user_turn"] += 1
            continue
        ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
        if hasattr(ids, "keys"):
            ids = ids["input_ids"]
        ids = list(ids)
        if len(ids) > max_prompt_tokens:
            counts["skipped_too_long"] += 1
            continue
        prompts.append({"id": row.get("id"), "source": row.get("source"), "category": prompt_category(row),
                        "messages": msgs, "input_ids": ids})
    counts["skipped_unreadable"] = len(unreadable)
    return prompts, counts


def plot_per_position(path: Path, k: int, series: dict[str, list[float]], title: str) -> Path:
    from ..charts import acceptance_per_position_figure, figure_png

    png = figure_png(acceptance_per_position_figure(series, k, title), dpi=110)
    with atomic_write(path, "wb") as f:
        f.write(png)
    return path


def _checkpoint_version(d: Path) -> str | None:
    from .entry import checkpoint_version

    try:
        return checkpoint_version(d)
    except FileNotFoundError:
        return None


def evaluate_drafts(
    *,
    target_path: Path | str,
    draft_dir: Path,
    vocab_mapping_path: Path,
    test_jsonl: Path,
    out_dir: Path,
    previous_dir: Path | None = None,
    k: int = 4,
    max_new_tokens: int = 48,
    num_prompts: int = 24,
    max_prompt_tokens: int = 384,
    untrained_seed: int = 0,
    trust_remote_code: bool = False,
    log: Callable[[str], Any] = print,
) -> dict:
    """Evaluate trained / untrained / previous drafts on the same prompts; write
    `out_dir/report.json` (+ `previous_report.json` = the report this one replaces) and the plot."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .eagle3 import load_draft_checkpoint, load_vocab_mapping_file
    from .evaluate import evaluate_acceptance

    from .errors import TrainFileNotFound, TrainInputError, load_target_part

    t0 = time.time()
    if int(num_prompts) < 1:
        raise TrainInputError(f"num_prompts must be >= 1, got {num_prompts}: an evaluation over zero prompts measures nothing")
    for what, p in (("held-out prompts file", test_jsonl), ("draft checkpoint folder", draft_dir),
                    ("vocab mapping", vocab_mapping_path)):
        if not Path(p).exists():
            raise TrainFileNotFound(f"{what} not found: {p} (command-line paths are relative to the current directory)")
    tokenizer = load_target_part(AutoTokenizer, target_path, "target tokenizer", trust_remote_code=trust_remote_code)
    target = load_target_part(AutoModelForCausalLM, target_path, "target model", dtype=torch.float32,
                              trust_remote_code=trust_remote_code).eval()
    prompts, counts = heldout_prompts(test_jsonl, tokenizer, num_prompts=num_prompts, max_prompt_tokens=max_prompt_tokens)
    if not prompts:
        raise TrainInputError(f"no usable held-out prompts in {test_jsonl} ({counts}): an evaluation over zero prompts "
                              "is refused (acceptance would be 0 or NaN); give a test file with conversations that "
                              "have a user turn")
    out_dir.mkdir(parents=True, exist_ok=True)
    log(f"evaluating on {len(prompts)} held-out prompts from {test_jsonl} ({counts}), k={k}, max_new_tokens={max_new_tokens}")
    ids = [p["input_ids"] for p in prompts]
    vm = load_vocab_mapping_file(vocab_mapping_path)

    draft = load_draft_checkpoint(draft_dir, target)
    trained = evaluate_acceptance(target, tokenizer, draft, ids, k=k, max_new_tokens=max_new_tokens, check_lossless=True)
    log(f"trained draft: acceptance length {trained['acceptance_length']:.3f}, per position "
        f"{[round(a, 3) for a in trained['per_position_acceptance']]}, lossless={trained['lossless']}")
    untrained = evaluate_acceptance(target, tokenizer, None, ids, k=k, max_new_tokens=max_new_tokens,
                                    vocab_mapping=vm, seed=untrained_seed, check_lossless=False)
    log(f"untrained draft: acceptance length {untrained['acceptance_length']:.3f}")
    previous = None
    cur_version = _checkpoint_version(draft_dir)
    if previous_dir is not None and (previous_dir / "model.safetensors").exists():
        prev_version = _checkpoint_version(previous_dir)
        if prev_version and prev_version != cur_version:
            try:
                prev_draft = load_draft_checkpoint(previous_dir, target)
                p = evaluate_acceptance(target, tokenizer, prev_draft, ids, k=k, max_new_tokens=max_new_tokens,
                                        check_lossless=False)
                previous = {"checkpoint_path": str(previous_dir), "checkpoint_version": prev_version,
                            "acceptance_length": p["acceptance_length"],
                            "per_position_acceptance": p["per_position_acceptance"]}
                log(f"previous draft ({prev_version}): acceptance length {p['acceptance_length']:.3f}")
            except (ValueError, RuntimeError) as e:  # e.g. a draft for another target/vocab
                previous = {"checkpoint_path": str(previous_dir), "error": f"{type(e).__name__}: {str(e)[:300]}"}
                log(f"previous draft not comparable: {previous['error']}")

    report = {
        "report_version": REPORT_VERSION,
        "acceptance_length": round(trained["acceptance_length"], 4),
        "untrained_acceptance_length": round(untrained["acceptance_length"], 4),
        "per_position_acceptance": [round(a, 4) for a in trained["per_position_acceptance"]],
        "per_position_acceptance_cumulative": [round(a, 4) for a in trained["per_position_acceptance_cumulative"]],
        "untrained_per_position_acceptance": [round(a, 4) for a in untrained["per_position_acceptance"]],
        "k": k,
        "lossless": bool(trained["lossless"]),
        "mismatches": trained["mismatches"],
        "num_prompts": trained["num_prompts"],
        "num_rounds": trained["num_rounds"],
        "generated_tokens": trained["tokens_generated"],
        "max_new_tokens": max_new_tokens,
        "prompt_counts": counts,
        "prompt_ids": [p["id"] for p in prompts],
        "per_category": per_category(prompts, trained, untrained, k),
        "per_prompt": per_prompt(prompts, trained, untrained),
        "checkpoint_path": str(draft_dir),
        "checkpoint_version": cur_version,
        "target_path": str(target_path),
        "test_split": str(test_jsonl),
        "previous": previous,
        "untrained_seed": untrained_seed,
        "seconds": round(time.time() - t0, 2),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    report_path = out_dir / "report.json"
    if report_path.exists():
        try:
            old = json.loads(report_path.read_text())
            if old.get("checkpoint_version") != cur_version:
                shutil.copyfile(report_path, out_dir / "previous_report.json")
        except (OSError, json.JSONDecodeError):
            pass
    series = {"trained": report["per_position_acceptance"], "untrained": report["untrained_per_position_acceptance"]}
    if previous and previous.get("per_position_acceptance"):
        series["previous"] = [round(a, 4) for a in previous["per_position_acceptance"]]
    plot_per_position(out_dir / "per_position_acceptance.png", k, series,
                      f"acceptance length {report['acceptance_length']:.2f} vs untrained {report['untrained_acceptance_length']:.2f} (k={k})")
    with atomic_write(report_path) as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    log(f"report written to {report_path} in {report['seconds']:.0f}s")
    return report
