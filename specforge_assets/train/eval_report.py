"""The draft evaluation report (models/draft_evaluation): held-out prompts, the trained draft vs
an untrained draft vs the previous draft version, report.json and a plot. No Dagster import.

Prompts: rows of `<data root>/mix/test.jsonl` with `conversations`, cut after the last user turn
(what the target would be asked), rendered with the target tokenizer's chat template plus the
assistant header. Pre-formatted `text` rows carry no turn structure and are skipped (counted).

Evaluation sets (`evaluation.sets` in configs/train.yaml, `--set` on the command line), each
`{name, path, format, limit}`:

* `heldout`: conversations rows (default path: the mix's test split) — the default single set;
* `mtbench`: `{question_id, category, turns: [q1, q2, ...]}` (MT-Bench `question.jsonl`). Turn 1 is
  asked as [user q1]; turn n+1 after the TARGET's own answer to turn n: [user q1, assistant a1,
  user q2]. Decoding is lossless (greedy, proposals verified by the target), so the trained
  draft's speculative turn-1 output is the target's answer and is reused; every draft (trained,
  untrained, previous) is measured on the same contexts, and a prompt's rounds are those of all
  its turns;
* `questions`: `{question}` (GSM8K) or `{prompt}` rows, one user turn; category = the row's
  `category`, else the set name.

`evaluation.k` may be a list (`[4, 7]`): every set is measured at every k. report.json keeps its
top-level keys for the first set at the first k and adds `sets: {name: {k: {...}}}`.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from ..fileio import atomic_write, iter_jsonl, sha256_file
from .ranks import resolve_device
from .settings import EvaluationSettings

_EVAL = EvaluationSettings()  # the defaults of `evaluate_drafts` are configs/train.yaml `evaluation:`'s

REPORT_VERSION = 3  # 2: per_category, per_prompt; 3: sets (several prompt sets and k values, multi-turn)


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


def per_category(prompts: list[dict], trained: dict, untrained: dict, k: int, previous: dict | None = None) -> dict:
    """{category: {n, acceptance_length, untrained_acceptance_length, per_position_acceptance
    [, previous_acceptance_length]}}."""
    from .evaluate import acceptance_by_group

    cats = [p.get("category") or "unknown" for p in prompts]
    t = acceptance_by_group(trained["rounds_per_prompt"], cats, k)
    u = acceptance_by_group(untrained["rounds_per_prompt"], cats, k)
    pv = acceptance_by_group(previous["rounds_per_prompt"], cats, k) if previous else None
    out = {}
    for c in sorted(t):
        out[c] = {
            "n": t[c]["n"],
            "acceptance_length": round(t[c]["acceptance_length"], 4),
            "untrained_acceptance_length": round(u[c]["acceptance_length"], 4),
            "per_position_acceptance": [round(a, 4) for a in t[c]["per_position_acceptance"]],
        }
        if pv is not None:
            out[c]["previous_acceptance_length"] = round(pv[c]["acceptance_length"], 4)
    return out


def per_prompt(prompts: list[dict], trained: dict, untrained: dict) -> list[dict]:
    """One entry per evaluated prompt: id, source, category, acceptance length trained/untrained."""

    def al(r):
        return round(sum(a + 1 for a in r) / len(r), 4) if r else None

    out = []
    for i, (p, tr, ur) in enumerate(zip(prompts, trained["rounds_per_prompt"], untrained["rounds_per_prompt"])):
        e = {
            "id": p.get("id"),
            "source": p.get("source"),
            "category": p.get("category"),
            "acceptance_length": al(tr),
            "untrained_acceptance_length": al(ur),
            "rounds": len(tr),
        }
        turns = (trained.get("turns_per_prompt") or {}).get(i)
        if turns:  # multi-turn rows: one entry per turn asked (context = what the target was given)
            ut = (untrained.get("turns_per_prompt") or {}).get(i) or []
            e["turns"] = [
                {
                    "turn": t["turn"],
                    "prompt_tokens": t["prompt_tokens"],
                    "generated_tokens": t["generated_tokens"],
                    "rounds": len(t["rounds"]),
                    "acceptance_length": al(t["rounds"]),
                    "untrained_acceptance_length": al(ut[j]["rounds"]) if j < len(ut) else None,
                    "context": t["context"],
                }
                for j, t in enumerate(turns)
            ]
        out.append(e)
    return out


def heldout_prompts(
    test_jsonl: Path, tokenizer, *, num_prompts: int, max_prompt_tokens: int
) -> tuple[list[dict], dict]:
    """(prompts [{id, source, category, messages, input_ids}], counts) — the first `num_prompts` usable rows."""
    prompts: list[dict] = []
    counts = {
        "rows_read": 0,
        "skipped_text_rows": 0,
        "skipped_no_user_turn": 0,
        "skipped_too_long": 0,
        "skipped_unreadable": 0,
    }
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
        prompts.append(
            {
                "id": row.get("id"),
                "source": row.get("source"),
                "category": prompt_category(row),
                "messages": msgs,
                "input_ids": ids,
            }
        )
    counts["skipped_unreadable"] = len(unreadable)
    return prompts, counts


SET_FORMATS = ("heldout", "mtbench", "questions")
SET_KEYS = ("name", "path", "format", "limit")


def _input_error(msg: str):
    from .errors import TrainInputError

    return TrainInputError(msg)


def eval_ks(k: Any) -> list[int]:
    """`evaluation.k` as a list of distinct positive ints, in order (`4` → [4]; `[4, 7]` → [4, 7])."""
    vals = list(k) if isinstance(k, (list, tuple)) else [k]
    out: list[int] = []
    for v in vals:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _input_error(f"evaluation.k: want a positive integer or a list of them (e.g. [4, 7]), got {k!r}")
        if v not in out:
            out.append(v)
    if not out:
        raise _input_error("evaluation.k: an empty list measures nothing; give e.g. 4 or [4, 7]")
    return out


def detect_format(path: Path) -> str:
    """The set format of a JSONL file from its first readable row: `turns` → mtbench,
    `conversations`/`text` → heldout, `question`/`prompt` → questions."""
    for row in iter_jsonl(path, errors=[]):
        if isinstance(row.get("turns"), list):
            return "mtbench"
        if "conversations" in row or "text" in row:
            return "heldout"
        if isinstance(row.get("question"), str) or isinstance(row.get("prompt"), str):
            return "questions"
        break
    raise _input_error(
        f"{path}: cannot tell the evaluation set format from its first row; name it (format: {' | '.join(SET_FORMATS)})"
    )


def eval_sets(ev: dict, data_root: Path | str | None = None) -> list[dict]:
    """`evaluation.sets` checked and resolved: [{name, path (Path or None = the mix's test split),
    format, limit}]. Relative paths are relative to `data_root`; no `sets` → one `heldout` set."""
    raw = ev.get("sets")
    if not raw:
        return [{"name": "heldout", "path": None, "format": "heldout", "limit": None}]
    if not isinstance(raw, list):
        raise _input_error(f"evaluation.sets: want a list of {{name, path, format, limit}}, got {type(raw).__name__}")
    out, names = [], set()
    for i, spec in enumerate(raw):
        where = f"evaluation.sets[{i}]"
        if not isinstance(spec, dict):
            raise _input_error(f"{where}: want a mapping {{name, path, format, limit}}, got {spec!r}")
        unknown = sorted(set(spec) - set(SET_KEYS))
        if unknown:
            raise _input_error(f"{where}: unknown key(s) {unknown}; known: {list(SET_KEYS)}")
        name = spec.get("name")
        if not isinstance(name, str) or not name.strip():
            raise _input_error(f"{where}: `name` must be a non-empty string")
        name = name.strip()
        if name in names:
            raise _input_error(f"{where}: duplicate set name {name!r}")
        names.add(name)
        fmt = spec.get("format")
        if fmt is not None and fmt not in SET_FORMATS:
            raise _input_error(f"{where} ({name}): format {fmt!r} is not one of {' | '.join(SET_FORMATS)}")
        path = spec.get("path")
        if path in (None, ""):
            if fmt not in (None, "heldout"):
                raise _input_error(f"{where} ({name}): format {fmt} needs a `path`")
            path, fmt = None, "heldout"
        else:
            path = Path(str(path)).expanduser()
            if not path.is_absolute() and data_root is not None:
                path = Path(data_root) / path
        limit = spec.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise _input_error(f"{where} ({name}): limit must be a positive integer or null, got {limit!r}")
        out.append({"name": name, "path": path, "format": fmt, "limit": limit})
    return out


def _render(tokenizer, msgs: list[dict]) -> list[int]:
    ids = tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def set_prompts(
    spec: dict, path: Path, tokenizer, *, num_prompts: int, max_prompt_tokens: int
) -> tuple[list[dict], dict]:
    """(prompts, counts) of one evaluation set (the first `limit`, else `num_prompts`, usable rows).
    mtbench prompts carry `turns` (every user turn); the first is in `messages`/`input_ids`."""
    fmt, limit = spec["format"], int(spec.get("limit") or num_prompts)
    if fmt == "heldout":
        return heldout_prompts(path, tokenizer, num_prompts=limit, max_prompt_tokens=max_prompt_tokens)
    prompts: list[dict] = []
    counts = {"rows_read": 0, "skipped_no_question": 0, "skipped_too_long": 0, "skipped_unreadable": 0}
    unreadable: list = []
    for idx, row in enumerate(iter_jsonl(path, errors=unreadable)):
        if len(prompts) >= limit:
            break
        counts["rows_read"] += 1
        if fmt == "mtbench":
            turns = row.get("turns")
            turns = [t for t in turns if isinstance(t, str) and t.strip()] if isinstance(turns, list) else []
            category = prompt_category(row)
            pid = row.get("question_id", row.get("id", idx))
        else:
            q = row.get("question", row.get("prompt"))
            turns = [q] if isinstance(q, str) and q.strip() else []
            category = prompt_category({"category": row.get("category"), "source": spec["name"]})
            pid = row.get("id", idx)
        if not turns:
            counts["skipped_no_question"] += 1
            continue
        msgs = [{"role": "user", "content": turns[0]}]
        ids = _render(tokenizer, msgs)
        if len(ids) > max_prompt_tokens:
            counts["skipped_too_long"] += 1
            continue
        p = {"id": pid, "source": spec["name"], "category": category, "messages": msgs, "input_ids": ids}
        if fmt == "mtbench":
            p["turns"] = turns
        prompts.append(p)
    counts["skipped_unreadable"] = len(unreadable)
    return prompts, counts


def _merge_units(results: list[dict]) -> dict:
    """evaluate_acceptance results over consecutive slices of the turn units → one over all units."""
    out = {
        "rounds_per_prompt": [],
        "generated_per_prompt": [],
        "mismatches": [],
        "tokens_generated": 0,
        "lossless": None,
    }
    offset = 0
    for r in results:
        out["rounds_per_prompt"] += r["rounds_per_prompt"]
        out["generated_per_prompt"] += r["generated_per_prompt"]
        out["mismatches"] += [{**m, "prompt": m["prompt"] + offset} for m in r["mismatches"]]
        out["tokens_generated"] += r["tokens_generated"]
        if r["lossless"] is not None:
            out["lossless"] = (out["lossless"] is not False) and bool(r["lossless"])
        offset += len(r["rounds_per_prompt"])
    return out


def _by_prompt(res: dict, units: list[dict], prompts: list[dict], k: int) -> dict:
    """Unit (prompt, turn) results → per-prompt ones: a prompt's rounds are those of all its turns."""
    from .evaluate import _summarise

    rpp: list[list[int]] = [[] for _ in prompts]
    turns: dict[int, list[dict]] = {}
    for u, rounds, gen in zip(units, res["rounds_per_prompt"], res["generated_per_prompt"]):
        rpp[u["prompt"]].extend(rounds)
        if "turns" in prompts[u["prompt"]]:
            turns.setdefault(u["prompt"], []).append(
                {
                    "turn": u["turn"],
                    "prompt_tokens": len(u["input_ids"]),
                    "generated_tokens": len(gen),
                    "rounds": list(rounds),
                    "context": u["context"],
                }
            )
    mismatches = []
    for m in res["mismatches"]:
        u = units[m["prompt"]]
        mismatches.append({**m, "prompt": u["prompt"], **({"turn": u["turn"]} if u["turn"] > 1 else {})})
    out = _summarise(res["rounds_per_prompt"], k)
    out.update(
        {
            "rounds_per_prompt": rpp,
            "turns_per_prompt": turns,
            "lossless": res["lossless"],
            "mismatches": mismatches,
            "num_prompts": len(prompts),
            "num_turns": len(units),
            "tokens_generated": res["tokens_generated"],
        }
    )
    return out


def ask_turns(
    target,
    tokenizer,
    draft,
    prompts: list[dict],
    *,
    k: int,
    max_new_tokens: int,
    max_prompt_tokens: int,
    eos: set[int],
    reference_cache: dict | None = None,
) -> tuple[list[dict], dict, int]:
    """Ask every turn of every prompt, speculatively with `draft` (lossless-checked), each later turn
    after the target's own answer to the one before: [user q1, assistant a1, user q2, ...]. Since
    decoding is lossless, the speculative output IS the target's greedy answer, so it is reused.
    Returns (units [{prompt, turn, context, input_ids}] in ask order, the merged results over the
    units, later turns skipped for exceeding max_prompt_tokens)."""
    from .evaluate import evaluate_acceptance

    units: list[dict] = []
    results: list[dict] = []
    current = [
        {"prompt": i, "turn": 1, "context": list(p["messages"]), "input_ids": list(p["input_ids"])}
        for i, p in enumerate(prompts)
    ]
    skipped = 0
    while current:
        r = evaluate_acceptance(
            target,
            tokenizer,
            draft,
            [u["input_ids"] for u in current],
            k=k,
            max_new_tokens=max_new_tokens,
            check_lossless=True,
            reference_cache=reference_cache,
        )
        units += current
        results.append(r)
        nxt = []
        for u, gen in zip(current, r["generated_per_prompt"]):
            turns = prompts[u["prompt"]].get("turns") or []
            if u["turn"] >= len(turns):
                continue
            answer = tokenizer.decode([t for t in gen if t not in eos], skip_special_tokens=True)
            ctx = u["context"] + [
                {"role": "assistant", "content": answer},
                {"role": "user", "content": turns[u["turn"]]},
            ]
            ids = _render(tokenizer, ctx)
            if len(ids) > max_prompt_tokens:
                skipped += 1
                continue
            nxt.append({"prompt": u["prompt"], "turn": u["turn"] + 1, "context": ctx, "input_ids": ids})
        current = nxt
    return units, _merge_units(results), skipped


def acceptance_by_set_png(report: dict) -> bytes:
    """Grouped bars: acceptance length per (set, k) for the trained, untrained and previous drafts."""
    from ..charts import BLUE, GREY, ORANGE, _fmt, _plt, figure_png

    labels, series = [], {"trained": [], "untrained": [], "previous": []}
    for name, by_k in (report.get("sets") or {}).items():
        for k, e in by_k.items():
            labels.append(f"{name}\nk={k}")
            series["trained"].append(e["acceptance_length"])
            series["untrained"].append(e["untrained_acceptance_length"])
            series["previous"].append(e.get("previous_acceptance_length"))
    if not any(v is not None for v in series["previous"]):
        del series["previous"]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(4.5, 1.4 * len(labels) + 1.5), 3.4))
    width = 0.8 / len(series)
    for j, ((who, vals), color) in enumerate(zip(series.items(), (BLUE, GREY, ORANGE))):
        xs = [i + (j - (len(series) - 1) / 2) * width for i in range(len(labels))]
        bars = ax.bar(xs, [v or 0 for v in vals], width, label=who, color=color)
        ax.bar_label(bars, labels=["" if v is None else _fmt(v) for v in vals], fontsize=7, padding=1)
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("acceptance length")
    ax.set_ylim(0, max([v or 0 for vals in series.values() for v in vals] + [1.0]) * 1.2)
    ax.set_title("acceptance length per evaluation set and k", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig, dpi=110)


