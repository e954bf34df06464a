"""The drop folder is a trust boundary: links out of it are refused (sensor and reader), names
that cannot be partition keys are reported, configured data paths stay in the data root unless
allowed, previews stay small. Real instance, real sensor ticks, real files and symlinks."""

from __future__ import annotations

import json
import os

import dagster as dg
import pytest
import yaml


from specforge_assets.assets import sources as sources_assets
from specforge_assets.partitions import SOURCES_PARTITION_NAME
from specforge_assets.resources import SpecforgeStore
from specforge_assets.sources import loaders
from specforge_assets.sources.config import resolve_source, scan_incoming
from specforge_assets.sources.normalize import build_source

MARKER = "OUTSIDE-MARKER-6789"
TOKEN = "U0VDUkVULU1BUktFUi0xMjM0NQ=="
OLD = 1_700_000_000_000_000_000  # an mtime long past the settle delay


def _jsonl(path, rows, mtime=OLD):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.utime(path, ns=(mtime, mtime))


def _conv(rid, text="hi"):
    return {"id": rid, "conversations": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}


@pytest.fixture
def outside(tmp_path):
    """Files outside the data root: a private JSONL and a ~/.docker-like folder with a token."""
    out = tmp_path / "outside"
    _jsonl(out / "private.jsonl", [_conv("s1", MARKER)])
    (out / ".docker").mkdir()
    (out / ".docker" / "config.json").write_text(json.dumps({"auths": {"registry.example": {"auth": TOKEN}}}))
    return out


def _no_outside_content(root):
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            text = p.read_text(errors="replace")
            assert MARKER not in text and TOKEN not in text, f"outside content copied into {p}"


def _materialize(instance, root, config_dir, key, tmp_path):
    instance.add_dynamic_partitions(SOURCES_PARTITION_NAME, [key])
    return dg.materialize(
        [sources_assets.conversations],
        instance=instance,
        partition_key=key,
        resources={
            "store": SpecforgeStore(data_root=str(root), config_dir=str(config_dir)),
            "sources_settings": sources_assets.SourcesSettings(hf_cache_dir=str(tmp_path / "hf")),
        },
        raise_on_error=False,
    )


def _failure_text(result) -> str:
    errs = [e.step_failure_data.error for e in result.all_events if e.is_step_failure]
    return "\n".join(e.to_string() for e in errs if e)


# ----------------------------------------------------------------------------- links


def test_links_out_of_the_drop_folder_are_refused_by_the_sensor(toy, dagster_instance, outside, sensor_tick):
    defs, root, _ = toy
    inc = root / "incoming"
    _jsonl(inc / "real.jsonl", [_conv("r1")])
    (inc / "alias.jsonl").symlink_to(inc / "real.jsonl")  # stays inside: followed
    (inc / "evil.jsonl").symlink_to(outside / "private.jsonl")  # file link out
    (inc / "creds").symlink_to(outside / ".docker")  # folder link out
    _jsonl(inc / "mixed" / "part-0.jsonl", [_conv("m0")])  # a real folder with one link out inside
    (inc / "mixed" / "part-1.jsonl").symlink_to(outside / "private.jsonl")
    (inc / "alllinks").mkdir()  # a folder whose files are all links out
    (inc / "alllinks" / "a.json").symlink_to(outside / ".docker" / "config.json")
    (inc / "deep").mkdir()  # a link to an outside folder, nested inside a dropped folder
    _jsonl(inc / "deep" / "ok.jsonl", [_conv("d0")])
    (inc / "deep" / "sub").symlink_to(outside / ".docker")

    data, log = sensor_tick(defs, dagster_instance, "incoming_files_sensor")

    assert sorted(r.partition_key for r in data.run_requests) == ["alias", "real"]
    assert sorted(dagster_instance.get_dynamic_partitions(SOURCES_PARTITION_NAME)) == ["alias", "real"]
    warnings = log.warnings
    for name in ["evil.jsonl", "creds", "mixed", "alllinks", "deep"]:
        hits = [w for w in warnings if w.startswith(f"incoming {name}:")]
        assert len(hits) == 1, (name, warnings)
        assert "drop-folder rule" in hits[0] and "outside" in hits[0] and "links may not leave" in hits[0]
    assert str(outside / "private.jsonl") in next(w for w in warnings if w.startswith("incoming evil.jsonl:"))
    ops = [json.loads(line) for line in (root / "ops" / "incoming.jsonl").read_text().splitlines()]
    assert {o["entry"] for o in ops if o["event"] == "skipped"} == {"evil.jsonl", "creds", "mixed", "alllinks", "deep"}

    # the next tick does not repeat the warnings (the cursor remembers them)
    again, log2 = sensor_tick(defs, dagster_instance, "incoming_files_sensor", cursor=data.cursor)
    assert not log2.warnings
    assert "skipped (see the warnings): ['alllinks', 'creds', 'deep', 'evil.jsonl', 'mixed']" in again.skip_message
    _no_outside_content(root)


