"""The object-store data root (`specforge_assets.storage`): publish = files of a new generation,
then the commit marker; readers in another working copy see whole folders only, checked by
sha256. Against a real S3 API (moto server) and fsspec's file:// backend."""

from __future__ import annotations

import json
import os

import pytest

from specforge_assets import paths, storage
from specforge_assets.fileio import replace_dir, staged_dir
from specforge_assets.versioned import prune_versions, publish_version


@pytest.fixture
def url_root(request, tmp_path, monkeypatch):
    """An fsspec URL data root (s3:// on moto, or file://) and a working-copy cache for
    "machine A"; `use_machine(name)` switches the cache (another machine's working copy)."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_env")
        url = f"s3://{bucket}/team/data"
    else:
        (tmp_path / "store").mkdir()
        url = f"file://{tmp_path / 'store'}"

    def use_machine(name: str):
        monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / f"cache-{name}"))

    use_machine("a")
    monkeypatch.setenv(paths.DATA_ROOT_ENV, url)
    return url, use_machine


S3 = pytest.param("s3", marks=pytest.mark.server)  # moto's S3 server on 127.0.0.1
both = pytest.mark.parametrize("url_root", [S3, "file"], indirect=True)


@both
def test_a_published_folder_is_read_whole_in_another_working_copy(url_root):
    url, use_machine = url_root
    root_a = paths.data_root()
    assert root_a == storage.mirror_dir(url) and root_a.is_dir()
    with staged_dir(root_a / "sources" / "gsm8k") as tmp:
        (tmp / "train.jsonl").write_text('{"id": 1}\n')
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.bin").write_bytes(b"\0\1\2")
        (tmp / ".scratch").write_text("local only")
        (tmp / "manifest.json").write_text('{"data_version": "v1"}')
    remote = storage.Remote(url)
    marker = remote.marker("sources/gsm8k")
    assert sorted(marker["files"]) == ["manifest.json", "sub/x.bin", "train.jsonl"]
    assert marker["files"]["train.jsonl"]["size"] == 10

    use_machine("b")
    root_b = paths.data_root()
    assert root_b != root_a
    got = root_b / "sources" / "gsm8k"
    assert (got / "train.jsonl").read_text() == '{"id": 1}\n'
    assert (got / "sub" / "x.bin").read_bytes() == b"\0\1\2"
    assert not (got / ".scratch").exists()

    use_machine("a")  # a new version from machine A replaces it; the old generation is removed
    with staged_dir(root_a / "sources" / "gsm8k") as tmp:
        (tmp / "train.jsonl").write_text('{"id": 2}\n')
        (tmp / "manifest.json").write_text('{"data_version": "v2"}')
    gens = [
        p
        for p in remote.fs.ls(remote._p("sources/gsm8k"), detail=False)
        if p.rstrip("/").rsplit("/", 1)[-1].startswith("_g-")
    ]
    assert len(gens) == 1
    use_machine("b")
    assert storage.sync(url) == {"pulled": ["sources/gsm8k"], "removed": []}
    assert (got / "train.jsonl").read_text() == '{"id": 2}\n' and not (got / "sub").exists()
    assert storage.sync(url) == {"pulled": [], "removed": []}  # nothing changed: nothing fetched


@both
def test_a_folder_whose_commit_marker_is_missing_is_not_read(url_root):
    url, use_machine = url_root
    remote = storage.Remote(url)
    # a publish that died after its files and before its marker
    remote.fs.pipe_file(remote._p("mix", "_g-00000000000000000001-deadbeef", "train.jsonl"), b"half")
    use_machine("b")
    root = paths.data_root()
    assert not (root / "mix").exists()


@both
def test_an_object_that_does_not_match_its_marker_is_refused(url_root):
    url, use_machine = url_root
    with staged_dir(paths.data_root() / "mix") as tmp:
        (tmp / "train.jsonl").write_text("good\n")
    remote = storage.Remote(url)
    gen = remote.marker("mix")["generation"]
    remote.fs.pipe_file(remote._p("mix", "_g-" + gen, "train.jsonl"), b"evil\n")  # same size
    use_machine("b")
    with pytest.raises(storage.StorageError, match=r"mix/train.jsonl does not match its _published.json"):
        paths.data_root()
    assert not (storage.mirror_dir(url) / "mix").exists()


@both
def test_versions_are_uploaded_once_and_pruned_there_too(url_root):
    url, use_machine = url_root
    root = paths.data_root()
    src = root / "work"
    src.mkdir()
    for v in ("v1", "v2", "v3"):
        (src / "f.txt").write_text(v)
        publish_version(src, root, "mix", v)
    remote = storage.Remote(url)
    assert set(remote.published_folders()) == {"versions/mix/v1", "versions/mix/v2", "versions/mix/v3"}
    os.utime(root / "versions" / "mix" / "v1", (1, 1))
    assert prune_versions(root, "mix", keep=2) == ["v1"]
    assert set(remote.published_folders()) == {"versions/mix/v2", "versions/mix/v3"}
    use_machine("b")
    assert sorted(p.name for p in (paths.data_root() / "versions" / "mix").iterdir()) == ["v2", "v3"]


@both
def test_duckdb_reads_the_published_objects(url_root):
    url, _ = url_root
    with staged_dir(paths.data_root() / "sources" / "s") as tmp:
        (tmp / "train.jsonl").write_text('{"n": 1}\n{"n": 2}\n{"n": 4}\n')
    remote = storage.Remote(url)
    obj = remote.object_url("sources/s", "train.jsonl")
    assert obj.startswith(url.split("://")[0] + "://")
    con = storage.duckdb_connect(url)
    assert con.sql(f"SELECT sum(n) FROM read_json_auto('{obj}')").fetchall() == [(7,)]


@pytest.mark.parametrize("url_root", [S3], indirect=True)
def test_no_secret_reaches_the_store_or_the_working_copy(url_root):
    url, _ = url_root
    root = paths.data_root()
    with staged_dir(root / "mix") as tmp:
        (tmp / "a.txt").write_text("x")
    remote = storage.Remote(url)
    texts = [remote.fs.cat_file(p).decode() for p in remote.fs.find(remote.base)]
    texts.append((root / storage.STATE_FILE).read_text())
    assert texts and not any("testing-secret" in t for t in texts)


def test_a_url_with_credentials_is_refused(monkeypatch):
    monkeypatch.setenv(paths.DATA_ROOT_ENV, "s3://AKIA:supersecret@bucket/x")
    with pytest.raises(storage.StorageError, match="user-info") as e:
        paths.data_root()
    assert "supersecret" not in str(e.value)


def test_a_local_root_never_touches_storage(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path / "data"))
    assert paths.data_root() == (tmp_path / "data").resolve()
    tmp = tmp_path / "data" / ".stage"
    tmp.mkdir(parents=True)
    (tmp / "f").write_text("1")
    replace_dir(tmp, tmp_path / "data" / "mix")
    assert storage.remote_of(tmp_path / "data" / "mix") is None
    assert not list(tmp_path.rglob(storage.STATE_FILE))


@pytest.mark.parametrize("url_root", ["file"], indirect=True)
def test_the_store_resource_takes_a_url(url_root, tmp_path, monkeypatch):
    from specforge_assets.resources import SpecforgeStore

    url, _ = url_root
    monkeypatch.delenv(paths.DATA_ROOT_ENV)
    store = SpecforgeStore(data_root=url)
    assert store.root() == storage.mirror_dir(url)
    with staged_dir(store.layer_dir("tokenized", "dataset")) as tmp:
        (tmp / "manifest.json").write_text(json.dumps({"ok": True}))
    assert storage.Remote(url).marker("tokenized/dataset")["files"]["manifest.json"]["size"] == 12


@both
def test_the_same_bytes_in_two_folders_are_both_complete(url_root):
    """The second folder's files are copied inside the store (the version and the current
    folder hold the same bytes); a copy whose source generation is gone is uploaded instead."""
    url, use_machine = url_root
    root = paths.data_root()
    for name in ("mix", "copy1"):
        with staged_dir(root / name) as tmp:
            (tmp / "train.jsonl").write_text("same\n")
    with staged_dir(root / "mix") as tmp:  # mix's old generation (copy1's source) is removed
        (tmp / "train.jsonl").write_text("other\n")
    storage._UPLOADED.update({k: v.replace("/mix/", "/gone/") for k, v in storage._UPLOADED.items()})
    with staged_dir(root / "copy2") as tmp:
        (tmp / "train.jsonl").write_text("other\n")
    use_machine("b")
    root_b = paths.data_root()
    assert [(root_b / n / "train.jsonl").read_text() for n in ("mix", "copy1", "copy2")] == [
        "other\n",
        "same\n",
        "other\n",
    ]


@both
def test_a_caller_that_only_touches_local_folders_pulls_nothing(url_root):
    from specforge_assets.resources import SpecforgeStore

    url, use_machine = url_root
    with staged_dir(paths.data_root() / "mix") as tmp:
        (tmp / "a.txt").write_text("x")
    use_machine("b")
    root = SpecforgeStore().root(pull=False)
    assert root == storage.mirror_dir(url) and not (root / "mix").exists()
    with staged_dir(root / "ops") as tmp:  # still a working copy: what it publishes is uploaded
        (tmp / "log.jsonl").write_text("{}\n")
    assert "ops" in storage.Remote(url).published_folders()
    assert (SpecforgeStore().root() / "mix" / "a.txt").read_text() == "x"


@pytest.mark.server
def test_a_missing_bucket_is_one_clear_error(s3_env, tmp_path, monkeypatch):
    from specforge_assets.errors import user_message

    monkeypatch.setenv(storage.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(paths.DATA_ROOT_ENV, "s3://no-such-bucket/specforge")
    with pytest.raises(storage.StorageError) as e:
        paths.data_root()
    assert (
        user_message(e.value)
        == "data root s3://no-such-bucket/specforge: bucket 'no-such-bucket' does not exist (create it first)"
    )


@pytest.mark.parametrize("url_root", ["file"], indirect=True)
def test_a_new_draft_and_the_previous_one_are_both_published(url_root, tmp_path):
    from specforge_assets.train.entry import publish_checkpoint

    url, use_machine = url_root
    root = paths.data_root()
    out, prev = root / "models" / "draft_model", root / "models" / "draft_model_previous"
    for weights in (b"one", b"two"):
        stage = tmp_path / f"stage-{weights.decode()}"
        stage.mkdir()
        (stage / "config.json").write_text("{}")
        (stage / "model.safetensors").write_bytes(weights)
        publish_checkpoint(stage, out, prev, keep=("config.json", "model.safetensors"))
    use_machine("b")
    root_b = paths.data_root()
    assert (root_b / "models" / "draft_model" / "model.safetensors").read_bytes() == b"two"
    assert (root_b / "models" / "draft_model_previous" / "model.safetensors").read_bytes() == b"one"


@both
def test_the_checks_read_the_committed_objects_not_the_working_copy(url_root):
    """The DuckDB checks (`checks._duck.Reader`) query the objects on the store, as readers on
    other machines see them: a local copy changed after publishing does not change their result."""
    import duckdb

    from specforge_assets.checks import tokenize as tok_checks
    from specforge_assets.checks._duck import Reader

    url, _ = url_root
    root = paths.data_root()
    with staged_dir(root / "tokenized" / "dataset") as tmp:
        duckdb.sql(
            f"COPY (SELECT 10 AS length, 4 AS supervised_tokens) TO '{tmp / 'part-00000.parquet'}' (FORMAT parquet)"
        )
    ds = root / "tokenized" / "dataset"
    reader = Reader()
    ref = reader.ref(ds / "part-00000.parquet")
    assert ref.startswith(url.split("://")[0] + "://") and "/_g-" in ref and reader.store_objects == 1
    (ds / "scratch.txt").write_text("never published")
    assert reader.ref(ds / "scratch.txt") == str(ds / "scratch.txt")  # not on the store: read locally
    got = tok_checks.supervised_fraction(ds, 0.1, 0.9)
    assert got.passed and got.metadata["fraction"] == 0.4
    duckdb.sql(f"COPY (SELECT 10 AS length, 0 AS supervised_tokens) TO '{ds / 'part-00000.parquet'}' (FORMAT parquet)")
    got = tok_checks.supervised_fraction(ds, 0.1, 0.9)
    assert got.passed and got.metadata["fraction"] == 0.4  # the committed object, not the altered local copy


def test_on_a_local_root_the_checks_read_local_files(tmp_path, monkeypatch):
    from specforge_assets.checks._duck import Reader

    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path / "data"))
    with staged_dir(paths.data_root() / "mix") as tmp:
        (tmp / "train.jsonl").write_text("{}\n")
    reader = Reader()
    f = paths.data_root() / "mix" / "train.jsonl"
    assert reader.ref(f) == str(f) and reader.store_objects == 0


@both
def test_source_mix_and_tokenize_checks_read_the_store(url_root):
    """The sources checks (structured DuckDB scan), the mix checks (DuckDB counts, the row-by-row
    content hash, the line counts) and the tokenized ids check (mix ids, errors.jsonl) read the
    committed objects through fsspec: garbage written into the local copies afterwards changes
    nothing."""
    import duckdb

    from specforge_assets.checks import mix as mix_checks
    from specforge_assets.checks import tokenize as tok_checks
    from specforge_assets.checks.sources import run_source_checks

    rows = [
        {"id": f"r{i}", "conversations": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(5)
    ]
    beta = {
        **rows[0],
        "id": "t0",
        "conversations": [{"role": "user", "content": "other"}] + rows[0]["conversations"][1:],
    }
    root = paths.data_root()
    with staged_dir(root / "sources" / "alpha") as tmp:
        (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (tmp / "test.jsonl").write_text("")
        (tmp / "quarantine.jsonl").write_text("")
        (tmp / "manifest.json").write_text(
            json.dumps({"rows_in": 5, "rows_train": 5, "rows_test": 0, "quarantined": 0})
        )
    with staged_dir(root / "sources" / "beta") as tmp:
        (tmp / "train.jsonl").write_text(json.dumps(beta) + "\n")
    with staged_dir(root / "mix") as tmp:
        (tmp / "train.jsonl").write_text("".join(json.dumps({**r, "source": "alpha"}) + "\n" for r in rows))
        (tmp / "test.jsonl").write_text(json.dumps({**beta, "source": "beta"}) + "\n")
        (tmp / "quarantine.jsonl").write_text("")
    with staged_dir(root / "tokenized" / "dataset") as tmp:  # r4 could not be tokenized: in errors.jsonl
        duckdb.sql(
            f"COPY (SELECT 'r' || i AS id FROM range(4) t(i)) TO '{tmp / 'part-00000.parquet'}' (FORMAT parquet)"
        )
        (tmp / "errors.jsonl").write_text(json.dumps({"id": "r4", "error": "too long"}) + "\n")
    src, mix, ds = root / "sources" / "alpha", root / "mix", root / "tokenized" / "dataset"
    report = {"inputs": {k: {"path": str(root / "sources" / k / "train.jsonl")} for k in ("alpha", "beta")}}

    # the local copies, altered after publishing (what another machine never sees)
    (src / "train.jsonl").write_text("not json at all\n")
    dup = json.dumps({**rows[0], "source": "gamma"}) + "\n"
    (mix / "train.jsonl").write_text(dup + dup)  # 2 rows, duplicate content and ids
    (mix / "quarantine.jsonl").write_text("{}\n{}\n")
    (ds / "errors.jsonl").write_text(json.dumps({"id": "zzz"}) + "\n")

    outcome = run_source_checks(src)
    assert outcome["schema_valid"].passed, outcome["schema_valid"]
    assert outcome["rows_reconcile"].metadata["train"] == 5
    assert mix_checks._counts(mix) == {"alpha": 5, "beta": 1}
    got = mix_checks.no_duplicate_content(mix)
    assert got.passed and got.metadata["rows"] == 6, got
    got = mix_checks.counts_reconcile(mix, report)
    assert got.passed and got.metadata == {
        "rows_in": 6,
        "train.jsonl": 5,
        "test.jsonl": 1,
        "quarantine.jsonl": 0,
    }, got
    got = tok_checks.ids_unique_and_complete(ds, mix / "train.jsonl")
    assert (got.passed, got.severity) == (False, "WARN"), got  # r4 quarantined, not unaccounted
    assert (got.metadata["mix_rows"], got.metadata["missing_from_shards"], got.metadata["quarantined"]) == (5, 1, 1)
    assert got.metadata["examples_missing"] == ["r4"]


@both
def test_rows_are_counted_over_bytes_on_the_store_and_locally(url_root, tmp_path):
    """`Reader.count_rows`: a row that is not UTF-8 or not JSON is still one row, blank lines are
    not; the same count from the committed object and from a local file."""
    from specforge_assets.checks._duck import Reader

    data = b'{"id": 1}\n\n  \t\n{"id": "caf\xe9"}\n\xff\xfe broken {\n{"id": 4}'
    root = paths.data_root()
    with staged_dir(root / "mix") as tmp:
        (tmp / "train.jsonl").write_bytes(data)
    (root / "mix" / "train.jsonl").write_bytes(b"")  # the local copy, emptied after publishing
    reader = Reader()
    assert reader.count_rows(root / "mix" / "train.jsonl") == 4 and reader.store_objects == 1
    (tmp_path / "local.jsonl").write_bytes(data)
    assert reader.count_rows(tmp_path / "local.jsonl") == 4 and reader.store_objects == 1
    with reader.open(root / "mix" / "train.jsonl") as f:
        assert f.read() == data


@both
def test_vocab_mapping_check_reads_the_committed_objects(url_root):
    """`checks.tokenize.vocab_mapping_folder_valid` reads manifest.json and vocab_mapping.pt
    through `Reader.open`: a local working copy changed after publishing is not what it checks."""
    import torch

    from specforge_assets.checks.tokenize import vocab_mapping_folder_valid

    root = paths.data_root()
    t2d = torch.tensor([True, False, True, True])
    d2t = torch.nonzero(t2d).flatten() - torch.arange(3)
    with staged_dir(root / "tokenized" / "vocab_mapping") as tmp:
        torch.save({"d2t": d2t, "t2d": t2d}, tmp / "vocab_mapping.pt")
        (tmp / "manifest.json").write_text(json.dumps({"draft_vocab_size": 3, "target_vocab_size": 4}))
    local = root / "tokenized" / "vocab_mapping"
    (local / "vocab_mapping.pt").write_bytes(b"not a torch file")
    (local / "manifest.json").write_text(json.dumps({"draft_vocab_size": 9, "target_vocab_size": 9}))
    out = vocab_mapping_folder_valid(local)
    assert out.passed and out.metadata == {"draft": 3, "target": 4}