def _checkpoint_version(d: Path) -> str | None:
    from .entry import checkpoint_version

    try:
        return checkpoint_version(d)
    except FileNotFoundError:
        return None


class _Measurer:
    """Everything one evaluation process needs: the target (float32, on its device), its
    tokenizer, the trained / previous drafts and the vocab mapping, loaded once."""

    def __init__(
        self,
        *,
        target_path,
        draft_dir,
        previous_dir,
        vocab_mapping_path,
        device: str,
        trust_remote_code: bool,
        threads: int | None = None,
    ):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from .eagle3 import load_draft_checkpoint, load_vocab_mapping_file
        from .errors import load_target_part

        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        if self.device.type == "cuda" and self.device.index is not None:
            torch.cuda.set_device(self.device)
        self.tokenizer = load_target_part(
            AutoTokenizer, target_path, "target tokenizer", trust_remote_code=trust_remote_code
        )
        self.target = (
            load_target_part(
                AutoModelForCausalLM,
                target_path,
                "target model",
                dtype=torch.float32,
                trust_remote_code=trust_remote_code,
            )
            .eval()
            .to(self.device)
        )
        self.vm = load_vocab_mapping_file(vocab_mapping_path)
        e = getattr(self.target.config, "eos_token_id", None)
        if e is None:
            e = getattr(self.tokenizer, "eos_token_id", None)
        self.eos = set(e if isinstance(e, (list, tuple)) else ([e] if e is not None else []))
        self.draft = load_draft_checkpoint(draft_dir, self.target)
        self.previous_error: str | None = None
        self.prev_draft = None
        if previous_dir is not None:
            try:
                self.prev_draft = load_draft_checkpoint(previous_dir, self.target)
            except (ValueError, RuntimeError) as err:  # e.g. a draft for another target/vocab
                self.previous_error = f"{type(err).__name__}: {str(err)[:300]}"

    def measure_set(
        self, prompts: list[dict], ks: list[int], *, max_new_tokens: int, max_prompt_tokens: int, untrained_seed: int
    ) -> dict:
        """Raw results of one set (or a shard of it): the turn units asked, and per k the trained,
        untrained and previous drafts' merged `evaluate_acceptance` results over those units."""
        from .evaluate import evaluate_acceptance

        refs: dict = {}  # the target's greedy output per unit: one computation shared by every k
        units, res0, skipped = ask_turns(
            self.target,
            self.tokenizer,
            self.draft,
            prompts,
            k=ks[0],
            max_new_tokens=max_new_tokens,
            max_prompt_tokens=max_prompt_tokens,
            eos=self.eos,
            reference_cache=refs,
        )

        def run(d, kk, *, seed=0, lossless=False):
            return evaluate_acceptance(
                self.target,
                self.tokenizer,
                d,
                [u["input_ids"] for u in units],
                k=kk,
                max_new_tokens=max_new_tokens,
                vocab_mapping=self.vm,
                seed=seed,
                check_lossless=lossless,
                reference_cache=refs,
            )

        by_k = {}
        for kk in ks:
            trained = res0 if kk == ks[0] else _merge_units([run(self.draft, kk, lossless=True)])
            untrained = _merge_units([run(None, kk, seed=untrained_seed)])
            prev = None
            if self.prev_draft is not None:
                try:
                    prev = _merge_units([run(self.prev_draft, kk)])
                except (ValueError, RuntimeError) as err:
                    self.previous_error = f"{type(err).__name__}: {str(err)[:300]}"
                    self.prev_draft = None
            by_k[kk] = {"trained": trained, "untrained": untrained, "previous": prev}
        return {"units": units, "skipped": skipped, "by_k": by_k, "previous_error": self.previous_error}