def test_hand_registered_symlinked_drop_is_refused_at_read_time(toy, dagster_instance, outside, tmp_path):
    _, root, config_dir = toy
    inc = root / "incoming"
    (inc / "evil.jsonl").symlink_to(outside / "private.jsonl")
    (inc / "creds").symlink_to(outside / ".docker")

    for key, name in [("evil", "evil.jsonl"), ("creds", "creds")]:
        result = _materialize(dagster_instance, root, config_dir, key, tmp_path)
        assert not result.success
        text = _failure_text(result)
        assert f"incoming/{name}" in text and "links may not leave" in text and "drop-folder rule" in text
        assert not (root / "sources" / key / "train.jsonl").exists()
    _no_outside_content(root)


def test_reader_refuses_links_even_without_the_listing(data_root, outside):
    """The readers apply the same rule on their own (a spec built by hand, a race with the
    sensor): a dropped file link, a dropped folder holding a link out, a configured relative path."""
    inc = data_root / "incoming"
    _jsonl(inc / "shards" / "part-0.jsonl", [_conv("s0")])
    (inc / "shards" / "part-1.jsonl").symlink_to(outside / "private.jsonl")
    (inc / "evil.jsonl").symlink_to(outside / "private.jsonl")

    with pytest.raises(loaders.OutsideLinkError, match=r"incoming/evil\.jsonl.*links may not leave"):
        loaders.resolve_data_path(str(inc / "evil.jsonl"), data_root)
    shards = loaders.resolve_data_path(str(inc / "shards"), data_root)
    assert shards.trusted_root == inc.resolve()
    with pytest.raises(loaders.OutsideLinkError, match=r"part-1\.jsonl.*outside"):
        loaders._data_files(shards, None)
    with pytest.raises(loaders.OutsideLinkError, match="part-1.jsonl"):
        resolve_source("shards", {"sources": {}}, data_root)
    # a spec pointing straight at the dropped folder (no listing involved) fails while reading
    spec = resolve_source("x", {"sources": {"x": {"format": "auto", "data_path": str(inc / "shards")}}}, data_root)
    with pytest.raises(loaders.OutsideLinkError):
        build_source(spec, data_root, config={"sources": {}})
    _no_outside_content(data_root)


