"""The sqlite journal: rows keyed by their id (content hash without one), not by input position.

Appending rows to the input or reordering it after a partial run keeps every finished row (only
new and unfinished rows are requested, none twice, outputs in input order); rows sharing an id
are told apart by content; changed settings are refused; error rows stay retryable.
"""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest

from specforge_assets.regenerate.client import NoServerAvailable
from specforge_assets.regenerate.journal import (
    ConfigChanged,
    Journal,
    JournalUnreadable,
    finished_rows,
    journal_paths,
    row_keys,
)
from specforge_assets.regenerate.runner import OutputPaths, run_regeneration
from specforge_assets.regenerate.settings import RegenSettings
from specforge_assets.sources.formats import content_hash_id

from .conftest import make_rows, read_jsonl, write_rows

FAST = dict(
    backoff_base_s=0.02,
    backoff_max_s=0.1,
    probe_interval_s=0.2,
    request_timeout_s=10.0,
    connect_timeout_s=1.0,
    progress_interval_s=60.0,
    all_down_timeout_s=3.0,
)
PROBE = "Hello, how are you?"


def settings(**kw) -> RegenSettings:
    return RegenSettings(**{"model": "stub-model", "max_tokens": 16, "concurrency": 2, **FAST, **kw})


def asked(address: str) -> Counter:
    """First user message of every chat request the stub answered (start probe left out)."""
    got = httpx.get(f"http://{address}/requests", timeout=10).json()
    return Counter(
        next(m["content"] for m in msgs if m["role"] == "user")
        for msgs in got
        if not (len(msgs) == 1 and msgs[0]["content"] == PROBE)
    )


def question(row: dict) -> str:
    return next(m["content"] for m in row["conversations"] if m["role"] == "user")


def partial_run(tmp_path, stub_server, rows, out) -> dict:
    """Run until the only server dies after 20 requests: some rows finished, most not."""
    inp = write_rows(tmp_path / "in.jsonl", rows)
    with pytest.raises(NoServerAvailable):
        run_regeneration(inp, out, settings(), [stub_server(die_after=20).address], log=lambda m: None)
    done = finished_rows(out.success)
    assert 10 <= len(done) <= 20 and set(done.values()) == {"success"} and not out.success.exists()
    return done


# -- keys -----------------------------------------------------------------------------------
def test_keys_are_ids_or_content_hashes_never_positions(tmp_path):
    rows = [
        {"id": "a", "conversations": []},
        {"id": 7},
        {"id": "7"},
        {"conversations": [1]},
        {"id": "", "x": 1},
        {"id": True, "y": 2},
        [1, 2],
        "{not json",
    ]
    p = write_rows(tmp_path / "in.jsonl", rows)
    p.write_text(p.read_text().replace("\n", "\n\n", 2))  # blank lines are not rows
    keys = row_keys(p)
    assert keys[:3] == ['id:"a"', "id:7", 'id:"7"']
    # without a usable id: the sources layer's content id of the row (any key order, any spacing)
    assert keys[3] == "sha256:" + content_hash_id({"conversations": [1]})
    assert keys[4] == "sha256:" + content_hash_id({"x": 1, "id": ""})
    assert keys[5] == "sha256:" + content_hash_id({"y": 2, "id": True})
    assert keys[6] == "sha256:" + content_hash_id([1, 2]) and keys[7].startswith("sha256:")
    respaced = write_rows(tmp_path / "b.jsonl", ['{ "x" :1,"id":""}', '{"conversations": [1]}', '{"z": 0, "id": "a"}'])
    assert row_keys(respaced) == [keys[4], keys[3], 'id:"a"']


def test_rows_sharing_an_id_are_told_apart_by_content_with_one_line_message(tmp_path):
    rows = [{"id": "d", "c": 1}, {"id": "u"}, {"id": "d", "c": 2}, {"id": "d", "c": 1}, {"id": "e"}, {"id": "e"}]
    p = write_rows(tmp_path / "in.jsonl", rows)
    msgs = []
    keys = row_keys(p, msgs.append)
    c1, c2, ce = (content_hash_id(r) for r in (rows[0], rows[2], rows[4]))
    assert keys == [
        f'id:"d"|sha256:{c1}',
        'id:"u"',
        f'id:"d"|sha256:{c2}',
        f'id:"d"|sha256:{c1}#2',
        f'id:"e"|sha256:{ce}',
        f'id:"e"|sha256:{ce}#2',
    ]
    assert msgs == [
        f'regenerate: id "d" is on lines 1 and 3 of {p} (and 1 more shared ids); '
        "rows that share an id are told apart by their content"
    ]
    assert len(set(keys)) == len(keys)