def _shard_worker(init: dict, jobs: list[tuple[int, list[dict]]], opts: dict) -> list[dict]:
    """One evaluation process: load once, measure its shard of every set (`jobs` = [(set index,
    prompts)]). Runs under the `spawn` start method (CUDA cannot be forked)."""
    m = _Measurer(**init)
    return [m.measure_set(prompts, **opts) for _, prompts in jobs]


def _concat_shards(shards: list[tuple[int, dict]]) -> dict:
    """Shard results of one set (each with the offset of its first prompt) → one result, units in
    shard order with prompt indices made global; per k the merged raw results."""
    units, by_k, skipped, err = [], {}, 0, None
    for offset, r in shards:
        units += [{**u, "prompt": u["prompt"] + offset} for u in r["units"]]
        skipped += r["skipped"]
        err = err or r["previous_error"]
        for kk, who in r["by_k"].items():
            slot = by_k.setdefault(kk, {"trained": [], "untrained": [], "previous": []})
            for name, res in who.items():
                slot[name].append(res)
    merged = {
        kk: {name: (_merge_units(rs) if rs and all(x is not None for x in rs) else None) for name, rs in slot.items()}
        for kk, slot in by_k.items()
    }
    return {"units": units, "skipped": skipped, "by_k": merged, "previous_error": err}