def test_links_that_stay_inside_the_drop_folder_are_followed(toy, dagster_instance, tmp_path):
    _, root, config_dir = toy
    inc = root / "incoming"
    _jsonl(inc / "store" / "real.jsonl", [_conv("r1", "inside")])
    (inc / "alias.jsonl").symlink_to(inc / "store" / "real.jsonl")
    assert scan_incoming({}, root).found == {"alias": inc / "alias.jsonl", "store": inc / "store"}
    result = _materialize(dagster_instance, root, config_dir, "alias", tmp_path)
    assert result.success
    rows = [json.loads(line) for line in (root / "sources" / "alias" / "train.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r1"]


# ----------------------------------------------------------------------------- names


def test_names_that_cannot_be_keys_are_reported_not_silently_ignored(toy, dagster_instance, sensor_tick):
    defs, root, _ = toy
    inc = root / "incoming"
    _jsonl(inc / "my data.jsonl", [_conv("a")])
    _jsonl(inc / "données.jsonl", [_conv("b")])
    long_name = "x" * 129
    _jsonl(inc / f"{long_name}.jsonl", [_conv("c")])
    _jsonl(inc / "Upper.JSONL", [_conv("d")])  # upper-case suffix: accepted as .jsonl
    _jsonl(inc / "dup.jsonl", [_conv("e")])
    _jsonl(inc / "dup.json", [_conv("f")])
    _jsonl(inc / "notes.txt", [_conv("g")])
    _jsonl(inc / "_under.jsonl", [_conv("h")])
    _jsonl(inc / ".hidden.jsonl", [_conv("i")])  # hidden and temporary: silent
    _jsonl(inc / "copying.jsonl.part", [_conv("j")])
    _jsonl(inc / "copying2.jsonl.tmp", [_conv("k")])

    scan = scan_incoming({}, root)
    assert set(scan.found) == {"Upper", "dup"} and scan.found["dup"].name == "dup.jsonl"
    assert "spaces" in scan.skipped["my data.jsonl"]
    assert "non-ASCII" in scan.skipped["données.jsonl"]
    assert "129 characters long (at most 128)" in scan.skipped[f"{long_name}.jsonl"]
    assert "not a .parquet, .jsonl or .json file" in scan.skipped["notes.txt"]
    assert "start with a letter or digit" in scan.skipped["_under.jsonl"]
    assert "same partition key 'dup' as dup.jsonl" in scan.skipped["dup.json"]
    assert not {".hidden.jsonl", "copying.jsonl.part", "copying2.jsonl.tmp"} & set(scan.skipped)

    data, log = sensor_tick(defs, dagster_instance, "incoming_files_sensor")
    assert sorted(r.partition_key for r in data.run_requests) == ["Upper", "dup"]
    warnings = log.warnings
    for name in scan.skipped:
        assert sum(w.startswith(f"incoming {name}: skipped") for w in warnings) == 1, (name, warnings)
    assert len(warnings) == len(scan.skipped) == 6


# ----------------------------------------------------------------------------- configured sources


def test_configured_relative_data_path_links_stay_in_the_data_root(data_root, outside):
    (data_root / "raw").symlink_to(outside / "private.jsonl")
    _jsonl(data_root / "folder" / "a.jsonl", [_conv("a")])
    (data_root / "folder" / "b.jsonl").symlink_to(outside / "private.jsonl")

    cfg = {
        "sources": {
            "linked": {"format": "auto", "data_path": "raw"},
            "linked_ok": {"format": "auto", "data_path": "raw", "allow_outside_links": True},
            "folder": {"format": "auto", "data_path": "folder"},
            "folder_ok": {"format": "auto", "data_path": "folder", "allow_outside_links": True},
            "absolute": {"format": "auto", "data_path": str(outside / "private.jsonl")},
            "dotdot": {"format": "auto", "data_path": "../outside/private.jsonl"},
        }
    }
    for key in ["linked", "folder"]:
        with pytest.raises(loaders.OutsideLinkError, match="allow_outside_links: true"):
            resolve_source(key, cfg, data_root)
    with pytest.raises(loaders.OutsideLinkError, match="outside"):
        build_source(resolve_source("dotdot", cfg, data_root), data_root, config=cfg)

    # the user allows it (per source) or wrote the absolute path: read
    for key, ids in [("linked_ok", ["s1"]), ("folder_ok", ["a", "s1"]), ("absolute", ["s1"])]:
        res = build_source(resolve_source(key, cfg, data_root), data_root, config=cfg)
        rows = [json.loads(line) for line in (res.out_dir / "train.jsonl").read_text().splitlines()]
        assert [r["id"] for r in rows] == ids, key
    assert resolve_source("linked_ok", cfg, data_root).identity()["allow_outside_links"] is True
    assert "allow_outside_links" not in resolve_source("absolute", cfg, data_root).identity()
    with pytest.raises(Exception, match="allow_outside_links: must be true or false"):
        resolve_source(
            "x", {"sources": {"x": {"format": "auto", "data_path": "raw", "allow_outside_links": "yes"}}}, data_root
        )


# ----------------------------------------------------------------------------- previews


def test_mix_preview_is_bounded(data_root, tmp_path, dagster_instance, monkeypatch):
    from specforge_assets.assets import mix as mix_assets

    big = "y" * 5_000_000  # one 5 MB message
    d = data_root / "sources" / "alpha"
    _jsonl(d / "train.jsonl", [_conv(f"r{i}", str(i) + big) for i in range(4)])
    cfg = tmp_path / "configs"
    cfg.mkdir()
    (cfg / "mix.yaml").write_text(yaml.safe_dump({"eval": {"fraction": 0.1, "min_rows": 1}, "seed": 1}))
    monkeypatch.setenv("SPECFORGE_CONFIG_DIR", str(cfg))
    res = dg.materialize(
        [mix_assets.training_mix],
        instance=dagster_instance,
        resources={"store": SpecforgeStore()},
        selection=None,
        raise_on_error=True,
    )
    md = res.asset_materializations_for_node("mix__training_mix")[0].metadata
    preview = json.dumps(md["preview"].value)
    assert len(preview) < 10_000 and md["preview"].value  # a few rows, each cut to 500 chars
    assert all(len(json.dumps(r)) < 3_000 for r in md["preview"].value)