# -- journal --------------------------------------------------------------------------------
FP = {"settings": {"model": "m", "temperature": 0.7}, "input_sha256": "x"}


def test_finished_rows_follow_their_ids_through_reorder_and_append(tmp_path):
    rows = [{"id": f"r{i}", "v": i} for i in range(6)] + [{"v": "no id"}, {"id": "d", "v": 1}, {"id": "d", "v": 2}]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    j = Journal(tmp_path / "o.jsonl", batch=2)
    assert j.prepare(FP, resume=True, restart=False, input_path=inp) == {}
    for i in (1, 3, 6, 7, 8):
        j.append(i, rows[i].get("id"), "success", {**rows[i], "out": i})
    j.append(4, "r4", "error", {**rows[4], "status": "error"})
    j.close()
    new = [rows[i] for i in (8, 7, 6, 5, 4, 3, 2, 1, 0)] + [{"id": "r9", "v": 9}]
    write_rows(inp, new)
    j = Journal(tmp_path / "o.jsonl")
    done = j.prepare({**FP, "input_sha256": "changed"}, resume=True, restart=False, input_path=inp)
    assert done == {0: "success", 1: "success", 2: "success", 5: "success", 7: "success"}  # r4 (error) redone
    got = {i: json.loads(text) for i, _, text in j.iter_records(done, sorted(done))}
    assert all(got[i] == {**new[i], "out": rows.index(new[i])} for i in done)
    assert j.load()[4] == "error"
    j.close()


def test_changed_settings_refused_unless_restart_and_corrupt_journal_named(tmp_path):
    inp = write_rows(tmp_path / "in.jsonl", [{"id": "a"}, {"id": "b"}])
    j = Journal(tmp_path / "o.jsonl")
    j.prepare(FP, resume=True, restart=False, input_path=inp)
    j.append(0, "a", "success", {"id": "a"})
    j.close()
    other = {**FP, "settings": {"model": "m", "temperature": 0.1}}
    with pytest.raises(ConfigChanged, match=r"with different settings \(temperature changed\)"):
        Journal(tmp_path / "o.jsonl").prepare(other, resume=True, restart=False, input_path=inp)
    j = Journal(tmp_path / "o.jsonl")
    assert j.prepare(other, resume=True, restart=True, input_path=inp) == {}
    j.close()
    assert finished_rows(tmp_path / "o.jsonl") == {}
    path = journal_paths(tmp_path / "o.jsonl")[0]
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(JournalUnreadable, match=r"is not a journal database .*restart to discard it"):
        Journal(tmp_path / "o.jsonl").prepare(FP, resume=True, restart=False, input_path=inp)
    j = Journal(tmp_path / "o.jsonl")
    assert j.prepare(FP, resume=False, restart=False, input_path=inp) == {}
    j.discard()
    assert not any(p.name.startswith(path.name) for p in tmp_path.iterdir())  # -wal / -shm too


def test_partial_run_of_the_json_lines_journal_is_carried_over(tmp_path):
    rows = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    inp = write_rows(tmp_path / "in.jsonl", rows)
    path, state = journal_paths(tmp_path / "o.jsonl")
    legacy = path.with_suffix(".jsonl")
    legacy.write_text(
        '{"i": 2, "s": "success", "id": "c", "row": {"id": "c", "out": 1}}\n'
        '{"i": 0, "s": "error", "id": "a", "row": {"id": "a"}}\n{"i": 1, "s": "succ'
    )
    state.write_text(json.dumps({"fingerprint": FP, "state": "running"}))
    j = Journal(tmp_path / "o.jsonl")
    assert j.prepare(FP, resume=True, restart=False, input_path=inp) == {2: "success"}
    assert [t for _, _, t in j.iter_records({2: "success"}, [2])] == ['{"id": "c", "out": 1}']
    j.close()
    assert not legacy.exists()


# -- runs against a real (stub) server --------------------------------------------------------
def test_rows_appended_after_a_partial_run_only_new_and_unfinished_are_requested(tmp_path, stub_server):
    rows = make_rows(60, turns=(1,))
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    done = partial_run(tmp_path, stub_server, rows, out)
    more = rows + make_rows(15, turns=(1,), prefix="new")
    for r in more[60:]:
        r["conversations"][-2]["content"] += " (new)"
    inp = write_rows(tmp_path / "in.jsonl", more)
    s = stub_server()
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    want = Counter(question(r) for r in more if f'id:"{r["id"]}"' not in done)
    assert asked(s.address) == want and len(want) == 75 - len(done)  # each once, finished rows never
    assert stats["resumed_rows"] == len(done) and stats["counts"]["success"] == 75
    assert [r["id"] for r in read_jsonl(out.success)] == [r["id"] for r in more]  # input order
    assert not journal_paths(out.success)[0].exists()