def _measure_all(loaded: list, ks: list[int], *, init: dict, workers: int, opts: dict, log) -> list[dict]:
    """Every set's raw results, in-process (`workers` = 1) or over `workers` processes, each
    taking a contiguous slice of every set's prompts (on CUDA, worker i uses GPU i mod count)."""
    if workers <= 1:
        m = _Measurer(**init)
        return [m.measure_set(prompts, ks, **opts) for _, _, prompts, _ in loaded]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    import torch

    dev = init["device"]
    gpus = torch.cuda.device_count() if dev.startswith("cuda") and ":" not in dev else 0
    threads = max(1, (os.cpu_count() or 1) // workers)
    plans: list[list[tuple[int, int, list[dict]]]] = [[] for _ in range(workers)]
    for si, (_, _, prompts, _) in enumerate(loaded):
        n = len(prompts)
        for w in range(workers):
            a, b = n * w // workers, n * (w + 1) // workers
            if b > a:
                plans[w].append((si, a, prompts[a:b]))
    log(f"evaluating with {workers} processes on {dev}" + (f" ({gpus} GPUs)" if gpus else ""))
    per_set: list[list[tuple[int, dict]]] = [[] for _ in loaded]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
        futs = []
        for w, plan in enumerate(plans):
            if not plan:
                continue
            wi = {**init, "threads": threads, "device": f"cuda:{w % gpus}" if gpus else dev}
            futs.append((plan, pool.submit(_shard_worker, wi, [(si, p) for si, _, p in plan], {"ks": ks, **opts})))
        for plan, fut in futs:
            for (si, a, _), r in zip(plan, fut.result()):
                per_set[si].append((a, r))
    return [_concat_shards(sorted(shards, key=lambda x: x[0])) for shards in per_set]


def evaluate_drafts(
    *,
    target_path: Path | str,
    draft_dir: Path,
    vocab_mapping_path: Path,
    test_jsonl: Path,
    out_dir: Path,
    previous_dir: Path | None = None,
    k: int | list[int] = _EVAL.k,
    sets: list[dict] | None = None,
    max_new_tokens: int = _EVAL.max_new_tokens,
    num_prompts: int = _EVAL.num_prompts,
    max_prompt_tokens: int = _EVAL.max_prompt_tokens,
    untrained_seed: int = _EVAL.untrained_seed,
    trust_remote_code: bool = False,
    device: str = _EVAL.device,
    workers: int = _EVAL.workers,
    log: Callable[[str], Any] = print,
) -> dict:
    """Evaluate trained / untrained / previous drafts on the same prompts of every evaluation set
    (`sets`, see :func:`eval_sets`; default: the held-out split `test_jsonl`) at every k; write
    `out_dir/report.json` (+ `previous_report.json` = the report this one replaces) and the plots.
    The report's top-level keys are the first set at the first k; `sets` holds them all.

    `device`: "cpu", "cuda", "cuda:N" or "auto" (CUDA when visible; a CUDA device asked for with
    none visible is a TrainInputError); the target runs in float32.
    `workers` > 1 splits every set's prompts into that many contiguous slices, each measured by
    its own process (on CUDA, worker i on GPU i mod the visible count): batch-1 speculative
    decoding is bound by per-forward overhead, so processes multiply throughput while the
    numbers stay those of one process (same prompts, same greedy decoding, merged in order)."""
    from transformers import AutoTokenizer

    from .errors import TrainFileNotFound, TrainInputError, load_target_part

    t0 = time.time()
    ks = eval_ks(k)
    sets = list(sets) if sets else eval_sets({})
    if int(num_prompts) < 1:
        raise TrainInputError(
            f"num_prompts must be >= 1, got {num_prompts}: an evaluation over zero prompts measures nothing"
        )
    set_paths = {}
    for spec in sets:
        path = Path(spec["path"]) if spec.get("path") else Path(test_jsonl)
        what = "held-out prompts file" if not spec.get("path") else f"evaluation set {spec['name']!r} file"
        if not path.exists():
            raise TrainFileNotFound(
                f"{what} not found: {path} (command-line paths are relative to the current "
                "directory; configured ones to the data root)"
            )
        set_paths[spec["name"]] = path
    for what, p in (("draft checkpoint folder", draft_dir), ("vocab mapping", vocab_mapping_path)):
        if not Path(p).exists():
            raise TrainFileNotFound(f"{what} not found: {p} (command-line paths are relative to the current directory)")
    sets = [{**spec, "format": spec.get("format") or detect_format(set_paths[spec["name"]])} for spec in sets]
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise TrainInputError(f"evaluation.workers must be a positive integer, got {workers!r}")
    device = resolve_device(device)
    tokenizer = load_target_part(AutoTokenizer, target_path, "target tokenizer", trust_remote_code=trust_remote_code)
    loaded = []
    for spec in sets:
        path = set_paths[spec["name"]]
        prompts, counts = set_prompts(
            spec, path, tokenizer, num_prompts=num_prompts, max_prompt_tokens=max_prompt_tokens
        )
        if not prompts and spec["format"] == "heldout":
            raise TrainInputError(
                f"no usable held-out prompts in {path} ({counts}): an evaluation over zero prompts "
                "is refused (acceptance would be 0 or NaN); give a test file with conversations that "
                f"have a user turn" + ("" if spec["name"] == "heldout" else f" (evaluation set {spec['name']!r})")
            )
        if not prompts:
            hint = (
                "give a test file with conversations that have a user turn"
                if spec["format"] == "heldout"
                else f"give a {spec['format']} file ({'{question_id, category, turns}' if spec['format'] == 'mtbench' else '{question} or {prompt}'} rows)"
            )
            raise TrainInputError(
                f"no usable prompts in evaluation set {spec['name']!r} ({path}, {counts}): an "
                f"evaluation over zero prompts is refused (acceptance would be 0 or NaN); {hint}"
            )
        loaded.append((spec, path, prompts, counts))
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = None
    cur_version = _checkpoint_version(draft_dir)
    prev_dir = None
    if previous_dir is not None and (previous_dir / "model.safetensors").exists():
        prev_version = _checkpoint_version(previous_dir)
        if prev_version and prev_version != cur_version:
            previous = {"checkpoint_path": str(previous_dir), "checkpoint_version": prev_version}
            prev_dir = previous_dir

    for spec, path, prompts, counts in loaded:
        log(
            f"evaluation set {spec['name']!r} ({spec['format']}): {len(prompts)} prompts from {path} ({counts}), "
            f"k={ks}, max_new_tokens={max_new_tokens}"
        )
    init = {
        "target_path": target_path,
        "draft_dir": draft_dir,
        "previous_dir": prev_dir,
        "vocab_mapping_path": vocab_mapping_path,
        "device": device,
        "trust_remote_code": trust_remote_code,
    }
    measured = _measure_all(
        loaded,
        ks,
        init=init,
        workers=min(workers, max(len(p) for _, _, p, _ in loaded)),
        opts={
            "max_new_tokens": max_new_tokens,
            "max_prompt_tokens": max_prompt_tokens,
            "untrained_seed": untrained_seed,
        },
        log=log,
    )
    prev_error = next((m["previous_error"] for m in measured if m["previous_error"]), None)
    if previous is not None and prev_error:
        previous["error"] = prev_error
        log(f"previous draft not comparable: {prev_error}")

    report_sets: dict[str, dict] = {}
    set_info: list[dict] = []
    first: dict | None = None
    for (spec, path, prompts, counts), m in zip(loaded, measured):
        units, skipped = m["units"], m["skipped"]
        counts = {**counts, **({"later_turns_skipped_too_long": skipped} if "turns" in prompts[0] else {})}
        set_info.append(
            {
                "name": spec["name"],
                "format": spec["format"],
                "path": str(path),
                "limit": spec.get("limit"),
                "sha256": sha256_file(path),
                "num_prompts": len(prompts),
                "num_turns": len(units),
                "prompt_counts": counts,
            }
        )
        by_k: dict[str, dict] = {}
        for kk in ks:
            raw = m["by_k"][kk]
            trained = _by_prompt(raw["trained"], units, prompts, kk)
            untrained = _by_prompt(raw["untrained"], units, prompts, kk)
            prev = (
                _by_prompt(raw["previous"], units, prompts, kk)
                if raw["previous"] is not None and not prev_error
                else None
            )
            entry = {
                "acceptance_length": round(trained["acceptance_length"], 4),
                "untrained_acceptance_length": round(untrained["acceptance_length"], 4),
                **({"previous_acceptance_length": round(prev["acceptance_length"], 4)} if prev else {}),
                "per_position_acceptance": [round(a, 4) for a in trained["per_position_acceptance"]],
                "per_position_acceptance_cumulative": [
                    round(a, 4) for a in trained["per_position_acceptance_cumulative"]
                ],
                "untrained_per_position_acceptance": [round(a, 4) for a in untrained["per_position_acceptance"]],
                **(
                    {"previous_per_position_acceptance": [round(a, 4) for a in prev["per_position_acceptance"]]}
                    if prev
                    else {}
                ),
                "per_category": per_category(prompts, trained, untrained, kk, prev),
                "num_prompts": len(prompts),
                "num_turns": len(units),
                "num_rounds": trained["num_rounds"],
                "generated_tokens": trained["tokens_generated"],
                "lossless": bool(trained["lossless"]),
                "mismatches": trained["mismatches"],
                "per_prompt": per_prompt(prompts, trained, untrained),
            }
            by_k[str(kk)] = entry
            log(
                f"  {spec['name']} k={kk}: trained {entry['acceptance_length']:.3f}, untrained "
                f"{entry['untrained_acceptance_length']:.3f}"
                + (f", previous {entry['previous_acceptance_length']:.3f}" if prev else "")
                + f", lossless={entry['lossless']}"
            )
            if first is None:
                first = {"entry": entry, "counts": counts, "prompts": prompts, "k": kk}
        report_sets[spec["name"]] = by_k

    f0 = first["entry"]
    if previous is not None and "error" not in previous and "previous_acceptance_length" in f0:
        previous.update(
            {
                "acceptance_length": f0["previous_acceptance_length"],
                "per_position_acceptance": f0["previous_per_position_acceptance"],
            }
        )
    elif previous is not None and "error" not in previous:
        previous = None
    lossless = all(e["lossless"] for by_k in report_sets.values() for e in by_k.values())
    mismatches = [
        {**m, **({"set": name, "k": int(kk)} if (name, int(kk)) != (sets[0]["name"], ks[0]) else {})}
        for name, by_k in report_sets.items()
        for kk, e in by_k.items()
        for m in e["mismatches"]
    ]
    report = {
        "report_version": REPORT_VERSION,
        "acceptance_length": f0["acceptance_length"],
        "untrained_acceptance_length": f0["untrained_acceptance_length"],
        "per_position_acceptance": f0["per_position_acceptance"],
        "per_position_acceptance_cumulative": f0["per_position_acceptance_cumulative"],
        "untrained_per_position_acceptance": f0["untrained_per_position_acceptance"],
        "k": first["k"],
        "ks": ks,
        "lossless": lossless,
        "mismatches": mismatches,
        "num_prompts": f0["num_prompts"],
        "num_rounds": f0["num_rounds"],
        "generated_tokens": f0["generated_tokens"],
        "max_new_tokens": max_new_tokens,
        "prompt_counts": first["counts"],
        "prompt_ids": [p["id"] for p in first["prompts"]],
        "per_category": f0["per_category"],
        "per_prompt": f0["per_prompt"],
        "sets": report_sets,
        "eval_sets": set_info,
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
    from ..charts import acceptance_per_position_png

    with atomic_write(out_dir / "per_position_acceptance.png", "wb") as f:
        f.write(acceptance_per_position_png(report))
    with atomic_write(out_dir / "acceptance_by_set.png", "wb") as f:
        f.write(acceptance_by_set_png(report))
    with atomic_write(report_path) as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    log(f"report written to {report_path} in {report['seconds']:.0f}s")
    return report


def evaluate_from_settings(
    ev: dict,
    *,
    root: Path | str,
    target_path: Path | str,
    trust_remote_code: bool,
    draft_dir: Path,
    vocab_mapping_path: Path,
    test_jsonl: Path,
    out_dir: Path,
    previous_dir: Path | None = None,
    sets: list[dict] | None = None,
    k: int | list[int] | None = None,
    max_new_tokens: int | None = None,
    num_prompts: int | None = None,
    device: str | None = None,
    workers: int | None = None,
    log: Callable[[str], Any] = print,
) -> dict:
    """`evaluate_drafts` with configs/train.yaml `evaluation:` (`ev`: the validated section,
    `train.settings.train_settings(...)["evaluation"]`) — the one mapping of those settings, used
    by the models/draft_evaluation asset and `specforge-assets evaluate`.

    `trust_remote_code`: configs/target.yaml's (required: the target's tokenizer may need it).
    `previous_dir` None: `<root>/models/draft_model_previous` (`launch.previous_draft_dir`) when
    `evaluation.evaluate_previous` is set and that folder exists, else no previous draft; a folder
    given is evaluated as given. `sets` None: `evaluation.sets` (paths relative to `root`,
    `eval_sets`). `k`, `max_new_tokens`, `num_prompts`, `device`, `workers`: None (or an empty
    `k`) take the setting. Returns the report (see `evaluate_drafts`, which also gives the errors:
    TrainFileNotFound for a missing input, TrainInputError for a bad value)."""
    from .launch import previous_draft_dir

    if previous_dir is None and ev["evaluate_previous"]:
        default = previous_draft_dir(root)
        previous_dir = default if default.exists() else None
    return evaluate_drafts(
        target_path=target_path,
        draft_dir=draft_dir,
        previous_dir=previous_dir,
        vocab_mapping_path=vocab_mapping_path,
        test_jsonl=test_jsonl,
        out_dir=out_dir,
        k=k if k else ev["k"],
        sets=sets if sets is not None else eval_sets(ev, root),
        max_new_tokens=max_new_tokens if max_new_tokens is not None else ev["max_new_tokens"],
        num_prompts=num_prompts if num_prompts is not None else ev["num_prompts"],
        max_prompt_tokens=ev["max_prompt_tokens"],
        untrained_seed=ev["untrained_seed"],
        trust_remote_code=trust_remote_code,
        device=device or ev["device"],
        workers=workers if workers is not None else ev["workers"],
        log=log,
    )
