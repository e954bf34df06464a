"""Journal lines: index and status read without parsing the row; rows copied out byte for byte."""
from __future__ import annotations

import json

import pytest

from specforge_assets.regenerate.journal import Journal, _head, record, row_json

ROWS = [
    {"id": "plain", "conversations": [{"role": "user", "content": "hi"}]},
    {"id": 'tricky ", "row": {', "conversations": [{"role": "user", "content": '"row": "s": ü 漢字 \\n'}]},
    {"id": None, "conversations": [], "extra": {"row": 1, "s": "x"}},
]


@pytest.mark.parametrize("row_id", ["plain", 'tricky ", "row": {', None, 17, 'a"s": "b'])
@pytest.mark.parametrize("row", ROWS)
@pytest.mark.parametrize("status", ["success", "error", "skipped", "passthrough"])
def test_record_round_trip(row_id, row, status):
    line = record(42, row_id, status, row).encode()
    assert json.loads(line) == {"i": 42, "s": status, "id": row_id, "row": row}
    assert _head(line) == (42, status)
    assert row_json(line) == json.dumps(row)


def test_other_key_layout_still_loads_and_copies(tmp_path):
    j = Journal(tmp_path / "out.jsonl")
    old = [json.dumps({"i": n, "id": f"r{n}", "s": "success", "row": ROWS[n]}) + "\n" for n in range(3)]
    j.path.parent.mkdir(parents=True, exist_ok=True)
    j.path.write_text("".join(old) + '{"i": 3, "s": "succ')  # torn tail
    done = j.load()
    assert sorted(done) == [0, 1, 2] and {s for _, s in done.values()} == {"success"}
    assert j.path.read_text() == "".join(old)  # the torn tail was cut
    got = [row_json(raw) for _, _, raw in j.iter_records(done, range(3))]
    assert got == [json.dumps(r) for r in ROWS]
