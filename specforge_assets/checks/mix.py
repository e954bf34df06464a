"""Checks on the training mix (DuckDB counts over the JSONL files; no Dagster import). On an
object-store data root they read the committed objects (`_duck.Reader`).

Each function returns an `Outcome`."""

from __future__ import annotations

from pathlib import Path

from ..mix.mix import content_hash, row_text
from ._duck import Reader
from .outcome import Outcome


def _counts(mix_dir: Path) -> dict[str, int]:
    files = [Path(mix_dir) / n for n in ("train.jsonl", "test.jsonl") if (Path(mix_dir) / n).stat().st_size]
    if not files:
        return {}
    r = Reader()  # on an object-store root: the committed objects
    rows = r.con.execute(
        "SELECT source, count(*) FROM read_json(?, format='newline_delimited', columns={'source': 'VARCHAR'}) "
        "GROUP BY source ORDER BY source",
        [[r.ref(f) for f in files]],
    ).fetchall()
    return {k: n for k, n in rows}


def weights_honoured(mix_dir: Path, report: dict, tolerance: float) -> Outcome:
    """Realized shares per source of train+test against the report's target shares (within
    `tolerance`, a fraction); without weights, every kept row of every source must be there."""
    counts = _counts(mix_dir)
    total = sum(counts.values())
    shares = report.get("shares") or {}
    md = {"rows_by_source": counts, "tolerance": tolerance}
    if not shares:  # no weights: every deduplicated row (under the caps) must be in the mix
        exp = {k: v["target_rows"] for k, v in report["per_source"].items()}
        bad = {k: (counts.get(k, 0), exp[k]) for k in exp if counts.get(k, 0) != exp[k]}
        return Outcome(
            not bad,
            (
                f"sources with unexpected row counts (got, expected): {bad}"
                if bad
                else "no weights: every kept row of every source is in the mix"
            ),
            md,
        )
    worst = {}
    for k, s in shares.items():
        realized = counts.get(k, 0) / total if total else 0.0
        allowed = max(tolerance, 1.0 / total if total else 1.0)
        # a source smaller than its share cannot reach it without upsampling: honoured if all its rows are used
        short = counts.get(k, 0) >= report["per_source"][k]["rows_after_dedup"]
        if abs(realized - s["target"]) > allowed and not (short and realized < s["target"]):
            worst[k] = {"target": round(s["target"], 4), "realized": round(realized, 4)}
    md["off"] = worst
    return Outcome(
        not worst,
        (f"shares off by more than {tolerance}: {worst}" if worst else "realized shares match the weights"),
        md,
    )


def no_duplicate_content(mix_dir: Path) -> Outcome:
    """No two rows of train.jsonl + test.jsonl share normalized content (`mix.content_hash`) or
    id; rows that do not decode are left to `counts_reconcile`."""
    r = Reader()  # on an object-store root: the committed objects
    con = r.con
    con.execute("CREATE TABLE h (id VARCHAR, source VARCHAR, h VARCHAR)")
    batch = []
    undecodable: list = []  # counted by counts_reconcile / the mix's own reader
    for name in ("train.jsonl", "test.jsonl"):
        for row in r.rows(Path(mix_dir) / name, undecodable):
            batch.append((str(row.get("id")), row.get("source"), content_hash(row_text(row))))
    if batch:
        con.executemany("INSERT INTO h VALUES (?, ?, ?)", batch)
    dups = con.execute(
        "SELECT h, count(*), list(id ORDER BY id) FROM h GROUP BY h HAVING count(*) > 1 LIMIT 10"
    ).fetchall()
    ids = con.execute("SELECT count(*) - count(DISTINCT id) FROM h").fetchone()[0]
    md = {"rows": len(batch), "duplicate_groups": len(dups), "duplicate_ids": ids, "examples": [d[2][:5] for d in dups]}
    ok = not dups and ids == 0
    return Outcome(
        ok,
        ("no duplicate content or ids" if ok else f"{len(dups)} groups of duplicate content, {ids} duplicate ids"),
        md,
    )


def counts_reconcile(mix_dir: Path, report: dict) -> Outcome:
    """The rows of every input file the report names = train + test + quarantine rows of
    `mix_dir` (non-blank lines, so an invalid UTF-8 or malformed row is still one row)."""
    r = Reader()  # on an object-store root: the committed objects
    rows_in = sum(r.count_rows(inp["path"]) for inp in report["inputs"].values())
    n = {name: r.count_rows(Path(mix_dir) / name) for name in ("train.jsonl", "test.jsonl", "quarantine.jsonl")}
    ok = rows_in == n["train.jsonl"] + n["test.jsonl"] + n["quarantine.jsonl"]
    return Outcome(
        ok,
        f"rows in {rows_in} = train {n['train.jsonl']} + test {n['test.jsonl']} + quarantined {n['quarantine.jsonl']}"
        + ("" if ok else " (MISMATCH)"),
        {"rows_in": rows_in, **n},
    )