def test_reordered_input_after_sigkill_requests_no_finished_row_again(tmp_path, stub_server):
    rows = make_rows(300, turns=(1,))
    rows[7] = {"id": "r7", "conversations": [{"role": "assistant", "content": "bad"}]}  # skipped
    rows[11]["conversations"][-2]["content"] = "OVERFLOW"  # HTTP 400: an error row, retried
    inp = write_rows(tmp_path / "in.jsonl", rows)
    hold = tmp_path / "hold"  # the stub answers 60 requests, then holds the rest: the kill lands before the end
    hold.touch()
    s = stub_server(hold_file=hold, hold_after=60)
    outp = tmp_path / "out" / "regen.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "specforge_assets.cli",
        "regenerate",
        "--model",
        "stub-model",
        "--server-address",
        s.address,
        "--input-file-path",
        str(inp),
        "--output-file-path",
        str(outp),
        "--concurrency",
        "4",
        "--max-tokens",
        "16",
        "--resume",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline and len(finished_rows(outp)) < 40:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    hold.unlink()
    done = finished_rows(outp)
    assert 40 <= len(done) < 300 and not outp.exists()
    before = asked(s.address)
    shuffled = rows[:]
    random.Random(0).shuffle(shuffled)
    write_rows(inp, shuffled)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    second = asked(s.address) - before
    finished_q = {question(x) for x in rows if x["id"] != "r7" and done.get(f'id:"{x["id"]}"') == "success"}
    assert not finished_q & set(second)  # no finished row requested again
    assert set(second) == {question(x) for x in rows if x["id"] != "r7"} - finished_q
    assert all(n == 1 for n in second.values())
    out = OutputPaths.specforge(outp)
    assert [x["id"] for x in read_jsonl(out.success)] == [x["id"] for x in shuffled if x["id"] not in ("r7", "r11")]
    assert [x["id"] for x in read_jsonl(out.error)] == ["r11"]
    assert [x["id"] for x in read_jsonl(out.skipped)] == ["r7"]
    for got in read_jsonl(out.success):  # every output row is its own input row's answer
        src = rows[int(got["id"][1:])]
        assert question(got) == question(src) and got["extra"] == src["extra"]


def test_duplicate_ids_are_each_regenerated_once_in_input_order(tmp_path, stub_server):
    rows = [{"id": "d", "conversations": [{"role": "user", "content": f"q{i}"}]} for i in range(3)]
    rows.append(dict(rows[0]))  # an identical copy: a row of its own too
    inp = write_rows(tmp_path / "in.jsonl", rows)
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    logs = []
    stats = run_regeneration(inp, out, settings(), [s.address], log=logs.append)
    assert (
        f'regenerate: id "d" is on lines 1 and 2 of {inp}; rows that share an id are told apart by their content'
    ) in logs
    assert stats["counts"]["success"] == 4
    assert asked(s.address) == Counter({"q0": 2, "q1": 1, "q2": 1})
    assert [question(r) for r in read_jsonl(out.success)] == ["q0", "q1", "q2", "q0"]


def test_a_complete_run_with_errors_keeps_them_retryable_after_an_append(tmp_path, stub_server):
    rows = make_rows(6, turns=(1,))
    rows[2]["conversations"][-2]["content"] = "OVERFLOW"
    inp = write_rows(tmp_path / "in.jsonl", rows)
    s = stub_server()
    out = OutputPaths.specforge(tmp_path / "o.jsonl")
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    assert stats["counts"]["error"] == 1 and journal_paths(out.success)[0].exists()
    first = asked(s.address)
    more = rows + make_rows(2, turns=(1,), prefix="z")
    for r in more[6:]:
        r["conversations"][-2]["content"] += " z"
    write_rows(inp, more)
    stats = run_regeneration(inp, out, settings(), [s.address], log=lambda m: None)
    assert asked(s.address) - first == Counter(["OVERFLOW"] + [question(r) for r in more[6:]])
    assert stats["resumed_rows"] == 5 and [r["id"] for r in read_jsonl(out.error)] == ["r2"]
    assert [r["id"] for r in read_jsonl(out.success)] == [r["id"] for r in more if r["id"] != "r2"]


def test_finished_rows_reads_a_journal_without_writing(tmp_path):
    assert finished_rows(tmp_path / "o.jsonl") == {}
    path = journal_paths(tmp_path / "o.jsonl")[0]
    sqlite3.connect(path).close()  # an empty database: the schema not yet written
    assert finished_rows(tmp_path / "o.jsonl") == {}
