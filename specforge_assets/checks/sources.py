"""DuckDB quality checks of one `sources/conversations` partition (no Dagster import).

SQL run by an in-memory DuckDB over the partition's own files (train.jsonl, test.jsonl,
quarantine.jsonl, manifest.json): no shared `.duckdb` file, so concurrent partition runs never
contend for a lock. `sources.sql` builds one row-level table in a single scan; each check
aggregates it into an `Outcome`; the asset turns the outcomes into Dagster check results.
"""

from __future__ import annotations

from pathlib import Path

from ..sources.config import entry_default
from ._duck import Reader
from .outcome import Outcome

SQL_FILE = Path(__file__).with_name("sources.sql")  # fast structured scan
SQL_GENERIC_FILE = Path(__file__).with_name("sources_generic.sql")  # per-row JSON typing fallback
SAMPLE_IDS = 5
# The characters Python's str.strip() removes: whitespace-only content counts as empty, the same
# rule as the validator in specforge_assets.sources.formats.
# (The 29 characters of `chr(c).isspace()` over all code points, written out: computing them at
# import scanned 1.1 M code points, ~0.3 s on every code load and run start.
# tests/sources/test_checks_whitespace.py keeps the list equal to Python's.)
_WS = (
    "\x09\x0a\x0b\x0c\x0d\x1c\x1d\x1e\x1f\x20\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
    "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)
WS_LITERAL = "'" + _WS + "'"
# The JSON text of a string made only of those characters, raw or escaped (\n, \u00a0, ...).
_WS_ESCAPES = "|".join(
    ["\\\\[nrtf]"]
    + [f"\\\\u{ord(c):04x}" for c in _WS]
    + [f"\\\\u{ord(c):04X}" for c in _WS if f"{ord(c):04x}" != f"{ord(c):04X}"]
)
WS_JSON_REGEX = "'^\"(?:[" + "".join(f"\\x{{{ord(c):X}}}" for c in _WS) + "]|" + _WS_ESCAPES + ")*\"$'"


def _connect(threads: int | None = None) -> Reader:
    """A DuckDB reader (on an object-store root it reads the committed objects, see `_duck`)
    with the macro the checks' SQL uses."""
    reader = Reader(threads)
    reader.con.execute("SET preserve_insertion_order = false")
    reader.con.execute(
        "CREATE MACRO lead_sys(r) AS coalesce(list_position(list_transform(r, lambda x: x <> 'system'), true), len(r) + 1) - 1"
    )
    return reader


def _ids(con, sql: str) -> list:
    return [r[0] for r in con.execute(sql + f" LIMIT {SAMPLE_IDS}").fetchall()]


def run_source_checks(
    out_dir: Path | str,
    *,
    quarantine_threshold: float | None = None,
    quarantine_min_rows: int = entry_default("quarantine_min_rows"),
    max_duplicate_rate: float = entry_default("max_duplicate_rate"),
    threads: int | None = None,
) -> dict[str, Outcome]:
    """Run every check over `out_dir` (a `<root>/sources/<key>/` folder) → {check name:
    outcome}, for the checks `assets/sources.py` declares, in its order. Each outcome's
    description is None (the check's declared one is shown); its metadata: `rows_checked`,
    `scan` ("structured", "generic" or "empty"), the check's counts and up to 5 `offending_ids`.
    Raises duckdb errors on unreadable files, storage.StorageError when an object-store root
    cannot be read."""
    out_dir = Path(out_dir)
    reader = _connect(threads)
    manifest = reader.manifest(out_dir) or {}
    if quarantine_threshold is None:  # the one the partition was built with (its manifest's spec)
        spec = manifest.get("spec") or {}
        quarantine_threshold = float(spec.get("quarantine_threshold", entry_default("quarantine_threshold")))
    data_files = [p for p in (out_dir / "train.jsonl", out_dir / "test.jsonl") if p.exists() and p.stat().st_size > 0]

    con = reader.con
    try:
        scan = "empty"
        if data_files:
            import duckdb

            files = reader.sql_list(data_files)
            try:
                con.execute(
                    SQL_FILE.read_text(encoding="utf-8")
                    .replace("{files}", files)
                    .replace("{ws_json_regex}", WS_JSON_REGEX)
                    .replace("{ws}", WS_LITERAL)
                )
                scan = "structured"
            except (duckdb.InvalidInputException, duckdb.ConversionException):
                con.execute(
                    SQL_GENERIC_FILE.read_text(encoding="utf-8")
                    .replace("{files}", files)
                    .replace("{ws_json_regex}", WS_JSON_REGEX)
                    .replace("{ws}", WS_LITERAL)
                )
                scan = "generic"
        else:
            con.execute(
                "CREATE TEMP TABLE src (file VARCHAR, id VARCHAR, kind VARCHAR, schema_ok BOOLEAN, "
                "empty_content BOOLEAN, order_ok BOOLEAN, content_hash VARCHAR)"
            )
        n_rows = con.execute("SELECT count(*) FROM src").fetchone()[0]
        out: dict[str, Outcome] = {}

        def add(name: str, passed: bool, **meta):
            out[name] = Outcome(bool(passed), None, {"rows_checked": n_rows, "scan": scan, **meta})

        bad = con.execute("SELECT count(*) FROM src WHERE NOT schema_ok").fetchone()[0]
        kinds = dict(con.execute("SELECT kind, count(*) FROM src GROUP BY kind").fetchall())
        add(
            "schema_valid",
            bad == 0 and len(kinds) <= 1,
            invalid_rows=bad,
            kinds=kinds,
            offending_ids=_ids(con, "SELECT coalesce(id, '<no id>') FROM src WHERE NOT schema_ok"),
        )

        bad = con.execute("SELECT count(*) FROM src WHERE empty_content").fetchone()[0]
        add(
            "no_empty_content",
            bad == 0,
            rows_with_empty_content=bad,
            offending_ids=_ids(con, "SELECT coalesce(id, '<no id>') FROM src WHERE empty_content"),
        )

        bad = con.execute("SELECT count(*) FROM src WHERE NOT order_ok").fetchone()[0]
        add(
            "valid_role_order",
            bad == 0,
            rows_with_bad_order=bad,
            offending_ids=_ids(con, "SELECT coalesce(id, '<no id>') FROM src WHERE NOT order_ok"),
        )

        dup_ids, dup_rows = con.execute(
            "SELECT count(*), coalesce(sum(n), 0) FROM (SELECT id, count(*) AS n FROM src GROUP BY id HAVING count(*) > 1)"
        ).fetchone()
        add(
            "unique_ids",
            dup_ids == 0,
            duplicated_ids=dup_ids,
            rows_sharing_an_id=int(dup_rows),
            offending_ids=_ids(con, "SELECT id FROM src GROUP BY id HAVING count(*) > 1 ORDER BY id"),
        )

        extra = con.execute(
            "SELECT coalesce(sum(n - 1), 0), count(*) FROM (SELECT content_hash, count(*) AS n FROM src GROUP BY content_hash HAVING count(*) > 1)"
        ).fetchone()
        dup_extra, dup_groups = int(extra[0]), extra[1]
        rate = dup_extra / n_rows if n_rows else 0.0
        add(
            "no_duplicate_conversations",
            rate <= max_duplicate_rate,
            duplicate_rows=dup_extra,
            duplicate_groups=dup_groups,
            duplicate_rate=round(rate, 6),
            max_duplicate_rate=max_duplicate_rate,
            offending_ids=_ids(
                con,
                "SELECT id FROM src WHERE content_hash IN (SELECT content_hash FROM src GROUP BY content_hash HAVING count(*) > 1) ORDER BY content_hash, id",
            ),
        )

        q_path = out_dir / "quarantine.jsonl"
        quarantined = reader.count_rows(q_path) if q_path.exists() else 0
        rows_in = manifest.get("rows_in")
        q_rate = quarantined / rows_in if rows_in else (1.0 if quarantined else 0.0)
        q_ids = []
        if quarantined:
            q_ids = [
                r[0]
                for r in con.execute(
                    f"SELECT coalesce(json_extract_string(json, '$.raw.id'), json_extract_string(json, '$.file') || ' row ' || json_extract_string(json, '$.row')) "
                    f"FROM read_ndjson_objects({reader.sql_list([q_path])}) LIMIT {SAMPLE_IDS}"
                ).fetchall()
            ]
        add(
            "quarantine_rate",
            rows_in is not None and (q_rate <= quarantine_threshold or quarantined < quarantine_min_rows),
            quarantined=quarantined,
            rows_in=rows_in if rows_in is not None else -1,
            quarantine_rate=round(q_rate, 6),
            threshold=quarantine_threshold,
            min_rows=quarantine_min_rows,
            offending_ids=q_ids,
        )

        per_file = dict(con.execute("SELECT file, count(*) FROM src GROUP BY file").fetchall())
        train = sum(v for k, v in per_file.items() if k.endswith("train.jsonl"))
        test = sum(v for k, v in per_file.items() if k.endswith("test.jsonl"))
        reconciled = rows_in is not None and rows_in == train + test + quarantined
        matches_manifest = (manifest.get("rows_train"), manifest.get("rows_test"), manifest.get("quarantined")) == (
            train,
            test,
            quarantined,
        )
        add(
            "rows_reconcile",
            reconciled and matches_manifest,
            rows_in=rows_in if rows_in is not None else -1,
            train=train,
            test=test,
            quarantined=quarantined,
            matches_manifest=matches_manifest,
        )
        return out
    finally:
        con.close()
