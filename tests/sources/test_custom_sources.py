"""Custom sources (conversations, ShareGPT, pre-formatted, auto), content-hash ids, the incoming
folder, and the hub code path (local files laid out as the hub delivers them; offline errors)."""

from __future__ import annotations

import json

import pytest

from specforge_assets.sources.config import list_incoming, resolve_source
from specforge_assets.sources.errors import HubUnavailableError, UnknownSourceError
from specforge_assets.sources.formats import content_hash_id, parse_custom_row
from specforge_assets.sources.normalize import build_source
from specforge_assets.paths import UnsafeKeyError

from .conftest import PRESET_FIXTURES, write_jsonl

CONV = [{"role": "user", "content": "What is 2 plus 3?"}, {"role": "assistant", "content": "2 plus 3 is 5."}]


def _read(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_formats_parse_to_contract_rows():
    assert parse_custom_row({"id": "a", "conversations": CONV}, "conversations") == {"id": "a", "conversations": CONV}
    sg = [{"from": "system", "value": "S"}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]
    assert parse_custom_row({"id": 3, "conversations": sg}, "sharegpt") == {
        "id": "3",
        "conversations": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": "q"},
            {"role": "assistant", "content": "a"},
        ],
    }
    assert parse_custom_row({"messages": CONV}, "auto")["conversations"] == CONV
    assert parse_custom_row({"id": "t", "text": "<|im_start|>user\nhi<|im_end|>\n"}, "auto") == {
        "id": "t",
        "text": "<|im_start|>user\nhi<|im_end|>\n",
    }


def test_rows_without_id_get_a_stable_content_hash_id():
    a = parse_custom_row({"conversations": CONV}, "auto")["id"]
    b = parse_custom_row({"id": None, "conversations": [dict(m) for m in CONV]}, "conversations")["id"]
    sg = parse_custom_row(
        {
            "conversations": [
                {"from": "human", "value": CONV[0]["content"]},
                {"from": "gpt", "value": CONV[1]["content"]},
            ]
        },
        "auto",
    )["id"]
    assert a == b == sg == content_hash_id(CONV) and len(a) == 32
    assert parse_custom_row({"conversations": CONV[:1]}, "auto")["id"] != a


def _cfg(tmp_path, sources: dict, **extra) -> dict:
    return {"sources": sources, **extra}


@pytest.mark.parametrize("suffix", ["jsonl", "json", "parquet"])
def test_custom_file_formats(tmp_path, data_root, suffix):
    rows = [{"id": f"r{i}", "conversations": CONV} for i in range(3)] + [
        {"conversations": [{"from": "human", "value": "hello"}, {"from": "gpt", "value": "hi"}]}
    ]
    path = tmp_path / f"custom.{suffix}"
    if suffix == "jsonl":
        write_jsonl(path, rows)
    elif suffix == "json":
        path.write_text(json.dumps(rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.Table.from_pylist(
                [
                    {
                        "id": r.get("id"),
                        "conversations": [
                            {
                                "role": m.get("role", "user" if m.get("from") == "human" else "assistant"),
                                "content": m.get("content", m.get("value")),
                            }
                            for m in r["conversations"]
                        ],
                    }
                    for r in rows
                ]
            ),
            path,
        )
    cfg = _cfg(tmp_path, {"mine": {"format": "auto", "data_path": str(path)}})
    res = build_source(resolve_source("mine", cfg, data_root), data_root, config=cfg)
    out = _read(res.out_dir / "train.jsonl")
    assert [r["id"] for r in out[:3]] == ["r0", "r1", "r2"]
    assert out[3]["conversations"] == [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}]
    assert res.manifest["rows_in"] == 4 and res.manifest["quarantined"] == 0


def test_custom_directory_and_preformatted(tmp_path, data_root):
    d = tmp_path / "pre"
    write_jsonl(d / "part-0.jsonl", [{"id": "p0", "text": "a"}, {"text": "b"}])
    write_jsonl(d / "part-1.jsonl", [{"id": "p2", "text": "c"}])
    cfg = _cfg(tmp_path, {"pre": {"format": "preformatted", "data_path": str(d)}})
    res = build_source(resolve_source("pre", cfg, data_root), data_root, config=cfg)
    out = _read(res.out_dir / "train.jsonl")
    assert [r["text"] for r in out] == ["a", "b", "c"] and out[1]["id"] == content_hash_id({"text": "b"})
    assert res.manifest["format"] == "preformatted"


