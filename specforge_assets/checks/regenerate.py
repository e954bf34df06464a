"""DuckDB checks over regenerated/<key>/: accounting, truncation, empty answers, think markers.

Plain functions (path in, `Outcome` out) so tests and notebooks can call them; the asset module
declares them as Dagster asset checks.
"""

from __future__ import annotations

from pathlib import Path

from ._duck import Reader
from .outcome import Outcome

OUT_FILES = ("train.jsonl", "errors.jsonl", "skipped.jsonl")


def reconcile(input_path: Path, out_dir: Path) -> Outcome:
    """success + error + skipped (+ passthrough) = input, and every input id exactly once across
    them. Metadata: rows per file, `id_mismatches` (+ up to 10 examples); `missing_files` when a
    file is absent. No description (the check's declared one says what it checks)."""
    outs = [Path(out_dir) / f for f in OUT_FILES]
    missing = [str(p) for p in outs + [Path(input_path)] if not p.exists()]
    if missing:
        return Outcome(False, None, {"missing_files": ", ".join(missing)})
    r = Reader()  # on an object-store root: the committed objects
    con = r.con
    src_in = r.sql_list([input_path])
    per = {
        f: con.execute(f"select count(*) from read_ndjson_objects({r.sql_list([p])})").fetchone()[0]
        for f, p in zip(OUT_FILES, outs)
    }
    n_in = con.execute(f"select count(*) from read_ndjson_objects({src_in})").fetchone()[0]
    idq = (
        "select coalesce(json_extract_string(json, '$.id'), json_extract_string(json, '$.data.id'), '<no id>') id, "
        "count(*) n from read_ndjson_objects({src}) group by 1"
    )
    mismatched = con.execute(
        f"with i as ({idq.format(src=src_in)}), o as ({idq.format(src=r.sql_list(outs))}) "
        "select coalesce(i.id, o.id), coalesce(i.n, 0), coalesce(o.n, 0) from i full outer join o on i.id = o.id "
        "where coalesce(i.n, 0) <> coalesce(o.n, 0) limit 20"
    ).fetchall()
    passed = n_in == sum(per.values()) and not mismatched
    meta = {"input_rows": n_in, **{f"{f}_rows": n for f, n in per.items()}, "id_mismatches": len(mismatched)}
    if mismatched:
        meta["id_mismatch_examples"] = ", ".join(f"{i}: in {a} / out {b}" for i, a, b in mismatched[:10])
    return Outcome(passed, None, meta)


QUALITY_CHECKS = ("truncation_rate", "no_empty_answers", "no_think_markers")


def quality(out_dir: Path, truncation_threshold: float, reasoning: str) -> dict[str, Outcome]:
    """One DuckDB scan of train.jsonl for three checks, by name (`QUALITY_CHECKS`):
    `truncation_rate`: the share of regenerated turns with finish_reason == length is at most
    `truncation_threshold` (a fraction); `no_empty_answers`; `no_think_markers`: no <think> or
    </think> left in answers unless `reasoning` is "save". Only rows regenerated in this layer are
    looked at. Each outcome has no description; all fail with `missing_files` when train.jsonl is
    absent."""
    train = Path(out_dir) / "train.jsonl"
    if not train.exists():
        return {name: Outcome(False, None, {"missing_files": str(train)}) for name in QUALITY_CHECKS}
    r = Reader()
    con = r.con
    src = f"read_ndjson_objects({r.sql_list([train])})"
    regen = f"(select json from {src} where json_extract_string(json, '$.status') = 'success')"
    turns, truncated = con.execute(
        f"select count(*), count(*) filter (where fr = 'length') from "
        f"(select unnest(json_extract_string(json, '$.regeneration.turns[*].finish_reason')) fr from {regen})"
    ).fetchone()
    answers = (
        f"(select unnest(json_extract_string(json, '$.conversations[*].role')) r, "
        f"unnest(json_extract_string(json, '$.conversations[*].content')) c from {regen})"
    )
    empty, marked = con.execute(
        f"select count(*) filter (where r = 'assistant' and trim(coalesce(c, '')) = ''), "
        f"count(*) filter (where r = 'assistant' and regexp_matches(lower(coalesce(c, '')), '</?think>')) "
        f"from {answers}"
    ).fetchone()
    rate = truncated / turns if turns else 0.0
    return {
        "truncation_rate": Outcome(
            rate <= truncation_threshold,
            None,
            {
                "regenerated_turns": turns,
                "truncated_turns": truncated,
                "truncation_rate": round(rate, 4),
                "truncation_threshold": truncation_threshold,
            },
        ),
        "no_empty_answers": Outcome(empty == 0, None, {"empty_answers": empty}),
        "no_think_markers": Outcome(
            reasoning == "save" or marked == 0,
            None,
            {"answers_with_think_markers": marked, "reasoning": reasoning},
        ),
    }
