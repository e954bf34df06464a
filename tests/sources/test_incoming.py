"""`sources.incoming.decide`: what the file-drop sensor does with each entry, on real files,
without Dagster (the sensor itself is tested in tests/platform/test_sensors.py)."""

from __future__ import annotations

import json
import os

from specforge_assets.sources import incoming
from specforge_assets.sources.config import scan_incoming

T0 = 1_700_000_000_000_000_000  # ns
HOUR = 3600 * 10**9


def _write(path, rows, mtime_ns):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, ns=(mtime_ns, mtime_ns))


def _tick(root, state, existing=(), configured=(), now_ns=T0 + HOUR, settle=5):
    scan = scan_incoming({}, root)
    return incoming.decide(scan, state, configured, set(existing), now_ns=now_ns, settle_seconds=settle)


def test_new_then_unchanged_then_changed_back_to_earlier_content_runs_again(tmp_path):
    (tmp_path / "incoming").mkdir()
    f = tmp_path / "incoming" / "drop.jsonl"
    _write(f, [{"id": "1", "text": "a"}], T0)

    first = _tick(tmp_path, None)
    assert [(r.partition, r.event) for r in first.runs] == [("drop", "new")]
    assert first.new_partitions == ["drop"] and first.skip_message is None
    assert [rec["event"] for rec in first.records] == ["new"]
    assert ("info", f"incoming drop.jsonl: new file → partition 'drop' (sha256 {first.runs[0].sha256[:12]})") in (
        first.messages
    )

    same = _tick(tmp_path, json.loads(first.cursor()), existing={"drop"})
    assert not same.runs and not same.records
    assert same.skip_message == "1 incoming file(s), none new or changed"

    _write(f, [{"id": "1", "text": "b"}], T0 + 10**9)
    changed = _tick(tmp_path, same.state, existing={"drop"})
    assert [r.event for r in changed.runs] == ["changed"] and not changed.new_partitions

    _write(f, [{"id": "1", "text": "a"}], T0 + 2 * 10**9)  # back to the first content
    back = _tick(tmp_path, changed.state, existing={"drop"})
    assert [r.event for r in back.runs] == ["changed"]
    assert back.runs[0].sha256 == first.runs[0].sha256
    assert back.runs[0].run_key not in {first.runs[0].run_key, changed.runs[0].run_key}


def test_half_copied_file_waits_until_it_settles(tmp_path):
    (tmp_path / "incoming").mkdir()
    f = tmp_path / "incoming" / "big.jsonl"
    _write(f, [{"id": "1", "text": "partial"}], T0)
    copying = _tick(tmp_path, None, now_ns=T0 + 2 * 10**9, settle=5)
    assert not copying.runs and not copying.new_partitions and copying.waiting == ["big"]
    assert "waiting for ['big'] to settle" in copying.skip_message
    assert copying.state["files"] == {}  # nothing recorded: the next tick decides afresh

    settled = _tick(tmp_path, copying.state, now_ns=T0 + 6 * 10**9, settle=5)
    assert [(r.partition, r.event) for r in settled.runs] == [("big", "new")]


def test_deleted_file_is_reported_once_and_data_is_kept(tmp_path):
    (tmp_path / "incoming").mkdir()
    f = tmp_path / "incoming" / "gone.jsonl"
    _write(f, [{"id": "1", "text": "x"}], T0)
    first = _tick(tmp_path, None)
    f.unlink()
    gone = _tick(tmp_path, first.state, existing={"gone"})
    assert gone.deleted == ["gone"] and not gone.runs
    assert gone.records[-1]["event"] == "deleted" and gone.records[-1]["data_kept"] is True
    assert "deleted (data kept): ['gone']" in gone.skip_message
    assert gone.messages[-1][0] == "warning" and "partition and data are kept" in gone.messages[-1][1]
    later = _tick(tmp_path, gone.state, existing={"gone"})
    assert not later.deleted and not later.records


def test_partition_deleted_in_the_ui_is_re_registered_with_the_same_run_key(tmp_path):
    (tmp_path / "incoming").mkdir()
    _write(tmp_path / "incoming" / "keep.jsonl", [{"id": "1", "text": "x"}], T0)
    first = _tick(tmp_path, None)
    again = _tick(tmp_path, first.state, existing=())  # the partition was deleted meanwhile
    assert [r.event for r in again.runs] == ["re-registered"] and again.new_partitions == ["keep"]
    assert again.runs[0].run_key == first.runs[0].run_key  # the daemon dedupes the same file state


def test_configured_key_wins_and_bad_names_are_warned_once(tmp_path):
    (tmp_path / "incoming").mkdir()
    _write(tmp_path / "incoming" / "alpha.jsonl", [{"id": "1", "text": "x"}], T0)
    _write(tmp_path / "incoming" / "bad name.jsonl", [{"id": "1", "text": "x"}], T0)
    first = _tick(tmp_path, None, configured={"alpha"})
    assert not first.runs
    levels = [(lvl, text.split(":")[0]) for lvl, text in first.messages]
    assert ("warning", "incoming alpha.jsonl") in levels and ("warning", "incoming bad name.jsonl") in levels
    assert [rec["event"] for rec in first.records] == ["skipped"]
    second = _tick(tmp_path, first.state, configured={"alpha"})
    assert not second.records and all("bad name" not in text for _, text in second.messages)
    assert "skipped (see the warnings): ['bad name.jsonl']" in second.skip_message


def test_fingerprint_reuses_the_hash_while_size_and_mtime_are_unchanged(tmp_path):
    f = tmp_path / "x.jsonl"
    _write(f, [{"id": "1"}], T0)
    fp = incoming.fingerprint(f, None)
    assert incoming.fingerprint(f, {**fp, "sha256": "recorded"})["sha256"] == "recorded"
    _write(f, [{"id": "2"}], T0 + 1)
    assert incoming.fingerprint(f, {**fp, "sha256": "recorded"})["sha256"] not in {"recorded", fp["sha256"]}