def test_preset_source_with_local_data_and_split(tmp_path, data_root):
    cfg = _cfg(
        tmp_path,
        {
            "pb": {
                "preset": "perfectblend",
                "data_path": str(PRESET_FIXTURES / "perfectblend" / "raw.parquet"),
                "split_eval": True,
            }
        },
    )
    res = build_source(resolve_source("pb", cfg, data_root), data_root, config=cfg)
    m = res.manifest
    assert m["rows_in"] == 36 and m["rows_train"] + m["rows_test"] + m["quarantined"] == 36
    assert m["rows_test"] > 0 and (res.out_dir / "test.jsonl").exists()
    # every kept row is exactly SpecForge's converted row (ids are str(index))
    expected = {r["id"]: r for r in _read(PRESET_FIXTURES / "perfectblend" / "expected_train.jsonl")}
    for r in _read(res.out_dir / "train.jsonl") + _read(res.out_dir / "test.jsonl"):
        assert r == expected[r["id"]]
    reasons = [q["reason"] for q in _read(res.out_dir / "quarantine.jsonl")]
    assert reasons and all(isinstance(r, str) and r for r in reasons)


def test_incoming_folder(tmp_path, data_root):
    inc = data_root / "incoming"
    write_jsonl(inc / "dropped.jsonl", [{"id": "d1", "conversations": CONV}])
    (inc / "bad name.jsonl").write_text("{}\n")
    (inc / ".hidden.jsonl").write_text("{}\n")
    (inc / "notes.txt").write_text("x")
    write_jsonl(inc / "both.json", [{"text": "json"}])
    write_jsonl(inc / "both.jsonl", [{"text": "jsonl"}])
    cfg = {"sources": {}}
    write_jsonl(inc / "shards" / "part-0.jsonl", [{"id": "s0", "conversations": CONV}])
    write_jsonl(inc / "shards" / "part-1.jsonl", [{"id": "s1", "conversations": CONV}])
    (inc / "empty-dir").mkdir()
    found = list_incoming(cfg, data_root)
    assert found == {"both": inc / "both.jsonl", "dropped": inc / "dropped.jsonl", "shards": inc / "shards"}
    res = build_source(resolve_source("shards", cfg, data_root), data_root, config=cfg)
    assert [r["id"] for r in _read(res.out_dir / "train.jsonl")] == ["s0", "s1"]
    spec = resolve_source("dropped", cfg, data_root)
    assert spec.origin == "incoming" and spec.format == "auto"
    res = build_source(spec, data_root, config=cfg)
    assert _read(res.out_dir / "train.jsonl") == [{"id": "d1", "conversations": CONV}]
    # a configured dir, relative to the data root
    (data_root / "drops").mkdir()
    write_jsonl(data_root / "drops" / "x1.jsonl", [{"text": "t"}])
    assert list(list_incoming({"incoming": {"dir": "drops"}}, data_root)) == ["x1"]


def test_unknown_source_and_escaping_keys(data_root):
    with pytest.raises(UnknownSourceError, match="unknown source 'nope'.*incoming folder"):
        resolve_source("nope", {"sources": {"a": {"preset": "gsm8k"}}}, data_root)
    for key in ["../x", "/etc/passwd", "a/b", "..", ".hidden", ""]:
        with pytest.raises(UnsafeKeyError):
            resolve_source(key, {"sources": {}}, data_root)


@pytest.mark.parametrize(
    "entry,match",
    [
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"preset": "sharegpt4v"}, "not supported"),
        ({"format": "xml", "data_path": "x"}, "unknown format 'xml'"),
        ({"format": "auto"}, "needs 'data_path' or 'hub_id'"),
        ({"preset": "gsm8k", "format": "auto"}, "either 'preset' or 'format'"),
        ({"preset": "gsm8k", "sample_size": 0}, "sample_size: must be greater than 0"),
        ({"preset": "gsm8k", "weight": 2}, r"^sources.yaml sources.s: 'weight' is set in configs/mix.yaml"),
        (
            {"preset": "gsm8k", "quarantine_treshold": 0.5},
            r"^sources.yaml sources.s: unknown key 'quarantine_treshold' \(known: allow_outside_links, config, ",
        ),
    ],
)
def test_bad_source_entries(entry, match, data_root):
    with pytest.raises(Exception, match=match):
        resolve_source("s", {"sources": {"s": entry}}, data_root)


