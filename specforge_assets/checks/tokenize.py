"""DuckDB checks over the tokenized shards (in-memory database, no Dagster import; on an
object-store data root they read the committed objects, see `_duck`).

Each function returns an `Outcome`."""

from __future__ import annotations

import io
from pathlib import Path

from ._duck import Reader
from .outcome import Outcome


def _shards(reader: Reader, ds: Path) -> str:
    """The dataset's shards for `read_parquet`: on an object-store root, the committed objects."""
    return reader.sql_list(sorted(Path(ds).glob("part-*.parquet")))


def _has_shards(ds: Path) -> bool:
    return any(Path(ds).glob("part-*.parquet"))


def zero_supervised(ds: Path, max_rate: float, template: str) -> Outcome:
    """The share of shard rows with no supervised token is at most `max_rate` (a fraction);
    every row without one fails naming chat template `template`. No shards: fails."""
    if not _has_shards(ds):
        return Outcome(False, "no shards: the tokenized dataset is empty", {"rows": 0})
    r = Reader()
    rows, zero = r.con.execute(
        f"SELECT count(*), count(*) FILTER (WHERE supervised_tokens = 0) FROM read_parquet({_shards(r, ds)})"
    ).fetchone()
    rate = zero / rows if rows else 1.0
    md = {"rows": rows, "zero_supervised_rows": zero, "rate": rate, "max_rate": max_rate, "template": template}
    if rows and zero == rows:
        return Outcome(
            False,
            (
                f"every row has an all-zero loss mask: the assistant markers of chat template {template!r} "
                "never match the rendered text (wrong template for this tokenizer?)"
            ),
            md,
        )
    ok = rate <= max_rate
    return Outcome(ok, f"{zero} of {rows} rows have no supervised token ({rate:.2%}, allowed {max_rate:.2%})", md)


def supervised_fraction(ds: Path, lo: float, hi: float) -> Outcome:
    """Supervised tokens / tokens over all shards lies in [`lo`, `hi`] (fractions)."""
    if not _has_shards(ds):
        return Outcome(False, "no shards", {})
    r = Reader()
    tok, sup = r.con.execute(
        f"SELECT sum(length), sum(supervised_tokens) FROM read_parquet({_shards(r, ds)})"
    ).fetchone()
    frac = (sup or 0) / tok if tok else 0.0
    ok = lo <= frac <= hi
    return Outcome(
        ok,
        f"supervised fraction {frac:.3f} (bounds {lo}–{hi})",
        {"tokens": tok, "supervised_tokens": sup, "fraction": frac},
    )


def ids_unique_and_complete(ds: Path, mix_train: Path) -> Outcome:
    """Shard ids unique, and every row of the mix's `mix_train` either in the shards or
    quarantined in the dataset's errors.jsonl (a WARN then), no shard id from elsewhere. Mix
    rows that do not decode count with no id; errors.jsonl rows that do not decode quarantine
    nothing (counted in `unreadable_error_rows`, shown only when there are some)."""
    if not _has_shards(ds):
        return Outcome(False, "no shards", {}, "ERROR")
    r = Reader()
    con = r.con
    con.execute(f"CREATE TABLE t AS SELECT id FROM read_parquet({_shards(r, ds)})")
    n, nd = con.execute("SELECT count(*), count(DISTINCT id) FROM t").fetchone()
    con.execute("CREATE TABLE m (id VARCHAR)")
    ids: list[tuple[str | None]] = []
    bad_mix_rows: list = []
    for row in r.rows(mix_train, bad_mix_rows):
        ids.append((str(row.get("id")),))
        if len(ids) >= 50000:
            con.executemany("INSERT INTO m VALUES (?)", ids)
            ids = []
    ids += [(None,)] * len(bad_mix_rows)
    if ids:
        con.executemany("INSERT INTO m VALUES (?)", ids)
    errs_path = Path(ds) / "errors.jsonl"
    con.execute("CREATE TABLE e (id VARCHAR)")
    bad_error_rows: list = []
    if errs_path.exists():
        err_ids = [(str(row.get("id")),) for row in r.rows(errs_path, bad_error_rows)]
        if err_ids:
            con.executemany("INSERT INTO e VALUES (?)", err_ids)
    missing = con.execute("SELECT id FROM m WHERE id NOT IN (SELECT id FROM t) ORDER BY id").fetchall()
    unaccounted = con.execute(
        "SELECT id FROM m WHERE id NOT IN (SELECT id FROM t) AND id NOT IN (SELECT id FROM e) ORDER BY id LIMIT 20"
    ).fetchall()
    extra = con.execute("SELECT count(*) FROM t WHERE id NOT IN (SELECT id FROM m)").fetchone()[0]
    md = {
        "rows": n,
        "distinct_ids": nd,
        "mix_rows": con.execute("SELECT count(*) FROM m").fetchone()[0],
        "missing_from_shards": len(missing),
        "quarantined": con.execute("SELECT count(*) FROM e").fetchone()[0],
        "not_in_mix": extra,
        "examples_missing": [m[0] for m in missing[:10]],
    }
    if bad_error_rows:
        md["unreadable_error_rows"] = len(bad_error_rows)
    if n != nd:
        return Outcome(False, f"{n - nd} duplicate ids in the shards", md, "ERROR")
    if unaccounted or extra:
        return Outcome(
            False,
            f"{len(unaccounted)} mix ids neither tokenized nor quarantined; {extra} ids not from the mix",
            md,
            "ERROR",
        )
    if missing:
        return Outcome(False, f"{len(missing)} mix rows could not be tokenized (see errors.jsonl)", md, "WARN")
    return Outcome(True, f"{n} ids, unique, all {md['mix_rows']} mix rows present", md, "ERROR")