def test_configured_sample_sources_resolve():
    keys = [
        "sample-ultrachat",
        "sample-sharegpt",
        "sample-perfectblend",
        "sample-gsm8k",
        "sample-opc",
        "sample-custom",
        "sample-preformatted",
    ]
    from specforge_assets.partitions import configured_source_keys

    assert configured_source_keys()[: len(keys)] == keys
    for k in keys:
        assert resolve_source(k).key == k


# ---------------------------------------------------------------------------- hub code path


def _hub_repo(tmp_path):
    """A folder laid out like the hub's `EleutherAI/hendrycks_math` repo: README configs + shards."""
    import shutil

    repo = tmp_path / "hub" / "hendrycks_math"
    configs = [
        "algebra",
        "counting_and_probability",
        "geometry",
        "intermediate_algebra",
        "number_theory",
        "prealgebra",
        "precalculus",
    ]
    lines = ["---", "configs:"]
    for c in configs:
        (repo / c).mkdir(parents=True)
        shutil.copy(PRESET_FIXTURES / "hendrycks_math" / f"raw.{c}.parquet", repo / c / "train-00000-of-00001.parquet")
        lines += [f"- config_name: {c}", "  data_files:", "  - split: train", f"    path: {c}/train-*.parquet"]
    (repo / "README.md").write_text("\n".join(lines + ["---", "", "# test repo", ""]))
    return repo


def test_hub_path_with_local_repo_layout(tmp_path, data_root):
    repo = _hub_repo(tmp_path)
    cfg = {"sources": {"hm": {"preset": "hendrycks_math", "hub_id": str(repo)}}}
    res = build_source(resolve_source("hm", cfg, data_root), data_root, config=cfg, cache_dir=str(tmp_path / "cache"))
    expected = _read(PRESET_FIXTURES / "hendrycks_math" / "expected_train.jsonl")
    kept = _read(res.out_dir / "train.jsonl")
    by_id = {}
    for r in expected:
        by_id.setdefault(r["id"], r)
    assert res.manifest["rows_in"] == len(expected) == 252
    assert all(by_id[r["id"]] == r for r in kept)
    assert res.manifest["inputs"][0]["hub_fingerprint"]
    again = build_source(resolve_source("hm", cfg, data_root), data_root, config=cfg, cache_dir=str(tmp_path / "cache"))
    assert again.cached and again.data_version == res.data_version


def test_custom_hub_dataset_with_local_repo_layout(tmp_path, data_root):
    repo = tmp_path / "hub" / "my-chats"
    write_jsonl(repo / "data" / "train-00000-of-00002.jsonl", [{"id": "a", "conversations": CONV}])
    write_jsonl(repo / "data" / "train-00001-of-00002.jsonl", [{"id": "b", "conversations": CONV}])
    cfg = {"sources": {"hubby": {"format": "conversations", "hub_id": str(repo)}}}
    res = build_source(
        resolve_source("hubby", cfg, data_root), data_root, config=cfg, cache_dir=str(tmp_path / "cache")
    )
    assert [r["id"] for r in _read(res.out_dir / "train.jsonl")] == ["a", "b"]


def test_unreachable_hub_names_source_and_suggests_local_path(tmp_path, data_root, capsys):
    cfg = {"sources": {"remote": {"preset": "gsm8k"}}}  # HF_HUB_OFFLINE=1 (conftest)
    with pytest.raises(HubUnavailableError) as e:
        build_source(resolve_source("remote", cfg, data_root), data_root, config=cfg, cache_dir=str(tmp_path / "cache"))
    msg = str(e.value)
    assert "source 'remote'" in msg and "openai/gsm8k" in msg and "data_path" in msg and "offline" in msg
    assert not (data_root / "sources" / "remote" / "train.jsonl").exists()
    # the CLI says the same and suggests --data-path
    from specforge_assets.cli import main as cli_main

    assert cli_main(["prepare", "--dataset", "gsm8k", "--output-path", str(tmp_path / "o"), "--offline"]) == 1
    assert "--data-path" in capsys.readouterr().err