def lengths_within(ds: Path, max_length: int) -> Outcome:
    """Every shard row is at most `max_length` tokens, with input_ids and loss_mask as long."""
    if not _has_shards(ds):
        return Outcome(False, "no shards", {})
    r = Reader()
    mx, bad = r.con.execute(
        f"SELECT max(length), count(*) FILTER (WHERE length > {int(max_length)} OR len(input_ids) != length "
        f"OR len(loss_mask) != length) FROM read_parquet({_shards(r, ds)})"
    ).fetchone()
    ok = bad == 0
    return Outcome(
        ok,
        f"longest row {mx} tokens (max_length {max_length}); {bad} rows too long or inconsistent",
        {"max_row_length": mx, "bad_rows": bad, "max_length": max_length},
    )


def vocab_mapping_valid(path: Path, draft: int, target: int) -> Outcome:
    """The torch file `path` (read through `Reader.open`: on an object-store root, the committed
    object) holds d2t (int64, `draft` entries) and t2d (bool, `target` entries) that agree: d2t
    maps, ascending, exactly the ids t2d marks."""
    import torch

    with Reader().open(path) as f:  # a few MB: read whole, torch.load seeks
        data = io.BytesIO(f.read())
    m = torch.load(data, map_location="cpu", weights_only=True)
    d2t, t2d = m["d2t"], m["t2d"]
    used = d2t + torch.arange(len(d2t))
    problems = []
    if d2t.dtype != torch.int64 or t2d.dtype != torch.bool:
        problems.append(f"dtypes {d2t.dtype}/{t2d.dtype}, expected int64/bool")
    if len(d2t) != draft:
        problems.append(f"d2t has {len(d2t)} entries, expected {draft}")
    if len(t2d) != target:
        problems.append(f"t2d has {len(t2d)} entries, expected {target}")
    if int(t2d.sum()) != len(d2t):
        problems.append("t2d marks a different number of ids than d2t maps")
    elif not bool((used[1:] > used[:-1]).all()) or not bool(t2d[used].all()):
        problems.append("d2t does not map to the ids t2d marks, in ascending order")
    return Outcome(not problems, "; ".join(problems) or "d2t/t2d consistent", {"draft": len(d2t), "target": len(t2d)})


def vocab_mapping_folder_valid(vocab_dir: Path) -> Outcome:
    """`vocab_mapping_valid` on `<vocab_dir>/vocab_mapping.pt` with the sizes its manifest.json
    records (read through `Reader.manifest`; -1 when absent, which fails the size check)."""
    man = Reader().manifest(vocab_dir) or {}
    return vocab_mapping_valid(
        Path(vocab_dir) / "vocab_mapping.pt",
        int(man.get("draft_vocab_size", -1)),
        int(man.get("target_vocab_size", -1)),
    )


def matches_target_chat_template(
    ds: Path, mix_train: Path, target_path, template_name: str, trust_remote_code: bool, max_length: int
) -> Outcome:
    """A sample of 32 rows re-rendered with the target tokenizer's own apply_chat_template
    (`tokenize.agreement.template_agreement`). A mismatch is an ERROR for `auto` (the template
    is derived from that tokenizer: they must agree) and a WARN for a registry template
    (SpecForge's entries carry their own default system prompt, e.g. `qwen`'s "You are a
    helpful assistant.", which a model with another default never sees at inference: use
    `chat_template: auto` to train on the model's own rendering). The outcome's metadata is the
    comparison's result; `ds`/train.jsonl and `mix_train` are read as `Reader.open` reads them.
    `template_name`: the template `ds` was tokenized with (its manifest's `template`, which
    `tokenize.build.resolve` chose), never a config file's value read again here."""
    from ..tokenize.agreement import template_agreement
    from ..tokenize.dataset import load_tokenizer

    r = Reader()  # on an object-store root: the committed objects
    unreadable: list = []  # rows that break the row rule: not compared, counted below
    res = template_agreement(
        r.rows(Path(ds) / "train.jsonl", unreadable),
        r.rows(Path(mix_train), unreadable),
        load_tokenizer(target_path, trust_remote_code),
        sample=32,
        max_length=max_length,
    )
    if unreadable:
        res["unreadable_rows"] = len(unreadable)
    first = res.get("first_mismatch") or {}
    if res["passed"]:
        desc = f"{res['agreed']} of {res['checked']} sampled rows equal the target tokenizer's own rendering"
    else:
        desc = (
            f"template {template_name!r} differs from the target tokenizer's own chat template: "
            f"{first.get('message', '')}" + ("" if template_name == "auto" else " — use chat_template: auto")
        )
    return Outcome(res["passed"], desc, res, "ERROR" if template_name == "auto" else "WARN")
